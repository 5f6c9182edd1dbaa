"""The reconciler against real libvirt: a host agent killed mid-provisioning, vanished VMs, orphans."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests import lab_stack, processes, servers

pytestmark = [pytest.mark.vm, pytest.mark.slow]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[lab_stack.LabStack]:
    # No agent here: each test starts (and kills) its own. The host's check worker is a process of
    # its own, as under `make run`, and lives on while the agent is killed.
    with (
        lab_stack.lab_stack(tmp_path_factory.mktemp("reconcile"), agent=False, LABS_REAP_GRACE_S="3") as running,
        servers.celery_worker(running.env, queues=f"host.{running.host}.checks", name=f"{running.host}-checks"),
    ):
        yield running


def agent(stack: lab_stack.LabStack) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [str(servers.VENV_BIN / "celery"), "-A", "portal", "worker", "-n", f"{stack.host}@%h",
         "-Q", f"host.{stack.host},web", "-c", "1", "--without-heartbeat", "--without-mingle",
         "--without-gossip", "-l", "WARNING"],
        cwd=servers.ROOT, env={**os.environ, **stack.env},
    )  # fmt: skip
    lab_stack.wait_for_advert(stack.redis_url, stack.host)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    processes.stop_process(proc, 20)


def reconcile_now(stack: lab_stack.LabStack) -> None:
    """What celery beat does every 30 s, run now through the broker."""
    stack.shell("from labs.tasks import reconcile_all; reconcile_all.apply_async(queue='web')")


def test_worker_killed_while_provisioning_leaves_no_vm_and_a_failed_session(stack: lab_stack.LabStack) -> None:
    alice = stack.client("alice")
    worker = agent(stack)
    try:
        status, session = alice.request("POST", "/api/sessions", {"lab": stack.slug})
        assert status == 201
        sid = session["id"]
        lab_stack.wait_for_state(alice, sid, {"provisioning"}, 60)
        servers.wait_for(lambda: lab_stack.domain_exists(sid), 60, "the VM being created")
    finally:
        processes.kill_process_tree(worker.pid)  # SIGKILL: no warm shutdown, the task is not acked
        worker.wait()
    assert lab_stack.domain_exists(sid), "the VM outlives its killed worker until reconciled"

    # The restarted agent finds the interrupted work: the session fails clearly, the VM is reaped.
    worker = agent(stack)
    try:
        body = lab_stack.wait_for_state(alice, sid, {"failed", "destroyed"}, 60)
        assert "restarted" in body["error"]
        servers.wait_for(lambda: not lab_stack.domain_exists(sid), 60, "the orphan VM to be reaped")
        lab_stack.wait_for_state(alice, sid, {"destroyed"}, 60)
        # And the learner can start again.
        status, again = alice.request("POST", "/api/sessions", {"lab": stack.slug})
        assert status == 201
        lab_stack.wait_for_state(alice, again["id"], {"ready"}, 120)
        alice.request("POST", f"/api/sessions/{again['id']}/stop")
        servers.wait_for(lambda: not lab_stack.domain_exists(again["id"]), 60, "stop to destroy the VM")
    finally:
        stop(worker)


def test_vanished_vm_fails_its_session_and_orphans_are_reaped(stack: lab_stack.LabStack) -> None:
    from labs.hypervisor import Hypervisor

    bob = stack.client("bob")
    worker = agent(stack)
    try:
        _status, session = bob.request("POST", "/api/sessions", {"lab": stack.slug})
        sid = session["id"]
        lab_stack.wait_for_state(bob, sid, {"ready"}, 120)
        prefix = stack.env["LABS_ID_PREFIX"]
        with Hypervisor.connect() as hv:
            orphan = hv.create_vm(f"{prefix}s-orphan", "tiny", "/var/cache/virtlab/guest/current")
            hv.vm(sid).destroy()  # the VM disappears behind VirtLab's back
        # Past the grace period a missing VM is a failure the learner is told about.
        stack.shell(
            "from labs.models import LabSession; from django.utils import timezone; from datetime import timedelta;"
            f"LabSession.objects.filter(pk='{sid}').update(updated_at=timezone.now() - timedelta(minutes=5))"
        )
        time.sleep(3)  # past the reap grace of the orphan
        reconcile_now(stack)
        body = lab_stack.wait_for_state(bob, sid, {"failed", "destroyed"}, 60)
        assert "stopped unexpectedly" in body["error"]
        servers.wait_for(lambda: not lab_stack.domain_exists(orphan.session_id), 60, "the orphan to be reaped")
    finally:
        stop(worker)
