//! TAT 2020-10-28 actions: run commands inside instances without logging in.

use crate::api::front::Ctx;
use crate::api::params::{filters, paging, values_of};
use crate::app::{internal, tx_error};
use crate::App;
use base64::Engine as _;
use gpucloud_api_types::cvm::Empty;
use gpucloud_api_types::ids::{is_valid, new_id, IdKind};
use gpucloud_api_types::tat::*;
use gpucloud_core::lifecycle::InstanceState;
use gpucloud_core::CloudError;
use gpucloud_store::commands::{
    CommandChanges, CommandQuery, CommandRow, InvocationRow, NewInvocation, SavedCommand,
    TaskQuery, TaskRow,
};

type R<T> = Result<T, CloudError>;

/// Largest base64 content.
const MAX_CONTENT: usize = 64 * 1024;
/// Saved commands a tenant may keep (Tencent's default quota).
const MAX_COMMANDS: i64 = 500;

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
                IdKind::Command => CloudError::TatInvalidCommandId(i),
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

/// Checks a base64 script (`Content`).
fn content_check(content: &str) -> R<()> {
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
    Ok(())
}

fn command_type_check(t: &str) -> R<()> {
    match t {
        "SHELL" => Ok(()),
        "POWERSHELL" | "BAT" => Err(CloudError::TatUnsupportedCommandType(t.to_string())),
        other => Err(CloudError::value(
            "CommandType",
            format!("`{other}` is not one of SHELL, POWERSHELL"),
        )),
    }
}

fn working_directory_check(wd: &str) -> R<()> {
    // An absolute, plain path inside the instance: no `.`/`..` steps, and
    // nothing under /proc (a /proc/self/fd/N working directory is how old
    // runc releases let a process out to the host's file system).
    let plain = wd.split('/').skip(1).all(|c| c != "." && c != "..");
    let under_proc = wd == "/proc" || wd.starts_with("/proc/");
    if !wd.starts_with('/') || wd.len() > 200 || wd.contains('\0') || !plain || under_proc {
        return Err(CloudError::TatInvalidWorkingDirectory(wd.to_string()));
    }
    Ok(())
}

fn timeout_check(t: i64) -> R<()> {
    if !(1..=86_400).contains(&t) {
        return Err(CloudError::Range {
            name: "Timeout".into(),
            min: 1,
            max: 86_400,
            value: t,
        });
    }
    Ok(())
}

fn username_check(u: &str) -> R<()> {
    if !valid_username(u) {
        return Err(CloudError::TatInvalidUsername(u.to_string()));
    }
    Ok(())
}

fn command_name_check(n: &str) -> R<()> {
    if !valid_command_name(n) {
        return Err(CloudError::TatInvalidCommandName(n.to_string()));
    }
    Ok(())
}

fn description_check(d: &str) -> R<()> {
    if d.chars().count() > 120 {
        return Err(CloudError::value("Description", "at most 120 characters"));
    }
    Ok(())
}

/// Refuses what gpucloud does not offer: custom parameters and uploading
/// output to COS.
fn extras_check(parameters: bool, cos: bool) -> R<()> {
    if parameters {
        return Err(CloudError::Unsupported("custom command parameters".into()));
    }
    if cos {
        return Err(CloudError::Unsupported(
            "uploading command output to COS".into(),
        ));
    }
    Ok(())
}

/// The TAT Describe actions take IDs or filters, not both.
fn ids_or_filters(
    name: &'static str,
    ids: &Option<Vec<String>>,
    filters: &Option<Vec<gpucloud_api_types::Filter>>,
) -> R<()> {
    if ids.as_ref().is_some_and(|v| !v.is_empty())
        && filters.as_ref().is_some_and(|v| !v.is_empty())
    {
        return Err(CloudError::TatConflictParameter(name, "Filters"));
    }
    Ok(())
}

/// Filters of the TAT Describe actions; too many values in one is TAT's own
/// `LimitExceeded.FilterValueExceeded`.
fn tat_filters(
    values: Option<Vec<gpucloud_api_types::Filter>>,
    allowed: &[&str],
    max_values: usize,
) -> R<Vec<(String, Vec<String>)>> {
    filters(values, allowed, 10, max_values).map_err(|e| match e {
        CloudError::FilterValuesLimit { name, max, given } => {
            CloudError::TatFilterValuesLimit { name, max, given }
        }
        other => other,
    })
}

