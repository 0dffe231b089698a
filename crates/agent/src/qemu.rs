//! The `qemu` runtime: instances as virtual machines run by Debian's
//! `qemu-system-x86_64`.
//!
//! Each VM lives in `<state>/vms/<instance-id>/`: the spec it was last given
//! (`vm.json`, 0600: it holds the login password), a qcow2 overlay on the
//! image's base (`system.qcow2`), data disks (`data-N.qcow2`), the cloud-init
//! NoCloud seed (`seed.iso`, labelled `cidata`, rewritten at every start so key
//! and host-name changes reach the guest), and QEMU's sockets: QMP
//! (`qmp.sock`), the QEMU guest agent on virtio-serial (`qga.sock`) and the
//! serial console (`serial.sock`, mirrored to `console.log`).
//!
//! QEMU is started with `-daemonize`, so it outlives the agent: a restarted
//! agent finds it again through `qemu.pid` and the process's command line
//! (adoption). Acceleration is KVM only when a probe guest really runs under
//! it (see [`crate::doctor::probe_guest`]); otherwise TCG, and the host's
//! details say why.
//!
//! A VM is `RUNNING` once its guest agent answers `guest-ping` or the console
//! shows this boot's login prompt (cloud images without a guest agent) — not
//! merely once QEMU runs. Soft stops ask the guest agent to power off, else press the ACPI power
//! button; `SOFT_FIRST` pulls the plug after a timeout. Commands (TAT) run
//! through the guest agent's `guest-exec`.
//!
//! Network: every VPC gets its own network namespace on the host
//! (`gcv-<vpc>`) holding a bridge with the subnet gateway's address; each VM
//! gets a tap in that bridge and QEMU runs inside the namespace. Tenants'
//! overlapping default subnets therefore never meet, and the host reaches a
//! VM from the VPC's namespace (`ip netns exec gcv-… ssh …`). Security groups
//! and routing between VPCs hook in at this bridge.
//!
//! GPUs are passed through with VFIO ([`crate::vfio`]): the whole IOMMU group
//! of each GPU is bound to `vfio-pci` before QEMU starts and given back to its
//! driver when the VM stops. What was bound is kept in `vfio.json`, so an
//! agent that crashed in between still gives the devices back.

use crate::runtime::{ExecOutput, ExecRequest, Power, Runtime, RuntimeError, StopType};
use crate::vfio::{self, Assignment, Vfio};
use base64::Engine as _;
use gpucloud_agent_api::{InstanceSpec, RuntimeKind};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::process::Command;

/// Which accelerator to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccelChoice {
    /// KVM when a probe guest runs under it, else TCG.
    Auto,
    /// Always KVM.
    Kvm,
    /// Always TCG (software emulation).
    Tcg,
}

impl std::str::FromStr for AccelChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "kvm" => Ok(Self::Kvm),
            "tcg" => Ok(Self::Tcg),
            other => Err(format!("`{other}` is not one of auto, kvm, tcg")),
        }
    }
}

/// The accelerator chosen, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccelVerdict {
    /// `kvm` or `tcg`.
    pub accel: String,
    /// Why, for a person.
    pub why: String,
}

/// How to run VMs on this host.
#[derive(Debug, Clone)]
pub struct QemuConfig {
    /// `qemu-system-x86_64`.
    pub qemu_bin: PathBuf,
    /// `qemu-img`.
    pub qemu_img: PathBuf,
    /// `genisoimage` (seed ISOs).
    pub iso_bin: PathBuf,
    /// Where VM directories live.
    pub state_dir: PathBuf,
    /// Where image files are found (image locations are relative to it).
    pub images_dir: PathBuf,
    /// Accelerator.
    pub accel: AccelChoice,
    /// Longest wait for a guest to come up.
    pub boot_timeout: Duration,
    /// Longest wait for a soft stop.
    pub stop_timeout: Duration,
}

/// Boot facts of a VM image, from the `image.json` next to its disk.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct VmImage {
    /// Kernel booted directly (relative to the manifest), if any.
    #[serde(default)]
    pub kernel: Option<String>,
    /// Initial RAM disk for the kernel.
    #[serde(default)]
    pub initrd: Option<String>,
    /// Kernel command line.
    #[serde(default)]
    pub cmdline: Option<String>,
    /// Whether the image runs the QEMU guest agent (default: yes; `false`
    /// skips asking it, readiness is then the console login prompt alone).
    #[serde(default = "yes")]
    pub guest_agent: bool,
}

fn yes() -> bool {
    true
}

/// The qemu runtime.
pub struct QemuRuntime {
    cfg: QemuConfig,
    verdict: Arc<OnceLock<AccelVerdict>>,
    vfio: Arc<Vfio>,
    /// One guest-agent conversation at a time per VM (the socket takes one client).
    qga_locks: crate::runtime::InstanceLocks,
    /// Network namespace and bridge changes, one at a time.
    net_lock: tokio::sync::Mutex<()>,
    /// Launches and removals of one VM never overlap.
    launches: crate::runtime::InstanceLocks,
}

fn err(what: &str, e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::new(format!("{what}: {e}"))
}

/// Why QEMU cannot run VMs here, or `Ok` with its version.
pub fn available(qemu_bin: &Path, qemu_img: &Path, iso_bin: &Path) -> Result<String, String> {
    for (b, pkg) in [
        (qemu_bin, "qemu-system-x86"),
        (qemu_img, "qemu-utils"),
        (iso_bin, "genisoimage"),
    ] {
        if !b.is_file() {
            return Err(format!(
                "{} is not installed (apt-get install {pkg})",
                b.display()
            ));
        }
    }
    if !Path::new("/dev/net/tun").exists() {
        return Err("/dev/net/tun is missing: VMs need tap devices (modprobe tun)".into());
    }
    let out = std::process::Command::new(qemu_bin)
        .arg("--version")
        .output()
        .map_err(|e| format!("cannot run {}: {e}", qemu_bin.display()))?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_string())
}

/// A locally administered MAC address derived from the instance ID.
pub fn mac_for(instance_id: &str) -> String {
    use sha2::Digest;
    let h = sha2::Sha256::digest(instance_id.as_bytes());
    format!("52:54:00:{:02x}:{:02x}:{:02x}", h[0], h[1], h[2])
}

/// The tap device of an instance (15 characters at most).
pub fn tap_name(instance_id: &str) -> String {
    let s = instance_id.trim_start_matches("ins-");
    format!("gct{}", &s[..s.len().min(12)])
}

/// The network namespace of a VPC.
pub fn netns_name(vpc_id: &str) -> String {
    let v = vpc_id.trim_start_matches("vpc-");
    if v.is_empty() {
        "gcv-default".into()
    } else {
        format!("gcv-{v}")
    }
}

/// The bridge inside every VPC namespace.
pub const BRIDGE: &str = "gcbr0";

fn yaml_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// An SSH public key reduced to `type base64` (the comment may hold YAML
/// syntax, and the guest needs only the key).
fn key_material(k: &str) -> Option<String> {
    let mut parts = k.split_whitespace();
    let ty = parts.next()?;
    let body = parts.next()?;
    let ok = |s: &str| {
        s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "+/=-@.".contains(c))
    };
    let known = ["ssh-", "ecdsa-", "sk-"].iter().any(|p| ty.starts_with(p));
    (known && ok(ty) && ok(body) && body.len() >= 16).then(|| format!("{ty} {body}"))
}

/// What to change in a guest's `authorized_keys`: the wanted keys gpucloud
/// has not added yet, and the keys it added earlier that are no longer
/// wanted. A key the tenant deleted by hand after gpucloud added it stays
/// deleted until it is associated again.
pub fn key_changes(applied: &[String], desired: &[String]) -> (Vec<String>, Vec<String>) {
    let pick = |from: &[String], not_in: &[String]| {
        let mut v: Vec<String> = Vec::new();
        for k in from {
            if !not_in.contains(k) && !v.contains(k) {
                v.push(k.clone());
            }
        }
        v
    };
    (pick(desired, applied), pick(applied, desired))
}

