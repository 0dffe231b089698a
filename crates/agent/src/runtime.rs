//! The runtime seam: how an agent creates, powers and destroys instances.
//!
//! The simulated, container and QEMU runtimes implement the same trait, so
//! the convergence loop in [`crate::Agent`] is the same code for all of them.
//! Every method is idempotent: calling it again after a crash is safe.

use gpucloud_agent_api::{InstanceSpec, RuntimeKind};

/// Power state a runtime reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Power {
    /// Running.
    Running,
    /// Present, powered off.
    Stopped,
}

/// How to stop or reboot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StopType {
    /// Ask the guest (ACPI / SIGTERM) and wait.
    #[default]
    Soft,
    /// Pull the plug.
    Hard,
    /// Soft, then hard after a timeout.
    SoftFirst,
}

impl StopType {
    /// Parses the API value (absent: `SOFT`).
    pub fn parse(s: Option<&str>) -> Self {
        match s {
            Some("HARD") => Self::Hard,
            Some("SOFT_FIRST") => Self::SoftFirst,
            _ => Self::Soft,
        }
    }
}

/// A runtime failure, with a message a person can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RuntimeError(pub String);

impl RuntimeError {
    /// From anything displayable.
    pub fn new(msg: impl Into<String>) -> Self {
        Self(msg.into())
    }
}

/// A command to run inside an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecRequest {
    /// The script (run by `/bin/sh`).
    pub script: Vec<u8>,
    /// Working directory.
    pub working_directory: String,
    /// User.
    pub username: String,
    /// Kill after this long.
    pub timeout: std::time::Duration,
}

/// What a command did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    /// Exit status (signals as 128 + n).
    pub exit_code: i64,
    /// Combined stdout and stderr.
    pub output: Vec<u8>,
    /// Killed at the timeout.
    pub timed_out: bool,
    /// Bytes of output the runtime discarded before `output` (it keeps the
    /// tail of a chatty command), so the task can say how much is missing.
    pub dropped: u64,
}

/// An instance runtime.
#[async_trait::async_trait]
pub trait Runtime: Send + Sync + 'static {
    /// The runtime kinds this implementation serves.
    fn kinds(&self) -> Vec<RuntimeKind>;

    /// Instances this runtime has right now (adoption after an agent restart).
    async fn list(&self) -> Result<Vec<(String, Power)>, RuntimeError>;

    /// Power state of one instance; `None` when it does not exist.
    async fn status(&self, id: &str) -> Result<Option<Power>, RuntimeError>;

    /// Creates the instance, powered off.
    async fn create(&self, spec: &InstanceSpec) -> Result<(), RuntimeError>;

    /// Applies a changed spec (shape, keys, host name) to an existing instance.
    async fn update(&self, spec: &InstanceSpec) -> Result<(), RuntimeError>;

    /// Powers the instance on.
    async fn start(&self, spec: &InstanceSpec) -> Result<(), RuntimeError>;

    /// Powers the instance off.
    async fn stop(&self, id: &str, how: StopType) -> Result<(), RuntimeError>;

    /// Reboots the instance.
    async fn reboot(&self, spec: &InstanceSpec, how: StopType) -> Result<(), RuntimeError>;

    /// The reboot count (`InstanceSpec::reboot_seq`) the running instance
    /// last booted with, when the runtime records it ([`record_boot`]).
    /// An agent that restarts while a reboot (or a reinstall, a key or
    /// password change with `ForceStop`) is pending learns from it that the
    /// instance must still reboot. `None`: not recorded.
    fn booted_seq(&self, id: &str) -> Option<i64> {
        let _ = id;
        None
    }

    /// Destroys the instance and everything it left on the host.
    async fn destroy(&self, id: &str) -> Result<(), RuntimeError>;

    /// Waits until a running instance is up as [`Runtime::start`] means it
    /// (a VM's guest answers). A restarted agent calls it for the instances
    /// it adopts, which may still be booting.
    async fn ready(&self, spec: &InstanceSpec) -> Result<(), RuntimeError> {
        let _ = spec;
        Ok(())
    }

    /// Runs a command inside a running instance.
    async fn exec(&self, id: &str, req: &ExecRequest) -> Result<ExecOutput, RuntimeError> {
        let _ = (id, req);
        Err(RuntimeError::new(
            "this runtime cannot run commands inside instances",
        ))
    }

    /// Connects to the serial console of a running instance (the relay of
    /// `DescribeInstanceVncUrl` sessions). The console takes one client at a
    /// time; dropping the stream lets the next one in.
    async fn console(&self, id: &str) -> Result<tokio::net::UnixStream, RuntimeError> {
        let _ = id;
        Err(RuntimeError::new(
            "this runtime has no serial console; the console exists for VM instances only",
        ))
    }
}

