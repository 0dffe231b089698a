//! Instances: creation with transactional claims, state transitions, the
//! desired state each host converges to, and settling agent reports.
//!
//! # Claims
//! Creating (or moving) an instance runs in one transaction that
//! 1. raises the host's CPU/memory counters with
//!    `UPDATE hosts … WHERE cpu_used + n <= cpu_total AND …` (0 rows: conflict),
//! 2. inserts one `gpu_claims` row per GPU (`ON CONFLICT DO NOTHING`; 0 rows:
//!    conflict),
//! 3. allocates a private IP and inserts the instance.
//!
//! A conflict rolls the whole transaction back and reports the host, so the
//! caller re-plans with fresh capacity. Nothing is ever half-created.
//!
//! # Releases
//! A claim is let go only when the host confirms the instance is gone from it
//! (or, for `STOP_CHARGING`, powered off). Until then the row keeps the GPU
//! taken, so a GPU is never handed to a second instance while the first may
//! still run on it — even across crashes, since everything is in the database.

use crate::db::{col, json_col, placeholders};
use crate::network::{allocate_ip, release_ips};
use crate::{now_ms, Result, Store, StoreError, TenantScope};
use gpucloud_core::error::CloudError;
use gpucloud_core::lifecycle::{self, DesiredPower, InstanceState, Observed, Operation};
use sqlx::any::AnyRow;
use sqlx::{Any, Transaction};
use std::collections::HashMap;

/// Failure of a transactional instance operation.
#[derive(Debug, thiserror::Error)]
pub enum TxError {
    /// The request is refused, as the caller should see it.
    #[error("refused")]
    Cloud(#[source] CloudError),
    /// Capacity on this host changed under the plan: re-plan.
    #[error("capacity on host {0} changed; re-plan")]
    HostConflict(String),
    /// The database failed.
    #[error("store")]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for TxError {
    fn from(e: sqlx::Error) -> Self {
        TxError::Store(e.into())
    }
}

impl From<CloudError> for TxError {
    fn from(e: CloudError) -> Self {
        TxError::Cloud(e)
    }
}

/// Everything needed to create one instance, placement included.
#[derive(Clone, Default)]
pub struct NewInstance {
    pub instance_id: String,
    pub uuid: String,
    pub name: String,
    pub host_name: String,
    pub zone: String,
    pub project_id: i64,
    pub instance_type: String,
    pub cpu: i64,
    pub memory_gib: i64,
    pub gpu_count: i64,
    pub image_id: String,
    pub runtime: String,
    pub charge_type: String,
    pub prepaid_period: Option<i64>,
    pub renew_flag: Option<String>,
    pub expired_at: Option<i64>,
    pub disable_api_termination: bool,
    pub user_data: Option<String>,
    pub password: Option<String>,
    pub system_disk: serde_json::Value,
    pub data_disks: serde_json::Value,
    pub internet: serde_json::Value,
    pub security_group_ids: Vec<String>,
    pub placement_group_id: Option<String>,
    pub tags: serde_json::Value,
    pub key_ids: Vec<String>,
    /// The planned host.
    pub host_id: String,
    /// The planned GPU indexes on that host.
    pub gpu_indexes: Vec<i64>,
}

gpucloud_api_types::debug_redacted!(NewInstance { instance_id, uuid, name, host_name, zone, project_id, instance_type, cpu, memory_gib, gpu_count, image_id, runtime, charge_type, prepaid_period, renew_flag, expired_at, disable_api_termination, system_disk, data_disks, internet, security_group_ids, placement_group_id, tags, key_ids, host_id, gpu_indexes } secret { user_data, password });

/// A batch from one `RunInstances` call.
#[derive(Debug, Clone)]
pub struct CreateBatch {
    pub request_id: String,
    pub client_token: Option<String>,
    pub instances: Vec<NewInstance>,
    /// Spread level of the placement group (`HOST`, `RACK`, `SW`) and its quota.
    pub group: Option<(String, String, i64)>,
}

/// What a create did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// New instances.
    New(Vec<String>),
    /// A retry of an earlier call with the same ClientToken.
    Existing(Vec<String>),
}

/// A stored instance.
#[derive(Clone, serde::Serialize)]
pub struct InstanceRow {
    pub instance_id: String,
    pub app_id: i64,
    pub uuid: String,
    pub name: String,
    pub host_name: String,
    pub zone: String,
    pub project_id: i64,
    pub instance_type: String,
    pub cpu: i64,
    pub memory_gib: i64,
    pub gpu_count: i64,
    pub image_id: String,
    pub runtime: String,
    pub charge_type: String,
    pub prepaid_period: Option<i64>,
    pub renew_flag: Option<String>,
    pub expired_at: Option<i64>,
    pub state: InstanceState,
    pub latest_operation: Option<String>,
    pub latest_operation_state: Option<String>,
    pub latest_operation_request_id: Option<String>,
    pub latest_operation_error: Option<String>,
    /// Why the host cannot bring the instance to its desired state right
    /// now (it keeps trying); `None` when it is as it should be.
    pub host_error: Option<String>,
    pub host_id: Option<String>,
    pub resources_held: bool,
    pub prev_host_id: Option<String>,
    pub spec_generation: i64,
    pub reboot_seq: i64,
    pub stop_type: Option<String>,
    pub stopped_mode: Option<String>,
    pub disable_api_termination: bool,
    pub user_data: Option<String>,
    pub system_disk: serde_json::Value,
    pub data_disks: serde_json::Value,
    pub internet: serde_json::Value,
    pub vpc_id: Option<String>,
    pub subnet_id: Option<String>,
    pub private_ip: Option<String>,
    pub security_group_ids: Vec<String>,
    pub placement_group_id: Option<String>,
    pub tags: serde_json::Value,
    pub created_at: i64,
    pub updated_at: i64,
    /// GPU UUIDs held (filled by list/get).
    pub gpu_ids: Vec<String>,
    /// GPU model key of those GPUs.
    pub gpu_model: Option<String>,
    /// Key pairs (filled by list/get).
    pub key_ids: Vec<String>,
}

gpucloud_api_types::debug_redacted!(InstanceRow { instance_id, app_id, uuid, name, host_name, zone, project_id, instance_type, cpu, memory_gib, gpu_count, image_id, runtime, charge_type, prepaid_period, renew_flag, expired_at, state, latest_operation, latest_operation_state, latest_operation_request_id, latest_operation_error, host_error, host_id, resources_held, prev_host_id, spec_generation, reboot_seq, stop_type, stopped_mode, disable_api_termination, system_disk, data_disks, internet, vpc_id, subnet_id, private_ip, security_group_ids, placement_group_id, tags, created_at, updated_at, gpu_ids, gpu_model, key_ids } secret { user_data });

fn instance_from_row(r: &AnyRow) -> Result<InstanceRow> {
    let state: String = col(r, "state")?;
    let held: i64 = col(r, "resources_held")?;
    let dat: i64 = col(r, "disable_api_termination")?;
    Ok(InstanceRow {
        instance_id: col(r, "instance_id")?,
        app_id: col(r, "app_id")?,
        uuid: col(r, "uuid")?,
        name: col(r, "name")?,
        host_name: col(r, "host_name")?,
        zone: col(r, "zone")?,
        project_id: col(r, "project_id")?,
        instance_type: col(r, "instance_type")?,
        cpu: col(r, "cpu")?,
        memory_gib: col(r, "memory_gib")?,
        gpu_count: col(r, "gpu_count")?,
        image_id: col(r, "image_id")?,
        runtime: col(r, "runtime")?,
        charge_type: col(r, "charge_type")?,
        prepaid_period: col(r, "prepaid_period")?,
        renew_flag: col(r, "renew_flag")?,
        expired_at: col(r, "expired_at")?,
        state: InstanceState::parse(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("instance state {state}")))?,
        latest_operation: col(r, "latest_operation")?,
        latest_operation_state: col(r, "latest_operation_state")?,
        latest_operation_request_id: col(r, "latest_operation_request_id")?,
        latest_operation_error: col(r, "latest_operation_error")?,
        host_error: col(r, "host_error")?,
        host_id: col(r, "host_id")?,
        resources_held: held == 1,
        prev_host_id: col(r, "prev_host_id")?,
        spec_generation: col(r, "spec_generation")?,
        reboot_seq: col(r, "reboot_seq")?,
        stop_type: col(r, "stop_type")?,
        stopped_mode: col(r, "stopped_mode")?,
        disable_api_termination: dat == 1,
        user_data: col(r, "user_data")?,
        system_disk: json_col(r, "system_disk")?,
        data_disks: json_col(r, "data_disks")?,
        internet: json_col(r, "internet")?,
        vpc_id: col(r, "vpc_id")?,
        subnet_id: col(r, "subnet_id")?,
        private_ip: col(r, "private_ip")?,
        security_group_ids: json_col(r, "security_group_ids")?,
        placement_group_id: col(r, "placement_group_id")?,
        tags: json_col(r, "tags")?,
        created_at: col(r, "created_at")?,
        updated_at: col(r, "updated_at")?,
        gpu_ids: vec![],
        gpu_model: None,
        key_ids: vec![],
    })
}

