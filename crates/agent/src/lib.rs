//! The gpucloud host agent: it makes a host match the desired state the
//! control plane holds for it.
//!
//! # The loop
//! One task owns the host's view: a map from instance to its desired spec and
//! last observed status. A poller task long-polls the control plane for
//! desired state newer than the last generation seen and hands it over; for
//! every instance whose observed state differs from its spec, the owner
//! spawns one convergence task (at most one per instance at a time). Each
//! convergence task reads the runtime's actual state and takes the steps
//! needed — create, update, start, stop, reboot, destroy — then sends its
//! result back. The owner reports the full observed state, coalescing bursts,
//! and re-reports on a heartbeat.
//!
//! Nothing depends on having seen a change happen: after a restart the agent
//! adopts whatever its runtimes already run (see [`Runtime::list`]) and the
//! same loop converges it. Instances the runtimes have that no desired state
//! mentions are destroyed only once the control plane has answered, so a
//! restarted agent never kills instances it has not been told about yet.
//!
//! Serial-console sessions listed in the desired state are relayed by
//! [`console`], one task per session, started once per session ID.

pub mod console;
pub mod container;
pub mod doctor;
pub mod gpu;
pub mod host;
pub mod inventory;
pub mod journal;
pub mod metrics;
pub mod nvml;
pub mod qemu;
pub mod remote;
pub mod runtime;
pub mod sim;
pub mod vfio;

use gpucloud_agent_api::{
    CommandResult, CommandSpec, ControlPlane, DesiredPower, DesiredState, InstanceSpec,
    InstanceStatus, LinkError, ObservedPower, ObservedState, MAX_COMMAND_OUTPUT,
};
use inventory::Inventory;
pub use metrics::AgentStats;
use runtime::{Power, Runtime, StopType};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Timing knobs of an agent.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// How long a desired-state poll waits for a change.
    pub poll_wait: Duration,
    /// How often the full state is re-reported (and liveness shown).
    pub heartbeat: Duration,
    /// How long to gather completions before reporting.
    pub report_delay: Duration,
    /// Back-off after the control plane could not be reached.
    pub retry: Duration,
    /// How often the inventory is read again (GPU health changes); it is
    /// re-registered when it changed. `None`: never (simulated hosts).
    pub inventory_every: Option<Duration>,
    /// How often running instances are checked for having powered
    /// themselves off (a guest's `poweroff`); they are then reported stopped,
    /// not restarted. `None`: never (simulated hosts).
    pub power_check: Option<Duration>,
    /// Where started command tasks are recorded ([`journal`]), so a
    /// restarted agent never runs one twice. `None`: not recorded
    /// (simulated hosts, whose instances do not outlive the process).
    pub command_journal: Option<std::path::PathBuf>,
}

impl Default for AgentOptions {
    fn default() -> Self {
        Self {
            poll_wait: Duration::from_secs(25),
            heartbeat: Duration::from_secs(15),
            report_delay: Duration::from_millis(20),
            retry: Duration::from_secs(2),
            inventory_every: Some(Duration::from_secs(10)),
            power_check: Some(Duration::from_secs(3)),
            command_journal: None,
        }
    }
}

/// A host agent.
pub struct Agent {
    stats: Arc<AgentStats>,
    link: Arc<dyn ControlPlane>,
    inventory: Arc<dyn Inventory>,
    runtimes: Vec<Arc<dyn Runtime>>,
    opts: AgentOptions,
    next_task: std::sync::atomic::AtomicU64,
}

#[derive(Debug)]
struct Slot {
    spec: InstanceSpec,
    status: InstanceStatus,
    busy: bool,
    /// Spec generation applied to the runtime.
    applied: i64,
    /// Reboots done.
    reboots: i64,
    /// Whether this instance was found running when the agent started.
    adopted: bool,
    /// The guest powered itself off while it should run: reported stopped,
    /// and left so until the control plane sends a newer spec.
    guest_off: bool,
    /// The convergence task in flight: its number, the power it works
    /// towards, and how to cancel it.
    task: Option<(u64, DesiredPower, tokio::task::AbortHandle)>,
    /// Failed convergences in a row, and when the next try is due (see
    /// [`retry_backoff`]): a failure is retried, not forgotten, but a host
    /// that cannot run an instance does not spin on it.
    failures: u32,
    retry_at: Option<tokio::time::Instant>,
}

