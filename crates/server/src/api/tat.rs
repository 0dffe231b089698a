//! TAT 2020-10-28 actions: run commands inside instances without logging in.

use crate::api::front::Ctx;
use crate::api::params::{filters, paging, values_of};
use crate::app::internal;
use crate::App;
use base64::Engine as _;
use gpucloud_api_types::ids::{is_valid, new_id, IdKind};
use gpucloud_api_types::tat::*;
use gpucloud_core::lifecycle::InstanceState;
use gpucloud_core::CloudError;
use gpucloud_store::commands::{InvocationRow, NewInvocation, TaskQuery, TaskRow};

type R<T> = Result<T, CloudError>;

/// Largest base64 content.
const MAX_CONTENT: usize = 64 * 1024;

fn ids_of(name: &str, v: Option<Vec<String>>, kind: IdKind, max: usize) -> R<Vec<String>> {
    let list = v.unwrap_or_default();
    if list.len() > max {
        return Err(CloudError::TooManyValues {
            name: name.into(),
            max,
            given: list.len(),
        });
    }
    let mut out: Vec<String> = Vec::new();
    for i in list {
        if !is_valid(kind, &i) {
            return Err(match kind {
                IdKind::Instance => CloudError::TatInvalidInstanceId(i),
                IdKind::Invocation => CloudError::TatInvalidInvocationId(i),
                IdKind::InvocationTask => CloudError::TatInvalidInvocationTaskId(i),
                _ => CloudError::value(name, format!("`{i}` is not a valid ID")),
            });
        }
        if !out.contains(&i) {
            out.push(i);
        }
    }
    Ok(out)
}

fn valid_username(u: &str) -> bool {
    let b = u.as_bytes();
    !b.is_empty()
        && b.len() <= 32
        && (b[0].is_ascii_lowercase() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || *c == b'-')
}

fn valid_command_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 60
        && n.chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// `RunCommand`.
pub async fn run_command(app: &App, ctx: &Ctx, req: RunCommandRequest) -> R<RunCommandResponse> {
    let content = req
        .content
        .clone()
        .ok_or_else(|| CloudError::MissingParameter("Content".into()))?;
    if content.len() > MAX_CONTENT {
        return Err(CloudError::TatInvalidContent(format!(
            "it is {} bytes long",
            content.len()
        )));
    }
    let script = base64::engine::general_purpose::STANDARD
        .decode(content.trim())
        .map_err(|e| CloudError::TatInvalidContent(format!("it is not base64 ({e})")))?;
    if script.iter().all(u8::is_ascii_whitespace) {
        return Err(CloudError::TatInvalidContent("the script is empty".into()));
    }
    if req.instance_ids.as_ref().is_none_or(|v| v.is_empty()) {
        return Err(CloudError::MissingParameter("InstanceIds".into()));
    }
    let ids = ids_of(
        "InstanceIds",
        req.instance_ids.clone(),
        IdKind::Instance,
        200,
    )?;
    let ctype = req.command_type.clone().unwrap_or_else(|| "SHELL".into());
    match ctype.as_str() {
        "SHELL" => {}
        "POWERSHELL" | "BAT" => return Err(CloudError::TatUnsupportedCommandType(ctype)),
        other => {
            return Err(CloudError::value(
                "CommandType",
                format!("`{other}` is not one of SHELL, POWERSHELL"),
            ))
        }
    }
    let wd = req
        .working_directory
        .clone()
        .unwrap_or_else(|| "/root".into());
    if !wd.starts_with('/') || wd.len() > 200 || wd.contains('\0') {
        return Err(CloudError::TatInvalidWorkingDirectory(wd));
    }
    let timeout = req.timeout.unwrap_or(60);
    if !(1..=86_400).contains(&timeout) {
        return Err(CloudError::Range {
            name: "Timeout".into(),
            min: 1,
            max: 86_400,
            value: timeout,
        });
    }
    let user = req.username.clone().unwrap_or_else(|| "root".into());
    if !valid_username(&user) {
        return Err(CloudError::TatInvalidUsername(user));
    }
    if let Some(n) = &req.command_name {
        if !valid_command_name(n) {
            return Err(CloudError::TatInvalidCommandName(n.clone()));
        }
    }
    if req
        .description
        .as_ref()
        .is_some_and(|d| d.chars().count() > 120)
    {
        return Err(CloudError::value("Description", "at most 120 characters"));
    }
    if req.enable_parameter == Some(true)
        || req.parameters.is_some()
        || req.default_parameters.is_some()
        || req.default_parameter_confs.is_some()
    {
        return Err(CloudError::Unsupported("custom command parameters".into()));
    }
    if req.output_cos_bucket_url.is_some() || req.output_cos_key_prefix.is_some() {
        return Err(CloudError::Unsupported(
            "uploading command output to COS".into(),
        ));
    }
    let rows = app
        .store
        .instances_get(&ctx.scope, &ids)
        .await
        .map_err(internal)?;
    let missing: Vec<String> = ids
        .iter()
        .filter(|i| !rows.iter().any(|r| &r.instance_id == *i))
        .cloned()
        .collect();
    if !missing.is_empty() {
        return Err(CloudError::TatInstanceNotFound(missing));
    }
    let mut tasks = Vec::with_capacity(rows.len());
    for r in &rows {
        // What the image lacks no state change will bring: said first.
        let image = app
            .store
            .image_visible(&ctx.scope, &r.image_id)
            .await
            .map_err(internal)?;
        if image.as_ref().is_some_and(|i| !i.guest_agent) {
            return Err(CloudError::TatAgentNotInstalled {
                id: r.instance_id.clone(),
                reason: format!(
                    "its image {} runs no QEMU guest agent, which commands need; use an image with qemu-guest-agent installed, or log in over SSH",
                    r.image_id
                ),
            });
        }
        if r.state != InstanceState::Running {
            return Err(CloudError::TatInstanceNotRunning(r.instance_id.clone()));
        }
        let host_id = r.host_id.clone().unwrap_or_default();
        let host = app
            .store
            .host_get(&host_id)
            .await
            .map_err(internal)?
            .ok_or_else(|| CloudError::TatAgentOffline(r.instance_id.clone()))?;
        if host.kind == "sim" || r.runtime == "sim" {
            return Err(CloudError::TatAgentNotInstalled {
                id: r.instance_id.clone(),
                reason: "it runs on a simulated host, which has no command agent".into(),
            });
        }
        if host.state == gpucloud_store::hosts::state::UNREACHABLE {
            return Err(CloudError::TatAgentOffline(r.instance_id.clone()));
        }
        tasks.push((
            new_id(IdKind::InvocationTask),
            r.instance_id.clone(),
            host_id,
        ));
    }
    let inv = NewInvocation {
        command_id: new_id(IdKind::Command),
        invocation_id: new_id(IdKind::Invocation),
        name: req.command_name.clone().unwrap_or_default(),
        description: req.description.clone().unwrap_or_default(),
        content,
        command_type: ctype,
        working_directory: wd,
        timeout_s: timeout,
        username: user,
        saved: req.save_command.unwrap_or(false),
        tasks,
    };
    app.store
        .invocation_create(&ctx.scope, &inv)
        .await
        .map_err(internal)?;
    for (_, _, h) in &inv.tasks {
        app.gateway.poke(h);
    }
    Ok(RunCommandResponse {
        command_id: inv.command_id,
        invocation_id: inv.invocation_id,
    })
}

