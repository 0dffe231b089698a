//! Routing of `(service, version, action)` to handlers, and parameter decoding
//! with errors that name the offending parameter.

use crate::api::front::{Call, Ctx};
use crate::api::{cvm, decode, tat};
use crate::App;
use gpucloud_core::CloudError;
use serde_json::Value;

/// Every action gpucloud serves: `(service, version, action)`.
pub const ACTIONS: &[(&str, &str, &str)] = &[
    ("cvm", "2017-03-12", "DescribeRegions"),
    ("cvm", "2017-03-12", "DescribeZones"),
    ("cvm", "2017-03-12", "DescribeInstanceTypeConfigs"),
    ("cvm", "2017-03-12", "DescribeZoneInstanceConfigInfos"),
    ("cvm", "2017-03-12", "DescribeImages"),
    ("cvm", "2017-03-12", "RunInstances"),
    ("cvm", "2017-03-12", "DescribeInstances"),
    ("cvm", "2017-03-12", "DescribeInstancesStatus"),
    ("cvm", "2017-03-12", "StartInstances"),
    ("cvm", "2017-03-12", "StopInstances"),
    ("cvm", "2017-03-12", "RebootInstances"),
    ("cvm", "2017-03-12", "TerminateInstances"),
    ("cvm", "2017-03-12", "ResetInstancesType"),
    ("cvm", "2017-03-12", "ModifyInstancesAttribute"),
    ("cvm", "2017-03-12", "CreateKeyPair"),
    ("cvm", "2017-03-12", "ImportKeyPair"),
    ("cvm", "2017-03-12", "DescribeKeyPairs"),
    ("cvm", "2017-03-12", "DeleteKeyPairs"),
    ("cvm", "2017-03-12", "ModifyKeyPairAttribute"),
    ("cvm", "2017-03-12", "AssociateInstancesKeyPairs"),
    ("cvm", "2017-03-12", "DisassociateInstancesKeyPairs"),
    ("cvm", "2017-03-12", "ResetInstancesPassword"),
    ("cvm", "2017-03-12", "ResetInstance"),
    ("cvm", "2017-03-12", "CreateDisasterRecoverGroup"),
    ("cvm", "2017-03-12", "DescribeDisasterRecoverGroups"),
    ("cvm", "2017-03-12", "DeleteDisasterRecoverGroups"),
    ("cvm", "2017-03-12", "InquiryPriceRunInstances"),
    ("cvm", "2017-03-12", "InquiryPriceResetInstancesType"),
    ("cvm", "2017-03-12", "DescribeInstanceVncUrl"),
    ("tat", "2020-10-28", "RunCommand"),
    ("tat", "2020-10-28", "DescribeInvocations"),
    ("tat", "2020-10-28", "DescribeInvocationTasks"),
    ("tat", "2020-10-28", "CreateCommand"),
    ("tat", "2020-10-28", "DescribeCommands"),
    ("tat", "2020-10-28", "ModifyCommand"),
    ("tat", "2020-10-28", "DeleteCommand"),
    ("tat", "2020-10-28", "DeleteCommands"),
    ("tat", "2020-10-28", "InvokeCommand"),
    ("tat", "2020-10-28", "DescribeAutomationAgentStatus"),
];

/// Whether `s` is a service gpucloud serves.
pub fn is_service(s: &str) -> bool {
    ACTIONS.iter().any(|(svc, _, _)| *svc == s)
}

/// The service of an action (for v1 requests, which name no service).
pub fn service_of(version: &str, action: &str) -> Option<&'static str> {
    ACTIONS
        .iter()
        .find(|(_, v, a)| *v == version && *a == action)
        .map(|(s, _, _)| *s)
}

/// Regional services check `X-TC-Region`.
fn check_region(app: &App, ctx: &Ctx) -> Result<(), CloudError> {
    match &ctx.region {
        Some(r) if *r != app.cfg.region => Err(CloudError::UnsupportedRegion {
            region: r.clone(),
            served: app.cfg.region.clone(),
        }),
        _ => Ok(()),
    }
}

macro_rules! route {
    ($app:expr, $ctx:expr, $params:expr, $handler:path) => {{
        let req = decode($params)?;
        let resp = $handler($app, $ctx, req).await?;
        serde_json::to_value(resp).map_err(|e| {
            tracing::error!(error = %e, "response serialisation failed");
            CloudError::Internal
        })
    }};
}

