"""End-to-end fixtures: a real `gpucloud up` process driven by Tencent's own
clients (tencentcloud-sdk-python and tccli, unmodified, from PyPI).

Each test gets its own data directory and port (`--listen 127.0.0.1:0`); the
endpoint is read from the credentials file that `up` writes once it listens.
"""

import json
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from tencentcloud.common import credential
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.cvm.v20170312 import cvm_client

ROOT = Path(__file__).resolve().parents[2]
BIN = os.environ.get("GPUCLOUD_BIN", str(ROOT / "target" / "debug" / "gpucloud"))
TCCLI = os.environ.get("TCCLI", str(Path(os.sys.executable).parent / "tccli"))


def wait_for(what, fn, timeout=60.0, interval=0.1):
    """Polls fn until it returns a truthy value (never sleep-and-hope)."""
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        try:
            last = fn()
            if last:
                return last
        except Exception as e:  # noqa: BLE001 - keep polling, report the last error
            last = e
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


class Cloud:
    def __init__(self, data_dir, simulate, extra=None, boot_ms=200):
        self.data_dir = Path(data_dir)
        self.simulate = simulate
        self.extra = extra or []
        self.boot_ms = boot_ms
        self.proc = None
        self.log = self.data_dir.parent / f"{self.data_dir.name}.log"

    def start(self):
        cred = self.data_dir / "credentials.json"
        if cred.exists():
            cred.unlink()
        args = [
            BIN, "up",
            "--data-dir", str(self.data_dir),
            "--listen", "127.0.0.1:0",
            "--sim-boot-ms", str(self.boot_ms),
            "--sim-stop-ms", str(max(self.boot_ms // 2, 0)),
        ]
        if self.simulate:
            args += ["--simulate", self.simulate]
        args += self.extra
        logf = open(self.log, "ab")
        self.proc = subprocess.Popen(args, stdout=logf, stderr=logf, env={**os.environ, "GPUCLOUD_LOG": "info,sqlx=warn"})
        creds = wait_for("gpucloud up to write its credentials", lambda: self._creds(cred), timeout=60)
        assert cred.stat().st_mode & 0o777 == 0o600, "credentials.json must be private (0600)"
        self.endpoint = creds["Endpoint"]
        self.secret_id = creds["SecretId"]
        self.secret_key = creds["SecretKey"]
        self.region = creds["Region"]
        self.app_id = creds["AppId"]
        return self

    def _creds(self, path):
        if self.proc.poll() is not None:
            raise AssertionError(f"gpucloud up exited with {self.proc.returncode}; log: {self.log.read_text()[-3000:]}")
        if not path.exists():
            return None
        c = json.loads(path.read_text())
        return c if c.get("Endpoint", "").rsplit(":", 1)[-1] not in ("", "0") else None

    def stop(self, sig=signal.SIGTERM):
        """Stops `up` with SIGTERM (or SIGINT): it must shut down cleanly,
        exit status 0, within 30 s."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"gpucloud up did not stop within 30 s of {sig.name}")
            assert self.proc.returncode == 0, \
                f"gpucloud up exited with {self.proc.returncode} on {sig.name}; log: {self.log.read_text()[-2000:]}"

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def admin(self, *args):
        out = subprocess.run(
            [BIN, "admin", *args, "--data-dir", str(self.data_dir), "--output", "json"],
            check=True, capture_output=True, text=True, timeout=60,
        )
        return json.loads(out.stdout)

    def tenant(self, name, quota=1000):
        out = subprocess.run(
            [BIN, "admin", "tenant", "create", name, "--data-dir", str(self.data_dir), "--output", "json", "--quota", str(quota)],
            check=True, capture_output=True, text=True, timeout=60,
        )
        return json.loads(out.stdout)

    def sdk(self, secret_id=None, secret_key=None, language="en-US", method="POST", sign_method="TC3-HMAC-SHA256"):
        cred = credential.Credential(secret_id or self.secret_id, secret_key or self.secret_key)
        host = self.endpoint.replace("http://", "")
        hp = HttpProfile(protocol="http", endpoint=host, reqMethod=method, reqTimeout=120)
        cp = ClientProfile(httpProfile=hp, language=language, signMethod=sign_method)
        return cvm_client.CvmClient(cred, self.region, cp)


@pytest.fixture
def workdir():
    with tempfile.TemporaryDirectory(prefix="gpucloud-e2e-") as d:
        yield Path(d)


@pytest.fixture
def cloud_factory(workdir):
    clouds = []

    def make(simulate, name="cloud", **kw):
        c = Cloud(workdir / name, simulate, **kw)
        clouds.append(c)
        return c

    yield make
    errors = []
    for c in clouds:
        try:
            c.stop()
        except Exception as e:  # noqa: BLE001 - stop every cloud, then report
            errors.append(e)
        finally:
            _reap_host_leftovers(c.data_dir)
    if errors:
        raise errors[0]


def _reap_host_leftovers(data_dir):
    """After a failed test, what its cloud left running on this host (VMs and
    containers outlive `up` by design) would linger into later tests: kill
    the QEMU processes and runc containers under its data directory, unmount
    what is mounted there and drop VPC namespaces nothing runs in."""
    if os.geteuid() != 0:
        return
    d = str(data_dir).rstrip("/") + "/"
    killed = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                args = (p / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if args and b"qemu-system" in args[0] and any(d.encode() in a for a in args):
                try:
                    os.kill(int(p.name), signal.SIGKILL)
                    killed.append(p)
                except OSError:
                    pass
    end = time.monotonic() + 10
    while any(p.exists() for p in killed) and time.monotonic() < end:
        time.sleep(0.05)
    runc_root = data_dir / "agent" / "runc"
    if runc_root.exists():
        ids = subprocess.run(["runc", "--root", str(runc_root), "list", "-q"],
                             capture_output=True, text=True).stdout.split()
        for i in ids:
            subprocess.run(["runc", "--root", str(runc_root), "delete", "-f", i], capture_output=True)
    mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    for m in sorted((m for m in mounts if m.startswith(d)), key=len, reverse=True):
        subprocess.run(["umount", "-l", m], capture_output=True)
    # This cloud's VPC namespaces (gcv-<vpc>), once nothing runs in them.
    import sqlite3
    db = data_dir / "gpucloud.db"
    if not db.exists():
        return
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            vpcs = [r[0] for r in conn.execute("SELECT vpc_id FROM vpcs")]
    except sqlite3.Error:
        return
    existing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
    for vpc in vpcs:
        name = "gcv-" + vpc.removeprefix("vpc-")
        if name in existing and not subprocess.run(["ip", "netns", "pids", name],
                                                   capture_output=True, text=True).stdout.strip():
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


def call(client, action, params):
    """Calls an SDK action with a JSON dict; returns the response as a dict."""
    from tencentcloud.cvm.v20170312 import models

    req = getattr(models, f"{action}Request")()
    req.from_json_string(json.dumps(params))
    resp = getattr(client, action)(req)
    return json.loads(resp.to_json_string())


def error_code(client, action, params):
    try:
        call(client, action, params)
    except TencentCloudSDKException as e:
        return e.get_code()
    return "OK"


class Tccli:
    """tccli with its own HOME and a profile pointing at the cloud."""

    def __init__(self, cloud, home, secret_id=None, secret_key=None, profile="gpucloud", printed=False):
        """printed=True runs the `tccli configure set …` line `up` printed,
        exactly as a person would paste it."""
        self.home = Path(home)
        self.home.mkdir(parents=True, exist_ok=True)
        self.profile = profile
        self.env = {**os.environ, "HOME": str(self.home)}
        for k in ("TENCENTCLOUD_SECRET_ID", "TENCENTCLOUD_SECRET_KEY", "TENCENTCLOUD_REGION"):
            self.env.pop(k, None)
        if printed:
            import shlex
            lines = [line for line in cloud.log.read_text().splitlines() if line.strip().startswith("tccli configure set ")]
            assert lines, "gpucloud up printed no `tccli configure set` line"
            argv = shlex.split(lines[-1])
            assert argv[argv.index("--profile") + 1] == profile
            subprocess.run([TCCLI, *argv[1:]], check=True, env=self.env, capture_output=True, timeout=120)
            return
        subprocess.run(
            [TCCLI, "configure", "set",
             "secretId", secret_id or cloud.secret_id,
             "secretKey", secret_key or cloud.secret_key,
             "region", cloud.region,
             "cvm.endpoint", cloud.endpoint,
             "tat.endpoint", cloud.endpoint,
             "--profile", profile],
            check=True, env=self.env, capture_output=True, timeout=120,
        )

    def run(self, *args, env=None):
        p = subprocess.run(
            [TCCLI, *args, "--profile", self.profile, "--language", "en-US"],
            env={**self.env, **(env or {})}, capture_output=True, text=True, timeout=300,
        )
        return p

    def ok(self, *args):
        p = self.run(*args)
        assert p.returncode == 0, f"tccli {' '.join(args)} failed: {p.stderr}"
        return json.loads(p.stdout)

    def err(self, *args, env=None):
        p = self.run(*args, env=env)
        assert p.returncode != 0, f"tccli {' '.join(args)} unexpectedly succeeded: {p.stdout}"
        # [TencentCloudSDKException] code:InvalidInstanceId.NotFound message:... requestId:...
        text = p.stderr + p.stdout
        assert "code:" in text, text
        return text.split("code:", 1)[1].split()[0]
