"""The session state machine: conditional transitions, pushed events, expiry, queue and warm pool."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.layers import get_channel_layer
from django.contrib.auth.models import User
from django.utils import timezone
from pytest_django import Settings

from labs import host_registry, services
from labs.host import reconcile
from labs.host.host_agent import vm_limit
from labs.hypervisor import HostCapacity
from labs.models import LabSession, PoolVM
from labs.redis_names import ADVERT_PREFIX, events_group
from labs.services import expiry, placement
from labs.services.transitions import transition
from labs.states import SessionState
from portal.models import EmailAddress
from tests import lab_stack as stack
from tests import servers

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]
S = SessionState


@pytest.fixture
def lab_world(settings: Settings, tmp_path: Path) -> Iterator[str]:
    with servers.private_redis() as url:
        stack.point_settings_at_redis(settings, url)
        settings.CONTENT_DIR = tmp_path / "content"
        yield stack.write_test_lab(settings.CONTENT_DIR)


def pushed(group: str, action: Callable[[], object]) -> list[dict[str, Any]]:
    """Messages the channel layer delivers to `group` while `action` runs (pub/sub keeps no
    backlog, so the listener subscribes, and proves it with a probe, before acting)."""

    async def scenario() -> list[dict[str, Any]]:
        layer = get_channel_layer()
        assert layer is not None
        channel = await layer.new_channel()
        await layer.group_add(group, channel)
        await layer.group_send(group, {"type": "probe"})
        assert (await asyncio.wait_for(layer.receive(channel), 5))["type"] == "probe"
        await sync_to_async(action)()
        messages = [await asyncio.wait_for(layer.receive(channel), 5)]
        with contextlib.suppress(TimeoutError):
            while True:
                messages.append(await asyncio.wait_for(layer.receive(channel), 0.5))
        return messages

    return async_to_sync(scenario)()


def test_transition_happens_once_and_is_pushed(alice: User, lab_world: str) -> None:
    session = LabSession.objects.create(user=alice, lab_slug=lab_world, state=S.REQUESTED, host="h")
    outcomes: list[bool] = []

    def twice() -> None:
        outcomes.append(transition(session.id, S.PROVISIONING))
        outcomes.append(transition(session.id, S.PROVISIONING))  # a duplicated task changes nothing

    events = pushed(events_group(session.id), twice)
    assert outcomes == [True, False]
    assert [(e["type"], e["session"]["state"]) for e in events] == [("session.event", "provisioning")]


def test_transition_refuses_edges_outside_the_state_machine(alice: User, lab_world: str) -> None:
    session = LabSession.objects.create(user=alice, lab_slug=lab_world, state=S.DESTROYED)
    assert transition(session.id, S.READY) is False
    with pytest.raises(ValueError, match="not a transition"):
        transition(session.id, S.READY, expected=[S.DESTROYED])
    session.refresh_from_db()
    assert session.state == S.DESTROYED


def test_ended_session_tells_the_terminal_it_is_gone(alice: User, lab_world: str) -> None:
    from labs.redis_names import terminal_group

    session = LabSession.objects.create(user=alice, lab_slug=lab_world, state=S.READY, host="h")
    events = pushed(terminal_group(session.id), lambda: transition(session.id, S.EXPIRED))
    assert [e["type"] for e in events] == ["term.gone"]


def test_session_ids_are_valid_libvirt_session_ids(alice: User, lab_world: str) -> None:
    from labs.hypervisor.naming import is_session_id

    ids = {LabSession.objects.create(user=alice, lab_slug=lab_world).id for _ in range(20)}
    assert len(ids) == 20
    assert all(is_session_id(i) for i in ids)


def test_expiry_and_idle_timeout_end_ready_sessions(alice: User, bob: User, lab_world: str, settings: Settings) -> None:
    settings.LABS_IDLE_TIMEOUT_S = 600
    now = timezone.now()
    expired = LabSession.objects.create(user=alice, lab_slug=lab_world, state=S.READY, host="h", vm_id="x",
                                        expires_at=now - timedelta(seconds=1), last_activity=now)  # fmt: skip
    idle = LabSession.objects.create(user=bob, lab_slug=lab_world, state=S.READY, host="h", vm_id="y",
                                     expires_at=now + timedelta(hours=1),
                                     last_activity=now - timedelta(seconds=601))  # fmt: skip
    fresh = LabSession.objects.create(user=bob, lab_slug=lab_world, state=S.READY, host="h", vm_id="z",
                                      expires_at=now + timedelta(hours=1), last_activity=now)  # fmt: skip
    assert sorted(expiry.expire_sessions()) == sorted([expired.id, idle.id])
    states = dict(LabSession.objects.values_list("id", "state"))
    assert (states[expired.id], states[idle.id], states[fresh.id]) == (S.EXPIRED, S.EXPIRED, S.READY)


def test_queued_sessions_start_in_order_when_a_host_frees(alice: User, bob: User, lab_world: str,
                                                          settings: Settings) -> None:  # fmt: skip
    settings.LABS_MAX_VMS_PER_HOST = 1
    first = services.start_lab(alice, lab_world)
    second = services.start_lab(bob, lab_world)
    assert (first.state, second.state) == (S.QUEUED, S.QUEUED)  # no host has advertised yet
    assert (first.queue_position, second.queue_position) == (1, 2)
    stack.advertise_host("h1")
    assert placement.place_queued() == 1
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.state, first.host, second.state, second.queue_position) == (S.REQUESTED, "h1", S.QUEUED, 1)
    services.stop_lab(first)
    assert placement.place_queued() == 1
    second.refresh_from_db()
    assert second.state == S.REQUESTED


def test_warm_pool_vm_is_handed_out_first(alice: User, lab_world: str) -> None:
    stack.advertise_host("h1")
    pool_vm = PoolVM.objects.create(host="h1", profile="tiny", state=PoolVM.State.READY)
    session = services.start_lab(alice, lab_world)
    pool_vm.refresh_from_db()
    assert (session.state, session.vm_id, session.host) == (S.REQUESTED, pool_vm.id, "h1")
    assert (pool_vm.state, pool_vm.session_id) == (PoolVM.State.ASSIGNED, session.id)


def test_a_vm_prepared_for_the_lab_wins_over_a_generic_one(alice: User, bob: User, lab_world: str) -> None:
    stack.advertise_host("h1")
    generic = PoolVM.objects.create(host="h1", profile="tiny", state=PoolVM.State.READY)
    other_lab = PoolVM.objects.create(host="h1", profile="tiny", lab_slug="another-lab", state=PoolVM.State.READY)
    prepared = PoolVM.objects.create(host="h1", profile="tiny", lab_slug=lab_world, state=PoolVM.State.READY)
    assert services.start_lab(alice, lab_world).vm_id == prepared.id
    assert services.start_lab(bob, lab_world).vm_id == generic.id  # never one prepared for another lab
    other_lab.refresh_from_db()
    assert other_lab.state == PoolVM.State.READY


def test_pool_sizes_name_profiles_and_labs(lab_world: str, settings: Settings) -> None:
    from labs.services.limits import PoolTarget, pool_targets

    settings.LABS_POOL_SIZES = f"tiny=2, lab:{lab_world}=1,lab:no-such-lab=1,warp=1,vfio=x"
    assert pool_targets() == [PoolTarget("tiny", "", 2), PoolTarget("tiny", lab_world, 1)]


def test_interrupted_provisioning_is_failed_with_a_clear_message(alice: User, lab_world: str) -> None:
    session = LabSession.objects.create(user=alice, lab_slug=lab_world, state=S.PROVISIONING, host="h1")
    assert reconcile.fail_interrupted("h1", timezone.now() + timedelta(seconds=1)) == [session.id]
    session.refresh_from_db()
    assert session.state == S.DESTROYED  # failed, and torn down on the spot by the host that found it
    assert "restarted" in session.error


def test_starts_beyond_the_hosts_boot_slots_wait_in_the_queue_until_a_boot_ends(
    alice: User, bob: User, carol: User, lab_world: str
) -> None:
    stack.advertise_host("h1", max_boots=1)  # a 1-core TCG host: one boot at a time
    first = services.start_lab(alice, lab_world)
    second = services.start_lab(bob, lab_world)
    assert (first.state, second.state, second.queue_position) == (S.REQUESTED, S.QUEUED, 1)
    assert transition(first.id, S.PROVISIONING)
    assert placement.place_queued() == 0, "still booting: the host's one boot slot is taken"
    assert transition(first.id, S.READY, expected=[S.PROVISIONING])
    assert placement.place_queued() == 1
    second.refresh_from_db()
    assert (second.state, second.host) == (S.REQUESTED, "h1")
    PoolVM.objects.create(host="h1", profile="tiny", state=PoolVM.State.BOOTING)
    assert transition(second.id, S.PROVISIONING)
    assert transition(second.id, S.READY, expected=[S.PROVISIONING])
    assert services.start_lab(carol, lab_world).state == S.QUEUED, "a warm-pool boot takes the slot too"


@pytest.mark.parametrize(
    ("accelerator", "per_cpu", "expected"), [("tcg", 16, 32), ("tcg", 0, 120), ("kvm", 16, 120), ("tcg", 100, 120)]
)
def test_a_tcg_host_runs_as_many_vms_as_its_cores_keep_interactive(
    accelerator: str, per_cpu: int, expected: int, settings: Settings
) -> None:
    settings.LABS_TCG_VMS_PER_CPU = per_cpu
    cap = HostCapacity(accelerator, "", total_mem_mib=24000, free_mem_mib=23000, vm_count=0, max_vms=120, cpus=2)
    assert vm_limit(cap) == expected


def test_a_full_queue_refuses_new_starts_with_the_number_waiting(
    alice: User, bob: User, carol: User, lab_world: str, settings: Settings
) -> None:
    settings.LABS_MAX_QUEUED = 2
    assert services.start_lab(alice, lab_world).state == S.QUEUED  # no host has advertised
    assert services.start_lab(bob, lab_world).state == S.QUEUED
    with pytest.raises(services.QueueFull, match="2 learners are waiting") as refused:
        services.start_lab(carol, lab_world)
    assert refused.value.status == 503
    assert not LabSession.objects.filter(user=carol).exists(), "a refused start leaves nothing behind"


def test_starts_that_waited_too_long_expire_with_a_message(alice: User, bob: User, lab_world: str) -> None:
    old = services.start_lab(alice, lab_world)
    new = services.start_lab(bob, lab_world)
    LabSession.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(hours=1))
    assert expiry.expire_sessions() == [old.id]
    old.refresh_from_db()
    new.refresh_from_db()
    assert (old.state, new.state, new.queue_position) == (S.EXPIRED, S.QUEUED, 1)
    assert "No VM became free" in old.error


def test_a_host_short_of_disk_takes_only_what_its_disk_budget_allows(
    alice: User, bob: User, carol: User, lab_world: str, settings: Settings
) -> None:
    settings.LABS_DISK_PER_SESSION_MIB, settings.LABS_DISK_RESERVE_MIB = 1024, 2048
    stack.advertise_host("h1", disk_free_mib=2048 + 2 * 1024 + 500)  # room for two sessions' budgets
    states = [services.start_lab(user, lab_world).state for user in (alice, bob, carol)]
    assert states == [S.REQUESTED, S.REQUESTED, S.QUEUED]
    stack.advertise_host("h2", disk_free_mib=2047)  # below its reserve: takes nothing
    assert placement.place_queued() == 0


def test_starts_spread_over_hosts_by_free_slots_and_boots_and_skip_a_host_whose_advert_is_gone(
    alice: User, bob: User, carol: User, lab_world: str
) -> None:
    """What tests/faults' two-host drill showed with real agents (now in bench/faults.py --two-hosts):
    the big host takes two starts, then is busy booting, so the third goes to the small one; once the
    big host stops advertising (lost), a new start goes to the small host."""
    stack.advertise_host("small", max_vms=2, max_boots=2)
    stack.advertise_host("big", max_vms=4, max_boots=2)
    started = [services.start_lab(user, lab_world) for user in (alice, bob, carol)]
    assert [(s.state, s.host) for s in started] == [(S.REQUESTED, "big"), (S.REQUESTED, "big"), (S.REQUESTED, "small")]
    for session in started:
        assert transition(session.id, S.PROVISIONING)
        assert transition(session.id, S.READY, expected=[S.PROVISIONING])
    host_registry.redis_client().delete(ADVERT_PREFIX + "big")  # its advert expired: the host is lost
    newcomer = services.start_lab(User.objects.create_user("dave", "dave@example.com", "pw"), lab_world)
    assert (newcomer.state, newcomer.host) == (S.REQUESTED, "small")


def test_a_full_queue_does_not_refuse_a_start_a_host_has_room_for(
    alice: User, lab_world: str, settings: Settings
) -> None:
    settings.LABS_MAX_QUEUED = 0
    stack.advertise_host("h1")
    assert services.start_lab(alice, lab_world).state == S.REQUESTED


def test_an_unverified_address_cannot_start_a_lab_until_verified(
    alice: User, lab_world: str, settings: Settings
) -> None:
    settings.ACCOUNT_EMAIL_VERIFICATION = True
    stack.advertise_host("h1")
    address = EmailAddress.objects.create(user=alice, email=alice.email)
    with pytest.raises(services.EmailUnverified, match="Verify your e-mail address") as refused:
        services.start_lab(alice, lab_world)
    assert refused.value.status == 403
    assert not LabSession.objects.filter(user=alice).exists()
    address.verified_at = timezone.now()
    address.save()
    assert services.start_lab(alice, lab_world).state == S.REQUESTED
