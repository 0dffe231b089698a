#!/usr/bin/env bash
# Builds a Debian 12 cloud image the way Debian's own "genericcloud" image is
# made, from Debian packages, to prove that real cloud images boot on
# gpucloud unchanged:
#
#   images/cloud/build.sh OUTDIR
#
# Writes
#   OUTDIR/disk.qcow2   a partitioned disk (MBR, one ext4 partition labelled
#                       debian-root) with a bootloader, so the VM boots it
#                       through firmware like any cloud image: systemd,
#                       Debian's cloud kernel, cloud-init (stock Debian
#                       configuration: default user `debian`, NoCloud
#                       among its datasources), cloud-guest-utils (growpart),
#                       OpenSSH (host keys made by cloud-init at first boot),
#                       qemu-guest-agent, ifupdown, locales.
#   OUTDIR/image.json   the manifest `gpucloud image import` reads.
#
# Nothing gpucloud-specific is installed in the guest: everything the
# platform sets up (hostname, network, keys, password, user data) comes from
# the NoCloud seed through stock cloud-init.
#
# The bootloader is extlinux (not GRUB as in Debian's image), because it can
# be installed into a file: GRUB's BIOS installer wants a block device with
# partitions, which a container does not always have. Firmware → MBR →
# bootloader → kernel + initramfs → root on /dev/vda1 is the same path.
#
# Needs root (debootstrap, a loop mount to install the bootloader), apt-get
# and network access to the Debian archive. Downloaded packages are kept in
# OUTDIR/.debs, so a rebuild downloads nothing new.
set -euo pipefail
out="${1:?usage: $0 OUTDIR}"
[ "$(id -u)" = 0 ] || { echo "$0: must run as root" >&2; exit 1; }
mkdir -p "$out"
out="$(cd "$out" && pwd)"
work="$(mktemp -d)"
mnt=
cleanup() {
  [ -n "$mnt" ] && umount "$mnt" 2>/dev/null || true
  for m in var/cache/apt/archives dev/pts dev sys proc; do
    umount "$work/root/$m" 2>/dev/null || umount -l "$work/root/$m" 2>/dev/null || true
  done
  # Never delete through a mount that is still there (the host's /dev, the
  # package cache): leave the directory for a person to look at instead.
  if grep -q " $work" /proc/self/mounts; then
    echo "$0: $work still has mounts; not removing it" >&2
    return
  fi
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT
mkdir -p "$out/.debs"

apt_updated=
apt_update() {
  [ -n "$apt_updated" ] && return 0
  apt-get update -qq >/dev/null 2>&1 || true
  apt_updated=1
}
need() { # PATH-OR-COMMAND PACKAGE
  { command -v "$1" || [ -e "$1" ]; } >/dev/null 2>&1 && return 0
  apt_update
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2" >/dev/null
  { command -v "$1" || [ -e "$1" ]; } >/dev/null 2>&1 || { echo "$0: cannot install $1 ($2)" >&2; exit 1; }
}
need debootstrap debootstrap
need extlinux extlinux
need /usr/lib/syslinux/mbr/mbr.bin syslinux-common
need sfdisk fdisk
need mke2fs e2fsprogs
need qemu-img qemu-utils

# The archive the host's apt uses (the Debian mirror reachable from here).
mirror="$(grep -rhoE '^(URIs:|deb) +https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null |
  awk '{ print $2; exit }')" || true
mirror="${mirror:-http://deb.debian.org/debian}"

root="$work/root"
pkgs=(
  systemd-sysv udev dbus linux-image-cloud-amd64 initramfs-tools
  cloud-init cloud-guest-utils fdisk e2fsprogs
  openssh-server qemu-guest-agent
  ifupdown isc-dhcp-client iproute2 netbase
  sudo procps less locales
)
echo "debootstrap bookworm from $mirror, then ${#pkgs[@]} packages and their dependencies" >&2
debootstrap --variant=minbase --cache-dir="$out/.debs" bookworm "$root" "$mirror" >"$work/debootstrap.log" 2>&1 ||
  { tail -30 "$work/debootstrap.log" "$root/debootstrap/debootstrap.log" >&2 || true
    echo "$0: debootstrap failed" >&2; exit 1; }
# The rest through apt inside the new root (it resolves dependencies the way
# Debian's image builder does), with no services started and the package
# cache kept in OUTDIR/.debs.
mkdir -p "$out/.debs/apt/partial"
mount -t proc proc "$root/proc"
mount -t sysfs sysfs "$root/sys"
mount --bind /dev "$root/dev"
mount --bind /dev/pts "$root/dev/pts"
mount --bind "$out/.debs/apt" "$root/var/cache/apt/archives"
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod +x "$root/usr/sbin/policy-rc.d"
cat >"$root/etc/apt/sources.list" <<S
deb $mirror bookworm main
deb $mirror bookworm-updates main
S
{ chroot "$root" apt-get update -q &&
  DEBIAN_FRONTEND=noninteractive chroot "$root" apt-get install -y -q --no-install-recommends "${pkgs[@]}"; } \
  >"$work/apt.log" 2>&1 || { tail -30 "$work/apt.log" >&2; echo "$0: apt-get install failed" >&2; exit 1; }
