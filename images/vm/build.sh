#!/usr/bin/env bash
# Builds gpucloud's built-in VM image from Debian packages:
#
#   images/vm/build.sh OUTDIR
#
# Writes
#   OUTDIR/vmlinux      Debian's cloud kernel (linux-image-cloud-amd64's real
#                       package), decompressed ahead of time to a plain ELF so
#                       that QEMU boots it through its PVH entry (-kernel
#                       vmlinux): under TCG that saves the ~3 s the kernel
#                       spends decompressing itself.
#   OUTDIR/initrd.img   a busybox initramfs (uncompressed cpio) that loads the
#                       virtio/isofs/ACPI-button modules of that kernel and
#                       switch_root's to root=/dev/vda.
#   OUTDIR/disk.qcow2   the root filesystem (ext4, 2 GiB virtual, made with
#                       mke2fs -d): busybox-static userland + busybox init,
#                       dropbear (SSH), qemu-ga (QEMU guest agent), resize2fs,
#                       and gpucloud-init, which applies the platform's
#                       NoCloud seed (hostname, network, SSH keys, password,
#                       user-data script).
#   OUTDIR/image.json   the manifest `gpucloud image import` reads.
#
# The guest's boot scripts are the files under images/vm/rootfs/ (copied
# verbatim) and images/vm/initramfs-init; images/vm/README.md describes the
# contract with the platform (QEMU arguments, seed files).
#
# Needs root (device node in the initramfs, file ownership in the image),
# apt-get and dpkg-deb; installs qemu-utils, e2fsprogs and the kernel's
# decompressor with apt-get when missing. Downloaded .debs are kept in
# OUTDIR/.debs, so a rebuild downloads nothing (delete it to pick up new
# package versions).
set -euo pipefail
out="${1:?usage: $0 OUTDIR}"
here="$(cd "$(dirname "$0")" && pwd)"
[ "$(id -u)" = 0 ] || { echo "$0: must run as root" >&2; exit 1; }
mkdir -p "$out"
out="$(cd "$out" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
deb_dir="$out/.debs"
mkdir -p "$deb_dir"

# --- apt helpers ------------------------------------------------------------

apt_updated=
apt_update() {
  [ -n "$apt_updated" ] && return 0
  apt-get update -qq >/dev/null 2>&1 || true
  apt_updated=1
}

# Host tools: install only what is missing (installing a fixed list can
# fight with packages the host already has from elsewhere, e.g. backports).
need_tool() { # COMMAND PACKAGE
  command -v "$1" >/dev/null 2>&1 && return 0
  apt_update
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2" >/dev/null
  command -v "$1" >/dev/null 2>&1 || { echo "$0: cannot install $1 ($2)" >&2; exit 1; }
}

# fetch PACKAGE: the path of its .deb in the cache, downloading it first if
# needed. apt-get download verifies it against the archive's signatures.
fetch() {
  local pkg="$1" deb
  deb="$(ls "$deb_dir/${pkg}"_*.deb 2>/dev/null | head -1)" || true
  if [ -z "$deb" ]; then
    if ! (cd "$deb_dir" && apt-get download "$pkg" >/dev/null 2>&1); then
      apt_update
      (cd "$deb_dir" && apt-get download "$pkg" >/dev/null 2>&1) ||
        { echo "$0: apt-get download $pkg failed" >&2; exit 1; }
    fi
    deb="$(ls "$deb_dir/${pkg}"_*.deb | head -1)"
  fi
  echo "$deb"
}

