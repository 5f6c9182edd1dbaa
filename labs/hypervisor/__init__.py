"""VirtLab's typed, Django-free wrapper over libvirt-python (see README.md).

Importing this package opens no connection; use `Hypervisor.connect()` in the process that needs
one (a host agent), never in the web tier.
"""

from labs.profiles import PROFILES, Profile, get_profile

from .connection import DEFAULT_URI, HostCapacity, Hypervisor, TaggedDomain
from .console import Console
from .errors import (
    CommandTimeout,
    ConsoleClosed,
    DomainMissing,
    DomainNotRunning,
    GuestAgentTimeout,
    GuestAgentUnavailable,
    HostUnreachable,
    HypervisorError,
    ImageInvalid,
    OutOfCapacity,
    OutOfMemory,
    SnapshotMissing,
)
from .guest_agent import ExecResult, GuestAgent
from .image import GuestImage, load_image
from .vm import VM, BlockInfo

__all__ = [
    "DEFAULT_URI",
    "PROFILES",
    "VM",
    "BlockInfo",
    "CommandTimeout",
    "Console",
    "ConsoleClosed",
    "DomainMissing",
    "DomainNotRunning",
    "ExecResult",
    "GuestAgent",
    "GuestAgentTimeout",
    "GuestAgentUnavailable",
    "GuestImage",
    "HostCapacity",
    "HostUnreachable",
    "Hypervisor",
    "HypervisorError",
    "ImageInvalid",
    "OutOfCapacity",
    "OutOfMemory",
    "Profile",
    "SnapshotMissing",
    "TaggedDomain",
    "get_profile",
    "load_image",
]
