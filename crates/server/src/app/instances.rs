//! Instance services: placing new instances (plan → reserve → claim in one
//! transaction → retry on conflict), lifecycle operations, resizing, and the
//! API view of an instance.

use crate::api::front::Ctx;
use crate::app::{internal, tx_error};
use crate::sched::{runtime_bit, Held};
use crate::App;
use gpucloud_api_types::cvm::{
    DataDisk, GpuHealth, GpuInfo, Instance, InternetAccessible, LoginSettings, Placement,
    SystemDisk, Tag, VirtualPrivateCloud,
};
use gpucloud_api_types::ids::{new_id, IdKind};
use gpucloud_core::catalog::InstanceType;
use gpucloud_core::gpu::GpuModel;
use gpucloud_core::lifecycle::{InstanceState, Operation};
use gpucloud_core::CloudError;
use gpucloud_scheduler::{NoFit, PlacementRequest, SpreadLevel};
use gpucloud_store::instances::{
    CreateBatch, Created, InstanceRow, NewInstance, NewShape, ResizePlan, Seen, TransitionOpts,
    TxError,
};
use gpucloud_store::TenantScope;

/// How many times a placement is re-planned after losing a race.
const PLACE_ATTEMPTS: usize = 10;

/// A spread group constraint for a placement.
#[derive(Debug, Clone)]
pub struct GroupConstraint {
    /// `ps-…`.
    pub id: String,
    /// `HOST`, `RACK` or `SW`.
    pub level: String,
    /// Members allowed.
    pub quota: i64,
    /// Hosts of current members.
    pub member_hosts: Vec<String>,
}

/// What to place.
#[derive(Debug, Clone)]
pub struct PlaceSpec {
    /// Everything but ID, UUID, names and placement.
    pub template: NewInstance,
    /// Instance names, one per instance.
    pub names: Vec<String>,
    /// Host names, one per instance (`None`: the instance ID).
    pub host_names: Vec<Option<String>>,
    /// Instances wanted.
    pub count: usize,
    /// Fewest acceptable.
    pub min_count: usize,
    /// The type.
    pub instance_type: &'static InstanceType,
    /// Spread group.
    pub group: Option<GroupConstraint>,
    /// Idempotency token.
    pub client_token: Option<String>,
    /// Only check.
    pub dry_run: bool,
}

fn spread_level(level: &str) -> SpreadLevel {
    match level {
        "RACK" => SpreadLevel::Rack,
        "SW" => SpreadLevel::Switch,
        _ => SpreadLevel::Host,
    }
}

/// Turns "nothing fits" into the error the caller sees.
pub fn no_fit(e: NoFit, t: &InstanceType, zone: &str, image: &str, runtime: &str) -> CloudError {
    match e {
        NoFit::NotOffered => CloudError::InstanceTypeUnavailable {
            instance_type: t.name.to_string(),
            zone: zone.to_string(),
        },
        NoFit::NoRuntime => CloudError::ImageRuntimeUnavailable {
            image: image.to_string(),
            runtime: if runtime == "qemu" && t.gpus > 0 {
                "qemu with GPU passthrough (IOMMU and vfio-pci)".to_string()
            } else {
                runtime.to_string()
            },
            zone: zone.to_string(),
        },
        NoFit::Full(detail) => CloudError::InsufficientCapacity {
            instance_type: t.name.to_string(),
            zone: zone.to_string(),
            detail,
        },
    }
}

/// The runtime a placement needs: a VM with GPUs needs a host that passes
/// GPUs through.
fn request_bit(runtime: &str, gpus: u32) -> u8 {
    if runtime == "qemu" && gpus > 0 {
        gpucloud_scheduler::Runtimes::QEMU_GPU
    } else {
        runtime_bit(runtime)
    }
}

fn request_for(spec: &PlaceSpec, exclude: Vec<String>) -> PlacementRequest {
    let t = spec.instance_type;
    PlacementRequest {
        zone: spec.template.zone.clone(),
        model: t.gpu_model(),
        gpus: t.gpus,
        cpu: t.cpu,
        mem_mib: t.memory_mib(),
        runtime: request_bit(&spec.template.runtime, t.gpus),
        spread: spec
            .group
            .as_ref()
            .map(|g| (spread_level(&g.level), g.member_hosts.clone())),
        exclude_hosts: exclude,
    }
}

