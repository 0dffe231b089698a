//! `gpucloud`: one binary, many roles. This file parses flags and calls into
//! the libraries; the logic lives in the crates.

mod admin;
mod agent_cmd;
mod bench;
mod call_cmd;
mod cloud;
mod console_cmd;
mod doctor_cmd;
mod image_cmd;
mod output;
mod server_cmd;
mod up;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "gpucloud",
    version,
    about = "Turn Linux GPU servers into a GPU cloud you drive with tccli and the Tencent Cloud SDKs",
    long_about = "gpucloud runs a Tencent Cloud API 3.0 compatible GPU cloud.\n\nStart one on this machine with `gpucloud up --simulate 2*H100x8`, then point tccli at it (the command is printed at start)."
)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value = "human")]
    log_format: LogFormat,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a whole cloud on this machine: control plane, local host agent and
    /// optionally a simulated GPU fleet, with SQLite under --data-dir.
    Up(up::UpArgs),
    /// The control plane alone (API + agent endpoint), for clouds of many machines.
    Server(server_cmd::ServerArgs),
    /// The host agent of a GPU server: joins a cluster and runs its instances.
    Agent(agent_cmd::AgentArgs),
    /// Explain what this host can and cannot do (KVM, IOMMU/VFIO, NVIDIA
    /// driver, runc/crun, cgroups, nftables), and why.
    Doctor(doctor_cmd::DoctorArgs),
    /// Operator commands: tenants, hosts, GPUs, instances.
    Admin(admin::AdminArgs),
    /// One API call with the operator's credentials (for scripts and hosts
    /// without tccli), e.g. `gpucloud call cvm DescribeInstances '{}'`.
    Call(call_cmd::CallArgs),
    /// Images: import a cloud image (qcow2, raw …) or an image.json built by
    /// a script in images/.
    Image(image_cmd::ImageArgs),
    /// Benchmarks (figures for docs/PERFORMANCE.md).
    Bench(bench::BenchArgs),
    /// Attach to the serial console of a VM instance on this host
    /// (Ctrl-] detaches).
    Console(console_cmd::ConsoleArgs),
}

/// The default data directory: `$XDG_DATA_HOME/gpucloud` or `~/.local/share/gpucloud`.
pub fn default_data_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("gpucloud");
    }
    if let Some(h) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h).join(".local/share/gpucloud");
    }
    PathBuf::from("/var/lib/gpucloud")
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("GPUCLOUD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    // Colours only for a person at a terminal; log files stay plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    // The agent shares its host with the tenants' instances: a few threads
    // serve it on a 128-core GPU server as well as on a laptop.
    if matches!(cli.cmd, Cmd::Agent(_)) {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        builder.worker_threads(cores.clamp(1, 2));
    }
    let rt = builder
        .enable_all()
        .build()
        .expect("the tokio runtime starts");
    let result = rt.block_on(async move {
        match cli.cmd {
            Cmd::Up(a) => up::run(a).await,
            Cmd::Server(a) => server_cmd::run(a).await,
            Cmd::Agent(a) => agent_cmd::run(a).await,
            Cmd::Doctor(a) => doctor_cmd::run(a).await,
            Cmd::Call(a) => call_cmd::run(a).await,
            Cmd::Admin(a) => admin::run(a).await,
            Cmd::Bench(a) => bench::run(a).await,
            Cmd::Image(a) => image_cmd::run_top(a).await,
            Cmd::Console(a) => console_cmd::run(a).await,
        }
    });
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
