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
pub(crate) struct Target {
    /// The cloud's data directory.
    #[arg(long, env = "GPUCLOUD_DATA_DIR", global = true)]
    pub(crate) data_dir: Option<PathBuf>,
    /// PostgreSQL URL (with --data-dir for the master key).
    #[arg(long, env = "GPUCLOUD_DATABASE", global = true)]
    pub(crate) database: Option<String>,
    /// Output format.
    #[arg(long, short, value_enum, default_value = "table", global = true)]
    pub(crate) output: Output,
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
    /// Hosts: list (capacity, state, runtimes), cordon, uncordon, drain, remove.
    Hosts {
        #[command(subcommand)]
        cmd: Option<HostsCmd>,
        #[command(flatten)]
        target: Target,
    },
    /// Join tokens that let a host's agent join the cluster.
    JoinToken {
        #[command(subcommand)]
        cmd: JoinTokenCmd,
        #[command(flatten)]
        target: Target,
    },
    /// Images: register an image built by a script in images/ (or your own).
    Image {
        #[command(subcommand)]
        cmd: crate::image_cmd::ImageCmd,
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
enum HostsCmd {
    /// Lists hosts (the default).
    List,
    /// Stops new instances from being placed on a host; its instances keep running.
    Cordon {
        /// `host-…`.
        host: String,
    },
    /// Lets a cordoned or draining host take new instances again.
    Uncordon {
        /// `host-…`.
        host: String,
    },
    /// Cordons a host and lists what still has to leave it; with --wait,
    /// waits until nothing is left (tenants stop, resize or terminate them).
    Drain {
        /// `host-…`.
        host: String,
        /// Wait up to this many seconds for the host to empty.
        #[arg(long)]
        wait: Option<u64>,
    },
    /// Removes an empty host and revokes its agent's certificate.
    Remove {
        /// `host-…`.
        host: String,
    },
}

#[derive(clap::Subcommand, Debug)]
enum JoinTokenCmd {
    /// Creates a token and prints the command that joins a host with it.
    Create {
        /// How long the token is valid, e.g. 30m, 2h, 1d.
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// How many hosts may join with it.
        #[arg(long, default_value_t = 1)]
        uses: i64,
        /// A note for operators (which rack, which ticket …).
        #[arg(long, default_value = "")]
        description: String,
        /// The agent endpoint URL agents dial (default: what the server advertises).
        #[arg(long)]
        server: Option<String>,
        /// Re-join this known host (a reinstalled machine, a lost
        /// certificate): a one-use token whose join replaces the host's
        /// certificates. Without it a token joins new hosts only.
        #[arg(long)]
        host: Option<String>,
    },
    /// Lists tokens (never their secrets).
    List,
    /// Revokes a token before it expires: no host joins with it any more.
    Revoke {
        /// The token, or its ID (the part after `gcj.`).
        token: String,
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
    /// Lists a tenant's API keys (SecretIds and status, never the SecretKeys).
    Keys {
        /// Tenant name.
        name: String,
    },
    /// Turns an API key off: requests signed with it are refused (within
    /// 15 s on every server). Reversible with key-enable.
    KeyDisable {
        /// The SecretId (AKID…).
        secret_id: String,
    },
    /// Turns a disabled API key on again.
    KeyEnable {
        /// The SecretId (AKID…).
        secret_id: String,
    },
}

pub(crate) async fn store_of(t: &Target) -> Result<gpucloud_store::Store> {
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
                    eprintln!("The SecretKey is shown only now; keep it safe.");
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
                TenantCmd::Keys { name } => {
                    let t = store.tenant_by_name(&name).await?.ok_or_else(|| {
                        anyhow::anyhow!(
                            "no tenant named {name}; `gpucloud admin tenant list` shows them"
                        )
                    })?;
                    let keys = store.api_keys_of(t.app_id).await?;
                    match target.output {
                        Output::Json => json(
                            &keys
                                .iter()
                                .map(|(id, status, at)| {
                                    serde_json::json!({"SecretId": id, "Status": status, "CreateTime": gpucloud_store::iso(*at)})
                                })
                                .collect::<Vec<_>>(),
                        ),
                        Output::Table => table(
                            &["SecretId", "Status", "Created"],
                            keys.iter()
                                .map(|(id, status, at)| {
                                    vec![id.clone(), status.clone(), gpucloud_store::iso(*at)]
                                })
                                .collect(),
                        ),
                    }
                }
                TenantCmd::KeyDisable { secret_id } => {
                    key_active(&store, &secret_id, false).await?
                }
                TenantCmd::KeyEnable { secret_id } => key_active(&store, &secret_id, true).await?,
            }
        }
        AdminCmd::Hosts {
            cmd:
                Some(
                    cmd @ (HostsCmd::Cordon { .. }
                    | HostsCmd::Uncordon { .. }
                    | HostsCmd::Drain { .. }
                    | HostsCmd::Remove { .. }),
                ),
            target,
        } => {
            let store = store_of(&target).await?;
            hosts_op(&store, cmd, target.output).await?;
        }
        AdminCmd::JoinToken { cmd, target } => {
            let store = store_of(&target).await?;
            join_token(&store, cmd, target.output).await?;
        }
        AdminCmd::Image { cmd, target } => crate::image_cmd::run(cmd, target).await?,
        AdminCmd::Hosts { cmd: _, target } => {
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
                        "Admin",
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
                                h.admin_state.clone(),
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

/// Parses `90s`, `30m`, `2h`, `1d` (a bare number is seconds).
fn parse_duration(s: &str) -> Result<std::time::Duration> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| anyhow::anyhow!("`{s}` is not a duration like 90s, 30m, 2h or 1d"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => anyhow::bail!("`{s}` is not a duration like 90s, 30m, 2h or 1d"),
    };
    Ok(std::time::Duration::from_secs(secs))
}

async fn key_active(store: &gpucloud_store::Store, secret_id: &str, active: bool) -> Result<()> {
    match store.api_key_set_active(secret_id, active).await {
        Ok(app_id) => {
            eprintln!(
                "API key {secret_id} of AppId {app_id} is {}{}",
                if active { "active again" } else { "disabled" },
                if active {
                    ""
                } else {
                    "; every server refuses it within 15 s"
                }
            );
            Ok(())
        }
        Err(gpucloud_store::StoreError::NotFound(_)) => anyhow::bail!(
            "no API key {secret_id}; `gpucloud admin tenant keys NAME` lists a tenant's keys"
        ),
        Err(e) => Err(e.into()),
    }
}

async fn join_token(
    store: &gpucloud_store::Store,
    cmd: JoinTokenCmd,
    output: Output,
) -> Result<()> {
    match cmd {
        JoinTokenCmd::Create {
            ttl,
            uses,
            description,
            server,
            host,
        } => {
            let ttl = parse_duration(&ttl)?;
            if ttl.is_zero() || ttl > std::time::Duration::from_secs(7 * 86_400) {
                anyhow::bail!(
                    "--ttl must be between 1 s and 7 days: join tokens are meant to be short-lived"
                );
            }
            if !(1..=10_000).contains(&uses) {
                anyhow::bail!("--uses must be 1 to 10000");
            }
            let pki = gpucloud_server::pki::Pki::load_or_create(store)
                .await
                .map_err(|e| anyhow::anyhow!(chain(&e)))?;
            let token = match &host {
                Some(h) => {
                    if uses != 1 {
                        anyhow::bail!(
                            "a token for one host (--host) is for one join; leave out --uses"
                        );
                    }
                    if !gpucloud_api_types::ids::is_valid(gpucloud_api_types::ids::IdKind::Host, h)
                    {
                        anyhow::bail!("--host takes a host ID like host-xxxxxxxx (see `gpucloud admin hosts`)");
                    }
                    store
                        .join_token_for_host(&description, ttl.as_millis() as i64, h)
                        .await?
                }
                None => {
                    store
                        .join_token_create(&description, ttl.as_millis() as i64, uses)
                        .await?
                }
            };
            let server = match server {
                Some(s) => s,
                None => store
                    .setting("agent_endpoint")
                    .await?
                    .unwrap_or_else(|| "https://SERVER:8443".into()),
            };
            let expires = gpucloud_store::iso(gpucloud_store::now_ms() + ttl.as_millis() as i64);
            let command = format!(
                "gpucloud agent --server {server} --join-token {token} --ca-hash {}",
                pki.ca_hash()
            );
            match output {
                Output::Json => json(&serde_json::json!({
                    "Token": token,
                    "CaHash": pki.ca_hash(),
                    "Server": server,
                    "ExpiresAt": expires,
                    "Uses": uses,
                    "HostId": host,
                    "Command": command,
                })),
                Output::Table => {
                    println!("join token  {token}");
                    println!("CA hash     {}", pki.ca_hash());
                    println!("expires     {expires} ({uses} use(s))");
                    if let Some(h) = &host {
                        println!("re-joins    {h} (its earlier certificates stop working)");
                    }
                    println!();
                    println!("On the new host, as root:");
                    println!("  {command}");
                }
            }
        }
        JoinTokenCmd::Revoke { token } => {
            let id = token
                .trim()
                .strip_prefix("gcj.")
                .unwrap_or(token.trim())
                .split('.')
                .next()
                .unwrap_or_default()
                .to_string();
            if !store.join_token_revoke(&id).await? {
                anyhow::bail!("no join token {id}; `gpucloud admin join-token list` shows them");
            }
            eprintln!("join token gcj.{id}.… revoked: no host joins with it any more");
        }
        JoinTokenCmd::List => {
            let list = store.join_tokens().await?;
            match output {
                Output::Json => json(&list),
                Output::Table => table(
                    &[
                        "Token",
                        "Description",
                        "Host",
                        "Uses left",
                        "Expires",
                        "Created",
                    ],
                    list.iter()
                        .map(|t| {
                            vec![
                                format!("gcj.{}.…", t.token_id),
                                t.description.clone(),
                                t.host_id.clone().unwrap_or_else(|| "(new hosts)".into()),
                                t.uses_left.to_string(),
                                gpucloud_store::iso(t.expires_at),
                                gpucloud_store::iso(t.created_at),
                            ]
                        })
                        .collect(),
                ),
            }
        }
    }
    Ok(())
}

async fn hosts_op(store: &gpucloud_store::Store, cmd: HostsCmd, output: Output) -> Result<()> {
    use gpucloud_store::hosts::AdminState;
    let (host, what) = match &cmd {
        HostsCmd::Cordon { host } => (host.clone(), "cordoned"),
        HostsCmd::Uncordon { host } => (host.clone(), "uncordoned"),
        HostsCmd::Drain { host, .. } => (host.clone(), "draining"),
        HostsCmd::Remove { host } => (host.clone(), "removed"),
        HostsCmd::List => return Ok(()),
    };
    let not_found = || anyhow::anyhow!("no host {host}; `gpucloud admin hosts` lists them");
    if store.host_get(&host).await?.is_none() {
        return Err(not_found());
    }
    match &cmd {
        HostsCmd::Cordon { .. } => store.host_set_admin(&host, AdminState::Cordoned).await?,
        HostsCmd::Uncordon { .. } => store.host_set_admin(&host, AdminState::Active).await?,
        HostsCmd::Drain { wait, .. } => {
            store.host_set_admin(&host, AdminState::Draining).await?;
            let deadline =
                std::time::Instant::now() + std::time::Duration::from_secs(wait.unwrap_or(0));
            let bar = wait.map(|_| {
                let b = indicatif::ProgressBar::new_spinner();
                b.enable_steady_tick(std::time::Duration::from_millis(200));
                b
            });
            loop {
                let left = store.instances_on_host(&host).await?;
                if let Some(b) = &bar {
                    b.set_message(format!("{host}: {} instance(s) left", left.len()));
                }
                if left.is_empty() {
                    if let Some(b) = bar {
                        b.finish_and_clear();
                    }
                    match output {
                        Output::Json => json(
                            &serde_json::json!({"host_id": host, "admin_state": "DRAINING", "instances": []}),
                        ),
                        Output::Table => println!(
                            "{host} is empty; remove it with `gpucloud admin hosts remove {host}`"
                        ),
                    }
                    break;
                }
                if std::time::Instant::now() >= deadline {
                    if let Some(b) = bar {
                        b.finish_and_clear();
                    }
                    let rows = left
                        .iter()
                        .map(|i| {
                            vec![
                                i.instance_id.clone(),
                                i.app_id.to_string(),
                                i.state.as_str().to_string(),
                                i.instance_type.clone(),
                            ]
                        })
                        .collect();
                    match output {
                        Output::Json => json(
                            &serde_json::json!({"host_id": host, "admin_state": "DRAINING", "instances": left}),
                        ),
                        Output::Table => {
                            println!("{host} is draining: no new instances go there. Still on it:");
                            table(&["Instance", "AppId", "State", "Type"], rows);
                            println!("They leave when their owners terminate them, or move when resized (ResetInstancesType) while the host is full.");
                        }
                    }
                    return Ok(());
                }
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            return Ok(());
        }
        HostsCmd::Remove { .. } => store.host_remove(&host).await.map_err(|e| match e {
            gpucloud_store::instances::TxError::Cloud(c) => anyhow::anyhow!(c.to_string()),
            gpucloud_store::instances::TxError::Store(s) => anyhow::anyhow!(chain(&s)),
            other => anyhow::anyhow!(chain(&other)),
        })?,
        HostsCmd::List => {}
    }
    match output {
        Output::Json => json(&serde_json::json!({"host_id": host, "result": what})),
        Output::Table => println!("{host} {what}"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90").unwrap().as_secs(), 90);
        assert_eq!(parse_duration("30m").unwrap().as_secs(), 1800);
        assert_eq!(parse_duration("2h").unwrap().as_secs(), 7200);
        assert_eq!(parse_duration("1d").unwrap().as_secs(), 86_400);
        assert!(parse_duration("1w").is_err());
        assert!(parse_duration("h").is_err());
    }
}
