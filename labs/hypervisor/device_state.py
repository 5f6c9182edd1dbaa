"""Guest-visible device state that QEMU's snapshots do not hold, carried across a revert.

QEMU's `edu` teaching device registers no migration state, and loading a snapshot resets the
machine before restoring what is saved, so after a revert edu's PCI configuration space is back
at its power-on values (BAR0 unassigned, memory decoding off) while the restored guest kernel
still believes BAR0 is where it put it: the VFIO lab's register reads return zeros. So before a
snapshot the guest copies edu's configuration space into its own RAM (a tmpfs, which the snapshot
holds), and after a revert writes it back where it differs. edu's internal registers (liveness,
factorial, DMA) restart from their reset values, as after a device reset.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from labs.profiles import EDU_QEMU_ARGS

_QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
_DIR = "/run/virtlab-pci-state"
_EDU_ID = "0x1234:0x11e8"  # vendor:device of QEMU's edu

SAVE_SCRIPT = f"""set -e
rm -rf {_DIR}; mkdir -p {_DIR}
for d in /sys/bus/pci/devices/*; do
  read -r vendor < "$d/vendor"; read -r device < "$d/device"  # builtins: a fork costs ~35 ms under TCG
  [ "$vendor:$device" = {_EDU_ID} ] || continue
  cat "$d/config" > "{_DIR}/${{d##*/}}"
done
"""

# BARs and capabilities first (0x10-0xff), then the command register that turns decoding on.
RESTORE_SCRIPT = f"""set -e
for f in {_DIR}/*; do
  [ -e "$f" ] || continue
  cfg=/sys/bus/pci/devices/${{f##*/}}/config
  [ -e "$cfg" ] || continue
  cmp -s "$f" "$cfg" && continue
  dd if="$f" of="$cfg" bs=4 skip=4 seek=4 count=60 conv=notrunc 2>/dev/null
  dd if="$f" of="$cfg" bs=2 skip=2 seek=2 count=1 conv=notrunc 2>/dev/null
done
"""


def has_unsaved_devices(domain_xml: str) -> bool:
    """Whether the domain has a device whose state its snapshots lose (edu, added by the vfio profile)."""
    root = ET.fromstring(domain_xml)  # noqa: S314 - libvirtd output
    args = [arg.get("value") for arg in root.iter(f"{{{_QEMU_NS}}}arg")]
    return any(args[i : i + len(EDU_QEMU_ARGS)] == list(EDU_QEMU_ARGS) for i in range(len(args)))
