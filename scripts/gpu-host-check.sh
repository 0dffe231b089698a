#!/usr/bin/env bash
# gpucloud on a real GPU host: inventory, a 1-GPU container instance, and the
# speed of CUDA inside it against bare metal.
#
# GPU hosts often have no package registry, so this works in two steps:
#
#   scripts/gpu-host-check.sh prepare [BUNDLE]   # on a Debian 12 build machine
#       builds BUNDLE (default dist/gpu-check): the release gpucloud binary,
#       runc and libseccomp unpacked from their Debian packages, the built-in
#       container image, the CUDA benchmark source and this script.
#
#   BUNDLE/gpu-host-check.sh run [BUNDLE]        # on the GPU host, as root
#       needs the NVIDIA driver (nvidia-smi), the host's nvcc (PATH or
#       /usr/local/cuda/bin) and python3. It
#         1. shows `gpucloud doctor`, builds gpubench.cu with the host's nvcc
#            and runs it on bare metal;
#         2. starts `gpucloud up` with the real inventory (sysfs + NVML);
#         3. shows the GPUs through the API and checks model, UUID and memory
#            against nvidia-smi;
#         4. runs a 1-GPU container instance and, through TAT RunCommand,
#            gpubench inside it; shows the agent's GPU telemetry (/metrics);
#            runs gpubench on bare metal again and prints the ratios to the
#            better bare-metal run (goal ≥ 98 %);
#         5. runs a CPU-only container instance and shows it sees no GPU;
#         6. terminates both and stops.
#       Results go to stdout and BUNDLE/result.json; exit status 0 only if
#       every check passed.
#
#   scripts/gpu-host-check.sh prepare --with-vm [BUNDLE]
#       also packs BUNDLE/vm.tar.gz: QEMU, qemu-img, genisoimage, ip, ssh and
#       nsenter from this machine's Debian packages, each with the C libraries
#       and dynamic loader it was built against (so they run on a host whose
#       libraries differ), QEMU's firmware, and the built-in VM image.
#
#   BUNDLE/gpu-host-check.sh vm-bench [BUNDLE] [RUNS]   # on the host, as root
#       unpacks vm.tar.gz, shows `gpucloud doctor` (which now verifies KVM by
#       booting a probe guest) and runs scripts/bench-vm.sh: request → RUNNING
#       and request → SSH-ready of the built-in VM image, under KVM where the
#       host's KVM works. Results go to stdout and BUNDLE/vm-bench.json.
set -euo pipefail

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# carry_bin SRC NAME DIR [ARGS [ENV]] — DIR/bin/NAME runs SRC (with ARGS
# first, and ENV set) through the dynamic loader and C libraries it was built
# against, copied to DIR/lib, whatever the host has.
carry_bin() {
  local src="$1" name="$2" dir="$3" extra="${4:-}" env="${5:-}"
  mkdir -p "$dir/bin" "$dir/libexec" "$dir/lib"
  cp -L "$src" "$dir/libexec/$name"
  ldd "$src" | awk '/=> \// {print $3} /^\t\/.*ld-linux/ {print $1}' | while read -r lib; do
    cp -L "$lib" "$dir/lib/"
  done
  cat > "$dir/bin/$name" <<W
#!/bin/sh
# $name from $(dpkg -S "$(readlink -f "$src")" 2>/dev/null | cut -d: -f1 | head -1), with its own C libraries.
here="\$(cd "\$(dirname "\$0")/.." && pwd)"
$env exec "\$here/lib/ld-linux-x86-64.so.2" --library-path "\$here/lib" "\$here/libexec/$name" $extra "\$@"
W
  chmod +x "$dir/bin/$name"
}