/// Places and creates instances. Returns their IDs (those of the earlier call
/// for a repeated ClientToken); for a dry run, checks and returns nothing.
pub async fn place(app: &App, ctx: &Ctx, spec: &PlaceSpec) -> Result<Vec<String>, CloudError> {
    let scope = &ctx.scope;
    if let Some(token) = &spec.client_token {
        if let Some(ids) = app
            .store
            .client_token_get(scope, "RunInstances", token)
            .await
            .map_err(internal)?
        {
            return Ok(ids);
        }
    }
    let t = spec.instance_type;
    let zone = spec.template.zone.clone();
    let fail = |e: NoFit| no_fit(e, t, &zone, &spec.template.image_id, &spec.template.runtime);
    for attempt in 0..PLACE_ATTEMPTS {
        let req = request_for(spec, vec![]);
        let (res, placements) = app
            .sched
            .reserve(&req, spec.count, spec.min_count)
            .map_err(fail)?;
        let res = app.sched.hold(res);
        if spec.dry_run {
            drop(res);
            let group = spec.group.as_ref().map(|g| (g.id.as_str(), g.quota));
            app.store
                .launch_limits_check(scope, placements.len() as i64, group)
                .await
                .map_err(tx_error)?;
            return Ok(vec![]);
        }
        let instances: Vec<NewInstance> = placements
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let id = new_id(IdKind::Instance);
                let mut n = spec.template.clone();
                n.host_name = spec.host_names[i].clone().unwrap_or_else(|| id.clone());
                n.name = spec.names[i].clone();
                n.instance_id = id;
                n.uuid = uuid::Uuid::new_v4().to_string();
                n.host_id = p.host_id.clone();
                n.gpu_indexes = p.gpus.iter().map(|g| i64::from(*g)).collect();
                n
            })
            .collect();
        let hosts: Vec<String> = instances.iter().map(|i| i.host_id.clone()).collect();
        let batch = CreateBatch {
            request_id: ctx.request_id.clone(),
            client_token: spec.client_token.clone(),
            instances,
            group: spec
                .group
                .as_ref()
                .map(|g| (g.id.clone(), g.level.clone(), g.quota)),
        };
        match app.store.instances_create(scope, &batch).await {
            Ok(Created::New(ids)) => {
                res.commit();
                for h in &hosts {
                    app.gateway.poke(h);
                }
                return Ok(ids);
            }
            Ok(Created::Existing(ids)) => {
                drop(res);
                return Ok(ids);
            }
            Err(TxError::HostConflict(h)) => {
                drop(res);
                tracing::debug!(host = %h, attempt, "placement lost a race; re-planning");
                refresh(app, &h).await?;
            }
            Err(e) => {
                drop(res);
                return Err(tx_error(e));
            }
        }
    }
    Err(CloudError::InsufficientCapacity {
        instance_type: t.name.to_string(),
        zone,
        detail: "capacity kept changing while placing; retry with the same ClientToken".into(),
    })
}

async fn refresh(app: &App, host: &str) -> Result<(), CloudError> {
    app.sched
        .refresh_from(&app.store, host)
        .await
        .map_err(internal)?;
    Ok(())
}

/// Loads instances of the caller; all must exist.
pub async fn load(
    app: &App,
    scope: &TenantScope,
    ids: &[String],
) -> Result<Vec<InstanceRow>, CloudError> {
    let rows = app
        .store
        .instances_get(scope, ids)
        .await
        .map_err(internal)?;
    let missing: Vec<String> = ids
        .iter()
        .filter(|id| !rows.iter().any(|r| &r.instance_id == *id))
        .cloned()
        .collect();
    if !missing.is_empty() {
        return Err(CloudError::InstanceNotFound(missing));
    }
    Ok(rows)
}

/// Wakes the agents of the instances' hosts (their desired state changed).
pub fn poke(app: &App, rows: &[InstanceRow]) {
    for r in rows {
        if let Some(h) = &r.host_id {
            app.gateway.poke(h);
        }
        if let Some(h) = &r.prev_host_id {
            app.gateway.poke(h);
        }
    }
}

/// Starts an operation on instances (all or none).
pub async fn transition(
    app: &App,
    ctx: &Ctx,
    ids: &[String],
    op: Operation,
    opts: &TransitionOpts,
) -> Result<(), CloudError> {
    load(app, &ctx.scope, ids).await?;
    let rows = app
        .store
        .instances_transition(&ctx.scope, ids, op, &ctx.request_id, opts)
        .await
        .map_err(tx_error)?;
    poke(app, &rows);
    Ok(())
}