/// Per-instance locks that keep removal from running beside a launch.
///
/// The agent cancels a boot in progress when the instance is terminated.
/// Some launch steps outlive a cancelled future: QEMU daemonizes and writes
/// its PID file on its own; binding GPUs to `vfio-pci` runs on a blocking
/// thread; `runc run` creates the container whatever happens to its caller.
/// A launch holds its instance's lock and runs such steps with
/// [`to_the_end`], which carries the lock into a task of its own; `stop`
/// and `destroy` take the lock first. So a removal that follows a
/// cancellation waits for the step to finish and then finds (and removes)
/// what it made, instead of missing a VM that appears a moment later with
/// GPUs the control plane has already given back.
#[derive(Debug, Default)]
pub struct InstanceLocks(
    std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<tokio::sync::Mutex<()>>>>,
);

/// One instance's lock, held.
pub type InstanceGuard = tokio::sync::OwnedMutexGuard<()>;

impl InstanceLocks {
    /// `id`'s lock, to take (maybe several times).
    pub fn handle(&self, id: &str) -> std::sync::Arc<tokio::sync::Mutex<()>> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(id.to_string())
            .or_default()
            .clone()
    }

    /// Waits for and takes `id`'s lock.
    pub async fn lock(&self, id: &str) -> InstanceGuard {
        self.handle(id).lock_owned().await
    }

    /// Drops `id`'s entry (after it is destroyed).
    pub fn forget(&self, id: &str) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }
}

/// Runs `step` to its end in a task of its own while holding `guard`, even
/// if the caller is cancelled meanwhile, and hands the guard back.
pub async fn to_the_end<T: Send + 'static>(
    guard: InstanceGuard,
    what: &str,
    step: impl std::future::Future<Output = T> + Send + 'static,
) -> Result<(T, InstanceGuard), RuntimeError> {
    tokio::spawn(async move {
        let out = step.await;
        (out, guard)
    })
    .await
    .map_err(|e| RuntimeError::new(format!("{what}: {e}")))
}

/// Whether a name is an instance ID (and so one safe path component).
fn looks_like_instance(id: &str) -> bool {
    gpucloud_api_types::ids::is_valid(gpucloud_api_types::ids::IdKind::Instance, id)
}

/// A runtime this host lacks right now (its programs are missing, the agent
/// is not root…), standing in for it so that an instance it left on the
/// host is never reported gone. The runtime's state directory is the
/// evidence: an instance with a directory there is reported present
/// (stopped, since nothing here can look inside it) and every operation on
/// it fails with the reason; one without is truly absent. Without this, an
/// agent restarted while, say, QEMU is being upgraded would report a VM it
/// was told to remove as `Absent`, and the control plane would hand the GPUs
/// that VM still holds to someone else.
#[derive(Debug, Clone)]
pub struct Unavailable {
    kind: RuntimeKind,
    dir: std::path::PathBuf,
    why: String,
}

impl Unavailable {
    /// Stands in for `kind`, whose instances would live under `dir`, missing because of `why`.
    pub fn new(kind: RuntimeKind, dir: std::path::PathBuf, why: impl Into<String>) -> Self {
        Self {
            kind,
            dir,
            why: why.into(),
        }
    }

    fn present(&self, id: &str) -> bool {
        looks_like_instance(id) && self.dir.join(id).exists()
    }

    fn refuse(&self, id: &str) -> RuntimeError {
        RuntimeError::new(format!(
            "this host's `{}` runtime is unavailable ({}); {} cannot be managed until it is back (run `gpucloud doctor` on the host)",
            self.kind.as_str(),
            self.why,
            if self.present(id) {
                format!("instance {id}, whose files remain in {},", self.dir.display())
            } else {
                format!("instance {id}")
            }
        ))
    }
}

#[async_trait::async_trait]
impl Runtime for Unavailable {
    fn kinds(&self) -> Vec<RuntimeKind> {
        vec![self.kind]
    }