struct Done {
    id: String,
    task: u64,
    status: InstanceStatus,
    applied: i64,
    reboots: i64,
}

impl Agent {
    /// An agent for one host.
    pub fn new(
        link: Arc<dyn ControlPlane>,
        inventory: Arc<dyn Inventory>,
        runtimes: Vec<Arc<dyn Runtime>>,
        opts: AgentOptions,
    ) -> Self {
        Self {
            stats: Arc::default(),
            link,
            inventory,
            runtimes,
            opts,
            next_task: std::sync::atomic::AtomicU64::new(1),
        }
    }

    /// Counters for `/metrics`.
    pub fn stats(&self) -> Arc<AgentStats> {
        self.stats.clone()
    }

    fn runtime_for(&self, spec: &InstanceSpec) -> Option<Arc<dyn Runtime>> {
        self.runtimes
            .iter()
            .find(|r| r.kinds().iter().any(|k| k.as_str() == spec.image.runtime))
            .cloned()
    }

    /// Registers the host, retrying while the control plane cannot be
    /// reached; `Ok(None)` on shutdown, an error when it refuses the host.
    async fn register(
        &self,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<Option<(String, [u8; 32])>, LinkError> {
        let inv = self.inventory.collect();
        loop {
            match self.link.register(&inv).await {
                Ok(()) => {
                    // Only agents that re-read their inventory need the digest.
                    let digest = if self.opts.inventory_every.is_some() {
                        inventory_digest(&inv)
                    } else {
                        [0; 32]
                    };
                    return Ok(Some((inv.host_id, digest)));
                }
                Err(e @ LinkError::Refused(_)) => return Err(e),
                Err(e) => {
                    tracing::warn!(host = %inv.host_id, error = %e, "registration failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(self.opts.retry) => {}
                        _ = shutdown.changed() => return Ok(None),
                    }
                }
            }
        }
    }

    /// Runs until `shutdown` turns true. Instances keep running when it
    /// returns. Fails only when the control plane refuses to register the
    /// host (wrong zone, unknown or revoked certificate): retrying cannot help.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) -> Result<(), LinkError> {
        // Boxed, so the inventory document is freed once registered instead of
        // living in this long-running future.
        let Some((host_id, mut registered)) = Box::pin(self.register(&mut shutdown)).await? else {
            return Ok(());
        };
        // Adopt what the runtimes already run.
        let mut existing: HashMap<String, (Power, Arc<dyn Runtime>)> = HashMap::new();
        for rt in &self.runtimes {
            match rt.list().await {
                Ok(list) => {
                    for (id, p) in list {
                        existing.insert(id, (p, rt.clone()));
                    }
                }
                Err(e) => tracing::warn!(error = %e, "runtime listing failed"),
            }
        }
        if !existing.is_empty() {
            tracing::info!(host = %host_id, count = existing.len(), "adopting running instances");
        }

        let mut journal = match &self.opts.command_journal {
            Some(dir) => match journal::CommandJournal::open(dir) {
                Ok(j) => Some(j),
                Err(e) => {
                    // Commands are refused rather than risk running twice.
                    tracing::error!(dir = %dir.display(), error = %e, "the command journal cannot be opened; commands will not start");
                    None
                }
            },
            None => None,
        };
        let journal_broken = self.opts.command_journal.is_some() && journal.is_none();
        let (desired_tx, mut desired_rx) = mpsc::channel::<Box<DesiredState>>(4);
        // The poller ends only on shutdown, or with the refusal when the
        // control plane no longer takes this host (removed, certificate revoked).
        let mut poller = {
            let link = self.link.clone();
            let host = host_id.clone();
            let wait = self.opts.poll_wait;
            let retry = self.opts.retry;
            let mut stop = shutdown.clone();
            tokio::spawn(async move {
                let mut after = 0i64;
                loop {
                    let got = tokio::select! {
                        r = link.desired(&host, after, wait) => r,
                        _ = stop.changed() => return None,
                    };
                    match got {
                        Ok(d) => {
                            after = d.generation;
                            if desired_tx.send(Box::new(d)).await.is_err() {
                                return None;
                            }
                        }
                        Err(e @ LinkError::Refused(_)) => return Some(e),
                        Err(e) => {
                            tracing::debug!(host = %host, error = %e, "desired-state poll failed");
                            tokio::select! {
                                _ = tokio::time::sleep(retry) => {}
                                _ = stop.changed() => return None,
                            }
                        }
                    }
                }
            })
        };

        let (done_tx, mut done_rx) = mpsc::channel::<Box<Done>>(256);
        let (cmd_tx, mut cmd_rx) = mpsc::channel::<Box<CommandResult>>(64);
        let mut slots: HashMap<String, Slot> = HashMap::new();
        // Command tasks this agent knows, with their latest result.
        let mut tasks: HashMap<String, CommandResult> = HashMap::new();
        // Tasks whose final result a report got through with: the server
        // has it, so later reports leave it (and its output) out.
        let mut acked: std::collections::HashSet<String> = std::collections::HashSet::new();
        // Console sessions started (each relays until its session ends).
        let mut consoles: std::collections::HashSet<String> = std::collections::HashSet::new();
        let mut generation = 0i64;
        let mut dirty = false;
        let mut power_tick =
            tokio::time::interval(self.opts.power_check.unwrap_or(Duration::from_secs(3600)));
        let mut inventory_tick = tokio::time::interval(
            self.opts
                .inventory_every
                .unwrap_or(Duration::from_secs(3600)),
        );
        inventory_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        inventory_tick.reset();
        let mut heartbeat = tokio::time::interval(self.opts.heartbeat);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let report_delay = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(report_delay);
        let mut report_failures: u32 = 0;
        let mut report_armed = false;

        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                r = &mut poller => {
                    if let Ok(Some(e)) = r {
                        tracing::error!(host = %host_id, error = %e, "the control plane refuses this host; stopping (instances keep running)");
                        return Err(e);
                    }
                    break;
                }
                Some(desired) = desired_rx.recv() => {
                    let desired = *desired;
                    generation = desired.generation;
                    let mut seen = std::collections::HashSet::new();
                    for spec in desired.instances {
                        seen.insert(spec.instance_id.clone());
                        let id = spec.instance_id.clone();
                        let slot = slots.entry(id.clone()).or_insert_with(|| {
                            let adopted = existing.remove(&id);
                            Slot {
                                status: InstanceStatus {
                                    instance_id: id.clone(),
                                    spec_generation: 0,
                                    power: match adopted.as_ref().map(|a| a.0) {
                                        Some(Power::Running) => ObservedPower::Running,
                                        Some(Power::Stopped) => ObservedPower::Stopped,
                                        None => ObservedPower::Absent,
                                    },
                                    reboot_seq: spec.reboot_seq,
                                    message: None,
                                },
                                applied: 0,
                                reboots: spec.reboot_seq,
                                adopted: adopted.is_some(),
                                busy: false,
                                guest_off: false,
                                task: None,
                                failures: 0,
                                retry_at: None,
                                spec: spec.clone(),
                            }
                        });
                        if spec.spec_generation > slot.spec.spec_generation {
                            // Something new asked of it: failures of the old
                            // spec do not slow the new one down.
                            slot.failures = 0;
                            slot.retry_at = None;
                        }
                        slot.spec = spec;
                        // Terminating an instance that is still booting (or
                        // stopping) need not wait for that to finish: cancel
                        // it; removal is idempotent and cleans up after it.
                        if slot.busy && slot.spec.power == DesiredPower::Absent {
                            if let Some((_, power, handle)) = &slot.task {
                                if *power != DesiredPower::Absent {
                                    tracing::info!(instance = %slot.spec.instance_id, "cancelling the running convergence: the instance is being removed");
                                    handle.abort();
                                    slot.busy = false;
                                    slot.task = None;
                                }
                            }
                        }
                    }
                    // Instances the control plane no longer mentions are gone from its view.
                    slots.retain(|id, s| seen.contains(id) || s.busy);
                    // Leftovers nobody asked for: destroy them.
                    for (id, (_, rt)) in existing.drain() {
                        tracing::info!(host = %host_id, instance = %id, "removing an instance the control plane does not know");
                        let rt = rt.clone();
                        tokio::spawn(async move {
                            if let Err(e) = rt.destroy(&id).await {
                                tracing::warn!(instance = %id, error = %e, "could not remove unknown instance");
                            }
                        });
                    }
                    let now = tokio::time::Instant::now();
                    for slot in slots.values_mut() {
                        // A failed instance waits for its retry, unless the
                        // control plane changed what it wants of it.
                        let waiting = slot.retry_at.is_some_and(|at| at > now)
                            && slot.status.spec_generation >= slot.spec.spec_generation;
                        if !slot.busy && !waiting && needs_work(slot) {
                            self.spawn_converge(slot, done_tx.clone());
                        }
                    }
                    // Commands: start new ones once; a task the control plane
                    // says is running but this agent never started was lost
                    // with a previous agent.
                    let wanted: std::collections::HashSet<String> =
                        desired.commands.iter().map(|c| c.task_id.clone()).collect();
                    tasks.retain(|id, _| wanted.contains(id));
                    acked.retain(|id| wanted.contains(id));
                    if let Some(j) = journal.as_mut() {
                        j.keep_only(&wanted);
                    }
                    for cmd in desired.commands {
                        if tasks.contains_key(&cmd.task_id) {
                            continue;
                        }
                        let started_before = cmd.status == "RUNNING"
                            || journal.as_ref().is_some_and(|j| j.started(&cmd.task_id));
                        let recorded = match journal.as_mut() {
                            _ if started_before => Ok(()),
                            Some(j) => j.record(&cmd.task_id),
                            None if journal_broken => Err(std::io::Error::other("the command journal cannot be opened")),
                            None => Ok(()),
                        };
                        let result = if started_before {
                            finished(&cmd.task_id, "FAILED", "the host agent restarted after it started this command; its result is lost (a command never runs twice)")
                        } else if let Err(e) = recorded {
                            tracing::error!(task = %cmd.task_id, error = %e, "could not record the command before starting it");
                            finished(&cmd.task_id, "START_FAILED", &format!("the host could not record the command before running it ({e}); nothing ran"))
                        } else {
                            let rt = slots.get(&cmd.instance_id).and_then(|s| self.runtime_for(&s.spec));
                            match rt {
                                Some(rt) => {
                                    let started = CommandResult {
                                        task_id: cmd.task_id.clone(),
                                        status: "RUNNING".into(),
                                        exit_code: None,
                                        output: String::new(),
                                        dropped: 0,
                                        started_ms: Some(now_ms()),
                                        ended_ms: None,
                                        error: String::new(),
                                    };
                                    spawn_command(rt, cmd.clone(), started.clone(), cmd_tx.clone());
                                    started
                                }
                                None => finished(&cmd.task_id, "START_FAILED", &format!("instance {} is not on this host", cmd.instance_id)),
                            }
                        };
                        tasks.insert(cmd.task_id.clone(), result);
                    }
                    // Console sessions: relay each new one; forget those the
                    // control plane no longer lists (their relays end alone).
                    consoles.retain(|id| desired.consoles.iter().any(|c| &c.session_id == id));
                    for c in desired.consoles {
                        if consoles.insert(c.session_id.clone()) {
                            let rt = slots.get(&c.instance_id).and_then(|s| self.runtime_for(&s.spec));
                            console::spawn(self.link.clone(), host_id.clone(), rt, c);
                        }
                    }
                    dirty = true;
                }
                Some(result) = cmd_rx.recv() => {
                    if let Some(t) = tasks.get_mut(&result.task_id) {
                        *t = *result;
                    }
                    dirty = true;
                }
                Some(done) = done_rx.recv() => {
                    if let Some(slot) = slots
                        .get_mut(&done.id)
                        .filter(|s| s.task.as_ref().is_some_and(|t| t.0 == done.task))
                    {
                        slot.busy = false;
                        slot.task = None;
                        slot.status = done.status;
                        slot.applied = done.applied;
                        slot.reboots = done.reboots;
                        // An adopted instance stays adopted until it
                        // converged once (its readiness is checked again).
                        slot.adopted &= slot.status.power == ObservedPower::Failed;
                        if slot.status.power == ObservedPower::Failed {
                            slot.failures = slot.failures.saturating_add(1);
                            let wait = retry_backoff(self.opts.retry, slot.failures);
                            slot.retry_at = Some(tokio::time::Instant::now() + wait);
                            tracing::info!(instance = %done.id, failures = slot.failures, retry_in_s = wait.as_secs(), "will try the instance again");
                        } else {
                            slot.failures = 0;
                            slot.retry_at = None;
                        }
                        if needs_work(slot) && slot.status.power != ObservedPower::Failed {
                            self.spawn_converge(slot, done_tx.clone());
                        } else if slot.status.power != ObservedPower::Failed {
                            // A failed instance keeps its whole spec: its
                            // retry needs the keys, network and image path.
                            compact(&mut slot.spec);
                        }
                    }
                    dirty = true;
                }
                _ = inventory_tick.tick(), if self.opts.inventory_every.is_some() => {
                    let inv = self.inventory.clone();
                    let Ok(now) = tokio::task::spawn_blocking(move || inv.collect()).await else {
                        continue;
                    };
                    let digest = inventory_digest(&now);
                    if digest != registered {
                        match self.link.register(&now).await {
                            Ok(()) => {
                                tracing::info!(host = %host_id, "inventory changed; registered again");
                                registered = digest;
                            }
                            Err(e) => tracing::warn!(host = %host_id, error = %e, "re-registering the changed inventory failed; will retry"),
                        }
                    }
                }
                _ = power_tick.tick(), if self.opts.power_check.is_some() => {
                    for slot in slots.values_mut() {
                        if slot.busy
                            || slot.spec.power != DesiredPower::Running
                            || slot.status.power != ObservedPower::Running
                        {
                            continue;
                        }
                        let Some(rt) = self.runtime_for(&slot.spec) else {
                            continue;
                        };
                        if let Ok(Some(Power::Stopped)) = rt.status(&slot.spec.instance_id).await {
                            tracing::info!(instance = %slot.spec.instance_id, "the instance powered itself off");
                            slot.status.power = ObservedPower::Stopped;
                            slot.guest_off = true;
                            dirty = true;
                        }
                    }
                }
                _ = heartbeat.tick() => {
                    // Retry failed convergences that are due; re-report for
                    // liveness.
                    let now = tokio::time::Instant::now();
                    for slot in slots.values_mut() {
                        if !slot.busy
                            && slot.status.power == ObservedPower::Failed
                            && slot.retry_at.is_some_and(|at| at <= now)
                            && needs_work(slot)
                        {
                            self.spawn_converge(slot, done_tx.clone());
                        }
                    }
                    dirty = true;
                }
                _ = &mut report_delay, if report_armed => {
                    report_armed = false;
                    let observed = ObservedState {
                        host_id: host_id.clone(),
                        generation,
                        instances: slots.values().map(|s| s.status.clone()).collect(),
                        commands: report_commands(
                            tasks.values().filter(|t| !acked.contains(&t.task_id)),
                            REPORT_OUTPUT_BUDGET,
                        ),
                    };
                    let result = self.link.report(&observed).await;
                    self.stats.record(&observed, result.is_ok());
                    if let Err(e) = result {
                        // Back off (retry, 2×, 4×, 8×): a control plane that is
                        // down is not hammered by every agent at once.
                        report_failures = report_failures.saturating_add(1);
                        let wait = self.opts.retry * (1u32 << (report_failures - 1).min(3));
                        tracing::debug!(host = %host_id, error = %e, retry_in_ms = wait.as_millis() as u64, "report failed; will retry");
                        report_armed = true;
                        report_delay.as_mut().reset(tokio::time::Instant::now() + wait);
                    } else {
                        acked.extend(
                            observed
                                .commands
                                .iter()
                                .filter(|c| c.ended_ms.is_some())
                                .map(|c| c.task_id.clone()),
                        );
                        // Held back for the budget: they go next.
                        if observed.commands.iter().any(|c| {
                            c.ended_ms.is_none()
                                && tasks.get(&c.task_id).is_some_and(|t| t.ended_ms.is_some())
                        }) {
                            dirty = true;
                        }
                        report_failures = 0;
                    }
                    // Forget instances confirmed gone.
                    slots.retain(|_, s| !(s.spec.power == DesiredPower::Absent && s.status.power == ObservedPower::Absent && !s.busy && s.status.spec_generation >= s.spec.spec_generation));
                }
            }
            if dirty && !report_armed {
                dirty = false;
                report_armed = true;
                report_delay
                    .as_mut()
                    .reset(tokio::time::Instant::now() + self.opts.report_delay);
            }
        }
        poller.abort();
        Ok(())
    }

    fn spawn_converge(&self, slot: &mut Slot, done: mpsc::Sender<Box<Done>>) {
        slot.busy = true;
        slot.guest_off = false;
        let spec = slot.spec.clone();
        let task = self
            .next_task
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let rt = self.runtime_for(&spec);
        let (applied, reboots, adopted) = (slot.applied, slot.reboots, slot.adopted);
        let power = spec.power;
        let handle = tokio::spawn(async move {
            let (status, applied, reboots) = match rt {
                Some(rt) => converge(rt.as_ref(), &spec, applied, reboots, adopted).await,
                None => (
                    InstanceStatus {
                        instance_id: spec.instance_id.clone(),
                        spec_generation: spec.spec_generation,
                        power: if spec.power == DesiredPower::Absent {
                            ObservedPower::Absent
                        } else {
                            ObservedPower::Failed
                        },
                        reboot_seq: spec.reboot_seq,
                        message: Some(format!(
                            "this host has no `{}` runtime; run `gpucloud doctor` on it to see why",
                            spec.image.runtime
                        )),
                    },
                    applied,
                    reboots,
                ),
            };
            let _ = done
                .send(Box::new(Done {
                    id: spec.instance_id.clone(),
                    task,
                    status,
                    applied,
                    reboots,
                }))
                .await;
        });
        slot.task = Some((task, power, handle.abort_handle()));
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Command output carried by one report, bytes of base64. A burst of
/// finished commands (each up to [`MAX_COMMAND_OUTPUT`]) would otherwise
/// make a report too large for the server to take, and no report would get
/// through again.
const REPORT_OUTPUT_BUDGET: usize = 8 * 1024 * 1024;

/// The command results for a report: finished tasks with their output while
/// it fits in `budget`; the rest are still reported running (which the
/// server already knows) and go in the next report, since the ones that got
/// through are left out from then on.
fn report_commands<'a>(
    tasks: impl Iterator<Item = &'a CommandResult>,
    mut budget: usize,
) -> Vec<CommandResult> {
    tasks
        .map(|t| {
            if t.ended_ms.is_none() || t.output.len() <= budget {
                budget = budget.saturating_sub(t.output.len());
                t.clone()
            } else {
                CommandResult {
                    task_id: t.task_id.clone(),
                    status: "RUNNING".into(),
                    exit_code: None,
                    output: String::new(),
                    dropped: 0,
                    started_ms: t.started_ms,
                    ended_ms: None,
                    error: String::new(),
                }
            }
        })
        .collect()
}

