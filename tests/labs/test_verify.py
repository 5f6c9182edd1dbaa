"""Step verification against a real VM: every assertion kind, setup/solution failures, timeouts."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypedDict, Unpack

import pytest

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
)
from labs.host.verify import StepCommandFailed, json_lookup, run_check, run_setup, run_solution
from labs.hypervisor import VM, DomainMissing

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
