"""The host registry: each Celery host agent advertises its capacity in Redis.

(Not libvirt's view of a host: that is labs.hypervisor.Hypervisor.) The web tier never talks to
libvirt; it learns about hosts only from these adverts, which expire when an agent stops
refreshing them.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import redis
from django.conf import settings

from labs.redis_names import ADVERT_PREFIX

ADVERT_TTL_S = 30


@dataclass(frozen=True)
class HostAdvert:
    """What a host agent reports about itself."""

    name: str
    libvirt_ok: bool
    libvirt_error: str = ""
    accelerator: str = "unknown"  # "kvm" or "tcg"
    accelerator_reason: str = ""
    image_present: bool = False
    image_dir: str = ""
    image_hash: str = ""
    total_mem_mib: int = 0
    free_mem_mib: int = 0
    vm_count: int = 0
    max_vms: int = 0  # VMs it may run at once (memory, and CPU under TCG)
    cpus: int = 0
    max_boots: int = 1  # VMs it may boot at once (CPU-bound under TCG)
    disk_free_mib: int = 0
    kernel_features: list[str] = field(default_factory=list)
    confined: bool = False  # the agent's start-up check proved per-VM confinement (host_agent.py)
    confinement: str = ""  # what the check found, or what is missing
    updated_at: float = 0.0

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: str | bytes) -> HostAdvert:
        data: dict[str, Any] = json.loads(raw)
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


def redis_client() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)


def publish(advert: HostAdvert, client: redis.Redis | None = None) -> None:
    client = client or redis_client()
    stamped = HostAdvert(**{**asdict(advert), "updated_at": time.time()})
    client.set(ADVERT_PREFIX + advert.name, stamped.to_json(), ex=ADVERT_TTL_S)


def list_hosts(client: redis.Redis | None = None) -> list[HostAdvert]:
    client = client or redis_client()
    keys = sorted(client.scan_iter(match=ADVERT_PREFIX + "*"))
    raws = client.mget(keys) if keys else []
    return [HostAdvert.from_json(r) for r in raws if r]