fn finished(task_id: &str, status: &str, error: &str) -> CommandResult {
    let now = now_ms();
    CommandResult {
        task_id: task_id.to_string(),
        status: status.to_string(),
        exit_code: None,
        output: String::new(),
        dropped: 0,
        started_ms: Some(now),
        ended_ms: Some(now),
        error: error.to_string(),
    }
}

/// Runs one command task and sends its final result.
fn spawn_command(
    rt: Arc<dyn Runtime>,
    cmd: CommandSpec,
    started: CommandResult,
    out: mpsc::Sender<Box<CommandResult>>,
) {
    tokio::spawn(async move {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let result = match b64.decode(cmd.content.trim()) {
            Err(e) => finished(
                &cmd.task_id,
                "START_FAILED",
                &format!("the command is not valid base64: {e}"),
            ),
            Ok(script) => {
                let req = runtime::ExecRequest {
                    script,
                    working_directory: cmd.working_directory.clone(),
                    username: cmd.username.clone(),
                    timeout: Duration::from_secs(cmd.timeout_s.max(1)),
                };
                match rt.exec(&cmd.instance_id, &req).await {
                    Ok(o) => {
                        let keep = o.output.len().min(MAX_COMMAND_OUTPUT);
                        let dropped = o.dropped + (o.output.len() - keep) as u64;
                        CommandResult {
                            task_id: cmd.task_id.clone(),
                            status: if o.timed_out {
                                "TIMEOUT"
                            } else if o.exit_code == 0 {
                                "SUCCESS"
                            } else {
                                "FAILED"
                            }
                            .into(),
                            exit_code: Some(o.exit_code),
                            // The last bytes carry the outcome; keep those.
                            output: b64.encode(&o.output[o.output.len() - keep..]),
                            dropped,
                            started_ms: started.started_ms,
                            ended_ms: Some(now_ms()),
                            error: String::new(),
                        }
                    }
                    Err(e) => finished(&cmd.task_id, "START_FAILED", &e.0),
                }
            }
        };
        let _ = out.send(Box::new(result)).await;
    });
}

