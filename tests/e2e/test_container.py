"""This machine as a real host: `up`'s local agent (joined over mutual TLS)
offers containers; tccli runs a CPU-only container instance, executes a
command in it through TAT, and terminating it leaves nothing behind.

Needs root and runc (scripts/test.sh installs runc). Without them the test is
skipped — except under CI (`CI=true`), where that is a failure.
"""

import base64
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import BIN, ROOT, Tccli, wait_for

ZONE = "ap-guangzhou-3"


def _runc():
    for p in ("/usr/sbin/runc", "/usr/bin/runc", "/usr/bin/crun", "/usr/sbin/crun"):
        if Path(p).exists():
            return p
    return None


def _prerequisites():
    why = None
    if os.geteuid() != 0:
        why = "needs root for containers"
    elif _runc() is None:
        why = "needs runc (apt-get install runc)"
    if why:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the container end-to-end test cannot run under CI: {why}")
        pytest.skip(why)


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("image") / "busybox"
    subprocess.run(["bash", str(ROOT / "images" / "container" / "build.sh"), str(out)],
                   check=True, capture_output=True, timeout=600)
    return out


def test_container_instance_runs_commands_and_leaves_nothing(cloud_factory, workdir, image_dir):
    _prerequisites()
    cloud = cloud_factory(None, name="host", extra=["--agent-metrics-listen", "127.0.0.1:0"])
    # `up` registers the images it finds under <data-dir>/images.
    shutil.copytree(image_dir, cloud.data_dir / "images" / "busybox")
    cloud.start()
    t = Tccli(cloud, workdir / "home")

    # The real host: this machine's CPUs and memory, no GPU and why.
    host = wait_for("the local host to register",
                    lambda: next((h for h in cloud.admin("hosts") if h["kind"] == "real"), None))
    assert host["cpu_total"] == os.cpu_count()
    assert "container" in host["runtimes"]
    assert host["gpus"] == []
    assert "no NVIDIA GPU" in host["inventory"]["details"]["gpu_note"]

    imgs = t.ok("cvm", "DescribeImages", "--Filters", json.dumps([{"Name": "tag:runtime", "Values": ["container"]}]))
    assert [i["ImageId"] for i in imgs["ImageSet"]] == ["img-gc0ctr12"]
    wait_for("S5.MEDIUM4 on sale", lambda: t.ok(
        "cvm", "DescribeZoneInstanceConfigInfos", "--Filters",
        json.dumps([{"Name": "instance-type", "Values": ["S5.MEDIUM4"]}]))["InstanceTypeQuotaSet"][0]["Status"] == "SELL")

    iid = t.ok("cvm", "RunInstances", "--Placement", json.dumps({"Zone": ZONE}), "--ImageId", "img-gc0ctr12",
               "--InstanceType", "S5.MEDIUM4", "--InstanceName", "box")["InstanceIdSet"][0]
    t.ok("cvm", "DescribeInstances", "--InstanceIds", json.dumps([iid]),
         "--waiter", "{'expr':'InstanceSet[0].InstanceState','to':'RUNNING','timeout':120,'interval':1}")

    # The local agent's own /metrics, as `gpucloud agent` serves it.
    import re
    import urllib.request
    at = wait_for("the agent's metrics address in the log", lambda: re.findall(
        r"at=(127\.0\.0\.1:\d+).*serving /metrics|serving /metrics.*at=(127\.0\.0\.1:\d+)", cloud.log.read_text()))
    addr = next(a for a in at[-1] if a)
    metrics = wait_for("the agent to count the instance", lambda: (lambda m: m if re.search(
        r'^gpucloud_agent_instances\{power="running"\} 1$', m, re.M) else None)(
        urllib.request.urlopen(f"http://{addr}/metrics", timeout=5).read().decode()))
    assert "gpucloud_agent_info" in metrics
    inst = t.ok("cvm", "DescribeInstances", "--InstanceIds", json.dumps([iid]))["InstanceSet"][0]
    assert (inst["CPU"], inst["Memory"]) == (2, 4)

    # Its command agent is the runtime itself: online while it runs.
    agents = t.ok("tat", "DescribeAutomationAgentStatus", "--InstanceIds", json.dumps([iid]))["AutomationAgentSet"]
    assert [(a["InstanceId"], a["AgentStatus"], a["Environment"]) for a in agents] == [(iid, "Online", "Linux")], agents

    script = ("hostname; nproc; "
              "cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes")
    inv = t.ok("tat", "RunCommand", "--InstanceIds", json.dumps([iid]),
               "--Content", base64.b64encode(script.encode()).decode(), "--Timeout", "60")
    invocation = inv["InvocationId"]

    def task():
        r = t.ok("tat", "DescribeInvocationTasks", "--HideOutput", "False",
                 "--Filters", json.dumps([{"Name": "invocation-id", "Values": [invocation]}]))
        s = r["InvocationTaskSet"][0]
        return s if s["TaskStatus"] not in ("PENDING", "RUNNING", "DELIVERING") else None

    s = wait_for("the command to finish", task, timeout=120, interval=0.5)
    assert s["TaskStatus"] == "SUCCESS", s
    assert s["TaskResult"]["ExitCode"] == 0
    out = base64.b64decode(s["TaskResult"]["Output"]).decode().split()
    assert out == [inst["HostName"], "2", str(4 * 1024 ** 3)], out
    invs = t.ok("tat", "DescribeInvocations", "--InvocationIds", json.dumps([invocation]))
    assert invs["InvocationSet"][0]["InvocationStatus"] == "SUCCESS"
    # A failing command reports its exit code.
    inv = t.ok("tat", "RunCommand", "--InstanceIds", json.dumps([iid]),
               "--Content", base64.b64encode(b"echo oops >&2; exit 3").decode())
    invocation = inv["InvocationId"]
    s = wait_for("the failing command to finish", task, timeout=120, interval=0.5)
    assert (s["TaskStatus"], s["TaskResult"]["ExitCode"]) == ("FAILED", 3)
    assert base64.b64decode(s["TaskResult"]["Output"]).decode().strip() == "oops"

    # The command library: saved once, invoked with this run's user and
    # directory; changing the command later does not rewrite what ran.
    b64 = lambda s: base64.b64encode(s.encode()).decode()  # noqa: E731
    cmd = t.ok("tat", "CreateCommand", "--CommandName", "who-where", "--Content", b64("id -un; pwd"),
               "--Description", "who and where")["CommandId"]
    assert t.err("tat", "CreateCommand", "--CommandName", "who-where", "--Content", b64("true")) == \
        "InvalidParameterValue.CommandNameDuplicated"
    listed = t.ok("tat", "DescribeCommands", "--Filters",
                  json.dumps([{"Name": "command-name", "Values": ["who-where"]}]))["CommandSet"]
    assert [(c["CommandId"], c["CreatedBy"], c["Description"]) for c in listed] == [(cmd, "USER", "who and where")]
    invocation = t.ok("tat", "InvokeCommand", "--CommandId", cmd, "--InstanceIds", json.dumps([iid]),
                      "--Username", "nobody", "--WorkingDirectory", "/tmp")["InvocationId"]
    s = wait_for("the saved command to finish", task, timeout=120, interval=0.5)
    assert (s["TaskStatus"], s["CommandId"], base64.b64decode(s["TaskResult"]["Output"]).decode().split()) == \
        ("SUCCESS", cmd, ["nobody", "/tmp"]), s
    t.ok("tat", "ModifyCommand", "--CommandId", cmd, "--Content", b64("echo changed"))
    ran = t.ok("tat", "DescribeInvocations", "--InvocationIds", json.dumps([invocation]))["InvocationSet"][0]
    assert (base64.b64decode(ran["CommandContent"]).decode(), ran["Username"]) == ("id -un; pwd", "nobody")
    now = t.ok("tat", "DescribeCommands", "--CommandIds", json.dumps([cmd]))["CommandSet"][0]
    assert (base64.b64decode(now["Content"]).decode(), now["Username"]) == ("echo changed", "root")
    t.ok("tat", "DeleteCommand", "--CommandId", cmd)
    assert t.ok("tat", "DescribeCommands", "--CommandIds", json.dumps([cmd]))["TotalCount"] == 0
    assert t.err("tat", "InvokeCommand", "--CommandId", cmd, "--InstanceIds", json.dumps([iid])) == \
        "ResourceNotFound.CommandNotFound"
    assert t.ok("tat", "DescribeInvocations", "--InvocationIds", json.dumps([invocation]))["TotalCount"] == 1

    # ResetInstance: the writable layer goes, the image is the root again.
    invocation = t.ok("tat", "RunCommand", "--InstanceIds", json.dumps([iid]),
                      "--Content", b64("echo x > /root/marker"))["InvocationId"]
    assert wait_for("the marker", task, timeout=120, interval=0.5)["TaskStatus"] == "SUCCESS"
    t.ok("cvm", "ResetInstance", "--InstanceId", iid)
    wait_for("the reinstall", lambda: (lambda s: s["InstanceState"] == "RUNNING" and
                                       s["LatestOperationState"] == "SUCCESS")(
        t.ok("cvm", "DescribeInstances", "--InstanceIds", json.dumps([iid]))["InstanceSet"][0]),
        timeout=120, interval=0.5)
    invocation = t.ok("tat", "RunCommand", "--InstanceIds", json.dumps([iid]),
                      "--Content", b64("test -e /root/marker && echo kept || echo gone"))["InvocationId"]
    s = wait_for("the check", task, timeout=120, interval=0.5)
    assert base64.b64decode(s["TaskResult"]["Output"]).decode().strip() == "gone", s

    t.ok("cvm", "TerminateInstances", "--InstanceIds", json.dumps([iid]))
    wait_for("the instance to go", lambda: t.ok("cvm", "DescribeInstances", "--InstanceIds",
                                                 json.dumps([iid]))["TotalCount"] == 0, timeout=120)
    state = cloud.data_dir / "agent" / "container"
    wait_for("the bundle to be removed", lambda: not (state / "containers" / iid).exists(), timeout=60)
    assert not (state / "runc" / iid).exists(), "runc state left"
    assert iid not in Path("/proc/self/mountinfo").read_text(), "mount left"
    for cg in ("/sys/fs/cgroup/gpucloud", "/sys/fs/cgroup/memory/gpucloud", "/sys/fs/cgroup/cpu/gpucloud",
               "/sys/fs/cgroup/pids/gpucloud"):
        assert not (Path(cg) / iid).exists(), f"cgroup left in {cg}"
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert iid not in ps, "process left"