/// The tasks of a new invocation, one per instance: `(task, instance, host)`.
/// Every instance must be the caller's, run an image with a command agent,
/// be `RUNNING`, and sit on a reachable host.
async fn tasks_for(
    app: &App,
    ctx: &Ctx,
    instance_ids: Option<Vec<String>>,
) -> R<Vec<(String, String, String)>> {
    if instance_ids.as_ref().is_none_or(|v| v.is_empty()) {
        return Err(CloudError::MissingParameter("InstanceIds".into()));
    }
    let ids = ids_of("InstanceIds", instance_ids, IdKind::Instance, 200)?;
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
    Ok(tasks)
}

/// Stores an invocation and wakes the hosts that run it.
async fn invoke(app: &App, ctx: &Ctx, inv: &NewInvocation) -> R<()> {
    app.store
        .invocation_create(&ctx.scope, inv)
        .await
        .map_err(tx_error)?;
    for (_, _, h) in &inv.tasks {
        app.gateway.poke(h);
    }
    Ok(())
}

/// `RunCommand`.
pub async fn run_command(app: &App, ctx: &Ctx, req: RunCommandRequest) -> R<RunCommandResponse> {
    let content = req
        .content
        .clone()
        .ok_or_else(|| CloudError::MissingParameter("Content".into()))?;
    content_check(&content)?;
    if req.instance_ids.as_ref().is_none_or(|v| v.is_empty()) {
        return Err(CloudError::MissingParameter("InstanceIds".into()));
    }
    ids_of(
        "InstanceIds",
        req.instance_ids.clone(),
        IdKind::Instance,
        200,
    )?;
    let ctype = req.command_type.clone().unwrap_or_else(|| "SHELL".into());
    command_type_check(&ctype)?;
    let wd = req
        .working_directory
        .clone()
        .unwrap_or_else(|| "/root".into());
    working_directory_check(&wd)?;
    let timeout = req.timeout.unwrap_or(60);
    timeout_check(timeout)?;
    let user = req.username.clone().unwrap_or_else(|| "root".into());
    username_check(&user)?;
    if let Some(n) = &req.command_name {
        command_name_check(n)?;
    }
    if let Some(d) = &req.description {
        description_check(d)?;
    }
    extras_check(
        req.enable_parameter == Some(true)
            || req.parameters.is_some()
            || req.default_parameters.is_some()
            || req.default_parameter_confs.is_some(),
        req.output_cos_bucket_url.is_some() || req.output_cos_key_prefix.is_some(),
    )?;
    let saved = req.save_command.unwrap_or(false);
    if saved && req.command_name.as_ref().is_none_or(|n| n.is_empty()) {
        return Err(CloudError::MissingParameter(
            "CommandName (SaveCommand keeps the command in the library under a name)".into(),
        ));
    }
    let tasks = tasks_for(app, ctx, req.instance_ids.clone()).await?;
    let inv = NewInvocation {
        new_command: true,
        command_id: new_id(IdKind::Command),
        invocation_id: new_id(IdKind::Invocation),
        name: req.command_name.clone().unwrap_or_default(),
        description: req.description.clone().unwrap_or_default(),
        content,
        command_type: ctype,
        working_directory: wd,
        timeout_s: timeout,
        username: user,
        saved,
        library_max: MAX_COMMANDS,
        tasks,
    };
    invoke(app, ctx, &inv).await?;
    Ok(RunCommandResponse {
        command_id: inv.command_id,
        invocation_id: inv.invocation_id,
    })
}

