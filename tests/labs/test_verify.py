"""Step verification against a real VM: every assertion kind, setup/solution failures, timeouts."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypedDict, Unpack, cast

import pytest
import yaml

from labs.catalog import (
    Assertion,
    BlockInfoAssertion,
    Check,
    DomainXmlAssertion,
    FileSha256Assertion,
    GuestAssertion,
    JsonEquals,
    LocalizedText,
    Step,
    load_catalog,
)
from labs.catalog.patterns import PatternError, compile_output_regex
from labs.host.verify import StepCommandFailed, json_lookup, run_check, run_setup, run_solution
from labs.hypervisor import VM, DomainMissing
from labs.hypervisor.guest_agent import GuestAgent
from tests import lab_stack
from tests.scripted_agent import Answers, ScriptedDomain, agent_reply

MSG = LocalizedText(en="it failed", zh="失败了")


def make_step(*assertions: Assertion, setup: tuple[str, ...] = (), solution: tuple[str, ...] = ("true",)) -> Step:
    return Step(
        lab_slug="verify-test",
        number=1,
        name="01-test",
        title=LocalizedText(en="Test", zh="测试"),
        instructions=LocalizedText(en="x", zh="x"),
        setup=setup,
        check=Check(tuple(assertions)),
        hints=(),
        solution=solution,
        path=Path("/nonexistent"),
    )


class GuestOptions(TypedDict, total=False):
    """The optional fields of a GuestAssertion."""

    exit_code: int
    stdout_regex: str | None
    json: JsonEquals | None
    timeout_s: float


def guest(run: str, **options: Unpack[GuestOptions]) -> GuestAssertion:
    return GuestAssertion(message=MSG, run=run, **options)


@pytest.fixture(scope="module")
def vm(booted_vm: Callable[[str], VM]) -> VM:
    return booted_vm("tiny")


def test_json_lookup_follows_keys_and_indexes() -> None:
    doc = {"snapshots": [{"name": "a"}, {"name": "b"}], "format-specific": {"data": {"compat": "1.1"}}}
    assert json_lookup(doc, "snapshots.1.name") == "b"
    assert json_lookup(doc, "format-specific.data.compat") == "1.1"
    with pytest.raises(LookupError):
        json_lookup(doc, "snapshots.x")
    with pytest.raises(IndexError):
        json_lookup(doc, "snapshots.5.name")
    with pytest.raises(LookupError):
        json_lookup(doc, "missing")


# --- Patterns: RE2, linear in the learner's output ---------------------------------------------

# Catastrophic for a backtracking engine: Python's `re` takes ~5 s on 26 "a"s and doubles with each
# one more; RE2 answers in time linear in the text.
CATASTROPHIC = r"^(a+)+$"


def test_a_pathological_pattern_over_a_mebibyte_of_output_answers_in_milliseconds() -> None:
    text = "a" * (1024 * 1024) + "b\n"
    started = time.monotonic()
    assert compile_output_regex(CATASTROPHIC).search(text) is None
    assert time.monotonic() - started < 0.5


def test_patterns_keep_pythons_multiline_meaning_and_end_of_text() -> None:
    assert compile_output_regex(r"^4$").search("x\n4\ny")  # MULTILINE, as documented
    assert compile_output_regex(r"\Aok\s*\Z").search("ok\n")  # Python's \Z is RE2's \z
    assert not compile_output_regex(r"\Aok\Z").search("ok\nmore")


@pytest.mark.parametrize("pattern", [r"(a)\1", r"x(?=y)", r"(?<!x)y", r"(?P<n>a)(?P=n)"])
def test_patterns_that_need_backtracking_are_refused(pattern: str) -> None:
    with pytest.raises(PatternError, match="RE2"):
        compile_output_regex(pattern)


def test_a_lab_with_a_backtracking_pattern_is_reported_with_file_and_field(tmp_path: Path) -> None:
    slug = lab_stack.write_test_lab(tmp_path)
    step_file = tmp_path / "labs" / slug / "steps" / "01-hello" / "step.yaml"
    step = yaml.safe_load(step_file.read_text())
    step["check"][0]["guest"]["stdout_regex"] = r"(\w+) \1"
    step_file.write_text(yaml.safe_dump(step, allow_unicode=True))
    catalog = load_catalog(tmp_path / "labs", docs_root=tmp_path / "docs")
    assert slug not in catalog.labs, "an invalid lab is not offered"
    [problem] = catalog.errors
    assert problem.file.endswith("01-hello/step.yaml")
    assert problem.field == "check[0].guest.stdout_regex"
    assert "not a valid regex: invalid escape sequence: \\1" in problem.message


# --- The guest agent's replies are untrusted input ------------------------------------------------


def a_vm_with(agent: GuestAgent) -> VM:
    """What run_check uses of a VM, around a fake agent."""

    class FakeVM:
        def __init__(self) -> None:
            self.agent = agent

        def exec(self, command: str, timeout_s: float = 30.0) -> Any:
            return agent.exec(command, timeout_s=timeout_s)

    return cast(VM, FakeVM())


def test_a_misbehaving_agent_fails_the_check_at_once_instead_of_the_session(
    fake_agent: Answers,
) -> None:
    fake_agent["guest-exec-status"] = lambda _args: agent_reply({"exited": "soon"})
    fake_agent["guest-file-read"] = lambda _args: agent_reply({"count": 4096, "buf-b64": "", "eof": False})
    vm = a_vm_with(GuestAgent(ScriptedDomain()))
    started = time.monotonic()
    result = run_check(
        vm, make_step(guest("true"), FileSha256Assertion(message=MSG, path="/etc/hostname", sha256="0" * 64))
    )
    assert time.monotonic() - started < 2
    assert [r.ok for r in result.results] == [False, False]
    assert result.results[0].detail.startswith('the guest agent misbehaved: guest-exec-status: "exited" is str')
    assert result.results[1].detail.startswith('the guest agent misbehaved: guest-file-read: "count" is 4096')


@pytest.mark.vm
@pytest.mark.slow
class TestAgainstARealVM:
    def test_guest_exit_code_and_stderr_in_detail(self, vm: VM) -> None:
        result = run_check(vm, make_step(guest("true"), guest("echo nope >&2; exit 3"), guest("exit 3", exit_code=3)))
        assert [r.ok for r in result.results] == [True, False, True]
        assert not result.passed
        assert result.results[1].detail == "exit code 3, expected 0: nope"
        assert result.results[1].message == MSG
        assert result.results[1].kind == "guest"

    def test_guest_stdout_regex(self, vm: VM) -> None:
        result = run_check(
            vm,
            make_step(
                guest("grep -m1 'model name' /proc/cpuinfo", stdout_regex=r"QEMU Virtual CPU"),
                guest("uname -s", stdout_regex=r"^FreeBSD$"),
            ),
        )
        assert [r.ok for r in result.results] == [True, False]
        assert "does not match /^FreeBSD$/: 'Linux'" in result.results[1].detail

    def test_guest_json_path_equals_with_strict_types(self, vm: VM) -> None:
        doc = """echo '{"a": {"n": 1, "flag": true, "list": ["x", "y"]}}'"""
        result = run_check(
            vm,
            make_step(
                guest(doc, json=JsonEquals(path="a.n", equals=1)),
                guest(doc, json=JsonEquals(path="a.list.1", equals="y")),
                guest(doc, json=JsonEquals(path="a.flag", equals=1)),  # JSON true is not 1
                guest(doc, json=JsonEquals(path="a.missing", equals=1)),
                guest("echo not json", json=JsonEquals(path="a", equals=1)),
            ),
        )
        assert [r.ok for r in result.results] == [True, True, False, False, False]
        assert result.results[2].detail == "a.flag is True, expected 1"
        assert "no key 'missing'" in result.results[3].detail

    def test_guest_command_timeout_fails_the_assertion_and_kills_the_command(self, vm: VM) -> None:
        started = time.monotonic()
        result = run_check(vm, make_step(guest("rm -f /root/late; sleep 5; touch /root/late", timeout_s=1)))
        assert not result.passed
        assert result.results[0].detail == "command timed out after 1s"
        assert time.monotonic() - started < 20
        time.sleep(6)  # had the command survived, it would have created the file by now
        assert vm.exec("test -e /root/late", timeout_s=10).exit_code == 1

    def test_file_sha256_is_computed_on_the_host(self, vm: VM) -> None:
        content = b"Hello from VirtLab\n"
        vm.agent.write_file("/root/hello.txt", content)
        good = FileSha256Assertion(message=MSG, path="/root/hello.txt", sha256=hashlib.sha256(content).hexdigest())
        bad = FileSha256Assertion(message=MSG, path="/root/hello.txt", sha256=hashlib.sha256(b"other").hexdigest())
        missing = FileSha256Assertion(message=MSG, path="/root/missing.txt", sha256=good.sha256)
        result = run_check(vm, make_step(good, bad, missing))
        assert [r.ok for r in result.results] == [True, False, False]
        assert f"has sha256 {good.sha256}" in result.results[1].detail
        assert result.results[2].detail.startswith("cannot read /root/missing.txt")

    def test_file_sha256_is_not_fooled_by_a_fake_tool_in_the_guest(self, vm: VM) -> None:
        expected = hashlib.sha256(b"the right content\n").hexdigest()
        vm.exec("echo wrong > /root/faked.txt; mkdir -p /usr/local/bin", timeout_s=10)
        # A learner with root replaces sha256sum to print whatever the check wants.
        fake = f"#!/bin/sh\necho '{expected}  /root/faked.txt'\n"
        vm.agent.write_file("/usr/local/bin/sha256sum", fake.encode())
        vm.exec("chmod +x /usr/local/bin/sha256sum", timeout_s=10)
        try:
            assert vm.exec("sha256sum /root/faked.txt", timeout_s=10).text.startswith(expected)
            result = run_check(vm, make_step(FileSha256Assertion(message=MSG, path="/root/faked.txt", sha256=expected)))
            assert not result.passed
        finally:
            vm.exec("rm -f /usr/local/bin/sha256sum", timeout_s=10)

    def test_domain_xml_equals_and_count_read_the_live_definition(self, vm: VM) -> None:
        agent_state = "string(/domain/devices/channel[target/@name='org.qemu.guest_agent.0']/target/@state)"
        result = run_check(
            vm,
            make_step(
                DomainXmlAssertion(message=MSG, xpath=agent_state, equals="connected"),
                # The scratch disk and the image's read-only tools disk.
                DomainXmlAssertion(message=MSG, xpath="/domain/devices/disk", count=2),
                DomainXmlAssertion(message=MSG, xpath="count(/domain/devices/disk[not(readonly)])", equals="1"),
                DomainXmlAssertion(message=MSG, xpath="/domain/devices/interface", count=1),  # no NIC
                DomainXmlAssertion(message=MSG, xpath="/domain/devices/disk/target/@dev", equals="vdb"),
            ),
        )
        assert [r.ok for r in result.results] == [True, True, True, False, False]
        assert result.results[3].detail == "0 node(s) selected, expected 1"
        assert result.results[4].detail == "'vda', expected 'vdb'"

    def test_block_info_sees_guest_writes_only_once_they_reach_the_disk(self, vm: VM) -> None:
        baseline = next(b for b in vm.block_info() if b.target == "vda").allocation / 2**20
        grown = BlockInfoAssertion(message=MSG, target="vda", min_allocation_mib=baseline + 3, capacity_mib=64)
        assert not run_check(vm, make_step(grown)).passed
        vm.exec("dd if=/dev/urandom of=/dev/vda bs=1M count=4 seek=32 conv=fsync 2>/dev/null", timeout_s=60)
        result = run_check(vm, make_step(grown, BlockInfoAssertion(message=MSG, target="vdq", capacity_mib=1)))
        assert [r.ok for r in result.results] == [True, False]
        assert result.results[0].detail.startswith("vda: allocation ")
        assert result.results[1].detail == "the VM has no disk vdq"

    def test_setup_and_solution_run_in_order_and_raise_on_failure(self, vm: VM) -> None:
        step = make_step(
            guest("cat /root/order.txt", stdout_regex=r"^one\ntwo$"),
            setup=("rm -f /root/order.txt", "echo one > /root/order.txt"),
            solution=("echo two >> /root/order.txt",),
        )
        run_setup(vm, step)
        assert not run_check(vm, step).passed
        run_solution(vm, step)
        assert run_check(vm, step).passed
        broken = make_step(guest("true"), setup=("echo first", "echo bad >&2; exit 4", "touch /root/never"))
        with pytest.raises(StepCommandFailed, match="exit 4: bad") as excinfo:
            run_setup(vm, broken)
        assert excinfo.value.phase == "setup"
        assert vm.exec("test -e /root/never", timeout_s=10).exit_code == 1  # stopped at the failure

    def test_solution_timeout_raises(self, vm: VM) -> None:
        with pytest.raises(StepCommandFailed, match="timed out after 1"):
            run_solution(vm, make_step(guest("true"), solution=("sleep 30",)), timeout_s=1)

    def test_huge_output_is_cut_in_the_guest_and_fails_the_assertion_quickly(self, vm: VM) -> None:
        started = time.monotonic()
        result = run_check(
            vm,
            make_step(
                guest("yes", stdout_regex="^y$"),  # never ends by itself: stopped at the cap
                guest("yes | head -c 20000000 >&2"),
                guest("head -c 1048576 /dev/zero | tr '\\0' y", stdout_regex="^y"),  # exactly the cap: fine
            ),
        )
        elapsed = time.monotonic() - started
        assert [r.ok for r in result.results] == [False, False, True]
        assert result.results[0].detail == "the command printed more than 1048576 bytes (it was stopped there)"
        assert result.results[1].detail == result.results[0].detail
        assert elapsed < 15, f"{elapsed:.1f} s"
        # The agent's channel survived: libvirt drops it on a reply over 10 MiB, which an uncapped
        # `yes` would have sent.
        assert vm.exec("echo still-here", timeout_s=10).text == "still-here\n"
        print(f"\nthree capped check commands (two floods of output) in {elapsed:.2f} s")

    def test_only_the_output_a_command_wrote_is_read_back(self, vm: VM, monkeypatch: pytest.MonkeyPatch) -> None:
        # Each file read is three agent round trips: a check that prints nothing (most) reads none.
        sent: list[str] = []
        command = GuestAgent.command

        def counted(agent: GuestAgent, execute: str, *args: Any, **kwargs: Any) -> Any:
            sent.append(execute)
            return command(agent, execute, *args, **kwargs)

        monkeypatch.setattr(GuestAgent, "command", counted)
        cases = [  # command, exit code, stdout, stderr, files read
            ("test -d /", 0, "", "", 0),
            ("false", 1, "", "", 0),
            ("echo out", 0, "out\n", "", 1),
            ("echo err >&2; exit 2", 2, "", "err\n", 2),  # exits the wrapper's shell: both are read
            ("echo out; echo err >&2; (exit 3)", 3, "out\n", "err\n", 2),
            ("echo vl:oe 2>/dev/null >&3; true", 0, "", "", 0),  # the wrapper's own line: not the command's to write
        ]
        for text, code, out, err, reads in cases:
            sent.clear()
            result = vm.agent.exec(text, timeout_s=10, max_output=1024)
            assert (result.exit_code, result.text, result.stderr.decode()) == (code, out, err), text
            assert sent.count("guest-file-open") == reads, (text, sent)
            assert sent.count("guest-exec") == 1, (text, sent)  # the wrapper's line was understood

    def test_a_check_may_write_files_larger_than_the_output_cap(self, vm: VM) -> None:
        # The cap is on what the check prints, not on the files it writes (a `qemu-img convert`
        # in a check): a per-process file-size limit would have stopped this at 1 MiB.
        big = "head -c 3145728 /dev/zero > /tmp/big && wc -c < /tmp/big; rm -f /tmp/big"
        result = run_check(vm, make_step(guest(big, stdout_regex=r"^3145728$")))
        assert result.passed, result.results[0].detail

    def test_capped_output_survives_a_learner_who_broke_its_files(self, vm: VM) -> None:
        # The learner is root: the output directory may be gone or unwritable. The check falls
        # back to cutting the output through pipes, with the same results.
        vm.exec("umount /run/virtlab-check; rm -rf /run/virtlab-check; echo x > /run/virtlab-check", timeout_s=10)
        try:
            result = run_check(vm, make_step(guest("echo hello; echo oops >&2", stdout_regex="^hello$"), guest("yes")))
            assert [r.ok for r in result.results] == [True, False]
            assert result.results[1].detail == "the command printed more than 1048576 bytes (it was stopped there)"
        finally:
            vm.exec("rm -f /run/virtlab-check", timeout_s=10)
        # The next check makes its directory again, on its own small tmpfs: a flood fills that,
        # not the guest's /run.
        assert not run_check(vm, make_step(guest("yes"))).passed
        mounted = vm.exec("grep ' /run/virtlab-check tmpfs ' /proc/mounts", timeout_s=10).text
        assert "size=4096k" in mounted

    def test_a_pathological_pattern_over_learner_output_does_not_hang(self, vm: VM) -> None:
        # The learner controls this output (their own program could print it); Python's `re`
        # would backtrack for over a minute on it.
        step = make_step(guest("printf 'a%.0s' $(seq 30); echo b", stdout_regex=CATASTROPHIC))
        started = time.monotonic()
        result = run_check(vm, step)
        elapsed = time.monotonic() - started
        assert not result.passed
        assert "does not match" in result.results[0].detail
        assert elapsed < 10, f"{elapsed:.1f} s"
        output = vm.exec("printf 'a%.0s' $(seq 30); echo b", timeout_s=10).text
        matched = time.monotonic()
        assert compile_output_regex(CATASTROPHIC).search(output) is None
        print(f"\ncheck {elapsed:.2f} s, RE2 match {1000 * (time.monotonic() - matched):.2f} ms")

    def test_a_vanished_vm_raises_instead_of_failing_the_learner(self, vm: VM) -> None:
        # Runs last in this class: it destroys the module's VM (the fixture's destroy is idempotent).
        vm.destroy()
        for assertion in (
            guest("true"),
            FileSha256Assertion(message=MSG, path="/root/hello.txt", sha256="0" * 64),
            DomainXmlAssertion(message=MSG, xpath="/domain", count=1),
        ):
            with pytest.raises(DomainMissing):
                run_check(vm, make_step(assertion))