/// Starts stopped instances; those whose resources were released
/// (`STOP_CHARGING`) claim them again on their host first.
pub async fn start(app: &App, ctx: &Ctx, ids: &[String]) -> Result<(), CloudError> {
    let mut attempt = 1;
    loop {
        match start_once(app, ctx, ids).await {
            // A host report changed an instance between planning and the
            // transaction (or capacity moved): plan again.
            Err(TxError::HostConflict(h)) if attempt < PLACE_ATTEMPTS => {
                refresh(app, &h).await?;
                attempt += 1;
            }
            r => return r.map_err(tx_error),
        }
    }
}

async fn start_once(app: &App, ctx: &Ctx, ids: &[String]) -> Result<(), TxError> {
    let rows = load(app, &ctx.scope, ids).await?;
    let mut opts = TransitionOpts::default();
    let mut reservations: Vec<Held<'_>> = Vec::new();
    for r in rows
        .iter()
        .filter(|r| !r.resources_held && r.state == InstanceState::Stopped)
    {
        let host = r.host_id.clone().unwrap_or_default();
        match app.sched.reserve_on_host(
            &host,
            r.gpu_count.max(0) as u32,
            &[],
            r.cpu.max(0) as u32,
            (r.memory_gib.max(0) as u64) * 1024,
        ) {
            Some((res, gpus)) => {
                reservations.push(app.sched.hold(res));
                opts.reclaims.insert(
                    r.instance_id.clone(),
                    gpus.iter().map(|g| i64::from(*g)).collect(),
                );
            }
            None => {
                drop(reservations);
                return Err(CloudError::InsufficientCapacity {
                    instance_type: r.instance_type.clone(),
                    zone: r.zone.clone(),
                    detail: format!(
                        "instance {} was stopped without charging and its host no longer has the resources free",
                        r.instance_id
                    ),
                }
                .into());
            }
        }
    }
    let result = app
        .store
        .instances_transition(&ctx.scope, ids, Operation::Start, &ctx.request_id, &opts)
        .await;
    match result {
        Ok(rows) => {
            reservations.into_iter().for_each(Held::commit);
            poke(app, &rows);
            Ok(())
        }
        Err(e) => {
            drop(reservations);
            Err(e)
        }
    }
}

