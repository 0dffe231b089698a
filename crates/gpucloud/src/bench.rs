//! Benchmarks. Figures go to docs/PERFORMANCE.md with the command and machine.
//!
//! * `scheduler` — planning + claim in memory on a simulated fleet, one core;
//! * `api` — RunInstances through the HTTP API into RUNNING on a simulated
//!   fleet (in-process server, SQLite), throughput and latency;
//! * `memory` — resident memory of a real `gpucloud up` process holding a
//!   large simulated fleet and many instances.

use crate::cloud::{self, CloudOptions};
use anyhow::{Context, Result};
use gpucloud_client::Client;
use gpucloud_core::gpu::GpuModel;
use gpucloud_scheduler::{GpuSlot, HostCapacity, PlacementRequest, Runtimes};
use gpucloud_server::sched::Scheduler;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Flags of `bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    cmd: BenchCmd,
}

#[derive(clap::Subcommand, Debug)]
enum BenchCmd {
    /// Placement (plan + claim) throughput and latency in memory, on one core.
    Scheduler {
        /// Hosts in the fleet.
        #[arg(long, default_value_t = 10_000)]
        hosts: u32,
        /// GPUs per host.
        #[arg(long, default_value_t = 8)]
        gpus_per_host: u32,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        output: crate::output::Output,
    },
    /// RunInstances through the API into RUNNING, on a simulated fleet.
    Api {
        /// Simulated hosts (8×H100 each).
        #[arg(long, default_value_t = 1000)]
        hosts: u32,
        /// Instances to launch (1 GPU each).
        #[arg(long, default_value_t = 2000)]
        instances: u32,
        /// Concurrent clients.
        #[arg(long, default_value_t = 32)]
        concurrency: u32,
        /// Simulated boot time, ms.
        #[arg(long, default_value_t = 0)]
        boot_ms: u64,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        output: crate::output::Output,
    },
    /// Resident memory of `gpucloud up` with a large simulated fleet.
    Memory {
        /// Simulated hosts: 90 % 8×T4, 10 % CPU-only.
        #[arg(long, default_value_t = 10_000)]
        hosts: u32,
        /// Instances to launch.
        #[arg(long, default_value_t = 100_000)]
        instances: u32,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        output: crate::output::Output,
    },
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn report(output: crate::output::Output, v: serde_json::Value) {
    match output {
        crate::output::Output::Json => crate::output::json(&v),
        crate::output::Output::Table => {
            let rows = v
                .as_object()
                .map(|o| {
                    o.iter()
                        .map(|(k, v)| vec![k.clone(), v.to_string()])
                        .collect()
                })
                .unwrap_or_default();
            crate::output::table(&["metric", "value"], rows);
        }
    }
}

fn bar(n: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(n);
    pb.set_style(
        ProgressStyle::with_template(
            "{spinner} {msg} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    pb.set_message(what.to_string());
    pb
}

/// Scheduler benchmark: a mixed workload (1, 1, 1, 1, 2, 2, 4, 8 GPUs) placed
/// until 95 % of GPUs are taken, then a churn phase releasing and re-placing.
pub fn scheduler_bench(hosts: u32, gpus: u32) -> serde_json::Value {
    let sched = Scheduler::new();
    let (cpu, mem) = gpucloud_core::catalog::host_shape(Some(GpuModel::H100), gpus);
    let snapshot_hosts: Vec<HostCapacity> = (0..hosts)
        .map(|i| HostCapacity {
            host_id: format!("host-{i:08}"),
            zone: "ap-guangzhou-3".into(),
            model: Some(GpuModel::H100),
            schedulable: true,
            runtimes: Runtimes(Runtimes::SIM),
            rack: format!("rack-{}", i / 4),
            switch: format!("sw-{}", i / 16),
            cpu_total: cpu,
            cpu_used: 0,
            mem_total_mib: u64::from(mem) * 1024,
            mem_used_mib: 0,
            gpus: (0..gpus)
                .map(|g| GpuSlot {
                    index: g,
                    healthy: true,
                    used: false,
                    numa: u32::from(g >= gpus / 2),
                    nvlink_domain: Some(0),
                })
                .collect(),
        })
        .collect();
    sched.load(snapshot_hosts);
    let mix = [1u32, 1, 1, 1, 2, 2, 4, 8];
    let total_gpus = u64::from(hosts) * u64::from(gpus);
    let target = total_gpus * 95 / 100;
    let mut used = 0u64;
    let mut lat: Vec<f64> = Vec::new();
    let mut live: Vec<(gpucloud_server::sched::ReservationId, u32)> = Vec::new();
    let start = Instant::now();
    let mut i = 0usize;
    let mut failures = 0u64;
    while used < target && failures < 1000 {
        let g = mix[i % mix.len()].min(gpus);
        i += 1;
        let req = PlacementRequest {
            zone: "ap-guangzhou-3".into(),
            model: Some(GpuModel::H100),
            gpus: g,
            cpu: 24 * g,
            mem_mib: 240 * 1024 * u64::from(g),
            runtime: Runtimes::SIM,
            spread: None,
            exclude_hosts: vec![],
        };
        let t = Instant::now();
        match sched.reserve(&req, 1, 1) {
            Ok((id, _)) => {
                sched.commit(id);
                lat.push(t.elapsed().as_secs_f64() * 1e6);
                used += u64::from(g);
                live.push((id, g));
            }
            Err(_) => failures += 1,
        }
    }
    let fill_secs = start.elapsed().as_secs_f64();
    let placed = lat.len();
    lat.sort_by(f64::total_cmp);
    serde_json::json!({
        "hosts": hosts,
        "gpus_per_host": gpus,
        "placements": placed,
        "gpus_placed": used,
        "fill_percent": (used as f64 * 100.0 / total_gpus as f64 * 10.0).round() / 10.0,
        "placements_per_sec": (placed as f64 / fill_secs).round(),
        "p50_us": (pct(&lat, 0.50) * 10.0).round() / 10.0,
        "p99_us": (pct(&lat, 0.99) * 10.0).round() / 10.0,
        "max_us": (lat.last().copied().unwrap_or(0.0) * 10.0).round() / 10.0,
        "seconds": (fill_secs * 1000.0).round() / 1000.0,
    })
}

async fn api_bench(
    hosts: u32,
    instances: u32,
    concurrency: u32,
    boot_ms: u64,
) -> Result<serde_json::Value> {
    let dir = tempfile::tempdir()?;
    let opts = CloudOptions {
        data_dir: dir.path().to_path_buf(),
        database: None,
        listen: "127.0.0.1:0".parse()?,
        region: "ap-guangzhou".into(),
        zone: None,
        simulate: Some(format!("{hosts}*H100x8")),
        sim_boot: Duration::from_millis(boot_ms),
        sim_stop: Duration::ZERO,
        local_agent: false,
        container_runtime: None,
        vm_accel: gpucloud_agent::qemu::AccelChoice::Auto,
        host_grace: Duration::from_secs(600),
        agent_listen: None,
        agent_names: vec![],
        images_dir: None,
        agent_metrics_listen: None,
        clear_gpu_fences: false,
    };
    let cloud = cloud::start(&opts).await?;
    let reg = Instant::now();
    cloud::wait_for_hosts(&cloud.app, hosts as usize, Duration::from_secs(600)).await?;
    let registration_s = reg.elapsed().as_secs_f64();
    let creds = cloud
        .app
        .store
        .tenant_create("bench", i64::from(instances) + 10)
        .await?;
    let client = Arc::new(Client::new(
        &format!("http://{}", cloud.addr),
        &creds.secret_id,
        &creds.secret_key,
        "ap-guangzhou",
    ));
    let pb = bar(u64::from(instances), "RunInstances");
    // Launched instances go to a watcher that polls DescribeInstancesStatus
    // while launches go on, so request → RUNNING is measured as a client sees it.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    let watcher = {
        let client = client.clone();
        tokio::spawn(async move {
            let mut pending: Vec<(String, Instant)> = Vec::new();
            let mut lat: Vec<f64> = Vec::new();
            let mut open = true;
            while open || !pending.is_empty() {
                loop {
                    match rx.try_recv() {
                        Ok(x) => pending.push(x),
                        Err(tokio::sync::mpsc::error::TryRecvError::Empty) => break,
                        Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => {
                            open = false;
                            break;
                        }
                    }
                }
                let mut still = Vec::new();
                for chunk in pending.chunks(100) {
                    let ids: Vec<&String> = chunk.iter().map(|(i, _)| i).collect();
                    let r = client
                        .cvm(
                            "DescribeInstancesStatus",
                            json!({"InstanceIds": ids, "Limit": 100}),
                        )
                        .await;
                    let now = Instant::now();
                    let running: std::collections::HashSet<String> = r
                        .ok()
                        .and_then(|r| r["InstanceStatusSet"].as_array().cloned())
                        .unwrap_or_default()
                        .into_iter()
                        .filter(|s| s["InstanceState"] == "RUNNING")
                        .filter_map(|s| s["InstanceId"].as_str().map(String::from))
                        .collect();
                    for (id, t0) in chunk {
                        if running.contains(id) {
                            lat.push(now.duration_since(*t0).as_secs_f64() * 1000.0);
                        } else {
                            still.push((id.clone(), *t0));
                        }
                    }
                }
                pending = still;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            lat
        })
    };
    let start = Instant::now();
    let per = instances / concurrency.max(1);
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let client = client.clone();
        let pb = pb.clone();
        let tx = tx.clone();
        let n = if w + 1 == concurrency {
            instances - per * (concurrency - 1)
        } else {
            per
        };
        tasks.push(tokio::spawn(async move {
            let mut api_lat: Vec<f64> = Vec::new();
            for _ in 0..n {
                let t0 = Instant::now();
                let r = client
                    .cvm(
                        "RunInstances",
                        json!({"Placement": {"Zone": "ap-guangzhou-3"}, "ImageId": "img-gc0ubt22", "InstanceType": "GT5.6XLARGE240"}),
                    )
                    .await;
                pb.inc(1);
                if let Ok(v) = r {
                    if let Some(id) = v["InstanceIdSet"][0].as_str() {
                        api_lat.push(t0.elapsed().as_secs_f64() * 1000.0);
                        let _ = tx.send((id.to_string(), t0));
                    }
                }
            }
            api_lat
        }));
    }
    drop(tx);
    let mut api_lat = Vec::new();
    for t in tasks {
        api_lat.extend(t.await?);
    }
    let accept_s = start.elapsed().as_secs_f64();
    pb.finish_and_clear();
    let mut lat = tokio::time::timeout(Duration::from_secs(600), watcher)
        .await
        .context("instances did not all reach RUNNING")??;
    let all_running_s = start.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    api_lat.sort_by(f64::total_cmp);
    let launched = api_lat.clone();
    cloud.stop().await;
    Ok(json!({
        "hosts": hosts,
        "instances": launched.len(),
        "concurrency": concurrency,
        "sim_boot_ms": boot_ms,
        "host_registration_s": (registration_s * 100.0).round() / 100.0,
        "runinstances_per_sec": (launched.len() as f64 / accept_s).round(),
        "running": lat.len(),
        "running_per_sec": (launched.len() as f64 / all_running_s).round(),
        "runinstances_p50_ms": (pct(&api_lat, 0.5) * 10.0).round() / 10.0,
        "runinstances_p99_ms": (pct(&api_lat, 0.99) * 10.0).round() / 10.0,
        "request_to_running_p50_ms": (pct(&lat, 0.5) * 10.0).round() / 10.0,
        "request_to_running_p99_ms": (pct(&lat, 0.99) * 10.0).round() / 10.0,
    }))
}

fn rss_mib(pid: u32) -> Result<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: f64 = s
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .context("VmRSS")?;
    Ok(kb / 1024.0)
}

async fn memory_bench(hosts: u32, instances: u32) -> Result<serde_json::Value> {
    let dir = tempfile::tempdir()?;
    let data: PathBuf = dir.path().join("cloud");
    let gpu_hosts = hosts * 9 / 10;
    let cpu_hosts = hosts - gpu_hosts;
    let spec = format!("{gpu_hosts}*T4x8,{cpu_hosts}*CPU");
    let exe = std::env::current_exe()?;
    let mut child = tokio::process::Command::new(&exe)
        .args([
            "up",
            "--listen",
            "127.0.0.1:0",
            "--no-local-agent",
            "--sim-boot-ms",
            "0",
            "--sim-stop-ms",
            "0",
            "--host-grace-s",
            "3600",
            "--simulate",
        ])
        .arg(&spec)
        .arg("--data-dir")
        .arg(&data)
        .env("GPUCLOUD_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting gpucloud up")?;
    let pid = child.id().context("child pid")?;
    let cred_path = data.join("credentials.json");
    let end = Instant::now() + Duration::from_secs(120);
    while !cred_path.exists() {
        anyhow::ensure!(Instant::now() < end, "gpucloud up did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let creds: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&cred_path)?)?;
    let endpoint = creds["Endpoint"].as_str().unwrap_or_default().to_string();
    let store = cloud::open_store(&data, None).await?;
    let reg = Instant::now();
    let pb = bar(u64::from(hosts), "hosts registering");
    loop {
        let n = store.host_list().await?.len() as u64;
        pb.set_position(n);
        if n >= u64::from(hosts) {
            break;
        }
        anyhow::ensure!(
            reg.elapsed() < Duration::from_secs(1800),
            "hosts did not register"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    pb.finish_and_clear();
    let registration_s = reg.elapsed().as_secs_f64();
    let rss_idle = rss_mib(pid)?;
    // Instances: 1-GPU T4 instances on the GPU hosts, small CPU instances on the rest.
    let gpu_capacity = gpu_hosts * 8;
    let per_tenant = 3000u32;
    let tenants = instances.div_ceil(per_tenant);
    let mut clients = Vec::new();
    for t in 0..tenants {
        let c = store
            .tenant_create(&format!("bench-{t}"), i64::from(per_tenant))
            .await?;
        clients.push(Client::new(
            &endpoint,
            &c.secret_id,
            &c.secret_key,
            "ap-guangzhou",
        ));
    }
    let pb = bar(u64::from(instances), "instances");
    let start = Instant::now();
    let mut made = 0u32;
    let mut tasks = Vec::new();
    for (t, client) in clients.iter().enumerate() {
        let count = per_tenant.min(instances - (t as u32) * per_tenant);
        let first = (t as u32) * per_tenant;
        let client = client.clone();
        let pb = pb.clone();
        tasks.push(tokio::spawn(async move {
            let mut made = 0u32;
            let mut i = 0u32;
            while i < count {
                let n = 100.min(count - i);
                let gpu = first + i < gpu_capacity;
                let ty = if gpu { "GN7.2XLARGE32" } else { "S5.SMALL1" };
                let r = client
                    .cvm(
                        "RunInstances",
                        json!({"Placement": {"Zone": "ap-guangzhou-3"}, "ImageId": "img-gc0ubt22", "InstanceType": ty, "InstanceCount": n}),
                    )
                    .await;
                match r {
                    Ok(_) => made += n,
                    Err(e) => tracing::warn!(error = %e, "RunInstances failed"),
                }
                pb.inc(u64::from(n));
                i += n;
            }
            made
        }));
    }
    for t in tasks {
        made += t.await?;
    }
    pb.finish_and_clear();
    let create_s = start.elapsed().as_secs_f64();
    // Wait until every instance runs.
    let end = Instant::now() + Duration::from_secs(1800);
    loop {
        let counts = store.instance_state_counts().await?;
        let running: i64 = counts
            .iter()
            .filter(|(s, _)| s == "RUNNING")
            .map(|(_, n)| *n)
            .sum();
        if running >= i64::from(made) {
            break;
        }
        anyhow::ensure!(
            Instant::now() < end,
            "instances did not all reach RUNNING ({running}/{made})"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let running_s = start.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rss = rss_mib(pid)?;
    let _ = child.kill().await;
    Ok(json!({
        "hosts": hosts,
        "fleet": spec,
        "instances_running": made,
        "rss_mib_idle_fleet": (rss_idle * 10.0).round() / 10.0,
        "rss_mib": (rss * 10.0).round() / 10.0,
        "host_registration_s": (registration_s * 10.0).round() / 10.0,
        "create_s": (create_s * 10.0).round() / 10.0,
        "all_running_s": (running_s * 10.0).round() / 10.0,
    }))
}

/// Runs a benchmark.
pub async fn run(a: BenchArgs) -> Result<()> {
    match a.cmd {
        BenchCmd::Scheduler {
            hosts,
            gpus_per_host,
            output,
        } => {
            anyhow::ensure!(
                hosts > 0 && (1..=16).contains(&gpus_per_host),
                "--hosts ≥ 1 and --gpus-per-host 1-16"
            );
            // One core: run on this thread, no other work.
            let v = tokio::task::block_in_place(|| scheduler_bench(hosts, gpus_per_host));
            report(output, v);
        }
        BenchCmd::Api {
            hosts,
            instances,
            concurrency,
            boot_ms,
            output,
        } => {
            let v = api_bench(hosts, instances, concurrency.max(1), boot_ms).await?;
            report(output, v);
        }
        BenchCmd::Memory {
            hosts,
            instances,
            output,
        } => {
            let v = memory_bench(hosts, instances).await?;
            report(output, v);
        }
    }
    Ok(())
}
