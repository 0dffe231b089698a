//! `gpucloud console INSTANCE`: the serial console of a VM instance on this
//! host, interactively. The agent's QEMU exposes each VM's first serial port
//! on a unix socket (`<agent-state>/qemu/vms/<id>/serial.sock`); this command
//! attaches the terminal to it in raw mode. `Ctrl-]` detaches.

use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Arguments of `console`.
#[derive(clap::Args)]
pub struct ConsoleArgs {
    /// The instance (`ins-…`), running on this host.
    instance: String,
    /// The agent's state directory (default: `<data-dir>/agent` of `up`).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// `up`'s data directory.
    #[arg(long, env = "GPUCLOUD_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Print the console log so far and exit (no terminal needed).
    #[arg(long)]
    log: bool,
}

/// Restores the terminal mode on drop.
struct RawMode(Option<String>);

impl RawMode {
    fn enter() -> Self {
        let saved = std::process::Command::new("stty")
            .arg("-g")
            .stdin(std::process::Stdio::inherit())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
        if saved.is_some() {
            let _ = std::process::Command::new("stty")
                .args(["raw", "-echo"])
                .stdin(std::process::Stdio::inherit())
                .status();
        }
        Self(saved)
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(s) = &self.0 {
            let _ = std::process::Command::new("stty")
                .arg(s)
                .stdin(std::process::Stdio::inherit())
                .status();
        }
    }
}

/// Runs `console`.
pub async fn run(a: ConsoleArgs) -> Result<()> {
    if !gpucloud_api_types::ids::is_valid(gpucloud_api_types::ids::IdKind::Instance, &a.instance) {
        bail!("`{}` is not an instance ID (ins-…)", a.instance);
    }
    let state = a.state_dir.clone().unwrap_or_else(|| {
        a.data_dir
            .clone()
            .unwrap_or_else(crate::default_data_dir)
            .join("agent")
    });
    let dir = state.join("qemu/vms").join(&a.instance);
    if !dir.exists() {
        bail!(
            "{} is not a VM on this host (no {}): run this on the instance's host (DescribeInstances shows Placement.HostId), with --state-dir of its agent",
            a.instance,
            dir.display()
        );
    }
    if a.log {
        let log = std::fs::read(dir.join("console.log")).unwrap_or_default();
        std::io::Write::write_all(&mut std::io::stdout(), &log)?;
        return Ok(());
    }
    let sock = dir.join("serial.sock");
    let stream = tokio::net::UnixStream::connect(&sock)
        .await
        .with_context(|| {
            format!(
                "{} is not running (or another console is attached): start it with StartInstances",
                a.instance
            )
        })?;
    eprintln!(
        "connected to the serial console of {} (Ctrl-] to detach; press Enter for a prompt)\r",
        a.instance
    );
    let _raw = RawMode::enter();
    let (mut r, mut w) = stream.into_split();
    let to_term = tokio::spawn(async move {
        let mut out = tokio::io::stdout();
        let mut buf = [0u8; 4096];
        while let Ok(n) = r.read(&mut buf).await {
            if n == 0 || out.write_all(&buf[..n]).await.is_err() {
                break;
            }
            let _ = out.flush().await;
        }
    });
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 1024];
    loop {
        tokio::select! {
            n = stdin.read(&mut buf) => {
                let n = n.unwrap_or(0);
                if n == 0 {
                    break;
                }
                // Ctrl-] detaches, as in telnet.
                if let Some(i) = buf[..n].iter().position(|b| *b == 0x1d) {
                    let _ = w.write_all(&buf[..i]).await;
                    break;
                }
                if w.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
            _ = tokio::time::sleep(std::time::Duration::from_millis(200)), if to_term.is_finished() => break,
        }
    }
    to_term.abort();
    drop(_raw);
    eprintln!("\ndetached from {}", a.instance);
    Ok(())
}
