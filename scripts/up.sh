#!/usr/bin/env bash
# Quickstart, step 1: installs what gpucloud needs, builds it, and brings up a
# cloud on this machine with a small simulated GPU fleet. Runs in the
# foreground; Ctrl-C stops it. Extra arguments go to `gpucloud up`.
#
#   ./scripts/up.sh                      # 2×(8×H100), 2×(4×T4), 1 CPU host
#   ./scripts/up.sh --simulate 4*H200x8  # your own fleet
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
. "$root/scripts/lib.sh"

ensure_rust
ensure_venv "$root"
# runc runs container instances and QEMU virtual machines on this machine
# (when gpucloud runs as root).
apt_install runc iproute2 qemu-system-x86 genisoimage
apt_install qemu-utils   # separately: see scripts/test.sh
say "building gpucloud (release)"
(cd "$root" && cargo build --release --locked -p gpucloud >&2)

args=("$@")
if ! printf '%s\n' "${args[@]:-}" | grep -q -- '--simulate'; then
  args+=(--simulate '2*H100x8,2*T4x4,1*CPU')
fi
# The built-in container image, where `up` registers images at start.
data_dir="${GPUCLOUD_DATA_DIR:-${XDG_DATA_HOME:-$HOME/.local/share}/gpucloud}"
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[$i]}" in
    --data-dir) data_dir="${args[$((i + 1))]}" ;;
    --data-dir=*) data_dir="${args[$i]#--data-dir=}" ;;
  esac
done
if [ ! -f "$data_dir/images/busybox/image.json" ]; then
  say "building the built-in container image into $data_dir/images/busybox"
  bash "$root/images/container/build.sh" "$data_dir/images/busybox" >&2
fi
if [ ! -f "$data_dir/images/vm/image.json" ]; then
  say "building the built-in VM image into $data_dir/images/vm"
  bash "$root/images/vm/build.sh" "$data_dir/images/vm" >&2
  rm -rf "$data_dir/images/vm/.debs"
fi
say "tccli is in $root/.venv/bin (export PATH=\"$root/.venv/bin:\$PATH\")"
exec "$root/target/release/gpucloud" up "${args[@]}"
