//! `gpucloud doctor`: explains what this host can and cannot do, and why.

use crate::output::{json, table, Output};
use anyhow::Result;
use gpucloud_agent::doctor::{examine, Roots, Status};
use gpucloud_agent::nvml::Nvml;

/// Flags of `doctor`.
#[derive(clap::Args, Debug)]
pub struct DoctorArgs {
    /// Output format.
    #[arg(long, short, value_enum, default_value = "table")]
    output: Output,
    /// Do not boot the KVM probe guest (it takes up to 10 s on a broken host).
    #[arg(long)]
    no_kvm_probe: bool,
    /// The NVML library (default: libnvidia-ml.so.1 from the loader path).
    #[arg(long, env = "GPUCLOUD_NVML_LIB")]
    nvml_lib: Option<std::path::PathBuf>,
}

/// Runs `doctor`. Exits 0 whatever it finds: it is a report, not a gate.
pub async fn run(a: DoctorArgs) -> Result<()> {
    let spinner = (a.output == Output::Table).then(|| {
        let b = indicatif::ProgressBar::new_spinner();
        b.set_message("examining this host (KVM probe, NVML, runtimes, cgroups, nftables)…");
        b.enable_steady_tick(std::time::Duration::from_millis(120));
        b
    });
    let probe = !a.no_kvm_probe;
    let lib = a.nvml_lib.clone();
    let report = tokio::task::spawn_blocking(move || {
        let driver = Nvml::load(lib.as_deref().map(|p| p.as_os_str()));
        examine(&Roots::default(), &driver, probe)
    })
    .await?;
    if let Some(s) = spinner {
        s.finish_and_clear();
    }
    match a.output {
        Output::Json => json(&report),
        Output::Table => {
            table(
                &["Check", "Status", "Found", "What to do"],
                report
                    .checks
                    .iter()
                    .map(|c| {
                        vec![
                            c.area.to_string(),
                            match c.status {
                                Status::Ok => "ok",
                                Status::Warn => "warn",
                                Status::Fail => "FAIL",
                                Status::Info => "info",
                            }
                            .to_string(),
                            c.detail.clone(),
                            c.fix.clone(),
                        ]
                    })
                    .collect(),
            );
            println!();
            println!("This host can run:");
            for c in &report.capabilities {
                println!(
                    "  {} {:<32} {}",
                    if c.available { "yes" } else { "no " },
                    c.what,
                    c.why
                );
            }
        }
    }
    Ok(())
}
