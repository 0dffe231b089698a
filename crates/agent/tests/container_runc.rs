//! Privileged host test: the container runtime against the real `runc`, with
//! the built-in image built by `images/container/build.sh`.
//!
//! Needs root and runc. Without them the test says so and passes — except
//! under CI (`CI=true`), where a missing prerequisite is a failure.

use gpucloud_agent::container::{ContainerConfig, ContainerRuntime};
use gpucloud_agent::gpu::FakeGpuDevices;
use gpucloud_agent::runtime::{ExecRequest, Power, Runtime, StopType};
use gpucloud_agent_api::{DesiredPower, ImageRef, InstanceSpec};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

fn prerequisites() -> Option<PathBuf> {
    let runc = PathBuf::from("/usr/sbin/runc");
    match gpucloud_agent::container::available(&runc) {
        Ok(()) => Some(runc),
        Err(why) => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("privileged container test cannot run under CI: {why}");
            }
            eprintln!("skipping the runc test: {why}");
            None
        }
    }
}

/// Builds the image once per target directory.
fn image_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("container-image");
    if !dir.join("rootfs.tar.gz").exists() {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../images/container/build.sh");
        let out = std::process::Command::new("bash")
            .arg(script)
            .arg(&dir)
            .output()
            .expect("running images/container/build.sh");
        assert!(
            out.status.success(),
            "building the image failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    dir
}

fn spec(id: &str, cpu: u32, mem_mib: u64) -> InstanceSpec {
    InstanceSpec {
        instance_id: id.into(),
        spec_generation: 1,
        power: DesiredPower::Running,
        reboot_seq: 0,
        system_disk_seq: 0,
        stop_type: None,
        name: "t".into(),
        hostname: id.into(),
        instance_type: "S5.SMALL1".into(),
        cpu,
        memory_mib: mem_mib,
        gpus: vec![],
        image: ImageRef {
            image_id: "img-gc0ctr12".into(),
            runtime: "container".into(),
            location: "rootfs.tar.gz".into(),
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

fn exec(script: &str, timeout: u64) -> ExecRequest {
    ExecRequest {
        script: script.as_bytes().to_vec(),
        working_directory: "/root".into(),
        username: "root".into(),
        timeout: Duration::from_secs(timeout),
    }
}

fn mounted(path: &Path) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(&*path.to_string_lossy()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_run_stop_restart_exec_and_leave_nothing_behind() {
    let Some(runc) = prerequisites() else { return };
    let images = image_dir();
    let state = tempfile::tempdir().unwrap();
    let cfg = ContainerConfig {
        runtime_bin: runc,
        state_dir: state.path().to_path_buf(),
        images_dir: images,
        host_cpus: std::thread::available_parallelism().map_or(1, |n| n.get()) as u32,
        stop_grace: Duration::from_secs(10),
    };
    let rt = ContainerRuntime::new(cfg.clone(), Arc::new(FakeGpuDevices::default()));
    let id = format!("ins-t{:07}", std::process::id() % 10_000_000);
    let s = spec(&id, 1, 512);
    assert_eq!(rt.status(&id).await.unwrap(), None);
    rt.create(&s).await.unwrap();
    assert_eq!(rt.status(&id).await.unwrap(), Some(Power::Stopped));
    rt.start(&s).await.unwrap();
    assert_eq!(rt.status(&id).await.unwrap(), Some(Power::Running));
    // The bundle (with the tenant's writable layer) is root's alone.
    {
        use std::os::unix::fs::PermissionsExt;
        let bundle = ContainerRuntime::instances_dir(state.path()).join(&id);
        let mode = std::fs::metadata(&bundle).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "{}", bundle.display());
    }

    let out = rt
        .exec(
            &id,
            &exec(
                "hostname; nproc; cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max; pwd",
                30,
            ),
        )
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.output).to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(out.exit_code, 0, "{text}");
    assert_eq!(
        lines,
        vec![id.as_str(), "1", "536870912", "/root"],
        "{text}"
    );
    // The container sees no host processes and no GPU.
    let out = rt
        .exec(&id, &exec("ls /dev | grep -c nvidia; ps | wc -l", 30))
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.output).to_string();
    assert!(text.starts_with("0\n"), "{text}");
    let procs: i32 = text.lines().nth(1).unwrap().trim().parse().unwrap();
    assert!(procs < 10, "only the container's own processes: {text}");
    let out = rt
        .exec(&id, &exec("echo oops >&2; exit 3", 30))
        .await
        .unwrap();
    assert_eq!(out.exit_code, 3);
    assert_eq!(String::from_utf8_lossy(&out.output), "oops\n");
    // The timeout kills the command's whole process tree and keeps what it printed.
    let out = rt
        .exec(
            &id,
            &exec("echo before; sleep 301 & sh -c 'sleep 302'; echo never", 1),
        )
        .await
        .unwrap();
    assert!(out.timed_out);
    let text = String::from_utf8_lossy(&out.output).to_string();
    assert!(
        text.starts_with("before\n") && !text.contains("never"),
        "{text}"
    );
    let out = rt
        .exec(
            &id,
            &exec("ps -o args | grep -c '[s]leep 30[12]' || true", 30),
        )
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.output).trim(),
        "0",
        "processes left behind"
    );
    // Username and WorkingDirectory.
    let out = rt
        .exec(
            &id,
            &ExecRequest {
                script: b"id -u; pwd".to_vec(),
                working_directory: "/tmp".into(),
                username: "nobody".into(),
                timeout: Duration::from_secs(30),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (
            out.exit_code,
            String::from_utf8_lossy(&out.output).to_string()
        ),
        (0, "65534\n/tmp\n".to_string())
    );

    // Writes survive a stop and start.
    rt.exec(&id, &exec("echo kept > /root/state", 30))
        .await
        .unwrap();
    rt.stop(&id, StopType::Soft).await.unwrap();
    assert_eq!(rt.status(&id).await.unwrap(), Some(Power::Stopped));
    assert!(!mounted(
        &state.path().join("containers").join(&id).join("rootfs")
    ));
    rt.start(&s).await.unwrap();
    let out = rt.exec(&id, &exec("cat /root/state", 30)).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&out.output), "kept\n");

    // A new runtime on the same state (an agent restart) finds it running.
    let again = ContainerRuntime::new(cfg, Arc::new(FakeGpuDevices::default()));
    assert_eq!(
        again.list().await.unwrap(),
        vec![(id.clone(), Power::Running)]
    );
    let pid: u32 =
        std::fs::read_to_string(state.path().join("containers").join(&id).join("init.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
    assert!(Path::new(&format!("/proc/{pid}")).exists());

    // Terminate: no process, cgroup, mount or directory left.
    again.destroy(&id).await.unwrap();
    assert_eq!(again.status(&id).await.unwrap(), None);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while Path::new(&format!("/proc/{pid}")).exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "init process still alive"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!state.path().join("containers").join(&id).exists());
    assert!(!state.path().join("runc").join(&id).exists());
    for ctl in ["memory", "pids", "cpu", "devices"] {
        let cg = PathBuf::from("/sys/fs/cgroup")
            .join(ctl)
            .join("gpucloud")
            .join(&id);
        assert!(!cg.exists(), "{} left behind", cg.display());
    }
    assert!(!PathBuf::from("/sys/fs/cgroup/unified/gpucloud")
        .join(&id)
        .exists());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&id), "a mount of {id} is left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_image_is_a_clear_launch_error() {
    let Some(runc) = prerequisites() else { return };
    let state = tempfile::tempdir().unwrap();
    let rt = ContainerRuntime::new(
        ContainerConfig {
            runtime_bin: runc,
            state_dir: state.path().to_path_buf(),
            images_dir: state.path().join("no-images"),
            host_cpus: 1,
            stop_grace: Duration::from_secs(1),
        },
        Arc::new(FakeGpuDevices::default()),
    );
    let e = rt.create(&spec("ins-noimage", 1, 64)).await.unwrap_err();
    assert!(e.0.contains("is not on this host"), "{e}");
}
