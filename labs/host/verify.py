"""Running a step's setup, check and solution against a live VM (labs.hypervisor.VM).

Django-free: the host agent (Celery worker) calls these. Every guest command has a timeout; the
commands are the lab author's fixed text from the catalog, never learner input. Their output is
not: the learner is root in the guest, so a check caps what it reads (`max_output`), matches
patterns with RE2 (linear time), and fails an assertion whose guest agent misbehaves.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

from lxml import etree

from labs.catalog import (
    Assertion,
    BlockInfoAssertion,
    DomainXmlAssertion,
    FileSha256Assertion,
    GuestAssertion,
    LocalizedText,
    Step,
)
from labs.catalog.model import DEFAULT_COMMAND_TIMEOUT_S
from labs.catalog.patterns import compile_output_regex
from labs.hypervisor import VM, CommandTimeout, HypervisorError
from labs.hypervisor.agent_replies import GuestAgentMisbehaving
from labs.hypervisor.guest_agent import EXEC_OUTPUT_LIMIT_MAX

# guest-file-read moves 48 KiB per agent round trip; checks hash small files only.
MAX_HASHED_FILE_BYTES = 16 * 1024 * 1024
FILE_READ_TIMEOUT_S = 60.0
# Bytes of each of stdout and stderr a check command may print (the host agent passes its setting).
DEFAULT_CHECK_OUTPUT_BYTES = 1024 * 1024
_DETAIL_LIMIT = 500  # characters of command output kept in a result


@dataclass(frozen=True)
class AssertionResult:
    """One assertion's outcome; `message` is the author's failure text, `detail` what was seen."""

    ok: bool
    kind: str
    message: LocalizedText
    detail: str
    trusts_guest: bool = False  # the verdict rests on what the guest reported (see the lab format)


@dataclass(frozen=True)
class CheckResult:
    """A step's check: passed when every assertion holds."""

    passed: bool
    results: list[AssertionResult]
    duration_s: float


class StepCommandFailed(Exception):
    """A setup or solution command exited non-zero or timed out: the lab, not the learner, is broken."""

    def __init__(self, step: Step, phase: str, command: str, detail: str):
        super().__init__(f"{step.lab_slug} step {step.number} {phase}: {command!r} failed: {detail}")
        self.step = step
        self.phase = phase
        self.command = command
        self.detail = detail


def run_setup(vm: VM, step: Step, timeout_s: float = DEFAULT_COMMAND_TIMEOUT_S) -> None:
    """Run the step's setup commands in order; StepCommandFailed on the first failure."""
    _run_commands(vm, step, "setup", step.setup, timeout_s)


def run_solution(vm: VM, step: Step, timeout_s: float = DEFAULT_COMMAND_TIMEOUT_S) -> None:
    """Run the step's solution commands in order (tests; "solve it for me")."""
    _run_commands(vm, step, "solution", step.solution, timeout_s)


def _run_commands(vm: VM, step: Step, phase: str, commands: tuple[str, ...], timeout_s: float) -> None:
    for command in commands:
        try:
            result = vm.exec(command, timeout_s=timeout_s)
        except CommandTimeout as exc:
            raise StepCommandFailed(step, phase, command, f"timed out after {timeout_s}s") from exc
        if not result.ok:
            output = (result.stderr or result.stdout).decode(errors="replace").strip()
            raise StepCommandFailed(step, phase, command, f"exit {result.exit_code}: {output[-_DETAIL_LIMIT:]}")


def run_check(vm: VM, step: Step, max_output: int = DEFAULT_CHECK_OUTPUT_BYTES) -> CheckResult:
    """Evaluate every assertion of the step's check (all of them, so the learner sees each result).

    A failing assertion is a result, not an exception: so is a guest command that prints more
    than `max_output` bytes on stdout or stderr, and a guest agent that answers malformed replies.
    Errors that mean the VM or its agent is gone (DomainMissing, GuestAgentUnavailable, ...)
    propagate to the caller.
    """
    started = time.monotonic()
    max_output = max(1, min(max_output, EXEC_OUTPUT_LIMIT_MAX))  # more than libvirt can carry back
    results = [_evaluate(vm, assertion, max_output) for assertion in step.check.assertions]
    return CheckResult(all(r.ok for r in results), results, time.monotonic() - started)


def _evaluate(vm: VM, assertion: Assertion, max_output: int) -> AssertionResult:
    if isinstance(assertion, GuestAssertion):
        ok, detail = _guest(vm, assertion, max_output)
    elif isinstance(assertion, FileSha256Assertion):
        ok, detail = _file_sha256(vm, assertion)
    elif isinstance(assertion, DomainXmlAssertion):
        ok, detail = _domain_xml(vm, assertion)
    elif isinstance(assertion, BlockInfoAssertion):
        ok, detail = _block_info(vm, assertion)
    else:  # pragma: no cover - the loader only builds the kinds above
        raise TypeError(f"unknown assertion {assertion!r}")
    return AssertionResult(ok, assertion.kind, assertion.message, detail[:_DETAIL_LIMIT], assertion.trusts_guest)


