#!/usr/bin/env bash
# Builds gpucloud's built-in container image from Debian packages:
# a root filesystem with busybox (from Debian's busybox-static), a shell,
# the usual tools as busybox applets, and the files a Linux userland expects.
#
#   images/container/build.sh OUTDIR
#
# Writes OUTDIR/rootfs.tar.gz and OUTDIR/image.json (the manifest `gpucloud up`
# and `gpucloud image import` read). Needs apt-get and dpkg-deb.
set -euo pipefail
out="${1:?usage: $0 OUTDIR}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

deb_dir="$out/.debs"
mkdir -p "$deb_dir"
if ! ls "$deb_dir"/busybox-static_*.deb >/dev/null 2>&1; then
  if ! (cd "$deb_dir" && apt-get download busybox-static >/dev/null 2>&1); then
    apt-get update -qq >/dev/null 2>&1 || true
    (cd "$deb_dir" && apt-get download busybox-static >/dev/null)
  fi
fi
deb="$(ls "$deb_dir"/busybox-static_*.deb | head -1)"
version="$(dpkg-deb -f "$deb" Version)"
dpkg-deb -x "$deb" "$work/pkg"

root="$work/rootfs"
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,root,tmp,proc,sys,dev,run,var/log,home}
chmod 1777 "$root/tmp"
chmod 700 "$root/root"
cp "$work/pkg/bin/busybox" "$root/bin/busybox"
# Every applet as a link, at the path busybox itself reports.
"$root/bin/busybox" --list-full | while read -r applet; do
  [ -e "$root/$applet" ] || ln -s /bin/busybox "$root/$applet"
done
cat > "$root/etc/passwd" <<'P'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
P
cat > "$root/etc/group" <<'G'
root:x:0:
nogroup:x:65534:
G
echo "root:*:19000:0:99999:7:::" > "$root/etc/shadow"
chmod 600 "$root/etc/shadow"
cat > "$root/etc/os-release" <<O
PRETTY_NAME="gpucloud container (Debian 12 busybox-static $version)"
NAME="gpucloud container"
ID=gpucloud
ID_LIKE=debian
VERSION_ID="12"
O
echo "127.0.0.1 localhost" > "$root/etc/hosts"
: > "$root/etc/resolv.conf"

tar --numeric-owner -C "$root" -czf "$out/rootfs.tar.gz.tmp" .
mv "$out/rootfs.tar.gz.tmp" "$out/rootfs.tar.gz"
size_mib=$(( $(du -sk "$root" | cut -f1) / 1024 + 1 ))
cat > "$out/image.json" <<J
{
  "id": "img-gc0ctr12",
  "name": "Debian 12 busybox (container)",
  "os_name": "Debian GNU/Linux 12 (busybox-static $version)",
  "platform": "Debian",
  "description": "Minimal container root filesystem built from Debian's busybox-static $version",
  "runtime": "container",
  "file": "rootfs.tar.gz",
  "size_gib": 1,
  "size_mib": $size_mib
}
J
echo "built $out/rootfs.tar.gz (busybox-static $version, ${size_mib} MiB)"