/// Changes the type of one instance: on its host when there is room,
/// otherwise on another host (the old host keeps its claims until it lets go).
pub async fn resize(
    app: &App,
    ctx: &Ctx,
    id: &str,
    new: &'static InstanceType,
    force_stop: bool,
    group_hosts: Option<(String, Vec<String>)>,
) -> Result<(), CloudError> {
    for _ in 0..PLACE_ATTEMPTS {
        let row = load(app, &ctx.scope, &[id.to_string()]).await?.remove(0);
        if row.state == InstanceState::Running && !force_stop {
            return Err(CloudError::InstanceState {
                id: id.to_string(),
                state: InstanceState::Running,
                action: "ResetInstancesType".into(),
            });
        }
        if row.state != InstanceState::Running && row.state != InstanceState::Stopped {
            return Err(if row.state.is_transitional() {
                CloudError::OperationInProgress {
                    id: id.to_string(),
                    operation: row.latest_operation.clone().unwrap_or_default(),
                }
            } else {
                CloudError::InstanceState {
                    id: id.to_string(),
                    state: row.state,
                    action: "ResetInstancesType".into(),
                }
            });
        }
        let host = row.host_id.clone().unwrap_or_default();
        let gpus = app.store.gpu_list(Some(&host)).await.map_err(internal)?;
        let mut current: Vec<u32> = if row.resources_held {
            gpus.iter()
                .filter(|g| g.claimed_by.as_deref() == Some(id) && !g.claim_released)
                .map(|g| g.idx as u32)
                .collect()
        } else {
            vec![]
        };
        current.sort_unstable();
        let (old_cpu, old_mem) = if row.resources_held {
            (row.cpu, row.memory_gib * 1024)
        } else {
            (0, 0)
        };
        let (dcpu, dmem) = (
            i64::from(new.cpu) - old_cpu,
            new.memory_mib() as i64 - old_mem,
        );
        let keep: Vec<u32> = current.iter().take(new.gpus as usize).copied().collect();
        let drop: Vec<u32> = current.iter().skip(new.gpus as usize).copied().collect();
        let same_host_model = app
            .sched
            .with_index(|i| i.host(&host).map(|h| h.model))
            .flatten()
            == new.gpu_model();
        // Staying on its host never breaks the instance's spread group.
        let on_spot = if same_host_model {
            app.sched.reserve_on_host(
                &host,
                new.gpus,
                &keep,
                dcpu.max(0) as u32,
                dmem.max(0) as u64,
            )
        } else {
            None
        };
        let (res, plan) = match on_spot {
            Some((res, add)) => (
                app.sched.hold(res),
                ResizePlan::SameHost {
                    add: add.iter().map(|g| i64::from(*g)).collect(),
                    drop: drop.iter().map(|g| i64::from(*g)).collect(),
                },
            ),
            None => {
                let req = PlacementRequest {
                    zone: row.zone.clone(),
                    model: new.gpu_model(),
                    gpus: new.gpus,
                    cpu: new.cpu,
                    mem_mib: new.memory_mib(),
                    runtime: request_bit(&row.runtime, new.gpus),
                    spread: group_hosts
                        .as_ref()
                        .map(|(level, hosts)| (spread_level(level), hosts.clone())),
                    exclude_hosts: vec![host.clone()],
                };
                let (res, mut placed) = app
                    .sched
                    .reserve(&req, 1, 1)
                    .map_err(|e| no_fit(e, new, &row.zone, &row.image_id, &row.runtime))?;
                let p = placed.remove(0);
                (
                    app.sched.hold(res),
                    ResizePlan::Move {
                        host_id: p.host_id,
                        gpus: p.gpus.iter().map(|g| i64::from(*g)).collect(),
                    },
                )
            }
        };
        let shape = NewShape {
            instance_type: new.name.to_string(),
            cpu: i64::from(new.cpu),
            memory_gib: i64::from(new.memory_gib),
            gpu_count: i64::from(new.gpus),
        };
        match app
            .store
            .instance_resize(
                &ctx.scope,
                id,
                &ctx.request_id,
                &shape,
                &plan,
                Seen::of(&row),
            )
            .await
        {
            Ok(after) => {
                res.commit();
                if let ResizePlan::SameHost { .. } = plan {
                    if dcpu < 0 || dmem < 0 {
                        app.sched
                            .shrink(&host, (-dcpu).max(0) as u32, (-dmem).max(0) as u64);
                    }
                }
                app.gateway.poke(&host);
                if let Some(h) = &after.host_id {
                    app.gateway.poke(h);
                }
                return Ok(());
            }
            Err(TxError::HostConflict(h)) => {
                std::mem::drop(res);
                refresh(app, &h).await?;
            }
            Err(e) => {
                std::mem::drop(res);
                return Err(tx_error(e));
            }
        }
    }
    Err(CloudError::InsufficientCapacity {
        instance_type: new.name.to_string(),
        zone: String::new(),
        detail: "capacity kept changing while resizing; retry".into(),
    })
}