/// `CreateCommand`.
pub async fn create_command(
    app: &App,
    ctx: &Ctx,
    req: CreateCommandRequest,
) -> R<CreateCommandResponse> {
    let name = req
        .command_name
        .clone()
        .ok_or_else(|| CloudError::MissingParameter("CommandName".into()))?;
    command_name_check(&name)?;
    let content = req
        .content
        .clone()
        .ok_or_else(|| CloudError::MissingParameter("Content".into()))?;
    content_check(&content)?;
    let description = req.description.clone().unwrap_or_default();
    description_check(&description)?;
    let ctype = req.command_type.clone().unwrap_or_else(|| "SHELL".into());
    command_type_check(&ctype)?;
    let wd = req
        .working_directory
        .clone()
        .unwrap_or_else(|| "/root".into());
    working_directory_check(&wd)?;
    let timeout = req.timeout.unwrap_or(60);
    timeout_check(timeout)?;
    let user = req.username.clone().unwrap_or_else(|| "root".into());
    username_check(&user)?;
    extras_check(
        req.enable_parameter == Some(true)
            || req.default_parameters.is_some()
            || req.default_parameter_confs.is_some(),
        req.output_cos_bucket_url.is_some() || req.output_cos_key_prefix.is_some(),
    )?;
    if req.tags.as_ref().is_some_and(|t| !t.is_empty()) {
        return Err(CloudError::Unsupported("tags on commands".into()));
    }
    let row = CommandRow {
        command_id: new_id(IdKind::Command),
        name,
        description,
        content,
        command_type: ctype,
        working_directory: wd,
        timeout_s: timeout,
        username: user,
    };
    app.store
        .command_create(&ctx.scope, &row, MAX_COMMANDS)
        .await
        .map_err(tx_error)?;
    Ok(CreateCommandResponse {
        command_id: row.command_id,
    })
}

fn command_id_of(v: Option<String>) -> R<String> {
    let id = v.ok_or_else(|| CloudError::MissingParameter("CommandId".into()))?;
    if !is_valid(IdKind::Command, &id) {
        return Err(CloudError::TatInvalidCommandId(id));
    }
    Ok(id)
}

fn command_view(c: &SavedCommand) -> Command {
    Command {
        command_id: c.command.command_id.clone(),
        command_name: c.command.name.clone(),
        description: c.command.description.clone(),
        content: c.command.content.clone(),
        command_type: c.command.command_type.clone(),
        working_directory: c.command.working_directory.clone(),
        timeout: c.command.timeout_s,
        created_time: gpucloud_store::iso(c.created_at),
        updated_time: gpucloud_store::iso(c.updated_at),
        enable_parameter: false,
        default_parameters: "{}".into(),
        default_parameter_confs: vec![],
        scenes: vec![],
        formatted_description: String::new(),
        created_by: "USER".into(),
        tags: vec![],
        username: c.command.username.clone(),
        output_cos_bucket_url: String::new(),
        output_cos_key_prefix: String::new(),
    }
}

/// `DescribeCommands`: the tenant's library (gpucloud publishes no public
/// commands, so `created-by` `TAT` finds nothing).
pub async fn describe_commands(
    app: &App,
    ctx: &Ctx,
    req: DescribeCommandsRequest,
) -> R<DescribeCommandsResponse> {
    ids_or_filters("CommandIds", &req.command_ids, &req.filters)?;
    let mut ids = ids_of("CommandIds", req.command_ids, IdKind::Command, 100)?;
    let f = tat_filters(
        req.filters,
        &[
            "command-id",
            "command-name",
            "command-type",
            "created-by",
            "tag-key",
            "tag-value",
            "tag:",
        ],
        5,
    )?;
    let (offset, limit) = paging(req.offset, req.limit, 100)?;
    let get = |n: &str| -> Vec<String> { values_of(&f, n).into_iter().cloned().collect() };
    ids.extend(ids_of(
        "Filters.command-id",
        Some(get("command-id")),
        IdKind::Command,
        100,
    )?);
    let by = get("created-by");
    let tagged = f
        .iter()
        .any(|(n, _)| n == "tag-key" || n == "tag-value" || n.starts_with("tag:"));
    if (!by.is_empty() && !by.iter().any(|b| b == "USER")) || tagged {
        // Public commands and tags: gpucloud has none.
        return Ok(DescribeCommandsResponse {
            total_count: 0,
            command_set: vec![],
        });
    }
    let (total, rows) = app
        .store
        .commands(
            &ctx.scope,
            &CommandQuery {
                ids,
                names: get("command-name"),
                types: get("command-type"),
                offset,
                limit,
            },
        )
        .await
        .map_err(internal)?;
    Ok(DescribeCommandsResponse {
        total_count: total,
        command_set: rows.iter().map(command_view).collect(),
    })
}

