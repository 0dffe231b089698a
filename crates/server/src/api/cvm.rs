//! CVM 2017-03-12 actions.

use crate::api::front::Ctx;
use crate::api::params::{filters, ids, paging, tags_match, values_of};
use crate::app::instances::{self as inst, GroupConstraint, PlaceSpec};
use crate::app::{catalog, images, internal, tx_error};
use crate::{console, App};
use gpucloud_api_types::cvm::*;
use gpucloud_api_types::ids::{is_valid, new_id, IdKind};
use gpucloud_core::catalog::{self as cat, InstanceType};
use gpucloud_core::lifecycle::{InstanceState, Operation};
use gpucloud_core::pricing::{self, ChargeType};
use gpucloud_core::region::{self, Zone};
use gpucloud_core::{validate, CloudError};
use gpucloud_store::instances::{
    InstanceQuery, LoginChange, NewInstance, Reinstall, TransitionOpts,
};
use gpucloud_store::keypairs::NewKeyPair;
use std::collections::HashMap;

type R<T> = Result<T, CloudError>;

const DISK_TYPES: &[&str] = &[
    "LOCAL_BASIC",
    "LOCAL_SSD",
    "CLOUD_BASIC",
    "CLOUD_SSD",
    "CLOUD_PREMIUM",
    "CLOUD_BSSD",
    "CLOUD_HSSD",
    "CLOUD_TSSD",
];
const DATA_DISK_TYPES: &[&str] = &[
    "LOCAL_BASIC",
    "LOCAL_SSD",
    "CLOUD_BASIC",
    "CLOUD_SSD",
    "CLOUD_PREMIUM",
    "CLOUD_BSSD",
    "CLOUD_HSSD",
    "CLOUD_TSSD",
    "LOCAL_NVME",
    "LOCAL_PRO",
];
const INTERNET_CHARGE_TYPES: &[&str] = &[
    "BANDWIDTH_PREPAID",
    "TRAFFIC_POSTPAID_BY_HOUR",
    "BANDWIDTH_POSTPAID_BY_HOUR",
    "BANDWIDTH_PACKAGE",
];
const STOP_TYPES: &[&str] = &["SOFT", "HARD", "SOFT_FIRST"];

fn one_of(name: &str, value: &str, allowed: &[&str]) -> R<()> {
    if allowed.contains(&value) {
        Ok(())
    } else {
        Err(CloudError::value(
            name,
            format!("`{value}` is not one of {}", allowed.join(", ")),
        ))
    }
}

/// A zone exists when it is in this cloud's region and has hosts (or is the
/// region's default zone); DescribeZones lists exactly these.
fn zone_check(app: &App, zone: &str) -> R<()> {
    match Zone::parse(zone) {
        Some(z) if z.region == app.cfg.region && catalog::zones(app).contains(&z.code()) => Ok(()),
        _ => Err(CloudError::ZoneNotFound {
            zone: zone.to_string(),
            region: app.cfg.region.clone(),
        }),
    }
}

fn type_check(name: &str) -> R<&'static InstanceType> {
    if !cat::is_well_formed_type(name) {
        return Err(CloudError::InstanceTypeMalformed(name.to_string()));
    }
    cat::instance_type(name).ok_or_else(|| CloudError::InstanceTypeNotFound(name.to_string()))
}

fn unsupported_if<T>(v: &Option<T>, what: &str) -> R<()> {
    if v.is_some() {
        return Err(CloudError::Unsupported(what.to_string()));
    }
    Ok(())
}

fn project_check(p: Option<i64>) -> R<i64> {
    match p.unwrap_or(0) {
        0 => Ok(0),
        other => Err(CloudError::ProjectNotFound(other)),
    }
}