prepare_vm() {
  local root="$1" out="$2" tmp
  tmp="$(mktemp -d)"
  say "packing QEMU and the tools VMs need, with their C libraries"
  apt_install qemu-system-x86 genisoimage iproute2 openssh-client util-linux
  apt_install qemu-utils
  local v="$tmp/vm"
  mkdir -p "$v/share/qemu"
  # Debian's QEMU loads TCG as a module: carry the accelerator modules.
  mkdir -p "$v/lib/qemu"
  cp /usr/lib/x86_64-linux-gnu/qemu/accel-*.so "$v/lib/qemu/"
  carry_bin "$(command -v qemu-system-x86_64)" qemu-system-x86_64 "$v" '-L "$here/share/qemu"' \
    'QEMU_MODULE_DIR="$here/lib/qemu"'
  carry_bin "$(command -v qemu-img)" qemu-img "$v"
  carry_bin "$(command -v genisoimage)" genisoimage "$v"
  carry_bin "$(command -v ip)" ip "$v"
  carry_bin "$(command -v ssh)" ssh "$v"
  carry_bin "$(command -v nsenter)" nsenter "$v"
  # The x86 firmware QEMU looks for in its data directories, in one place.
  for f in /usr/share/qemu/{kvmvapic,linuxboot,linuxboot_dma,multiboot,multiboot_dma,pvh,sgabios}.bin \
           /usr/share/qemu/qboot.rom /usr/share/seabios/* /usr/lib/ipxe/qemu/*; do
    [ -f "$f" ] && cp -L "$f" "$v/share/qemu/"
  done
  say "building the built-in VM image"
  local images="${GPUCLOUD_TEST_IMAGES:-$root/target/test-images}"
  [ -f "$images/vm/image.json" ] || bash "$root/images/vm/build.sh" "$images/vm" >&2
  mkdir -p "$tmp/images/vm"
  cp "$images"/vm/{image.json,vmlinux,initrd.img,disk.qcow2} "$tmp/images/vm/"
  tar -C "$tmp" -czf "$out/vm.tar.gz" vm images
  cp "$root/scripts/bench-vm.sh" "$out/bench-vm.sh"
  rm -rf "$tmp"
}

prepare() {
  local root out tmp with_vm=0
  root="$(cd "$(dirname "$0")/.." && pwd)"
  [ "${1:-}" = --with-vm ] && { with_vm=1; shift; }
  out="${1:-$root/dist/gpu-check}"
  mkdir -p "$out/lib" "$out/images" "$out/.debs"
  out="$(cd "$out" && pwd)"
  . "$root/scripts/lib.sh"
  tmp="$(mktemp -d)"
  ensure_rust
  say "building gpucloud (release)"
  (cd "$root" && cargo build --release --locked -p gpucloud >&2)
  cp "$root/target/release/gpucloud" "$out/gpucloud"
  strip "$out/gpucloud" 2>/dev/null || true
  say "unpacking runc and libseccomp from Debian's packages"
  (cd "$out/.debs" && { ls runc_*.deb >/dev/null 2>&1 || apt-get download runc libseccomp2 >&2; })
  dpkg-deb -x "$(ls "$out"/.debs/runc_*.deb | head -1)" "$tmp/runc"
  dpkg-deb -x "$(ls "$out"/.debs/libseccomp2_*.deb | head -1)" "$tmp/seccomp"
  cp "$tmp/runc/usr/sbin/runc" "$out/runc.bin"
  cp -a "$tmp"/seccomp/usr/lib/x86_64-linux-gnu/libseccomp.so.2* "$out/lib/"
  cat > "$out/runc" <<'W'
#!/bin/sh
# Debian's runc with the libseccomp carried next to it.
here="$(cd "$(dirname "$0")" && pwd)"
LD_LIBRARY_PATH="$here/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" exec "$here/runc.bin" "$@"
W
  chmod +x "$out/runc"
  say "building the built-in container image"
  bash "$root/images/container/build.sh" "$out/images/busybox" >&2
  rm -rf "$out/images/busybox/.debs"
  cp "$root/scripts/gpu-check/gpubench.cu" "$out/gpubench.cu"
  cp "$0" "$out/gpu-host-check.sh"
  chmod +x "$out/gpu-host-check.sh"
  rm -rf "$out/.debs" "$tmp"
  [ "$with_vm" = 0 ] || prepare_vm "$root" "$out"
  say "bundle ready: $out ($(du -sh "$out" | cut -f1)); on the GPU host run: $out/gpu-host-check.sh run"
}

# json FILE EXPR — evaluates a Python expression over the JSON in FILE (as `d`).
json() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print($2)" "$1"; }

run() {
  local b work data nvcc arch
  b="$(cd "${1:-$(dirname "$0")}" && pwd)"
  [ "$(id -u)" = 0 ] || die "run as root (containers need it)"
  command -v nvidia-smi >/dev/null || die "nvidia-smi not found: this host has no NVIDIA driver"
  command -v python3 >/dev/null || die "python3 is needed to read the API's JSON"
  nvcc="$(command -v nvcc || true)"
  [ -n "$nvcc" ] || nvcc=/usr/local/cuda/bin/nvcc
  [ -x "$nvcc" ] || die "nvcc not found (PATH or /usr/local/cuda/bin): the benchmark is built with the host's CUDA"
  work="$(mktemp -d /tmp/gpucloud-gpu-check.XXXXXX)"
  export PATH="$b:$PATH"  # the carried runc, for doctor and up alike
  say "work directory (logs): $work"
  data="$work/data"
  mkdir -p "$data/images"
  local failures=0
  fail() { printf 'FAIL: %s\n' "$*"; failures=$((failures + 1)); }
  pass() { printf 'ok:   %s\n' "$*"; }

  say "building gpubench with $nvcc ($("$nvcc" --version | tail -1))"
  arch="-arch=native"
  "$nvcc" -O3 -cudart static $arch -o "$work/gpubench" "$b/gpubench.cu" 2>"$work/nvcc.log" \
    || { cc="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d .)";
         "$nvcc" -O3 -cudart static -gencode "arch=compute_$cc,code=sm_$cc" -o "$work/gpubench" "$b/gpubench.cu"; }

  say "what gpucloud doctor says about this host"
  "$b/gpucloud" doctor || true

  say "bare metal"
  "$work/gpubench" | tee "$work/bare.json"

  say "an image with gpubench and the C libraries it and nvidia-smi need"
  local root="$work/cudaimg/rootfs"
  mkdir -p "$root" "$data/images/cudacheck"
  tar -xzf "$b/images/busybox/rootfs.tar.gz" -C "$root"
  mkdir -p "$root/opt/check"
  cp "$work/gpubench" "$root/opt/check/gpubench"
  for f in "$work/gpubench" "$(command -v nvidia-smi)"; do
    { ldd "$f" 2>/dev/null || true; } | awk '/=> \// {print $3} /^\t\/.*ld-linux/ {print $1}' | while read -r lib; do
      case "$(basename "$lib")" in libcuda.so*|libnvidia-*) continue ;; esac
      cp --parents -L "$lib" "$root/"
    done
  done
  tar --numeric-owner -C "$root" -czf "$data/images/cudacheck/rootfs.tar.gz" .
  cat > "$data/images/cudacheck/image.json" <<J
{"id": "img-gccudchk", "name": "gpucloud GPU check", "os_name": "busybox + gpubench",
 "platform": "Debian", "runtime": "container", "file": "rootfs.tar.gz", "size_gib": 1}
J
  cp -r "$b/images/busybox" "$data/images/busybox"

  say "starting gpucloud up with the real inventory"
  local metrics_port=19101
  "$b/gpucloud" up --data-dir "$data" --listen 127.0.0.1:0 --container-runtime "$b/runc" \
    --agent-metrics-listen "127.0.0.1:$metrics_port" >"$work/up.log" 2>&1 &
  UP_PID=$!
  trap 'kill "${UP_PID:-}" 2>/dev/null || true' EXIT
  for _ in $(seq 1 300); do
    [ -f "$data/credentials.json" ] && ! grep -q '"Endpoint": "http://127.0.0.1:0"' "$data/credentials.json" && break
    kill -0 "$UP_PID" 2>/dev/null || { tail -30 "$work/up.log"; die "gpucloud up exited"; }
    sleep 0.2
  done
  call() { "$b/gpucloud" call --data-dir "$data" "$@"; }
  admin() { "$b/gpucloud" admin "$@" --data-dir "$data"; }
  for _ in $(seq 1 150); do
    admin gpus --output json >"$work/gpus.json" 2>/dev/null && [ "$(json "$work/gpus.json" 'len(d)')" -gt 0 ] && break
    sleep 0.2
  done

  say "GPUs as gpucloud shows them, and as nvidia-smi does"
  admin gpus
  nvidia-smi --query-gpu=index,uuid,name,memory.total,pci.bus_id --format=csv,noheader | tee "$work/smi.csv"
  admin hosts
  local api_uuids smi_uuids
  api_uuids="$(json "$work/gpus.json" '" ".join(sorted(g["gpu_id"] for g in d))')"
  smi_uuids="$(cut -d, -f2 "$work/smi.csv" | tr -d ' ' | sort | paste -sd' ')"
  # GPUs bound to vfio-pci are in sysfs but not in nvidia-smi: compare the driver's.
  if [ -n "$smi_uuids" ] && [ "$api_uuids" = "$smi_uuids" ]; then pass "GPU UUIDs match nvidia-smi: $api_uuids"
  else fail "GPU UUIDs differ: gpucloud [$api_uuids], nvidia-smi [$smi_uuids]"; fi
  python3 - "$work/gpus.json" "$work/smi.csv" <<'PY' || failures=$((failures + 1))
import csv, json, sys
gpus = {g["gpu_id"]: g for g in json.load(open(sys.argv[1]))}
bad = 0
for row in csv.reader(open(sys.argv[2])):
    idx, uuid, name, mem, pci = [c.strip() for c in row]
    g = gpus.get(uuid)
    if not g:
        print(f"FAIL: {uuid} ({name}) is not in gpucloud's inventory"); bad += 1; continue
    mib = int(mem.split()[0])
    ok = g["model"] != "unknown" and abs(g["memory_mib"] - mib) <= 1024 and g["pci_address"].lower() == pci.lower()[-12:]
    print(("ok:   " if ok else "FAIL: ") + f"{uuid}: nvidia-smi says {name}, {mib} MiB at {pci}; gpucloud says model {g['model']}, {g['memory_mib']} MiB at {g['pci_address']}, {g['health']} {g['health_reason']}")
    bad += 0 if ok else 1
sys.exit(1 if bad else 0)
PY

  say "choosing a 1-GPU instance type on sale"
  call cvm DescribeZoneInstanceConfigInfos >"$work/zones.json"
  local gtype zone
  gtype="$(json "$work/zones.json" 'next((q["InstanceType"] for q in d["InstanceTypeQuotaSet"] if q["Gpu"] == 1 and q["Status"] == "SELL"), "")')"
  zone="$(json "$work/zones.json" 'd["InstanceTypeQuotaSet"][0]["Zone"]')"
  [ -n "$gtype" ] || { admin gpus; die "no 1-GPU instance type is on sale: are the GPUs healthy and their model known?"; }
  pass "instance type $gtype in $zone"

  wait_running() {
    for _ in $(seq 1 600); do
      call cvm DescribeInstances "{\"InstanceIds\": [\"$1\"]}" >"$work/inst.json"
      case "$(json "$work/inst.json" 'd["InstanceSet"][0]["InstanceState"]')" in
        RUNNING) return 0 ;;
        LAUNCH_FAILED) json "$work/inst.json" 'd["InstanceSet"][0]["LatestOperationErrorMsg"]'; return 1 ;;
      esac
      sleep 0.2
    done
    return 1
  }
  # run_cmd INSTANCE SCRIPT — prints the output; returns the exit code.
  run_cmd() {
    local content inv
    content="$(printf '%s' "$2" | base64 -w0)"
    call tat RunCommand "{\"InstanceIds\": [\"$1\"], \"Content\": \"$content\", \"Timeout\": 600}" >"$work/inv.json"
    inv="$(json "$work/inv.json" 'd["InvocationId"]')"
    for _ in $(seq 1 3000); do
      call tat DescribeInvocationTasks "{\"HideOutput\": false, \"Filters\": [{\"Name\": \"invocation-id\", \"Values\": [\"$inv\"]}]}" >"$work/task.json"
      case "$(json "$work/task.json" 'd["InvocationTaskSet"][0]["TaskStatus"]')" in
        PENDING|RUNNING|DELIVERING) sleep 0.2 ;;
        *) json "$work/task.json" '__import__("base64").b64decode(d["InvocationTaskSet"][0]["TaskResult"]["Output"]).decode()'
           return "$(json "$work/task.json" 'd["InvocationTaskSet"][0]["TaskResult"]["ExitCode"]')" ;;
      esac
    done
    return 124
  }

  say "a 1-GPU container instance"
  local gpu_ins cpu_ins
  call cvm RunInstances "{\"Placement\": {\"Zone\": \"$zone\"}, \"ImageId\": \"img-gccudchk\", \"InstanceType\": \"$gtype\", \"InstanceName\": \"gpu-check\"}" >"$work/run.json"
  gpu_ins="$(json "$work/run.json" 'd["InstanceIdSet"][0]')"
  wait_running "$gpu_ins" || { tail -40 "$work/up.log"; die "$gpu_ins did not start"; }
  local assigned
  assigned="$(json "$work/inst.json" '",".join(d["InstanceSet"][0]["GPUInfo"]["GPUId"])')"
  pass "$gpu_ins is RUNNING with GPU $assigned"
  # No LD_LIBRARY_PATH: the driver's files are where the image looks.
  run_cmd "$gpu_ins" "nvidia-smi -L; ls /dev | grep nvidia | paste -sd' '; /opt/check/gpubench" | tee "$work/in.txt" \
    || fail "gpubench failed inside the instance"
  grep -c '^GPU ' "$work/in.txt" | grep -qx 1 && grep -q "$assigned" "$work/in.txt" \
    && pass "the instance sees exactly its own GPU" || fail "the instance does not see exactly $assigned"
  grep '^{' "$work/in.txt" | tail -1 >"$work/inside.json"

  say "the agent's GPU telemetry (/metrics) with the instance running"
  python3 -c 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())' \
    "http://127.0.0.1:$metrics_port/metrics" >"$work/metrics.txt" 2>&1 || true
  grep -E '^gpucloud_gpu_' "$work/metrics.txt" || cat "$work/metrics.txt"
  grep -q '^gpucloud_gpu_healthy{.*} 1' "$work/metrics.txt" \
    && pass "the agent reports the GPU healthy with its telemetry" || fail "no healthy GPU in the agent's /metrics"

  say "bare metal again (the better of the two bare runs is the baseline)"
  "$work/gpubench" | tee "$work/bare2.json"

  say "a CPU-only container instance"
  call cvm RunInstances "{\"Placement\": {\"Zone\": \"$zone\"}, \"ImageId\": \"img-gccudchk\", \"InstanceType\": \"S5.MEDIUM4\", \"InstanceName\": \"no-gpu\"}" >"$work/run2.json"
  cpu_ins="$(json "$work/run2.json" 'd["InstanceIdSet"][0]')"
  wait_running "$cpu_ins" || die "$cpu_ins did not start"
  run_cmd "$cpu_ins" "ls /dev | grep -c nvidia; /opt/check/gpubench 2>&1; echo exit=\$?" | tee "$work/nogpu.txt" || true
  if [ "$(head -1 "$work/nogpu.txt")" = 0 ] && ! grep -q '^{' "$work/nogpu.txt"; then
    pass "the CPU-only instance sees no GPU device and CUDA finds none"
  else fail "the CPU-only instance can see a GPU"; fi

  say "terminating"
  call cvm TerminateInstances "{\"InstanceIds\": [\"$gpu_ins\", \"$cpu_ins\"]}" >/dev/null
  for _ in $(seq 1 300); do
    [ "$(call cvm DescribeInstances "{\"InstanceIds\": [\"$gpu_ins\", \"$cpu_ins\"]}" | python3 -c 'import json,sys;print(json.load(sys.stdin)["TotalCount"])')" = 0 ] && break
    sleep 0.2
  done

  python3 - "$work/bare.json" "$work/inside.json" "$b/result.json" "$work/smi.csv" "$failures" "$work/bare2.json" <<'PY'
import json, sys
runs = [json.load(open(sys.argv[1]))]
try:
    runs.append(json.load(open(sys.argv[6])))
except Exception:
    pass
bare = dict(runs[0])
bare["fp32_tflops"] = max(r["fp32_tflops"] for r in runs)
bare["copy_gbs"] = max(r["copy_gbs"] for r in runs)
try:
    inside = json.load(open(sys.argv[2]))
except Exception:
    inside = None
res = {"bare_metal": bare, "bare_metal_runs": runs, "container": inside,
       "gpus": open(sys.argv[4]).read().strip().splitlines()}
ok = int(sys.argv[5]) == 0
if inside:
    res["fp32_ratio"] = inside["fp32_tflops"] / bare["fp32_tflops"]
    res["bandwidth_ratio"] = inside["copy_gbs"] / bare["copy_gbs"]
    for k in ("fp32_ratio", "bandwidth_ratio"):
        good = res[k] >= 0.98
        ok = ok and good
        print(f"{'ok:  ' if good else 'FAIL:'} {k} = {res[k]:.4f} (goal >= 0.98)")
    print(f"       compute: {bare['fp32_tflops']:.2f} TFLOPS bare metal, {inside['fp32_tflops']:.2f} in the instance")
    print(f"       memory:  {bare['copy_gbs']:.0f} GB/s bare metal, {inside['copy_gbs']:.0f} in the instance")
else:
    ok = False
    print("FAIL: no benchmark result from inside the instance")
res["passed"] = ok
json.dump(res, open(sys.argv[3], "w"), indent=2)
print("result:", sys.argv[3])
sys.exit(0 if ok else 1)
PY
}

vm_bench() {
  local b work
  b="$(cd "${1:-$(dirname "$0")}" && pwd)"
  [ "$(id -u)" = 0 ] || die "run as root (VMs need tap devices and network namespaces)"
  [ -f "$b/vm.tar.gz" ] || die "$b/vm.tar.gz is missing: make the bundle with prepare --with-vm"
  work="$(mktemp -d /tmp/gpucloud-vm-bench.XXXXXX)"
  trap 'rm -rf "$work"' EXIT
  tar -xzf "$b/vm.tar.gz" -C "$work"
  export PATH="$work/vm/bin:$b:$PATH"
  say "what gpucloud doctor says about VMs on this host"
  "$b/gpucloud" doctor || true
  say "time to ready of the built-in VM image"
  GPUCLOUD_BIN="$b/gpucloud" GPUCLOUD_TEST_IMAGES="$work/images" bash "$b/bench-vm.sh" "${2:-5}" | tee "$b/vm-bench.json"
}

case "${1:-}" in
  prepare) shift; prepare "$@" ;;
  run) shift; run "$@" ;;
  vm-bench) shift; vm_bench "$@" ;;
  *) sed -n '2,39p' "$0"; exit 2 ;;
esac
