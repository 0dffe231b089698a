"""Crash safety: 200 concurrent 1-GPU launches on 128 GPUs, `kill -9` of `up`
in the middle, restart, retries with the same ClientTokens.

Afterwards exactly 128 instances exist, every refusal is
ResourceInsufficient.*, no instance is stuck in PENDING, no GPU is held
twice, and every launch that was accepted before the crash is still there.
"""

import collections
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException

from conftest import call, wait_for

ZONE = "ap-guangzhou-3"
N = 200


def launch(cloud, creds, i):
    client = cloud.sdk(creds["SecretId"], creds["SecretKey"])
    params = {"Placement": {"Zone": ZONE}, "ImageId": "img-gc0ubt22", "InstanceType": "GT5.6XLARGE240",
              "ClientToken": f"crash-test-{i}"}
    try:
        return ("ok", call(client, "RunInstances", params)["InstanceIdSet"][0])
    except TencentCloudSDKException as e:
        return ("error", e.get_code())
    except Exception as e:  # noqa: BLE001 - the server died under us
        return ("error", f"transport:{type(e).__name__}")


def test_kill_9_during_200_concurrent_launches(cloud_factory):
    cloud = cloud_factory("16*H100x8", boot_ms=300).start()
    creds = cloud.tenant("crowd", quota=1000)
    results = {}
    done = threading.Event()
    lock = threading.Lock()

    def worker(i):
        r = launch(cloud, creds, i)
        with lock:
            results[i] = r
            if len(results) >= 60:
                done.set()
        return r

    with ThreadPoolExecutor(max_workers=N) as pool:  # all 200 at once
        futures = [pool.submit(worker, i) for i in range(N)]
        done.wait(timeout=120)
        cloud.kill9()
        for f in futures:
            f.result()

    accepted_before = {r[1] for r in results.values() if r[0] == "ok"}
    definitive = {i for i, r in results.items()
                  if r[0] == "ok" or (r[0] == "error" and r[1].startswith("ResourceInsufficient"))}
    assert 0 < len(accepted_before), "some launches were accepted before the crash"
    assert len(definitive) < N, "the crash interrupted some launches"

    # Restart on the same data directory; retry everything without a definitive answer.
    cloud.start()
    # The operator's secret went to the log once, on first start; the restart
    # prints a line that reads it from credentials.json instead.
    wait_for("the restart's tccli line",
             lambda: cloud.log.read_text().count("tccli configure set ") == 2 or None, timeout=30)
    assert cloud.log.read_text().count(cloud.secret_key) == 1
    client = cloud.sdk(creds["SecretId"], creds["SecretKey"])
    pending = [i for i in range(N) if i not in definitive]
    with ThreadPoolExecutor(max_workers=32) as pool:
        for i, r in zip(pending, pool.map(lambda i: launch(cloud, creds, i), pending)):
            results[i] = r
    kinds = collections.Counter(r[0] if r[0] == "ok" else r[1] for r in results.values())
    assert kinds["ok"] == 128, kinds
    assert kinds["ResourceInsufficient.SpecifiedInstanceType"] == N - 128, kinds
    ids = {r[1] for r in results.values() if r[0] == "ok"}
    assert len(ids) == 128, "retried tokens returned the instances they created, no duplicates"
    assert accepted_before <= ids, "no accepted instance was lost"

    listed = set()
    offset = 0
    while True:
        page = call(client, "DescribeInstances", {"Offset": offset, "Limit": 100})
        listed |= {i["InstanceId"] for i in page["InstanceSet"]}
        offset += 100
        if offset >= page["TotalCount"]:
            break
    assert listed == ids

    def all_running():
        states = collections.Counter()
        for chunk in [sorted(ids)[k:k + 100] for k in range(0, len(ids), 100)]:
            for s in call(client, "DescribeInstancesStatus", {"InstanceIds": chunk, "Limit": 100})["InstanceStatusSet"]:
                states[s["InstanceState"]] += 1
        return states if states == {"RUNNING": 128} else None

    wait_for("every instance RUNNING, none stuck in PENDING", all_running, timeout=120, interval=0.5)

    gpus = cloud.admin("gpus")
    holders = [g["claimed_by"] for g in gpus if g["claimed_by"]]
    assert len(holders) == 128, "128 GPUs held"
    assert len(set(holders)) == 128, "each by a different instance"
    assert set(holders) == ids
    per_instance = collections.Counter(holders)
    assert max(per_instance.values()) == 1


def test_restart_resumes_the_same_cloud(cloud_factory):
    cloud = cloud_factory("2*H100x8,1*T4x4@ap-guangzhou-4").start()
    c = cloud.sdk()
    key = call(c, "CreateKeyPair", {"KeyName": "keep", "ProjectId": 0})["KeyPair"]["KeyId"]
    iid = call(c, "RunInstances", {"Placement": {"Zone": ZONE}, "ImageId": "img-gc0ubt22",
                                   "InstanceType": "GT5.12XLARGE480", "LoginSettings": {"KeyIds": [key]}})["InstanceIdSet"][0]
    wait_for("running", lambda: call(c, "DescribeInstances", {"InstanceIds": [iid]})["InstanceSet"][0]["InstanceState"] == "RUNNING")
    hosts_before = sorted(h["host_id"] for h in cloud.admin("hosts"))
    gpus_before = sorted(g["gpu_id"] for g in cloud.admin("gpus"))
    inst_before = call(c, "DescribeInstances", {"InstanceIds": [iid]})["InstanceSet"][0]
    secret = cloud.secret_id
    cloud.stop(signal.SIGINT)  # Ctrl-C: a clean shutdown too
    cloud.start()
    assert cloud.secret_id == secret, "the same operator key"
    c = cloud.sdk()
    assert sorted(h["host_id"] for h in cloud.admin("hosts")) == hosts_before
    assert sorted(g["gpu_id"] for g in cloud.admin("gpus")) == gpus_before
    inst_after = wait_for("running again", lambda: next(
        (i for i in call(c, "DescribeInstances", {"InstanceIds": [iid]})["InstanceSet"] if i["InstanceState"] == "RUNNING"), None))
    assert inst_after["GPUInfo"]["GPUId"] == inst_before["GPUInfo"]["GPUId"]
    assert inst_after["PrivateIpAddresses"] == inst_before["PrivateIpAddresses"]
    assert call(c, "DescribeKeyPairs", {"KeyIds": [key]})["TotalCount"] == 1
    # The cloud still works after the restart.
    assert call(c, "StopInstances", {"InstanceIds": [iid]}) is not None
    wait_for("stopped", lambda: call(c, "DescribeInstances", {"InstanceIds": [iid]})["InstanceSet"][0]["InstanceState"] == "STOPPED")