/// `ModifyCommand`.
pub async fn modify_command(app: &App, ctx: &Ctx, req: ModifyCommandRequest) -> R<Empty> {
    let id = command_id_of(req.command_id.clone())?;
    if let Some(n) = &req.command_name {
        command_name_check(n)?;
    }
    if let Some(c) = &req.content {
        content_check(c)?;
    }
    if let Some(d) = &req.description {
        description_check(d)?;
    }
    if let Some(t) = &req.command_type {
        command_type_check(t)?;
    }
    if let Some(w) = &req.working_directory {
        working_directory_check(w)?;
    }
    if let Some(t) = req.timeout {
        timeout_check(t)?;
    }
    if let Some(u) = &req.username {
        username_check(u)?;
    }
    extras_check(
        req.default_parameters.is_some() || req.default_parameter_confs.is_some(),
        req.output_cos_bucket_url.is_some() || req.output_cos_key_prefix.is_some(),
    )?;
    app.store
        .command_modify(
            &ctx.scope,
            &id,
            &CommandChanges {
                name: req.command_name,
                description: req.description,
                content: req.content,
                command_type: req.command_type,
                working_directory: req.working_directory,
                timeout_s: req.timeout,
                username: req.username,
            },
        )
        .await
        .map_err(tx_error)?;
    Ok(Empty {})
}

/// `DeleteCommand`.
pub async fn delete_command(app: &App, ctx: &Ctx, req: DeleteCommandRequest) -> R<Empty> {
    let id = command_id_of(req.command_id)?;
    app.store
        .commands_delete(&ctx.scope, &[id])
        .await
        .map_err(tx_error)?;
    Ok(Empty {})
}

/// `DeleteCommands`: all or none.
pub async fn delete_commands(app: &App, ctx: &Ctx, req: DeleteCommandsRequest) -> R<Empty> {
    if req.command_ids.as_ref().is_none_or(|v| v.is_empty()) {
        return Err(CloudError::MissingParameter("CommandIds".into()));
    }
    let ids = ids_of("CommandIds", req.command_ids, IdKind::Command, 100)?;
    app.store
        .commands_delete(&ctx.scope, &ids)
        .await
        .map_err(tx_error)?;
    Ok(Empty {})
}