/// Drops what a converged instance's spec no longer needs on this host
/// (user data, keys, names): every desired-state message carries the full
/// spec again, so a later change has it. Keeps large fleets small.
fn compact(spec: &mut InstanceSpec) {
    spec.user_data = None;
    spec.password = None;
    spec.ssh_keys = Vec::new();
    spec.name = String::new();
    spec.hostname = String::new();
    spec.instance_type = String::new();
    spec.image.location = String::new();
    spec.nic = None;
}

fn inventory_digest(inv: &gpucloud_agent_api::HostInventory) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(serde_json::to_vec(inv).unwrap_or_default()).into()
}

/// How long to wait before trying a failed instance again: 5× the link's
/// retry interval, doubling with each failure in a row, at most 5 minutes
/// (checked on the heartbeat).
fn retry_backoff(retry: Duration, failures: u32) -> Duration {
    (retry * 5 * (1u32 << failures.saturating_sub(1).min(10))).min(Duration::from_secs(300))
}

fn needs_work(slot: &Slot) -> bool {
    let s = &slot.status;
    if s.spec_generation < slot.spec.spec_generation {
        return true;
    }
    match slot.spec.power {
        DesiredPower::Running => {
            (s.power != ObservedPower::Running && !slot.guest_off)
                || slot.reboots < slot.spec.reboot_seq
        }
        DesiredPower::Stopped => s.power != ObservedPower::Stopped,
        DesiredPower::Absent => s.power != ObservedPower::Absent,
    }
}

