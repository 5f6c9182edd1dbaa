"""A lab VM that keeps a core busy for long (a fork bomb, an endless loop) yields to the others.

Every VM has the same CPU weight, so under TCG a learner whose guest spins takes as much of the
host as the VMs of learners who are typing, and their echo waits behind it (bench/isolation.py on
2026-12-06: echo p95 23 ms without the abuser, 200 ms with it). Its quota (one core per vCPU) still holds; on
top of that, once it has used more than LABS_CPU_HOG_PCT % of its cores for LABS_CPU_HOG_AFTER_S,
its weight drops to 1/HOG_WEIGHT_DIVISOR of what it was, until it has been calm for as long. A
lower weight takes nothing from it on an idle host (CPU is shared in proportion only when it is
short), so a legitimate long job is slowed only while others need the CPU.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.conf import settings

from labs.hypervisor import Hypervisor, HypervisorError
from labs.models import id_prefixes

log = logging.getLogger(__name__)
HOG_WEIGHT_DIVISOR = 16
CALM_SHARE = 0.25  # of its cores: below this a lowered VM counts as calm


@dataclass
class _Track:
    cpu_ns: int
    at: float
    busy_since: float | None = None
    calm_since: float | None = None
    weight_before: int | None = None  # set while lowered


class CpuHogs:
    """Called every second or so by the host agent with each running VM's CPU time."""

    def __init__(self) -> None:
        self.tracks: dict[str, _Track] = {}

    def changes(self, times: dict[str, tuple[int, int]], now: float) -> tuple[list[str], list[str]]:
        """(VMs to lower, VMs to restore) given their (CPU time in ns, vCPUs) at `now` (monotonic s)."""
        after, share = settings.LABS_CPU_HOG_AFTER_S, settings.LABS_CPU_HOG_PCT / 100
        lower, restore = [], []
        for vm_id in set(self.tracks) - set(times):
            del self.tracks[vm_id]  # stopped
        for vm_id, (cpu_ns, vcpus) in times.items():
            track = self.tracks.get(vm_id)
            if track is None:
                self.tracks[vm_id] = _Track(cpu_ns, now)
                continue
            used = (cpu_ns - track.cpu_ns) / 1e9 / max(now - track.at, 1e-3) / max(vcpus, 1)
            track.cpu_ns, track.at = cpu_ns, now
            track.busy_since = (track.busy_since or now) if used >= share else None
            track.calm_since = (track.calm_since or now) if used < CALM_SHARE else None
            lowered = track.weight_before is not None
            if not lowered and track.busy_since is not None and now - track.busy_since >= after:
                lower.append(vm_id)
            elif lowered and track.calm_since is not None and now - track.calm_since >= after:
                restore.append(vm_id)
        return lower, restore

    def tick(self, hv: Hypervisor, now: float, namespace: tuple[str, ...] | None = None) -> None:
        """Look at this deployment's VMs (or those whose id starts with one of `namespace`)."""
        if settings.LABS_CPU_HOG_AFTER_S <= 0:
            return
        lower, restore = self.changes(hv.cpu_times(namespace or id_prefixes()), now)
        for vm_id in lower:
            try:
                vm = hv.vm(vm_id)
                before = vm.cpu_weight()
                lowered = max(2, before // HOG_WEIGHT_DIVISOR)
                vm.set_cpu_weight(lowered)
            except HypervisorError as exc:  # gone, or no cpu controller: nothing to do
                log.info("VM %s: CPU weight not lowered: %s", vm_id, exc)
                continue
            self.tracks[vm_id].weight_before = before
            log.warning(
                "VM %s has used over %d %% of its CPU for %d s: its CPU weight goes from %d to %d, "
                "so that the other VMs come first", vm_id, settings.LABS_CPU_HOG_PCT,
                settings.LABS_CPU_HOG_AFTER_S, before, lowered,
            )  # fmt: skip
        for vm_id in restore:
            track = self.tracks[vm_id]
            weight, track.weight_before = track.weight_before, None
            if weight is None:
                continue
            try:
                hv.vm(vm_id).set_cpu_weight(weight)
            except HypervisorError as exc:
                log.info("VM %s: CPU weight not restored: %s", vm_id, exc)
                continue
            log.info("VM %s is calm again: its CPU weight is back to %d", vm_id, weight)
