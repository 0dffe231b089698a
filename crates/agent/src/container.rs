//! The container runtime: an instance is an OCI bundle run by `runc`.
//!
//! ```text
//! <state>/containers/<ins-id>/
//!     spec.json      the InstanceSpec last applied (adoption after an agent restart)
//!     config.json    the OCI runtime spec (written at every start)
//!     upper/ work/   the instance's own writes (overlayfs upper and work dirs)
//!     rootfs/        overlay of the image rootfs and upper/, mounted while it runs
//!     console.log    stdout and stderr of the instance's init
//! <state>/images/<img-id>/rootfs/   image roots, unpacked once from the image tarball
//! ```
//!
//! The container gets its own PID, IPC, UTS (host name = the instance's host
//! name), mount and network namespaces; a cgroup under `/gpucloud/<ins-id>`
//! with the instance type's vCPUs (CPU set and quota), memory and a PID limit;
//! a device allowlist with the standard character devices and, for GPU
//! instances, only its own `/dev/nvidiaN` plus the control nodes; and the
//! driver's user-space files bind-mounted read-only.
//!
//! Power maps onto runc: start = mount overlay + `runc run --detach`; stop =
//! `SIGTERM` to init, `SIGKILL` after the grace period (SOFT) or at once (HARD),
//! then `runc delete` and unmount; terminate also removes the bundle, leaving
//! no process, cgroup, mount or directory behind. Commands run with `runc exec`.