def _guest(vm: VM, assertion: GuestAssertion, max_output: int) -> tuple[bool, str]:
    try:
        result = vm.agent.exec(assertion.run, timeout_s=assertion.timeout_s, max_output=max_output)
    except CommandTimeout:
        return False, f"command timed out after {assertion.timeout_s:g}s"
    except GuestAgentMisbehaving as exc:
        return False, f"the guest agent misbehaved: {exc}"
    if result.truncated:
        return False, f"the command printed more than {max_output} bytes (it was stopped there)"
    stdout = result.text
    if result.exit_code != assertion.exit_code:
        stderr = result.stderr.decode(errors="replace").strip()
        return False, f"exit code {result.exit_code}, expected {assertion.exit_code}" + (
            f": {stderr}" if stderr else ""
        )
    pattern = assertion.stdout_regex
    if pattern is not None and not compile_output_regex(pattern).search(stdout):
        return False, f"output does not match /{pattern}/: {stdout[:_DETAIL_LIMIT].strip()!r}"
    if assertion.json is not None:
        try:
            value = json_lookup(json.loads(stdout), assertion.json.path)
        except (ValueError, LookupError, TypeError, RecursionError) as exc:  # RecursionError: [[[[...
            return False, f"{assertion.json.path}: {exc}"
        expected = assertion.json.equals
        # 1 == True in Python; JSON true must not satisfy `equals: 1` (nor the reverse).
        if value != expected or isinstance(value, bool) != isinstance(expected, bool):
            return False, f"{assertion.json.path} is {value!r}, expected {expected!r}"
    return True, stdout[:_DETAIL_LIMIT].strip()


def json_lookup(document: Any, path: str) -> Any:
    """Follow a dotted path (`snapshots.0.name`) through parsed JSON; LookupError if absent."""
    value = document
    for key in path.split("."):
        if isinstance(value, list):
            if not key.lstrip("-").isdigit():
                raise LookupError(f"{key!r} is not a list index")
            value = value[int(key)]
        elif isinstance(value, dict):
            if key not in value:
                raise LookupError(f"no key {key!r}")
            value = value[key]
        else:
            raise LookupError(f"cannot look up {key!r} in {type(value).__name__}")
    return value


def _file_sha256(vm: VM, assertion: FileSha256Assertion) -> tuple[bool, str]:
    try:
        data = vm.agent.read_file(assertion.path, limit=MAX_HASHED_FILE_BYTES + 1, timeout_s=FILE_READ_TIMEOUT_S)
    except GuestAgentMisbehaving as exc:
        return False, f"the guest agent misbehaved: {exc}"
    except HypervisorError as exc:
        if type(exc) is not HypervisorError:  # the agent or VM is gone: not the learner's doing
            raise
        return False, f"cannot read {assertion.path}: {exc}"
    if len(data) > MAX_HASHED_FILE_BYTES:
        return False, f"{assertion.path} is larger than {MAX_HASHED_FILE_BYTES} bytes"
    digest = hashlib.sha256(data).hexdigest()
    if digest != assertion.sha256:
        return False, f"{assertion.path} ({len(data)} bytes) has sha256 {digest}"
    return True, f"{assertion.path}: sha256 {digest}"


def _domain_xml(vm: VM, assertion: DomainXmlAssertion) -> tuple[bool, str]:
    root = etree.fromstring(vm.xml().encode(), parser=etree.XMLParser(resolve_entities=False, no_network=True))
    result = root.xpath(assertion.xpath)
    if assertion.count is not None:
        found = len(result) if isinstance(result, list) else int(bool(result))
        return found == assertion.count, f"{found} node(s) selected, expected {assertion.count}"
    text = _xpath_string(result)
    return text == assertion.equals, f"{text!r}" + (
        "" if text == assertion.equals else f", expected {assertion.equals!r}"
    )


def _xpath_string(result: Any) -> str:
    """XPath's string() of a result: the first node's text for node sets, numbers without '.0'."""
    if isinstance(result, list):
        if not result:
            return ""
        first = result[0]
        return str(first) if isinstance(first, str) else "".join(first.itertext())
    if isinstance(result, bool):
        return "true" if result else "false"
    if isinstance(result, float):
        return f"{result:g}" if result != int(result) else str(int(result))
    return str(result)


def _block_info(vm: VM, assertion: BlockInfoAssertion) -> tuple[bool, str]:
    info = next((b for b in vm.block_info() if b.target == assertion.target), None)
    if info is None:
        return False, f"the VM has no disk {assertion.target}"
    mib = 1024 * 1024
    allocation, capacity = info.allocation / mib, info.capacity / mib
    seen = f"{assertion.target}: allocation {allocation:.1f} MiB, capacity {capacity:.0f} MiB"
    if assertion.min_allocation_mib is not None and allocation < assertion.min_allocation_mib:
        return False, f"{seen}; expected at least {assertion.min_allocation_mib:g} MiB allocated"
    if assertion.max_allocation_mib is not None and allocation > assertion.max_allocation_mib:
        return False, f"{seen}; expected at most {assertion.max_allocation_mib:g} MiB allocated"
    if assertion.capacity_mib is not None and info.capacity != assertion.capacity_mib * mib:
        return False, f"{seen}; expected capacity {assertion.capacity_mib} MiB"
    return True, seen
