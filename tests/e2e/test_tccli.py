"""The lifecycle driven by tccli, unmodified, configured the way `up` prints."""

import glob
import json

from conftest import Tccli, wait_for

ZONE = "ap-guangzhou-3"


def test_lifecycle_with_tccli(cloud_factory, workdir):
    cloud = cloud_factory("2*H100x8").start()
    t = Tccli(cloud, workdir / "home", printed=True)

    assert t.ok("cvm", "DescribeRegions")["RegionSet"][0]["Region"] == "ap-guangzhou"
    types = t.ok("cvm", "DescribeInstanceTypeConfigs", "--Filters",
                 json.dumps([{"Name": "instance-family", "Values": ["GT5"]}]))
    assert {x["InstanceType"] for x in types["InstanceTypeConfigSet"]} == {
        "GT5.2XLARGE40", "GT5.6XLARGE240", "GT5.12XLARGE480", "GT5.24XLARGE960", "GT5.48XLARGE1920"}
    images = t.ok("cvm", "DescribeImages", "--Filters", json.dumps([{"Name": "image-id", "Values": ["img-gc0ubt22"]}]))
    assert images["TotalCount"] == 1

    key = t.ok("cvm", "CreateKeyPair", "--KeyName", "tccli_key", "--ProjectId", "0")["KeyPair"]
    assert key["PrivateKey"].startswith("-----BEGIN RSA PRIVATE KEY-----")

    # tccli's flattened form of nested parameters, and a client token.
    out = t.ok("cvm", "RunInstances", "--cli-unfold-argument",
               "--Placement.Zone", ZONE, "--ImageId", "img-gc0ubt22", "--InstanceType", "GT5.6XLARGE240",
               "--InstanceCount", "1", "--InstanceName", "from-tccli",
               "--LoginSettings.KeyIds", key["KeyId"], "--ClientToken", "tccli-token-1")
    iid = out["InstanceIdSet"][0]
    again = t.ok("cvm", "RunInstances", "--cli-unfold-argument",
                 "--Placement.Zone", ZONE, "--ImageId", "img-gc0ubt22", "--InstanceType", "GT5.6XLARGE240",
                 "--InstanceCount", "1", "--InstanceName", "from-tccli",
                 "--LoginSettings.KeyIds", key["KeyId"], "--ClientToken", "tccli-token-1")
    assert again["InstanceIdSet"] == [iid]

    # tccli's own waiter polls DescribeInstances until RUNNING.
    t.ok("cvm", "DescribeInstances", "--InstanceIds", json.dumps([iid]),
         "--waiter", "{'expr':'InstanceSet[0].InstanceState','to':'RUNNING','timeout':60,'interval':1}")
    inst = t.ok("cvm", "DescribeInstances", "--Filters",
                json.dumps([{"Name": "instance-name", "Values": ["from-tccli"]}]))["InstanceSet"][0]
    assert inst["InstanceId"] == iid and inst["InstanceState"] == "RUNNING"
    assert inst["LoginSettings"]["KeyIds"] == [key["KeyId"]]

    def state():
        return t.ok("cvm", "DescribeInstancesStatus", "--InstanceIds", json.dumps([iid]))["InstanceStatusSet"][0]["InstanceState"]

    t.ok("cvm", "StopInstances", "--InstanceIds", json.dumps([iid]), "--StopType", "SOFT")
    wait_for("STOPPED", lambda: state() == "STOPPED", interval=0.5)
    t.ok("cvm", "StartInstances", "--InstanceIds", json.dumps([iid]))
    wait_for("RUNNING after start", lambda: state() == "RUNNING", interval=0.5)
    t.ok("cvm", "StopInstances", "--InstanceIds", json.dumps([iid]), "--StopType", "SOFT_FIRST")
    wait_for("STOPPED again", lambda: state() == "STOPPED", interval=0.5)
    t.ok("cvm", "ResetInstancesType", "--InstanceIds", json.dumps([iid]), "--InstanceType", "GT5.48XLARGE1920")
    wait_for("RUNNING after resize", lambda: state() == "RUNNING", interval=0.5)
    inst = t.ok("cvm", "DescribeInstances", "--InstanceIds", json.dumps([iid]))["InstanceSet"][0]
    assert inst["GPUInfo"]["GPUCount"] == 8
    t.ok("cvm", "RebootInstances", "--InstanceIds", json.dumps([iid]))
    inst = wait_for("reboot done", lambda: (lambda i: i if i["LatestOperationState"] == "SUCCESS" else None)(
        t.ok("cvm", "DescribeInstances", "--InstanceIds", json.dumps([iid]))["InstanceSet"][0]), interval=0.5)
    assert (inst["LatestOperation"], inst["InstanceState"]) == ("RebootInstances", "RUNNING")

    # Exact error codes through tccli (exit status 255, code on stderr).
    assert t.err("cvm", "StartInstances", "--InstanceIds", json.dumps(["ins-zzzzzzzz"])) == "InvalidInstanceId.NotFound"
    assert t.err("cvm", "StartInstances", "--InstanceIds", json.dumps([iid])) == "UnsupportedOperation.InstanceStateRunning"
    gpus_before = cloud.admin("gpus")
    assert t.err("cvm", "RunInstances", "--cli-unfold-argument", "--Placement.Zone", ZONE,
                 "--ImageId", "img-gc0ubt22", "--InstanceType", "GT5.48XLARGE1920", "--InstanceCount", "2") \
        == "ResourceInsufficient.SpecifiedInstanceType"
    assert cloud.admin("gpus") == gpus_before, "a refused launch holds no GPU"
    assert t.ok("cvm", "DescribeInstances")["TotalCount"] == 1, "a refused launch leaves no instance"
    assert t.err("cvm", "DeleteKeyPairs", "--KeyIds", json.dumps([key["KeyId"]])) == "InvalidParameterValue.KeyPairNotSupported"
    # Dry run through tccli.
    dry = t.ok("cvm", "RunInstances", "--cli-unfold-argument", "--Placement.Zone", ZONE, "--ImageId", "img-gc0ubt22",
               "--InstanceType", "GT5.6XLARGE240", "--DryRun", "True")
    assert "InstanceIdSet" not in dry or dry["InstanceIdSet"] is None

    # Wrong credentials.
    bad = Tccli(cloud, workdir / "home-bad", secret_key="Y" * 32, profile="bad")
    assert bad.err("cvm", "DescribeZones") == "AuthFailure.SignatureFailure"
    nobody = Tccli(cloud, workdir / "home-nobody", secret_id="AKID" + "n" * 32, profile="nobody")
    assert nobody.err("cvm", "DescribeZones") == "AuthFailure.SecretIdNotFound"
    # A request signed ten minutes in the past (tccli under libfaketime).
    libfaketime = glob.glob("/usr/lib/*/faketime/libfaketime.so.1")
    assert libfaketime, "libfaketime (Debian package faketime; scripts/test.sh installs it)"
    assert t.err("cvm", "DescribeZones", env={"LD_PRELOAD": libfaketime[0], "FAKETIME": "-10m"}) \
        == "AuthFailure.SignatureExpire"

    # Another tenant cannot see or touch the instance.
    other = cloud.tenant("other")
    o = Tccli(cloud, workdir / "home-other", secret_id=other["SecretId"], secret_key=other["SecretKey"], profile="other")
    assert o.ok("cvm", "DescribeInstances", "--InstanceIds", json.dumps([iid]))["TotalCount"] == 0
    assert o.err("cvm", "TerminateInstances", "--InstanceIds", json.dumps([iid])) == "InvalidInstanceId.NotFound"

    t.ok("cvm", "TerminateInstances", "--InstanceIds", json.dumps([iid]))
    wait_for("gone", lambda: t.ok("cvm", "DescribeInstances", "--InstanceIds", json.dumps([iid]))["TotalCount"] == 0,
             interval=0.5)