/// The four files of the cloud-init NoCloud seed, as `(name, content)`.
pub fn seed_files(spec: &InstanceSpec) -> Vec<(&'static str, Vec<u8>)> {
    let mut meta = format!(
        "instance-id: {}\nlocal-hostname: {}\n",
        spec.instance_id, spec.hostname
    );
    let keys: Vec<String> = spec
        .ssh_keys
        .iter()
        .filter_map(|k| key_material(k))
        .collect();
    if !keys.is_empty() {
        meta.push_str("public-keys:\n");
        for k in keys {
            meta.push_str(&format!("  - {k}\n"));
        }
    }
    // Login settings are root's, as on every gpucloud Linux image. Stock
    // cloud-init gives the meta-data keys to the image's default user and to
    // root, but fences root off unless `disable_root` is false; a password
    // goes to root through `chpasswd.users` (cloud-init 22.3+), and sshd must
    // then let root log in with it (Debian's default is keys only), ahead of
    // an image's own drop-ins that turn passwords off (Ubuntu's 60-…).
    let mut vendor = String::from("#cloud-config\ndisable_root: false\n");
    if let Some(p) = &spec.password {
        vendor.push_str(&format!(
            "ssh_pwauth: true\nchpasswd:\n  expire: false\n  users:\n    - name: root\n      type: text\n      password: {}\nwrite_files:\n  - path: /etc/ssh/sshd_config.d/50-gpucloud-root-login.conf\n    permissions: \"0644\"\n    content: \"PermitRootLogin yes\\nPasswordAuthentication yes\\n\"\n",
            yaml_quote(p)
        ));
    }
    let user = spec
        .user_data
        .as_deref()
        .and_then(|u| base64::engine::general_purpose::STANDARD.decode(u).ok())
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| b"#cloud-config\n{}\n".to_vec());
    let mut files = vec![
        ("meta-data", meta.into_bytes()),
        ("vendor-data", vendor.into_bytes()),
        ("user-data", user),
    ];
    if let Some(nic) = &spec.nic {
        let len = nic.cidr.split_once('/').map_or("24", |(_, l)| l);
        let gw = gateway_of(&nic.cidr).unwrap_or_default();
        files.push((
            "network-config",
            format!(
                "version: 2\nethernets:\n  eth0:\n    match:\n      macaddress: \"{}\"\n    set-name: eth0\n    addresses:\n      - {}/{}\n    gateway4: {}\n",
                mac_for(&spec.instance_id),
                nic.ip,
                len,
                gw
            )
            .into_bytes(),
        ));
    }
    files
}

/// The gateway (first usable address) of a CIDR.
pub fn gateway_of(cidr: &str) -> Option<String> {
    let (ip, len) = cidr.split_once('/')?;
    let ip: std::net::Ipv4Addr = ip.parse().ok()?;
    let len: u32 = len.parse().ok().filter(|l| *l <= 30)?;
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    Some(std::net::Ipv4Addr::from((u32::from(ip) & mask) + 1).to_string())
}

/// Everything QEMU is started with, for [`qemu_args`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    /// Instance ID.
    pub id: String,
    /// `kvm` or `tcg`.
    pub accel: String,
    /// vCPUs.
    pub cpus: u32,
    /// Memory, MiB.
    pub memory_mib: u64,
    /// The VM's directory.
    pub dir: PathBuf,
    /// Direct kernel boot: kernel, initrd, command line.
    pub kernel: Option<(PathBuf, Option<PathBuf>, String)>,
    /// Data disk files, in order.
    pub data_disks: Vec<PathBuf>,
    /// Tap device and MAC address.
    pub nic: Option<(String, String)>,
    /// Host NUMA node to bind guest memory to.
    pub numa_node: Option<u32>,
    /// VFIO arguments ([`vfio::qemu_args`]).
    pub vfio: Vec<String>,
}

/// QEMU's arguments for a VM.
pub fn qemu_args(l: &Launch) -> Vec<String> {
    let d = |f: &str| l.dir.join(f).display().to_string();
    let mut a: Vec<String> = Vec::new();
    let mut push = |xs: &[&str]| a.extend(xs.iter().map(|s| s.to_string()));
    push(&["-name", &format!("{},process=qemu-{}", l.id, l.id)]);
    push(&["-machine", "q35", "-accel", &l.accel]);
    push(&["-cpu", if l.accel == "kvm" { "host" } else { "max" }]);
    push(&["-smp", &l.cpus.max(1).to_string()]);
    match l.numa_node {
        Some(n) => push(&[
            "-object",
            &format!(
                "memory-backend-ram,id=mem0,size={}M,host-nodes={n},policy=bind",
                l.memory_mib
            ),
            "-machine",
            "memory-backend=mem0",
            "-m",
            &format!("{}M", l.memory_mib),
        ]),
        None => push(&["-m", &format!("{}M", l.memory_mib)]),
    }
    push(&["-nodefaults", "-no-user-config", "-display", "none"]);
    // seccomp: no obsolete system calls, and no scheduler or memory-policy
    // changes unless the VM is NUMA-bound (that needs mbind). Spawning stays
    // allowed for -daemonize.
    push(&[
        "-sandbox",
        if l.numa_node.is_some() {
            "on,obsolete=deny"
        } else {
            "on,obsolete=deny,resourcecontrol=deny"
        },
    ]);
    if let Some((k, initrd, cmdline)) = &l.kernel {
        push(&["-kernel", &k.display().to_string(), "-append", cmdline]);
        if let Some(i) = initrd {
            push(&["-initrd", &i.display().to_string()]);
        }
    }
    push(&[
        "-drive",
        &format!("if=none,id=disk0,file={},format=qcow2", d("system.qcow2")),
        "-device",
        // Firmware boots the system disk; a direct kernel boot needs no boot order.
        if l.kernel.is_some() {
            "virtio-blk-pci,drive=disk0"
        } else {
            "virtio-blk-pci,drive=disk0,bootindex=0"
        },
    ]);
    for (i, p) in l.data_disks.iter().enumerate() {
        push(&[
            "-drive",
            &format!("if=none,id=disk{},file={},format=qcow2", i + 1, p.display()),
            "-device",
            &format!("virtio-blk-pci,drive=disk{}", i + 1),
        ]);
    }
    push(&[
        "-drive",
        &format!(
            "if=none,id=seed,file={},format=raw,readonly=on",
            d("seed.iso")
        ),
        "-device",
        "virtio-blk-pci,drive=seed",
    ]);
    match &l.nic {
        Some((tap, mac)) => push(&[
            "-netdev",
            &format!("tap,id=net0,ifname={tap},script=no,downscript=no"),
            "-device",
            &format!("virtio-net-pci,netdev=net0,mac={mac}"),
        ]),
        None => push(&["-nic", "none"]),
    }
    push(&[
        "-chardev",
        &format!(
            "socket,id=ser0,path={},server=on,wait=off,logfile={},logappend=on",
            d("serial.sock"),
            d("console.log")
        ),
        "-serial",
        "chardev:ser0",
        "-device",
        "virtio-serial-pci",
        "-chardev",
        &format!("socket,id=qga0,path={},server=on,wait=off", d("qga.sock")),
        "-device",
        "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0",
        "-qmp",
        &format!("unix:{},server=on,wait=off", d("qmp.sock")),
        "-pidfile",
        &d("qemu.pid"),
        "-daemonize",
    ]);
    a.extend(l.vfio.iter().cloned());
    a
}

/// Reads one JSON line, skipping QMP events.
async fn read_reply(
    lines: &mut tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>,
) -> Result<serde_json::Value, String> {
    loop {
        let line = lines
            .next_line()
            .await
            .map_err(|e| e.to_string())?
            .ok_or("the socket closed")?;
        let v: serde_json::Value = match serde_json::from_str(line.trim()) {
            Ok(v) => v,
            Err(_) => continue,
        };
        if v.get("event").is_some() || v.get("QMP").is_some() {
            continue;
        }
        return Ok(v);
    }
}

fn answer(v: serde_json::Value) -> Result<serde_json::Value, String> {
    if let Some(e) = v.get("error") {
        return Err(e
            .get("desc")
            .and_then(|d| d.as_str())
            .unwrap_or("error")
            .to_string());
    }
    Ok(v.get("return").cloned().unwrap_or(serde_json::Value::Null))
}

/// One QMP command.
pub async fn qmp(
    sock: &Path,
    execute: &str,
    arguments: Option<serde_json::Value>,
) -> Result<serde_json::Value, String> {
    let go = async {
        let s = UnixStream::connect(sock).await.map_err(|e| e.to_string())?;
        let (r, mut w) = s.into_split();
        let mut lines = BufReader::new(r).lines();
        // Greeting, then capabilities negotiation.
        lines.next_line().await.map_err(|e| e.to_string())?;
        w.write_all(b"{\"execute\":\"qmp_capabilities\"}\n")
            .await
            .map_err(|e| e.to_string())?;
        answer(read_reply(&mut lines).await?)?;
        let mut cmd = serde_json::json!({ "execute": execute });
        if let Some(a) = arguments {
            cmd["arguments"] = a;
        }
        w.write_all(format!("{cmd}\n").as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        answer(read_reply(&mut lines).await?)
    };
    tokio::time::timeout(Duration::from_secs(10), go)
        .await
        .map_err(|_| "QMP did not answer within 10 s".to_string())?
}

/// One guest-agent command, after a `guest-sync` that drops stale replies.
/// `expect_reply = false` for commands that answer nothing on success
/// (`guest-shutdown`).
pub async fn qga(
    sock: &Path,
    execute: &str,
    arguments: Option<serde_json::Value>,
    timeout: Duration,
    expect_reply: bool,
) -> Result<serde_json::Value, String> {
    let go = async {
        let s = UnixStream::connect(sock).await.map_err(|e| e.to_string())?;
        let (r, mut w) = s.into_split();
        let mut lines = BufReader::new(r).lines();
        let id: u32 = rand::random::<u32>() & 0x7fff_ffff;
        // 0xFF makes the guest agent drop a half-read request.
        w.write_all(&[0xff]).await.map_err(|e| e.to_string())?;
        w.write_all(
            format!("{{\"execute\":\"guest-sync\",\"arguments\":{{\"id\":{id}}}}}\n").as_bytes(),
        )
        .await
        .map_err(|e| e.to_string())?;
        loop {
            let v = read_reply(&mut lines).await?;
            if v.get("return").and_then(|r| r.as_u64()) == Some(u64::from(id)) {
                break;
            }
        }
        let mut cmd = serde_json::json!({ "execute": execute });
        if let Some(a) = arguments {
            cmd["arguments"] = a;
        }
        w.write_all(format!("{cmd}\n").as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        if !expect_reply {
            return Ok(serde_json::Value::Null);
        }
        answer(read_reply(&mut lines).await?)
    };
    tokio::time::timeout(timeout, go)
        .await
        .map_err(|_| format!("the guest agent did not answer within {timeout:?}"))?
}

fn pid_alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                // A zombie is gone for our purposes.
                s.rsplit_once(')')
                    .map(|(_, r)| !r.trim_start().starts_with('Z'))
                    .unwrap_or(true)
            })
            .unwrap_or(false)
}