    async fn list(&self) -> Result<Vec<(String, Power)>, RuntimeError> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Ok(vec![]);
        };
        Ok(entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .filter(|id| looks_like_instance(id))
            .map(|id| (id, Power::Stopped))
            .collect())
    }

    async fn status(&self, id: &str) -> Result<Option<Power>, RuntimeError> {
        Ok(self.present(id).then_some(Power::Stopped))
    }

    async fn create(&self, spec: &InstanceSpec) -> Result<(), RuntimeError> {
        Err(self.refuse(&spec.instance_id))
    }

    async fn update(&self, spec: &InstanceSpec) -> Result<(), RuntimeError> {
        Err(self.refuse(&spec.instance_id))
    }

    async fn start(&self, spec: &InstanceSpec) -> Result<(), RuntimeError> {
        Err(self.refuse(&spec.instance_id))
    }

    async fn stop(&self, id: &str, _how: StopType) -> Result<(), RuntimeError> {
        if self.present(id) {
            Err(self.refuse(id))
        } else {
            Ok(())
        }
    }

    async fn reboot(&self, spec: &InstanceSpec, _how: StopType) -> Result<(), RuntimeError> {
        Err(self.refuse(&spec.instance_id))
    }

    async fn destroy(&self, id: &str) -> Result<(), RuntimeError> {
        if self.present(id) {
            Err(self.refuse(id))
        } else {
            Ok(())
        }
    }
}

/// Kills a process and every process below it, as TAT does when a command
/// passes its `Timeout`: each process is stopped before its children are
/// read (so it cannot start new ones), children are killed before their
/// parent (so none is re-parented out of reach). Processes that already left
/// the tree (daemons that double-forked) are not followed.
pub fn kill_process_tree(pid: i32) {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    fn children(pid: i32) -> Vec<i32> {
        let mut out = Vec::new();
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return out;
        };
        for t in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
                out.extend(s.split_whitespace().filter_map(|c| c.parse::<i32>().ok()));
            }
        }
        out
    }
    fn walk(pid: i32, depth: usize) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGSTOP);
        if depth < 64 {
            for c in children(pid) {
                walk(c, depth + 1);
            }
        }
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    if pid > 1 {
        walk(pid, 0);
    }
}

/// Whether an instance's system disk must be rebuilt before it boots: the
/// spec's reinstall count (`ResetInstance`) is past the one recorded in
/// `<dir>/system.seq` (absent: none yet). A crash between rebuilding and
/// [`reinstall_done`] rebuilds again, before anything booted from the new
/// disk. A record that cannot be read is an error, never a reason to wipe
/// a disk in use.
pub fn reinstall_due(dir: &std::path::Path, wanted: i64) -> std::io::Result<bool> {
    let done: i64 = match std::fs::read_to_string(dir.join("system.seq")) {
        Ok(s) => s.trim().parse().map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "{} is damaged ({:?}); write the reinstall count the disk has (0 if never reinstalled) into it",
                    dir.join("system.seq").display(),
                    s.trim()
                ),
            )
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(e),
    };
    Ok(wanted > done)
}

/// Records, durably (file and directory synced), that the system disk was
/// rebuilt for reinstall `seq`.
pub fn reinstall_done(dir: &std::path::Path, seq: i64) -> std::io::Result<()> {
    write_durably(dir, "system.seq", seq.to_string().as_bytes())
}

fn write_durably(dir: &std::path::Path, name: &str, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(name))?;
    std::fs::File::open(dir)?.sync_all()
}

/// Records the reboot count an instance booted with (see
/// [`Runtime::booted_seq`]). Best effort: without it, a pending reboot is
/// only missed across an agent restart.
pub fn record_boot(dir: &std::path::Path, reboot_seq: i64) {
    if let Err(e) = write_durably(dir, "boot.seq", reboot_seq.to_string().as_bytes()) {
        tracing::warn!(dir = %dir.display(), error = %e, "could not record the boot");
    }
}