/// Filters of `DescribeInstances` (AND across fields, OR within one).
#[derive(Debug, Clone, Default)]
pub struct InstanceQuery {
    pub ids: Vec<String>,
    pub zones: Vec<String>,
    pub names: Vec<String>,
    pub states: Vec<String>,
    pub charge_types: Vec<String>,
    pub instance_types: Vec<String>,
    pub uuids: Vec<String>,
    pub project_ids: Vec<i64>,
    pub host_ids: Vec<String>,
    pub vpc_ids: Vec<String>,
    pub subnet_ids: Vec<String>,
    pub private_ips: Vec<String>,
    pub image_ids: Vec<String>,
    pub created_after: Option<i64>,
    pub created_before: Option<i64>,
    pub offset: i64,
    pub limit: i64,
}

/// What [`Store::instance_reinstall`] installs.
#[derive(Clone, Default)]
pub struct Reinstall {
    /// The image (the instance's own to reinstall it as it was).
    pub image_id: String,
    /// The image's runtime: it must be the instance's.
    pub runtime: String,
    /// A new host name (`None`: unchanged).
    pub host_name: Option<String>,
    /// New user data, run at the first boot of the fresh disk (`None`: the
    /// instance's own runs again).
    pub user_data: Option<String>,
    /// New login: root's password and the key pairs, replacing both
    /// (`None`: unchanged).
    pub login: Option<(Option<String>, Vec<String>)>,
}

gpucloud_api_types::debug_redacted!(Reinstall { image_id, runtime, host_name } secret { user_data, login });

/// What [`Store::instances_change_login`] changes.
#[derive(Clone)]
pub enum LoginChange<'a> {
    /// Key pairs added (`associate`) or removed.
    Keys {
        /// Key pair IDs.
        keys: &'a [String],
        /// Add or remove.
        associate: bool,
    },
    /// Root's new password (stored sealed).
    Password(&'a str),
}

impl std::fmt::Debug for LoginChange<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Keys { keys, associate } => f
                .debug_struct("Keys")
                .field("keys", keys)
                .field("associate", associate)
                .finish(),
            Self::Password(_) => f.write_str("Password(<redacted>)"),
        }
    }
}

/// Capacity released by a report, to return to the in-memory index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Released {
    pub host_id: String,
    pub gpu_indexes: Vec<i64>,
    pub cpu: i64,
    pub mem_mib: i64,
}

/// What the host should make of one instance.
#[derive(Clone, PartialEq)]
pub struct DesiredInstance {
    pub instance_id: String,
    pub app_id: i64,
    pub spec_generation: i64,
    pub power: DesiredPower,
    pub reboot_seq: i64,
    /// Reinstalls (`ResetInstance`) the system disk must have had.
    pub reset_seq: i64,
    pub stop_type: Option<String>,
    pub name: String,
    pub host_name: String,
    pub instance_type: String,
    pub cpu: i64,
    pub memory_gib: i64,
    /// `(index, GPU UUID, PCI address)` of the GPUs to give the instance.
    pub gpus: Vec<(i64, String, String)>,
    pub image_id: String,
    pub runtime: String,
    pub image_location: String,
    pub user_data: Option<String>,
    pub password: Option<String>,
    pub public_keys: Vec<String>,
    pub private_ip: Option<String>,
    pub subnet_cidr: Option<String>,
    /// `vpc-…` of the instance's network.
    pub vpc_id: Option<String>,
    pub data_disks: serde_json::Value,
    pub system_disk: serde_json::Value,
}

gpucloud_api_types::debug_redacted!(DesiredInstance { instance_id, app_id, spec_generation, power, reboot_seq, reset_seq, stop_type, name, host_name, instance_type, cpu, memory_gib, gpus, image_id, runtime, image_location, public_keys, private_ip, subnet_cidr, vpc_id, data_disks, system_disk } secret { user_data, password });

/// One instance as a host agent observed it.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservedInstance {
    pub instance_id: String,
    pub spec_generation: i64,
    pub observed: Observed,
    pub reboot_seq: i64,
    pub error: Option<String>,
}

/// What a report changed.
#[derive(Debug, Clone, Default)]
pub struct ReportOutcome {
    /// `(instance, from, to)`.
    pub transitions: Vec<(String, InstanceState, InstanceState)>,
    /// Capacity to give back to the scheduler.
    pub released: Vec<Released>,
    /// Command tasks whose state changed.
    pub tasks_changed: usize,
}

/// Options of a state transition.
#[derive(Debug, Clone, Default)]
pub struct TransitionOpts {
    pub stop_type: Option<String>,
    pub stopped_mode: Option<String>,
    /// Re-claims for instances whose resources were released (STOP_CHARGING),
    /// keyed by instance: GPU indexes on its host.
    pub reclaims: HashMap<String, Vec<i64>>,
}

/// Attribute changes of `ModifyInstancesAttribute` (`None`: unchanged).
#[derive(Clone, Default)]
pub struct InstanceChanges {
    pub name: Option<String>,
    pub host_name: Option<String>,
    pub disable_api_termination: Option<bool>,
    pub user_data: Option<String>,
    pub security_group_ids: Option<Vec<String>>,
}

gpucloud_api_types::debug_redacted!(InstanceChanges { name, host_name, disable_api_termination, security_group_ids } secret { user_data });

/// How a resize is placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResizePlan {
    /// Stay on the current host: GPU indexes to add and to drop.
    SameHost { add: Vec<i64>, drop: Vec<i64> },
    /// Move to another host with these GPUs.
    Move { host_id: String, gpus: Vec<i64> },
}

/// The new shape of a resized instance.
#[derive(Debug, Clone)]
pub struct NewShape {
    pub instance_type: String,
    pub cpu: i64,
    pub memory_gib: i64,
    pub gpu_count: i64,
}

/// The instance as it was read when a plan was made outside the
/// transaction. If a host report (releasing its resources) or another
/// operation changed it since, the plan is stale and the transaction says
/// [`TxError::HostConflict`] so the caller plans again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    pub spec_generation: i64,
    pub resources_held: bool,
}

impl Seen {
    /// What `r` says.
    pub fn of(r: &InstanceRow) -> Self {
        Self {
            spec_generation: r.spec_generation,
            resources_held: r.resources_held,
        }
    }
}

const INSTANCE_COLS: &str = "instance_id, app_id, uuid, name, host_name, zone, project_id, instance_type, cpu, memory_gib, gpu_count, image_id, runtime, charge_type, prepaid_period, renew_flag, expired_at, state, latest_operation, latest_operation_state, latest_operation_request_id, latest_operation_error, host_error, host_id, resources_held, prev_host_id, spec_generation, reboot_seq, stop_type, stopped_mode, disable_api_termination, user_data, system_disk, data_disks, internet, vpc_id, subnet_id, private_ip, security_group_ids, placement_group_id, tags, created_at, updated_at";

/// Claims vCPUs, memory and GPUs on a host for an instance. The host must be
/// reporting (`READY`) and taking instances (`ACTIVE`: not cordoned or
/// draining) — the database, not a possibly stale index, has the last word.
async fn claim_on_host(
    tx: &mut Transaction<'static, Any>,
    instance_id: &str,
    host_id: &str,
    cpu: i64,
    mem_mib: i64,
    gpus: &[i64],
) -> std::result::Result<(), TxError> {
    let n = sqlx::query(
        "UPDATE hosts SET cpu_used = cpu_used + $1, mem_used_mib = mem_used_mib + $2, generation = generation + 1
         WHERE host_id = $3 AND state = 'READY' AND admin_state = 'ACTIVE'
           AND cpu_used + $1 <= cpu_total AND mem_used_mib + $2 <= mem_total_mib",
    )
    .bind(cpu)
    .bind(mem_mib)
    .bind(host_id)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if n != 1 {
        return Err(TxError::HostConflict(host_id.to_string()));
    }
    let now = now_ms();
    for idx in gpus {
        let n = sqlx::query(
            "INSERT INTO gpu_claims (gpu_id, instance_id, host_id, released, claimed_at)
             SELECT gpu_id, $1, host_id, 0, $2 FROM gpus WHERE host_id = $3 AND idx = $4 AND health = 'HEALTHY'
             ON CONFLICT (gpu_id) DO NOTHING",
        )
        .bind(instance_id)
        .bind(now)
        .bind(host_id)
        .bind(*idx)
        .execute(&mut **tx)
        .await?
        .rows_affected();
        if n != 1 {
            return Err(TxError::HostConflict(host_id.to_string()));
        }
    }
    Ok(())
}

