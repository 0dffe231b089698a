use super::*;
use crate::sim::{SimHost, SimRuntime};
use gpucloud_agent_api::{HostInventory, ImageRef, LinkError};
use std::sync::Mutex;
use tokio::sync::Notify;

/// A control plane held in memory: tests set desired state and read reports.
#[derive(Default)]
struct FakeControlPlane {
    desired: Mutex<Option<DesiredState>>,
    reports: Mutex<Vec<ObservedState>>,
    registered: Mutex<Vec<HostInventory>>,
    changed: Notify,
}

impl FakeControlPlane {
    fn set(&self, generation: i64, instances: Vec<InstanceSpec>) {
        *self.desired.lock().unwrap() = Some(DesiredState {
            host_id: "host-test0001".into(),
            generation,
            instances,
            commands: vec![],
            consoles: vec![],
        });
        self.changed.notify_waiters();
    }

    fn last(&self, id: &str) -> Option<InstanceStatus> {
        self.reports
            .lock()
            .unwrap()
            .last()
            .and_then(|r| r.instances.iter().find(|i| i.instance_id == id).cloned())
    }

    async fn wait_for(&self, id: &str, f: impl Fn(&InstanceStatus) -> bool) -> InstanceStatus {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(s) = self.last(id) {
                if f(&s) {
                    return s;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {id}: {:?}",
                self.last(id)
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

#[async_trait::async_trait]
impl ControlPlane for FakeControlPlane {
    async fn register(&self, inventory: &HostInventory) -> Result<(), LinkError> {
        self.registered.lock().unwrap().push(inventory.clone());
        Ok(())
    }

    async fn desired(
        &self,
        host_id: &str,
        after: i64,
        wait: Duration,
    ) -> Result<DesiredState, LinkError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let d = self.desired.lock().unwrap().clone();
            match d {
                Some(d) if d.generation > after => return Ok(d),
                _ => {}
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(self
                    .desired
                    .lock()
                    .unwrap()
                    .clone()
                    .unwrap_or(DesiredState {
                        host_id: host_id.into(),
                        generation: 0,
                        instances: vec![],
                        commands: vec![],
                        consoles: vec![],
                    }));
            }
        }
    }

    async fn report(&self, observed: &ObservedState) -> Result<(), LinkError> {
        self.reports.lock().unwrap().push(observed.clone());
        Ok(())
    }
}

fn spec(id: &str, generation: i64, power: DesiredPower, reboot: i64) -> InstanceSpec {
    InstanceSpec {
        instance_id: id.into(),
        spec_generation: generation,
        power,
        reboot_seq: reboot,
        system_disk_seq: 0,
        stop_type: None,
        name: id.into(),
        hostname: id.into(),
        instance_type: "S5.SMALL1".into(),
        cpu: 1,
        memory_mib: 1024,
        gpus: vec![],
        image: ImageRef {
            image_id: "img-gc0ubt22".into(),
            runtime: "sim".into(),
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

fn start_agent(
    cp: Arc<FakeControlPlane>,
    rt: Arc<dyn Runtime>,
) -> (watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    start_agent_with(cp, rt, None)
}

/// [`start_agent`] with a command journal in `journal`.
fn start_agent_with(
    cp: Arc<FakeControlPlane>,
    rt: Arc<dyn Runtime>,
    journal: Option<std::path::PathBuf>,
) -> (watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let host = SimHost::expand(
        &gpucloud_core::simspec::parse("CPU", "ap-guangzhou", "ap-guangzhou-3").unwrap(),
    )
    .remove(0);
    let agent = Agent::new(
        cp,
        Arc::new(host),
        vec![rt],
        AgentOptions {
            poll_wait: Duration::from_millis(200),
            heartbeat: Duration::from_millis(200),
            report_delay: Duration::from_millis(1),
            retry: Duration::from_millis(10),
            inventory_every: None,
            power_check: Some(Duration::from_millis(20)),
            command_journal: journal,
        },
    );
    let (tx, rx) = watch::channel(false);
    (
        tx,
        tokio::spawn(async move {
            agent
                .run(rx)
                .await
                .expect("the fake control plane takes the host");
        }),
    )
}

#[tokio::test]
async fn converges_through_the_lifecycle() {
    let cp = Arc::new(FakeControlPlane::default());
    let rt = Arc::new(SimRuntime::new(
        Duration::from_millis(5),
        Duration::from_millis(5),
    ));
    let (stop, task) = start_agent(cp.clone(), rt.clone());
    cp.set(1, vec![spec("ins-a", 1, DesiredPower::Running, 0)]);
    cp.wait_for("ins-a", |s| {
        s.power == ObservedPower::Running && s.spec_generation == 1
    })
    .await;
    assert_eq!(rt.status("ins-a").await.unwrap(), Some(Power::Running));
    cp.set(2, vec![spec("ins-a", 2, DesiredPower::Stopped, 0)]);
    cp.wait_for("ins-a", |s| {
        s.power == ObservedPower::Stopped && s.spec_generation == 2
    })
    .await;
    cp.set(3, vec![spec("ins-a", 3, DesiredPower::Running, 0)]);
    cp.wait_for("ins-a", |s| {
        s.power == ObservedPower::Running && s.spec_generation == 3
    })
    .await;
    cp.set(4, vec![spec("ins-a", 4, DesiredPower::Running, 1)]);
    cp.wait_for("ins-a", |s| s.reboot_seq == 1 && s.spec_generation == 4)
        .await;
    cp.set(5, vec![spec("ins-a", 5, DesiredPower::Absent, 1)]);
    cp.wait_for("ins-a", |s| {
        s.power == ObservedPower::Absent && s.spec_generation == 5
    })
    .await;
    assert_eq!(rt.status("ins-a").await.unwrap(), None);
    assert_eq!(cp.registered.lock().unwrap().len(), 1);
    stop.send(true).unwrap();
    task.await.unwrap();
}

#[tokio::test]
async fn terminating_a_booting_instance_does_not_wait_for_the_boot() {
    let cp = Arc::new(FakeControlPlane::default());
    // A guest that would take a minute to come up.
    let rt = Arc::new(SimRuntime::new(
        Duration::from_secs(60),
        Duration::from_millis(5),
    ));
    let (stop, task) = start_agent(cp.clone(), rt.clone());
    cp.set(1, vec![spec("ins-a", 1, DesiredPower::Running, 0)]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while rt.status("ins-a").await.unwrap().is_none() {
        assert!(tokio::time::Instant::now() < deadline, "never created");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let asked = tokio::time::Instant::now();
    cp.set(2, vec![spec("ins-a", 2, DesiredPower::Absent, 0)]);
    cp.wait_for("ins-a", |s| {
        s.power == ObservedPower::Absent && s.spec_generation == 2
    })
    .await;
    assert!(asked.elapsed() < Duration::from_secs(5));
    assert_eq!(rt.status("ins-a").await.unwrap(), None);
    stop.send(true).unwrap();
    task.await.unwrap();
}

#[tokio::test]
async fn a_guest_that_powers_itself_off_is_reported_stopped_not_restarted() {
    let cp = Arc::new(FakeControlPlane::default());
    let rt = Arc::new(SimRuntime::new(Duration::ZERO, Duration::ZERO));
    let (stop, task) = start_agent(cp.clone(), rt.clone());
    cp.set(1, vec![spec("ins-a", 1, DesiredPower::Running, 0)]);
    cp.wait_for("ins-a", |s| s.power == ObservedPower::Running)
        .await;
    // The guest shuts down by itself (`poweroff` inside).
    rt.stop("ins-a", StopType::Hard).await.unwrap();
    cp.wait_for("ins-a", |s| {
        s.power == ObservedPower::Stopped && s.spec_generation == 1
    })
    .await;
    // The same desired state again (another instance changed): not restarted.
    cp.set(
        2,
        vec![
            spec("ins-a", 1, DesiredPower::Running, 0),
            spec("ins-b", 2, DesiredPower::Running, 0),
        ],
    );
    cp.wait_for("ins-b", |s| s.power == ObservedPower::Running)
        .await;
    assert_eq!(rt.status("ins-a").await.unwrap(), Some(Power::Stopped));
    assert_eq!(cp.last("ins-a").unwrap().power, ObservedPower::Stopped);
    // The owner starts it again: a newer spec runs it.
    cp.set(3, vec![spec("ins-a", 3, DesiredPower::Running, 0)]);
    cp.wait_for("ins-a", |s| {
        s.power == ObservedPower::Running && s.spec_generation == 3
    })
    .await;
    assert_eq!(rt.status("ins-a").await.unwrap(), Some(Power::Running));
    stop.send(true).unwrap();
    task.await.unwrap();
}

#[tokio::test]
async fn launch_failures_are_reported_with_a_reason() {
    use base64::Engine as _;
    let cp = Arc::new(FakeControlPlane::default());
    let rt = Arc::new(SimRuntime::new(Duration::ZERO, Duration::ZERO));
    let (stop, _task) = start_agent(cp.clone(), rt);
    let mut s = spec("ins-f", 1, DesiredPower::Running, 0);
    s.user_data = Some(
        base64::engine::general_purpose::STANDARD
            .encode("#!/bin/sh\n# gpucloud-sim: fail-launch\n"),
    );
    let mut other = spec("ins-g", 1, DesiredPower::Running, 0);
    other.image.runtime = "qemu-that-does-not-exist".into();
    cp.set(1, vec![s, other]);
    let st = cp
        .wait_for("ins-f", |s| s.power == ObservedPower::Failed)
        .await;
    assert!(st.message.unwrap().contains("failed to boot"));
    let st = cp
        .wait_for("ins-g", |s| s.power == ObservedPower::Failed)
        .await;
    assert!(st.message.unwrap().contains("gpucloud doctor"));
    stop.send(true).unwrap();
}

/// A simulated runtime whose starts fail a given number of times and whose
/// guests come up (`ready`) only when the test says so.
struct Gated {
    sim: Arc<SimRuntime>,
    failing_starts: std::sync::atomic::AtomicU32,
    starts: std::sync::atomic::AtomicU32,
    execs: std::sync::atomic::AtomicU32,
    up: watch::Receiver<bool>,
}

#[async_trait::async_trait]
impl Runtime for Gated {
    fn kinds(&self) -> Vec<gpucloud_agent_api::RuntimeKind> {
        self.sim.kinds()
    }
    async fn list(&self) -> Result<Vec<(String, Power)>, runtime::RuntimeError> {
        self.sim.list().await
    }
    async fn status(&self, id: &str) -> Result<Option<Power>, runtime::RuntimeError> {
        self.sim.status(id).await
    }
    async fn create(&self, spec: &InstanceSpec) -> Result<(), runtime::RuntimeError> {
        self.sim.create(spec).await
    }
    async fn update(&self, spec: &InstanceSpec) -> Result<(), runtime::RuntimeError> {
        self.sim.update(spec).await
    }
    async fn start(&self, spec: &InstanceSpec) -> Result<(), runtime::RuntimeError> {
        use std::sync::atomic::Ordering::SeqCst;
        self.starts.fetch_add(1, SeqCst);
        // A retry must have the whole spec (keys, network, image path).
        if spec.hostname.is_empty() {
            return Err(runtime::RuntimeError::new("started with a compacted spec"));
        }
        if self
            .failing_starts
            .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(runtime::RuntimeError::new("the disk is not there yet"));
        }
        self.sim.start(spec).await
    }
    async fn stop(&self, id: &str, how: StopType) -> Result<(), runtime::RuntimeError> {
        self.sim.stop(id, how).await
    }
    async fn reboot(
        &self,
        spec: &InstanceSpec,
        how: StopType,
    ) -> Result<(), runtime::RuntimeError> {
        self.sim.reboot(spec, how).await
    }
    async fn destroy(&self, id: &str) -> Result<(), runtime::RuntimeError> {
        self.sim.destroy(id).await
    }
    async fn exec(
        &self,
        _id: &str,
        _req: &runtime::ExecRequest,
    ) -> Result<runtime::ExecOutput, runtime::RuntimeError> {
        self.execs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(runtime::ExecOutput {
            exit_code: 0,
            output: b"ran\n".to_vec(),
            timed_out: false,
            dropped: 0,
        })
    }
    async fn ready(&self, _spec: &InstanceSpec) -> Result<(), runtime::RuntimeError> {
        let mut up = self.up.clone();
        let _ = up.wait_for(|u| *u).await;
        Ok(())
    }
}

#[tokio::test]
async fn a_restarted_agent_never_runs_a_command_twice() {
    let cp = Arc::new(FakeControlPlane::default());
    let journal = tempfile::tempdir().unwrap();
    let (_up_tx, up) = watch::channel(true);
    let rt = Arc::new(Gated {
        sim: Arc::new(SimRuntime::new(Duration::ZERO, Duration::ZERO)),
        failing_starts: 0.into(),
        starts: 0.into(),
        execs: 0.into(),
        up,
    });
    let with_journal = |cp: Arc<FakeControlPlane>| {
        start_agent_with(cp, rt.clone(), Some(journal.path().join("commands")))
    };
    let cmd = |task: &str| CommandSpec {
        task_id: task.into(),
        instance_id: "ins-c".into(),
        content: "ZWNobyByYW4=".into(),
        command_type: "SHELL".into(),
        working_directory: "/root".into(),
        timeout_s: 10,
        username: "root".into(),
        status: "PENDING".into(),
    };
    let with_commands = |generation: i64, tasks: Vec<CommandSpec>| {
        let mut d = DesiredState {
            host_id: "host-test0001".into(),
            generation,
            instances: vec![spec("ins-c", 1, DesiredPower::Running, 0)],
            commands: tasks,
            consoles: vec![],
        };
        d.commands
            .iter_mut()
            .for_each(|c| c.status = "PENDING".into());
        *cp.desired.lock().unwrap() = Some(d);
        cp.changed.notify_waiters();
    };
    // The latest report that mentions the task (once its final result got
    // through, later reports leave it out).
    let task_status = |task: &str| {
        cp.reports
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find_map(|r| r.commands.iter().find(|c| c.task_id == task).cloned())
    };
    let (stop, task) = with_journal(cp.clone());
    with_commands(1, vec![cmd("invt-once0001")]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while task_status("invt-once0001").map(|c| c.status) != Some("SUCCESS".into()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the command never finished"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.send(true).unwrap();
    task.await.unwrap();
    // The control plane never took that report: it still says PENDING. A
    // restarted agent must not run it again.
    cp.reports.lock().unwrap().clear();
    let (stop, task) = with_journal(cp.clone());
    with_commands(2, vec![cmd("invt-once0001"), cmd("invt-next0002")]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (a, b) = (task_status("invt-once0001"), task_status("invt-next0002"));
        if let (Some(a), Some(b)) = (a, b) {
            if b.status == "SUCCESS" {
                assert_eq!(a.status, "FAILED");
                assert!(a.error.contains("restarted"), "{}", a.error);
                break;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no report of both tasks"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        rt.execs.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "each task ran once"
    );
    // Once the control plane lists neither, the journal forgets them.
    with_commands(3, vec![]);
    let dir = journal.path().join("commands");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while std::fs::read_dir(&dir).unwrap().count() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "journal not emptied"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.send(true).unwrap();
    task.await.unwrap();
}

#[tokio::test]
async fn a_failed_convergence_is_tried_again_with_backoff() {
    let cp = Arc::new(FakeControlPlane::default());
    let (_up_tx, up) = watch::channel(true);
    let rt = Arc::new(Gated {
        sim: Arc::new(SimRuntime::new(Duration::ZERO, Duration::ZERO)),
        failing_starts: 2.into(),
        starts: 0.into(),
        execs: 0.into(),
        up,
    });
    let (stop, _task) = start_agent(cp.clone(), rt.clone());
    cp.set(1, vec![spec("ins-r", 1, DesiredPower::Running, 0)]);
    let st = cp
        .wait_for("ins-r", |s| s.power == ObservedPower::Failed)
        .await;
    assert!(st.message.unwrap().contains("disk is not there"));
    // Retried on its own (same spec, no new desired state), and it runs.
    cp.wait_for("ins-r", |s| s.power == ObservedPower::Running)
        .await;
    assert_eq!(rt.starts.load(std::sync::atomic::Ordering::SeqCst), 3);
    // The backoff: retry interval 10 ms → 50 ms, then 100 ms, the second
    // checked on a 200 ms heartbeat; nothing in between.
    assert_eq!(
        retry_backoff(Duration::from_millis(10), 1),
        Duration::from_millis(50)
    );
    assert_eq!(
        retry_backoff(Duration::from_millis(10), 2),
        Duration::from_millis(100)
    );
    assert_eq!(
        retry_backoff(Duration::from_secs(2), 30),
        Duration::from_secs(300)
    );
    stop.send(true).unwrap();
}

#[tokio::test]
async fn an_adopted_instance_is_running_only_once_its_guest_is_up() {
    let cp = Arc::new(FakeControlPlane::default());
    let sim = Arc::new(SimRuntime::new(Duration::ZERO, Duration::ZERO));
    let (stop, task) = start_agent(cp.clone(), sim.clone());
    cp.set(1, vec![spec("ins-a", 1, DesiredPower::Running, 0)]);
    cp.wait_for("ins-a", |s| s.power == ObservedPower::Running)
        .await;
    stop.send(true).unwrap();
    task.await.unwrap();

    // The agent restarts while the guest is (say) still booting.
    let (up_tx, up) = watch::channel(false);
    let rt = Arc::new(Gated {
        sim: sim.clone(),
        failing_starts: 0.into(),
        starts: 0.into(),
        execs: 0.into(),
        up,
    });
    cp.reports.lock().unwrap().clear();
    let (stop, task) = start_agent(cp.clone(), rt.clone());
    cp.set(2, vec![spec("ins-a", 2, DesiredPower::Running, 0)]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let st = cp.last("ins-a").expect("reported");
    assert!(
        st.spec_generation < 2,
        "not reported as running the spec before the guest is up: {st:?}"
    );
    up_tx.send(true).unwrap();
    cp.wait_for("ins-a", |s| {
        s.power == ObservedPower::Running && s.spec_generation == 2
    })
    .await;
    assert_eq!(
        rt.starts.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "adopted, not restarted"
    );
    stop.send(true).unwrap();
    task.await.unwrap();
}

#[tokio::test]
async fn a_restarted_agent_adopts_and_never_kills_unannounced_instances_early() {
    let cp = Arc::new(FakeControlPlane::default());
    let rt = Arc::new(SimRuntime::new(Duration::ZERO, Duration::ZERO));
    let (stop, task) = start_agent(cp.clone(), rt.clone());
    cp.set(
        1,
        vec![
            spec("ins-a", 1, DesiredPower::Running, 0),
            spec("ins-b", 1, DesiredPower::Running, 0),
        ],
    );
    cp.wait_for("ins-b", |s| s.power == ObservedPower::Running)
        .await;
    stop.send(true).unwrap();
    task.await.unwrap();
    assert_eq!(
        rt.status("ins-a").await.unwrap(),
        Some(Power::Running),
        "instances outlive the agent"
    );

    // A new agent on the same runtime, while the control plane has no answer yet.
    *cp.desired.lock().unwrap() = None;
    let (stop, task) = start_agent(cp.clone(), rt.clone());
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(rt.status("ins-a").await.unwrap(), Some(Power::Running));
    // Now the control plane says: only ins-a.
    cp.reports.lock().unwrap().clear();
    cp.set(2, vec![spec("ins-a", 1, DesiredPower::Running, 0)]);
    cp.wait_for("ins-a", |s| s.power == ObservedPower::Running)
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while rt.status("ins-b").await.unwrap().is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "unknown instance not removed"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        rt.status("ins-a").await.unwrap(),
        Some(Power::Running),
        "adopted, not restarted"
    );
    stop.send(true).unwrap();
    task.await.unwrap();
}

#[tokio::test]
async fn a_reboot_asked_while_the_agent_was_down_still_happens() {
    let cp = Arc::new(FakeControlPlane::default());
    let rt = Arc::new(SimRuntime::new(Duration::ZERO, Duration::ZERO));
    let (stop, task) = start_agent(cp.clone(), rt.clone());
    cp.set(1, vec![spec("ins-a", 1, DesiredPower::Running, 0)]);
    cp.wait_for("ins-a", |s| s.power == ObservedPower::Running)
        .await;
    stop.send(true).unwrap();
    task.await.unwrap();
    assert_eq!(rt.boots("ins-a"), 1);

    // While no agent runs, the control plane asks for a reboot (a
    // ResetInstance, a ForceStop key change …); a new agent does it.
    let (stop, task) = start_agent(cp.clone(), rt.clone());
    cp.set(2, vec![spec("ins-a", 2, DesiredPower::Running, 1)]);
    cp.wait_for("ins-a", |s| {
        s.power == ObservedPower::Running && s.spec_generation == 2 && s.reboot_seq == 1
    })
    .await;
    assert_eq!(rt.boots("ins-a"), 2, "rebooted once");
    // And only once: the same spec again changes nothing.
    cp.set(3, vec![spec("ins-a", 3, DesiredPower::Running, 1)]);
    cp.wait_for("ins-a", |s| s.spec_generation == 3).await;
    assert_eq!(rt.boots("ins-a"), 2);
    stop.send(true).unwrap();
    task.await.unwrap();
}

/// An inventory a test can change.
struct Changing(Mutex<HostInventory>);

impl crate::inventory::Inventory for Changing {
    fn collect(&self) -> HostInventory {
        self.0.lock().unwrap().clone()
    }
}

#[tokio::test]
async fn a_changed_inventory_is_registered_again_and_only_then() {
    let cp = Arc::new(FakeControlPlane::default());
    let host = SimHost::expand(
        &gpucloud_core::simspec::parse("1*H100x8", "ap-guangzhou", "ap-guangzhou-3").unwrap(),
    )
    .remove(0);
    let inv = Arc::new(Changing(Mutex::new(crate::inventory::Inventory::collect(
        &host,
    ))));
    let agent = Agent::new(
        cp.clone(),
        inv.clone(),
        vec![],
        AgentOptions {
            poll_wait: Duration::from_millis(200),
            heartbeat: Duration::from_millis(200),
            report_delay: Duration::from_millis(1),
            retry: Duration::from_millis(10),
            inventory_every: Some(Duration::from_millis(20)),
            power_check: None,
            command_journal: None,
        },
    );
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(agent.run(rx));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while cp.reports.lock().unwrap().len() < 3 {
        assert!(tokio::time::Instant::now() < deadline, "no reports");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        cp.registered.lock().unwrap().len(),
        1,
        "unchanged: not registered again"
    );
    {
        let mut i = inv.0.lock().unwrap();
        i.gpus[3].healthy = false;
        i.gpus[3].health_reason = "XID 79".into();
    }
    loop {
        if let Some(last) = cp.registered.lock().unwrap().get(1) {
            assert!(!last.gpus[3].healthy);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not registered again"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(cp.registered.lock().unwrap().len(), 2, "once per change");
    let _ = tx.send(true);
    task.await.unwrap().unwrap();
}

#[test]
fn a_burst_of_finished_commands_is_reported_in_parts() {
    let done = |i: usize, out: usize| CommandResult {
        task_id: format!("invt-{i:08}"),
        status: "SUCCESS".into(),
        exit_code: Some(0),
        output: "A".repeat(out),
        dropped: 0,
        started_ms: Some(1),
        ended_ms: Some(2),
        error: String::new(),
    };
    let mut tasks: Vec<CommandResult> = (0..10).map(|i| done(i, 400)).collect();
    tasks.push(finished("invt-nooutput", "FAILED", "result lost"));
    let mut running = done(99, 0);
    running.status = "RUNNING".into();
    running.ended_ms = None;
    tasks.push(running);
    let r = report_commands(tasks.iter(), 1000);
    assert_eq!(r.len(), 12, "every task is in the report");
    let full: Vec<_> = r.iter().filter(|t| t.status == "SUCCESS").collect();
    assert_eq!(full.len(), 2, "outputs up to the budget");
    let total: usize = r.iter().map(|t| t.output.len()).sum();
    assert!(total <= 1000);
    assert!(
        r.iter().any(|t| t.status == "FAILED"),
        "no output, always fits"
    );
    assert_eq!(r.iter().filter(|t| t.status == "RUNNING").count(), 9);
    assert!(r
        .iter()
        .filter(|t| t.status == "RUNNING")
        .all(|t| t.output.is_empty() && t.ended_ms.is_none()));
}