# Packages' library dependencies (Depends/Pre-Depends named lib* or zlib*, first
# alternative), recursively, so the guest gets Debian's own builds of every
# shared library its binaries need. Non-library dependencies (adduser,
# init-system-helpers, gcc-12-base ...) carry nothing a binary loads.
declare -A fetched=()
fetch_with_libs() {
  local queue=("$@") pkg deb dep
  while [ "${#queue[@]}" -gt 0 ]; do
    pkg="${queue[0]}"
    queue=("${queue[@]:1}")
    [ -n "${fetched[$pkg]:-}" ] && continue
    deb="$(fetch "$pkg")"
    fetched[$pkg]="$deb"
    for dep in $( { dpkg-deb -f "$deb" Pre-Depends; echo ,; dpkg-deb -f "$deb" Depends; } |
      tr ',' '\n' | sed -e 's/|.*//' -e 's/(.*)//' -e 's/:any//' -e 's/[[:space:]]//g' |
      grep -E '^(lib|zlib)' || true); do
      [ -n "${fetched[$dep]:-}" ] || queue+=("$dep")
    done
  done
}

# --- host tools -------------------------------------------------------------

need_tool dpkg-deb dpkg
need_tool qemu-img qemu-utils
need_tool mke2fs e2fsprogs

# --- packages ---------------------------------------------------------------

# linux-image-cloud-amd64 is a metapackage; its first dependency is the
# real kernel package (e.g. linux-image-6.1.0-56-cloud-amd64).
kpkg="$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-/ { print $2; exit }')" || true
if [ -z "$kpkg" ]; then
  apt_update
  kpkg="$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-/ { print $2; exit }')" || true
fi
if [ -z "$kpkg" ]; then # offline: use the cached one
  kpkg="$(ls "$deb_dir"/linux-image-*-cloud-amd64_*.deb 2>/dev/null | head -1 | sed 's|.*/||; s|_.*||')"
fi
[ -n "$kpkg" ] || { echo "$0: cannot find linux-image-cloud-amd64's kernel package" >&2; exit 1; }

fetch_with_libs busybox-static dropbear-bin qemu-guest-agent e2fsprogs
kdeb="$(fetch "$kpkg")"
kver_pkg="$(dpkg-deb -f "$kdeb" Version)"
stage="$work/stage"   # every package extracted together, like an installed system
mkdir -p "$stage"
for pkg in "${!fetched[@]}"; do dpkg-deb -x "${fetched[$pkg]}" "$stage"; done
kstage="$work/kernel"
dpkg-deb -x "$kdeb" "$kstage"
kver="$(ls "$kstage/lib/modules" | head -1)"
bb="$stage/bin/busybox"

# --- vmlinux ----------------------------------------------------------------

# A bzImage is real-mode setup code + a compressed payload. The x86 boot
# protocol header says where: setup_sects at 0x1f1 (the setup is
# (setup_sects+1)*512 bytes), payload_offset at 0x248 (from the end of the
# setup) and payload_length at 0x24c. The payload ends with its decompressed
# size (4 bytes, little endian), which the decompressors treat as trailing
# garbage, so strip it and use it to check the result.
vmlinuz="$kstage/boot/vmlinuz-$kver"
u8() { od -An -tu1 -j "$2" -N1 "$1" | tr -d ' '; }
u32() { od -An -tu4 -j "$2" -N4 "$1" | tr -d ' '; }
setup_sects="$(u8 "$vmlinuz" $((0x1f1)))"
[ "$setup_sects" -eq 0 ] && setup_sects=4
payload_start=$(((setup_sects + 1) * 512 + $(u32 "$vmlinuz" $((0x248)))))
payload_len="$(u32 "$vmlinuz" $((0x24c)))"
want_size="$(u32 "$vmlinuz" $((payload_start + payload_len - 4)))"
magic="$(od -An -tx1 -j "$payload_start" -N6 "$vmlinuz" | tr -d ' ')"
case "$magic" in
  1f8b*) need_tool gzip gzip; decomp="gzip -dc" ;;
  fd377a585a00) need_tool xz xz-utils; decomp="xz -dc" ;;
  5d0000*) need_tool xz xz-utils; decomp="xz -dc --format=lzma" ;;
  425a68*) need_tool bzip2 bzip2; decomp="bzip2 -dc" ;;
  02214c18*) need_tool lz4 lz4; decomp="lz4 -dc" ;;
  28b52ffd*) need_tool zstd zstd; decomp="zstd -dcq" ;;
  894c5a4f*) need_tool lzop lzop; decomp="lzop -dc" ;;
  *) echo "$0: unknown kernel compression (payload starts $magic)" >&2; exit 1 ;;