fn tags_of(spec: &Option<Vec<TagSpecification>>, resource: &str) -> R<Vec<(String, String)>> {
    let mut out = Vec::new();
    for (i, s) in spec.iter().flatten().enumerate() {
        let rt = s.resource_type.clone().ok_or_else(|| {
            CloudError::MissingParameter(format!("TagSpecification.{i}.ResourceType"))
        })?;
        if rt != resource {
            continue;
        }
        for t in s.tags.iter().flatten() {
            let k = t.key.clone().filter(|k| !k.is_empty()).ok_or_else(|| {
                CloudError::MissingParameter(format!("TagSpecification.{i}.Tags.Key"))
            })?;
            if k.len() > 127 {
                return Err(CloudError::value(
                    "TagSpecification.Tags.Key",
                    "at most 127 characters",
                ));
            }
            out.push((k, t.value.clone().unwrap_or_default()));
        }
    }
    if out.len() > 50 {
        return Err(CloudError::TooManyValues {
            name: "TagSpecification.Tags".into(),
            max: 50,
            given: out.len(),
        });
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// Regions, zones, types, images
// ---------------------------------------------------------------------------

/// `DescribeRegions`.
pub async fn describe_regions(
    app: &App,
    ctx: &Ctx,
    _req: DescribeRegionsRequest,
) -> R<DescribeRegionsResponse> {
    let r = region::region(&app.cfg.region).ok_or(CloudError::Internal)?;
    Ok(DescribeRegionsResponse {
        total_count: 1,
        region_set: vec![RegionInfo {
            region: r.code.to_string(),
            region_name: region::region_name(r, ctx.lang).to_string(),
            region_state: "AVAILABLE".into(),
        }],
    })
}

/// `DescribeZones`.
pub async fn describe_zones(
    app: &App,
    ctx: &Ctx,
    _req: DescribeZonesRequest,
) -> R<DescribeZonesResponse> {
    let with_hosts: Vec<String> = app.sched.with_index(|i| i.zones().into_iter().collect());
    let zones = catalog::zones(app);
    let set: Vec<ZoneInfo> = zones
        .iter()
        .filter_map(|z| Zone::parse(z))
        .map(|z| ZoneInfo {
            zone: z.code(),
            zone_name: z.name(ctx.lang),
            zone_id: z.id(),
            zone_state: if with_hosts.contains(&z.code()) {
                "AVAILABLE".into()
            } else {
                "UNAVAILABLE".into()
            },
        })
        .collect();
    Ok(DescribeZonesResponse {
        total_count: set.len() as i64,
        zone_set: set,
    })
}

/// `DescribeInstanceTypeConfigs`.
pub async fn describe_instance_type_configs(
    app: &App,
    _ctx: &Ctx,
    req: DescribeInstanceTypeConfigsRequest,
) -> R<DescribeInstanceTypeConfigsResponse> {
    let f = filters(
        req.filters,
        &["zone", "instance-family", "instance-type"],
        10,
        100,
    )?;
    let (zf, ff, tf) = (
        values_of(&f, "zone"),
        values_of(&f, "instance-family"),
        values_of(&f, "instance-type"),
    );
    for t in &tf {
        if !cat::is_well_formed_type(t) {
            return Err(CloudError::InstanceTypeMalformed(t.to_string()));
        }
    }
    let mut out = Vec::new();
    for zone in catalog::zones(app) {
        if !zf.is_empty() && !zf.contains(&&zone) {
            continue;
        }
        for t in catalog::offered_types(app, &zone) {
            if (!ff.is_empty() && !ff.iter().any(|x| *x == t.family))
                || (!tf.is_empty() && !tf.iter().any(|x| *x == t.name))
            {
                continue;
            }
            let spec = t.gpu_model().map(|m| m.spec());
            out.push(InstanceTypeConfig {
                zone: zone.clone(),
                instance_type: t.name.to_string(),
                instance_family: t.family.to_string(),
                gpu: i64::from(t.gpus),
                cpu: i64::from(t.cpu),
                memory: i64::from(t.memory_gib),
                fpga: 0,
                gpu_count: f64::from(t.gpus),
                gpu_type: spec.map_or_else(String::new, |s| s.name.to_string()),
                gpu_memory: spec.map_or(0.0, |s| f64::from(s.memory_gib)),
            });
        }
    }
    Ok(DescribeInstanceTypeConfigsResponse {
        instance_type_config_set: out,
    })
}

/// `DescribeZoneInstanceConfigInfos`: what sells where, from real free capacity.
pub async fn describe_zone_instance_config_infos(
    app: &App,
    _ctx: &Ctx,
    req: DescribeZoneInstanceConfigInfosRequest,
) -> R<DescribeZoneInstanceConfigInfosResponse> {
    let f = filters(
        req.filters,
        &[
            "zone",
            "instance-family",
            "instance-type",
            "instance-charge-type",
            "sort-keys",
        ],
        10,
        100,
    )?;
    let (zf, ff, tf, cf) = (
        values_of(&f, "zone"),
        values_of(&f, "instance-family"),
        values_of(&f, "instance-type"),
        values_of(&f, "instance-charge-type"),
    );
    for c in &cf {
        one_of(
            "Filters.instance-charge-type",
            c,
            &["POSTPAID_BY_HOUR", "PREPAID", "SPOTPAID"],
        )?;
    }
    let charges: Vec<&str> = if cf.is_empty() {
        vec!["POSTPAID_BY_HOUR", "PREPAID"]
    } else {
        cf.iter()
            .map(|s| s.as_str())
            .filter(|c| *c != "SPOTPAID")
            .collect()
    };
    let mut out = Vec::new();
    for zone in catalog::zones(app) {
        if !zf.is_empty() && !zf.contains(&&zone) {
            continue;
        }
        for t in catalog::offered_types(app, &zone) {
            if (!ff.is_empty() && !ff.iter().any(|x| *x == t.family))
                || (!tf.is_empty() && !tf.iter().any(|x| *x == t.name))
            {
                continue;
            }
            let n = catalog::stock(app, &zone, t);
            let fam = t.family();
            for charge in &charges {
                let ct = ChargeType::parse(charge).unwrap_or(ChargeType::PostpaidByHour);
                out.push(InstanceTypeQuotaItem {
                    zone: zone.clone(),
                    instance_type: t.name.to_string(),
                    instance_charge_type: charge.to_string(),
                    network_card: (t.bandwidth_gbps.ceil() as i64).max(1),
                    externals: Externals::default(),
                    cpu: i64::from(t.cpu),
                    memory: i64::from(t.memory_gib),
                    instance_family: t.family.to_string(),
                    type_name: fam.description.to_string(),
                    local_disk_type_list: vec![],
                    status: if n > 0 { "SELL" } else { "SOLD_OUT" }.into(),
                    price: catalog::instance_price(t, ct, 1, 1),
                    sold_out_reason: if n > 0 {
                        String::new()
                    } else {
                        "no host in the zone has this shape free".into()
                    },
                    instance_bandwidth: t.bandwidth_gbps,
                    instance_pps: i64::from(t.pps_10k),
                    storage_block_amount: 0,
                    cpu_type: fam.cpu_type.to_string(),
                    gpu: i64::from(t.gpus),
                    fpga: 0,
                    remark: fam.description.to_string(),
                    gpu_count: f64::from(t.gpus),
                    frequency: fam.frequency.to_string(),
                    status_category: catalog::stock_category(n).into(),
                });
            }
        }
    }
    for (name, keys) in f.iter().filter(|(n, _)| n == "sort-keys") {
        let _ = name;
        for k in keys.iter().rev() {
            let (field, dir) = k.split_once(':').unwrap_or((k.as_str(), "asc"));
            let desc = dir.eq_ignore_ascii_case("desc");
            match field {
                "cpu" => out.sort_by_key(|i| if desc { -i.cpu } else { i.cpu }),
                "mem" => out.sort_by_key(|i| if desc { -i.memory } else { i.memory }),
                _ => {
                    return Err(CloudError::value(
                        "Filters.sort-keys",
                        format!("`{k}`: sort by cpu or mem, e.g. cpu:desc"),
                    ))
                }
            }
        }
    }
    Ok(DescribeZoneInstanceConfigInfosResponse {
        instance_type_quota_set: out,
    })
}

/// `DescribeImages`.
pub async fn describe_images(
    app: &App,
    ctx: &Ctx,
    req: DescribeImagesRequest,
) -> R<DescribeImagesResponse> {
    if req.image_ids.is_some() && req.filters.is_some() {
        return Err(CloudError::ParameterCombination(
            "ImageIds and Filters cannot be used together".into(),
        ));
    }
    let wanted = ids("ImageIds", req.image_ids, IdKind::Image, false, 100)?;
    let f = filters(
        req.filters,
        &[
            "image-id",
            "image-type",
            "image-name",
            "platform",
            "tag-key",
            "tag-value",
            "tag:",
            "image-state",
        ],
        10,
        5,
    )?;
    let (offset, limit) = paging(req.offset, req.limit, 100)?;
    if let Some(t) = &req.instance_type {
        type_check(t)?;
    }
    let all = app
        .store
        .images_visible(&ctx.scope)
        .await
        .map_err(internal)?;
    let matches = |i: &&gpucloud_store::images::ImageRow| {
        (wanted.is_empty() || wanted.contains(&i.image_id))
            && f.iter().all(|(n, v)| match n.as_str() {
                "image-id" => v.contains(&i.image_id),
                "image-type" => v.contains(&i.image_type),
                "image-name" => v.iter().any(|x| i.name.contains(x.as_str())),
                "platform" => v.iter().any(|x| x.eq_ignore_ascii_case(&i.platform)),
                "image-state" => v.contains(&i.state),
                _ => true,
            })
            && tags_match(&i.tags, &f)
    };
    let list: Vec<Image> = all.iter().filter(matches).map(images::to_api).collect();
    let total = list.len() as i64;
    Ok(DescribeImagesResponse {
        image_set: list
            .into_iter()
            .skip(offset as usize)
            .take(limit as usize)
            .collect(),
        total_count: total,
    })
}

// ---------------------------------------------------------------------------
// RunInstances and friends
// ---------------------------------------------------------------------------

struct Charge {
    kind: ChargeType,
    period: i64,
    renew_flag: Option<String>,
}

fn charge_of(kind: Option<&str>, prepaid: Option<&InstanceChargePrepaid>) -> R<Charge> {
    let raw = kind.unwrap_or("POSTPAID_BY_HOUR");
    let kind = match raw {
        "POSTPAID_BY_HOUR" => ChargeType::PostpaidByHour,
        "PREPAID" => ChargeType::Prepaid,
        "SPOTPAID" | "CDHPAID" | "CDCPAID" => {
            return Err(CloudError::Unsupported(format!("InstanceChargeType {raw}")))
        }
        other => {
            return Err(CloudError::value(
                "InstanceChargeType",
                format!("`{other}` is not one of PREPAID, POSTPAID_BY_HOUR"),
            ))
        }
    };
    if kind != ChargeType::Prepaid {
        return Ok(Charge {
            kind,
            period: 1,
            renew_flag: None,
        });
    }
    let p = prepaid
        .ok_or_else(|| CloudError::MissingParameter("InstanceChargePrepaid.Period".into()))?;
    let period = p
        .period
        .ok_or_else(|| CloudError::MissingParameter("InstanceChargePrepaid.Period".into()))?;
    if !pricing::valid_period(period) {
        return Err(CloudError::InvalidPeriod(period));
    }
    let flag = p
        .renew_flag
        .clone()
        .unwrap_or_else(|| "NOTIFY_AND_MANUAL_RENEW".into());
    one_of(
        "InstanceChargePrepaid.RenewFlag",
        &flag,
        &[
            "NOTIFY_AND_AUTO_RENEW",
            "NOTIFY_AND_MANUAL_RENEW",
            "DISABLE_NOTIFY_AND_MANUAL_RENEW",
        ],
    )?;
    Ok(Charge {
        kind,
        period,
        renew_flag: Some(flag),
    })
}

fn internet_of(i: &Option<InternetAccessible>) -> R<serde_json::Value> {
    let Some(i) = i else {
        return Ok(serde_json::json!({}));
    };
    if let Some(ct) = &i.internet_charge_type {
        one_of(
            "InternetAccessible.InternetChargeType",
            ct,
            INTERNET_CHARGE_TYPES,
        )?;
    }
    let bw = i.internet_max_bandwidth_out.unwrap_or(0);
    if !(0..=65_535).contains(&bw) {
        return Err(CloudError::Range {
            name: "InternetAccessible.InternetMaxBandwidthOut".into(),
            min: 0,
            max: 65_535,
            value: bw,
        });
    }
    if bw > 0 || i.public_ip_assigned == Some(true) {
        return Err(CloudError::Unsupported(
            "a public IP address (InternetMaxBandwidthOut > 0); instances are reached on their private address"
                .into(),
        ));
    }
    unsupported_if(
        &i.bandwidth_package_id,
        "InternetAccessible.BandwidthPackageId",
    )?;
    Ok(serde_json::to_value(i).unwrap_or_default())
}

fn system_disk_of(d: &Option<SystemDisk>) -> R<serde_json::Value> {
    let d = d.clone().unwrap_or_default();
    let ty = d
        .disk_type
        .clone()
        .unwrap_or_else(|| "CLOUD_PREMIUM".into());
    one_of("SystemDisk.DiskType", &ty, DISK_TYPES)?;
    let size = d.disk_size.unwrap_or(50);
    if !(20..=2048).contains(&size) {
        return Err(CloudError::Range {
            name: "SystemDisk.DiskSize".into(),
            min: 20,
            max: 2048,
            value: size,
        });
    }
    unsupported_if(&d.kms_key_id, "SystemDisk.KmsKeyId")?;
    if d.encrypt == Some(true) {
        return Err(CloudError::Unsupported("disk encryption".into()));
    }
    Ok(serde_json::to_value(SystemDisk {
        disk_type: Some(ty),
        disk_id: Some(new_id(IdKind::Disk)),
        disk_size: Some(size),
        ..Default::default()
    })
    .unwrap_or_default())
}

fn data_disks_of(d: &Option<Vec<DataDisk>>) -> R<serde_json::Value> {
    let disks = d.clone().unwrap_or_default();
    if disks.len() > 21 {
        return Err(CloudError::TooManyValues {
            name: "DataDisks".into(),
            max: 21,
            given: disks.len(),
        });
    }
    let mut out = Vec::new();
    for (i, d) in disks.into_iter().enumerate() {
        let size = d
            .disk_size
            .ok_or_else(|| CloudError::MissingParameter(format!("DataDisks.{i}.DiskSize")))?;
        if !(10..=32_000).contains(&size) {
            return Err(CloudError::Range {
                name: format!("DataDisks.{i}.DiskSize"),
                min: 10,
                max: 32_000,
                value: size,
            });
        }
        let ty = d
            .disk_type
            .clone()
            .unwrap_or_else(|| "CLOUD_PREMIUM".into());
        one_of(&format!("DataDisks.{i}.DiskType"), &ty, DATA_DISK_TYPES)?;
        unsupported_if(&d.snapshot_id, "DataDisks.SnapshotId")?;
        if d.delete_with_instance == Some(false) {
            // Data disks live in the instance's directory on its host; a disk
            // that outlives its instance needs cloud block storage.
            return Err(CloudError::Unsupported(format!(
                "DataDisks.{i}.DeleteWithInstance=false (data disks are deleted with their instance)"
            )));
        }
        if d.encrypt == Some(true) {
            return Err(CloudError::Unsupported("disk encryption".into()));
        }
        out.push(DataDisk {
            disk_size: Some(size),
            disk_type: Some(ty),
            disk_id: Some(new_id(IdKind::Disk)),
            delete_with_instance: Some(d.delete_with_instance.unwrap_or(true)),
            disk_name: d.disk_name,
            ..Default::default()
        });
    }
    Ok(serde_json::to_value(out).unwrap_or_default())
}

struct Login {
    password: Option<String>,
    key_ids: Vec<String>,
}

async fn login_of(app: &App, ctx: &Ctx, l: &Option<LoginSettings>) -> R<Login> {
    let Some(l) = l else {
        return Ok(Login {
            password: None,
            key_ids: vec![],
        });
    };
    let given = [
        l.password.is_some(),
        l.key_ids.as_ref().is_some_and(|k| !k.is_empty()),
        l.keep_image_login.as_deref() == Some("true"),
    ]
    .iter()
    .filter(|x| **x)
    .count();
    if given > 1 {
        return Err(CloudError::ParameterCombination(
            "LoginSettings takes one of Password, KeyIds or KeepImageLogin".into(),
        ));
    }
    if let Some(k) = &l.keep_image_login {
        one_of(
            "LoginSettings.KeepImageLogin",
            k,
            &["true", "false", "TRUE", "FALSE"],
        )?;
    }
    if let Some(p) = &l.password {
        validate::password(p)?;
    }
    let key_ids = ids(
        "LoginSettings.KeyIds",
        l.key_ids.clone(),
        IdKind::KeyPair,
        false,
        20,
    )?;
    if !key_ids.is_empty() {
        let found = app
            .store
            .key_pairs(&ctx.scope, Some(&key_ids))
            .await
            .map_err(internal)?;
        if let Some(missing) = key_ids
            .iter()
            .find(|k| !found.iter().any(|f| &f.key_id == *k))
        {
            return Err(CloudError::LoginKeyPairNotFound(missing.clone()));
        }
    }
    Ok(Login {
        password: l.password.clone(),
        key_ids,
    })
}

async fn group_of(app: &App, ctx: &Ctx, given: Option<Vec<String>>) -> R<Option<GroupConstraint>> {
    let g = ids(
        "DisasterRecoverGroupIds",
        given,
        IdKind::PlacementGroup,
        false,
        1,
    )?;
    let Some(gid) = g.first() else {
        return Ok(None);
    };
    let group = app
        .store
        .groups(&ctx.scope, Some(&g))
        .await
        .map_err(internal)?
        .pop()
        .ok_or_else(|| CloudError::PlacementGroupNotFound(gid.clone()))?;
    let members = app
        .store
        .instances_get(&ctx.scope, &group.instance_ids)
        .await
        .map_err(internal)?;
    Ok(Some(GroupConstraint {
        id: group.group_id,
        level: group.group_type,
        quota: group.quota,
        member_hosts: members.into_iter().filter_map(|m| m.host_id).collect(),
    }))
}

async fn vpc_check(app: &App, ctx: &Ctx, zone: &str, v: &Option<VirtualPrivateCloud>) -> R<()> {
    let Some(v) = v else { return Ok(()) };
    let vpc = v
        .vpc_id
        .clone()
        .ok_or_else(|| CloudError::MissingParameter("VirtualPrivateCloud.VpcId".into()))?;
    let subnet = v
        .subnet_id
        .clone()
        .ok_or_else(|| CloudError::MissingParameter("VirtualPrivateCloud.SubnetId".into()))?;
    if !is_valid(IdKind::Vpc, &vpc) {
        return Err(CloudError::VpcIdMalformed(vpc));
    }
    if !is_valid(IdKind::Subnet, &subnet) {
        return Err(CloudError::SubnetIdMalformed(subnet));
    }
    if !gpucloud_store::network::vpc_exists(&app.store, &ctx.scope, &vpc)
        .await
        .map_err(internal)?
    {
        return Err(CloudError::VpcNotFound(vpc));
    }
    let (svpc, szone, _) = gpucloud_store::network::subnet_get(&app.store, &ctx.scope, &subnet)
        .await
        .map_err(internal)?
        .ok_or_else(|| CloudError::SubnetNotFound(subnet.clone()))?;
    if svpc != vpc {
        return Err(CloudError::VpcSubnetMismatch { subnet, vpc });
    }
    if szone != zone {
        return Err(CloudError::SubnetZoneMismatch {
            subnet,
            subnet_zone: szone,
            zone: zone.to_string(),
        });
    }
    if v.private_ip_addresses
        .as_ref()
        .is_some_and(|p| !p.is_empty())
    {
        return Err(CloudError::Unsupported(
            "choosing private IP addresses".into(),
        ));
    }
    Ok(())
}

/// What `RunInstances` and `InquiryPriceRunInstances` both check first, in
/// this order: the placement (zone, project, no dedicated hosts), the image,
/// the instance type sold in that zone, the charge and the count.
struct Launch {
    zone: String,
    project_id: i64,
    image: gpucloud_store::images::ImageRow,
    t: &'static InstanceType,
    charge: Charge,
    count: i64,
}

async fn launch_of(app: &App, ctx: &Ctx, req: &RunInstancesRequest) -> R<Launch> {
    let placement = req
        .placement
        .clone()
        .ok_or_else(|| CloudError::MissingParameter("Placement.Zone".into()))?;
    let zone = placement
        .zone
        .clone()
        .ok_or_else(|| CloudError::MissingParameter("Placement.Zone".into()))?;
    zone_check(app, &zone)?;
    unsupported_if(&placement.host_ids, "Placement.HostIds (dedicated hosts)")?;
    unsupported_if(&placement.host_id, "Placement.HostId (dedicated hosts)")?;
    unsupported_if(
        &placement.dedicated_resource_pack_ids,
        "dedicated resource packs",
    )?;
    let project_id = project_check(placement.project_id)?;
    let image_id = req
        .image_id
        .clone()
        .ok_or_else(|| CloudError::MissingParameter("ImageId".into()))?;
    let image = images::visible(&app.store, &ctx.scope, &image_id).await?;
    let t = type_check(req.instance_type.as_deref().unwrap_or("S5.SMALL1"))?;
    if !catalog::offers(app, &zone, t) {
        return Err(CloudError::InstanceTypeUnavailable {
            instance_type: t.name.to_string(),
            zone,
        });
    }
    let charge = charge_of(
        req.instance_charge_type.as_deref(),
        req.instance_charge_prepaid.as_ref(),
    )?;
    let count = req.instance_count.unwrap_or(1);
    if !(1..=500).contains(&count) {
        return Err(CloudError::Range {
            name: "InstanceCount".into(),
            min: 1,
            max: 500,
            value: count,
        });
    }
    Ok(Launch {
        zone,
        project_id,
        image,
        t,
        charge,
        count,
    })
}

/// `RunInstances`.
pub async fn run_instances(
    app: &App,
    ctx: &Ctx,
    req: RunInstancesRequest,
) -> R<RunInstancesResponse> {
    unsupported_if(&req.launch_template, "LaunchTemplate")?;
    unsupported_if(&req.hpc_cluster_id, "HpcClusterId")?;
    unsupported_if(&req.dedicated_cluster_id, "DedicatedClusterId")?;
    unsupported_if(&req.chc_ids, "ChcIds")?;
    unsupported_if(&req.instance_market_options, "InstanceMarketOptions")?;
    unsupported_if(&req.cam_role_name, "CamRoleName")?;
    unsupported_if(&req.action_timer, "ActionTimer")?;
    unsupported_if(&req.cpu_topology, "CpuTopology")?;
    unsupported_if(&req.network_interfaces, "NetworkInterfaces")?;
    if req.enable_jumbo_frame == Some(true) {
        return Err(CloudError::Unsupported("jumbo frames".into()));
    }
    let Launch {
        zone,
        project_id,
        image,
        t,
        charge,
        count,
    } = launch_of(app, ctx, &req).await?;
    let min_count = match req.min_count {
        Some(m) if !(1..=count).contains(&m) => {
            return Err(CloudError::Range {
                name: "MinCount".into(),
                min: 1,
                max: count,
                value: m,
            })
        }
        Some(m) => m,
        None => count,
    };
    let names = validate::instance_names(
        req.instance_name
            .as_deref()
            .unwrap_or(validate::DEFAULT_INSTANCE_NAME),
        count as usize,
    )?;
    let host_names: Vec<Option<String>> = match &req.host_name {
        Some(h) => {
            let hs = validate::instance_names(h, count as usize)?;
            for h in &hs {
                validate::host_name(h)?;
            }
            hs.into_iter().map(Some).collect()
        }
        None => vec![None; count as usize],
    };
    let login = login_of(app, ctx, &req.login_settings).await?;
    if let Some(u) = &req.user_data {
        validate::user_data(u)?;
    }
    if let Some(t) = &req.client_token {
        validate::client_token(t)?;
    }
    let sgs = req.security_group_ids.clone().unwrap_or_default();
    if let Some(sg) = sgs.first() {
        return Err(CloudError::SecurityGroupNotFound(sg.clone()));
    }
    vpc_check(app, ctx, &zone, &req.virtual_private_cloud).await?;
    let internet = internet_of(&req.internet_accessible)?;
    let system_disk = system_disk_of(&req.system_disk)?;
    let data_disks = data_disks_of(&req.data_disks)?;
    if image.runtime == "container" && data_disks.as_array().is_some_and(|d| !d.is_empty()) {
        return Err(CloudError::ParameterCombination(format!(
            "{} is a container image; container instances have no block devices, so DataDisks needs a VM image (tag runtime=qemu)",
            image.image_id
        )));
    }
    let tags = tags_of(&req.tag_specification, "instance")?;
    let group = group_of(app, ctx, req.disaster_recover_group_ids.clone()).await?;
    let now = chrono::Utc::now().timestamp_millis();
    let template = NewInstance {
        zone: zone.clone(),
        project_id,
        instance_type: t.name.to_string(),
        cpu: i64::from(t.cpu),
        memory_gib: i64::from(t.memory_gib),
        gpu_count: i64::from(t.gpus),
        image_id: image.image_id.clone(),
        runtime: image.runtime.clone(),
        charge_type: charge.kind.as_str().to_string(),
        prepaid_period: (charge.kind == ChargeType::Prepaid).then_some(charge.period),
        renew_flag: charge.renew_flag.clone(),
        expired_at: (charge.kind == ChargeType::Prepaid)
            .then(|| now + charge.period * 30 * 24 * 3600 * 1000),
        disable_api_termination: req.disable_api_termination.unwrap_or(false),
        user_data: req.user_data.clone(),
        password: login.password,
        system_disk,
        data_disks,
        internet,
        security_group_ids: sgs,
        placement_group_id: group.as_ref().map(|g| g.id.clone()),
        tags: serde_json::to_value(&tags).unwrap_or_default(),
        key_ids: login.key_ids,
        ..Default::default()
    };
    let spec = PlaceSpec {
        template,
        names,
        host_names,
        count: count as usize,
        min_count: min_count as usize,
        instance_type: t,
        group,
        client_token: req.client_token.clone(),
        dry_run: req.dry_run.unwrap_or(false),
    };
    let ids = inst::place(app, ctx, &spec).await?;
    Ok(RunInstancesResponse {
        instance_id_set: (!spec.dry_run).then_some(ids),
    })
}

// ---------------------------------------------------------------------------
// Describe
// ---------------------------------------------------------------------------

const INSTANCE_FILTERS: &[&str] = &[
    "zone",
    "project-id",
    "host-id",
    "vpc-id",
    "subnet-id",
    "instance-id",
    "uuid",
    "security-group-id",
    "instance-name",
    "instance-charge-type",
    "instance-state",
    "instance-type",
    "image-id",
    "private-ip-address",
    "public-ip-address",
    "ipv6-address",
    "dedicated-cluster-id",
    "creation-start-time",
    "creation-end-time",
    "tag-key",
    "tag-value",
    "tag:",
];

fn parse_time(name: &str, values: &[String]) -> R<i64> {
    let [s] = values else {
        return Err(CloudError::value(
            format!("Filters.{name}"),
            "takes exactly one time",
        ));
    };
    chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S")
        .map(|t| t.and_utc().timestamp_millis())
        .map_err(|_| CloudError::InvalidTimeFormat {
            name: format!("Filters.{name}"),
            value: s.clone(),
        })
}

async fn os_names(app: &App, ctx: &Ctx) -> R<HashMap<String, String>> {
    Ok(app
        .store
        .images_visible(&ctx.scope)
        .await
        .map_err(internal)?
        .into_iter()
        .map(|i| (i.image_id, i.os_name))
        .collect())
}

/// `DescribeInstances`.
pub async fn describe_instances(
    app: &App,
    ctx: &Ctx,
    req: DescribeInstancesRequest,
) -> R<DescribeInstancesResponse> {
    if req.instance_ids.as_ref().is_some_and(|v| !v.is_empty())
        && req.filters.as_ref().is_some_and(|v| !v.is_empty())
    {
        // DescribeInstances answers this with InvalidParameter (its list
        // has no InvalidParameterCombination).
        return Err(CloudError::InvalidParameter {
            name: "InstanceIds, Filters".into(),
            detail: "InstanceIds and Filters cannot be used together; send one of them".into(),
        });
    }
    let wanted = ids(
        "InstanceIds",
        req.instance_ids,
        IdKind::Instance,
        false,
        100,
    )?;
    let f = filters(req.filters, INSTANCE_FILTERS, 10, 5)?;
    let (offset, limit) = paging(req.offset, req.limit, 100)?;
    let mut q = InstanceQuery {
        ids: wanted,
        offset,
        limit,
        ..Default::default()
    };
    let mut in_memory: Vec<(String, Vec<String>)> = vec![];
    let mut nothing = false;
    for (name, vals) in &f {
        let v = vals.clone();
        match name.as_str() {
            "zone" => q.zones.extend(v),
            "instance-id" => {
                for id in &v {
                    if !is_valid(IdKind::Instance, id) {
                        return Err(CloudError::InstanceIdMalformed(id.clone()));
                    }
                }
                q.ids.extend(v)
            }
            "instance-name" => q.names.extend(v),
            "instance-state" => q.states.extend(v),
            "instance-charge-type" => q.charge_types.extend(v),
            "instance-type" => q.instance_types.extend(v),
            "uuid" => q.uuids.extend(v),
            "host-id" => q.host_ids.extend(v),
            "vpc-id" => q.vpc_ids.extend(v),
            "subnet-id" => q.subnet_ids.extend(v),
            "private-ip-address" => q.private_ips.extend(v),
            "image-id" => q.image_ids.extend(v),
            "project-id" => {
                for p in v {
                    q.project_ids.push(p.parse().map_err(|_| {
                        CloudError::value("Filters.project-id", format!("`{p}` is not an integer"))
                    })?);
                }
            }
            "creation-start-time" => q.created_after = Some(parse_time(name, &v)?),
            "creation-end-time" => q.created_before = Some(parse_time(name, &v)?),
            "public-ip-address" | "ipv6-address" | "dedicated-cluster-id" => nothing = true,
            _ => in_memory.push((name.clone(), v)),
        }
    }
    if nothing {
        return Ok(DescribeInstancesResponse {
            total_count: 0,
            instance_set: vec![],
        });
    }
    let (total, rows) = if in_memory.is_empty() {
        app.store
            .instance_list(&ctx.scope, &q)
            .await
            .map_err(internal)?
    } else {
        let mut all_q = q.clone();
        all_q.offset = 0;
        all_q.limit = 100_000;
        let (_, rows) = app
            .store
            .instance_list(&ctx.scope, &all_q)
            .await
            .map_err(internal)?;
        let kept: Vec<_> = rows
            .into_iter()
            .filter(|r| {
                let tags: Vec<(String, String)> =
                    serde_json::from_value(r.tags.clone()).unwrap_or_default();
                tags_match(&tags, &in_memory)
                    && in_memory
                        .iter()
                        .filter(|(n, _)| n == "security-group-id")
                        .all(|(_, v)| r.security_group_ids.iter().any(|s| v.contains(s)))
            })
            .collect();
        let total = kept.len() as i64;
        (
            total,
            kept.into_iter()
                .skip(offset as usize)
                .take(limit as usize)
                .collect(),
        )
    };
    let os = os_names(app, ctx).await?;
    let instance_set = app.sched.with_facts(|facts| {
        rows.iter()
            .map(|r| inst::to_api(r, os.get(&r.image_id).map_or("", |s| s.as_str()), facts))
            .collect()
    });
    Ok(DescribeInstancesResponse {
        total_count: total,
        instance_set,
    })
}

/// `DescribeInstancesStatus`.
pub async fn describe_instances_status(
    app: &App,
    ctx: &Ctx,
    req: DescribeInstancesStatusRequest,
) -> R<DescribeInstancesStatusResponse> {
    let wanted = ids(
        "InstanceIds",
        req.instance_ids,
        IdKind::Instance,
        false,
        100,
    )?;
    let (offset, limit) = paging(req.offset, req.limit, 100)?;
    let (total, rows) = app
        .store
        .instance_list(
            &ctx.scope,
            &InstanceQuery {
                ids: wanted,
                offset,
                limit,
                ..Default::default()
            },
        )
        .await
        .map_err(internal)?;
    Ok(DescribeInstancesStatusResponse {
        total_count: total,
        instance_status_set: rows
            .iter()
            .map(|r| InstanceStatus {
                instance_id: r.instance_id.clone(),
                instance_state: r.state.as_str().to_string(),
            })
            .collect(),
    })
}

// ---------------------------------------------------------------------------
// Lifecycle
// ---------------------------------------------------------------------------

fn instance_ids(v: Option<Vec<String>>) -> R<Vec<String>> {
    ids("InstanceIds", v, IdKind::Instance, true, 100)
}

/// `StartInstances`.
pub async fn start_instances(app: &App, ctx: &Ctx, req: StartInstancesRequest) -> R<Empty> {
    let ids = instance_ids(req.instance_ids)?;
    inst::start(app, ctx, &ids).await?;
    Ok(Empty {})
}

/// `StopInstances`.
pub async fn stop_instances(app: &App, ctx: &Ctx, req: StopInstancesRequest) -> R<Empty> {
    let ids = instance_ids(req.instance_ids)?;
    let stop_type = match (&req.stop_type, req.force_stop) {
        (Some(_), Some(_)) => {
            return Err(CloudError::ParameterCombination(
                "ForceStop is deprecated and cannot be used with StopType; send StopType alone (HARD for a forced stop)".into(),
            ))
        }
        (Some(s), None) => {
            one_of("StopType", s, STOP_TYPES)?;
            s.clone()
        }
        (None, Some(true)) => "HARD".into(),
        (None, _) => "SOFT".into(),
    };
    let mode = req
        .stopped_mode
        .clone()
        .unwrap_or_else(|| "KEEP_CHARGING".into());
    one_of("StoppedMode", &mode, &["KEEP_CHARGING", "STOP_CHARGING"])?;
    if mode == "STOP_CHARGING" {
        for r in inst::load(app, &ctx.scope, &ids).await? {
            if r.charge_type != "POSTPAID_BY_HOUR" {
                return Err(CloudError::StopChargingNotSupported(r.instance_id));
            }
        }
    }
    let opts = TransitionOpts {
        stop_type: Some(stop_type),
        stopped_mode: Some(mode),
        ..Default::default()
    };
    inst::transition(app, ctx, &ids, Operation::Stop, &opts).await?;
    Ok(Empty {})
}

/// `RebootInstances`.
pub async fn reboot_instances(app: &App, ctx: &Ctx, req: RebootInstancesRequest) -> R<Empty> {
    let ids = instance_ids(req.instance_ids)?;
    let stop_type = match (&req.stop_type, req.force_reboot) {
        (Some(_), Some(_)) => {
            return Err(CloudError::ParameterCombination(
                "ForceReboot is deprecated and cannot be used with StopType; send StopType alone (HARD for a forced reboot)".into(),
            ))
        }
        (Some(s), None) => {
            one_of("StopType", s, STOP_TYPES)?;
            s.clone()
        }
        (None, Some(true)) => "HARD".into(),
        (None, _) => "SOFT".into(),
    };
    let opts = TransitionOpts {
        stop_type: Some(stop_type),
        ..Default::default()
    };
    inst::transition(app, ctx, &ids, Operation::Reboot, &opts).await?;
    Ok(Empty {})
}

/// `TerminateInstances`.
pub async fn terminate_instances(app: &App, ctx: &Ctx, req: TerminateInstancesRequest) -> R<Empty> {
    let ids = instance_ids(req.instance_ids)?;
    inst::transition(
        app,
        ctx,
        &ids,
        Operation::Terminate,
        &TransitionOpts::default(),
    )
    .await?;
    Ok(Empty {})
}

async fn one_instance_and_type(
    app: &App,
    ctx: &Ctx,
    ids_in: Option<Vec<String>>,
    ty: Option<String>,
) -> R<(
    gpucloud_store::instances::InstanceRow,
    &'static InstanceType,
)> {
    let list = instance_ids(ids_in)?;
    if list.len() != 1 {
        return Err(CloudError::TooManyValues {
            name: "InstanceIds".into(),
            max: 1,
            given: list.len(),
        });
    }
    let ty = ty.ok_or_else(|| CloudError::MissingParameter("InstanceType".into()))?;
    let new = type_check(&ty)?;
    let row = inst::load(app, &ctx.scope, &list).await?.remove(0);
    let old = cat::instance_type(&row.instance_type);
    let old_model = old.and_then(|o| o.gpu_model());
    match (old_model, new.gpu_model()) {
        (None, Some(_)) => {
            return Err(CloudError::InvalidTypeChange {
                id: row.instance_id.clone(),
                from: row.instance_type.clone(),
                to: new.name.to_string(),
                reason: gpucloud_core::error::TypeChangeRefusal::CpuToGpu,
            })
        }
        (Some(a), b) if Some(a) != b => {
            return Err(CloudError::InvalidTypeChange {
                id: row.instance_id.clone(),
                from: row.instance_type.clone(),
                to: new.name.to_string(),
                reason: gpucloud_core::error::TypeChangeRefusal::GpuFamilyChange,
            })
        }
        _ => {}
    }
    if row.instance_type == new.name {
        return Err(CloudError::value(
            "InstanceType",
            format!("instance {} is already {}", row.instance_id, new.name),
        ));
    }
    if !catalog::offers(app, &row.zone, new) {
        return Err(CloudError::InstanceTypeUnavailable {
            instance_type: new.name.to_string(),
            zone: row.zone.clone(),
        });
    }
    Ok((row, new))
}

/// `ResetInstancesType`.
pub async fn reset_instances_type(
    app: &App,
    ctx: &Ctx,
    req: ResetInstancesTypeRequest,
) -> R<Empty> {
    let (row, new) = one_instance_and_type(app, ctx, req.instance_ids, req.instance_type).await?;
    let group_hosts = match &row.placement_group_id {
        Some(g) => {
            let groups = app
                .store
                .groups(&ctx.scope, Some(std::slice::from_ref(g)))
                .await
                .map_err(internal)?;
            match groups.into_iter().next() {
                Some(group) => {
                    let others: Vec<String> = group
                        .instance_ids
                        .into_iter()
                        .filter(|i| *i != row.instance_id)
                        .collect();
                    let members = app
                        .store
                        .instances_get(&ctx.scope, &others)
                        .await
                        .map_err(internal)?;
                    Some((
                        group.group_type,
                        members.into_iter().filter_map(|m| m.host_id).collect(),
                    ))
                }
                None => None,
            }
        }
        None => None,
    };
    inst::resize(
        app,
        ctx,
        &row.instance_id,
        new,
        req.force_stop.unwrap_or(false),
        group_hosts,
    )
    .await?;
    Ok(Empty {})
}

/// `ModifyInstancesAttribute`.
pub async fn modify_instances_attribute(
    app: &App,
    ctx: &Ctx,
    req: ModifyInstancesAttributeRequest,
) -> R<Empty> {
    let ids = instance_ids(req.instance_ids)?;
    unsupported_if(&req.cam_role_name, "CamRoleName")?;
    unsupported_if(&req.cam_role_type, "CamRoleType")?;
    if req.enable_jumbo_frame == Some(true) {
        return Err(CloudError::Unsupported("jumbo frames".into()));
    }
    if req.instance_name.is_none()
        && req.host_name.is_none()
        && req.disable_api_termination.is_none()
        && req.user_data.is_none()
        && req.security_groups.is_none()
    {
        return Err(CloudError::MissingParameter(
            "one of InstanceName, HostName, DisableApiTermination, UserData, SecurityGroups".into(),
        ));
    }
    if let Some(n) = &req.instance_name {
        if n.chars().count() > validate::MAX_INSTANCE_NAME {
            return Err(CloudError::InstanceNameTooLong(validate::MAX_INSTANCE_NAME));
        }
    }
    if let Some(h) = &req.host_name {
        validate::host_name(h)?;
    }
    if let Some(u) = &req.user_data {
        validate::user_data(u)?;
    }
    if let Some(sg) = req.security_groups.iter().flatten().next() {
        return Err(CloudError::SecurityGroupNotFound(sg.clone()));
    }
    inst::load(app, &ctx.scope, &ids).await?;
    app.store
        .instances_modify(
            &ctx.scope,
            &ids,
            &gpucloud_store::instances::InstanceChanges {
                name: req.instance_name.clone(),
                host_name: req.host_name.clone(),
                disable_api_termination: req.disable_api_termination,
                user_data: req.user_data.clone(),
                security_group_ids: req.security_groups.clone(),
            },
        )
        .await
        .map_err(tx_error)?;
    Ok(Empty {})
}

/// `DescribeInstanceVncUrl`: a single-use WebSocket URL to a VM's serial
/// console, valid for [`console::TOKEN_TTL`] (see [`crate::console`]).
pub async fn describe_instance_vnc_url(
    app: &App,
    ctx: &Ctx,
    req: DescribeInstanceVncUrlRequest,
) -> R<DescribeInstanceVncUrlResponse> {
    let id = ids(
        "InstanceId",
        req.instance_id.map(|i| vec![i]),
        IdKind::Instance,
        true,
        1,
    )?
    .remove(0);
    let row = inst::load(app, &ctx.scope, std::slice::from_ref(&id))
        .await?
        .remove(0);
    if row.runtime != "qemu" {
        return Err(CloudError::ConsoleVmOnly {
            id,
            runtime: row.runtime,
        });
    }
    let action = "DescribeInstanceVncUrl";
    let host = match (row.state, row.host_id) {
        (InstanceState::Running, Some(h)) => h,
        (InstanceState::Stopped, _) => {
            return Err(CloudError::InstanceState {
                id,
                state: InstanceState::Stopped,
                action: action.into(),
            })
        }
        (state, _) => {
            return Err(CloudError::InstanceNotRunning {
                id,
                state,
                action: action.into(),
            })
        }
    };
    let token = console::new_token();
    app.store
        .console_session_create(
            &token,
            &console::new_session_id(),
            ctx.scope.app_id(),
            &id,
            &host,
            console::TOKEN_TTL.as_millis() as i64,
        )
        .await
        .map_err(internal)?;
    Ok(DescribeInstanceVncUrlResponse {
        instance_vnc_url: console::console_url(ctx.host.as_deref(), ctx.tls, &token),
    })
}

// ---------------------------------------------------------------------------
// Key pairs
// ---------------------------------------------------------------------------

fn key_pair_view(k: &gpucloud_store::keypairs::KeyPairRow, private: Option<String>) -> KeyPair {
    KeyPair {
        key_id: k.key_id.clone(),
        key_name: k.name.clone(),
        project_id: k.project_id,
        description: k.description.clone(),
        public_key: k.public_key.clone(),
        private_key: private,
        associated_instance_ids: k.instance_ids.clone(),
        created_time: gpucloud_store::iso(k.created_at),
        tags: k
            .tags
            .iter()
            .map(|(a, b)| Tag {
                key: Some(a.clone()),
                value: Some(b.clone()),
            })
            .collect(),
    }
}

fn rsa_key_pair(comment: &str) -> R<(String, String, String)> {
    use rsa::pkcs1::EncodeRsaPrivateKey;
    let private = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).map_err(|e| {
        tracing::error!(error = %e, "RSA key generation failed");
        CloudError::Internal
    })?;
    let pem = private
        .to_pkcs1_pem(rsa::pkcs8::LineEnding::LF)
        .map_err(|_| CloudError::Internal)?
        .to_string();
    let public = ssh_key::public::RsaPublicKey::try_from(private.to_public_key())
        .map_err(|_| CloudError::Internal)?;
    let pk = ssh_key::PublicKey::new(ssh_key::public::KeyData::Rsa(public), comment);
    let fp = pk.fingerprint(ssh_key::HashAlg::Sha256).to_string();
    let line = pk.to_openssh().map_err(|_| CloudError::Internal)?;
    Ok((pem, line, fp))
}

/// `CreateKeyPair`: a fresh RSA key pair; the private key is returned once and never stored.
pub async fn create_key_pair(
    app: &App,
    ctx: &Ctx,
    req: CreateKeyPairRequest,
) -> R<CreateKeyPairResponse> {
    let name = req.key_name.clone().ok_or(CloudError::KeyPairNameEmpty)?;
    validate::key_pair_name(&name)?;
    let project_id = project_check(Some(
        req.project_id
            .ok_or_else(|| CloudError::MissingParameter("ProjectId".into()))?,
    ))?;
    let tags = tags_of(&req.tag_specification, "keypair")?;
    let id = new_id(IdKind::KeyPair);
    let comment = id.clone();
    let (pem, public, fp) = tokio::task::spawn_blocking(move || rsa_key_pair(&comment))
        .await
        .map_err(|_| CloudError::Internal)??;
    app.store
        .key_pair_create(
            &ctx.scope,
            &NewKeyPair {
                key_id: id.clone(),
                name,
                project_id,
                public_key: public,
                fingerprint: fp,
                tags,
            },
        )
        .await
        .map_err(tx_error)?;
    let row = app
        .store
        .key_pairs(&ctx.scope, Some(std::slice::from_ref(&id)))
        .await
        .map_err(internal)?
        .pop()
        .ok_or(CloudError::Internal)?;
    Ok(CreateKeyPairResponse {
        key_pair: key_pair_view(&row, Some(pem)),
    })
}

/// `ImportKeyPair`.
pub async fn import_key_pair(
    app: &App,
    ctx: &Ctx,
    req: ImportKeyPairRequest,
) -> R<ImportKeyPairResponse> {
    let name = req.key_name.clone().ok_or(CloudError::KeyPairNameEmpty)?;
    validate::key_pair_name(&name)?;
    let project_id = project_check(Some(
        req.project_id
            .ok_or_else(|| CloudError::MissingParameter("ProjectId".into()))?,
    ))?;
    let text = req
        .public_key
        .clone()
        .ok_or_else(|| CloudError::MissingParameter("PublicKey".into()))?;
    if text.len() > 16 * 1024 {
        return Err(CloudError::PublicKeyMalformed(
            "it is longer than 16 KiB".into(),
        ));
    }
    let pk = ssh_key::PublicKey::from_openssh(text.trim())
        .map_err(|e| CloudError::PublicKeyMalformed(e.to_string()))?;
    let fp = pk.fingerprint(ssh_key::HashAlg::Sha256).to_string();
    let line = pk
        .to_openssh()
        .map_err(|e| CloudError::PublicKeyMalformed(e.to_string()))?;
    let tags = tags_of(&req.tag_specification, "keypair")?;
    let id = new_id(IdKind::KeyPair);
    app.store
        .key_pair_create(
            &ctx.scope,
            &NewKeyPair {
                key_id: id.clone(),
                name,
                project_id,
                public_key: line,
                fingerprint: fp,
                tags,
            },
        )
        .await
        .map_err(tx_error)?;
    Ok(ImportKeyPairResponse { key_id: id })
}

/// `DescribeKeyPairs`.
pub async fn describe_key_pairs(
    app: &App,
    ctx: &Ctx,
    req: DescribeKeyPairsRequest,
) -> R<DescribeKeyPairsResponse> {
    if req.key_ids.as_ref().is_some_and(|v| !v.is_empty())
        && req.filters.as_ref().is_some_and(|v| !v.is_empty())
    {
        return Err(CloudError::ParameterCombination(
            "KeyIds and Filters cannot be used together".into(),
        ));
    }
    let wanted = ids("KeyIds", req.key_ids, IdKind::KeyPair, false, 100)?;
    let f = filters(
        req.filters,
        &[
            "project-id",
            "key-name",
            "key-id",
            "tag-key",
            "tag-value",
            "tag:",
        ],
        10,
        5,
    )?;
    let (offset, limit) = paging(req.offset, req.limit, 100)?;
    let all = app
        .store
        .key_pairs(&ctx.scope, (!wanted.is_empty()).then_some(&wanted[..]))
        .await
        .map_err(internal)?;
    let kept: Vec<KeyPair> = all
        .iter()
        .filter(|k| {
            f.iter().all(|(n, v)| match n.as_str() {
                "project-id" => v
                    .iter()
                    .any(|p| p.parse::<i64>().ok() == Some(k.project_id)),
                "key-name" => v.iter().any(|x| k.name.contains(x.as_str())),
                "key-id" => v.contains(&k.key_id),
                _ => true,
            }) && tags_match(&k.tags, &f)
        })
        .map(|k| key_pair_view(k, None))
        .collect();
    let total = kept.len() as i64;
    Ok(DescribeKeyPairsResponse {
        total_count: total,
        key_pair_set: kept
            .into_iter()
            .skip(offset as usize)
            .take(limit as usize)
            .collect(),
    })
}

/// `DeleteKeyPairs`.
pub async fn delete_key_pairs(app: &App, ctx: &Ctx, req: DeleteKeyPairsRequest) -> R<Empty> {
    let keys = ids("KeyIds", req.key_ids, IdKind::KeyPair, true, 100)?;
    app.store
        .key_pairs_delete(&ctx.scope, &keys)
        .await
        .map_err(tx_error)?;
    Ok(Empty {})
}

/// `ModifyKeyPairAttribute`.
pub async fn modify_key_pair_attribute(
    app: &App,
    ctx: &Ctx,
    req: ModifyKeyPairAttributeRequest,
) -> R<Empty> {
    let id = ids(
        "KeyId",
        req.key_id.map(|k| vec![k]),
        IdKind::KeyPair,
        true,
        1,
    )?
    .remove(0);
    if let Some(n) = &req.key_name {
        validate::key_pair_name(n)?;
    }
    if req
        .description
        .as_ref()
        .is_some_and(|d| d.chars().count() > 60)
    {
        return Err(CloudError::value("Description", "at most 60 characters"));
    }
    app.store
        .key_pair_modify(
            &ctx.scope,
            &id,
            req.key_name.as_deref(),
            req.description.as_deref(),
        )
        .await
        .map_err(tx_error)?;
    Ok(Empty {})
}

async fn set_keys(
    app: &App,
    ctx: &Ctx,
    req: InstancesKeyPairsRequest,
    associate: bool,
) -> R<Empty> {
    let iids = instance_ids(req.instance_ids)?;
    let keys = ids("KeyIds", req.key_ids, IdKind::KeyPair, true, 100)?;
    let found = app
        .store
        .key_pairs(&ctx.scope, Some(&keys))
        .await
        .map_err(internal)?;
    let missing: Vec<String> = keys
        .iter()
        .filter(|k| !found.iter().any(|f| &f.key_id == *k))
        .cloned()
        .collect();
    if !missing.is_empty() {
        return Err(CloudError::KeyPairNotFound(missing));
    }
    let rows = inst::load(app, &ctx.scope, &iids).await?;
    login_changes_reach(app, ctx, &rows, "key pairs").await?;
    let rows = app
        .store
        .instances_set_keys(
            &ctx.scope,
            &iids,
            &keys,
            associate,
            req.force_stop.unwrap_or(false),
            &ctx.request_id,
        )
        .await
        .map_err(tx_error)?;
    inst::poke(app, &rows);
    Ok(Empty {})
}

/// Container instances have no password login.
fn no_container_password(rows: &[gpucloud_store::instances::InstanceRow]) -> R<()> {
    match rows.iter().find(|r| r.runtime == "container") {
        Some(c) => Err(CloudError::Unsupported(format!(
            "passwords on container instances ({} has no login; run commands in it with TAT RunCommand)",
            c.instance_id
        ))),
        None => Ok(()),
    }
}

/// Refuses login changes after launch (`what`: key pairs, passwords) for VM
/// instances whose image runs no guest agent: cloud-init applies them once
/// per instance, and without a guest agent nothing else can, so the change
/// would be reported done yet never reach the guest.
async fn login_changes_reach(
    app: &App,
    ctx: &Ctx,
    rows: &[gpucloud_store::instances::InstanceRow],
    what: &str,
) -> R<()> {
    for r in rows.iter().filter(|r| r.runtime == "qemu") {
        let image = app
            .store
            .image_visible(&ctx.scope, &r.image_id)
            .await
            .map_err(internal)?;
        if image.is_some_and(|i| !i.guest_agent) {
            return Err(CloudError::Unsupported(format!(
                "changing {what} of {} after launch: its image {} runs no guest agent to apply them; reinstall it with new LoginSettings (ResetInstance) instead",
                r.instance_id, r.image_id
            )));
        }
    }
    Ok(())
}

/// `ResetInstance`: reinstalls the system disk from the instance's image or
/// another of the same runtime, then runs the instance. Data disks stay.
/// Login settings, host name and user data apply to the fresh disk; left
/// out, the instance's own do.
pub async fn reset_instance(app: &App, ctx: &Ctx, req: ResetInstanceRequest) -> R<Empty> {
    let id = req
        .instance_id
        .ok_or_else(|| CloudError::MissingParameter("InstanceId".into()))?;
    let id = instance_ids(Some(vec![id]))?.remove(0);
    let row = inst::load(app, &ctx.scope, std::slice::from_ref(&id))
        .await?
        .remove(0);
    let image_id = req.image_id.clone().unwrap_or_else(|| row.image_id.clone());
    let image = images::visible(&app.store, &ctx.scope, &image_id).await?;
    if let Some(d) = &req.system_disk {
        // Well formed, and the disk the instance has: its type and size
        // (the disk keeps its ID).
        system_disk_of(&req.system_disk)?;
        let has_type = row.system_disk.get("DiskType").and_then(|t| t.as_str());
        let has_size = row.system_disk.get("DiskSize").and_then(|s| s.as_i64());
        let other_type = d.disk_type.as_deref().is_some_and(|t| Some(t) != has_type);
        let other_size = d.disk_size.is_some_and(|s| Some(s) != has_size);
        if other_type || other_size {
            return Err(CloudError::Unsupported(
                "changing the system disk's type or size on reinstall; leave SystemDisk out".into(),
            ));
        }
    }
    if let Some(h) = &req.host_name {
        validate::host_name(h)?;
    }
    if let Some(u) = &req.user_data {
        validate::user_data(u)?;
    }
    let replace_login = req
        .login_settings
        .as_ref()
        .is_some_and(|l| l.password.is_some() || l.key_ids.as_ref().is_some_and(|k| !k.is_empty()));
    let login = login_of(app, ctx, &req.login_settings).await?;
    if login.password.is_some() {
        no_container_password(std::slice::from_ref(&row))?;
    }
    let row = app
        .store
        .instance_reinstall(
            &ctx.scope,
            &id,
            &Reinstall {
                image_id: image.image_id.clone(),
                runtime: image.runtime.clone(),
                host_name: req.host_name,
                user_data: req.user_data,
                login: replace_login.then_some((login.password, login.key_ids)),
            },
            &ctx.request_id,
        )
        .await
        .map_err(tx_error)?;
    inst::poke(app, std::slice::from_ref(&row));
    Ok(Empty {})
}

/// `ResetInstancesPassword`: root's password, on stopped instances (or
/// running ones with `ForceStop`, which restart). Cloud images get it
/// through the guest agent at the next boot, since cloud-init sets
/// passwords once per instance.
pub async fn reset_instances_password(
    app: &App,
    ctx: &Ctx,
    req: ResetInstancesPasswordRequest,
) -> R<Empty> {
    let iids = instance_ids(req.instance_ids)?;
    let password = req
        .password
        .ok_or_else(|| CloudError::MissingParameter("Password".into()))?;
    validate::password(&password)?;
    match req.user_name.as_deref() {
        None | Some("root") => {}
        Some(other) => {
            return Err(CloudError::value(
                "UserName",
                format!("`{other}`: gpucloud's Linux images log in as root; reset root's password"),
            ))
        }
    }
    let rows = inst::load(app, &ctx.scope, &iids).await?;
    login_changes_reach(app, ctx, &rows, "passwords").await?;
    no_container_password(&rows)?;
    let rows = app
        .store
        .instances_change_login(
            &ctx.scope,
            &iids,
            &LoginChange::Password(&password),
            req.force_stop.unwrap_or(false),
            &ctx.request_id,
        )
        .await
        .map_err(tx_error)?;
    inst::poke(app, &rows);
    Ok(Empty {})
}

/// `AssociateInstancesKeyPairs`.
pub async fn associate_instances_key_pairs(
    app: &App,
    ctx: &Ctx,
    req: InstancesKeyPairsRequest,
) -> R<Empty> {
    set_keys(app, ctx, req, true).await
}

/// `DisassociateInstancesKeyPairs`.
pub async fn disassociate_instances_key_pairs(
    app: &App,
    ctx: &Ctx,
    req: InstancesKeyPairsRequest,
) -> R<Empty> {
    set_keys(app, ctx, req, false).await
}

// ---------------------------------------------------------------------------
// Spread placement groups
// ---------------------------------------------------------------------------

fn group_quota(kind: &str) -> i64 {
    match kind {
        "HOST" => 50,
        _ => 20,
    }
}

/// `CreateDisasterRecoverGroup`.
pub async fn create_disaster_recover_group(
    app: &App,
    ctx: &Ctx,
    req: CreateDisasterRecoverGroupRequest,
) -> R<CreateDisasterRecoverGroupResponse> {
    let name = req
        .name
        .clone()
        .ok_or_else(|| CloudError::MissingParameter("Name".into()))?;
    if name.chars().count() > 60 {
        return Err(CloudError::ValueTooLong {
            name: "Name".into(),
            max: 60,
        });
    }
    if name.is_empty() {
        return Err(CloudError::value("Name", "1 to 60 characters"));
    }
    let kind = req
        .r#type
        .clone()
        .ok_or_else(|| CloudError::MissingParameter("Type".into()))?;
    one_of("Type", &kind, &["HOST", "SW", "RACK"])?;
    let strategy = req.strategy.clone().unwrap_or_else(|| "SPREAD".into());
    if strategy == "PARTITION" {
        return Err(CloudError::Unsupported("the PARTITION strategy".into()));
    }
    one_of("Strategy", &strategy, &["SPREAD"])?;
    let affinity = req.affinity.unwrap_or(1);
    if !(1..=10).contains(&affinity) {
        return Err(CloudError::Range {
            name: "Affinity".into(),
            min: 1,
            max: 10,
            value: affinity,
        });
    }
    if affinity != 1 {
        return Err(CloudError::Unsupported("Affinity other than 1".into()));
    }
    if let Some(t) = &req.client_token {
        validate::client_token(t)?;
    }
    let tags = tags_of(&req.tag_specification, "ps")?;
    let g = gpucloud_store::groups::GroupRow {
        group_id: new_id(IdKind::PlacementGroup),
        name,
        quota: group_quota(&kind),
        group_type: kind,
        affinity,
        strategy,
        partition_count: 0,
        tags,
        created_at: chrono::Utc::now().timestamp_millis(),
        instance_ids: vec![],
    };
    let g = app
        .store
        .group_create(&ctx.scope, &g, req.client_token.as_deref())
        .await
        .map_err(tx_error)?;
    Ok(CreateDisasterRecoverGroupResponse {
        disaster_recover_group_id: g.group_id,
        r#type: g.group_type,
        name: g.name,
        cvm_quota_total: g.quota,
        current_num: g.instance_ids.len() as i64,
        create_time: gpucloud_store::datetime(g.created_at),
        strategy: g.strategy,
        partition_count: g.partition_count,
    })
}

/// `DescribeDisasterRecoverGroups`.
pub async fn describe_disaster_recover_groups(
    app: &App,
    ctx: &Ctx,
    req: DescribeDisasterRecoverGroupsRequest,
) -> R<DescribeDisasterRecoverGroupsResponse> {
    let wanted = ids(
        "DisasterRecoverGroupIds",
        req.disaster_recover_group_ids,
        IdKind::PlacementGroup,
        false,
        100,
    )?;
    let f = filters(req.filters, &["tag-key", "tag-value", "tag:"], 10, 5)?;
    let (offset, limit) = paging(req.offset, req.limit, 100)?;
    let all = app
        .store
        .groups(&ctx.scope, (!wanted.is_empty()).then_some(&wanted[..]))
        .await
        .map_err(internal)?;
    let kept: Vec<DisasterRecoverGroup> = all
        .into_iter()
        .filter(|g| {
            req.name
                .as_ref()
                .is_none_or(|n| g.name.contains(n.as_str()))
                && tags_match(&g.tags, &f)
        })
        .map(|g| DisasterRecoverGroup {
            disaster_recover_group_id: g.group_id,
            name: g.name,
            r#type: g.group_type,
            cvm_quota_total: g.quota,
            current_num: g.instance_ids.len() as i64,
            instance_ids: g.instance_ids,
            create_time: gpucloud_store::iso(g.created_at),
            affinity: g.affinity,
            strategy: g.strategy,
            partition_count: g.partition_count,
            tags: g
                .tags
                .into_iter()
                .map(|(k, v)| Tag {
                    key: Some(k),
                    value: Some(v),
                })
                .collect(),
        })
        .collect();
    let total = kept.len() as i64;
    Ok(DescribeDisasterRecoverGroupsResponse {
        disaster_recover_group_set: kept
            .into_iter()
            .skip(offset as usize)
            .take(limit as usize)
            .collect(),
        total_count: total,
    })
}

/// `DeleteDisasterRecoverGroups`.
pub async fn delete_disaster_recover_groups(
    app: &App,
    ctx: &Ctx,
    req: DeleteDisasterRecoverGroupsRequest,
) -> R<Empty> {
    let g = ids(
        "DisasterRecoverGroupIds",
        req.disaster_recover_group_ids,
        IdKind::PlacementGroup,
        true,
        10,
    )?;
    app.store
        .groups_delete(&ctx.scope, &g)
        .await
        .map_err(tx_error)?;
    Ok(Empty {})
}

// ---------------------------------------------------------------------------
// Prices
// ---------------------------------------------------------------------------

/// `InquiryPriceRunInstances`.
pub async fn inquiry_price_run_instances(
    app: &App,
    ctx: &Ctx,
    req: RunInstancesRequest,
) -> R<InquiryPriceResponse> {
    let Launch {
        t, charge, count, ..
    } = launch_of(app, ctx, &req).await?;
    system_disk_of(&req.system_disk)?;
    data_disks_of(&req.data_disks)?;
    // What RunInstances would refuse gets no price (public bandwidth is
    // priced once it is on sale: `internet_of` decides).
    internet_of(&req.internet_accessible)?;
    let bandwidth = req.internet_accessible.as_ref().and_then(|i| {
        let ct = i
            .internet_charge_type
            .clone()
            .unwrap_or_else(|| "TRAFFIC_POSTPAID_BY_HOUR".into());
        i.internet_max_bandwidth_out
            .filter(|b| *b > 0)
            .map(|b| (ct, b))
    });
    Ok(InquiryPriceResponse {
        price: catalog::price(
            t,
            charge.kind,
            charge.period,
            count,
            bandwidth.as_ref().map(|(c, b)| (c.as_str(), *b)),
        ),
    })
}

/// `InquiryPriceResetInstancesType`: what the instance costs in its new type
/// (pay-as-you-go: per hour; monthly: the difference for the months left).
pub async fn inquiry_price_reset_instances_type(
    app: &App,
    ctx: &Ctx,
    req: ResetInstancesTypeRequest,
) -> R<InquiryPriceResponse> {
    if req.force_stop.is_some() {
        return Err(CloudError::UnknownParameter("ForceStop".into()));
    }
    let (row, new) = one_instance_and_type(app, ctx, req.instance_ids, req.instance_type).await?;
    let charge = ChargeType::parse(&row.charge_type).unwrap_or(ChargeType::PostpaidByHour);
    if charge != ChargeType::Prepaid {
        return Ok(InquiryPriceResponse {
            price: catalog::price(new, charge, 1, 1, None),
        });
    }
    let now = chrono::Utc::now().timestamp_millis();
    let months_left = row
        .expired_at
        .map_or(1, |e| {
            ((e - now).max(0) as f64 / (30.0 * 24.0 * 3600.0 * 1000.0)).ceil() as i64
        })
        .max(1);
    let old = cat::instance_type(&row.instance_type).ok_or(CloudError::Internal)?;
    let diff = |t: &InstanceType| pricing::monthly(t) * months_left as f64;
    let delta = pricing::round2(diff(new) - diff(old));
    Ok(InquiryPriceResponse {
        price: Price {
            instance_price: ItemPrice {
                original_price: Some(delta),
                discount_price: Some(delta),
                discount: Some(100.0),
                ..Default::default()
            },
            bandwidth_price: None,
        },
    })
}