/// One of the tenant's instances, read inside a write transaction.
async fn instance_in_tx(
    tx: &mut Transaction<'static, Any>,
    scope: &TenantScope,
    id: &str,
) -> std::result::Result<InstanceRow, TxError> {
    let row = sqlx::query(&format!(
        "SELECT {INSTANCE_COLS} FROM instances WHERE app_id = $1 AND instance_id = $2 AND state <> 'TERMINATED'"
    ))
    .bind(scope.app_id())
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?
    .ok_or_else(|| CloudError::InstanceNotFound(vec![id.to_string()]))?;
    Ok(instance_from_row(&row)?)
}

/// Why an instance in `state` refuses `op`: busy with another operation, or
/// in a state the operation does not start from.
fn refusal(inst: &InstanceRow, op: Operation, state: InstanceState) -> CloudError {
    if state.is_transitional() {
        CloudError::OperationInProgress {
            id: inst.instance_id.clone(),
            operation: inst
                .latest_operation
                .clone()
                .unwrap_or_else(|| state.as_str().to_string()),
        }
    } else {
        CloudError::InstanceState {
            id: inst.instance_id.clone(),
            state,
            action: op.action().to_string(),
        }
    }
}

/// Holds a tenant's key pair for the rest of the transaction (a row lock on
/// PostgreSQL; SQLite's writers are serial), so that a `DeleteKeyPairs`
/// racing an association waits and then sees it in use; a key deleted first
/// is refused here (`login`: named as `LoginSettings.KeyIds`).
pub(crate) async fn lock_key_pair(
    tx: &mut Transaction<'static, Any>,
    scope: &TenantScope,
    key_id: &str,
    login: bool,
) -> std::result::Result<(), TxError> {
    let n = sqlx::query("UPDATE key_pairs SET key_id = key_id WHERE app_id = $1 AND key_id = $2")
        .bind(scope.app_id())
        .bind(key_id)
        .execute(&mut **tx)
        .await?
        .rows_affected();
    if n != 1 {
        return Err(if login {
            CloudError::LoginKeyPairNotFound(key_id.to_string())
        } else {
            CloudError::KeyPairNotFound(vec![key_id.to_string()])
        }
        .into());
    }
    Ok(())
}

