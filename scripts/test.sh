#!/usr/bin/env bash
# Quickstart, step 2: the whole test suite — formatting, lints, unit and
# property tests, the store suite on SQLite and PostgreSQL, in-process
# integration tests with simulated agents, and end-to-end tests that drive a
# real `gpucloud up` with tccli and tencentcloud-sdk-python.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
. "$root/scripts/lib.sh"
cd "$root"
started=$(date +%s)

ensure_rust
ensure_venv "$root"
ensure_postgres
# The privileged host tests: containers (runc), network namespaces (iproute2),
# nftables checks in doctor, VMs (QEMU, qemu-img, genisoimage for seeds, an
# SSH client to log in, sshpass for a password login), libfaketime (a tccli
# request signed in the past).
apt_install runc iproute2 nftables qemu-system-x86 genisoimage openssh-client sshpass faketime
# Separately: a qemu-utils from elsewhere (backports) can be removed by the
# install above; this puts Debian's back.
apt_install qemu-utils
say "images for the end-to-end tests (target/test-images): built-in container and VM, a Debian cloud image"
for kind in container vm cloud; do
  # Rebuilt when the files it is built from change.
  src_hash="$(cd "$root/images/$kind" && find . -type f | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -c1-16)"
  out="$root/target/test-images/$kind"
  if [ ! -f "$out/image.json" ] || [ "$(cat "$out/.source-hash" 2>/dev/null)" != "$src_hash" ]; then
    rm -f "$out/image.json"
    bash "$root/images/$kind/build.sh" "$out" >&2
    echo "$src_hash" >"$out/.source-hash"
  fi
done
say "PostgreSQL for the store suite: ${GPUCLOUD_TEST_PG%%@*}@${GPUCLOUD_TEST_PG#*@}"

say "cargo fmt --check"
cargo fmt --all -- --check

say "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

say "unit, property, store (SQLite + PostgreSQL) and integration tests"
if command -v cargo-nextest >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --profile ci
else
  cargo test --workspace --locked
fi

say "end-to-end tests with tccli and the Python SDK"
cargo build -p gpucloud --locked
GPUCLOUD_BIN="$root/target/debug/gpucloud" "$root/.venv/bin/python" -m pytest "$root/tests/e2e" -q -p no:cacheprovider

say "benchmark smoke run (figures live in docs/PERFORMANCE.md)"
"$root/target/debug/gpucloud" bench scheduler --hosts 500 --output json >/dev/null

say "gpucloud doctor on this host"
"$root/target/debug/gpucloud" doctor --no-kvm-probe >/dev/null

say "all tests passed in $(( $(date +%s) - started )) s"
