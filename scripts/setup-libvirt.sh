#!/bin/sh
# Prepare this host to run VirtLab guests through libvirtd (qemu:///system) without systemd.
# Idempotent, non-interactive, must run as root. Safe to re-run at any time: it only creates what
# is missing, rewrites VirtLab's qemu.conf, and starts the daemons if they are not running.
set -eu

QEMU_USER=libvirt-qemu
QEMU_GROUP=libvirt-qemu
DISKS_DIR=/var/lib/virtlab/disks
IMAGE_ROOT=/var/cache/virtlab/guest
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
# if that user cannot open /dev/kvm, every define re-probes QEMU (~50 s here). Grant it the usual
# way (group kvm, 0660), which is what udev does on a systemd host.
restart_needed=0
if [ -e /dev/kvm ]; then
    getent group kvm >/dev/null || groupadd -r kvm
    id -nG "$QEMU_USER" | tr ' ' '\n' | grep -qx kvm || {
        usermod -a -G kvm "$QEMU_USER"
        restart_needed=1 # libvirtd resolves the qemu user's groups when it starts
    }
    chgrp kvm /dev/kvm
    chmod 0660 /dev/kvm
fi

# Overlays live here; 0711 lets QEMU (as the qemu user) reach its own files without listing others.
mkdir -p "$DISKS_DIR"
chown root:root /var/lib/virtlab "$DISKS_DIR"
chmod 0755 /var/lib/virtlab
chmod 0711 "$DISKS_DIR"

# QEMU opens the kernel/initrd after dropping to the qemu user: every directory on the way must be
# traversable. libvirt relabels the files themselves, not their parent directories.
mkdir -p "$IMAGE_ROOT"
chmod 0755 /var/cache/virtlab "$IMAGE_ROOT"
for dir in "$IMAGE_ROOT"/*/; do
    if [ -f "${dir}manifest.json" ]; then chmod o+rx "$dir"; fi
done

# Confinement: QEMU runs as the unprivileged qemu user under QEMU's seccomp sandbox, with a
# private /dev (mount namespace). libvirt chowns the files a guest needs (kernel, initrd, disks)
# to that user while it runs and restores the owner afterwards (remember_owner, via xattrs).
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

# Prove the qemu user can run QEMU at all here (setuid/setgid drop and the seccomp filter), with
# the same sandbox flags libvirt uses; a failure is reported instead of silently running as root.
probe=$(printf '{"execute":"qmp_capabilities"}\n{"execute":"quit"}\n' |
    timeout 20 setpriv --reuid="$QEMU_USER" --regid="$QEMU_GROUP" --init-groups \
    qemu-system-x86_64 -machine none -accel tcg -nodefaults -display none -monitor none \
    -sandbox on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny \
    -qmp stdio 2>&1 | head -c 400 || true)
case "$probe" in
*'"QMP"'*) log "QEMU runs as $QEMU_USER with the seccomp sandbox" ;;
*) die "QEMU cannot run as $QEMU_USER with seccomp here: $probe" ;;
esac

log "libvirtd ready: $(virsh -q -c qemu:///system version 2>/dev/null | tr '\n' ' ')"