async fn bump_host(tx: &mut Transaction<'static, Any>, host_id: &str) -> Result<()> {
    sqlx::query("UPDATE hosts SET generation = generation + 1 WHERE host_id = $1")
        .bind(host_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Releases an instance's claims on one host: deletes the GPU rows and lowers
/// the counters. Returns what was released.
async fn release_on_host(
    tx: &mut Transaction<'static, Any>,
    instance_id: &str,
    host_id: &str,
    cpu: i64,
    mem_mib: i64,
    only_released_rows: bool,
) -> Result<Released> {
    let sql = if only_released_rows {
        "SELECT g.idx FROM gpu_claims c JOIN gpus g ON g.gpu_id = c.gpu_id WHERE c.instance_id = $1 AND c.host_id = $2 AND c.released = 1"
    } else {
        "SELECT g.idx FROM gpu_claims c JOIN gpus g ON g.gpu_id = c.gpu_id WHERE c.instance_id = $1 AND c.host_id = $2"
    };
    let rows = sqlx::query(sql)
        .bind(instance_id)
        .bind(host_id)
        .fetch_all(&mut **tx)
        .await?;
    let idx: Vec<i64> = rows.iter().map(|r| col(r, "idx")).collect::<Result<_>>()?;
    let del = if only_released_rows {
        "DELETE FROM gpu_claims WHERE instance_id = $1 AND host_id = $2 AND released = 1"
    } else {
        "DELETE FROM gpu_claims WHERE instance_id = $1 AND host_id = $2"
    };
    sqlx::query(del)
        .bind(instance_id)
        .bind(host_id)
        .execute(&mut **tx)
        .await?;
    if cpu != 0 || mem_mib != 0 {
        sqlx::query(
            "UPDATE hosts SET cpu_used = CASE WHEN cpu_used >= $1 THEN cpu_used - $1 ELSE 0 END,
               mem_used_mib = CASE WHEN mem_used_mib >= $2 THEN mem_used_mib - $2 ELSE 0 END,
               generation = generation + 1
             WHERE host_id = $3",
        )
        .bind(cpu)
        .bind(mem_mib)
        .bind(host_id)
        .execute(&mut **tx)
        .await?;
    }
    Ok(Released {
        host_id: host_id.to_string(),
        gpu_indexes: idx,
        cpu,
        mem_mib,
    })
}

impl Store {
    /// Looks up a ClientToken of a tenant for an action.
    pub async fn client_token_get(
        &self,
        scope: &TenantScope,
        action: &str,
        token: &str,
    ) -> Result<Option<Vec<String>>> {
        let row = sqlx::query(
            "SELECT result FROM client_tokens WHERE app_id = $1 AND action = $2 AND token = $3",
        )
        .bind(scope.app_id())
        .bind(action)
        .bind(token)
        .fetch_optional(self.r())
        .await?;
        row.map(|r| json_col(&r, "result")).transpose()
    }

    /// The business limits a launch of `requested` instances would meet —
    /// the tenant's instance quota and the spread group's member quota —
    /// checked without writing (what `DryRun` answers from). The launch
    /// itself checks them again inside its transaction.
    pub async fn launch_limits_check(
        &self,
        scope: &TenantScope,
        requested: i64,
        group: Option<(&str, i64)>,
    ) -> std::result::Result<(), TxError> {
        let row =
            sqlx::query("SELECT instance_quota, instance_count FROM tenants WHERE app_id = $1")
                .bind(scope.app_id())
                .fetch_one(self.r())
                .await?;
        let (quota, used): (i64, i64) =
            (col(&row, "instance_quota")?, col(&row, "instance_count")?);
        if used + requested > quota {
            return Err(CloudError::InstanceQuota {
                quota,
                used,
                requested,
            }
            .into());
        }
        if let Some((group_id, group_quota)) = group {
            let members = sqlx::query(
                "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM instances WHERE placement_group_id = $1 AND app_id = $2 AND state <> 'TERMINATED'",
            )
            .bind(group_id)
            .bind(scope.app_id())
            .fetch_one(self.r())
            .await?;
            let count: i64 = col(&members, "n")?;
            if count + requested > group_quota {
                return Err(CloudError::PlacementGroupQuota {
                    id: group_id.to_string(),
                    quota: group_quota,
                }
                .into());
            }
        }
        Ok(())
    }

    /// Creates instances with their claims in one transaction.
    pub async fn instances_create(
        &self,
        scope: &TenantScope,
        batch: &CreateBatch,
    ) -> std::result::Result<Created, TxError> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        // The token is taken first: a concurrent retry with it waits here
        // (PostgreSQL blocks on the uncommitted key) and then answers with
        // this request's result, never with a refusal (quota, capacity)
        // that this request's own instances cause. A refusal rolls the
        // token back, so a retry tries afresh.
        if let Some(token) = &batch.client_token {
            let n = sqlx::query(
                "INSERT INTO client_tokens (app_id, action, token, result, created_at) VALUES ($1, 'RunInstances', $2, '[]', $3) ON CONFLICT DO NOTHING",
            )
            .bind(scope.app_id())
            .bind(token)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n == 0 {
                let row = sqlx::query(
                    "SELECT result FROM client_tokens WHERE app_id = $1 AND action = 'RunInstances' AND token = $2",
                )
                .bind(scope.app_id())
                .bind(token)
                .fetch_one(&mut *tx)
                .await?;
                return Ok(Created::Existing(json_col(&row, "result")?));
            }
        }
        // Quota: one conditional update of the tenant's counter.
        let requested = batch.instances.len() as i64;
        let n = sqlx::query(
            "UPDATE tenants SET instance_count = instance_count + $2 WHERE app_id = $1 AND instance_count + $2 <= instance_quota",
        )
        .bind(scope.app_id())
        .bind(requested)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n != 1 {
            let row =
                sqlx::query("SELECT instance_quota, instance_count FROM tenants WHERE app_id = $1")
                    .bind(scope.app_id())
                    .fetch_one(&mut *tx)
                    .await?;
            return Err(CloudError::InstanceQuota {
                quota: col(&row, "instance_quota")?,
                used: col(&row, "instance_count")?,
                requested,
            }
            .into());
        }
        // Placement group: serialise members, check quota and spread.
        if let Some((group_id, level, group_quota)) = &batch.group {
            let n = sqlx::query(
                "UPDATE placement_groups SET lock_version = lock_version + 1 WHERE group_id = $1 AND app_id = $2",
            )
            .bind(group_id)
            .bind(scope.app_id())
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n != 1 {
                return Err(CloudError::PlacementGroupNotFound(group_id.clone()).into());
            }
            let rows = sqlx::query(
                "SELECT h.host_id, h.rack, h.switch_name FROM instances i JOIN hosts h ON h.host_id = i.host_id
                 WHERE i.placement_group_id = $1 AND i.state <> 'TERMINATED'",
            )
            .bind(group_id)
            .fetch_all(&mut *tx)
            .await?;
            let members = sqlx::query(
                "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM instances WHERE placement_group_id = $1 AND state <> 'TERMINATED'",
            )
            .bind(group_id)
            .fetch_one(&mut *tx)
            .await?;
            let count: i64 = col(&members, "n")?;
            if count + requested > *group_quota {
                return Err(CloudError::PlacementGroupQuota {
                    id: group_id.clone(),
                    quota: *group_quota,
                }
                .into());
            }
            let column = match level.as_str() {
                "RACK" => "rack",
                "SW" => "switch_name",
                _ => "host_id",
            };
            let mut taken: Vec<String> = rows
                .iter()
                .map(|r| col::<String>(r, column))
                .collect::<Result<_>>()?;
            for inst in &batch.instances {
                let h =
                    sqlx::query("SELECT host_id, rack, switch_name FROM hosts WHERE host_id = $1")
                        .bind(&inst.host_id)
                        .fetch_optional(&mut *tx)
                        .await?
                        .ok_or_else(|| TxError::HostConflict(inst.host_id.clone()))?;
                let v: String = col(&h, column)?;
                if taken.contains(&v) {
                    return Err(TxError::HostConflict(inst.host_id.clone()));
                }
                taken.push(v);
            }
        }
        let mut ids = Vec::with_capacity(batch.instances.len());
        let mut nets = Vec::new();
        for inst in &batch.instances {
            claim_on_host(
                &mut tx,
                &inst.instance_id,
                &inst.host_id,
                inst.cpu,
                inst.memory_gib * 1024,
                &inst.gpu_indexes,
            )
            .await?;
            let net = self.default_net(&mut tx, scope, &inst.zone).await?;
            nets.push((inst.zone.clone(), net.clone()));
            let ip = allocate_ip(&mut tx, &net.subnet_id, &inst.instance_id)
                .await?
                .ok_or_else(|| CloudError::SubnetFull(net.subnet_id.clone()))?;
            let password = inst.password.as_ref().map(|p| self.secrets().seal(p));
            sqlx::query(&format!(
                "INSERT INTO instances ({INSTANCE_COLS}, password_sealed, client_token) VALUES ({})",
                placeholders(1, 45)
            ))
            .bind(&inst.instance_id)
            .bind(scope.app_id())
            .bind(&inst.uuid)
            .bind(&inst.name)
            .bind(&inst.host_name)
            .bind(&inst.zone)
            .bind(inst.project_id)
            .bind(&inst.instance_type)
            .bind(inst.cpu)
            .bind(inst.memory_gib)
            .bind(inst.gpu_count)
            .bind(&inst.image_id)
            .bind(&inst.runtime)
            .bind(&inst.charge_type)
            .bind(inst.prepaid_period)
            .bind(inst.renew_flag.clone())
            .bind(inst.expired_at)
            .bind(InstanceState::Pending.as_str())
            .bind(Operation::Run.action())
            .bind("OPERATING")
            .bind(&batch.request_id)
            .bind(None::<String>)
            .bind(None::<String>)
            .bind(&inst.host_id)
            .bind(1i64)
            .bind(None::<String>)
            .bind(1i64)
            .bind(0i64)
            .bind(None::<String>)
            .bind(None::<String>)
            .bind(i64::from(inst.disable_api_termination))
            .bind(inst.user_data.clone())
            .bind(inst.system_disk.to_string())
            .bind(inst.data_disks.to_string())
            .bind(inst.internet.to_string())
            .bind(&net.vpc_id)
            .bind(&net.subnet_id)
            .bind(&ip)
            .bind(serde_json::to_string(&inst.security_group_ids).unwrap_or_else(|_| "[]".into()))
            .bind(inst.placement_group_id.clone())
            .bind(inst.tags.to_string())
            .bind(now)
            .bind(now)
            .bind(password)
            .bind(batch.client_token.clone())
            .execute(&mut *tx)
            .await?;
            for k in &inst.key_ids {
                lock_key_pair(&mut tx, scope, k, true).await?;
                sqlx::query(
                    "INSERT INTO instance_key_pairs (instance_id, key_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                )
                .bind(&inst.instance_id)
                .bind(k)
                .execute(&mut *tx)
                .await?;
            }
            ids.push(inst.instance_id.clone());
        }
        if let Some(token) = &batch.client_token {
            sqlx::query(
                "UPDATE client_tokens SET result = $1 WHERE app_id = $2 AND action = 'RunInstances' AND token = $3",
            )
            .bind(serde_json::to_string(&ids).unwrap_or_default())
            .bind(scope.app_id())
            .bind(token)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        self.remember_nets(scope, nets);
        Ok(Created::New(ids))
    }

    /// One instance of a tenant (terminated ones are not found).
    pub async fn instance_get(&self, scope: &TenantScope, id: &str) -> Result<Option<InstanceRow>> {
        let mut v = self.instances_get(scope, &[id.to_string()]).await?;
        Ok(v.pop())
    }

    /// Instances of a tenant by ID, in the order asked; unknown IDs are left out.
    pub async fn instances_get(
        &self,
        scope: &TenantScope,
        ids: &[String],
    ) -> Result<Vec<InstanceRow>> {
        if ids.is_empty() {
            return Ok(vec![]);
        }
        let sql = format!(
            "SELECT {INSTANCE_COLS} FROM instances WHERE app_id = $1 AND state <> 'TERMINATED' AND instance_id IN ({})",
            placeholders(2, ids.len())
        );
        let mut q = sqlx::query(&sql).bind(scope.app_id());
        for id in ids {
            q = q.bind(id);
        }
        let rows = q.fetch_all(self.r()).await?;
        let mut out: Vec<InstanceRow> =
            rows.iter().map(instance_from_row).collect::<Result<_>>()?;
        self.fill_details(&mut out).await?;
        out.sort_by_key(|i| ids.iter().position(|x| *x == i.instance_id));
        Ok(out)
    }

    /// `DescribeInstances`: filtered, newest first, paged. Returns (total, page).
    pub async fn instance_list(
        &self,
        scope: &TenantScope,
        q: &InstanceQuery,
    ) -> Result<(i64, Vec<InstanceRow>)> {
        let mut where_ = String::from("app_id = $1 AND state <> 'TERMINATED'");
        let mut args: Vec<Arg> = vec![Arg::I(scope.app_id())];
        let mut any_of = |column: &str, values: &[String], args: &mut Vec<Arg>, like: bool| {
            if values.is_empty() {
                return;
            }
            let parts: Vec<String> = values
                .iter()
                .map(|v| {
                    args.push(Arg::S(if like {
                        format!("%{}%", escape_like(v))
                    } else {
                        v.clone()
                    }));
                    if like {
                        format!("{column} LIKE ${} ESCAPE '\\'", args.len())
                    } else {
                        format!("{column} = ${}", args.len())
                    }
                })
                .collect();
            where_.push_str(&format!(" AND ({})", parts.join(" OR ")));
        };
        any_of("instance_id", &q.ids, &mut args, false);
        any_of("zone", &q.zones, &mut args, false);
        any_of("name", &q.names, &mut args, true);
        any_of("state", &q.states, &mut args, false);
        any_of("charge_type", &q.charge_types, &mut args, false);
        any_of("instance_type", &q.instance_types, &mut args, false);
        any_of("uuid", &q.uuids, &mut args, false);
        any_of("host_id", &q.host_ids, &mut args, false);
        any_of("vpc_id", &q.vpc_ids, &mut args, false);
        any_of("subnet_id", &q.subnet_ids, &mut args, false);
        any_of("private_ip", &q.private_ips, &mut args, false);
        any_of("image_id", &q.image_ids, &mut args, false);
        if !q.project_ids.is_empty() {
            let parts: Vec<String> = q
                .project_ids
                .iter()
                .map(|p| {
                    args.push(Arg::I(*p));
                    format!("project_id = ${}", args.len())
                })
                .collect();
            where_.push_str(&format!(" AND ({})", parts.join(" OR ")));
        }
        if let Some(t) = q.created_after {
            args.push(Arg::I(t));
            where_.push_str(&format!(" AND created_at >= ${}", args.len()));
        }
        if let Some(t) = q.created_before {
            args.push(Arg::I(t));
            where_.push_str(&format!(" AND created_at <= ${}", args.len()));
        }
        let count_sql =
            format!("SELECT CAST(COUNT(*) AS BIGINT) AS n FROM instances WHERE {where_}");
        let mut cq = sqlx::query(&count_sql);
        for a in &args {
            cq = a.bind(cq);
        }
        let total: i64 = col(&cq.fetch_one(self.r()).await?, "n")?;
        let page_sql = format!(
            "SELECT {INSTANCE_COLS} FROM instances WHERE {where_} ORDER BY created_at DESC, instance_id LIMIT ${} OFFSET ${}",
            args.len() + 1,
            args.len() + 2
        );
        let mut pq = sqlx::query(&page_sql);
        for a in &args {
            pq = a.bind(pq);
        }
        let rows = pq.bind(q.limit).bind(q.offset).fetch_all(self.r()).await?;
        let mut out: Vec<InstanceRow> =
            rows.iter().map(instance_from_row).collect::<Result<_>>()?;
        self.fill_details(&mut out).await?;
        Ok((total, out))
    }

    async fn fill_details(&self, out: &mut [InstanceRow]) -> Result<()> {
        if out.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = out.iter().map(|i| i.instance_id.clone()).collect();
        let sql = format!(
            "SELECT c.instance_id, c.host_id, g.gpu_id, g.model, g.idx FROM gpu_claims c JOIN gpus g ON g.gpu_id = c.gpu_id
             WHERE c.released = 0 AND c.instance_id IN ({}) ORDER BY c.instance_id, g.idx",
            placeholders(1, ids.len())
        );
        let mut q = sqlx::query(&sql);
        for id in &ids {
            q = q.bind(id);
        }
        let mut gpus: HashMap<String, (Vec<String>, String)> = HashMap::new();
        for r in q.fetch_all(self.r()).await? {
            let iid: String = col(&r, "instance_id")?;
            let host: String = col(&r, "host_id")?;
            let model: String = col(&r, "model")?;
            let e = gpus.entry(iid.clone()).or_insert_with(|| (vec![], model));
            // Only the GPUs on the instance's current host count.
            if out
                .iter()
                .any(|i| i.instance_id == iid && i.host_id.as_deref() == Some(host.as_str()))
            {
                e.0.push(col(&r, "gpu_id")?);
            }
        }
        let sql = format!(
            "SELECT instance_id, key_id FROM instance_key_pairs WHERE instance_id IN ({}) ORDER BY key_id",
            placeholders(1, ids.len())
        );
        let mut q = sqlx::query(&sql);
        for id in &ids {
            q = q.bind(id);
        }
        let mut keys: HashMap<String, Vec<String>> = HashMap::new();
        for r in q.fetch_all(self.r()).await? {
            keys.entry(col(&r, "instance_id")?)
                .or_default()
                .push(col(&r, "key_id")?);
        }
        for i in out.iter_mut() {
            if let Some((g, m)) = gpus.remove(&i.instance_id) {
                i.gpu_ids = g;
                i.gpu_model = Some(m);
            }
            i.key_ids = keys.remove(&i.instance_id).unwrap_or_default();
        }
        Ok(())
    }

    /// Starts an operation on instances: all move to the operation's
    /// transitional state, or none does (the first refusal is returned).
    pub async fn instances_transition(
        &self,
        scope: &TenantScope,
        ids: &[String],
        op: Operation,
        request_id: &str,
        opts: &TransitionOpts,
    ) -> std::result::Result<Vec<InstanceRow>, TxError> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let mut rows = Vec::with_capacity(ids.len());
        for id in ids {
            rows.push(instance_in_tx(&mut tx, scope, id).await?);
        }
        if op == Operation::Terminate
            && rows
                .iter()
                .any(|r| (r.charge_type == "PREPAID") != (rows[0].charge_type == "PREPAID"))
        {
            return Err(CloudError::InstanceMixedPricingModel.into());
        }
        for inst in &rows {
            if op == Operation::Terminate && inst.disable_api_termination {
                return Err(CloudError::InstancesProtected(inst.instance_id.clone()).into());
            }
            let prepaid = inst.charge_type == "PREPAID";
            let to = lifecycle::begin_charged(inst.state, op, prepaid)
                .map_err(|state| refusal(inst, op, state))?;
            // Starting an instance whose resources were released re-claims
            // them, as planned from what the caller read: if a host report
            // released (or nothing did) since, that plan is stale.
            let mut held = inst.resources_held;
            if op == Operation::Start
                && opts.reclaims.contains_key(&inst.instance_id) == inst.resources_held
            {
                return Err(TxError::HostConflict(
                    inst.host_id.clone().unwrap_or_default(),
                ));
            }
            if op == Operation::Start && !inst.resources_held {
                let host = inst.host_id.clone().ok_or_else(|| {
                    TxError::Cloud(CloudError::InsufficientCapacity {
                        instance_type: inst.instance_type.clone(),
                        zone: inst.zone.clone(),
                        detail: "the instance has no host".into(),
                    })
                })?;
                let gpus = opts
                    .reclaims
                    .get(&inst.instance_id)
                    .cloned()
                    .unwrap_or_default();
                claim_on_host(
                    &mut tx,
                    &inst.instance_id,
                    &host,
                    inst.cpu,
                    inst.memory_gib * 1024,
                    &gpus,
                )
                .await?;
                held = true;
            }
            begin_op(&mut tx, scope, inst, op, to, request_id, opts, held, now).await?;
        }
        tx.commit().await?;
        self.instances_get(scope, ids).await.map_err(TxError::from)
    }

    /// Changes an instance's type, on its host or by moving it.
    #[allow(clippy::too_many_arguments)]
    pub async fn instance_resize(
        &self,
        scope: &TenantScope,
        id: &str,
        request_id: &str,
        shape: &NewShape,
        plan: &ResizePlan,
        seen: Seen,
    ) -> std::result::Result<InstanceRow, TxError> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let inst = instance_in_tx(&mut tx, scope, id).await?;
        let to = lifecycle::begin(inst.state, Operation::ResetType)
            .map_err(|state| refusal(&inst, Operation::ResetType, state))?;
        if inst.prev_host_id.is_some() {
            return Err(CloudError::OperationInProgress {
                id: id.to_string(),
                operation: "a move to another host".into(),
            }
            .into());
        }
        let old_host = inst.host_id.clone().unwrap_or_default();
        if Seen::of(&inst) != seen {
            return Err(TxError::HostConflict(old_host));
        }
        let (old_cpu, old_mem) = if inst.resources_held {
            (inst.cpu, inst.memory_gib * 1024)
        } else {
            (0, 0)
        };
        let (new_cpu, new_mem) = (shape.cpu, shape.memory_gib * 1024);
        let new_host = match plan {
            ResizePlan::SameHost { add, drop } => {
                // Raise (or lower) counters by the difference.
                let (dc, dm) = (new_cpu - old_cpu, new_mem - old_mem);
                let n = sqlx::query(
                    "UPDATE hosts SET cpu_used = cpu_used + $1, mem_used_mib = mem_used_mib + $2, generation = generation + 1
                     WHERE host_id = $3 AND cpu_used + $1 <= cpu_total AND mem_used_mib + $2 <= mem_total_mib
                       AND cpu_used + $1 >= 0 AND mem_used_mib + $2 >= 0",
                )
                .bind(dc)
                .bind(dm)
                .bind(&old_host)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if n != 1 {
                    return Err(TxError::HostConflict(old_host));
                }
                for idx in add {
                    let n = sqlx::query(
                        "INSERT INTO gpu_claims (gpu_id, instance_id, host_id, released, claimed_at)
                         SELECT gpu_id, $1, host_id, 0, $2 FROM gpus WHERE host_id = $3 AND idx = $4 AND health = 'HEALTHY'
                         ON CONFLICT (gpu_id) DO NOTHING",
                    )
                    .bind(id)
                    .bind(now)
                    .bind(&old_host)
                    .bind(*idx)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    if n != 1 {
                        return Err(TxError::HostConflict(old_host));
                    }
                }
                for idx in drop {
                    sqlx::query(
                        "UPDATE gpu_claims SET released = 1 WHERE instance_id = $1 AND host_id = $2
                           AND gpu_id = (SELECT gpu_id FROM gpus WHERE host_id = $2 AND idx = $3)",
                    )
                    .bind(id)
                    .bind(&old_host)
                    .bind(*idx)
                    .execute(&mut *tx)
                    .await?;
                }
                old_host.clone()
            }
            ResizePlan::Move { host_id, gpus } => {
                claim_on_host(&mut tx, id, host_id, new_cpu, new_mem, gpus).await?;
                // The old host keeps its claims, marked released, until it lets go.
                sqlx::query(
                    "UPDATE gpu_claims SET released = 1 WHERE instance_id = $1 AND host_id = $2",
                )
                .bind(id)
                .bind(&old_host)
                .execute(&mut *tx)
                .await?;
                bump_host(&mut tx, &old_host).await?;
                host_id.clone()
            }
        };
        let moved = new_host != old_host;
        let n = sqlx::query(
            "UPDATE instances SET state = $1, latest_operation = 'ResetInstancesType', latest_operation_state = 'OPERATING',
               latest_operation_request_id = $2, latest_operation_error = NULL, host_error = NULL, spec_generation = spec_generation + 1,
               instance_type = $3, cpu = $4, memory_gib = $5, gpu_count = $6, host_id = $7, resources_held = 1,
               prev_host_id = $8, prev_cpu = $9, prev_mem_mib = $10, updated_at = $11,
               reboot_seq = reboot_seq + $14
             WHERE instance_id = $12 AND app_id = $13
               AND state = $15 AND spec_generation = $16 AND resources_held = $17 AND prev_host_id IS NULL",
        )
        .bind(to.as_str())
        .bind(request_id)
        .bind(&shape.instance_type)
        .bind(shape.cpu)
        .bind(shape.memory_gib)
        .bind(shape.gpu_count)
        .bind(&new_host)
        .bind(if moved { Some(old_host.clone()) } else { None })
        .bind(if moved { old_cpu } else { 0 })
        .bind(if moved { old_mem } else { 0 })
        .bind(now)
        .bind(id)
        .bind(scope.app_id())
        // A running instance (ForceStop) restarts into its new shape on the same host.
        .bind(i64::from(inst.state == InstanceState::Running && !moved))
        // Unchanged since it was read: on PostgreSQL another server may have
        // changed it meanwhile (the read above takes no lock).
        .bind(inst.state.as_str())
        .bind(inst.spec_generation)
        .bind(i64::from(inst.resources_held))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n != 1 {
            return Err(TxError::HostConflict(old_host));
        }
        tx.commit().await?;
        self.instance_get(scope, id)
            .await?
            .ok_or_else(|| TxError::Store(StoreError::NotFound(id.to_string())))
    }

    /// Changes name, host name, termination protection or user data.
    pub async fn instances_modify(
        &self,
        scope: &TenantScope,
        ids: &[String],
        ch: &InstanceChanges,
    ) -> std::result::Result<(), TxError> {
        let (name, host_name, user_data) = (
            ch.name.as_deref(),
            ch.host_name.as_deref(),
            ch.user_data.as_deref(),
        );
        let (disable_api_termination, security_group_ids) =
            (ch.disable_api_termination, ch.security_group_ids.as_deref());
        let mut tx = self.begin_write().await?;
        for id in ids {
            let n = sqlx::query(
                "UPDATE instances SET name = COALESCE($1, name), host_name = COALESCE($2, host_name),
                   disable_api_termination = COALESCE($3, disable_api_termination), user_data = COALESCE($4, user_data),
                   security_group_ids = COALESCE($5, security_group_ids),
                   spec_generation = spec_generation + CASE WHEN $2 IS NULL AND $4 IS NULL THEN 0 ELSE 1 END,
                   updated_at = $6
                 WHERE instance_id = $7 AND app_id = $8 AND state <> 'TERMINATED'",
            )
            .bind(name.map(String::from))
            .bind(host_name.map(String::from))
            .bind(disable_api_termination.map(i64::from))
            .bind(user_data.map(String::from))
            .bind(security_group_ids.map(|s| serde_json::to_string(s).unwrap_or_default()))
            .bind(now_ms())
            .bind(id)
            .bind(scope.app_id())
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n != 1 {
                return Err(CloudError::InstanceNotFound(vec![id.clone()]).into());
            }
            if host_name.is_some() || user_data.is_some() {
                let h = sqlx::query("SELECT host_id FROM instances WHERE instance_id = $1")
                    .bind(id)
                    .fetch_one(&mut *tx)
                    .await?;
                if let Some(h) = col::<Option<String>>(&h, "host_id")? {
                    bump_host(&mut tx, &h).await?;
                }
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Associates (or disassociates) key pairs with instances; see
    /// [`Store::instances_change_login`].
    #[allow(clippy::too_many_arguments)]
    pub async fn instances_set_keys(
        &self,
        scope: &TenantScope,
        ids: &[String],
        keys: &[String],
        associate: bool,
        force: bool,
        request_id: &str,
    ) -> std::result::Result<Vec<InstanceRow>, TxError> {
        self.instances_change_login(
            scope,
            ids,
            &LoginChange::Keys { keys, associate },
            force,
            request_id,
        )
        .await
    }

    /// Changes how instances are logged into — their key pairs or root's
    /// password — in one transaction: every instance must be `STOPPED`, or
    /// `RUNNING` with `force` (it is then restarted to pick the change up,
    /// as `ForceStop` asks); any other state refuses the whole request and
    /// changes nothing. Returns the instances as they are afterwards.
    pub async fn instances_change_login(
        &self,
        scope: &TenantScope,
        ids: &[String],
        change: &LoginChange<'_>,
        force: bool,
        request_id: &str,
    ) -> std::result::Result<Vec<InstanceRow>, TxError> {
        let op = match change {
            LoginChange::Keys {
                associate: true, ..
            } => Operation::AssociateKeyPairs,
            LoginChange::Keys { .. } => Operation::DisassociateKeyPairs,
            LoginChange::Password(_) => Operation::ResetPassword,
        };
        let sealed = match change {
            LoginChange::Password(p) => Some(self.secrets().seal(p)),
            LoginChange::Keys { .. } => None,
        };
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let mut rows = Vec::with_capacity(ids.len());
        for id in ids {
            let inst = instance_in_tx(&mut tx, scope, id).await?;
            match inst.state {
                InstanceState::Stopped => {}
                InstanceState::Running if force => {}
                state => return Err(refusal(&inst, op, state).into()),
            }
            rows.push(inst);
        }
        for inst in &rows {
            let id = &inst.instance_id;
            match change {
                LoginChange::Keys { keys, associate } => {
                    for k in *keys {
                        if *associate {
                            lock_key_pair(&mut tx, scope, k, false).await?;
                        }
                        let sql = if *associate {
                            "INSERT INTO instance_key_pairs (instance_id, key_id) VALUES ($1, $2) ON CONFLICT DO NOTHING"
                        } else {
                            "DELETE FROM instance_key_pairs WHERE instance_id = $1 AND key_id = $2"
                        };
                        sqlx::query(sql).bind(id).bind(k).execute(&mut *tx).await?;
                    }
                }
                LoginChange::Password(_) => {
                    sqlx::query("UPDATE instances SET password_sealed = $1 WHERE instance_id = $2")
                        .bind(&sealed)
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                }
            }
            if inst.state == InstanceState::Running {
                // Restarted to pick the keys up (ForceStop).
                let to = lifecycle::begin_charged(inst.state, op, inst.charge_type == "PREPAID")
                    .map_err(|state| CloudError::InstanceState {
                        id: id.clone(),
                        state,
                        action: op.action().to_string(),
                    })?;
                let opts = TransitionOpts::default();
                begin_op(
                    &mut tx,
                    scope,
                    inst,
                    op,
                    to,
                    request_id,
                    &opts,
                    inst.resources_held,
                    now,
                )
                .await?;
            } else {
                let n = sqlx::query(
                    "UPDATE instances SET spec_generation = spec_generation + 1, updated_at = $2 WHERE instance_id = $1 AND state = $3",
                )
                .bind(id)
                .bind(now)
                .bind(inst.state.as_str())
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if n != 1 {
                    return Err(CloudError::OperationInProgress {
                        id: id.clone(),
                        operation: "another request".into(),
                    }
                    .into());
                }
                if let Some(h) = &inst.host_id {
                    bump_host(&mut tx, h).await?;
                }
            }
        }
        tx.commit().await?;
        self.instances_get(scope, ids).await.map_err(TxError::from)
    }

    /// `ResetInstance`: in one transaction, the instance (`RUNNING` or
    /// `STOPPED` with its resources held) takes the new image, host name,
    /// user data and login, its reinstall count rises and it goes
    /// `STARTING`; its agent rebuilds the system disk and boots it (a running
    /// one is stopped first: its reboot count rises too).
    pub async fn instance_reinstall(
        &self,
        scope: &TenantScope,
        id: &str,
        r: &Reinstall,
        request_id: &str,
    ) -> std::result::Result<InstanceRow, TxError> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let inst = instance_in_tx(&mut tx, scope, id).await?;
        let op = Operation::Reinstall;
        let to = lifecycle::begin(inst.state, op).map_err(|state| refusal(&inst, op, state))?;
        if !inst.resources_held {
            return Err(CloudError::StopChargingNotSupported(inst.instance_id.clone()).into());
        }
        if r.runtime != inst.runtime {
            return Err(CloudError::Unsupported(format!(
                "reinstalling {} ({}) from a {} image; pick an image with the tag runtime={}",
                inst.instance_id, inst.runtime, r.runtime, inst.runtime
            ))
            .into());
        }
        let running = i64::from(inst.state == InstanceState::Running);
        let n = sqlx::query(
            "UPDATE instances SET image_id = $1, host_name = COALESCE($2, host_name), user_data = COALESCE($3, user_data),
               state = $4, latest_operation = $5, latest_operation_state = 'OPERATING', latest_operation_request_id = $6,
               latest_operation_error = NULL, host_error = NULL, spec_generation = spec_generation + 1, reboot_seq = reboot_seq + $7,
               reset_seq = reset_seq + 1, updated_at = $8
             WHERE instance_id = $9 AND app_id = $10 AND state = $11",
        )
        .bind(&r.image_id)
        .bind(&r.host_name)
        .bind(&r.user_data)
        .bind(to.as_str())
        .bind(op.action())
        .bind(request_id)
        .bind(running)
        .bind(now)
        .bind(id)
        .bind(scope.app_id())
        .bind(inst.state.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n != 1 {
            return Err(CloudError::OperationInProgress {
                id: id.to_string(),
                operation: "another request".into(),
            }
            .into());
        }
        if let Some((password, keys)) = &r.login {
            let sealed = password.as_ref().map(|p| self.secrets().seal(p));
            sqlx::query("UPDATE instances SET password_sealed = $1 WHERE instance_id = $2")
                .bind(&sealed)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM instance_key_pairs WHERE instance_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            for k in keys {
                lock_key_pair(&mut tx, scope, k, true).await?;
                sqlx::query("INSERT INTO instance_key_pairs (instance_id, key_id) VALUES ($1, $2)")
                    .bind(id)
                    .bind(k)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        if let Some(h) = &inst.host_id {
            bump_host(&mut tx, h).await?;
        }
        tx.commit().await?;
        self.instance_get(scope, id)
            .await?
            .ok_or_else(|| CloudError::InstanceNotFound(vec![id.to_string()]).into())
    }

    /// The desired state of a host: its generation and every instance it must run,
    /// keep stopped, or remove.
    pub async fn host_desired(&self, host_id: &str) -> Result<(i64, Vec<DesiredInstance>)> {
        let gen_row = sqlx::query("SELECT generation FROM hosts WHERE host_id = $1")
            .bind(host_id)
            .fetch_optional(self.r())
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("host {host_id}")))?;
        let generation: i64 = col(&gen_row, "generation")?;
        let rows = sqlx::query(&format!(
            "SELECT {INSTANCE_COLS}, password_sealed, reset_seq,
               (SELECT location FROM images WHERE images.image_id = instances.image_id) AS image_location,
               (SELECT cidr FROM subnets WHERE subnets.subnet_id = instances.subnet_id) AS subnet_cidr
             FROM instances WHERE (host_id = $1 AND state <> 'TERMINATED') OR prev_host_id = $1 ORDER BY instance_id"
        ))
        .bind(host_id)
        .fetch_all(self.r())
        .await?;
        let claims = sqlx::query(
            "SELECT c.instance_id, g.idx, g.gpu_id, g.pci_address FROM gpu_claims c JOIN gpus g ON g.gpu_id = c.gpu_id
             WHERE c.host_id = $1 AND c.released = 0 ORDER BY g.idx",
        )
        .bind(host_id)
        .fetch_all(self.r())
        .await?;
        let mut gpus: HashMap<String, Vec<(i64, String, String)>> = HashMap::new();
        for c in &claims {
            gpus.entry(col(c, "instance_id")?).or_default().push((
                col(c, "idx")?,
                col(c, "gpu_id")?,
                col(c, "pci_address")?,
            ));
        }
        let keys = sqlx::query(
            "SELECT ik.instance_id, k.public_key FROM instance_key_pairs ik JOIN key_pairs k ON k.key_id = ik.key_id
             JOIN instances i ON i.instance_id = ik.instance_id WHERE i.host_id = $1 ORDER BY k.key_id",
        )
        .bind(host_id)
        .fetch_all(self.r())
        .await?;
        let mut pubkeys: HashMap<String, Vec<String>> = HashMap::new();
        for k in &keys {
            pubkeys
                .entry(col(k, "instance_id")?)
                .or_default()
                .push(col(k, "public_key")?);
        }
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let inst = instance_from_row(r)?;
            let here = inst.host_id.as_deref() == Some(host_id);
            let power = if here {
                inst.state.desired_power()
            } else {
                DesiredPower::Absent
            };
            let sealed: Option<String> = col(r, "password_sealed")?;
            let password = match sealed {
                Some(s) if here => Some(self.secrets().open(&s).map_err(StoreError::Secret)?),
                _ => None,
            };
            out.push(DesiredInstance {
                power,
                spec_generation: inst.spec_generation,
                reboot_seq: inst.reboot_seq,
                reset_seq: col(r, "reset_seq")?,
                stop_type: inst.stop_type.clone(),
                name: inst.name.clone(),
                host_name: inst.host_name.clone(),
                instance_type: inst.instance_type.clone(),
                cpu: inst.cpu,
                memory_gib: inst.memory_gib,
                gpus: if here {
                    gpus.remove(&inst.instance_id).unwrap_or_default()
                } else {
                    vec![]
                },
                image_location: col::<Option<String>>(r, "image_location")?.unwrap_or_default(),
                image_id: inst.image_id.clone(),
                runtime: inst.runtime.clone(),
                user_data: inst.user_data.clone(),
                password,
                public_keys: pubkeys.remove(&inst.instance_id).unwrap_or_default(),
                private_ip: inst.private_ip.clone(),
                subnet_cidr: col(r, "subnet_cidr")?,
                vpc_id: inst.vpc_id.clone(),
                data_disks: inst.data_disks.clone(),
                system_disk: inst.system_disk.clone(),
                app_id: inst.app_id,
                instance_id: inst.instance_id,
            });
        }
        Ok((generation, out))
    }

    /// Settles a host agent's report: moves instances whose operation the host
    /// finished to their new state, and releases capacity the host let go of.
    pub async fn host_report(
        &self,
        host_id: &str,
        observed_generation: i64,
        observed: &[ObservedInstance],
        tasks: &[crate::commands::TaskOutcome],
    ) -> Result<ReportOutcome> {
        let now = now_ms();
        let mut out = ReportOutcome::default();
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "UPDATE hosts SET observed_generation = $2, last_seen = $3,
               generation = generation + CASE WHEN state = 'UNREACHABLE' THEN 1 ELSE 0 END,
               state = CASE WHEN state = 'UNREACHABLE' THEN 'READY' ELSE state END,
               state_reason = CASE WHEN state = 'UNREACHABLE' THEN '' ELSE state_reason END
             WHERE host_id = $1",
        )
        .bind(host_id)
        .bind(observed_generation)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        out.tasks_changed = Store::apply_task_outcomes(&mut tx, host_id, tasks).await?;
        let by_id: HashMap<&str, &ObservedInstance> = observed
            .iter()
            .map(|o| (o.instance_id.as_str(), o))
            .collect();
        let draining: std::collections::HashSet<String> = sqlx::query(
            "SELECT DISTINCT instance_id FROM gpu_claims WHERE host_id = $1 AND released = 1",
        )
        .bind(host_id)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| col(r, "instance_id"))
        .collect::<Result<_>>()?;
        let rows = sqlx::query(&format!(
            "SELECT {INSTANCE_COLS}, prev_cpu, prev_mem_mib FROM instances WHERE (host_id = $1 AND state <> 'TERMINATED') OR prev_host_id = $1"
        ))
        .bind(host_id)
        .fetch_all(&mut *tx)
        .await?;
        for r in &rows {
            let inst = instance_from_row(r)?;
            let Some(obs) = by_id.get(inst.instance_id.as_str()) else {
                continue;
            };
            // This host is being drained of a moved (maybe since terminated)
            // instance: it wants it gone whatever the spec's generation, so
            // an `Absent` from it is final.
            if inst.prev_host_id.as_deref() == Some(host_id)
                && inst.host_id.as_deref() != Some(host_id)
            {
                if obs.observed == Observed::Absent {
                    let rel = release_on_host(
                        &mut tx,
                        &inst.instance_id,
                        host_id,
                        col(r, "prev_cpu")?,
                        col(r, "prev_mem_mib")?,
                        false,
                    )
                    .await?;
                    sqlx::query("UPDATE instances SET prev_host_id = NULL, prev_cpu = 0, prev_mem_mib = 0 WHERE instance_id = $1")
                        .bind(&inst.instance_id)
                        .execute(&mut *tx)
                        .await?;
                    out.released.push(rel);
                }
                continue;
            }
            if obs.spec_generation < inst.spec_generation {
                continue; // the host has not acted on the latest spec yet
            }
            // GPUs dropped by a resize on this host are let go once the host
            // runs (or has stopped, or removed) the instance with the new
            // spec — not when it failed to, since then the old one may
            // still be running with them.
            if draining.contains(&inst.instance_id)
                && matches!(
                    obs.observed,
                    Observed::Running | Observed::Stopped | Observed::Absent
                )
            {
                let rel = release_on_host(&mut tx, &inst.instance_id, host_id, 0, 0, true).await?;
                if !rel.gpu_indexes.is_empty() {
                    out.released.push(rel);
                }
            }
            // Reboots settle only once the host saw the reboot request.
            let observed =
                if inst.state == InstanceState::Rebooting && obs.reboot_seq < inst.reboot_seq {
                    Observed::Absent
                } else {
                    obs.observed
                };
            let (to, result) = lifecycle::settle(inst.state, observed);
            // A prepaid instance in the recycle bin: the first terminate is
            // done once the host has powered it off.
            let result = match (to, observed) {
                (InstanceState::Shutdown, Observed::Stopped | Observed::Failed)
                    if inst.latest_operation_state.as_deref() == Some("OPERATING") =>
                {
                    Some(observed == Observed::Stopped)
                }
                _ => result,
            };
            let mut held = inst.resources_held;
            let mut host_after = inst.host_id.clone();
            if held {
                let release_all = match (to, observed) {
                    (InstanceState::Terminated, _) => true,
                    (InstanceState::LaunchFailed, Observed::Absent) => true,
                    (InstanceState::Stopped, Observed::Stopped) => {
                        inst.stopped_mode.as_deref() == Some("STOP_CHARGING")
                    }
                    _ => false,
                };
                if release_all {
                    let rel = release_on_host(
                        &mut tx,
                        &inst.instance_id,
                        host_id,
                        inst.cpu,
                        inst.memory_gib * 1024,
                        false,
                    )
                    .await?;
                    out.released.push(rel);
                    held = false;
                }
            }
            if to == InstanceState::Terminated {
                sqlx::query("UPDATE tenants SET instance_count = instance_count - 1 WHERE app_id = $1 AND instance_count > 0")
                    .bind(inst.app_id)
                    .execute(&mut *tx)
                    .await?;
                release_ips(&mut tx, &inst.instance_id).await?;
                sqlx::query("DELETE FROM instance_key_pairs WHERE instance_id = $1")
                    .bind(&inst.instance_id)
                    .execute(&mut *tx)
                    .await?;
                host_after = None;
            }
            // A failure that ends no operation (a running instance whose VM
            // will not start again, a removal that fails): shown until the
            // host reports the instance as it should be.
            let host_error = (observed == Observed::Failed && result.is_none()).then(|| {
                obs.error
                    .clone()
                    .unwrap_or_else(|| "the host could not bring the instance to its state".into())
            });
            if to == inst.state
                && result.is_none()
                && held == inst.resources_held
                && host_error == inst.host_error
            {
                continue;
            }
            let op_state = match result {
                Some(true) => Some("SUCCESS".to_string()),
                Some(false) => Some("FAILED".to_string()),
                None => inst.latest_operation_state.clone(),
            };
            let op_error = match result {
                Some(false) => obs
                    .error
                    .clone()
                    .or_else(|| Some("the host could not carry out the operation".into())),
                Some(true) => None,
                None => inst.latest_operation_error.clone(),
            };
            sqlx::query(
                "UPDATE instances SET state = $1, latest_operation_state = $2, latest_operation_error = $3, resources_held = $4,
                   host_id = $5, terminated_at = CASE WHEN $1 = 'TERMINATED' THEN $6 ELSE terminated_at END, updated_at = $6,
                   host_error = $8
                 WHERE instance_id = $7",
            )
            .bind(to.as_str())
            .bind(op_state)
            .bind(op_error)
            .bind(i64::from(held))
            .bind(host_after)
            .bind(now)
            .bind(&inst.instance_id)
            .bind(host_error)
            .execute(&mut *tx)
            .await?;
            if to != inst.state {
                out.transitions
                    .push((inst.instance_id.clone(), inst.state, to));
            }
        }
        tx.commit().await?;
        Ok(out)
    }

    /// Instances by host (operator view).
    pub async fn instances_on_host(&self, host_id: &str) -> Result<Vec<InstanceRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {INSTANCE_COLS} FROM instances WHERE host_id = $1 AND state <> 'TERMINATED' ORDER BY instance_id"
        ))
        .bind(host_id)
        .fetch_all(self.r())
        .await?;
        let mut out: Vec<InstanceRow> =
            rows.iter().map(instance_from_row).collect::<Result<_>>()?;
        self.fill_details(&mut out).await?;
        Ok(out)
    }

    /// All non-terminated instances (operator view), newest first.
    pub async fn instances_all(&self, limit: i64) -> Result<Vec<InstanceRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {INSTANCE_COLS} FROM instances WHERE state <> 'TERMINATED' ORDER BY created_at DESC LIMIT $1"
        ))
        .bind(limit)
        .fetch_all(self.r())
        .await?;
        let mut out: Vec<InstanceRow> =
            rows.iter().map(instance_from_row).collect::<Result<_>>()?;
        self.fill_details(&mut out).await?;
        Ok(out)
    }

    /// Counts of instances by state (operator view).
    pub async fn instance_state_counts(&self) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query(
            "SELECT state, CAST(COUNT(*) AS BIGINT) AS n FROM instances GROUP BY state ORDER BY state",
        )
        .fetch_all(self.r())
        .await?;
        rows.iter()
            .map(|r| Ok((col(r, "state")?, col(r, "n")?)))
            .collect()
    }

    /// Every GPU claim: `(gpu_id, instance_id, host_id, released)`. For audits and tests.
    pub async fn gpu_claims(&self) -> Result<Vec<(String, String, String, bool)>> {
        let rows = sqlx::query(
            "SELECT gpu_id, instance_id, host_id, released FROM gpu_claims ORDER BY gpu_id",
        )
        .fetch_all(self.r())
        .await?;
        rows.iter()
            .map(|r| {
                let rel: i64 = col(r, "released")?;
                Ok((
                    col(r, "gpu_id")?,
                    col(r, "instance_id")?,
                    col(r, "host_id")?,
                    rel == 1,
                ))
            })
            .collect()
    }
}