esac
dd if="$vmlinuz" iflag=skip_bytes,count_bytes skip="$payload_start" count=$((payload_len - 4)) \
  bs=1M status=none | $decomp >"$work/vmlinux"
got_size="$(stat -c %s "$work/vmlinux")"
[ "$(od -An -c -N4 "$work/vmlinux" | tr -d ' ')" = '177ELF' ] && [ "$got_size" = "$want_size" ] ||
  { echo "$0: decompressing the kernel failed ($got_size bytes, want $want_size)" >&2; exit 1; }
# No PVH entry (XEN_ELFNOTE_PHYS32_ENTRY) means QEMU cannot boot the ELF.
grep -q 'CONFIG_PVH=y' "$kstage/boot/config-$kver" ||
  { echo "$0: $kpkg lacks CONFIG_PVH; QEMU cannot boot its vmlinux" >&2; exit 1; }

# --- kernel modules ---------------------------------------------------------

# What the platform's QEMU machine needs that Debian's cloud kernel builds as
# modules (ext4, the 8250 serial port, devtmpfs, unix sockets are built in):
#   virtio_pci     the virtio devices on q35's PCI bus
#   virtio_blk     root disk, data disks, the seed disk
#   virtio_net     the network
#   virtio_console the guest agent's virtio-serial port
#   isofs          the cidata seed (ISO9660)
#   button, evdev  the ACPI power button (QMP system_powerdown) as an input
#                  event for busybox acpid
# plus their dependencies (virtio, virtio_ring, virtio_pci_{legacy,modern}_dev,
# failover, net_failover), read from each module's modinfo "depends=".
boot_modules="virtio_pci virtio_blk virtio_net virtio_console isofs button evdev"
mdir="$kstage/lib/modules/$kver"
declare -A modpath=() loaded=() moddeps=()
while IFS= read -r f; do
  n="${f##*/}"; n="${n%.ko*}"; modpath[${n//-/_}]="${f#"$mdir"/}"
done < <(find "$mdir/kernel" -name '*.ko*')
mod_order=()
add_module() {
  local m="${1//-/_}" d
  [ -n "${loaded[$m]:-}" ] && return 0
  if [ -z "${modpath[$m]:-}" ]; then
    grep -q "/$m.ko" "$mdir/modules.builtin" && return 0  # built in
    echo "$0: module $m not found in $kpkg" >&2; exit 1
  fi
  loaded[$m]=1
  moddeps[$m]=""
  for d in $(tr '\0' '\n' <"$mdir/${modpath[$m]}" | sed -n 's/^depends=//p' | tr ',' ' '); do
    add_module "$d"
    [ -n "${modpath[${d//-/_}]:-}" ] && moddeps[$m]="${moddeps[$m]} ${d//-/_}"
  done
  mod_order+=("$m")
}
for m in $boot_modules; do add_module "$m"; done

# --- initramfs --------------------------------------------------------------

ird="$work/initramfs"
imod="$ird/lib/modules/$kver"
mkdir -p "$ird"/{bin,dev,proc,sys,newroot,etc} "$imod"
cp "$bb" "$ird/bin/busybox"
for a in sh mount modprobe sleep findfs switch_root mkdir; do ln -s busybox "$ird/bin/$a"; done
cp "$here/initramfs-init" "$ird/init"
chmod 755 "$ird/init"
mknod -m 600 "$ird/dev/console" c 5 1   # init's stdin/stdout before devtmpfs
# The modules, and a modules.dep for busybox modprobe: one `modprobe -a`
# loads them all in one process (each extra process costs ~10 ms under TCG).
for m in "${mod_order[@]}"; do
  mkdir -p "$(dirname "$imod/${modpath[$m]}")"
  cp "$mdir/${modpath[$m]}" "$imod/${modpath[$m]}"
  echo "${modpath[$m]}" >>"$imod/modules.order"
done
# depmod's format: every module with ALL its dependencies, the ones to load
# first last (busybox modprobe loads the list back to front).
for m in "${mod_order[@]}"; do
  declare -A need=([$m]=1)
  for ((i = ${#mod_order[@]} - 1; i >= 0; i--)); do
    n="${mod_order[$i]}"
    [ -n "${need[$n]:-}" ] || continue
    for d in ${moddeps[$n]}; do need[$d]=1; done
  done
  deps=""
  for ((i = ${#mod_order[@]} - 1; i >= 0; i--)); do
    n="${mod_order[$i]}"
    [ "$n" != "$m" ] && [ -n "${need[$n]:-}" ] && deps="$deps ${modpath[$n]}"
  done
  unset need
  echo "${modpath[$m]}:$deps"
done >"$imod/modules.dep"
cp "$mdir/modules.builtin" "$imod/"
echo "$boot_modules" >"$ird/etc/modules.boot"
# Uncompressed: unpacking a few MB is cheaper than gunzip under TCG.
(cd "$ird" && find . | LC_ALL=C sort | "$bb" cpio -o -H newc 2>/dev/null) >"$work/initrd.img"

# --- root filesystem --------------------------------------------------------

root="$work/rootfs"
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,root,tmp,proc,sys,dev,run,home,mnt,media}
mkdir -p "$root"/{lib/x86_64-linux-gnu,lib64,var/log,var/lib/gpucloud-init,var/tmp,etc/dropbear}
ln -s /run "$root/var/run"
chmod 1777 "$root/tmp" "$root/var/tmp"
chmod 700 "$root/root" "$root/var/lib/gpucloud-init"

# The image's own scripts, then busybox applets for everything else.
cp -R "$here/rootfs/." "$root/"
chmod 755 "$root/etc/init.d/rcS" "$root/etc/init.d/rcK" "$root/sbin/shutdown" \
  "$root/usr/sbin/chpasswd" "$root/usr/lib/gpucloud/gpucloud-init" \
  "$root/usr/lib/gpucloud/halt-wrapper" "$root/etc/acpi/PWRF/00000080"
for a in poweroff reboot halt; do ln -s /usr/lib/gpucloud/halt-wrapper "$root/sbin/$a"; done
cp "$bb" "$root/bin/busybox"
"$bb" --list-full | while read -r applet; do
  case "$applet" in linuxrc) continue ;; esac
  [ -e "$root/$applet" ] || [ -L "$root/$applet" ] || ln -s /bin/busybox "$root/$applet"
done

# Debian binaries and the shared libraries they load, found by asking the
# packaged glibc's dynamic loader (ldd) with only the staged libraries on its
# search path: anything resolved outside the stage is missing from it.
libpath="$stage/lib/x86_64-linux-gnu:$stage/usr/lib/x86_64-linux-gnu"
ldso="$stage/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
install_bin() { # STAGE-PATH ROOT-PATH
  local src="$stage/$1" lib
  install -D -m 755 "$src" "$root/$2"
  "$ldso" --library-path "$libpath" --list "$src" |
    awk '$2 == "=>" && $3 !~ /ld-linux/ { print $3 }' |
    while read -r lib; do
      case "$lib" in
        "$stage"/*) ;;
        *) echo "$0: $1 needs $lib, not in the staged packages" >&2; exit 1 ;;
      esac
      [ -e "$root/lib/x86_64-linux-gnu/${lib##*/}" ] ||
        cp -L "$lib" "$root/lib/x86_64-linux-gnu/${lib##*/}"
    done
}
install_bin usr/sbin/dropbear usr/sbin/dropbear
install_bin usr/bin/dropbearkey usr/bin/dropbearkey
install_bin usr/sbin/qemu-ga usr/sbin/qemu-ga
install_bin sbin/resize2fs sbin/resize2fs
install_bin sbin/e2fsck sbin/e2fsck
cp -L "$ldso" "$root/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
ln -sf /lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 "$root/lib64/ld-linux-x86-64.so.2"
ln -sf e2fsck "$root/sbin/fsck.ext4"

# The boot modules again, for lsmod/modinfo/modprobe in the running system.
mkdir -p "$root/lib/modules"
cp -R "$imod" "$root/lib/modules/"
cp "$mdir/modules.builtin.modinfo" "$root/lib/modules/$kver/"

# Accounts: root only (password locked until the seed sets one).
cat >"$root/etc/passwd" <<'P'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
P
cat >"$root/etc/group" <<'G'
root:x:0:
tty:x:5:
nogroup:x:65534:
G
echo "root:*:19000:0:99999:7:::" >"$root/etc/shadow"
chmod 600 "$root/etc/shadow"
printf '/bin/sh\n/bin/ash\n' >"$root/etc/shells"   # dropbear checks the login shell
printf 'passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n' >"$root/etc/nsswitch.conf"
echo localhost >"$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"
: >"$root/etc/resolv.conf"
printf '/dev/root / ext4 rw 0 1\n' >"$root/etc/fstab"
cat >"$root/etc/profile" <<'E'
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PS1='\u@\h:\w\$ '
umask 022
E
cat >"$root/etc/os-release" <<O
PRETTY_NAME="gpucloud VM (Debian 12 kernel $kver, busybox)"
NAME="gpucloud VM"
ID=gpucloud
ID_LIKE=debian
VERSION_ID="12"
O
bb_version="$(dpkg-deb -f "${fetched[busybox-static]}" Version)"
{
  echo "gpucloud VM image, built $(date -u +%Y-%m-%dT%H:%M:%SZ) from Debian packages:"
  echo "  $kpkg $kver_pkg"
  for pkg in $(printf '%s\n' "${!fetched[@]}" | sort); do
    echo "  $pkg $(dpkg-deb -f "${fetched[$pkg]}" Version)"
  done
} >"$root/etc/gpucloud-image"

# ext4 straight from the directory tree (no loop mount). Inode tables and
# journal are initialised now rather than lazily by the guest, so the first
# boot does not spend TCG time (and overlay space) zeroing them; qemu-img
# convert leaves the zeroes out of the qcow2.
truncate -s 2G "$work/disk.raw"
mke2fs -q -F -t ext4 -L gpucloud-root -m 1 -d "$root" \
  -E lazy_itable_init=0,lazy_journal_init=0 "$work/disk.raw"
qemu-img convert -f raw -O qcow2 "$work/disk.raw" "$work/disk.qcow2"

# --- output -----------------------------------------------------------------

for f in vmlinux initrd.img disk.qcow2; do mv -f "$work/$f" "$out/$f"; done
bytes=$(($(stat -c %s "$out/vmlinux") + $(stat -c %s "$out/initrd.img") + $(stat -c %s "$out/disk.qcow2")))
size_mib=$(((bytes + 1048575) / 1048576))
# cryptomgr.notests: skip the kernel crypto self-tests, ~0.3 s under TCG.
cmdline="root=/dev/vda rw console=ttyS0 quiet cryptomgr.notests"
cat >"$out/image.json.tmp" <<J
{
  "id": "img-gcvmdeb1",
  "name": "gpucloud VM (Debian 12 kernel, busybox)",
  "os_name": "Debian 12 (busybox userland)",
  "platform": "Debian",
  "runtime": "qemu",
  "file": "disk.qcow2",
  "kernel": "vmlinux",
  "initrd": "initrd.img",
  "cmdline": "$cmdline",
  "size_gib": 2,
  "size_mib": $size_mib
}
J
mv "$out/image.json.tmp" "$out/image.json"
echo "built $out: $kpkg $kver_pkg, busybox $bb_version, modules: ${mod_order[*]} (${size_mib} MiB)"