/// `InvokeCommand`: runs a saved command, with this run's `Username`,
/// `WorkingDirectory` and `Timeout` when given.
pub async fn invoke_command(
    app: &App,
    ctx: &Ctx,
    req: InvokeCommandRequest,
) -> R<InvokeCommandResponse> {
    let id = command_id_of(req.command_id.clone())?;
    if let Some(w) = &req.working_directory {
        working_directory_check(w)?;
    }
    if let Some(t) = req.timeout {
        timeout_check(t)?;
    }
    if let Some(u) = &req.username {
        username_check(u)?;
    }
    extras_check(
        req.parameters.is_some(),
        req.output_cos_bucket_url.is_some() || req.output_cos_key_prefix.is_some(),
    )?;
    let cmd = app
        .store
        .command_get(&ctx.scope, &id)
        .await
        .map_err(internal)?
        .ok_or_else(|| CloudError::TatCommandNotFound(id.clone()))?
        .command;
    let tasks = tasks_for(app, ctx, req.instance_ids).await?;
    let inv = NewInvocation {
        new_command: false,
        command_id: cmd.command_id,
        invocation_id: new_id(IdKind::Invocation),
        name: cmd.name,
        description: cmd.description,
        content: cmd.content,
        command_type: cmd.command_type,
        working_directory: req.working_directory.unwrap_or(cmd.working_directory),
        timeout_s: req.timeout.unwrap_or(cmd.timeout_s),
        username: req.username.unwrap_or(cmd.username),
        saved: true,
        library_max: MAX_COMMANDS,
        tasks,
    };
    invoke(app, ctx, &inv).await?;
    Ok(InvokeCommandResponse {
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

/// `DescribeAutomationAgentStatus`: the command agents of the caller's
/// instances. An instance has one when TAT can reach it at all (not on a
/// simulated host, not from an image without a guest agent); it is `Online`
/// while the instance runs on a reachable host.
pub async fn describe_automation_agent_status(
    app: &App,
    ctx: &Ctx,
    req: DescribeAutomationAgentStatusRequest,
) -> R<DescribeAutomationAgentStatusResponse> {
    ids_or_filters("InstanceIds", &req.instance_ids, &req.filters)?;
    let mut ids = ids_of("InstanceIds", req.instance_ids, IdKind::Instance, 100)?;
    let f = tat_filters(
        req.filters,
        &["agent-status", "environment", "instance-id"],
        5,
    )?;
    let (offset, limit) = paging(req.offset, req.limit, 100)?;
    let get = |n: &str| -> Vec<String> { values_of(&f, n).into_iter().cloned().collect() };
    ids.extend(ids_of(
        "Filters.instance-id",
        Some(get("instance-id")),
        IdKind::Instance,
        100,
    )?);
    let statuses = get("agent-status");
    let envs = get("environment");
    let (_, rows) = app
        .store
        .instance_list(
            &ctx.scope,
            &gpucloud_store::instances::InstanceQuery {
                ids,
                limit: 100_000,
                ..Default::default()
            },
        )
        .await
        .map_err(internal)?;
    let mut hosts: std::collections::HashMap<String, Option<gpucloud_store::hosts::Host>> =
        Default::default();
    let mut agents = Vec::new();
    for r in &rows {
        let Some(host_id) = r.host_id.clone() else {
            continue;
        };
        if !hosts.contains_key(&host_id) {
            let h = app.store.host_get(&host_id).await.map_err(internal)?;
            hosts.insert(host_id.clone(), h);
        }
        let Some(host) = hosts.get(&host_id).cloned().flatten() else {
            continue;
        };
        if host.kind == "sim" || r.runtime == "sim" {
            continue;
        }
        let image = app
            .store
            .image_visible(&ctx.scope, &r.image_id)
            .await
            .map_err(internal)?;
        if image.as_ref().is_some_and(|i| !i.guest_agent) {
            continue;
        }
        let online = r.state == InstanceState::Running
            && host.state != gpucloud_store::hosts::state::UNREACHABLE;
        agents.push(AutomationAgentInfo {
            instance_id: r.instance_id.clone(),
            version: if r.runtime == "qemu" {
                "qemu-guest-agent".into()
            } else {
                format!("gpucloud-{}", env!("CARGO_PKG_VERSION"))
            },
            last_heartbeat_time: time((host.last_seen > 0).then_some(host.last_seen)),
            agent_status: if online { "Online" } else { "Offline" }.into(),
            environment: "Linux".into(),
            support_features: vec![],
        });
    }
    agents.retain(|a| {
        (statuses.is_empty() || statuses.contains(&a.agent_status))
            && (envs.is_empty() || envs.contains(&a.environment))
    });
    let total = agents.len() as i64;
    Ok(DescribeAutomationAgentStatusResponse {
        automation_agent_set: agents
            .into_iter()
            .skip(offset as usize)
            .take(limit as usize)
            .collect(),
        total_count: total,
    })
}

/// `DescribeInvocations`.
pub async fn describe_invocations(
    app: &App,
    ctx: &Ctx,
    req: DescribeInvocationsRequest,
) -> R<DescribeInvocationsResponse> {
    ids_or_filters("InvocationIds", &req.invocation_ids, &req.filters)?;
    let mut wanted = ids_of("InvocationIds", req.invocation_ids, IdKind::Invocation, 100)?;
    let f = tat_filters(
        req.filters,
        &[
            "invocation-id",
            "command-id",
            "instance-kind",
            "command-created-by",
        ],
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
    ids_or_filters("InvocationTaskIds", &req.invocation_task_ids, &req.filters)?;
    let task_ids = ids_of(
        "InvocationTaskIds",
        req.invocation_task_ids,
        IdKind::InvocationTask,
        100,
    )?;
    let f = tat_filters(
        req.filters,
        &[
            "invocation-id",
            "invocation-task-id",
            "instance-id",
            "command-id",
        ],
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
