"""A real cloud image on gpucloud: Debian 12 with systemd and stock cloud-init
(images/cloud/build.sh makes it from Debian's packages the way Debian's
genericcloud image is made), booted through firmware, configured only by the
NoCloud seed gpucloud writes. `gpucloud image import` registers the qcow2.

Proves that the seed works unchanged with real cloud-init: the host name,
the static network, root's SSH key, the user data script, growing the root
file system to the system disk's size; and that TAT, a soft stop (ACPI →
systemd) and a start work on an image gpucloud did not build for itself.

Slow under TCG (systemd and cloud-init's Python on an emulated CPU): about two
minutes per boot here.
"""

import base64
import json
import subprocess
import time

from conftest import BIN, Tccli, wait_for
from test_vm import ZONE, _image, _netns, _prerequisites, _qemu_of, _run_command, _ssh, _state

CLOUD_IMAGE = "img-deb12cld"


def test_a_debian_cloud_image_with_stock_cloud_init(cloud_factory, workdir):
    _prerequisites()
    src = _image("cloud")
    cloud = cloud_factory(None, name="cloudimg")
    cloud.start()
    # The operator's path for a downloaded cloud image: `gpucloud image import
    # FILE`, while the cloud runs.
    imp = subprocess.run(
        [BIN, "image", "import", str(src / "disk.qcow2"), "--id", CLOUD_IMAGE,
         "--name", "Debian 12 cloud", "--os-name", "Debian GNU/Linux 12 (bookworm)",
         "--platform", "Debian", "--data-dir", str(cloud.data_dir), "--output", "json"],
        capture_output=True, text=True, timeout=300)
    assert imp.returncode == 0, imp.stderr
    row = json.loads(imp.stdout)
    assert (row["image_id"], row["runtime"], row["location"]) == (CLOUD_IMAGE, "qemu", f"{CLOUD_IMAGE}/disk.qcow2"), row
    t = Tccli(cloud, workdir / "home")

    imgs = t.ok("cvm", "DescribeImages", "--ImageIds", json.dumps([CLOUD_IMAGE]))["ImageSet"]
    assert [(i["ImageId"], i["Platform"]) for i in imgs] == [(CLOUD_IMAGE, "Debian")]
    assert {"Key": "runtime", "Value": "qemu"} in imgs[0]["Tags"]
    wait_for("the local host to offer VMs", lambda: next(
        (h for h in cloud.admin("hosts") if h["kind"] == "real" and "qemu" in h["runtimes"]), None))

    key = t.ok("cvm", "CreateKeyPair", "--KeyName", "cloudkey", "--ProjectId", "0")["KeyPair"]
    key_file = workdir / "cloudkey"
    key_file.write_text(key["PrivateKey"])
    key_file.chmod(0o600)
    user_data = base64.b64encode(b"#!/bin/sh\necho made-by-user-data > /root/user-data.txt\n").decode()

    started = time.monotonic()
    iid = t.ok("cvm", "RunInstances", "--Placement", json.dumps({"Zone": ZONE}), "--ImageId", CLOUD_IMAGE,
               "--InstanceType", "S5.SMALL2", "--InstanceName", "debian-cloud",
               "--SystemDisk", json.dumps({"DiskType": "CLOUD_PREMIUM", "DiskSize": 20}),
               "--LoginSettings", json.dumps({"KeyIds": [key["KeyId"]]}),
               "--UserData", user_data)["InstanceIdSet"][0]
    # A second instance logs in with a password instead (cloud-init's
    # chpasswd for root and the sshd drop-in from the seed's vendor-data).
    password = "Gpu-Cloud-2026x"
    pid = t.ok("cvm", "RunInstances", "--Placement", json.dumps({"Zone": ZONE}), "--ImageId", CLOUD_IMAGE,
               "--InstanceType", "S5.SMALL2", "--InstanceName", "debian-password",
               "--LoginSettings", json.dumps({"Password": password}))["InstanceIdSet"][0]
    wait_for("the VM to run", lambda: _state(t, iid)["InstanceState"] == "RUNNING", timeout=600, interval=1)
    to_running = time.monotonic() - started
    inst = _state(t, iid)
    ip = inst["PrivateIpAddresses"][0]
    ns = "gcv-" + inst["VirtualPrivateCloud"]["VpcId"].removeprefix("vpc-")

    probe = ("hostname; nproc; cloud-init status --wait | tail -1 | tr -d ' '; cat /root/user-data.txt; "
             "df -B1G --output=size / | tail -1; ip -4 -o addr show dev eth0 | awk '{print $4}'; "
             "ip route show default | awk '{print $3}'")

    def ssh_ready():
        r = _ssh(ns, key_file, ip, probe, timeout=300)
        return r.stdout if r.returncode == 0 else None

    out = wait_for("SSH into the VM as root", ssh_ready, timeout=600, interval=2).split()
    to_ssh = time.monotonic() - started
    print(f"cloud image: request -> RUNNING {to_running:.1f} s, request -> SSH as root {to_ssh:.1f} s")
    assert out[0] == inst["HostName"], out
    assert out[1] == "1", out
    assert out[2] == "status:done", f"cloud-init must finish without errors: {out}"
    assert out[3] == "made-by-user-data", out
    assert int(out[4]) >= 18, f"growpart should have grown / to the 20 GB system disk: {out}"
    assert out[5].split("/")[0] == ip, out
    gw = out[6]
    assert gw.rsplit(".", 1)[0] == ip.rsplit(".", 1)[0], out

    # Root's password, over SSH, on the second instance; then it goes.
    wait_for("the password VM to run", lambda: _state(t, pid)["InstanceState"] == "RUNNING", timeout=600, interval=1)
    pinst = _state(t, pid)

    def password_login(password=password):
        r = subprocess.run(
            ["nsenter", f"--net=/run/netns/{ns}", "sshpass", "-p", password, "ssh",
             "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
             "-o", "PreferredAuthentications=password", "-o", "PubkeyAuthentication=no",
             "-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR",
             f"root@{pinst['PrivateIpAddresses'][0]}", "cloud-init status --wait | tail -1 | tr -d ' '; hostname"],
            capture_output=True, text=True, timeout=300)
        return r.stdout.split() if r.returncode == 0 else None

    assert wait_for("root to log in with the password", password_login, timeout=600, interval=2) == \
        ["status:done", pinst["HostName"]]
    # A new password on the running instance (ForceStop restarts it):
    # cloud-init sets passwords once per instance, the guest agent sets it.
    new_password = "Gpu-Cloud-2027y"
    t.ok("cvm", "ResetInstancesPassword", "--InstanceIds", json.dumps([pid]), "--Password", new_password,
         "--ForceStop", "True")
    wait_for("the password VM to restart", lambda: (lambda s: s["InstanceState"] == "RUNNING" and
                                                    s["LatestOperationState"] == "SUCCESS")(_state(t, pid)),
             timeout=600, interval=1)
    assert wait_for("root to log in with the new password", lambda: password_login(new_password),
                    timeout=600, interval=2) == ["status:done", pinst["HostName"]]
    assert password_login(password) is None, "the old password must no longer work"
    t.ok("cvm", "TerminateInstances", "--InstanceIds", json.dumps([pid]))

    # TAT through the image's own qemu-guest-agent.
    s = _run_command(t, iid, ". /etc/os-release; echo $VERSION_CODENAME; id -un", timeout=180)
    assert s["TaskStatus"] == "SUCCESS", s
    assert base64.b64decode(s["TaskResult"]["Output"]).decode().split() == ["bookworm", "root"]

    # Soft stop: systemd shuts the guest down on the ACPI button / guest agent.
    t.ok("cvm", "StopInstances", "--InstanceIds", json.dumps([iid]), "--StopType", "SOFT")
    wait_for("the VM to stop", lambda: _state(t, iid)["InstanceState"] == "STOPPED", timeout=300, interval=1)
    assert _qemu_of(iid) == []

    # While it is stopped, the tenant swaps its key pair. Cloud-init applies
    # keys once per instance; gpucloud's agent brings them over through the
    # guest agent at the next boot.
    key2 = t.ok("cvm", "CreateKeyPair", "--KeyName", "cloudkey2", "--ProjectId", "0")["KeyPair"]
    key2_file = workdir / "cloudkey2"
    key2_file.write_text(key2["PrivateKey"])
    key2_file.chmod(0o600)
    t.ok("cvm", "AssociateInstancesKeyPairs", "--InstanceIds", json.dumps([iid]), "--KeyIds", json.dumps([key2["KeyId"]]))
    t.ok("cvm", "DisassociateInstancesKeyPairs", "--InstanceIds", json.dumps([iid]), "--KeyIds", json.dumps([key["KeyId"]]))
    assert _state(t, iid)["LoginSettings"]["KeyIds"] == [key2["KeyId"]]

    # Start: same host name, same address, the user data did not run again
    # (cloud-init keeps per-instance state on the disk); the new key logs in,
    # the old one no longer does.
    t.ok("cvm", "StartInstances", "--InstanceIds", json.dumps([iid]))
    wait_for("the VM to run again", lambda: _state(t, iid)["InstanceState"] == "RUNNING", timeout=600, interval=1)
    again = wait_for("SSH with the new key after the restart", lambda: (lambda r: r.stdout if r.returncode == 0 else None)(
        _ssh(ns, key2_file, ip, "hostname; ls /root; cloud-init status --wait >/dev/null; echo ok", timeout=300)),
        timeout=600, interval=2).split()
    assert again == [inst["HostName"], "user-data.txt", "ok"], again
    old = _ssh(ns, key_file, ip, "true", timeout=60)
    assert old.returncode != 0, "the disassociated key must no longer log in"

    vm_dir = cloud.data_dir / "agent" / "qemu" / "vms" / iid
    t.ok("cvm", "TerminateInstances", "--InstanceIds", json.dumps([iid]))
    wait_for("the instance to go", lambda: t.ok("cvm", "DescribeInstances", "--InstanceIds",
                                                 json.dumps([iid]))["TotalCount"] == 0, timeout=300)
    wait_for("the VM directory to go", lambda: not vm_dir.exists(), timeout=60)
    assert _qemu_of(iid) == []
    assert ns not in _netns(), "VPC namespace left"