fn time(ms: Option<i64>) -> String {
    ms.map(gpucloud_store::iso).unwrap_or_default()
}

fn document(t: &gpucloud_store::commands::CommandRow) -> CommandDocument {
    CommandDocument {
        content: t.content.clone(),
        command_type: t.command_type.clone(),
        timeout: t.timeout_s,
        working_directory: t.working_directory.clone(),
        username: t.username.clone(),
        output_cos_bucket_url: String::new(),
        output_cos_key_prefix: String::new(),
    }
}

fn invocation_view(i: &InvocationRow) -> Invocation {
    let (start, end) = i.times();
    let updated = i
        .tasks
        .iter()
        .map(|t| t.updated_at)
        .max()
        .unwrap_or(i.created_at);
    Invocation {
        invocation_id: i.invocation_id.clone(),
        command_id: i.command.command_id.clone(),
        command_name: i.command.name.clone(),
        invocation_status: i.status().into(),
        invocation_task_basic_info_set: i
            .tasks
            .iter()
            .map(|t| InvocationTaskBasicInfo {
                invocation_task_id: t.task_id.clone(),
                task_status: t.status.clone(),
                instance_id: t.instance_id.clone(),
            })
            .collect(),
        description: i.description.clone(),
        start_time: time(start),
        end_time: time(end),
        created_time: gpucloud_store::iso(i.created_at),
        updated_time: gpucloud_store::iso(updated),
        parameters: "{}".into(),
        default_parameters: "{}".into(),
        instance_kind: "CVM".into(),
        username: i.command.username.clone(),
        invocation_source: "USER".into(),
        command_content: i.command.content.clone(),
        command_type: i.command.command_type.clone(),
        timeout: i.command.timeout_s,
        working_directory: i.command.working_directory.clone(),
        output_cos_bucket_url: String::new(),
        output_cos_key_prefix: String::new(),
    }
}

