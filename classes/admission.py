"""Admission control: will the hosts hold a class's seats, and on which host does each seat go.

Each host's room for VMs of a lab's profile comes from its advert (labs.host_registry): its VM
slots (`max_vms`, which the agent budgets by memory for the `tiny` profile and by CPU under TCG),
its memory at the profile's cost (labs.profiles.vm_cost_mib), and its free disk at the per-session
budget; less the seats other classes overlapping in time hold there. A class that does not fit
is refused with the shortfall named; one that fits is spread over the hosts by their room.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import redis
from django.db.models import Q
from django.utils.translation import gettext as _

from classes.errors import NoCapacity
from classes.models import LabClass
from labs import host_registry
from labs.profiles import PROFILES, get_profile, vm_cost_mib
from labs.services import limits
from labs.services.catalog import require_lab


@dataclass(frozen=True)
class HostRoom:
    host: str
    room: int  # seats of the profile the host could hold over the class's time
    held: int  # of which other overlapping classes hold this many


def host_room(advert: host_registry.HostAdvert, profile: str) -> int:
    """Seats of `profile` the advertised host could run at once, by slots, memory and disk."""
    if not (advert.libvirt_ok and advert.image_present):
        return 0
    slots = advert.max_vms
    if limits.max_vms_per_host():
        slots = min(slots, limits.max_vms_per_host())
    # max_vms counts `tiny` VMs: the same memory holds fewer VMs of a bigger profile.
    by_memory = advert.max_vms * vm_cost_mib(PROFILES["tiny"]) // vm_cost_mib(get_profile(profile))
    by_disk = max(0, advert.disk_free_mib - limits.disk_reserve_mib()) // limits.disk_per_session_mib()
    return max(0, min(slots, by_memory, by_disk))


def window(klass: LabClass) -> tuple[datetime, datetime]:
    """The time a class holds its hosts: from its seats' preparation to the end of its grace."""
    return (
        klass.starts_at - timedelta(minutes=klass.lead_minutes),
        klass.ends_at + timedelta(minutes=klass.grace_minutes),
    )


def held_elsewhere(start: datetime, end: datetime, exclude: int | None) -> dict[str, int]:
    """Seats per host that other classes not yet ended hold during [start, end]."""
    held: dict[str, int] = {}
    others = LabClass.objects.exclude(state=LabClass.State.ENDED).filter(~Q(pk=exclude) if exclude else Q())
    for other in others:
        o_start, o_end = window(other)
        if o_start < end and start < o_end:
            for host, n in other.host_shares.items():
                held[host] = held.get(host, 0) + int(n)
    return held


def rooms(profile: str, start: datetime, end: datetime, exclude: int | None = None) -> list[HostRoom]:
    try:
        adverts = host_registry.list_hosts()
    except redis.RedisError:
        adverts = []
    held = held_elsewhere(start, end, exclude)
    return [HostRoom(a.name, host_room(a, profile), held.get(a.name, 0)) for a in adverts]


def admit(
    profile: str, seats: int, start: datetime, end: datetime, *, exclude: int | None = None,
    current: dict[str, int] | None = None,
) -> dict[str, int]:  # fmt: skip
    """Seats per host for a class of `seats` (its `current` shares kept), or NoCapacity naming the
    shortfall; the seats spread over the hosts by their room."""
    current = dict(current or {})
    free = {r.host: max(0, r.room - r.held - current.get(r.host, 0)) for r in rooms(profile, start, end, exclude)}
    wanted = seats - sum(current.values())
    if wanted > sum(free.values()):
        have = sum(free.values()) + sum(current.values())
        raise NoCapacity(
            _(
                "Not enough room on the lab hosts: this class needs %(seats)d x %(cost)d MiB (lab profile "
                "%(profile)s), the hosts have room for %(room)d at that time."
            )
            % {"seats": seats, "cost": vm_cost_mib(get_profile(profile)), "profile": profile, "room": have}
        )
    # In proportion to each host's room (D'Hondt: the next seat goes to the host with the most room
    # per seat it would then hold), so a host with twice the room takes twice the seats.
    room = dict(free)
    shares = current
    for _seat in range(max(0, wanted)):
        host = max((h for h in free if free[h] > 0), key=lambda h: (room[h] / (shares.get(h, 0) + 1), h))
        free[host] -= 1
        shares[host] = shares.get(host, 0) + 1
    return shares


def admit_class(klass: LabClass, seats: int) -> dict[str, int]:
    """Shares for `klass` at `seats` seats, keeping the hosts it holds already (resize)."""
    start, end = window(klass)
    return admit(require_lab(klass.lab_slug).profile, seats, start, end, exclude=klass.pk, current=klass.host_shares)