/// The reboot count recorded by [`record_boot`].
pub fn booted_seq(dir: &std::path::Path) -> Option<i64> {
    std::fs::read_to_string(dir.join("boot.seq"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// [`kill_process_tree`] as a POSIX shell function, for guests (`$1` is the
/// process ID); it needs only `/proc/<pid>/task/<tid>/children`.
pub const KILL_TREE_SH: &str = "t() { kill -STOP \"$1\" 2>/dev/null; for c in $(cat /proc/\"$1\"/task/*/children 2>/dev/null); do t \"$c\"; done; kill -KILL \"$1\" 2>/dev/null; }; t \"$1\"";

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_launch_step_finishes_and_holds_removal_off_when_its_caller_is_cancelled() {
        let dir = tempfile::tempdir().unwrap();
        let made = dir.path().join("qemu.pid");
        let locks = std::sync::Arc::new(InstanceLocks::default());
        let (l, m) = (locks.clone(), made.clone());
        let (began_tx, began) = tokio::sync::oneshot::channel();
        let launch = tokio::spawn(async move {
            let guard = l.lock("ins-abcd1234").await;
            let ((), _guard) = to_the_end(guard, "launching", async move {
                let _ = began_tx.send(());
                tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                std::fs::write(&m, b"4242").unwrap();
            })
            .await
            .unwrap();
            // The caller would go on to wait for the guest here.
            std::future::pending::<()>().await;
        });
        began.await.unwrap();
        launch.abort(); // a terminate during the boot
        let _removal = locks.lock("ins-abcd1234").await;
        assert!(
            made.exists(),
            "removal waited for the launch step to finish"
        );
        // Other instances are not held up.
        let _other = locks.lock("ins-efgh5678").await;
    }

    #[tokio::test]
    async fn a_missing_runtime_never_reports_an_instance_it_left_as_gone() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("ins-abcd1234")).unwrap();
        let rt = Unavailable::new(
            RuntimeKind::Qemu,
            dir.path().into(),
            "qemu-system-x86_64 is not installed",
        );
        assert_eq!(
            rt.status("ins-abcd1234").await.unwrap(),
            Some(Power::Stopped)
        );
        let e = rt.destroy("ins-abcd1234").await.unwrap_err();
        assert!(e.0.contains("qemu-system-x86_64 is not installed"), "{e}");
        assert!(e.0.contains("gpucloud doctor"), "{e}");
        assert!(rt.stop("ins-abcd1234", StopType::Hard).await.is_err());
        assert_eq!(
            rt.list().await.unwrap(),
            vec![("ins-abcd1234".to_string(), Power::Stopped)]
        );
        // Nothing of another instance is here: it is gone, and removing it is done.
        assert_eq!(rt.status("ins-efgh5678").await.unwrap(), None);
        rt.destroy("ins-efgh5678").await.unwrap();
        assert_eq!(rt.status("../etc").await.unwrap(), None);
    }

    #[test]
    fn reinstalls_are_counted_once() {
        let d = tempfile::tempdir().unwrap();
        let due = |n| reinstall_due(d.path(), n).unwrap();
        assert!(!due(0), "a new instance has nothing to rebuild");
        assert!(due(1));
        reinstall_done(d.path(), 1).unwrap();
        assert!(!due(1), "done once");
        assert!(due(2));
        std::fs::write(d.path().join("system.seq"), "garbage").unwrap();
        assert!(
            reinstall_due(d.path(), 2).is_err(),
            "a damaged record never wipes a disk"
        );
        // Boots.
        assert_eq!(booted_seq(d.path()), None);
        record_boot(d.path(), 3);
        assert_eq!(booted_seq(d.path()), Some(3));
    }

    #[test]
    fn a_process_tree_dies_whole() {
        // sh → (sleep, sh → sleep): every one of them goes.
        let mut child = std::process::Command::new("/bin/sh")
            .args([
                "-c",
                "sleep 300 & sh -c 'sleep 300 & wait' & echo ready; wait",
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        let pid = child.id() as i32;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let descendants = |pid: i32| -> Vec<i32> {
            let mut all = vec![];
            let mut queue = vec![pid];
            while let Some(p) = queue.pop() {
                for t in std::fs::read_dir(format!("/proc/{p}/task"))
                    .into_iter()
                    .flatten()
                    .flatten()
                {
                    let s = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
                    for c in s.split_whitespace().filter_map(|c| c.parse().ok()) {
                        all.push(c);
                        queue.push(c);
                    }
                }
            }
            all
        };
        let mut below = descendants(pid);
        while below.len() < 3 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
            below = descendants(pid);
        }
        assert!(below.len() >= 3, "{below:?}");
        // (state, start time) of a process; the start time tells a reused PID.
        let stat = |p: i32| -> Option<(String, String)> {
            let s = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
            let f: Vec<String> = s
                .rsplit(')')
                .next()?
                .split_whitespace()
                .map(String::from)
                .collect();
            Some((f.first()?.clone(), f.get(19)?.clone()))
        };
        let started: Vec<(i32, String)> = below
            .iter()
            .filter_map(|&p| stat(p).map(|(_, t)| (p, t)))
            .collect();
        kill_process_tree(pid);
        let status = child.wait().unwrap();
        assert!(!status.success());
        // SIGKILL is delivered asynchronously: each process must be gone (or
        // a zombie) within a deadline.
        for (p, t) in started {
            let dead = || match stat(p) {
                None => true,
                Some((state, start)) => start != t || state == "Z" || state == "X",
            };
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while !dead() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            assert!(dead(), "process {p} still runs: {:?}", stat(p));
        }
    }
}
