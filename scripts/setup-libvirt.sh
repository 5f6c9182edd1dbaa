#!/bin/sh
# Prepare this host to run VirtLab guests through libvirtd (qemu:///system) without systemd.
# Idempotent, non-interactive, must run as root. Safe to re-run at any time: it only creates what
# is missing, rewrites VirtLab's qemu.conf, and starts the daemons if they are not running.
set -eu

QEMU_USER=libvirt-qemu
QEMU_GROUP=libvirt-qemu
DISKS_DIR=/var/lib/virtlab/disks
IMAGE_ROOT=/var/cache/virtlab/guest
# Each VM's QEMU runs as its own uid:gid from this range (labs/hypervisor/confinement.py).
VM_ID_BASE=${VIRTLAB_VM_ID_BASE:-700000000}
VM_ID_COUNT=4096
# Who creates session disks: root for `make run`; the worker container's uid (10001) under compose.
DISKS_OWNER=${VIRTLAB_DISKS_OWNER:-root}
CONNECT_TIMEOUT_S=${VIRTLAB_LIBVIRT_TIMEOUT_S:-60}

log() { printf 'setup-libvirt: %s\n' "$*"; }
die() { printf 'setup-libvirt: error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root"
command -v libvirtd >/dev/null || die "libvirtd missing (apt-get install libvirt-daemon libvirt-daemon-driver-qemu)"
command -v virsh >/dev/null || die "virsh missing (apt-get install libvirt-clients)"

# Without these libvirtd exits early: "failed to open /var/log/libvirt/libvirtd.log".
mkdir -p /var/log/libvirt /var/lib/libvirt /var/lib/libvirt/qemu /var/cache/libvirt /run/libvirt

# libvirt resolves the default qemu user at driver start-up even if qemu.conf overrides it.
getent group "$QEMU_GROUP" >/dev/null || groupadd -r "$QEMU_GROUP"
getent passwd "$QEMU_USER" >/dev/null ||
    useradd -r -g "$QEMU_GROUP" -d /var/lib/libvirt -s /usr/sbin/nologin "$QEMU_USER"

# libvirt probes QEMU's capabilities as root (KVM seen) but validates its cache as the qemu user;
# if that user cannot open /dev/kvm, every define re-probes QEMU (~50 s here). Each VM's QEMU runs
# as its own uid with no groups, so the node is 0666, as systemd's udev rules make it (KVM is meant
# for unprivileged users; the per-VM uid, not the device mode, keeps VMs apart).
restart_needed=0
if [ -e /dev/kvm ]; then
    getent group kvm >/dev/null || groupadd -r kvm
    id -nG "$QEMU_USER" | tr ' ' '\n' | grep -qx kvm || {
        usermod -a -G kvm "$QEMU_USER"
        restart_needed=1 # libvirtd resolves the qemu user's groups when it starts
    }
    chgrp kvm /dev/kvm
    chmod 0666 /dev/kvm
fi

# Overlays live here; 0711 lets each VM's QEMU reach its own (0600) files without listing others'.
mkdir -p "$DISKS_DIR"
chown root:root /var/lib/virtlab
chown "$DISKS_OWNER" "$DISKS_DIR"
chmod 0755 /var/lib/virtlab
chmod 0711 "$DISKS_DIR"

# QEMU opens the kernel/initrd after dropping to the qemu user: every directory on the way must be
# traversable. libvirt relabels the files themselves, not their parent directories.
mkdir -p "$IMAGE_ROOT"
chmod 0755 /var/cache/virtlab "$IMAGE_ROOT"
# Every VM reads the image's files (tools disk, base disk) under its own uid: root-owned and
# world-readable, never writable by a VM. Older VirtLab versions let libvirt chown them to the
# shared qemu user, which could then have rewritten them for every later VM: give them back.
for dir in "$IMAGE_ROOT"/*/; do
    [ -f "${dir}manifest.json" ] || continue
    chmod o+rx "$dir"
    for file in "$dir"*; do
        if [ -f "$file" ] && [ ! -L "$file" ]; then
            chown root:root "$file"
            chmod 0644 "$file"
        fi
    done
done

# The VM id range must be nobody's: a login or service sharing a uid with a VM could open its disks.
clash=$(getent passwd | awk -F: -v lo="$VM_ID_BASE" -v n="$VM_ID_COUNT" '$3 >= lo && $3 < lo + n {print $1}')
clash=$clash$(getent group | awk -F: -v lo="$VM_ID_BASE" -v n="$VM_ID_COUNT" '$3 >= lo && $3 < lo + n {print $1}')
[ -z "$clash" ] || die "accounts inside the VM id range $VM_ID_BASE+$VM_ID_COUNT: $clash (set VIRTLAB_VM_ID_BASE)"

# Confinement. No MAC module is usable here for sVirt (no AppArmor in the kernel, SELinux not
# enabled), so security_driver is "none" and libvirt's DAC driver separates VMs by uid: every
# domain VirtLab defines carries its own static label (+uid:+gid from the range above) and libvirt
# chowns that VM's files (its disks, its copy of kernel and initrd) to it while it runs, restoring
# the owner afterwards (remember_owner, via xattrs). `user` below is only the default for domains
# without a label (and whom libvirt checks its capability cache as). QEMU runs under its seccomp
# sandbox, with a private /dev (mount namespace), in a cgroup with CPU and I/O limits.
confined_conf() {
    cat <<EOF
# Written by VirtLab scripts/setup-libvirt.sh; re-running the script rewrites this file.
user = "$QEMU_USER"
group = "$QEMU_GROUP"
dynamic_ownership = 1
remember_owner = 1
seccomp_sandbox = 1
namespaces = [ "mount" ]
security_driver = "none"
swtpm_user = "root"
swtpm_group = "root"
EOF
}

write_conf() {
    tmp=$(mktemp /etc/libvirt/qemu.conf.XXXXXX)
    "$1" >"$tmp"
    chmod 0600 "$tmp"
    if [ -f /etc/libvirt/qemu.conf ] && cmp -s "$tmp" /etc/libvirt/qemu.conf; then
        rm -f "$tmp"
        return 1
    fi
    mv "$tmp" /etc/libvirt/qemu.conf
    return 0
}

# A running libvirtd must re-read qemu.conf, so it is restarted when the file changes.
if write_conf confined_conf; then
    restart_needed=1
    log "wrote /etc/libvirt/qemu.conf (QEMU as $QEMU_USER, seccomp sandbox on)"
fi

pid_of() { pidof "$1" 2>/dev/null | awk '{print $1}'; }

# What systemd would mount at boot; only read here, to report which LSMs the kernel runs.
if [ ! -r /sys/kernel/security/lsm ] && [ -d /sys/kernel/security ]; then
    mount -t securityfs securityfs /sys/kernel/security 2>/dev/null || true
fi
lsms=$(cat /sys/kernel/security/lsm 2>/dev/null || echo "unknown (no securityfs)")
log "kernel security modules: $lsms (VMs are separated by per-VM uid/gid: libvirt DAC)"

if [ "$restart_needed" = 1 ] && [ -n "$(pid_of libvirtd)" ]; then
    log "restarting libvirtd to apply qemu.conf"
    kill "$(pid_of libvirtd)"
    i=0
    while [ -n "$(pid_of libvirtd)" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
fi

[ -n "$(pid_of virtlogd)" ] || { virtlogd -d; log "started virtlogd"; }
[ -n "$(pid_of libvirtd)" ] || { libvirtd -d; log "started libvirtd"; }

# The first connection after a fresh install probes QEMU's capabilities (~8 s here).
start=$(date +%s)
until virsh -q -c qemu:///system version >/dev/null 2>&1; do
    if [ $(($(date +%s) - start)) -ge "$CONNECT_TIMEOUT_S" ]; then
        tail -n 20 /var/log/libvirt/libvirtd.log >&2 2>/dev/null || true
        die "libvirtd did not answer on qemu:///system within ${CONNECT_TIMEOUT_S}s"
    fi
    sleep 0.5
done

# Prove QEMU runs here as a VM's uid (no account, no groups, as libvirt starts it) under the seccomp
# filter, with the same sandbox flags libvirt uses; a failure is reported instead of running as root.
probe=$(printf '{"execute":"qmp_capabilities"}\n{"execute":"quit"}\n' |
    timeout 20 setpriv --reuid="$VM_ID_BASE" --regid="$VM_ID_BASE" --clear-groups \
    qemu-system-x86_64 -machine none -accel tcg -nodefaults -display none -monitor none \
    -sandbox on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny \
    -qmp stdio 2>&1 | head -c 400 || true)
case "$probe" in
*'"QMP"'*) log "QEMU runs as a VM uid ($VM_ID_BASE) with the seccomp sandbox" ;;
*) die "QEMU cannot run as uid $VM_ID_BASE with seccomp here: $probe" ;;
esac

log "libvirtd ready: $(virsh -q -c qemu:///system version 2>/dev/null | tr '\n' ' ')"