fn task_view(t: &TaskRow, hide_output: bool) -> InvocationTask {
    InvocationTask {
        invocation_id: t.invocation_id.clone(),
        invocation_task_id: t.task_id.clone(),
        command_id: t.command.command_id.clone(),
        task_status: t.status.clone(),
        instance_id: t.instance_id.clone(),
        task_result: TaskResult {
            exit_code: t.exit_code.unwrap_or(0),
            output: if hide_output {
                String::new()
            } else {
                t.output.clone()
            },
            exec_start_time: time(t.exec_start),
            exec_end_time: time(t.exec_end),
            dropped: t.dropped,
            output_url: String::new(),
            output_upload_cos_error_info: String::new(),
        },
        start_time: time(t.exec_start),
        end_time: time(t.exec_end),
        created_time: gpucloud_store::iso(t.created_at),
        updated_time: gpucloud_store::iso(t.updated_at),
        command_document: document(&t.command),
        error_info: t.error_info.clone(),
        invocation_source: "USER".into(),
        command_name: t.command.name.clone(),
    }
}

/// `DescribeInvocations`.
pub async fn describe_invocations(
    app: &App,
    ctx: &Ctx,
    req: DescribeInvocationsRequest,
) -> R<DescribeInvocationsResponse> {
    if req.invocation_ids.as_ref().is_some_and(|v| !v.is_empty())
        && req.filters.as_ref().is_some_and(|v| !v.is_empty())
    {
        return Err(CloudError::ParameterCombination(
            "InvocationIds and Filters cannot be used together".into(),
        ));
    }
    let mut wanted = ids_of("InvocationIds", req.invocation_ids, IdKind::Invocation, 100)?;
    let f = filters(
        req.filters,
        &[
            "invocation-id",
            "command-id",
            "instance-kind",
            "command-created-by",
        ],
        10,
        100,
    )?;
    let (offset, limit) = paging(req.offset, req.limit, 100)?;
    let fi: Vec<String> = values_of(&f, "invocation-id")
        .into_iter()
        .cloned()
        .collect();
    wanted.extend(ids_of(
        "Filters.invocation-id",
        Some(fi),
        IdKind::Invocation,
        100,
    )?);
    let commands: Vec<String> = values_of(&f, "command-id").into_iter().cloned().collect();
    let kinds = values_of(&f, "instance-kind");
    if !kinds.is_empty() && !kinds.iter().any(|k| *k == "CVM") {
        return Ok(DescribeInvocationsResponse {
            total_count: 0,
            invocation_set: vec![],
        });
    }
    let (total, rows) = app
        .store
        .invocations(&ctx.scope, &wanted, &commands, offset, limit)
        .await
        .map_err(internal)?;
    Ok(DescribeInvocationsResponse {
        total_count: total,
        invocation_set: rows.iter().map(invocation_view).collect(),
    })
}

/// `DescribeInvocationTasks`. Output is hidden unless `HideOutput` is false,
/// as in Tencent's API.
pub async fn describe_invocation_tasks(
    app: &App,
    ctx: &Ctx,
    req: DescribeInvocationTasksRequest,
) -> R<DescribeInvocationTasksResponse> {
    if req
        .invocation_task_ids
        .as_ref()
        .is_some_and(|v| !v.is_empty())
        && req.filters.as_ref().is_some_and(|v| !v.is_empty())
    {
        return Err(CloudError::ParameterCombination(
            "InvocationTaskIds and Filters cannot be used together".into(),
        ));
    }
    let task_ids = ids_of(
        "InvocationTaskIds",
        req.invocation_task_ids,
        IdKind::InvocationTask,
        100,
    )?;
    let f = filters(
        req.filters,
        &[
            "invocation-id",
            "invocation-task-id",
            "instance-id",
            "command-id",
        ],
        10,
        100,
    )?;
    let (offset, limit) = paging(req.offset, req.limit, 100)?;
    let get = |n: &str| -> Vec<String> { values_of(&f, n).into_iter().cloned().collect() };
    let mut q = TaskQuery {
        task_ids,
        invocation_ids: ids_of(
            "Filters.invocation-id",
            Some(get("invocation-id")),
            IdKind::Invocation,
            100,
        )?,
        instance_ids: ids_of(
            "Filters.instance-id",
            Some(get("instance-id")),
            IdKind::Instance,
            100,
        )?,
        command_ids: get("command-id"),
        offset,
        limit,
    };
    q.task_ids.extend(ids_of(
        "Filters.invocation-task-id",
        Some(get("invocation-task-id")),
        IdKind::InvocationTask,
        100,
    )?);
    let (total, rows) = app.store.tasks(&ctx.scope, &q).await.map_err(internal)?;
    let hide = req.hide_output.unwrap_or(true);
    Ok(DescribeInvocationTasksResponse {
        total_count: total,
        invocation_task_set: rows.iter().map(|t| task_view(t, hide)).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_username("root"));
        assert!(valid_username("ubuntu"));
        assert!(!valid_username("Root"));
        assert!(!valid_username("a b"));
        assert!(!valid_username(""));
        assert!(valid_command_name("check-gpu_1.0"));
        assert!(!valid_command_name("rm -rf"));
    }
}
