//! Operator commands. They open the cloud's database directly (SQLite allows
//! this while `up` runs), so they need the data directory (or `--database`).

use crate::cloud::{chain, open_store};
use crate::output::{json, table, Output};
use anyhow::Result;
use std::path::PathBuf;

/// Flags of `admin`.
#[derive(clap::Args, Debug)]
pub struct AdminArgs {
    #[command(subcommand)]
    cmd: AdminCmd,
}

#[derive(clap::Args, Debug, Clone)]
struct Target {
    /// The cloud's data directory.
    #[arg(long, env = "GPUCLOUD_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,
    /// PostgreSQL URL (with --data-dir for the master key).
    #[arg(long, env = "GPUCLOUD_DATABASE", global = true)]
    database: Option<String>,
    /// Output format.
    #[arg(long, short, value_enum, default_value = "table", global = true)]
    output: Output,
}

#[derive(clap::Subcommand, Debug)]
enum AdminCmd {
    /// Tenants (accounts) and their API keys.
    Tenant {
        #[command(subcommand)]
        cmd: TenantCmd,
        #[command(flatten)]
        target: Target,
    },
    /// Hosts: capacity, state, runtimes.
    Hosts {
        #[command(flatten)]
        target: Target,
    },
    /// GPUs: model, placement on the board, health, holder.
    Gpus {
        /// Only this host.
        #[arg(long)]
        host: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Instances of every tenant.
    Instances {
        /// At most this many, newest first.
        #[arg(long, default_value_t = 100)]
        limit: i64,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(clap::Subcommand, Debug)]
enum TenantCmd {
    /// Creates a tenant and prints its AppId, SecretId and SecretKey.
    Create {
        /// Unique tenant name.
        name: String,
        /// Instance quota.
        #[arg(long, default_value_t = gpucloud_store::tenants::DEFAULT_INSTANCE_QUOTA)]
        quota: i64,
    },
    /// Lists tenants.
    List,
    /// Creates another API key for a tenant.
    Key {
        /// Tenant name.
        name: String,
    },
}

async fn store_of(t: &Target) -> Result<gpucloud_store::Store> {
    let dir = t.data_dir.clone().unwrap_or_else(crate::default_data_dir);
    if t.database.is_none() && !dir.join("gpucloud.db").exists() {
        anyhow::bail!(
            "no cloud in {} (no gpucloud.db); pass --data-dir of a cloud started with `gpucloud up`",
            dir.display()
        );
    }
    open_store(&dir, t.database.as_deref()).await
}

fn mib(n: i64) -> String {
    format!("{:.0}", n as f64 / 1024.0)
}

/// Runs an admin command.
pub async fn run(a: AdminArgs) -> Result<()> {
    match a.cmd {
        AdminCmd::Tenant { cmd, target } => {
            let store = store_of(&target).await?;
            match cmd {
                TenantCmd::Create { name, quota } => {
                    let c = store
                        .tenant_create(&name, quota)
                        .await
                        .map_err(|e| anyhow::anyhow!(chain(&e)))?;
                    match target.output {
                        Output::Json => json(&c),
                        Output::Table => {
                            table(
                                &["AppId", "Uin", "Name", "SecretId", "SecretKey"],
                                vec![vec![
                                    c.app_id.to_string(),
                                    c.uin.to_string(),
                                    c.name.clone(),
                                    c.secret_id.clone(),
                                    c.secret_key.clone(),
                                ]],
                            );
                            eprintln!("The SecretKey is shown only now; store it safely.");
                        }
                    }
                }
                TenantCmd::List => {
                    let list = store.tenant_list().await?;
                    match target.output {
                        Output::Json => json(&list),
                        Output::Table => table(
                            &["AppId", "Uin", "Name", "Instance quota", "Created"],
                            list.iter()
                                .map(|t| {
                                    vec![
                                        t.app_id.to_string(),
                                        t.uin.to_string(),
                                        t.name.clone(),
                                        t.instance_quota.to_string(),
                                        gpucloud_store::iso(t.created_at),
                                    ]
                                })
                                .collect(),
                        ),
                    }
                }
                TenantCmd::Key { name } => {
                    let t = store.tenant_by_name(&name).await?.ok_or_else(|| {
                        anyhow::anyhow!(
                            "no tenant named {name}; `gpucloud admin tenant list` shows them"
                        )
                    })?;
                    let (sid, sk) = store.api_key_create(t.app_id).await?;
                    match target.output {
                        Output::Json => json(
                            &serde_json::json!({"AppId": t.app_id, "SecretId": sid, "SecretKey": sk}),
                        ),
                        Output::Table => table(
                            &["AppId", "SecretId", "SecretKey"],
                            vec![vec![t.app_id.to_string(), sid, sk]],
                        ),
                    }
                }
            }
        }
        AdminCmd::Hosts { target } => {
            let store = store_of(&target).await?;
            let snap = store.capacity_snapshot().await?;
            match target.output {
                Output::Json => {
                    let v: Vec<serde_json::Value> = snap
                        .iter()
                        .map(|(h, g)| {
                            let mut j = serde_json::to_value(h).unwrap_or_default();
                            j["gpus"] = serde_json::to_value(g).unwrap_or_default();
                            j
                        })
                        .collect();
                    json(&v)
                }
                Output::Table => table(
                    &[
                        "Host",
                        "Name",
                        "Zone",
                        "Kind",
                        "State",
                        "GPUs free/total",
                        "vCPU used/total",
                        "Mem GiB used/total",
                        "Runtimes",
                        "Note",
                    ],
                    snap.iter()
                        .map(|(h, g)| {
                            let free = g
                                .iter()
                                .filter(|x| x.claimed_by.is_none() && x.health == "HEALTHY")
                                .count();
                            let model = h.gpu_model.clone().unwrap_or_else(|| "-".into());
                            let note = if !h.state_reason.is_empty() {
                                h.state_reason.clone()
                            } else if h.runtimes.is_empty() {
                                "no instance runtime on this host".into()
                            } else if g.is_empty() {
                                h.inventory["details"]["gpu_note"]
                                    .as_str()
                                    .unwrap_or("")
                                    .to_string()
                            } else {
                                String::new()
                            };
                            vec![
                                h.host_id.clone(),
                                h.name.clone(),
                                h.zone.clone(),
                                h.kind.clone(),
                                h.state.clone(),
                                if g.is_empty() {
                                    "0 (no GPU)".into()
                                } else {
                                    format!("{free}/{} {model}", g.len())
                                },
                                format!("{}/{}", h.cpu_used, h.cpu_total),
                                format!("{}/{}", mib(h.mem_used_mib), mib(h.mem_total_mib)),
                                if h.runtimes.is_empty() {
                                    "-".into()
                                } else {
                                    h.runtimes.join(",")
                                },
                                note,
                            ]
                        })
                        .collect(),
                ),
            }
        }
        AdminCmd::Gpus { host, target } => {
            let store = store_of(&target).await?;
            let gpus = store.gpu_list(host.as_deref()).await?;
            match target.output {
                Output::Json => json(&gpus),
                Output::Table => table(
                    &[
                        "GPU", "Host", "Index", "Model", "PCI", "NUMA", "NVLink", "Health",
                        "Instance",
                    ],
                    gpus.iter()
                        .map(|g| {
                            vec![
                                g.gpu_id.clone(),
                                g.host_id.clone(),
                                g.idx.to_string(),
                                g.model.clone(),
                                g.pci_address.clone(),
                                g.numa_node.to_string(),
                                g.nvlink_domain.map_or("-".into(), |d| d.to_string()),
                                if g.health_reason.is_empty() {
                                    g.health.clone()
                                } else {
                                    format!("{} ({})", g.health, g.health_reason)
                                },
                                match (&g.claimed_by, g.claim_released) {
                                    (Some(i), true) => format!("{i} (releasing)"),
                                    (Some(i), false) => i.clone(),
                                    (None, _) => "-".into(),
                                },
                            ]
                        })
                        .collect(),
                ),
            }
        }
        AdminCmd::Instances { limit, target } => {
            let store = store_of(&target).await?;
            let list = store.instances_all(limit).await?;
            match target.output {
                Output::Json => json(&list),
                Output::Table => table(
                    &[
                        "Instance",
                        "AppId",
                        "Type",
                        "State",
                        "Operation",
                        "Host",
                        "GPUs",
                        "Private IP",
                        "Created",
                    ],
                    list.iter()
                        .map(|i| {
                            vec![
                                i.instance_id.clone(),
                                i.app_id.to_string(),
                                i.instance_type.clone(),
                                i.state.as_str().to_string(),
                                format!(
                                    "{} {}",
                                    i.latest_operation.clone().unwrap_or_default(),
                                    i.latest_operation_state.clone().unwrap_or_default()
                                ),
                                i.host_id.clone().unwrap_or_else(|| "-".into()),
                                i.gpu_ids.len().to_string(),
                                i.private_ip.clone().unwrap_or_default(),
                                gpucloud_store::iso(i.created_at),
                            ]
                        })
                        .collect(),
                ),
            }
        }
    }
    Ok(())
}