/// Runs one authenticated call.
pub async fn dispatch(app: &App, ctx: &Ctx, call: &Call) -> Result<Value, CloudError> {
    if !is_service(&call.service) {
        return Err(CloudError::NoSuchProduct(call.service.clone()));
    }
    if !ACTIONS
        .iter()
        .any(|(s, v, _)| *s == call.service && *v == call.version)
    {
        return Err(CloudError::NoSuchVersion {
            service: call.service.clone(),
            version: call.version.clone(),
        });
    }
    let p = call.params.clone();
    match (call.service.as_str(), call.action.as_str()) {
        ("cvm", action) => {
            check_region(app, ctx)?;
            match action {
                "DescribeRegions" => route!(app, ctx, p, cvm::describe_regions),
                "DescribeZones" => route!(app, ctx, p, cvm::describe_zones),
                "DescribeInstanceTypeConfigs" => {
                    route!(app, ctx, p, cvm::describe_instance_type_configs)
                }
                "DescribeZoneInstanceConfigInfos" => {
                    route!(app, ctx, p, cvm::describe_zone_instance_config_infos)
                }
                "DescribeImages" => route!(app, ctx, p, cvm::describe_images),
                "RunInstances" => route!(app, ctx, p, cvm::run_instances),
                "DescribeInstances" => route!(app, ctx, p, cvm::describe_instances),
                "DescribeInstancesStatus" => route!(app, ctx, p, cvm::describe_instances_status),
                "StartInstances" => route!(app, ctx, p, cvm::start_instances),
                "StopInstances" => route!(app, ctx, p, cvm::stop_instances),
                "RebootInstances" => route!(app, ctx, p, cvm::reboot_instances),
                "TerminateInstances" => route!(app, ctx, p, cvm::terminate_instances),
                "ResetInstancesType" => route!(app, ctx, p, cvm::reset_instances_type),
                "ModifyInstancesAttribute" => route!(app, ctx, p, cvm::modify_instances_attribute),
                "CreateKeyPair" => route!(app, ctx, p, cvm::create_key_pair),
                "ImportKeyPair" => route!(app, ctx, p, cvm::import_key_pair),
                "DescribeKeyPairs" => route!(app, ctx, p, cvm::describe_key_pairs),
                "DeleteKeyPairs" => route!(app, ctx, p, cvm::delete_key_pairs),
                "ModifyKeyPairAttribute" => route!(app, ctx, p, cvm::modify_key_pair_attribute),
                "AssociateInstancesKeyPairs" => {
                    route!(app, ctx, p, cvm::associate_instances_key_pairs)
                }
                "ResetInstancesPassword" => route!(app, ctx, p, cvm::reset_instances_password),
                "ResetInstance" => route!(app, ctx, p, cvm::reset_instance),
                "DisassociateInstancesKeyPairs" => {
                    route!(app, ctx, p, cvm::disassociate_instances_key_pairs)
                }
                "CreateDisasterRecoverGroup" => {
                    route!(app, ctx, p, cvm::create_disaster_recover_group)
                }
                "DescribeDisasterRecoverGroups" => {
                    route!(app, ctx, p, cvm::describe_disaster_recover_groups)
                }
                "DeleteDisasterRecoverGroups" => {
                    route!(app, ctx, p, cvm::delete_disaster_recover_groups)
                }
                "InquiryPriceRunInstances" => route!(app, ctx, p, cvm::inquiry_price_run_instances),
                "InquiryPriceResetInstancesType" => {
                    route!(app, ctx, p, cvm::inquiry_price_reset_instances_type)
                }
                "DescribeInstanceVncUrl" => route!(app, ctx, p, cvm::describe_instance_vnc_url),
                _ => Err(invalid_action(call)),
            }
        }
        ("tat", action) => {
            check_region(app, ctx)?;
            match action {
                "RunCommand" => route!(app, ctx, p, tat::run_command),
                "DescribeInvocations" => route!(app, ctx, p, tat::describe_invocations),
                "DescribeInvocationTasks" => route!(app, ctx, p, tat::describe_invocation_tasks),
                "CreateCommand" => route!(app, ctx, p, tat::create_command),
                "DescribeCommands" => route!(app, ctx, p, tat::describe_commands),
                "ModifyCommand" => route!(app, ctx, p, tat::modify_command),
                "DeleteCommand" => route!(app, ctx, p, tat::delete_command),
                "DeleteCommands" => route!(app, ctx, p, tat::delete_commands),
                "InvokeCommand" => route!(app, ctx, p, tat::invoke_command),
                "DescribeAutomationAgentStatus" => {
                    route!(app, ctx, p, tat::describe_automation_agent_status)
                }
                _ => Err(invalid_action(call)),
            }
        }
        _ => Err(invalid_action(call)),
    }
}

fn invalid_action(call: &Call) -> CloudError {
    CloudError::InvalidAction {
        service: call.service.clone(),
        version: call.version.clone(),
        action: call.action.clone(),
    }
}
