"""The whole CVM lifecycle driven by tencentcloud-sdk-python, unmodified."""

import time
from unittest import mock

from conftest import call, error_code, wait_for

ZONE = "ap-guangzhou-3"


def run(client, itype="GT5.6XLARGE240", **extra):
    params = {"Placement": {"Zone": ZONE}, "ImageId": "img-gc0ubt22", "InstanceType": itype, **extra}
    return call(client, "RunInstances", params)["InstanceIdSet"]


def describe(client, ids):
    return call(client, "DescribeInstances", {"InstanceIds": ids})["InstanceSet"]


def wait_state(client, iid, state, timeout=60):
    return wait_for(
        f"{iid} to be {state}",
        lambda: next((i for i in describe(client, [iid]) if i["InstanceState"] == state), None),
        timeout=timeout,
    )


def test_lifecycle_with_the_python_sdk(cloud_factory):
    cloud = cloud_factory("2*H100x8,1*T4x4@ap-guangzhou-4").start()
    c = cloud.sdk()

    # Simulated hosts register right after `up` answers: both zones appear.
    zones = wait_for("both zones' hosts to register", lambda: (lambda z: z if {
        x["Zone"] for x in z["ZoneSet"] if x["ZoneState"] == "AVAILABLE"} >= {"ap-guangzhou-3", "ap-guangzhou-4"}
        else None)(call(c, "DescribeZones", {})))
    assert {z["Zone"] for z in zones["ZoneSet"]} >= {"ap-guangzhou-3", "ap-guangzhou-4"}
    offers = call(c, "DescribeZoneInstanceConfigInfos", {"Filters": [{"Name": "instance-family", "Values": ["GT5"]}]})
    sell = {(o["InstanceType"], o["InstanceChargeType"]): o for o in offers["InstanceTypeQuotaSet"]}
    assert sell[("GT5.48XLARGE1920", "POSTPAID_BY_HOUR")]["Status"] == "SELL"
    assert sell[("GT5.6XLARGE240", "POSTPAID_BY_HOUR")]["StatusCategory"] == "EnoughStock"

    # Run two 1-GPU instances; describe with filters.
    ids = run(c, InstanceCount=2, InstanceName="trainer")
    assert len(ids) == 2
    for iid in ids:
        inst = wait_state(c, iid, "RUNNING")
        assert inst["GPUInfo"]["GPUCount"] == 1
        assert inst["GPUInfo"]["GPUType"] == "NVIDIA H100 SXM 80GB"
        assert inst["GPUInfo"]["GPUId"][0].startswith("GPU-")
        assert inst["LatestOperation"] == "RunInstances" and inst["LatestOperationState"] == "SUCCESS"
        assert inst["CreatedTime"].endswith("Z")
    by_name = call(c, "DescribeInstances", {"Filters": [{"Name": "instance-name", "Values": ["trainer"]}]})
    assert by_name["TotalCount"] == 2
    by_zone_state = call(c, "DescribeInstances", {"Filters": [
        {"Name": "zone", "Values": [ZONE]},
        {"Name": "instance-state", "Values": ["RUNNING"]},
        {"Name": "instance-type", "Values": ["GT5.6XLARGE240"]},
        {"Name": "instance-charge-type", "Values": ["POSTPAID_BY_HOUR"]},
    ], "Limit": 1, "Offset": 1})
    assert by_zone_state["TotalCount"] == 2 and len(by_zone_state["InstanceSet"]) == 1
    by_id = call(c, "DescribeInstances", {"Filters": [{"Name": "instance-id", "Values": [ids[0]]}]})
    assert [i["InstanceId"] for i in by_id["InstanceSet"]] == [ids[0]]
    status = call(c, "DescribeInstancesStatus", {"InstanceIds": ids})
    assert {s["InstanceState"] for s in status["InstanceStatusSet"]} == {"RUNNING"}

    # Stop, start, reboot.
    iid = ids[0]
    call(c, "StopInstances", {"InstanceIds": [iid], "StopType": "SOFT"})
    assert describe(c, [iid])[0]["InstanceState"] in ("STOPPING", "STOPPED")
    wait_state(c, iid, "STOPPED")
    assert error_code(c, "StopInstances", {"InstanceIds": [iid]}) == "UnsupportedOperation.InstanceStateStopped"
    call(c, "StartInstances", {"InstanceIds": [iid]})
    wait_state(c, iid, "RUNNING")
    call(c, "RebootInstances", {"InstanceIds": [iid]})
    wait_for("reboot", lambda: describe(c, [iid])[0]["LatestOperation"] == "RebootInstances"
             and describe(c, [iid])[0]["LatestOperationState"] == "SUCCESS")

    # Resize 1 -> 8 GPUs: the other instance holds a GPU on this host, so it moves.
    call(c, "StopInstances", {"InstanceIds": [iid]})
    wait_state(c, iid, "STOPPED")
    before = describe(c, [iid])[0]
    call(c, "ResetInstancesType", {"InstanceIds": [iid], "InstanceType": "GT5.48XLARGE1920"})
    after = wait_state(c, iid, "RUNNING")
    assert after["InstanceType"] == "GT5.48XLARGE1920"
    assert after["GPUInfo"]["GPUCount"] == 8 and len(after["GPUInfo"]["GPUId"]) == 8
    assert after["CPU"] == 192 and after["Memory"] == 1920
    assert after["Placement"]["HostId"] != before["Placement"]["HostId"]
    price = call(c, "InquiryPriceResetInstancesType", {"InstanceIds": [ids[1]], "InstanceType": "GT5.12XLARGE480"})
    assert price["Price"]["InstancePrice"]["ChargeUnit"] == "HOUR"

    # Terminate both.
    call(c, "TerminateInstances", {"InstanceIds": ids})
    wait_for("instances gone", lambda: call(c, "DescribeInstances", {"InstanceIds": ids})["TotalCount"] == 0)
    gpus = cloud.admin("gpus")
    assert not [g for g in gpus if g["claimed_by"]], "every GPU is free again"


