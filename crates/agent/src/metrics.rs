//! The agent's `/metrics`, in the Prometheus text format: the agent's own
//! state (reports, instances by power, resident memory) and the GPUs'
//! telemetry and health from [`crate::nvml::GpuMonitor`].

use crate::nvml::GpuView;
use gpucloud_agent_api::{GpuInventory, ObservedPower, ObservedState};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

/// Counters the agent loop keeps.
#[derive(Debug, Default)]
pub struct AgentStats {
    reports_ok: AtomicU64,
    reports_failed: AtomicU64,
    last_report_ms: AtomicI64,
    /// Instances by observed power at the last report.
    by_power: Mutex<[u64; 4]>,
}

impl AgentStats {
    /// Records a report and its outcome.
    pub fn record(&self, observed: &ObservedState, ok: bool) {
        if ok {
            self.reports_ok.fetch_add(1, Ordering::Relaxed);
            self.last_report_ms
                .store(chrono::Utc::now().timestamp_millis(), Ordering::Relaxed);
        } else {
            self.reports_failed.fetch_add(1, Ordering::Relaxed);
        }
        let mut counts = [0u64; 4];
        for i in &observed.instances {
            counts[power_slot(i.power)] += 1;
        }
        *self.by_power.lock().unwrap_or_else(|p| p.into_inner()) = counts;
    }
}

fn power_slot(p: ObservedPower) -> usize {
    match p {
        ObservedPower::Running => 0,
        ObservedPower::Stopped => 1,
        ObservedPower::Absent => 2,
        ObservedPower::Failed => 3,
    }
}

const POWERS: [&str; 4] = ["running", "stopped", "absent", "failed"];

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn rss_bytes() -> Option<u64> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

