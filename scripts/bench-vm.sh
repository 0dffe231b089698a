#!/usr/bin/env bash
# Time to ready of VM instances: request → RUNNING (the guest agent answers)
# and request → SSH-ready (`ssh root@<PrivateIp> true` succeeds with the key
# pair), for the built-in VM image, on this machine.
#
#   scripts/bench-vm.sh [RUNS] [INSTANCE_TYPE]     # as root; default 5 runs of S5.SMALL2
#
# Starts its own `gpucloud up` (release build) in a temporary data directory
# with the built-in VM image, launches one VM at a time, and prints a JSON
# object with every run and the medians. The acceleration (KVM or TCG) is
# what the agent chose; it is printed too. Figures go to docs/PERFORMANCE.md.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
runs="${1:-5}"
itype="${2:-S5.SMALL2}"
bin="${GPUCLOUD_BIN:-$root/target/release/gpucloud}"
[ "$(id -u)" = 0 ] || { echo "run as root (VMs need tap devices and network namespaces)" >&2; exit 1; }
[ -x "$bin" ] || (cd "$root" && cargo build --release --locked -p gpucloud >&2)
images="${GPUCLOUD_TEST_IMAGES:-$root/target/test-images}"
[ -f "$images/vm/image.json" ] || bash "$root/images/vm/build.sh" "$images/vm" >&2

work="$(mktemp -d /tmp/gpucloud-bench-vm.XXXXXX)"
data="$work/data"
mkdir -p "$data/images"
cp -r "$images/vm" "$data/images/vm"
rm -rf "$data/images/vm/.debs"
"$bin" up --data-dir "$data" --listen 127.0.0.1:0 >"$work/up.log" 2>&1 &
up_pid=$!
trap 'rc=$?; kill $up_pid 2>/dev/null; wait $up_pid 2>/dev/null || true
      [ $rc = 0 ] || { echo "--- the end of gpucloud up'"'"'s log:" >&2; tail -40 "$work/up.log" >&2; }
      rm -rf "$work"' EXIT
for _ in $(seq 1 300); do
  [ -f "$data/credentials.json" ] && ! grep -q '"Endpoint": "http://127.0.0.1:0"' "$data/credentials.json" && break
  sleep 0.1
done
call() { "$bin" call --data-dir "$data" "$@"; }
py() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
sale=""
for _ in $(seq 1 300); do
  sale="$(call cvm DescribeZoneInstanceConfigInfos "{\"Filters\":[{\"Name\":\"instance-type\",\"Values\":[\"$itype\"]}]}" | py 'd["InstanceTypeQuotaSet"][0]["Status"]' 2>/dev/null || true)"
  [ "$sale" = SELL ] && break
  sleep 0.2
done
[ "$sale" = SELL ] || { echo "$itype is not on sale on this host after a minute (${sale:-no answer}); gpucloud admin hosts:" >&2
  "$bin" admin hosts --data-dir "$data" >&2 || true; exit 1; }
call cvm CreateKeyPair '{"KeyName":"bench","ProjectId":0}' >"$work/key.json"
kid="$(py 'd["KeyPair"]["KeyId"]' <"$work/key.json")"
py 'd["KeyPair"]["PrivateKey"]' <"$work/key.json" >"$work/key"
chmod 600 "$work/key"

now() { date +%s.%N; }
results=()
for i in $(seq 1 "$runs"); do
  t0=$(now)
  iid="$(call cvm RunInstances "{\"Placement\":{\"Zone\":\"ap-guangzhou-3\"},\"ImageId\":\"img-gcvmdeb1\",\"InstanceType\":\"$itype\",\"LoginSettings\":{\"KeyIds\":[\"$kid\"]}}" | py 'd["InstanceIdSet"][0]')"
  state=""
  for _ in $(seq 1 3000); do
    call cvm DescribeInstances "{\"InstanceIds\":[\"$iid\"]}" >"$work/inst.json"
    state="$(py 'd["InstanceSet"][0]["InstanceState"]' <"$work/inst.json")"
    case "$state" in RUNNING|LAUNCH_FAILED) break ;; esac
    sleep 0.05
  done
  t_run=$(now)
  [ "$state" = RUNNING ] || { py 'd["InstanceSet"][0]' <"$work/inst.json" >&2; exit 1; }
  ip="$(py 'd["InstanceSet"][0]["PrivateIpAddresses"][0]' <"$work/inst.json")"
  ns="gcv-$(py 'd["InstanceSet"][0]["VirtualPrivateCloud"]["VpcId"][4:]' <"$work/inst.json")"
  for _ in $(seq 1 3000); do
    nsenter --net="/run/netns/$ns" ssh -i "$work/key" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
      -o BatchMode=yes -o ConnectTimeout=2 -o LogLevel=ERROR "root@$ip" true 2>/dev/null && break
    sleep 0.05
  done
  t_ssh=$(now)
  run_s=$(python3 -c "print(round($t_run - $t0, 2))")
  ssh_s=$(python3 -c "print(round($t_ssh - $t0, 2))")
  echo "run $i: $iid RUNNING after $run_s s, SSH after $ssh_s s" >&2
  results+=("{\"instance\":\"$iid\",\"to_running_s\":$run_s,\"to_ssh_s\":$ssh_s}")
  call cvm TerminateInstances "{\"InstanceIds\":[\"$iid\"]}" >/dev/null
  for _ in $(seq 1 600); do
    [ "$(call cvm DescribeInstances "{\"InstanceIds\":[\"$iid\"]}" | py 'd["TotalCount"]')" = 0 ] && break
    sleep 0.1
  done
done
accel="$("$bin" admin hosts --data-dir "$data" --output json | py 'json.dumps(next(h for h in d if h["kind"]=="real")["inventory"]["details"].get("vm_acceleration"))')"
python3 - "$itype" "$accel" "${results[@]}" <<'PY'
import json, statistics, sys
itype, accel, runs = sys.argv[1], json.loads(sys.argv[2]), [json.loads(r) for r in sys.argv[3:]]
print(json.dumps({
    "instance_type": itype,
    "acceleration": accel,
    "runs": runs,
    "to_running_p50_s": statistics.median(r["to_running_s"] for r in runs),
    "to_ssh_p50_s": statistics.median(r["to_ssh_s"] for r in runs),
}, indent=2))
PY