def test_retries_dry_runs_and_refusals(cloud_factory):
    cloud = cloud_factory("1*H100x8").start()
    c = cloud.sdk()
    first = run(c, ClientToken="tok-1", InstanceCount=2)
    again = run(c, ClientToken="tok-1", InstanceCount=2)
    assert first == again, "a retry with the same ClientToken returns the same instances"

    # Dry run: the answer carries only a RequestId, nothing is created.
    out = call(c, "RunInstances", {"Placement": {"Zone": ZONE}, "ImageId": "img-gc0ubt22",
                                   "InstanceType": "GT5.24XLARGE960", "DryRun": True})
    assert out.get("InstanceIdSet") is None
    assert call(c, "DescribeInstances", {})["TotalCount"] == 2

    # Beyond capacity: 6 GPUs free, 8 asked.
    before = cloud.admin("gpus")
    code = error_code(c, "RunInstances", {"Placement": {"Zone": ZONE}, "ImageId": "img-gc0ubt22",
                                          "InstanceType": "GT5.48XLARGE1920"})
    assert code == "ResourceInsufficient.SpecifiedInstanceType"
    assert cloud.admin("gpus") == before, "a refused launch leaks nothing"
    assert call(c, "DescribeInstances", {})["TotalCount"] == 2

    # Exact error codes for bad input.
    assert error_code(c, "RunInstances", {"Placement": {"Zone": "ap-guangzhou-9"}, "ImageId": "img-gc0ubt22"}) \
        == "InvalidZone.MismatchRegion"
    assert error_code(c, "RunInstances", {"Placement": {"Zone": "ap-beijing-1"}, "ImageId": "img-gc0ubt22"}) \
        == "InvalidZone.MismatchRegion"
    assert error_code(c, "RunInstances", {"Placement": {"Zone": ZONE}, "ImageId": "img-nothere1"}) \
        == "InvalidImageId.NotFound"
    assert error_code(c, "RunInstances", {"Placement": {"Zone": ZONE}, "ImageId": "img-gc0ubt22",
                                          "InstanceType": "GT5.6XLARGE240", "UserData": "%%%"}) \
        == "InvalidParameterValue.InvalidUserDataFormat"
    assert error_code(c, "StartInstances", {"InstanceIds": ["ins-zzzzzzzz"]}) == "InvalidInstanceId.NotFound"
    assert error_code(c, "StartInstances", {"InstanceIds": ["ins-1122"]}) == "InvalidInstanceId.Malformed"