# The locale cloud-init's Debian support expects (en_US.UTF-8), generated
# now as in Debian's image, so its locale module has nothing to fix.
sed -i 's/^# *\(en_US.UTF-8 UTF-8\)/\1/' "$root/etc/locale.gen"
chroot "$root" locale-gen >/dev/null
echo 'LANG=en_US.UTF-8' >"$root/etc/default/locale"
rm -f "$root/usr/sbin/policy-rc.d"
for m in var/cache/apt/archives dev/pts dev sys proc; do umount "$root/$m"; done

# --- configuration, as Debian's cloud images have it --------------------------

cat >"$root/etc/fstab" <<'F'
LABEL=debian-root / ext4 rw,discard,errors=remount-ro,x-systemd.growfs 0 1
F
echo localhost >"$root/etc/hostname"
cat >"$root/etc/hosts" <<'H'
127.0.0.1 localhost
::1 localhost ip6-localhost ip6-loopback
H
cat >"$root/etc/apt/sources.list" <<S
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb http://security.debian.org/debian-security bookworm-security main
S
cat >"$root/etc/network/interfaces" <<'N'
# cloud-init writes the instance's interfaces under interfaces.d.
source /etc/network/interfaces.d/*
auto lo
iface lo inet loopback
N
# Every instance makes its own host keys and machine ID.
rm -f "$root"/etc/ssh/ssh_host_*
: >"$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
rm -f "$root/var/log/"*.log

kernel=vmlinuz initrd=initrd.img
[ -e "$root/vmlinuz" ] || kernel="boot/$(basename "$(ls "$root"/boot/vmlinuz-* | sort -V | tail -1)")"
[ -e "$root/initrd.img" ] || initrd="boot/$(basename "$(ls "$root"/boot/initrd.img-* | sort -V | tail -1)")"
mkdir -p "$root/boot/extlinux"
cat >"$root/boot/extlinux/extlinux.conf" <<E
DEFAULT debian
PROMPT 0
TIMEOUT 0
SERIAL 0 115200
LABEL debian
  LINUX /$kernel
  INITRD /$initrd
  APPEND root=LABEL=debian-root ro console=tty0 console=ttyS0,115200 earlyprintk=ttyS0,115200 consoleblank=0
E
kver="$(basename "$(ls "$root"/boot/vmlinuz-* | sort -V | tail -1)")"
ci_version="$(chroot "$root" dpkg-query -W -f '${Version}' cloud-init)"

# --- the disk -----------------------------------------------------------------

# One partition from 1 MiB; the file system is made from the tree (no mount),
# without the 64bit feature, which extlinux cannot read.
size_mib=2048
truncate -s "$((size_mib - 1))M" "$work/part.raw"
mke2fs -q -F -t ext4 -O ^64bit -L debian-root -m 1 -d "$root" \
  -E lazy_itable_init=0,lazy_journal_init=0 "$work/part.raw"
mnt="$work/mnt"
mkdir -p "$mnt"
mount -o loop "$work/part.raw" "$mnt"
extlinux --install "$mnt/boot/extlinux" >/dev/null 2>&1
umount "$mnt"
mnt=
truncate -s "${size_mib}M" "$work/disk.raw"
echo 'start=2048, type=83, bootable' | sfdisk -q "$work/disk.raw" >/dev/null
dd if="$work/part.raw" of="$work/disk.raw" bs=1M seek=1 conv=notrunc,sparse status=none
dd if=/usr/lib/syslinux/mbr/mbr.bin of="$work/disk.raw" bs=440 count=1 conv=notrunc status=none
qemu-img convert -f raw -O qcow2 "$work/disk.raw" "$work/disk.qcow2"
mv -f "$work/disk.qcow2" "$out/disk.qcow2"

bytes=$(stat -c %s "$out/disk.qcow2")
cat >"$out/image.json.tmp" <<J
{
  "id": "img-deb12cld",
  "name": "Debian 12 cloud image (cloud-init $ci_version)",
  "os_name": "Debian GNU/Linux 12 (bookworm)",
  "platform": "Debian",
  "description": "Debian 12 with systemd, cloud-init, OpenSSH and qemu-guest-agent, booted through firmware like Debian's genericcloud image",
  "runtime": "qemu",
  "file": "disk.qcow2",
  "size_gib": 2,
  "size_mib": $(((bytes + 1048575) / 1048576))
}
J
mv "$out/image.json.tmp" "$out/image.json"
echo "built $out: Debian 12, $kver, cloud-init $ci_version ($(((bytes + 1048575) / 1048576)) MiB)"