/// Renders the metrics page.
pub fn render(host_id: &str, stats: &AgentStats, gpus: &[GpuInventory], view: &GpuView) -> String {
    let mut o = String::new();
    let family = |o: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };
    family(
        &mut o,
        "gpucloud_agent_info",
        "gauge",
        "The agent and its host.",
    );
    let _ = writeln!(
        o,
        "gpucloud_agent_info{{host=\"{}\",version=\"{}\"}} 1",
        esc(host_id),
        env!("CARGO_PKG_VERSION")
    );
    family(
        &mut o,
        "gpucloud_agent_reports_total",
        "counter",
        "Reports sent to the control plane, by outcome.",
    );
    let _ = writeln!(
        o,
        "gpucloud_agent_reports_total{{outcome=\"ok\"}} {}\ngpucloud_agent_reports_total{{outcome=\"failed\"}} {}",
        stats.reports_ok.load(Ordering::Relaxed),
        stats.reports_failed.load(Ordering::Relaxed)
    );
    family(
        &mut o,
        "gpucloud_agent_last_report_timestamp_seconds",
        "gauge",
        "When the control plane last took a report.",
    );
    let _ = writeln!(
        o,
        "gpucloud_agent_last_report_timestamp_seconds {}",
        stats.last_report_ms.load(Ordering::Relaxed) as f64 / 1000.0
    );
    family(
        &mut o,
        "gpucloud_agent_instances",
        "gauge",
        "Instances on this host by observed power state.",
    );
    let counts = *stats.by_power.lock().unwrap_or_else(|p| p.into_inner());
    for (p, n) in POWERS.iter().zip(counts) {
        let _ = writeln!(o, "gpucloud_agent_instances{{power=\"{p}\"}} {n}");
    }
    if let Some(rss) = rss_bytes() {
        family(
            &mut o,
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory of the agent.",
        );
        let _ = writeln!(o, "process_resident_memory_bytes {rss}");
    }

    family(
        &mut o,
        "gpucloud_gpu_healthy",
        "gauge",
        "1 when the GPU is schedulable, 0 when fenced or failing.",
    );
    for g in gpus {
        let _ = writeln!(
            o,
            "gpucloud_gpu_healthy{{gpu=\"{}\",uuid=\"{}\",pci=\"{}\",model=\"{}\"}} {}",
            g.index,
            esc(&g.uuid),
            esc(&g.pci_address),
            esc(&g.model),
            u8::from(g.healthy)
        );
    }
    type Pick = fn(&crate::nvml::GpuSample) -> Option<f64>;
    let gauges: [(&str, &str, Pick); 7] = [
        (
            "gpucloud_gpu_temperature_celsius",
            "GPU core temperature.",
            |s| s.temperature_c.map(f64::from),
        ),
        ("gpucloud_gpu_power_watts", "Power draw.", |s| s.power_w),
        (
            "gpucloud_gpu_power_limit_watts",
            "Enforced power limit.",
            |s| s.power_limit_w,
        ),
        (
            "gpucloud_gpu_utilization_ratio",
            "Fraction of time a kernel was running.",
            |s| s.utilization_pct.map(|p| f64::from(p) / 100.0),
        ),
        (
            "gpucloud_gpu_memory_used_bytes",
            "GPU memory in use.",
            |s| s.memory_used_bytes.map(|b| b as f64),
        ),
        (
            "gpucloud_gpu_memory_total_bytes",
            "GPU memory in total.",
            |s| s.memory_total_bytes.map(|b| b as f64),
        ),
        (
            "gpucloud_gpu_ecc_uncorrected_errors",
            "Uncorrected ECC errors since the driver loaded.",
            |s| s.ecc_uncorrected.map(|n| n as f64),
        ),
    ];
    for (name, help, pick) in gauges {
        let rows: Vec<String> = gpus
            .iter()
            .filter_map(|g| {
                let v = pick(view.samples.get(&g.pci_address)?)?;
                Some(format!(
                    "{name}{{gpu=\"{}\",uuid=\"{}\"}} {v}",
                    g.index,
                    esc(&g.uuid)
                ))
            })
            .collect();
        if !rows.is_empty() {
            family(&mut o, name, "gauge", help);
            for r in rows {
                let _ = writeln!(o, "{r}");
            }
        }
    }
    family(
        &mut o,
        "gpucloud_gpu_xid_errors_total",
        "counter",
        "XID events seen since the agent started.",
    );
    for ((pci, xid), n) in &view.xid_counts {
        let uuid = gpus
            .iter()
            .find(|g| &g.pci_address == pci)
            .map_or("", |g| g.uuid.as_str());
        let _ = writeln!(
            o,
            "gpucloud_gpu_xid_errors_total{{pci=\"{}\",uuid=\"{}\",xid=\"{xid}\"}} {n}",
            esc(pci),
            esc(uuid)
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nvml::GpuSample;

    #[test]
    fn renders_agent_and_gpu_families() {
        let stats = AgentStats::default();
        stats.record(
            &ObservedState {
                host_id: "h".into(),
                generation: 1,
                instances: vec![gpucloud_agent_api::InstanceStatus {
                    instance_id: "ins-a".into(),
                    spec_generation: 1,
                    power: ObservedPower::Running,
                    reboot_seq: 0,
                    message: None,
                }],
                commands: vec![],
            },
            true,
        );
        let gpu = GpuInventory {
            uuid: "GPU-1".into(),
            index: 0,
            model: "H100".into(),
            name: "NVIDIA H100 SXM 80GB".into(),
            pci_address: "0000:18:00.0".into(),
            numa_node: 0,
            nvlink_domain: Some(0),
            memory_mib: 81_920,
            healthy: false,
            health_reason: "XID 79".into(),
            mig_enabled: false,
            ecc_enabled: Some(true),
            kernel_driver: Some("nvidia".into()),
        };
        let mut view = GpuView::default();
        view.samples.insert(
            "0000:18:00.0".into(),
            GpuSample {
                pci_address: "0000:18:00.0".into(),
                temperature_c: Some(45),
                power_w: Some(310.5),
                utilization_pct: Some(97),
                ..Default::default()
            },
        );
        view.xid_counts.insert(("0000:18:00.0".into(), 79), 1);
        let text = render("host-abc", &stats, &[gpu], &view);
        for want in [
            "gpucloud_agent_reports_total{outcome=\"ok\"} 1",
            "gpucloud_agent_instances{power=\"running\"} 1",
            "gpucloud_gpu_healthy{gpu=\"0\",uuid=\"GPU-1\",pci=\"0000:18:00.0\",model=\"H100\"} 0",
            "gpucloud_gpu_temperature_celsius{gpu=\"0\",uuid=\"GPU-1\"} 45",
            "gpucloud_gpu_power_watts{gpu=\"0\",uuid=\"GPU-1\"} 310.5",
            "gpucloud_gpu_utilization_ratio{gpu=\"0\",uuid=\"GPU-1\"} 0.97",
            "gpucloud_gpu_xid_errors_total{pci=\"0000:18:00.0\",uuid=\"GPU-1\",xid=\"79\"} 1",
        ] {
            assert!(text.contains(want), "missing {want} in\n{text}");
        }
        // Every sample line belongs to a declared family.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            assert!(
                text.contains(&format!("# TYPE {name} ")),
                "{name} undeclared"
            );
        }
    }
}