/// The API view of an instance.
///
/// Where the instance's host is not reporting, the state shown is the last
/// one seen and `LatestOperationErrorMsg` says so (the API has no "unknown"
/// state); where the host reports that it cannot bring the instance to its
/// state (and keeps trying), `LatestOperationErrorMsg` says why; when one of its GPUs is fenced, `GPUInfo.GPUHealth` lists the
/// health of each.
pub fn to_api(r: &InstanceRow, os_name: &str, facts: &crate::sched::Facts) -> Instance {
    // Only when a GPU is fenced: Tencent's Python SDK warns about fields it
    // does not know, and a healthy instance has nothing to say.
    let any_fenced = r
        .gpu_ids
        .iter()
        .any(|id| facts.unhealthy_gpus.contains_key(id));
    let gpu_info = (r.gpu_count > 0).then(|| GpuInfo {
        gpu_count: r.gpu_count as f64,
        gpu_health: r
            .gpu_ids
            .iter()
            .filter(|_| any_fenced)
            .map(|id| match facts.unhealthy_gpus.get(id) {
                Some((_, why)) => GpuHealth {
                    gpu_id: id.clone(),
                    state: "UNHEALTHY".into(),
                    reason: why.clone(),
                },
                None => GpuHealth {
                    gpu_id: id.clone(),
                    state: "HEALTHY".into(),
                    reason: String::new(),
                },
            })
            .collect(),
        gpu_id: r.gpu_ids.clone(),
        gpu_type: r
            .gpu_model
            .as_deref()
            .and_then(GpuModel::from_key)
            .or_else(|| {
                gpucloud_core::catalog::instance_type(&r.instance_type).and_then(|t| t.gpu_model())
            })
            .map_or_else(String::new, |m| m.spec().name.to_string()),
    });
    let system_disk: SystemDisk = serde_json::from_value(r.system_disk.clone()).unwrap_or_default();
    let data_disks: Vec<DataDisk> =
        serde_json::from_value(r.data_disks.clone()).unwrap_or_default();
    let internet: InternetAccessible =
        serde_json::from_value(r.internet.clone()).unwrap_or_default();
    let tags: Vec<(String, String)> = serde_json::from_value(r.tags.clone()).unwrap_or_default();
    Instance {
        placement: Placement {
            zone: Some(r.zone.clone()),
            project_id: Some(r.project_id),
            host_id: r.host_id.clone(),
            ..Default::default()
        },
        instance_id: r.instance_id.clone(),
        instance_type: r.instance_type.clone(),
        cpu: r.cpu,
        memory: r.memory_gib,
        restrict_state: "NORMAL".into(),
        instance_name: r.name.clone(),
        instance_charge_type: r.charge_type.clone(),
        system_disk,
        data_disks: Some(data_disks),
        private_ip_addresses: r.private_ip.iter().cloned().collect(),
        public_ip_addresses: None,
        internet_accessible: InternetAccessible {
            internet_charge_type: internet
                .internet_charge_type
                .or_else(|| Some("TRAFFIC_POSTPAID_BY_HOUR".into())),
            internet_max_bandwidth_out: Some(internet.internet_max_bandwidth_out.unwrap_or(0)),
            public_ip_assigned: Some(false),
            ..Default::default()
        },
        virtual_private_cloud: VirtualPrivateCloud {
            vpc_id: r.vpc_id.clone(),
            subnet_id: r.subnet_id.clone(),
            as_vpc_gateway: Some(false),
            private_ip_addresses: None,
            ipv6_address_count: None,
        },
        image_id: r.image_id.clone(),
        renew_flag: r.renew_flag.clone(),
        created_time: gpucloud_store::iso(r.created_at),
        expired_time: r.expired_at.map(gpucloud_store::iso),
        os_name: os_name.to_string(),
        security_group_ids: r.security_group_ids.clone(),
        login_settings: LoginSettings {
            password: None,
            key_ids: Some(r.key_ids.clone()),
            keep_image_login: None,
        },
        instance_state: r.state.as_str().to_string(),
        tags: tags
            .into_iter()
            .map(|(k, v)| Tag {
                key: Some(k),
                value: Some(v),
            })
            .collect(),
        stop_charging_mode: if r.state == InstanceState::Stopped
            && r.stopped_mode.as_deref() == Some("STOP_CHARGING")
        {
            "STOP_CHARGING".into()
        } else {
            "NOT_APPLICABLE".into()
        },
        uuid: r.uuid.clone(),
        latest_operation: r.latest_operation.clone(),
        latest_operation_state: r.latest_operation_state.clone(),
        latest_operation_request_id: r.latest_operation_request_id.clone(),
        disaster_recover_group_id: r.placement_group_id.clone().unwrap_or_default(),
        ipv6_addresses: None,
        cam_role_name: String::new(),
        hpc_cluster_id: String::new(),
        rdma_ip_addresses: None,
        dedicated_cluster_id: String::new(),
        isolated_source: "NOTISOLATED".into(),
        gpu_info,
        license_type: "TencentCloud".into(),
        disable_api_termination: r.disable_api_termination,
        host_name: r.host_name.clone(),
        default_login_user: "root".into(),
        default_login_port: 22,
        latest_operation_error_msg: match r.host_id.as_ref().and_then(|h| facts.unreachable.get(h)) {
            Some(why) => Some(format!(
                "the instance's host is not reporting ({why}); the state shown is the last one seen{}",
                r.latest_operation_error
                    .as_ref()
                    .map(|e| format!("; last error: {e}"))
                    .unwrap_or_default()
            )),
            None => match &r.host_error {
                Some(e) => Some(format!(
                    "the host cannot bring the instance to {} and keeps trying: {e}",
                    r.state.as_str()
                )),
                None => r.latest_operation_error.clone(),
            },
        },
        enable_jumbo_frame: false,
        public_ipv6_addresses: None,
        partition_number: 0,
    }
}