fn kill(pid: i32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
}

async fn run_ok(cmd: &mut Command, what: &str) -> Result<String, RuntimeError> {
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| err(what, e))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).to_string())
    } else {
        Err(RuntimeError::new(format!(
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

fn write_private(path: &Path, data: &[u8]) -> Result<(), RuntimeError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| err(&format!("writing {}", tmp.display()), e))?;
    f.write_all(data)
        .and_then(|_| f.sync_all())
        .map_err(|e| err(&format!("writing {}", tmp.display()), e))?;
    std::fs::rename(&tmp, path).map_err(|e| err(&format!("writing {}", path.display()), e))
}

/// The host NUMA node to bind a GPU VM to: the node of its GPUs when they
/// share one and the host has several nodes.
pub fn numa_node_for(sysfs: &Path, gpus: &[String]) -> Option<u32> {
    let nodes = std::fs::read_dir(sysfs.join("devices/system/node"))
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    let n = e.file_name().to_string_lossy().to_string();
                    n.starts_with("node") && n[4..].parse::<u32>().is_ok()
                })
                .count()
        })
        .unwrap_or(0);
    if nodes < 2 || gpus.is_empty() {
        return None;
    }
    let mut found: Option<u32> = None;
    for g in gpus {
        let n: i64 =
            std::fs::read_to_string(sysfs.join("bus/pci/devices").join(g).join("numa_node"))
                .ok()?
                .trim()
                .parse()
                .ok()?;
        let n = u32::try_from(n).ok()?;
        match found {
            Some(f) if f != n => return None,
            _ => found = Some(n),
        }
    }
    found
}

/// The CPUs of a host NUMA node (`0-15,32-47`), from sysfs.
pub fn node_cpulist(sysfs: &Path, node: u32) -> Option<String> {
    let l = std::fs::read_to_string(sysfs.join(format!("devices/system/node/node{node}/cpulist")))
        .ok()?;
    let l = l.trim();
    (!l.is_empty()
        && l.chars()
            .all(|c| c.is_ascii_digit() || c == '-' || c == ','))
    .then(|| l.to_string())
}

impl QemuRuntime {
    /// A runtime; with [`AccelChoice::Auto`] the KVM probe runs in the
    /// background (its verdict is cached in the state directory).
    pub fn new(mut cfg: QemuConfig, vfio: Vfio) -> Self {
        // QEMU -daemonize changes directory to `/`: every path it gets must
        // be absolute, whatever --data-dir the operator gave.
        for p in [&mut cfg.state_dir, &mut cfg.images_dir] {
            if let Ok(abs) = std::path::absolute(&*p) {
                *p = abs;
            }
        }
        let verdict = Arc::new(OnceLock::new());
        match cfg.accel {
            AccelChoice::Tcg => {
                let _ = verdict.set(AccelVerdict {
                    accel: "tcg".into(),
                    why: "TCG chosen by the operator (--vm-accel tcg)".into(),
                });
            }
            AccelChoice::Kvm => {
                let _ = verdict.set(AccelVerdict {
                    accel: "kvm".into(),
                    why: "KVM chosen by the operator (--vm-accel kvm)".into(),
                });
            }
            AccelChoice::Auto => {
                let v = verdict.clone();
                let qemu = cfg.qemu_bin.clone();
                let cache = cfg.state_dir.join("accel.json");
                let _ = std::thread::Builder::new()
                    .name("kvm-probe".into())
                    .spawn(move || {
                        let _ = v.set(probe_accel(&qemu, &cache));
                    });
            }
        }
        Self {
            cfg,
            verdict,
            vfio: Arc::new(vfio),
            qga_locks: Default::default(),
            net_lock: tokio::sync::Mutex::new(()),
            launches: Default::default(),
        }
    }

    /// The accelerator verdict, once the probe has finished.
    pub fn verdict(&self) -> Option<AccelVerdict> {
        self.verdict.get().cloned()
    }

    /// Where the verdict appears (for the host's details).
    pub fn verdict_cell(&self) -> Arc<OnceLock<AccelVerdict>> {
        self.verdict.clone()
    }