enum Arg {
    I(i64),
    S(String),
}

impl Arg {
    fn bind<'q>(
        &'q self,
        q: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>,
    ) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>> {
        match self {
            Arg::I(i) => q.bind(*i),
            Arg::S(s) => q.bind(s.as_str()),
        }
    }
}

fn escape_like(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

/// Puts one instance into the state `to` of operation `op` (checked by the
/// caller with `lifecycle::begin_charged`): the operation is recorded as
/// `OPERATING`, the spec generation moves and the host is woken. Fails with
/// `OperationInProgress` when another request changed the instance since it
/// was read.
#[allow(clippy::too_many_arguments)]
async fn begin_op(
    tx: &mut Transaction<'static, Any>,
    scope: &TenantScope,
    inst: &InstanceRow,
    op: Operation,
    to: InstanceState,
    request_id: &str,
    opts: &TransitionOpts,
    held: bool,
    now: i64,
) -> std::result::Result<(), TxError> {
    let reboot = i64::from(matches!(
        op,
        Operation::Reboot
            | Operation::AssociateKeyPairs
            | Operation::DisassociateKeyPairs
            | Operation::ResetPassword
    ));
    let n = sqlx::query(
        "UPDATE instances SET state = $1, latest_operation = $2, latest_operation_state = 'OPERATING',
           latest_operation_request_id = $3, latest_operation_error = NULL, host_error = NULL, spec_generation = spec_generation + 1,
           reboot_seq = reboot_seq + $4, stop_type = COALESCE($5, stop_type), stopped_mode = $6,
           resources_held = $7, updated_at = $8
         WHERE instance_id = $9 AND app_id = $10 AND state = $11 AND resources_held = $12",
    )
    .bind(to.as_str())
    .bind(op.action())
    .bind(request_id)
    .bind(reboot)
    // The recycle bin powers the instance off at once.
    .bind(if to == InstanceState::Shutdown {
        Some("HARD".to_string())
    } else {
        opts.stop_type.clone()
    })
    .bind(if op == Operation::Stop {
        opts.stopped_mode.clone()
    } else {
        inst.stopped_mode.clone()
    })
    .bind(i64::from(held))
    .bind(now)
    .bind(&inst.instance_id)
    .bind(scope.app_id())
    .bind(inst.state.as_str())
    .bind(i64::from(inst.resources_held))
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if n != 1 {
        return Err(CloudError::OperationInProgress {
            id: inst.instance_id.clone(),
            operation: "another request".into(),
        }
        .into());
    }
    if let Some(h) = &inst.host_id {
        bump_host(tx, h).await?;
    }
    // A host still letting go of the instance after a move learns of it too.
    if let Some(h) = &inst.prev_host_id {
        bump_host(tx, h).await?;
    }
    Ok(())
}
