#!/bin/bash
# Build the VirtLab lab guest (kernel + initramfs) from Debian packages only.
#
#   guest/build.sh            -> prints the image directory as the last line of stdout
#
# Run as root to build. Without root it only finds an existing image (exit 77 if it would have
# to build).
#
# The image lands in $VIRTLAB_GUEST_CACHE/<hash>/ where <hash> covers this recipe (this file,
# init, src/**, packages.txt) and the exact Debian package versions used. A complete image
# directory is never rebuilt; $VIRTLAB_GUEST_CACHE/current points at the newest one.
# Progress goes to stderr so callers can take the path from stdout.
set -euo pipefail
umask 022
export LC_ALL=C

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${VIRTLAB_GUEST_CACHE:-/var/cache/virtlab/guest}
DEBS=$CACHE/debs   # downloaded .deb files, one dir per package=version
PKGS=$CACHE/pkgs   # extracted package trees, reused across recipe changes
KSERIES=${VIRTLAB_GUEST_KERNEL_SERIES:-6.12}
KFLAVOUR=amd64
# Reproducible timestamps inside the cpio archive.
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1700000000}

log() { printf 'build.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

START=$(date +%s.%N)

# ---------------------------------------------------------------- package resolution

candidate() { # candidate version of a package in the apt indexes, or nothing
    apt-cache policy "$1" 2>/dev/null | sed -n 's/^  Candidate: //p' | grep -v '(none)' || true
}

# Kernel ABI (e.g. 6.12.117+deb12) from Debian's linux-image-6.12-amd64 meta package, so a
# security update picks the new kernel; VIRTLAB_GUEST_KERNEL_ABI pins one explicitly.
if [ -n "${VIRTLAB_GUEST_KERNEL_ABI:-}" ]; then
    KABI=$VIRTLAB_GUEST_KERNEL_ABI
else
    KABI=$(apt-cache show --no-all-versions "linux-image-$KSERIES-$KFLAVOUR" 2>/dev/null |
        sed -n "s/^Depends:.*linux-image-\(${KSERIES//./\\.}\.[0-9]*+deb[0-9]*\)-$KFLAVOUR .*/\1/p")
    KABI=${KABI%%$'\n'*}
fi
[ -n "$KABI" ] || die "cannot resolve linux-image-$KSERIES-$KFLAVOUR (run apt-get update?)"
KREL=$KABI-$KFLAVOUR                       # uname -r inside the guest
KVERSION=$(candidate "linux-image-$KREL")  # Debian package version, e.g. 6.12.117-1~deb12u1
[ -n "$KVERSION" ] || die "no candidate for linux-image-$KREL"

# Packages fetched with apt-get download (not installed on the host).
declare -A DL=(
    ["linux-image-$KREL"]=$KVERSION
    ["linux-headers-$KREL"]=$KVERSION
    ["linux-headers-$KABI-common"]=$KVERSION
    ["linux-kbuild-$KABI"]=$KVERSION
    ["linux-source-$KSERIES"]=$KVERSION
    ["qemu-guest-agent"]=$(candidate qemu-guest-agent)
    # Debian's dynamic busybox, not busybox-static: the static one is built with
    # FEATURE_SH_STANDALONE, so its shell runs its own mount/modprobe/losetup/... applets even
    # when the real util-linux and kmod tools are on PATH. This one needs only libc.
    ["busybox"]=$(candidate busybox)
)
for p in "${!DL[@]}"; do [ -n "${DL[$p]}" ] || die "no candidate version for $p"; done

fetch() { # fetch PKG VERSION -> path of the .deb (downloaded once)
    local dir="$DEBS/$1=$2"
    if ! compgen -G "$dir/*.deb" >/dev/null; then
        need_root "downloading $1=$2"
        log "downloading $1=$2"
        local tmp="$dir.tmp$$"
        rm -rf "$tmp" && mkdir -p "$tmp"
        (cd "$tmp" && apt-get -q -o APT::Sandbox::User=root download "$1=$2" >&2)
        chmod 0644 "$tmp"/*.deb
        mv -T "$tmp" "$dir" 2>/dev/null || rm -rf "$tmp"   # lost a race: keep the winner's
    fi
    compgen -G "$dir/*.deb" | head -n1
}

unpack() { # unpack NAME DEB... -> tree with all debs extracted (once)
    local name=$1 dir="$PKGS/$1"; shift
    if [ ! -d "$dir" ]; then
        need_root "unpacking $name"
        log "unpacking $name"
        local deb tmp="$dir.tmp$$"
        rm -rf "$tmp" && mkdir -p "$tmp"
        for deb in "$@"; do dpkg-deb -x "$deb" "$tmp"; done
        mv -T "$tmp" "$dir" 2>/dev/null || rm -rf "$tmp"
    fi
    printf '%s\n' "$dir"
}

# Host programs copied into the initramfs with their shared-library closure. They come from
# Debian packages installed on the build host (guest/packages.txt); their versions enter the hash.
HOST_PROGS=(
    /usr/bin/qemu-img /usr/bin/qemu-nbd /usr/bin/lspci /usr/bin/kmod
    /usr/bin/unshare /usr/bin/nsenter /usr/bin/mount /usr/bin/umount /usr/sbin/losetup
    /usr/bin/lsblk /usr/sbin/pivot_root /usr/sbin/switch_root /usr/sbin/mke2fs /usr/sbin/blkid
)
PCI_IDS=/usr/share/misc/pci.ids
for f in "${HOST_PROGS[@]}" "$PCI_IDS"; do
    [ -e "$f" ] || die "$f missing: apt-get install \$(cat $HERE/packages.txt)"
done

# Building needs root (apt-get download, root-owned files in the image); finding a cached
# image does not, as long as the packages it needs are already unpacked.
need_root() {
    if [ "$(id -u)" != 0 ]; then
        log "error: $* needs root: run guest/build.sh as root"
        exit 77
    fi
}
if [ ! -d "$PKGS" ]; then need_root "creating $CACHE"; fi
if [ "$(id -u)" = 0 ]; then
    mkdir -p "$DEBS" "$PKGS"
    chmod 0755 "$CACHE" "$DEBS" "$PKGS"
fi

QGA_DEB=$(fetch qemu-guest-agent "${DL[qemu-guest-agent]}")
QGA_TREE=$(unpack "qemu-guest-agent_${DL[qemu-guest-agent]}" "$QGA_DEB")
QGA=$QGA_TREE/usr/sbin/qemu-ga
BUSYBOX=$(unpack "busybox_${DL[busybox]}" "$(fetch busybox "${DL[busybox]}")")/bin/busybox

libs_of() { # shared objects (resolved paths) a dynamic executable loads, including the loader
    ldd "$1" 2>/dev/null | awk '/=> \//{print $3} /^\t\/[^ ]+ \(/{print $1}'
}
mapfile -t HOST_LIBS < <(for f in "${HOST_PROGS[@]}" "$QGA" "$BUSYBOX"; do libs_of "$f"; done | sort -u)

# Debian packages owning the copied host files; dpkg's database predates merged /usr, so ask for
# both spellings of each path at once (one dpkg-query run: it reads every file list).
owners() {
    local f paths=()
    for f in "$@"; do
        case $f in /usr/*) paths+=("$f" "${f#/usr}") ;; *) paths+=("$f" "/usr$f") ;; esac
    done
    dpkg-query -S "${paths[@]}" 2>/dev/null | sed 's/: .*//; s/, /\n/g' | sed 's/:amd64$//' || true
}
# Packages whose contents or tools shape the image: copied files' owners + the build toolchain.
mapfile -t HOST_PKGS < <(
    owners "${HOST_PROGS[@]}" "${HOST_LIBS[@]}" "$PCI_IDS"
    printf '%s\n' gcc-12 libc6-dev kmod cpio zstd binutils make perl-base
    [ -f /usr/lib/x86_64-linux-gnu/liburing.a ] && echo liburing-dev
)
VERSIONS=$(
    for p in "${!DL[@]}"; do printf '%s=%s\n' "$p" "${DL[$p]}"; done
    for p in $(printf '%s\n' "${HOST_PKGS[@]}" | sort -u); do
        [ -n "$p" ] && printf '%s=%s\n' "$p" "$(dpkg-query -W -f='${Version}' "$p")"
    done
)
VERSIONS=$(sort -u <<<"$VERSIONS")

# ---------------------------------------------------------------- recipe hash

HASH=$(
    cd "$HERE"
    { printf '%s\n' "$VERSIONS"
      # Sources only: a program left in src/ by a manual make must not change the hash.
      find build.sh init packages.txt src -type f \( -name '*.[ch]' -o -name Makefile -o ! -path 'src/*' \) \
          -print0 | sort -z | xargs -0 sha256sum
    } | sha256sum | cut -c1-16
)
OUT=$CACHE/$HASH

# Old images pile up (~80 MB each) as the recipe changes: keep the newest few and any image a
# VirtLab domain still boots from (its overlays and snapshots reference the kernel and initrd).
prune_old_images() {
    local keep=${VIRTLAB_GUEST_KEEP:-3} in_use="" dom dir
    if command -v virsh >/dev/null; then
        for dom in $(virsh -q -c qemu:///system list --all --name 2>/dev/null | grep '^virtlab-' || true); do
            in_use+=$(virsh -c qemu:///system dumpxml "$dom" 2>/dev/null || true)
        done
    fi
    # shellcheck disable=SC2012  # names are our own hashes; ls -t orders them newest first
    ls -1dt "$CACHE"/*/ 2>/dev/null | tail -n +"$((keep + 1))" | while read -r dir; do
        dir=${dir%/}
        [ -f "$dir/manifest.json" ] || continue
        # Recently built images may be in use by a run that has not defined its domains yet.
        [ -n "$(find "$dir" -maxdepth 0 -mmin +120)" ] || continue
        [ "$(readlink -f "$CACHE/current")" = "$(readlink -f "$dir")" ] && continue
        grep -qF "$dir/" <<<"$in_use" && continue
        rm -rf -- "$dir" && log "pruned old image $dir"
    done
}

point_current() { # atomically repoint $CACHE/current
    local tmp="$CACHE/.current.tmp$$"
    ln -sfn "$HASH" "$tmp" && mv -T "$tmp" "$CACHE/current"
}

if [ -f "$OUT/manifest.json" ]; then
    log "cached: $OUT"
    if [ -w "$CACHE" ]; then point_current; fi
    printf '%s\n' "$OUT"
    exit 0
fi

need_root "building image $HASH"
log "building image $HASH (kernel $KREL, $KVERSION)"
WORK=$(mktemp -d "$CACHE/.build-$HASH.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
ROOT=$WORK/root
IMG=$WORK/image
mkdir -p "$ROOT" "$IMG"

# ---------------------------------------------------------------- kernel

KTREE=$(unpack "linux-image-${KREL}_$KVERSION" "$(fetch "linux-image-$KREL" "$KVERSION")")
KMODS=$KTREE/lib/modules/$KREL
[ -d "$KMODS" ] || KMODS=$KTREE/usr/lib/modules/$KREL
# The .deb ships no modules.dep (postinst runs depmod); generate it once in the cached tree.
if [ ! -s "$KMODS/modules.dep" ]; then
    depmod -b "${KMODS%/lib/modules/*}" "$KREL"
fi
BZIMAGE=$KTREE/boot/vmlinuz-$KREL
cp "$BZIMAGE" "$IMG/bzImage"

# vmlinux: the bzImage's payload is the zstd-compressed ELF kernel with its decompressed size
# appended (4 bytes). Offsets come from the x86 boot protocol header: setup_sects at 0x1f1,
# payload_offset/payload_length at 0x248/0x24c, relative to the protected-mode code that
# starts after (setup_sects + 1) * 512 bytes. Booting the ELF through its PVH entry skips
# decompression, which costs 1-2 s under TCG.
u8() { od -An -tu1 -j "$2" -N1 "$1" | tr -d ' '; }
u32() { od -An -tu4 -j "$2" -N4 "$1" | tr -d ' '; }
SETUP_SECTS=$(u8 "$BZIMAGE" $((0x1f1)))
PAYLOAD_OFF=$(( (SETUP_SECTS + 1) * 512 + $(u32 "$BZIMAGE" $((0x248))) ))
PAYLOAD_LEN=$(u32 "$BZIMAGE" $((0x24c)))
[ "$(od -An -tx1 -j "$PAYLOAD_OFF" -N4 "$BZIMAGE" | tr -d ' ')" = 28b52ffd ] ||
    die "bzImage payload is not zstd (kernel compression changed?)"
dd if="$BZIMAGE" iflag=skip_bytes,count_bytes skip="$PAYLOAD_OFF" count=$((PAYLOAD_LEN - 4)) bs=1M status=none |
    zstd -dc --long=31 -q >"$IMG/vmlinux"
# XEN_ELFNOTE_PHYS32_ENTRY (type 18) is the PVH entry point QEMU looks for.
grep -Eq '^[[:space:]]*Xen[[:space:]]+0x[0-9a-f]+[[:space:]]+Unknown note type: \(0x00000012\)' <<<"$(readelf -n "$IMG/vmlinux")" ||
    die "vmlinux has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY)"
# The last PT_LOAD segment stores .bss/.brk/.init.scratch as 10.8 MiB of zeros in the file (the
# first two end in 0.3 MiB of zeros). QEMU keeps the kernel mmapped as a ROM for resets, so every
# byte of p_filesz stays in each VM's RSS. Cut p_filesz at the last non-zero page: the loader
# zero-fills up to p_memsz, so the guest sees the same memory and QEMU touches 7.6 MiB less.
perl -e '
    use strict; use warnings;
    my $f = shift; open(my $fh, "+<:raw", $f) or die "$f: $!";
    my $d = do { local $/; <$fh> };
    my ($phoff) = unpack("Q<", substr($d, 32, 8));
    my ($phentsize, $phnum) = unpack("S<S<", substr($d, 54, 4));
    for my $i (0 .. $phnum - 1) {
        my $o = $phoff + $i * $phentsize;
        my ($type, $flags, $off, $va, $pa, $filesz) = unpack("L<L<Q<Q<Q<Q<", substr($d, $o, 40));
        next unless $type == 1;   # PT_LOAD
        (my $seg = substr($d, $off, $filesz)) =~ s/\0+\z//;
        my $keep = (length($seg) + 4095) & ~4095;
        substr($d, $o + 32, 8) = pack("Q<", $keep) if $keep < $filesz;
    }
    seek($fh, 0, 0); print $fh $d; close($fh) or die "$f: $!";
' "$IMG/vmlinux"

# ---------------------------------------------------------------- mtty.ko (out of tree)

# Debian builds its kernels without CONFIG_SAMPLES, so the mdev sample driver is compiled here
# from Debian's linux-source against the matching headers.
KBUILD=$(unpack "kbuild-${KREL}_$KVERSION" \
    "$(fetch "linux-headers-$KREL" "$KVERSION")" \
    "$(fetch "linux-headers-$KABI-common" "$KVERSION")" \
    "$(fetch "linux-kbuild-$KABI" "$KVERSION")")
KHDR=$KBUILD/usr/src/linux-headers-$KREL
# The flavour Makefile includes the common one by absolute path; point it into our tree.
sed -i "s#^include .*/usr/src/linux-headers-#include $KBUILD/usr/src/linux-headers-#" "$KHDR/Makefile"
SRC_SAMPLES=$PKGS/linux-source-${KSERIES}_$KVERSION
if [ ! -f "$SRC_SAMPLES/samples/vfio-mdev/mtty.c" ]; then
    log "extracting samples/vfio-mdev from linux-source-$KSERIES"
    SRC_DEB=$(fetch "linux-source-$KSERIES" "$KVERSION")
    rm -rf "$SRC_SAMPLES.tmp$$" && mkdir -p "$SRC_SAMPLES.tmp$$"
    dpkg-deb --fsys-tarfile "$SRC_DEB" | tar -xO "./usr/src/linux-source-$KSERIES.tar.xz" |
        tar -xJ -C "$SRC_SAMPLES.tmp$$" --strip-components=1 --wildcards '*/samples/vfio-mdev/*'
    mv -T "$SRC_SAMPLES.tmp$$" "$SRC_SAMPLES" 2>/dev/null || rm -rf "$SRC_SAMPLES.tmp$$"
fi
mkdir -p "$WORK/mtty"
cp "$SRC_SAMPLES/samples/vfio-mdev/mtty.c" "$WORK/mtty/"
echo 'obj-m := mtty.o' >"$WORK/mtty/Kbuild"
# BTF for out-of-tree modules needs pahole; mtty needs no BTF.
# No debug info and a prefix map keep the random build dir out of the module (reproducible).
make -s -C "$KHDR" M="$WORK/mtty" CONFIG_DEBUG_INFO_BTF_MODULES= \
    KCFLAGS="-g0 -ffile-prefix-map=$WORK/mtty=samples/vfio-mdev" modules >&2

MTTY_VERMAGIC=$(modinfo -F vermagic "$WORK/mtty/mtty.ko")
KERNEL_VERMAGIC=$(modinfo -F vermagic "$(find "$KMODS/kernel/drivers/vfio" -name 'vfio.ko*' | head -n1)")
[ "$MTTY_VERMAGIC" = "$KERNEL_VERMAGIC" ] || die "mtty vermagic '$MTTY_VERMAGIC' != kernel '$KERNEL_VERMAGIC'"

# ---------------------------------------------------------------- initramfs tree

# Merged /usr, like Debian 12: one place for each binary and library.
mkdir -p "$ROOT"/usr/{bin,sbin,lib/x86_64-linux-gnu,lib64,share/misc} \
    "$ROOT"/{dev,proc,sys,tmp,run,root,etc,mnt,var/log}
for d in bin sbin lib lib64; do ln -s "usr/$d" "$ROOT/$d"; done
chmod 1777 "$ROOT/tmp"
chmod 0700 "$ROOT/root"

install -m 0755 "$HERE/init" "$ROOT/init"

# Real tools first, so busybox applets only fill the gaps.
for f in "${HOST_PROGS[@]}"; do install -m 0755 "$f" "$ROOT$f"; done
install -m 0755 "$QGA" "$ROOT/usr/sbin/qemu-ga"
for f in "${HOST_LIBS[@]}"; do
    case $f in
        */ld-linux-x86-64.so.2) install -m 0755 "$f" "$ROOT/usr/lib64/ld-linux-x86-64.so.2" ;;
        *) install -m 0644 "$f" "$ROOT/usr/lib/x86_64-linux-gnu/${f##*/}" ;;
    esac
done
# libpci looks for pci.ids.gz first (Debian builds it with zlib): 0.3 MB instead of 1.3 MB.
gzip -9n -c "$PCI_IDS" >"$ROOT$PCI_IDS.gz"
for l in lsmod rmmod insmod modinfo depmod; do ln -s ../bin/kmod "$ROOT/usr/sbin/$l"; done
# Not /sbin/modprobe: while the kernel boots it asks that path for dozens of modules the image
# does not have (crypto self-tests), and each dynamic kmod run costs ~0.1 s under TCG: 2-3 s per
# boot. init points /proc/sys/kernel/modprobe here once the boot-time requests are over.
ln -s kmod "$ROOT/usr/bin/modprobe"
ln -s mke2fs "$ROOT/usr/sbin/mkfs.ext4"
ln -s /proc/self/mounts "$ROOT/etc/mtab"
# As on Debian: lock files live in the /run tmpfs (qemu-nbd -c puts its socket there).
ln -s /run/lock "$ROOT/var/lock"

install -m 0755 "$BUSYBOX" "$ROOT/usr/bin/busybox"
for applet in $("$BUSYBOX" --list-full); do
    name=${applet##*/}
    [ -e "$ROOT/usr/bin/$name" ] || [ -e "$ROOT/usr/sbin/$name" ] || [ "$applet" = linuxrc ] && continue
    case $applet in */sbin/*|sbin/*) dir=usr/sbin ;; *) dir=usr/bin ;; esac
    ln -s /usr/bin/busybox "$ROOT/$dir/$name"
done

# Lab programs, statically linked so they need nothing from the image.
make -s -C "$HERE/src" OUT="$WORK/progs" >&2
mapfile -t LAB_PROGS < <(find "$WORK/progs" -maxdepth 1 -type f -perm -u+x -printf '%f\n' | sort)
for p in "${LAB_PROGS[@]}"; do install -m 0755 "$WORK/progs/$p" "$ROOT/usr/bin/$p"; done

# Kernel modules: the wanted set plus its modules.dep closure, xz-decompressed: modprobe then
# does no decompression under TCG, and compressing the whole cpio once is smaller.
WANT_MODULES=(
    vfio vfio_pci vfio_pci_core vfio_iommu_type1 irqbypass mdev
    ublk_drv nbd loop overlay squashfs ext4
    virtio_blk virtio_net virtio_scsi
    # Entropy from the host (-device virtio-rng-pci): without it getrandom() blocks for
    # seconds under TCG (no RDRAND on qemu64) and e.g. mkfs.ext4 stalls.
    virtio_rng
    # Free page reporting (<memballoon model='virtio' freePageReporting='on'>): memory the guest
    # frees after boot (initrd copy, init sections) goes back to the host instead of staying in RSS.
    virtio_balloon
    # ext4/jbd2 reach crc32c through the crypto API (a soft dependency modules.dep omits).
    crc32c_generic crc32c_intel
)
declare -A MODPATH=()
while IFS= read -r line; do
    path=${line%%:*}
    name=${path##*/}; name=${name%%.ko*}; name=${name//-/_}
    MODPATH[$name]=$path
done <"$KMODS/modules.dep"
declare -A NEED=()
add_module() {
    local name=${1//-/_} path dep deps
    [ -n "${NEED[$name]:-}" ] && return 0
    path=${MODPATH[$name]:-}
    if [ -z "$path" ]; then
        grep -q "/$1.ko" "$KMODS/modules.builtin" && return 0   # built in: nothing to copy
        die "module $1 not found in $KREL"
    fi
    NEED[$name]=$path
    read -ra deps <<<"$(grep "^$path:" "$KMODS/modules.dep" | cut -d: -f2)"
    for dep in "${deps[@]}"; do
        dep=${dep##*/}; add_module "${dep%%.ko*}"
    done
}
for m in "${WANT_MODULES[@]}"; do add_module "$m"; done
DEST_MODS=$ROOT/usr/lib/modules/$KREL
for name in "${!NEED[@]}"; do
    path=${NEED[$name]}
    mkdir -p "$DEST_MODS/${path%/*}"
    case $path in
        *.xz) xz -dc "$KMODS/$path" >"$DEST_MODS/${path%.xz}" ;;
        *.zst) zstd -dcq "$KMODS/$path" >"$DEST_MODS/${path%.zst}" ;;
        *) cp "$KMODS/$path" "$DEST_MODS/$path" ;;
    esac
done
mkdir -p "$DEST_MODS/extra"
cp "$WORK/mtty/mtty.ko" "$DEST_MODS/extra/mtty.ko"
cp "$KMODS"/modules.{order,builtin,builtin.modinfo} "$DEST_MODS/"
depmod -b "$ROOT" "$KREL"
mapfile -t MODULES < <(find "$DEST_MODS" -name '*.ko' -printf '%f\n' | sed 's/\.ko$//; s/-/_/g' | sort)

printf 'root:x:0:0:root:/root:/bin/sh\n' >"$ROOT/etc/passwd"
printf 'root:x:0:\ntty:x:5:\n' >"$ROOT/etc/group"
echo virtlab >"$ROOT/etc/hostname"
printf 'VIRTLAB_IMAGE=%s\nKERNEL=%s\n' "$HASH" "$KREL" >"$ROOT/etc/virtlab-release"

# ---------------------------------------------------------------- tools disk

# The initramfs is unpacked into tmpfs, which is guest RAM for the VM's whole life (and QEMU's RSS).
# So it keeps only what init needs before it can mount the tools disk: busybox, the guest agent,
# their libraries and the drivers of the virtio devices. Every other file moves to tools.img, a
# read-only squashfs that every VM attaches as a shared disk (serial virtlab-tools) and init
# mounts at $TOOLS_MNT; the initramfs keeps a symlink at each file's usual path. The guest then
# reads qemu-img & co. into its page cache only when a lab runs them (measured: idle RSS -35 MiB).
TOOLS_MNT=/usr/lib/virtlab/tools
TOOLS=$WORK/tools
BOOT_MODULES=(virtio_blk virtio_net virtio_scsi virtio_rng virtio_balloon squashfs)
declare -A BOOT_FILES=([/init]=1 [/usr/bin/busybox]=1 [/usr/sbin/qemu-ga]=1)
for f in $(libs_of "$BUSYBOX"; libs_of "$QGA"); do
    case $f in
        */ld-linux-x86-64.so.2) BOOT_FILES[/usr/lib64/ld-linux-x86-64.so.2]=1 ;;
        *) BOOT_FILES[/usr/lib/x86_64-linux-gnu/${f##*/}]=1 ;;
    esac
done
for m in "${BOOT_MODULES[@]}"; do
    while read -r kind path _; do
        [ "$kind" = insmod ] || continue   # "builtin NAME" needs no file
        path=${path#"$ROOT"}
        BOOT_FILES[/usr${path#/usr}]=1        # kmod may print /lib/modules/... (the /lib symlink)
    done < <(modprobe -d "$ROOT" -S "$KREL" --show-depends "$m")
done
# modprobe's index files (modules.dep, .alias, .devname, ...) are small and read at boot.
for f in "$DEST_MODS"/modules.*; do BOOT_FILES[${f#"$ROOT"}]=1; done
mkdir -p "$ROOT$TOOLS_MNT" "$TOOLS"
while IFS= read -r -d '' f; do
    rel=${f#"$ROOT"}
    [ -n "${BOOT_FILES[$rel]:-}" ] && continue
    mkdir -p "$TOOLS${rel%/*}"
    mv "$f" "$TOOLS$rel"
    ln -s "$TOOLS_MNT$rel" "$f"
done < <(find "$ROOT/usr" -type f -print0)
for f in "${!BOOT_FILES[@]}"; do [ -f "$ROOT$f" ] || die "boot file $f is missing from the initramfs"; done
# Uncompressed: the host keeps the image in its page cache, shared by every VM, and the guest
# spends no TCG time decompressing when a lab starts a tool.
find "$TOOLS" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
mksquashfs "$TOOLS" "$IMG/tools.img" -noappend -quiet -no-progress -all-root -noI -noId -noD -noF -noX \
    -mkfs-time "$SOURCE_DATE_EPOCH" -all-time "$SOURCE_DATE_EPOCH" >&2

# ---------------------------------------------------------------- pack

log "packing initramfs"
find "$ROOT" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
# zstd: as small as xz here and decompresses several times faster under TCG.
(cd "$ROOT" && find . -mindepth 1 -print0 | sort -z |
    cpio --null -o -H newc -R 0:0 --reproducible --quiet) | zstd -19 -T0 -q >"$IMG/initrd.img"

END=$(date +%s.%N)
size() { stat -c %s "$1"; }
json_list() { local first=1 x; printf '['; for x in "$@"; do
    [ $first = 1 ] || printf ', '; first=0; printf '"%s"' "$x"; done; printf ']'; }
PROGS_IN_IMAGE=(busybox qemu-ga "${HOST_PROGS[@]##*/}" "${LAB_PROGS[@]}")
{
    printf '{\n'
    printf '  "hash": "%s",\n' "$HASH"
    printf '  "kernel": {"release": "%s", "package": "linux-image-%s", "version": "%s"},\n' "$KREL" "$KREL" "$KVERSION"
    printf '  "cmdline": "console=ttyS0 quiet panic=-1 page_reporting.page_reporting_order=0",\n'
    printf '  "cmdline_vfio": "console=ttyS0 quiet panic=-1 page_reporting.page_reporting_order=0 intel_iommu=on iommu=pt",\n'
    printf '  "prompt": "root@virtlab:\\\\w# ",\n'
    printf '  "guest_agent_channel": "org.qemu.guest_agent.0",\n'
    printf '  "packages": {'
    first=1
    while IFS='=' read -r p v; do
        [ $first = 1 ] || printf ','; first=0
        printf '\n    "%s": "%s"' "$p" "$v"
    done <<<"$VERSIONS"
    printf '\n  },\n'
    printf '  "programs": %s,\n' "$(json_list "${PROGS_IN_IMAGE[@]}")"
    printf '  "modules": %s,\n' "$(json_list "${MODULES[@]}")"
    printf '  "tools_disk": {"file": "tools.img", "serial": "virtlab-tools", "mount": "%s"},\n' "$TOOLS_MNT"
    printf '  "sizes": {"vmlinux": %s, "bzImage": %s, "initrd.img": %s, "initramfs_uncompressed": %s, "tools.img": %s},\n' \
        "$(size "$IMG/vmlinux")" "$(size "$IMG/bzImage")" "$(size "$IMG/initrd.img")" "$(du -sb "$ROOT" | cut -f1)" \
        "$(size "$IMG/tools.img")"
    printf '  "build_seconds": %s,\n' "$(awk "BEGIN{printf \"%.1f\", $END - $START}")"
    printf '  "built_at": "%s"\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    printf '}\n'
} >"$IMG/manifest.json"

# libvirt may run QEMU as the unprivileged libvirt-qemu user.
chmod 0755 "$IMG"
chmod 0644 "$IMG"/*
# A concurrent build of the same hash may have won; its result is identical.
mv -T "$IMG" "$OUT" 2>/dev/null || [ -f "$OUT/manifest.json" ] || die "cannot move image into $OUT"
point_current
prune_old_images
log "built $OUT in $(awk "BEGIN{printf \"%.1f\", $END - $START}") s"
printf '%s\n' "$OUT"