    async fn accel(&self) -> AccelVerdict {
        loop {
            if let Some(v) = self.verdict.get() {
                return v.clone();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Where the VMs of a runtime with this state directory live.
    pub fn instances_dir(state_dir: &Path) -> PathBuf {
        state_dir.join("vms")
    }

    fn dir(&self, id: &str) -> PathBuf {
        Self::instances_dir(&self.cfg.state_dir).join(id)
    }

    fn qga_lock(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.qga_locks.handle(id)
    }

    /// The running QEMU of an instance.
    /// Where the running boot's output starts in `console.log`.
    fn console_from(&self, id: &str) -> u64 {
        std::fs::read_to_string(self.dir(id).join("console.from"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    fn pid(&self, id: &str) -> Option<i32> {
        let pid: i32 = std::fs::read_to_string(self.dir(id).join("qemu.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let wanted = format!("{},process=qemu-{}", id, id);
        let ours = cmdline.split(|b| *b == 0).any(|a| a == wanted.as_bytes());
        (ours && pid_alive(pid)).then_some(pid)
    }

    fn load_spec(&self, id: &str) -> Option<InstanceSpec> {
        serde_json::from_slice(&std::fs::read(self.dir(id).join("vm.json")).ok()?).ok()
    }

    fn image_paths(&self, spec: &InstanceSpec) -> Result<(PathBuf, VmImage), RuntimeError> {
        let loc = Path::new(&spec.image.location);
        let base = if loc.is_absolute() {
            loc.to_path_buf()
        } else {
            self.cfg.images_dir.join(loc)
        };
        if !base.is_file() {
            return Err(RuntimeError::new(format!(
                "image {} is not on this host (no {}): build it with images/vm/build.sh or import it with `gpucloud image import`",
                spec.image.image_id,
                base.display()
            )));
        }
        let manifest = base.parent().map(|d| d.join("image.json"));
        let image: VmImage = manifest
            .and_then(|m| std::fs::read(m).ok())
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(VmImage {
                guest_agent: true,
                ..Default::default()
            });
        Ok((base, image))
    }

    async fn write_seed(&self, spec: &InstanceSpec) -> Result<(), RuntimeError> {
        let dir = self.dir(&spec.instance_id);
        let seed = dir.join("seed");
        let _ = tokio::fs::remove_dir_all(&seed).await;
        tokio::fs::create_dir_all(&seed)
            .await
            .map_err(|e| err("creating the seed directory", e))?;
        set_mode(&seed, 0o700);
        for (name, data) in seed_files(spec) {
            write_private(&seed.join(name), &data)?;
        }
        let iso = dir.join("seed.iso");
        run_ok(
            Command::new(&self.cfg.iso_bin)
                .args(["-quiet", "-output"])
                .arg(&iso)
                .args(["-volid", "cidata", "-joliet", "-rock"])
                .arg(&seed),
            "writing the cloud-init seed",
        )
        .await?;
        set_mode(&iso, 0o600);
        let _ = tokio::fs::remove_dir_all(&seed).await;
        Ok(())
    }

    async fn net_up(&self, spec: &InstanceSpec) -> Result<Option<(String, String)>, RuntimeError> {
        let Some(nic) = &spec.nic else {
            return Ok(None);
        };
        let _g = self.net_lock.lock().await;
        let ns = netns_name(&nic.vpc_id);
        let len = nic
            .cidr
            .split_once('/')
            .map_or("24", |(_, l)| l)
            .to_string();
        let gw = gateway_of(&nic.cidr)
            .ok_or_else(|| RuntimeError::new(format!("bad subnet {}", nic.cidr)))?;
        if !Path::new("/run/netns").join(&ns).exists() {
            run_ok(
                Command::new("ip").args(["netns", "add", &ns]),
                "creating the VPC network namespace",
            )
            .await?;
        }
        let ip = |args: &[&str]| {
            let mut c = Command::new("ip");
            c.arg("-n").arg(&ns).args(args);
            c
        };
        run_ok(&mut ip(&["link", "set", "lo", "up"]), "bringing up lo").await?;
        if run_ok(&mut ip(&["link", "show", BRIDGE]), "bridge")
            .await
            .is_err()
        {
            run_ok(
                &mut ip(&["link", "add", BRIDGE, "type", "bridge"]),
                "creating the VPC bridge",
            )
            .await?;
        }
        run_ok(
            &mut ip(&["addr", "replace", &format!("{gw}/{len}"), "dev", BRIDGE]),
            "addressing the VPC bridge",
        )
        .await?;
        run_ok(
            &mut ip(&["link", "set", BRIDGE, "up"]),
            "bringing up the bridge",
        )
        .await?;
        let tap = tap_name(&spec.instance_id);
        if run_ok(&mut ip(&["link", "show", &tap]), "tap")
            .await
            .is_err()
        {
            run_ok(
                &mut ip(&["tuntap", "add", "dev", &tap, "mode", "tap"]),
                "creating the tap device",
            )
            .await?;
        }
        run_ok(
            &mut ip(&["link", "set", &tap, "master", BRIDGE, "up"]),
            "attaching the tap device",
        )
        .await?;
        Ok(Some((ns, tap)))
    }

    /// Removes an instance's tap and, when its VPC has no VM left here, the
    /// VPC's namespace.
    async fn net_down(&self, spec: &InstanceSpec) {
        let Some(nic) = &spec.nic else {
            return;
        };
        let _g = self.net_lock.lock().await;
        let ns = netns_name(&nic.vpc_id);
        if !Path::new("/run/netns").join(&ns).exists() {
            return;
        }
        let tap = tap_name(&spec.instance_id);
        let _ = run_ok(
            Command::new("ip").args(["-n", &ns, "link", "del", &tap]),
            "removing the tap",
        )
        .await;
        let left = run_ok(
            Command::new("ip").args(["-n", &ns, "-o", "link", "show", "type", "tun"]),
            "listing taps",
        )
        .await
        .unwrap_or_default();
        let others = std::fs::read_dir(self.cfg.state_dir.join("vms"))
            .map(|d| {
                d.flatten().any(|e| {
                    let id = e.file_name().to_string_lossy().to_string();
                    id != spec.instance_id
                        && self
                            .load_spec(&id)
                            .and_then(|s| s.nic)
                            .is_some_and(|n| netns_name(&n.vpc_id) == ns)
                })
            })
            .unwrap_or(false);
        if left.trim().is_empty() && !others {
            let _ = run_ok(
                Command::new("ip").args(["netns", "del", &ns]),
                "removing the VPC namespace",
            )
            .await;
        }
    }

    fn vfio_file(&self, id: &str) -> PathBuf {
        self.dir(id).join("vfio.json")
    }

    async fn release_gpus(&self, id: &str) -> Result<(), RuntimeError> {
        let f = self.vfio_file(id);
        let Ok(bytes) = std::fs::read(&f) else {
            return Ok(());
        };
        if let Ok(a) = serde_json::from_slice::<Assignment>(&bytes) {
            // Unbinding waits for the device to be free: off the async threads.
            let vfio = self.vfio.clone();
            tokio::task::spawn_blocking(move || vfio.release(&a))
                .await
                .map_err(|e| err("giving the GPUs back to their driver", e))?
                .map_err(|e| err("giving the GPUs back to their driver", e))?;
        }
        let _ = std::fs::remove_file(&f);
        Ok(())
    }

    async fn wait_exit(&self, id: &str, pid: i32, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if !pid_alive(pid) || self.pid(id).is_none() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        !pid_alive(pid)
    }

    async fn hard_stop(&self, id: &str, pid: i32) {
        let _ = qmp(&self.dir(id).join("qmp.sock"), "quit", None).await;
        if !self.wait_exit(id, pid, Duration::from_secs(3)).await {
            kill(pid, nix::sys::signal::Signal::SIGKILL);
            self.wait_exit(id, pid, Duration::from_secs(5)).await;
        }
    }

    /// After QEMU is gone: its tap, its GPUs, its sockets.
    async fn after_exit(&self, id: &str) -> Result<(), RuntimeError> {
        if let Some(spec) = self.load_spec(id) {
            self.net_down(&spec).await;
        }
        self.release_gpus(id).await?;
        for f in ["qemu.pid", "qmp.sock", "qga.sock", "serial.sock"] {
            let _ = std::fs::remove_file(self.dir(id).join(f));
        }
        Ok(())
    }

    /// Runs guest-agent commands in order, as one step: the whole sequence
    /// is retried a few times, since the guest agent may answer a ping a
    /// moment before it takes commands that touch the disk.
    async fn qga_steps(&self, id: &str, steps: &[(&str, serde_json::Value)]) -> Result<(), String> {
        let lock = self.qga_lock(id);
        let _g = lock.lock().await;
        let sock = self.dir(id).join("qga.sock");
        let mut last = String::new();
        for attempt in 0..5 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            let mut ok = true;
            for (cmd, args) in steps {
                if let Err(e) = qga(
                    &sock,
                    cmd,
                    Some(args.clone()),
                    Duration::from_secs(10),
                    true,
                )
                .await
                {
                    last = format!("{cmd}: {e}");
                    ok = false;
                    break;
                }
            }
            if ok {
                return Ok(());
            }
        }
        Err(last)
    }

    /// Brings root's `authorized_keys` in line with the instance's key pairs
    /// through the guest agent, after every boot. Cloud-init writes the
    /// seed's keys once per instance, so without this a key pair associated
    /// (or disassociated) later would never reach a cloud image. Only keys
    /// gpucloud added are ever removed (`keys.applied` remembers them); keys
    /// the tenant put there stay. A guest agent without the `guest-ssh-*`
    /// commands (QEMU < 5.2) leaves a warning, not a failed start.
    async fn sync_keys(&self, spec: &InstanceSpec) {
        let id = &spec.instance_id;
        let applied_file = self.dir(id).join("keys.applied");
        let applied: Vec<String> = std::fs::read(&applied_file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let desired: Vec<String> = spec
            .ssh_keys
            .iter()
            .filter_map(|k| key_material(k))
            .collect();
        let (add, remove) = key_changes(&applied, &desired);
        let mut steps = Vec::new();
        if !remove.is_empty() {
            steps.push((
                "guest-ssh-remove-authorized-keys",
                serde_json::json!({ "username": "root", "keys": remove }),
            ));
        }
        if !add.is_empty() {
            steps.push((
                "guest-ssh-add-authorized-keys",
                serde_json::json!({ "username": "root", "keys": add }),
            ));
        }
        if steps.is_empty() {
            return;
        }
        match self.qga_steps(id, &steps).await {
            Ok(()) => {
                if let Err(e) = write_private(
                    &applied_file,
                    &serde_json::to_vec(&desired).unwrap_or_default(),
                ) {
                    tracing::warn!(instance = %id, error = %e.0, "could not remember the applied keys");
                }
                tracing::info!(instance = %id, added = add.len(), removed = remove.len(), "root's SSH keys updated");
            }
            Err(e) => {
                tracing::warn!(instance = %id, error = %e, "could not update root's SSH keys through the guest agent")
            }
        }
    }

    /// Sets root's password through the guest agent after a boot when it
    /// changed since gpucloud last set it (`ResetInstancesPassword`):
    /// cloud-init sets the seed's password once per instance only. What was
    /// set is remembered as a salted SHA-256 (`password.applied`, 0600).
    async fn sync_password(&self, spec: &InstanceSpec) {
        use sha2::{Digest, Sha256};
        let Some(pw) = &spec.password else {
            return;
        };
        let id = &spec.instance_id;
        let applied_file = self.dir(id).join("password.applied");
        let digest = hex::encode(Sha256::digest(format!("{id}\0{pw}").as_bytes()));
        if std::fs::read_to_string(&applied_file).is_ok_and(|d| d.trim() == digest) {
            return;
        }
        let args = serde_json::json!({
            "username": "root",
            "password": base64::engine::general_purpose::STANDARD.encode(pw),
            "crypted": false,
        });
        match self
            .qga_steps(id, &[("guest-set-user-password", args)])
            .await
        {
            Ok(()) => {
                if let Err(e) = write_private(&applied_file, digest.as_bytes()) {
                    tracing::warn!(instance = %id, error = %e.0, "could not remember the applied password");
                }
                tracing::info!(instance = %id, "root's password set");
            }
            Err(e) => {
                tracing::warn!(instance = %id, error = %e, "could not set root's password through the guest agent")
            }
        }
    }

    /// Waits until the guest is up: the guest agent answers, or (images
    /// without one) the console shows a login prompt.
    async fn wait_ready(
        &self,
        id: &str,
        pid: i32,
        image: &VmImage,
        console_from: u64,
    ) -> Result<(), RuntimeError> {
        let dir = self.dir(id);
        let deadline = Instant::now() + self.cfg.boot_timeout;
        let lock = self.qga_lock(id);
        while Instant::now() < deadline {
            if !pid_alive(pid) {
                return Err(RuntimeError::new(format!(
                    "the VM stopped while booting; console: {}",
                    console_tail(&dir)
                )));
            }
            if image.guest_agent {
                let _g = lock.lock().await;
                if qga(
                    &dir.join("qga.sock"),
                    "guest-ping",
                    None,
                    Duration::from_millis(500),
                    true,
                )
                .await
                .is_ok()
                {
                    return Ok(());
                }
            }
            // Images without a guest agent (most cloud images): the login
            // prompt on the console, printed by this boot.
            if std::fs::read(dir.join("console.log")).is_ok_and(|c| {
                c.get(console_from as usize..)
                    .is_some_and(|new| new.windows(7).any(|w| w == b"login: "))
            }) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(RuntimeError::new(format!(
            "the guest did not come up within {} s; console: {}",
            self.cfg.boot_timeout.as_secs(),
            console_tail(&dir)
        )))
    }
}

fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode));
}

fn console_tail(dir: &Path) -> String {
    let text = std::fs::read_to_string(dir.join("console.log")).unwrap_or_default();
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let tail = lines[lines.len().saturating_sub(3)..].join(" / ");
    if tail.is_empty() {
        "(empty)".into()
    } else {
        tail
    }
}

fn qemu_version_key(qemu: &Path) -> String {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let meta = std::fs::metadata(qemu)
        .map(|m| {
            use std::os::unix::fs::MetadataExt;
            format!("{}-{}", m.len(), m.mtime())
        })
        .unwrap_or_default();
    format!("{}|{}", kernel.trim(), meta)
}

/// Decides KVM or TCG by booting the probe guest (cached per kernel and QEMU
/// binary in `cache`).
pub fn probe_accel(qemu: &Path, cache: &Path) -> AccelVerdict {
    let key = qemu_version_key(qemu);
    #[derive(Serialize, Deserialize)]
    struct Cached {
        key: String,
        verdict: AccelVerdict,
    }
    if let Some(c) = std::fs::read(cache)
        .ok()
        .and_then(|b| serde_json::from_slice::<Cached>(&b).ok())
        .filter(|c| c.key == key)
    {
        return c.verdict;
    }
    let verdict = if !Path::new("/dev/kvm").exists() {
        AccelVerdict {
            accel: "tcg".into(),
            why: "no /dev/kvm (no hardware virtualisation here): software emulation (TCG)".into(),
        }
    } else {
        match crate::doctor::kvm_usable(qemu) {
            Ok(t) => AccelVerdict {
                accel: "kvm".into(),
                why: format!("KVM runs a probe guest in {} ms", t.as_millis()),
            },
            Err(why) => AccelVerdict {
                accel: "tcg".into(),
                why: format!("KVM is not usable ({why}): software emulation (TCG)"),
            },
        }
    };
    if let Some(p) = cache.parent() {
        let _ = std::fs::create_dir_all(p);
    }
    let _ = std::fs::write(
        cache,
        serde_json::to_vec(&Cached {
            key,
            verdict: verdict.clone(),
        })
        .unwrap_or_default(),
    );
    verdict
}

#[async_trait::async_trait]
impl Runtime for QemuRuntime {
    fn kinds(&self) -> Vec<RuntimeKind> {
        vec![RuntimeKind::Qemu]
    }

    fn booted_seq(&self, id: &str) -> Option<i64> {
        crate::runtime::booted_seq(&self.dir(id))
    }

    async fn list(&self) -> Result<Vec<(String, Power)>, RuntimeError> {
        let mut out = Vec::new();
        let Ok(entries) = std::fs::read_dir(self.cfg.state_dir.join("vms")) else {
            return Ok(out);
        };
        for e in entries.flatten() {
            let id = e.file_name().to_string_lossy().to_string();
            if id.starts_with("ins-") && e.path().join("vm.json").exists() {
                let p = if self.pid(&id).is_some() {
                    Power::Running
                } else {
                    Power::Stopped
                };
                out.push((id, p));
            }
        }
        Ok(out)
    }

    async fn status(&self, id: &str) -> Result<Option<Power>, RuntimeError> {
        if self.pid(id).is_some() {
            return Ok(Some(Power::Running));
        }
        Ok(self
            .dir(id)
            .join("vm.json")
            .exists()
            .then_some(Power::Stopped))
    }

    async fn create(&self, spec: &InstanceSpec) -> Result<(), RuntimeError> {
        let (base, _) = self.image_paths(spec)?;
        let dir = self.dir(&spec.instance_id);
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| err("creating the VM directory", e))?;
        set_mode(&dir, 0o700);
        let system = dir.join("system.qcow2");
        if !system.exists() {
            let tmp = dir.join("system.qcow2.tmp");
            let mut c = Command::new(&self.cfg.qemu_img);
            c.args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
                .arg(&base)
                .arg(&tmp);
            if let Some(g) = spec.system_disk_gib {
                // Never smaller than the image itself.
                let img_bytes = base_virtual_size(&self.cfg.qemu_img, &base).await;
                if g << 30 > img_bytes {
                    c.arg(format!("{g}G"));
                }
            }
            run_ok(&mut c, "creating the system disk").await?;
            std::fs::rename(&tmp, &system).map_err(|e| err("creating the system disk", e))?;
        }
        for (i, g) in spec.data_disks_gib.iter().enumerate() {
            let p = dir.join(format!("data-{i}.qcow2"));
            if !p.exists() {
                run_ok(
                    Command::new(&self.cfg.qemu_img)
                        .args(["create", "-q", "-f", "qcow2"])
                        .arg(&p)
                        .arg(format!("{g}G")),
                    "creating a data disk",
                )
                .await?;
            }
        }
        write_private(
            &dir.join("vm.json"),
            &serde_json::to_vec(spec).map_err(|e| err("saving the spec", e))?,
        )
    }

    async fn update(&self, spec: &InstanceSpec) -> Result<(), RuntimeError> {
        if !self.dir(&spec.instance_id).join("system.qcow2").exists() {
            return self.create(spec).await;
        }
        write_private(
            &self.dir(&spec.instance_id).join("vm.json"),
            &serde_json::to_vec(spec).map_err(|e| err("saving the spec", e))?,
        )
    }

    async fn start(&self, spec: &InstanceSpec) -> Result<(), RuntimeError> {
        let id = &spec.instance_id;
        let (base, image) = self.image_paths(spec)?;
        if let Some(pid) = self.pid(id) {
            return self
                .wait_ready(id, pid, &image, self.console_from(id))
                .await;
        }
        // ResetInstance: a fresh system disk from the (maybe new) image,
        // and nothing remembered about the old one's keys and password.
        let dir = self.dir(id);
        let reinstall = crate::runtime::reinstall_due(&dir, spec.system_disk_seq)
            .map_err(|e| err("checking for a reinstall", e))?;
        if reinstall {
            for f in ["system.qcow2", "keys.applied", "password.applied"] {
                match std::fs::remove_file(dir.join(f)) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(err("removing the old system disk", e))
                    }
                    _ => {}
                }
            }
            tracing::info!(instance = %id, image = %spec.image.image_id, "reinstalling the system disk");
        }
        self.update(spec).await?;
        if reinstall {
            crate::runtime::reinstall_done(&dir, spec.system_disk_seq)
                .map_err(|e| err("recording the reinstall", e))?;
        }
        self.write_seed(spec).await?;
        let accel = self.accel().await;
        let gpus: Vec<String> = spec.gpus.iter().map(|g| g.pci_address.clone()).collect();
        // Held until QEMU is up (or given up on); see `InstanceLocks`.
        let mut guard = self.launches.lock(id).await;
        if let Some(pid) = self.pid(id) {
            // A launch cancelled a moment ago finished it.
            drop(guard);
            return self.wait_ready(id, pid, &image, 0).await;
        }
        let mut vfio_args = Vec::new();
        if !gpus.is_empty() {
            self.vfio
                .available()
                .map_err(|e| err("GPU passthrough is not possible on this host", e))?;
            let previous: Option<Assignment> = std::fs::read(self.vfio_file(id))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            let vfio = self.vfio.clone();
            let wanted = gpus.clone();
            let record = self.vfio_file(id);
            // Bound and recorded together, so removal always knows what to give back.
            let (bound, g) =
                crate::runtime::to_the_end(guard, "binding the GPUs to vfio-pci", async move {
                    let a = tokio::task::spawn_blocking(move || {
                        vfio.prepare(&wanted, previous.as_ref())
                    })
                    .await
                    .map_err(|e| err("binding the GPUs to vfio-pci", e))?
                    .map_err(|e| err("binding the GPUs to vfio-pci", e))?;
                    write_private(
                        &record,
                        &serde_json::to_vec(&a).map_err(|e| err("saving the GPU binding", e))?,
                    )?;
                    Ok::<_, RuntimeError>(a)
                })
                .await?;
            guard = g;
            vfio_args = vfio::qemu_args(&bound?);
        }
        let net = match self.net_up(spec).await {
            Ok(n) => n,
            Err(e) => {
                let _ = self.after_exit(id).await;
                return Err(e);
            }
        };
        let base_dir = base.parent().map(Path::to_path_buf).unwrap_or_default();
        let launch = Launch {
            id: id.clone(),
            accel: accel.accel.clone(),
            cpus: spec.cpu,
            memory_mib: spec.memory_mib,
            dir: dir.clone(),
            kernel: image.kernel.as_ref().map(|k| {
                (
                    base_dir.join(k),
                    image.initrd.as_ref().map(|i| base_dir.join(i)),
                    image.cmdline.clone().unwrap_or_default(),
                )
            }),
            data_disks: (0..spec.data_disks_gib.len())
                .map(|i| dir.join(format!("data-{i}.qcow2")))
                .collect(),
            nic: net.as_ref().map(|(_, tap)| (tap.clone(), mac_for(id))),
            numa_node: numa_node_for(Path::new("/sys"), &gpus),
            vfio: vfio_args,
        };
        for f in ["qmp.sock", "qga.sock", "serial.sock", "qemu.pid"] {
            let _ = std::fs::remove_file(dir.join(f));
        }
        let console_from = std::fs::metadata(dir.join("console.log")).map_or(0, |m| m.len());
        // Where this boot's console output starts (the log keeps earlier
        // boots): a restarted agent waits for *this* boot's login prompt.
        let _ = std::fs::write(dir.join("console.from"), console_from.to_string());
        // The launcher chain: into the VPC's namespace, onto the GPUs' NUMA
        // node's CPUs (memory is bound by QEMU itself), then QEMU.
        let mut argv: Vec<std::ffi::OsString> = Vec::new();
        if let Some((ns, _)) = &net {
            argv.extend([
                "nsenter".into(),
                format!("--net=/run/netns/{ns}").into(),
                "--".into(),
            ]);
        }
        if let Some(cpus) = launch
            .numa_node
            .and_then(|n| node_cpulist(Path::new("/sys"), n))
        {
            argv.extend(["taskset".into(), "-c".into(), cpus.into()]);
        }
        argv.push(self.cfg.qemu_bin.clone().into_os_string());
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]).args(qemu_args(&launch));
        tracing::info!(instance = %id, accel = %accel.accel, "starting VM");
        let (started, guard) = crate::runtime::to_the_end(guard, "starting QEMU", async move {
            run_ok(&mut cmd, "QEMU did not start").await
        })
        .await?;
        if let Err(e) = started {
            let _ = self.after_exit(id).await;
            return Err(e);
        }
        let Some(pid) = self.pid(id) else {
            let _ = self.after_exit(id).await;
            return Err(RuntimeError::new(format!(
                "QEMU exited right after starting; console: {}",
                console_tail(&dir)
            )));
        };
        // Up: a removal from here on finds it by its PID file.
        drop(guard);
        if let Err(e) = self.wait_ready(id, pid, &image, console_from).await {
            self.hard_stop(id, pid).await;
            let _ = self.after_exit(id).await;
            return Err(e);
        }
        if image.guest_agent {
            self.sync_keys(spec).await;
            self.sync_password(spec).await;
        }
        crate::runtime::record_boot(&dir, spec.reboot_seq);
        Ok(())
    }

    async fn ready(&self, spec: &InstanceSpec) -> Result<(), RuntimeError> {
        let id = &spec.instance_id;
        let (_, image) = self.image_paths(spec)?;
        match self.pid(id) {
            Some(pid) => {
                self.wait_ready(id, pid, &image, self.console_from(id))
                    .await
            }
            None => Ok(()),
        }
    }

    async fn stop(&self, id: &str, how: StopType) -> Result<(), RuntimeError> {
        let _launch = self.launches.lock(id).await;
        let Some(pid) = self.pid(id) else {
            return self.after_exit(id).await;
        };
        let dir = self.dir(id);
        if how == StopType::Hard {
            self.hard_stop(id, pid).await;
        } else {
            // Ask the guest agent first (a clean shutdown the guest controls),
            // else press the ACPI power button.
            let asked = {
                let lock = self.qga_lock(id);
                let _g = lock.lock().await;
                qga(
                    &dir.join("qga.sock"),
                    "guest-shutdown",
                    Some(serde_json::json!({ "mode": "powerdown" })),
                    Duration::from_secs(3),
                    false,
                )
                .await
                .is_ok()
            };
            if !asked {
                let _ = qmp(&dir.join("qmp.sock"), "system_powerdown", None).await;
            }
            if !self.wait_exit(id, pid, self.cfg.stop_timeout).await {
                if how == StopType::SoftFirst {
                    self.hard_stop(id, pid).await;
                } else {
                    return Err(RuntimeError::new(format!(
                        "the guest did not shut down within {} s; stop it with StopType HARD or SOFT_FIRST",
                        self.cfg.stop_timeout.as_secs()
                    )));
                }
            }
        }
        if pid_alive(pid) {
            return Err(RuntimeError::new(format!("QEMU (pid {pid}) did not exit")));
        }
        self.after_exit(id).await
    }

    async fn reboot(&self, spec: &InstanceSpec, how: StopType) -> Result<(), RuntimeError> {
        // A power cycle: the guest shuts down (softly unless HARD) and boots
        // again with the current spec (keys, host name, shape).
        self.stop(&spec.instance_id, how).await?;
        self.start(spec).await
    }

    async fn destroy(&self, id: &str) -> Result<(), RuntimeError> {
        let launch = self.launches.lock(id).await;
        if let Some(pid) = self.pid(id) {
            self.hard_stop(id, pid).await;
            if pid_alive(pid) {
                return Err(RuntimeError::new(format!("QEMU (pid {pid}) did not exit")));
            }
        }
        self.after_exit(id).await?;
        let dir = self.dir(id);
        if dir.exists() {
            tokio::fs::remove_dir_all(&dir)
                .await
                .map_err(|e| err(&format!("removing {}", dir.display()), e))?;
        }
        self.qga_locks.forget(id);
        drop(launch);
        self.launches.forget(id);
        Ok(())
    }

    async fn console(&self, id: &str) -> Result<tokio::net::UnixStream, RuntimeError> {
        if self.pid(id).is_none() {
            return Err(RuntimeError::new(format!("instance {id} is not running")));
        }
        let sock = self.dir(id).join("serial.sock");
        tokio::net::UnixStream::connect(&sock).await.map_err(|e| {
            RuntimeError::new(format!(
                "cannot open the serial console of {id} ({e}); another client (gpucloud console?) may hold it"
            ))
        })
    }

    async fn exec(&self, id: &str, req: &ExecRequest) -> Result<ExecOutput, RuntimeError> {
        if self.pid(id).is_none() {
            return Err(RuntimeError::new(format!("instance {id} is not running")));
        }
        let sock = self.dir(id).join("qga.sock");
        let lock = self.qga_lock(id);
        let b64 = base64::engine::general_purpose::STANDARD;
        // The script goes in on stdin; the wrapper changes directory and user.
        let wrapper = if req.username == "root" {
            "cd -- \"$0\" || exit 126; exec /bin/sh -s".to_string()
        } else {
            "id -u \"$1\" >/dev/null 2>&1 || { echo \"no user $1 in the instance\" >&2; exit 126; }; cd -- \"$0\" || exit 126; exec su -s /bin/sh \"$1\" -c '/bin/sh -s'".to_string()
        };
        let started = {
            let _g = lock.lock().await;
            qga(
                &sock,
                "guest-exec",
                Some(serde_json::json!({
                    "path": "/bin/sh",
                    "arg": ["-c", wrapper, req.working_directory, req.username],
                    "input-data": b64.encode(&req.script),
                    "capture-output": true,
                })),
                Duration::from_secs(10),
                true,
            )
            .await
            .map_err(|e| err("the guest agent did not start the command", e))?
        };
        let gpid = started
            .get("pid")
            .and_then(|p| p.as_i64())
            .ok_or_else(|| RuntimeError::new("the guest agent returned no pid"))?;
        let deadline = Instant::now() + req.timeout;
        // Once past the timeout the command's whole tree is killed inside the
        // guest; the guest agent then hands over what it printed.
        let mut killed_at: Option<Instant> = None;
        // A status query can fail once (the guest agent busy, a socket
        // hiccup) while the command goes on: only several failures in a row,
        // or the VM gone, lose it — and then it is killed, so nothing keeps
        // running that no one will report.
        let mut errors = 0u32;
        let kill = || async {
            let _g = lock.lock().await;
            let _ = qga(
                &sock,
                "guest-exec",
                Some(serde_json::json!({
                    "path": "/bin/sh",
                    "arg": ["-c", crate::runtime::KILL_TREE_SH, "sh", gpid.to_string()],
                })),
                Duration::from_secs(5),
                true,
            )
            .await;
        };
        loop {
            let st = {
                let _g = lock.lock().await;
                qga(
                    &sock,
                    "guest-exec-status",
                    Some(serde_json::json!({ "pid": gpid })),
                    Duration::from_secs(10),
                    true,
                )
                .await
            };
            let st = match (st, killed_at) {
                (Ok(st), _) => {
                    errors = 0;
                    st
                }
                (Err(e), None) => {
                    errors += 1;
                    if errors >= EXEC_STATUS_ERRORS || self.pid(id).is_none() {
                        kill().await;
                        return Err(err("the guest agent lost the command", e));
                    }
                    tracing::debug!(instance = %id, error = %e, errors, "guest-exec-status failed; asking again");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
                (Err(_), Some(_)) => serde_json::Value::Null,
            };
            let exited = st.get("exited").and_then(|e| e.as_bool()) == Some(true);
            if let Some(k) = killed_at {
                if exited || st.is_null() || k.elapsed() >= Duration::from_secs(5) {
                    let mut output = guest_output(&st);
                    output.extend_from_slice(
                        format!(
                            "\nthe command ran longer than {} s and was killed\n",
                            req.timeout.as_secs()
                        )
                        .as_bytes(),
                    );
                    return Ok(ExecOutput {
                        exit_code: 137,
                        output,
                        timed_out: true,
                        dropped: 0,
                    });
                }
            } else if exited {
                let exit_code = match (
                    st.get("exitcode").and_then(|c| c.as_i64()),
                    st.get("signal").and_then(|c| c.as_i64()),
                ) {
                    (Some(c), _) => c,
                    (None, Some(s)) => 128 + s,
                    _ => -1,
                };
                return Ok(ExecOutput {
                    exit_code,
                    output: guest_output(&st),
                    timed_out: false,
                    dropped: 0,
                });
            } else if Instant::now() >= deadline {
                kill().await;
                killed_at = Some(Instant::now());
                continue;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// `guest-exec-status` failures in a row after which a command is lost.
const EXEC_STATUS_ERRORS: u32 = 5;

/// A finished `guest-exec-status`'s stdout then stderr.
fn guest_output(st: &serde_json::Value) -> Vec<u8> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut output = Vec::new();
    for k in ["out-data", "err-data"] {
        if let Some(d) = st.get(k).and_then(|d| d.as_str()) {
            output.extend(b64.decode(d).unwrap_or_default());
        }
    }
    // The guest agent keeps at most 16 MiB of each stream and says only
    // that it cut, not how much.
    let cut = ["out-truncated", "err-truncated"]
        .iter()
        .any(|k| st.get(*k).and_then(|t| t.as_bool()) == Some(true));
    if cut {
        output.extend_from_slice(b"\n(the guest agent cut this output at its 16 MiB limit)\n");
    }
    output
}

async fn base_virtual_size(qemu_img: &Path, base: &Path) -> u64 {
    let out = Command::new(qemu_img)
        .args(["info", "--output=json", "-U"])
        .arg(base)
        .output()
        .await;
    out.ok()
        .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
        .and_then(|v| v.get("virtual-size").and_then(|s| s.as_u64()))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpucloud_agent_api::{DesiredPower, ImageRef, NicSpec};

    fn spec() -> InstanceSpec {
        InstanceSpec {
            instance_id: "ins-abcd1234".into(),
            spec_generation: 1,
            power: DesiredPower::Running,
            reboot_seq: 0,
            system_disk_seq: 0,
            stop_type: None,
            name: "vm".into(),
            hostname: "web-1".into(),
            instance_type: "S5.MEDIUM4".into(),
            cpu: 2,
            memory_mib: 4096,
            gpus: vec![],
            image: ImageRef {
                image_id: "img-gcvmdeb1".into(),
                runtime: "qemu".into(),
                location: "vm/disk.qcow2".into(),
            },
            user_data: Some(
                base64::engine::general_purpose::STANDARD.encode("#!/bin/sh\necho hi\n"),
            ),
            password: Some("Pa\"ss\\w0rd".into()),
            ssh_keys: vec![
                "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB1 a comment: with # yaml".into(),
                "not a key".into(),
            ],
            nic: Some(NicSpec {
                ip: "172.16.32.5".into(),
                cidr: "172.16.32.0/20".into(),
                vpc_id: "vpc-xyz12345".into(),
            }),
            system_disk_gib: Some(50),
            data_disks_gib: vec![10],
            app_id: 1,
        }
    }

    #[test]
    fn key_changes_touch_only_what_gpucloud_added() {
        let k = |s: &str| s.to_string();
        // First boot: everything wanted is added, nothing removed.
        assert_eq!(
            key_changes(&[], &[k("a"), k("b"), k("a")]),
            (vec![k("a"), k("b")], vec![])
        );
        // Nothing changed: nothing to do.
        assert_eq!(
            key_changes(&[k("a"), k("b")], &[k("b"), k("a")]),
            (vec![], vec![])
        );
        // b disassociated, c associated.
        assert_eq!(
            key_changes(&[k("a"), k("b")], &[k("a"), k("c")]),
            (vec![k("c")], vec![k("b")])
        );
        // All keys disassociated.
        assert_eq!(key_changes(&[k("a")], &[]), (vec![], vec![k("a")]));
    }

    #[test]
    fn the_seed_is_nocloud_and_yaml_safe() {
        let files: std::collections::HashMap<_, _> = seed_files(&spec()).into_iter().collect();
        let meta = String::from_utf8(files["meta-data"].clone()).unwrap();
        assert_eq!(
            meta,
            "instance-id: ins-abcd1234\nlocal-hostname: web-1\npublic-keys:\n  - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB1\n"
        );
        let vendor = String::from_utf8(files["vendor-data"].clone()).unwrap();
        assert!(vendor.starts_with("#cloud-config\n"));
        assert!(
            vendor.contains(
                "\n    - name: root\n      type: text\n      password: \"Pa\\\"ss\\\\w0rd\"\n"
            ),
            "{vendor}"
        );
        assert!(vendor.contains("disable_root: false\n"), "{vendor}");
        assert_eq!(files["user-data"], b"#!/bin/sh\necho hi\n");
        let net = String::from_utf8(files["network-config"].clone()).unwrap();
        assert!(net.contains(&format!("macaddress: \"{}\"", mac_for("ins-abcd1234"))));
        assert!(net.contains("- 172.16.32.5/20\n"));
        // `gateway4`, not `routes`: every cloud-init renders it (Debian's
        // ifupdown renderer turns routes into net-tools commands that a
        // cloud image may lack).
        assert!(net.contains("    gateway4: 172.16.32.1\n"), "{net}");
        // Without password, user data or network.
        let mut s = spec();
        s.password = None;
        s.user_data = None;
        s.nic = None;
        s.ssh_keys.clear();
        let files: std::collections::HashMap<_, _> = seed_files(&s).into_iter().collect();
        assert_eq!(
            files["vendor-data"],
            b"#cloud-config\ndisable_root: false\n"
        );
        assert_eq!(files["user-data"], b"#cloud-config\n{}\n");
        assert!(!files.contains_key("network-config"));
        assert!(!String::from_utf8_lossy(&files["meta-data"]).contains("public-keys"));
    }

    #[test]
    fn names_fit_the_kernel_limits() {
        assert_eq!(tap_name("ins-abcd1234"), "gctabcd1234");
        assert!(tap_name("ins-abcdefghijklmnop").len() <= 15);
        assert_eq!(netns_name("vpc-xyz12345"), "gcv-xyz12345");
        assert_eq!(netns_name(""), "gcv-default");
        let m = mac_for("ins-abcd1234");
        assert!(m.starts_with("52:54:00:") && m.len() == 17);
        assert_eq!(m, mac_for("ins-abcd1234"));
        assert_ne!(m, mac_for("ins-abcd1235"));
        assert_eq!(gateway_of("172.16.32.0/20").as_deref(), Some("172.16.32.1"));
        assert_eq!(gateway_of("10.0.0.77/24").as_deref(), Some("10.0.0.1"));
        assert_eq!(gateway_of("junk"), None);
    }

    #[test]
    fn qemu_arguments_for_a_direct_kernel_boot() {
        let l = Launch {
            id: "ins-abcd1234".into(),
            accel: "tcg".into(),
            cpus: 2,
            memory_mib: 4096,
            dir: "/s/vms/ins-abcd1234".into(),
            kernel: Some((
                "/img/vm/vmlinux".into(),
                Some("/img/vm/initrd.img".into()),
                "root=/dev/vda console=ttyS0".into(),
            )),
            data_disks: vec!["/s/vms/ins-abcd1234/data-0.qcow2".into()],
            nic: Some(("gctabcd1234".into(), "52:54:00:01:02:03".into())),
            numa_node: None,
            vfio: vec![],
        };
        let a = qemu_args(&l).join(" ");
        for want in [
            "-name ins-abcd1234,process=qemu-ins-abcd1234",
            "-machine q35 -accel tcg -cpu max -smp 2 -m 4096M",
            "-kernel /img/vm/vmlinux -append root=/dev/vda console=ttyS0 -initrd /img/vm/initrd.img",
            "file=/s/vms/ins-abcd1234/system.qcow2,format=qcow2",
            "id=disk1,file=/s/vms/ins-abcd1234/data-0.qcow2",
            "file=/s/vms/ins-abcd1234/seed.iso,format=raw,readonly=on",
            "tap,id=net0,ifname=gctabcd1234,script=no,downscript=no",
            "virtio-net-pci,netdev=net0,mac=52:54:00:01:02:03",
            "name=org.qemu.guest_agent.0",
            "-qmp unix:/s/vms/ins-abcd1234/qmp.sock,server=on,wait=off",
            "-pidfile /s/vms/ins-abcd1234/qemu.pid -daemonize",
            "-sandbox on,obsolete=deny,resourcecontrol=deny",
        ] {
            assert!(a.contains(want), "missing {want} in {a}");
        }
        // The seed comes after every data disk, so data disks keep their names.
        assert!(a.find("data-0.qcow2").unwrap() < a.find("seed.iso").unwrap());
        // KVM uses the host CPU; a GPU VM on a NUMA host binds its memory.
        let mut k = l.clone();
        k.accel = "kvm".into();
        k.numa_node = Some(1);
        k.nic = None;
        k.kernel = None;
        let a = qemu_args(&k).join(" ");
        assert!(a.contains("-accel kvm -cpu host"));
        assert!(a.contains("memory-backend-ram,id=mem0,size=4096M,host-nodes=1,policy=bind"));
        assert!(a.contains("-nic none"));
        assert!(a.contains("-sandbox on,obsolete=deny "));
        assert!(!a.contains("-kernel"));
    }

    #[test]
    fn numa_node_only_on_multi_node_hosts_with_gpus_on_one_node() {
        let d = tempfile::tempdir().unwrap();
        let s = d.path();
        for n in ["node0", "node1"] {
            std::fs::create_dir_all(s.join("devices/system/node").join(n)).unwrap();
        }
        for (g, n) in [
            ("0000:18:00.0", "1"),
            ("0000:19:00.0", "1"),
            ("0000:3a:00.0", "0"),
        ] {
            let p = s.join("bus/pci/devices").join(g);
            std::fs::create_dir_all(&p).unwrap();
            std::fs::write(p.join("numa_node"), format!("{n}\n")).unwrap();
        }
        let g = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            numa_node_for(s, &g(&["0000:18:00.0", "0000:19:00.0"])),
            Some(1)
        );
        assert_eq!(
            numa_node_for(s, &g(&["0000:18:00.0", "0000:3a:00.0"])),
            None
        );
        assert_eq!(numa_node_for(s, &[]), None);
        std::fs::write(s.join("devices/system/node/node1/cpulist"), "16-31,48-63\n").unwrap();
        assert_eq!(node_cpulist(s, 1).as_deref(), Some("16-31,48-63"));
        assert_eq!(node_cpulist(s, 0), None);
        std::fs::remove_dir_all(s.join("devices/system/node/node1")).unwrap();
        assert_eq!(numa_node_for(s, &g(&["0000:18:00.0"])), None);
    }

    #[test]
    fn accel_choices_parse() {
        assert_eq!("auto".parse::<AccelChoice>(), Ok(AccelChoice::Auto));
        assert_eq!("tcg".parse::<AccelChoice>(), Ok(AccelChoice::Tcg));
        assert!("xen".parse::<AccelChoice>().is_err());
    }

    /// A guest agent on a unix socket whose `guest-exec-status` fails
    /// `failures` times (`u32::MAX`: always) before the command has exited.
    struct FakeQga {
        failures: std::sync::atomic::AtomicU32,
        kills: std::sync::atomic::AtomicU32,
    }

    async fn serve_qga(listener: tokio::net::UnixListener, qga: Arc<FakeQga>) {
        use std::sync::atomic::Ordering::SeqCst;
        use tokio::io::AsyncBufReadExt;
        loop {
            let Ok((s, _)) = listener.accept().await else {
                return;
            };
            let qga = qga.clone();
            tokio::spawn(async move {
                let (r, mut w) = s.into_split();
                let mut r = BufReader::new(r);
                let mut line = Vec::new();
                while r.read_until(b'\n', &mut line).await.unwrap_or(0) > 0 {
                    let text = line.strip_prefix(&[0xff]).unwrap_or(&line);
                    let v: serde_json::Value = serde_json::from_slice(text).unwrap();
                    line.clear();
                    let reply = match v["execute"].as_str().unwrap() {
                        "guest-sync" => serde_json::json!({ "return": v["arguments"]["id"] }),
                        "guest-exec" => {
                            let args = v["arguments"]["arg"].to_string();
                            if args.contains("kill") {
                                qga.kills.fetch_add(1, SeqCst);
                            }
                            serde_json::json!({ "return": { "pid": 7 } })
                        }
                        "guest-exec-status" => {
                            if qga
                                .failures
                                .fetch_update(SeqCst, SeqCst, |n| match n {
                                    0 => None,
                                    u32::MAX => Some(u32::MAX),
                                    n => Some(n - 1),
                                })
                                .is_ok()
                            {
                                serde_json::json!({ "error": { "class": "GenericError", "desc": "busy" } })
                            } else {
                                serde_json::json!({ "return": { "exited": true, "exitcode": 0, "out-data": "aGkK" } })
                            }
                        }
                        other => panic!("unexpected {other}"),
                    };
                    if w.write_all(format!("{reply}\n").as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    }

    #[tokio::test]
    async fn a_command_outlives_a_status_hiccup_and_a_lost_one_is_killed() {
        let d = tempfile::tempdir().unwrap();
        let rt = QemuRuntime::new(
            QemuConfig {
                qemu_bin: "/bin/false".into(),
                qemu_img: "/bin/false".into(),
                iso_bin: "/bin/false".into(),
                state_dir: d.path().to_path_buf(),
                images_dir: d.path().to_path_buf(),
                accel: AccelChoice::Tcg,
                boot_timeout: Duration::from_secs(5),
                stop_timeout: Duration::from_secs(5),
            },
            crate::vfio::Vfio::host(),
        );
        let id = "ins-qgatest1";
        let dir = rt.dir(id);
        std::fs::create_dir_all(&dir).unwrap();
        // A process that looks like this VM's QEMU.
        use std::os::unix::process::CommandExt as _;
        let mut vm = std::process::Command::new("sh")
            .args(["-c", "sleep 60; :", &format!("{id},process=qemu-{id}")])
            .process_group(0)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::fs::write(dir.join("qemu.pid"), vm.id().to_string()).unwrap();
        // Once the child has exec'd sh (before, it shows the test's own command line).
        let deadline = Instant::now() + Duration::from_secs(10);
        while rt.pid(id).is_none() {
            assert!(
                Instant::now() < deadline,
                "the stand-in VM process never showed up"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let qga = Arc::new(FakeQga {
            failures: 2.into(),
            kills: 0.into(),
        });
        let listener = tokio::net::UnixListener::bind(dir.join("qga.sock")).unwrap();
        let server = tokio::spawn(serve_qga(listener, qga.clone()));
        let req = ExecRequest {
            script: b"echo hi".to_vec(),
            working_directory: "/root".into(),
            username: "root".into(),
            timeout: Duration::from_secs(30),
        };
        // Two failed status queries in a row: the command goes on.
        let out = rt.exec(id, &req).await.unwrap();
        assert_eq!((out.exit_code, out.output.as_slice()), (0, &b"hi\n"[..]));
        assert_eq!(qga.kills.load(std::sync::atomic::Ordering::SeqCst), 0);
        // The guest agent never answers again: lost, and killed.
        qga.failures
            .store(u32::MAX, std::sync::atomic::Ordering::SeqCst);
        let e = rt.exec(id, &req).await.unwrap_err();
        assert!(e.0.contains("lost the command"), "{}", e.0);
        assert_eq!(qga.kills.load(std::sync::atomic::Ordering::SeqCst), 1);
        server.abort();
        kill(-(vm.id() as i32), nix::sys::signal::Signal::SIGKILL);
        let _ = vm.wait();
    }
}