def test_authentication_failures(cloud_factory):
    cloud = cloud_factory("1*H100x8").start()
    wrong_key = cloud.sdk(secret_key="X" * 32)
    assert error_code(wrong_key, "DescribeZones", {}) == "AuthFailure.SignatureFailure"
    unknown = cloud.sdk(secret_id="AKID" + "x" * 32)
    assert error_code(unknown, "DescribeZones", {}) == "AuthFailure.SecretIdNotFound"
    c = cloud.sdk()
    real = time.time()
    with mock.patch("time.time", return_value=real - 400):
        assert error_code(c, "DescribeZones", {}) == "AuthFailure.SignatureExpire"
    # The SDK's other signing modes are accepted too.
    for kw in ({"method": "GET"}, {"sign_method": "HmacSHA256"}, {"sign_method": "HmacSHA1", "method": "GET"}):
        assert call(cloud.sdk(**kw), "DescribeZones", {})["TotalCount"] >= 1, kw
    # Chinese messages by default.
    from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
    try:
        call(cloud.sdk(language="zh-CN"), "StartInstances", {"InstanceIds": ["ins-zzzzzzzz"]})
        raise AssertionError("expected an error")
    except TencentCloudSDKException as e:
        assert "不存在" in e.get_message()


def test_tenants_are_walls_and_admin_works_while_up_runs(cloud_factory):
    cloud = cloud_factory("1*H100x8").start()
    alice = cloud.sdk()
    iid = run(alice)[0]
    wait_state(alice, iid, "RUNNING")
    bob_creds = cloud.tenant("bob")
    assert {"AppId", "SecretId", "SecretKey"} <= set(bob_creds)
    bob = cloud.sdk(bob_creds["SecretId"], bob_creds["SecretKey"])
    assert call(bob, "DescribeInstances", {"InstanceIds": [iid]})["TotalCount"] == 0
    for action, params in [
        ("StopInstances", {"InstanceIds": [iid]}),
        ("StartInstances", {"InstanceIds": [iid]}),
        ("RebootInstances", {"InstanceIds": [iid]}),
        ("TerminateInstances", {"InstanceIds": [iid]}),
        ("ResetInstancesType", {"InstanceIds": [iid], "InstanceType": "GT5.12XLARGE480"}),
        ("ModifyInstancesAttribute", {"InstanceIds": [iid], "InstanceName": "x"}),
    ]:
        assert error_code(bob, action, params) == "InvalidInstanceId.NotFound", action
    assert describe(alice, [iid])[0]["InstanceState"] == "RUNNING"
    hosts = cloud.admin("hosts")
    assert len(hosts) == 2, "one simulated host and the local host"
    assert any(h["gpu_model"] == "H100" for h in hosts)

    # An operator turns bob's key off: every request with it is refused
    # (within the servers' 15 s key cache), alice is untouched; and on again.
    import subprocess
    from conftest import BIN

    def key(cmd):
        subprocess.run([BIN, "admin", "tenant", cmd, bob_creds["SecretId"], "--data-dir", str(cloud.data_dir)],
                       check=True, capture_output=True, timeout=60)

    key("key-disable")
    wait_for("bob's disabled key to be refused",
             lambda: error_code(bob, "DescribeZones", {}) == "AuthFailure.SecretIdNotFound" or None, timeout=30)
    assert [k["Status"] for k in cloud.admin("tenant", "keys", "bob")] == ["Inactive"]
    assert describe(alice, [iid])[0]["InstanceState"] == "RUNNING"
    key("key-enable")
    wait_for("bob's key to work again",
             lambda: error_code(bob, "DescribeZones", {}) == "OK" or None, timeout=30)