use crate::gpu::GpuDevices;
use crate::runtime::{ExecOutput, ExecRequest, Power, Runtime, RuntimeError, StopType};
use gpucloud_agent_api::{InstanceSpec, RuntimeKind};
use oci_spec::runtime::{
    LinuxBuilder, LinuxCpuBuilder, LinuxDeviceBuilder, LinuxDeviceCgroupBuilder, LinuxDeviceType,
    LinuxMemoryBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, LinuxPidsBuilder,
    LinuxResourcesBuilder, MountBuilder, ProcessBuilder, RootBuilder, Spec, UserBuilder,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::process::Command;

/// Settings of the container runtime.
#[derive(Debug, Clone)]
pub struct ContainerConfig {
    /// The `runc` (or `crun`) binary.
    pub runtime_bin: PathBuf,
    /// Where bundles and unpacked images live.
    pub state_dir: PathBuf,
    /// Where image tarballs are found (image locations are relative to it).
    pub images_dir: PathBuf,
    /// vCPUs of the host (CPU sets are capped to them).
    pub host_cpus: u32,
    /// How long a SOFT stop waits before killing.
    pub stop_grace: Duration,
}

/// The runc runtime.
pub struct ContainerRuntime {
    cfg: ContainerConfig,
    gpus: Arc<dyn GpuDevices>,
    /// Launches and removals of one container never overlap.
    launches: crate::runtime::InstanceLocks,
}

/// The init process of every container: sleeps, exits cleanly on SIGTERM.
const INIT: &str = "trap 'exit 0' TERM INT; while :; do sleep 1 & wait $!; done";

fn err(what: &str, e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::new(format!("{what}: {e}"))
}

/// Builds the OCI runtime spec of an instance.
pub fn oci_spec(
    spec: &InstanceSpec,
    rootfs: &Path,
    gpus: &dyn GpuDevices,
    host_cpus: u32,
) -> Result<Spec, RuntimeError> {
    let oci = |e: oci_spec::OciSpecError| err("building the OCI spec", e);
    let process = ProcessBuilder::default()
        .terminal(false)
        .user(
            UserBuilder::default()
                .uid(0u32)
                .gid(0u32)
                .build()
                .map_err(oci)?,
        )
        .args(vec![
            "/bin/sh".to_string(),
            "-c".to_string(),
            INIT.to_string(),
        ])
        .env(vec![
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
            format!("GPUCLOUD_INSTANCE_ID={}", spec.instance_id),
            format!(
                "NVIDIA_VISIBLE_DEVICES={}",
                if spec.gpus.is_empty() {
                    "void".to_string()
                } else {
                    spec.gpus
                        .iter()
                        .map(|g| g.uuid.clone())
                        .collect::<Vec<_>>()
                        .join(",")
                }
            ),
        ])
        .cwd("/")
        .no_new_privileges(true)
        .build()
        .map_err(oci)?;
    let mut spec_out = Spec::default();
    spec_out.set_process(Some(process));
    spec_out.set_root(Some(
        RootBuilder::default()
            .path(rootfs)
            .readonly(false)
            .build()
            .map_err(oci)?,
    ));
    spec_out.set_hostname(Some(if spec.hostname.is_empty() {
        spec.instance_id.clone()
    } else {
        spec.hostname.clone()
    }));

    // Devices: deny everything, allow the standard ones and this instance's GPUs.
    let allow = |ty: LinuxDeviceType, major: Option<i64>, minor: Option<i64>| {
        let mut b = LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .typ(ty)
            .access("rwm");
        if let Some(m) = major {
            b = b.major(m);
        }
        if let Some(m) = minor {
            b = b.minor(m);
        }
        b.build().map_err(oci)
    };
    let mut rules = vec![LinuxDeviceCgroupBuilder::default()
        .allow(false)
        .access("rwm")
        .build()
        .map_err(oci)?];
    for (major, minor) in [
        (1, 3),
        (1, 5),
        (1, 7),
        (1, 8),
        (1, 9),
        (5, 0),
        (5, 1),
        (5, 2),
        (136, -1),
    ] {
        rules.push(allow(
            LinuxDeviceType::C,
            Some(major),
            (minor >= 0).then_some(minor),
        )?);
    }
    let mut devices = Vec::new();
    let mut nodes: Vec<crate::gpu::DeviceNode> = Vec::new();
    if !spec.gpus.is_empty() {
        for g in &spec.gpus {
            let n = gpus.gpu_node(g).ok_or_else(|| {
                RuntimeError::new(format!(
                    "GPU {} ({}) has no device node on this host; is the NVIDIA driver loaded?",
                    g.uuid, g.pci_address
                ))
            })?;
            nodes.push(n);
        }
        nodes.extend(gpus.control_nodes());
    }
    for n in &nodes {
        rules.push(allow(LinuxDeviceType::C, Some(n.major), Some(n.minor))?);
        devices.push(
            LinuxDeviceBuilder::default()
                .path(n.path.clone())
                .typ(LinuxDeviceType::C)
                .major(n.major)
                .minor(n.minor)
                .file_mode(0o666u32)
                .uid(0u32)
                .gid(0u32)
                .build()
                .map_err(oci)?,
        );
    }

    // Resources from the instance type.
    let cpus = spec.cpu.clamp(1, host_cpus.max(1));
    let memory = (spec.memory_mib as i64) * 1024 * 1024;
    let resources = LinuxResourcesBuilder::default()
        .devices(rules)
        .memory(
            LinuxMemoryBuilder::default()
                .limit(memory)
                .build()
                .map_err(oci)?,
        )
        .cpu(
            LinuxCpuBuilder::default()
                .cpus(if cpus == 1 {
                    "0".to_string()
                } else {
                    format!("0-{}", cpus - 1)
                })
                .period(100_000u64)
                .quota(i64::from(spec.cpu.max(1)) * 100_000)
                .build()
                .map_err(oci)?,
        )
        .pids(
            LinuxPidsBuilder::default()
                .limit(4096i64)
                .build()
                .map_err(oci)?,
        )
        .build()
        .map_err(oci)?;
    let namespaces = [
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Network,
    ]
    .into_iter()
    .map(|t| LinuxNamespaceBuilder::default().typ(t).build().map_err(oci))
    .collect::<Result<Vec<_>, _>>()?;
    let default_linux = spec_out.linux().clone().unwrap_or_default();
    let linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .resources(resources)
        .devices(devices)
        .cgroups_path(PathBuf::from(format!("/gpucloud/{}", spec.instance_id)))
        .masked_paths(default_linux.masked_paths().clone().unwrap_or_default())
        .readonly_paths(default_linux.readonly_paths().clone().unwrap_or_default())
        .build()
        .map_err(oci)?;
    spec_out.set_linux(Some(linux));

    // Mounts: the defaults plus the GPU driver's files, read-only.
    let mut mounts = spec_out.mounts().clone().unwrap_or_default();
    if !spec.gpus.is_empty() {
        for f in gpus.driver_files() {
            mounts.push(
                MountBuilder::default()
                    .destination(crate::gpu::container_destination(&f, rootfs))
                    .typ("bind")
                    .source(f.clone())
                    .options(vec![
                        "bind".to_string(),
                        "ro".to_string(),
                        "nosuid".to_string(),
                        "nodev".to_string(),
                    ])
                    .build()
                    .map_err(oci)?,
            );
        }
    }
    spec_out.set_mounts(Some(mounts));
    Ok(spec_out)
}

impl ContainerRuntime {
    /// A runtime with these settings and GPU devices.
    pub fn new(cfg: ContainerConfig, gpus: Arc<dyn GpuDevices>) -> Self {
        Self {
            cfg,
            gpus,
            launches: Default::default(),
        }
    }

    /// Where the bundles of a runtime with this state directory live.
    pub fn instances_dir(state_dir: &Path) -> PathBuf {
        state_dir.join("containers")
    }

    /// Stops the container (the caller holds its launch lock).
    async fn stop_unlocked(&self, id: &str, how: StopType) -> Result<(), RuntimeError> {
        if self.runc_status(id).await.as_deref() == Some("running") {
            if how != StopType::Hard {
                let _ = self.runc_ok(&["kill", id, "TERM"]).await;
                let deadline = tokio::time::Instant::now() + self.cfg.stop_grace;
                while tokio::time::Instant::now() < deadline
                    && self.runc_status(id).await.as_deref() == Some("running")
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            if self.runc_status(id).await.as_deref() == Some("running") {
                let _ = self.runc_ok(&["kill", id, "KILL"]).await;
            }
        }
        self.delete(id).await?;
        self.unmount_rootfs(id).await
    }

    fn bundle(&self, id: &str) -> PathBuf {
        Self::instances_dir(&self.cfg.state_dir).join(id)
    }

    fn runc_root(&self) -> PathBuf {
        self.cfg.state_dir.join("runc")
    }

    fn runc(&self) -> Command {
        let mut c = Command::new(&self.cfg.runtime_bin);
        c.arg("--root").arg(self.runc_root());
        c.stdin(std::process::Stdio::null());
        c.kill_on_drop(true);
        c
    }

    async fn runc_ok(&self, args: &[&str]) -> Result<String, RuntimeError> {
        let out = self
            .runc()
            .args(args)
            .output()
            .await
            .map_err(|e| err(&format!("running {}", self.cfg.runtime_bin.display()), e))?;
        if !out.status.success() {
            return Err(RuntimeError::new(format!(
                "{} {} failed: {}",
                self.cfg.runtime_bin.display(),
                args.first().unwrap_or(&""),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).to_string())
    }

    /// The runc state of a container: `running`, `stopped`, `created`, `paused`, or None.
    async fn runc_status(&self, id: &str) -> Option<String> {
        let out = self.runc().args(["state", id]).output().await.ok()?;
        if !out.status.success() {
            return None;
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        v["status"].as_str().map(String::from)
    }

    /// Unpacks an image once; returns its rootfs directory.
    async fn image_rootfs(&self, spec: &InstanceSpec) -> Result<PathBuf, RuntimeError> {
        let dir = self.cfg.state_dir.join("images").join(&spec.image.image_id);
        let rootfs = dir.join("rootfs");
        if rootfs.join("bin").exists() || rootfs.join("usr").exists() {
            return Ok(rootfs);
        }
        let src = if Path::new(&spec.image.location).is_absolute() {
            PathBuf::from(&spec.image.location)
        } else {
            self.cfg.images_dir.join(&spec.image.location)
        };
        if spec.image.location.is_empty() || !src.exists() {
            return Err(RuntimeError::new(format!(
                "image {} is not on this host (looked for {}); build it with images/container/build.sh",
                spec.image.image_id,
                src.display()
            )));
        }
        if src.is_dir() {
            return Ok(src);
        }
        let tmp = dir.join(format!("rootfs.tmp-{}", std::process::id()));
        let _ = tokio::fs::remove_dir_all(&tmp).await;
        tokio::fs::create_dir_all(&tmp)
            .await
            .map_err(|e| err("creating the image directory", e))?;
        let out = Command::new("tar")
            .arg("-xpf")
            .arg(&src)
            .arg("-C")
            .arg(&tmp)
            .output()
            .await
            .map_err(|e| err("running tar", e))?;
        if !out.status.success() {
            let _ = tokio::fs::remove_dir_all(&tmp).await;
            return Err(RuntimeError::new(format!(
                "unpacking image {} failed: {}",
                spec.image.image_id,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        tokio::fs::rename(&tmp, &rootfs)
            .await
            .map_err(|e| err("moving the unpacked image in place", e))?;
        Ok(rootfs)
    }

    fn is_mounted(path: &Path) -> bool {
        let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") else {
            return false;
        };
        let p = path.to_string_lossy();
        mounts.lines().any(|l| l.split(' ').nth(4) == Some(&p))
    }

    async fn mount_rootfs(&self, id: &str, lower: &Path) -> Result<PathBuf, RuntimeError> {
        let b = self.bundle(id);
        let (upper, work, rootfs) = (b.join("upper"), b.join("work"), b.join("rootfs"));
        for d in [&upper, &work, &rootfs] {
            tokio::fs::create_dir_all(d)
                .await
                .map_err(|e| err("creating the bundle", e))?;
        }
        // The writable layer is the tenant's disk: no other host user may
        // walk into it.
        set_mode(&b, 0o700);
        if Self::is_mounted(&rootfs) {
            return Ok(rootfs);
        }
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.display(),
            upper.display(),
            work.display()
        );
        let out = Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &opts])
            .arg(&rootfs)
            .output()
            .await
            .map_err(|e| err("running mount", e))?;
        if !out.status.success() {
            return Err(RuntimeError::new(format!(
                "mounting the root filesystem failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(rootfs)
    }

    async fn unmount_rootfs(&self, id: &str) -> Result<(), RuntimeError> {
        let rootfs = self.bundle(id).join("rootfs");
        if Self::is_mounted(&rootfs) {
            let out = Command::new("umount")
                .arg(&rootfs)
                .output()
                .await
                .map_err(|e| err("running umount", e))?;
            if !out.status.success() && Self::is_mounted(&rootfs) {
                return Err(RuntimeError::new(format!(
                    "unmounting {} failed: {}",
                    rootfs.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
        }
        Ok(())
    }

    async fn write_spec(&self, spec: &InstanceSpec) -> Result<(), RuntimeError> {
        let b = self.bundle(&spec.instance_id);
        tokio::fs::create_dir_all(&b)
            .await
            .map_err(|e| err("creating the bundle", e))?;
        set_mode(&b, 0o700);
        // The spec holds keys and the password: owner-only.
        let mut stored = spec.clone();
        stored.password = None;
        let data = serde_json::to_vec_pretty(&stored).map_err(|e| err("encoding the spec", e))?;
        let tmp = b.join("spec.json.tmp");
        tokio::fs::write(&tmp, data)
            .await
            .map_err(|e| err("writing the spec", e))?;
        set_private(&tmp);
        tokio::fs::rename(&tmp, b.join("spec.json"))
            .await
            .map_err(|e| err("writing the spec", e))
    }

    async fn delete(&self, id: &str) -> Result<(), RuntimeError> {
        if self.runc_status(id).await.is_some() {
            self.runc_ok(&["delete", "--force", id]).await?;
        }
        Ok(())
    }
}

fn set_private(p: &Path) {
    set_mode(p, 0o600);
}

fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode));
}

#[async_trait::async_trait]
impl Runtime for ContainerRuntime {
    fn kinds(&self) -> Vec<RuntimeKind> {
        vec![RuntimeKind::Container]
    }

    fn booted_seq(&self, id: &str) -> Option<i64> {
        crate::runtime::booted_seq(&self.bundle(id))
    }

    async fn list(&self) -> Result<Vec<(String, Power)>, RuntimeError> {
        let dir = self.cfg.state_dir.join("containers");
        let mut out = Vec::new();
        let Ok(mut entries) = tokio::fs::read_dir(&dir).await else {
            return Ok(out);
        };
        while let Ok(Some(e)) = entries.next_entry().await {
            let id = e.file_name().to_string_lossy().to_string();
            if !id.starts_with("ins-") {
                continue;
            }
            let p = if self.runc_status(&id).await.as_deref() == Some("running") {
                Power::Running
            } else {
                Power::Stopped
            };
            out.push((id, p));
        }
        Ok(out)
    }

    async fn status(&self, id: &str) -> Result<Option<Power>, RuntimeError> {
        match self.runc_status(id).await.as_deref() {
            Some("running") | Some("paused") => Ok(Some(Power::Running)),
            Some(_) => Ok(Some(Power::Stopped)),
            None if self.bundle(id).join("spec.json").exists() => Ok(Some(Power::Stopped)),
            None => Ok(None),
        }
    }

    async fn create(&self, spec: &InstanceSpec) -> Result<(), RuntimeError> {
        // Fail early when the image cannot be had.
        self.image_rootfs(spec).await?;
        self.write_spec(spec).await
    }

    async fn update(&self, spec: &InstanceSpec) -> Result<(), RuntimeError> {
        self.write_spec(spec).await
    }

    async fn start(&self, spec: &InstanceSpec) -> Result<(), RuntimeError> {
        let id = &spec.instance_id;
        // Held until runc has made the container (or failed); see `InstanceLocks`.
        let guard = self.launches.lock(id).await;
        if self.runc_status(id).await.as_deref() == Some("running") {
            return Ok(());
        }
        self.delete(id).await?;
        let lower = self.image_rootfs(spec).await?;
        // ResetInstance: the writable layer goes; the (maybe new) image is
        // the root file system again.
        let b = self.bundle(id);
        let reinstall = crate::runtime::reinstall_due(&b, spec.system_disk_seq)
            .map_err(|e| err("checking for a reinstall", e))?;
        if reinstall {
            self.unmount_rootfs(id).await?;
            for d in ["upper", "work"] {
                match tokio::fs::remove_dir_all(b.join(d)).await {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(err("removing the old writable layer", e))
                    }
                    _ => {}
                }
            }
            tracing::info!(instance = %id, image = %spec.image.image_id, "reinstalling the root file system");
        }
        let rootfs = self.mount_rootfs(id, &lower).await?;
        if reinstall {
            crate::runtime::reinstall_done(&b, spec.system_disk_seq)
                .map_err(|e| err("recording the reinstall", e))?;
        }
        let b = self.bundle(id);
        let oci = oci_spec(spec, &rootfs, self.gpus.as_ref(), self.cfg.host_cpus)?;
        oci.save(b.join("config.json"))
            .map_err(|e| err("writing config.json", e))?;
        tokio::fs::create_dir_all(self.runc_root())
            .await
            .map_err(|e| err("creating the runc state directory", e))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(b.join("console.log"))
            .map_err(|e| err("opening the console log", e))?;
        let log2 = log
            .try_clone()
            .map_err(|e| err("opening the console log", e))?;
        let mut run = self.runc();
        run.arg("run")
            .arg("--detach")
            .arg("--bundle")
            .arg(&b)
            .arg("--pid-file")
            .arg(b.join("init.pid"))
            .arg(id)
            .stdout(log)
            .stderr(log2);
        let (out, guard) =
            crate::runtime::to_the_end(
                guard,
                "running runc run",
                async move { run.status().await },
            )
            .await?;
        let out = out.map_err(|e| err("running runc run", e))?;
        if !out.success() {
            let tail = std::fs::read_to_string(b.join("console.log")).unwrap_or_default();
            let tail: String = tail.lines().rev().take(3).collect::<Vec<_>>().join(" / ");
            let _ = self.delete(id).await;
            let _ = self.unmount_rootfs(id).await;
            return Err(RuntimeError::new(format!(
                "the container did not start: {tail}"
            )));
        }
        crate::runtime::record_boot(&b, spec.reboot_seq);
        drop(guard);
        Ok(())
    }

    async fn stop(&self, id: &str, how: StopType) -> Result<(), RuntimeError> {
        let _launch = self.launches.lock(id).await;
        self.stop_unlocked(id, how).await
    }

    async fn reboot(&self, spec: &InstanceSpec, how: StopType) -> Result<(), RuntimeError> {
        self.stop(&spec.instance_id, how).await?;
        self.start(spec).await
    }

    async fn destroy(&self, id: &str) -> Result<(), RuntimeError> {
        let launch = self.launches.lock(id).await;
        self.stop_unlocked(id, StopType::Hard).await?;
        let b = self.bundle(id);
        if b.exists() {
            tokio::fs::remove_dir_all(&b)
                .await
                .map_err(|e| err(&format!("removing {}", b.display()), e))?;
        }
        drop(launch);
        self.launches.forget(id);
        Ok(())
    }

    async fn exec(&self, id: &str, req: &ExecRequest) -> Result<ExecOutput, RuntimeError> {
        if self.runc_status(id).await.as_deref() != Some("running") {
            return Err(RuntimeError::new(format!("instance {id} is not running")));
        }
        let script = String::from_utf8_lossy(&req.script).to_string();
        let mut cmd = self.runc();
        // The exec'd process's host PID, to kill its whole tree at the timeout.
        let pid_file = self.bundle(id).join(format!(
            "exec-{}.pid",
            EXEC_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        cmd.args(["exec", "--cwd", &req.working_directory]);
        cmd.arg("--pid-file").arg(&pid_file);
        // The user as the instance knows it (its own /etc/passwd); runc
        // switches to it, so the image needs no su and the container keeps
        // its reduced capabilities.
        let Some(user) = passwd_entry(&self.bundle(id).join("rootfs"), &req.username) else {
            return Ok(ExecOutput {
                exit_code: 126,
                output: format!("no user {} in the instance\n", req.username).into_bytes(),
                timed_out: false,
                dropped: 0,
            });
        };
        cmd.arg("--user")
            .arg(format!("{}:{}", user.uid, user.gid))
            .args(
                user.groups
                    .iter()
                    .flat_map(|g| ["--additional-gids".to_string(), g.to_string()]),
            )
            .args(["--env", &format!("HOME={}", user.home)])
            .args(["--env", &format!("USER={}", req.username)])
            .args(["--env", &format!("LOGNAME={}", req.username)]);
        cmd.args([id, "/bin/sh", "-c", &script]);
        cmd.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| err("running runc exec", e))?;
        // Output is read as it comes, so a command killed at its timeout
        // still returns what it printed.
        let out = std::sync::Arc::new(std::sync::Mutex::new(Captured::default()));
        let mut readers = Vec::new();
        if let Some(s) = child.stdout.take() {
            readers.push(tokio::spawn(collect(s, out.clone())));
        }
        if let Some(s) = child.stderr.take() {
            readers.push(tokio::spawn(collect(s, out.clone())));
        }
        let waited = tokio::time::timeout(req.timeout, child.wait()).await;
        let timed_out = waited.is_err();
        let status = match waited {
            Ok(r) => r.map_err(|e| err("waiting for the command", e))?,
            Err(_) => {
                if let Some(pid) = std::fs::read_to_string(&pid_file)
                    .ok()
                    .and_then(|p| p.trim().parse::<i32>().ok())
                {
                    crate::runtime::kill_process_tree(pid);
                }
                let _ = child.start_kill();
                child
                    .wait()
                    .await
                    .map_err(|e| err("waiting for the command", e))?
            }
        };
        // Grandchildren that left the tree may hold the pipes open: wait a
        // little, then stop reading.
        for mut r in readers {
            if tokio::time::timeout(Duration::from_secs(5), &mut r)
                .await
                .is_err()
            {
                r.abort();
            }
        }
        let _ = std::fs::remove_file(&pid_file);
        let Captured {
            bytes: mut output,
            dropped,
        } = std::mem::take(&mut *out.lock().unwrap_or_else(|p| p.into_inner()));
        if timed_out {
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
                dropped,
            });
        }
        let code = status.code().map_or_else(
            || {
                use std::os::unix::process::ExitStatusExt;
                128 + i64::from(status.signal().unwrap_or(9))
            },
            i64::from,
        );
        Ok(ExecOutput {
            exit_code: code,
            output,
            timed_out: false,
            dropped,
        })
    }
}

/// A user of an instance, from its root file system.
#[derive(Debug, PartialEq, Eq)]
struct PasswdEntry {
    uid: u32,
    gid: u32,
    home: String,
    groups: Vec<u32>,
}

/// Reads `name` from `<rootfs>/etc/passwd` (and its supplementary groups
/// from `/etc/group`). The tenant owns those files: symbolic links are not
/// followed (they could point at the host's files), and lines that do not
/// parse are skipped.
fn passwd_entry(rootfs: &Path, name: &str) -> Option<PasswdEntry> {
    // Each component is opened relative to the one before with O_NOFOLLOW
    // (no link, and no swapping `etc` for a link between check and open),
    // O_NONBLOCK (a FIFO in its place cannot hang the agent), and only a
    // regular file is read, at most 4 MiB.
    fn read_plain(rootfs: &Path, file: &str) -> Option<String> {
        use nix::fcntl::{openat, OFlag};
        use nix::sys::stat::Mode;
        use std::io::Read;
        use std::os::fd::{AsFd, OwnedFd};
        let dir = std::fs::File::open(rootfs).ok()?;
        let open = |at: std::os::fd::BorrowedFd<'_>, name: &str, extra: OFlag| -> Option<OwnedFd> {
            openat(
                at,
                name,
                OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK | extra,
                Mode::empty(),
            )
            .ok()
        };
        let etc = open(dir.as_fd(), "etc", OFlag::O_DIRECTORY)?;
        let f = open(etc.as_fd(), file, OFlag::empty())?;
        let mut f = std::fs::File::from(f);
        if !f.metadata().ok()?.is_file() {
            return None;
        }
        let mut s = String::new();
        f.by_ref().take(4 << 20).read_to_string(&mut s).ok()?;
        Some(s)
    }
    if name.is_empty() || name.contains(':') || name.contains('/') {
        return None;
    }
    let Some(passwd) = read_plain(rootfs, "passwd") else {
        // An image without /etc/passwd (built from scratch) still has root.
        return (name == "root").then(|| PasswdEntry {
            uid: 0,
            gid: 0,
            home: "/root".into(),
            groups: vec![],
        });
    };
    let mut entry = passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 7 && f[0] == name).then(|| {
            Some(PasswdEntry {
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: if f[5].is_empty() {
                    "/".into()
                } else {
                    f[5].to_string()
                },
                groups: vec![],
            })
        })?
    })?;
    if let Some(group) = read_plain(rootfs, "group") {
        for l in group.lines() {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() >= 4 && f[3].split(',').any(|m| m == name) {
                if let Ok(g) = f[2].parse::<u32>() {
                    if g != entry.gid && !entry.groups.contains(&g) {
                        entry.groups.push(g);
                    }
                }
            }
        }
    }
    Some(entry)
}

/// Numbers the PID files of concurrent commands.
static EXEC_SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A command's output as far as it is kept: the tail, and how many bytes
/// before it were let go.
#[derive(Debug, Default)]
struct Captured {
    bytes: Vec<u8>,
    dropped: u64,
}

impl Captured {
    /// The tail kept (the agent reports only the tail anyway), so a chatty
    /// command cannot grow the agent's memory.
    const KEEP: usize = 1 << 20;

    fn push(&mut self, data: &[u8]) {
        self.bytes.extend_from_slice(data);
        if self.bytes.len() > 2 * Self::KEEP {
            let cut = self.bytes.len() - Self::KEEP;
            self.bytes.drain(..cut);
            self.dropped += cut as u64;
        }
    }
}

/// Appends everything a pipe yields to `out`, until it closes. The grandchildren
/// of a killed command may hold the pipe: the caller bounds the wait.
async fn collect(
    mut r: impl tokio::io::AsyncRead + Unpin,
    out: std::sync::Arc<std::sync::Mutex<Captured>>,
) {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 8192];
    while let Ok(n) = r.read(&mut buf).await {
        if n == 0 {
            break;
        }
        out.lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(&buf[..n]);
    }
}

/// Whether runc can run here (binary present, we are root), with a reason when not.
pub fn available(runtime_bin: &Path) -> Result<(), String> {
    if !runtime_bin.exists() {
        return Err(format!(
            "{} is not installed (apt-get install runc)",
            runtime_bin.display()
        ));
    }
    if !running_as_root() {
        return Err("the agent does not run as root; containers need root".into());
    }
    Ok(())
}

/// Whether the effective user is root (from `/proc/self/status`).
pub fn running_as_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2))
        == Some("0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chatty_output_keeps_the_tail_and_counts_what_it_let_go() {
        let mut c = Captured::default();
        let chunk = vec![b'x'; 8192];
        let total = 5 * Captured::KEEP + 123;
        let mut sent = 0;
        while sent < total {
            let n = chunk.len().min(total - sent);
            c.push(&chunk[..n]);
            sent += n;
        }
        c.push(b"the end");
        assert!(c.bytes.len() <= 2 * Captured::KEEP);
        assert!(c.bytes.ends_with(b"the end"));
        assert_eq!(c.dropped + c.bytes.len() as u64, total as u64 + 7);
    }

    #[test]
    fn users_come_from_the_instance_files_without_following_links() {
        let root = tempfile::tempdir().unwrap();
        let etc = root.path().join("etc");
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(
            etc.join("passwd"),
            "root:x:0:0:root:/root:/bin/sh\nbroken line\nalice:x:1000:1000::/home/alice:/bin/sh\nnobody:x:65534:65534::/nonexistent:/bin/false\n",
        )
        .unwrap();
        std::fs::write(
            etc.join("group"),
            "alice:x:1000:\ndocker:x:999:alice,bob\nvideo:x:44:alice\n",
        )
        .unwrap();
        assert_eq!(
            passwd_entry(root.path(), "alice"),
            Some(PasswdEntry {
                uid: 1000,
                gid: 1000,
                home: "/home/alice".into(),
                groups: vec![999, 44]
            })
        );
        assert_eq!(passwd_entry(root.path(), "root").map(|e| e.uid), Some(0));
        assert_eq!(passwd_entry(root.path(), "mallory"), None);
        assert_eq!(passwd_entry(root.path(), "broken line"), None);
        // A tenant's /etc/passwd that points at the host's is not read;
        // root stays root.
        std::fs::remove_file(etc.join("passwd")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", etc.join("passwd")).unwrap();
        assert_eq!(passwd_entry(root.path(), "alice"), None);
        assert_eq!(passwd_entry(root.path(), "root").map(|e| e.uid), Some(0));
        // A FIFO in its place does not hang the agent.
        std::fs::remove_file(etc.join("passwd")).unwrap();
        nix::unistd::mkfifo(&etc.join("passwd"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert_eq!(passwd_entry(root.path(), "alice"), None);
        // Nor does an `etc` that is a link.
        std::fs::remove_file(etc.join("passwd")).unwrap();
        std::fs::remove_dir_all(&etc).unwrap();
        std::os::unix::fs::symlink("/etc", &etc).unwrap();
        assert_eq!(
            passwd_entry(root.path(), "root").map(|e| e.home),
            Some("/root".into())
        );
        assert_eq!(passwd_entry(root.path(), "daemon"), None);
    }
    use crate::gpu::FakeGpuDevices;
    use gpucloud_agent_api::{AssignedGpu, DesiredPower, ImageRef};

    fn spec(gpus: u32, cpu: u32) -> InstanceSpec {
        InstanceSpec {
            instance_id: "ins-abcdefgh".into(),
            spec_generation: 1,
            power: DesiredPower::Running,
            reboot_seq: 0,
            system_disk_seq: 0,
            stop_type: None,
            name: "n".into(),
            hostname: "ins-abcdefgh".into(),
            instance_type: "GT5.12XLARGE480".into(),
            cpu,
            memory_mib: 4096,
            gpus: (0..gpus)
                .map(|i| AssignedGpu {
                    index: i + 2,
                    uuid: format!("GPU-{i}"),
                    pci_address: format!("0000:{:02x}:00.0", 0x18 + i),
                })
                .collect(),
            image: ImageRef {
                image_id: "img-gc0ctr12".into(),
                runtime: "container".into(),
                location: String::new(),
            },
            user_data: None,
            password: None,
            ssh_keys: vec![],
            nic: None,
            system_disk_gib: None,
            data_disks_gib: vec![],
            app_id: 1,
        }
    }

    fn rules(s: &Spec) -> Vec<(bool, Option<i64>, Option<i64>)> {
        s.linux()
            .as_ref()
            .unwrap()
            .resources()
            .as_ref()
            .unwrap()
            .devices()
            .clone()
            .unwrap()
            .iter()
            .map(|d| (d.allow(), d.major(), d.minor()))
            .collect()
    }

    #[test]
    fn a_cpu_instance_sees_no_gpu() {
        let gpus = FakeGpuDevices {
            files: vec!["/usr/lib/x86_64-linux-gnu/libcuda.so.1".into()],
        };
        let s = oci_spec(&spec(0, 2), Path::new("/r"), &gpus, 8).unwrap();
        assert!(s
            .linux()
            .as_ref()
            .unwrap()
            .devices()
            .clone()
            .unwrap_or_default()
            .is_empty());
        assert!(!rules(&s)
            .iter()
            .any(|r| r.1 == Some(195) || r.1 == Some(511)));
        assert!(rules(&s)[0] == (false, None, None), "deny everything first");
        let mounts = s.mounts().clone().unwrap();
        assert!(!mounts
            .iter()
            .any(|m| m.destination().to_string_lossy().contains("libcuda")));
        assert_eq!(s.hostname().as_deref(), Some("ins-abcdefgh"));
        let env = s.process().as_ref().unwrap().env().clone().unwrap();
        assert!(env.contains(&"NVIDIA_VISIBLE_DEVICES=void".to_string()));
    }

    #[test]
    fn gpu_instances_get_exactly_their_devices_and_the_driver() {
        let gpus = FakeGpuDevices {
            files: vec![
                "/usr/local/nvidia/lib64/libcuda.so.1".into(),
                "/usr/local/nvidia/bin/nvidia-smi".into(),
            ],
        };
        let s = oci_spec(&spec(2, 48), Path::new("/r"), &gpus, 8).unwrap();
        let devs: Vec<String> = s
            .linux()
            .as_ref()
            .unwrap()
            .devices()
            .clone()
            .unwrap()
            .iter()
            .map(|d| d.path().to_string_lossy().to_string())
            .collect();
        assert_eq!(
            devs,
            vec![
                "/dev/nvidia2",
                "/dev/nvidia3",
                "/dev/nvidiactl",
                "/dev/nvidia-uvm",
                "/dev/nvidia-uvm-tools"
            ]
        );
        let r = rules(&s);
        assert!(r.contains(&(true, Some(195), Some(2))));
        assert!(r.contains(&(true, Some(195), Some(3))));
        assert!(
            !r.contains(&(true, Some(195), Some(0))),
            "not another instance's GPU"
        );
        assert!(
            !r.iter().any(|x| x.0 && x.1 == Some(195) && x.2.is_none()),
            "no wildcard on the GPU major"
        );
        let mounts = s.mounts().clone().unwrap();
        let smi = mounts
            .iter()
            .find(|m| m.destination() == Path::new("/usr/bin/nvidia-smi"))
            .unwrap();
        assert!(smi.options().clone().unwrap().contains(&"ro".to_string()));
        assert_eq!(
            smi.source().as_deref(),
            Some(Path::new("/usr/local/nvidia/bin/nvidia-smi"))
        );
        // Libraries land where the image's loader looks, wherever the host keeps them.
        let cuda = mounts
            .iter()
            .find(|m| m.destination() == Path::new("/usr/lib/x86_64-linux-gnu/libcuda.so.1"))
            .unwrap();
        assert_eq!(
            cuda.source().as_deref(),
            Some(Path::new("/usr/local/nvidia/lib64/libcuda.so.1"))
        );
        // vCPUs are capped to the host, quota follows the type.
        let cpu = s
            .linux()
            .as_ref()
            .unwrap()
            .resources()
            .as_ref()
            .unwrap()
            .cpu()
            .clone()
            .unwrap();
        assert_eq!(cpu.cpus().as_deref(), Some("0-7"));
        assert_eq!(cpu.quota(), Some(48 * 100_000));
        let mem = s
            .linux()
            .as_ref()
            .unwrap()
            .resources()
            .as_ref()
            .unwrap()
            .memory()
            .unwrap();
        assert_eq!(mem.limit(), Some(4096 * 1024 * 1024));
        let env = s.process().as_ref().unwrap().env().clone().unwrap();
        assert!(env.contains(&"NVIDIA_VISIBLE_DEVICES=GPU-0,GPU-1".to_string()));
    }

    #[test]
    fn missing_gpu_nodes_are_a_clear_error() {
        struct NoDevices;
        impl GpuDevices for NoDevices {
            fn gpu_node(&self, _: &AssignedGpu) -> Option<crate::gpu::DeviceNode> {
                None
            }
            fn control_nodes(&self) -> Vec<crate::gpu::DeviceNode> {
                vec![]
            }
            fn driver_files(&self) -> Vec<PathBuf> {
                vec![]
            }
        }
        let e = oci_spec(&spec(1, 4), Path::new("/r"), &NoDevices, 8).unwrap_err();
        assert!(e.0.contains("NVIDIA driver"), "{e}");
    }
}