/// Brings one instance to its spec. Returns the observed status, the spec
/// generation now applied and the reboots done.
async fn converge(
    rt: &dyn Runtime,
    spec: &InstanceSpec,
    mut applied: i64,
    mut reboots: i64,
    adopted: bool,
) -> (InstanceStatus, i64, i64) {
    let how = StopType::parse(spec.stop_type.as_deref());
    let result: Result<ObservedPower, runtime::RuntimeError> = async {
        let mut current = rt.status(&spec.instance_id).await?;
        if spec.power == DesiredPower::Absent {
            if current.is_some() {
                rt.destroy(&spec.instance_id).await?;
            }
            return Ok(ObservedPower::Absent);
        }
        match current {
            None => {
                rt.create(spec).await?;
                current = Some(Power::Stopped);
                applied = spec.spec_generation;
                reboots = spec.reboot_seq;
            }
            Some(_) if applied < spec.spec_generation || adopted => {
                rt.update(spec).await?;
                applied = spec.spec_generation;
            }
            Some(_) => {}
        }
        match (spec.power, current) {
            (DesiredPower::Running, Some(Power::Stopped)) => {
                rt.start(spec).await?;
                reboots = spec.reboot_seq;
                Ok(ObservedPower::Running)
            }
            (DesiredPower::Running, _) => {
                // Found running by a restarted agent, maybe mid-boot: it is
                // RUNNING once the guest is up, as after a start.
                if adopted {
                    rt.ready(spec).await?;
                }
                // Pending when this agent asked for fewer reboots than the
                // spec wants, or (after an agent restart, which forgets
                // that) when the runtime recorded an older boot.
                let booted = rt.booted_seq(&spec.instance_id);
                if reboots < spec.reboot_seq || booted.is_some_and(|b| b < spec.reboot_seq) {
                    rt.reboot(spec, how).await?;
                    reboots = spec.reboot_seq;
                }
                Ok(ObservedPower::Running)
            }
            (_, Some(Power::Running)) => {
                rt.stop(&spec.instance_id, how).await?;
                Ok(ObservedPower::Stopped)
            }
            _ => Ok(ObservedPower::Stopped),
        }
    }
    .await;
    let status = match result {
        Ok(power) => InstanceStatus {
            instance_id: spec.instance_id.clone(),
            spec_generation: spec.spec_generation,
            power,
            reboot_seq: reboots,
            message: None,
        },
        Err(e) => {
            tracing::warn!(instance = %spec.instance_id, error = %e, "convergence failed");
            InstanceStatus {
                instance_id: spec.instance_id.clone(),
                spec_generation: spec.spec_generation,
                power: ObservedPower::Failed,
                reboot_seq: reboots,
                message: Some(e.0),
            }
        }
    };
    (status, applied, reboots)
}

#[cfg(test)]
mod tests;
