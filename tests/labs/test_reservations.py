"""Reservations (a class's seats) on a real host agent: filled with clones of the lab's template,
taken only by a start naming their key, replaced when one dies, released without a trace."""

from __future__ import annotations

import os
import signal
import sqlite3
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from labs.catalog.loader import load_catalog
from labs.host.templates import template_key
from labs.hypervisor import Hypervisor
from labs.hypervisor.clones import templates_root
from labs.hypervisor.disks import DEFAULT_DISKS_ROOT, session_dir
from tests import lab_stack, servers

pytestmark = [pytest.mark.vm, pytest.mark.slow]
KEY = "class-test"
Row = tuple[str, str, str | None]  # pool VM id, state, session id


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[lab_stack.LabStack]:
    # No open warm pool: every VM here is the reservation's or a learner's own.
    with lab_stack.lab_stack(tmp_path_factory.mktemp("reservations"), LABS_POOL_SIZES="") as running:
        yield running


def rows(stack: lab_stack.LabStack) -> list[Row]:
    db = Path(stack.env["DATABASE_URL"].removeprefix("sqlite:///"))
    with sqlite3.connect(db) as conn:
        query = (
            "SELECT v.id, v.state, v.session_id FROM labs_poolvm v JOIN labs_reservation r ON v.reservation_id = r.id"
            " WHERE r.key = ? ORDER BY v.created_at"
        )
        return list(conn.execute(query, (KEY,)))


def shell_result(stack: lab_stack.LabStack, code: str) -> str:
    """The last line `code` prints in the stack's Django shell (which may print a banner first)."""
    return stack.shell(code).strip().splitlines()[-1]


def ready(stack: lab_stack.LabStack) -> list[str]:
    return [vm_id for vm_id, state, _session in rows(stack) if state == "ready"]


def backing_files(vm_id: str) -> list[str]:
    """The files below the VM's own disks: a clone's are the template's frozen disks."""
    with Hypervisor.connect() as hv:
        root = ET.fromstring(hv.vm(vm_id).xml())  # noqa: S314 - libvirtd output
    return [s.get("file", "") for s in root.iterfind("./devices/disk/backingStore/source")]


def test_a_reservation_is_filled_with_clones_taken_only_by_its_key_refilled_and_released(
    stack: lab_stack.LabStack,
) -> None:
    host, slug = stack.host, stack.slug
    # A class asks for its lab's template when it is made: one boot, before any seat is prepared.
    templates = templates_root(DEFAULT_DISKS_ROOT)
    stack.shell(f"from labs import task_calls; task_calls.prepare_template.on({host!r}, {slug!r})")
    servers.wait_for(lambda: lab_stack.lab_templates(stack), 240, "the lab's template")
    (template_key_built,) = lab_stack.lab_templates(stack)
    assert rows(stack) == []  # a template only: no VM is prepared before the class's lead time
    reservation_id = shell_result(
        stack,
        "from labs import task_calls; from labs.models import Reservation\n"
        f"r = Reservation.objects.create(key={KEY!r}, host={host!r}, lab_slug={slug!r}, profile='tiny', size=2)\n"
        "task_calls.fill_reservation.on(r.host, r.pk); print(r.pk)",
    )
    servers.wait_for(lambda: len(ready(stack)) == 2, 240, "the reservation's two VMs")
    seats = ready(stack)
    for vm_id in seats:
        assert lab_stack.snapshots_of(vm_id) == []  # a reset to step 1 clones the template again
        assert all(f.startswith(f"{templates}/{template_key_built}/") for f in backing_files(vm_id))

    # A start without the key never takes a reserved VM; with no warm pool it clones the template.
    alice = stack.client("alice")
    _status, body = alice.request("POST", "/api/sessions", {"lab": slug})
    alice_session = lab_stack.wait_for_state(alice, body["id"], {"ready"}, 120)
    assert alice_session["id"] not in {session for _vm, _state, session in rows(stack)}
    assert lab_stack.domain_exists(body["id"])  # its own VM, named after the session
    assert backing_files(body["id"]) == backing_files(seats[0])
    alice.request("POST", f"/api/sessions/{body['id']}/stop")

    # A start naming the key takes one; the classes app then sizes the reservation down by one.
    bob_session = shell_result(
        stack,
        "from django.contrib.auth.models import User; from labs.services.sessions import start_lab\n"
        f"print(start_lab(User.objects.get(username='bob'), {slug!r}, reservation_key={KEY!r}).id)",
    )
    lab_stack.wait_for_state(stack.client("bob"), bob_session, {"ready"}, 60)
    taken = [vm for vm, state, session in rows(stack) if session == bob_session]
    assert taken
    assert taken[0] in seats
    assert not lab_stack.domain_exists(bob_session)
    stack.shell(f"from labs.models import Reservation; Reservation.objects.filter(pk={reservation_id}).update(size=1)")

    # The seat left dies: the reconciler drops it and the reservation is filled again, by a clone.
    (spare,) = ready(stack)
    pid = int(Path(f"/run/libvirt/qemu/virtlab-{spare}.pid").read_text())
    os.kill(pid, signal.SIGKILL)
    servers.wait_for(lambda: not lab_stack.domain_exists(spare), 30, "the killed VM to stop")
    stack.shell(f"from labs import task_calls; task_calls.reconcile_host.on({host!r})")
    servers.wait_for(lambda: ready(stack) not in ([], [spare]), 180, "a replacement seat")
    (replacement,) = ready(stack)
    assert lab_stack.snapshots_of(replacement) == []
    assert backing_files(replacement) == backing_files(taken[0])

    # Released: its unused VMs and their disks are gone; the learner's seat runs on.
    stack.shell(f"from labs import task_calls; task_calls.release_reservation.on({host!r}, {reservation_id})")
    servers.wait_for(lambda: rows(stack) == [], 60, "the reservation's release")
    assert not lab_stack.domain_exists(replacement)
    assert not session_dir(DEFAULT_DISKS_ROOT, replacement).exists()
    assert lab_stack.domain_exists(taken[0])

    # The lab is edited: its template is stale, kept while bob's clone runs on it, removed after.
    lab_yaml = Path(stack.env["VIRTLAB_CONTENT_DIR"]) / "labs" / slug / "lab.yaml"
    lab_yaml.write_text(lab_yaml.read_text() + "# edited\n")
    (stale,) = {Path(f).parent for f in backing_files(taken[0])}
    reconcile = f"from labs.host.reconcile import reconcile_host; print(reconcile_host({host!r})['templates_removed'])"
    assert shell_result(stack, reconcile) == "[]"
    assert stale.is_dir()
    stack.client("bob").request("POST", f"/api/sessions/{bob_session}/stop")
    lab_stack.wait_for_state(stack.client("bob"), bob_session, {"destroyed"}, 60)
    assert shell_result(stack, reconcile) == str([stale.name])
    assert not stale.exists()


def test_a_template_is_keyed_by_the_image_the_profile_and_every_file_of_the_lab(
    tmp_path: Path, guest_image: Path
) -> None:
    slug = lab_stack.write_test_lab(tmp_path)
    lab = load_catalog(tmp_path / "labs").labs[slug]
    key = template_key(lab, "tiny", guest_image)
    assert key == template_key(lab, "tiny", guest_image)  # stable: clones keep coming from one template
    assert key != template_key(lab, "storage", guest_image)
    assert key != template_key(None, "tiny", guest_image)
    step = lab.path / "steps" / "02-world" / "en.md"  # not even step 1: any edit makes a new one
    step.write_text(step.read_text() + "One more sentence.\n")
    assert template_key(lab, "tiny", guest_image) != key
