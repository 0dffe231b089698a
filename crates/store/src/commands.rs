//! Commands run inside instances without logging in (Tencent TAT): saved
//! commands, invocations, and one task per instance of an invocation.
//!
//! Every invocation points at a row of `commands` (its name and
//! description) and keeps its own copy of what ran — content, type, working
//! directory, timeout, user — so that changing a saved command
//! (`ModifyCommand`) never rewrites history. `RunCommand` writes a command
//! row of its own (in the library only with `SaveCommand`); `InvokeCommand`
//! runs a library command. The library is the rows with `saved = 1`;
//! deleting a command only clears that flag.
//!
//! A task is `PENDING` until the host agent reports it `RUNNING`, then ends
//! `SUCCESS`, `FAILED`, `TIMEOUT`, `START_FAILED` or — when no result arrives
//! in time — `TASK_TIMEOUT`. Results are only ever written over non-final
//! states, so a late or repeated report cannot undo an outcome.

use crate::db::{col, placeholders};
use crate::instances::TxError;
use crate::{now_ms, Result, Store, StoreError, TenantScope};
use gpucloud_core::error::CloudError;
use sqlx::any::AnyRow;

/// Task states that are not final.
pub const ACTIVE: &[&str] = &["PENDING", "RUNNING"];

/// A new invocation.
#[derive(Debug, Clone)]
pub struct NewInvocation {
    /// Whether to write the command row too (`RunCommand`); `InvokeCommand`
    /// runs a saved one.
    pub new_command: bool,
    pub command_id: String,
    pub invocation_id: String,
    pub name: String,
    pub description: String,
    pub content: String,
    pub command_type: String,
    pub working_directory: String,
    pub timeout_s: i64,
    pub username: String,
    /// Whether the new command goes into the library (`SaveCommand`): then
    /// its name must be free there and the library below `library_max`.
    pub saved: bool,
    pub library_max: i64,
    /// `(task_id, instance_id, host_id)`.
    pub tasks: Vec<(String, String, String)>,
}

/// A stored command.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CommandRow {
    pub command_id: String,
    pub name: String,
    pub description: String,
    pub content: String,
    pub command_type: String,
    pub working_directory: String,
    pub timeout_s: i64,
    pub username: String,
}

/// A command of the library, with when it was saved and last changed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SavedCommand {
    pub command: CommandRow,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Filters of `DescribeCommands` (AND across fields, OR within one).
#[derive(Debug, Clone, Default)]
pub struct CommandQuery {
    pub ids: Vec<String>,
    pub names: Vec<String>,
    pub types: Vec<String>,
    pub offset: i64,
    pub limit: i64,
}

/// What `ModifyCommand` changes (`None`: unchanged).
#[derive(Debug, Clone, Default)]
pub struct CommandChanges {
    pub name: Option<String>,
    pub description: Option<String>,
    pub content: Option<String>,
    pub command_type: Option<String>,
    pub working_directory: Option<String>,
    pub timeout_s: Option<i64>,
    pub username: Option<String>,
}

/// A unique-index violation on a library name (two requests racing for
/// one name) is the name being taken.
fn named(e: sqlx::Error, name: &str) -> TxError {
    match StoreError::from(e) {
        StoreError::Conflict(_) => CloudError::TatCommandNameDuplicated(name.to_string()).into(),
        other => other.into(),
    }
}

/// Refuses a new saved command when the tenant's library holds `max`.
async fn library_room(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    scope: &TenantScope,
    max: i64,
) -> std::result::Result<(), TxError> {
    // Serialises library writers of one tenant on PostgreSQL (a row lock
    // held to commit), so that two requests cannot both take the last
    // place; SQLite's write transactions are serial already.
    sqlx::query("UPDATE tenants SET app_id = app_id WHERE app_id = $1")
        .bind(scope.app_id())
        .execute(&mut **tx)
        .await?;
    let n: i64 = col(
        &sqlx::query(
            "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM commands WHERE app_id = $1 AND saved = 1",
        )
        .bind(scope.app_id())
        .fetch_one(&mut **tx)
        .await?,
        "n",
    )?;
    if n >= max {
        return Err(CloudError::TatCommandQuota(max).into());
    }
    Ok(())
}

/// Refuses a name another saved command of the tenant has.
async fn name_free(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    scope: &TenantScope,
    name: &str,
    except: Option<&str>,
) -> std::result::Result<(), TxError> {
    let taken = sqlx::query(
        "SELECT command_id FROM commands WHERE app_id = $1 AND saved = 1 AND name = $2 AND command_id <> $3",
    )
    .bind(scope.app_id())
    .bind(name)
    .bind(except.unwrap_or(""))
    .fetch_optional(&mut **tx)
    .await?;
    if taken.is_some() {
        return Err(CloudError::TatCommandNameDuplicated(name.to_string()).into());
    }
    Ok(())
}

/// A stored task.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TaskRow {
    pub task_id: String,
    pub invocation_id: String,
    pub instance_id: String,
    pub host_id: String,
    pub status: String,
    pub exit_code: Option<i64>,
    pub output: String,
    pub dropped: i64,
    pub error_info: String,
    pub exec_start: Option<i64>,
    pub exec_end: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    pub command: CommandRow,
}

/// An invocation with its tasks.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct InvocationRow {
    pub invocation_id: String,
    pub description: String,
    pub created_at: i64,
    pub command: CommandRow,
    pub tasks: Vec<TaskRow>,
}

impl InvocationRow {
    /// The invocation's status, from its tasks.
    pub fn status(&self) -> &'static str {
        let n = self.tasks.len();
        let count = |s: &str| self.tasks.iter().filter(|t| t.status == s).count();
        let (pending, running, success) = (count("PENDING"), count("RUNNING"), count("SUCCESS"));
        if n == 0 {
            return "PENDING";
        }
        if pending == n {
            return "PENDING";
        }
        if pending + running > 0 {
            return "RUNNING";
        }
        if success == n {
            return "SUCCESS";
        }
        if count("TIMEOUT") + count("TASK_TIMEOUT") == n {
            return "TIMEOUT";
        }
        if success == 0 {
            return "FAILED";
        }
        "PARTIAL_FAILED"
    }

    /// Start and end of the invocation (first start, last end).
    pub fn times(&self) -> (Option<i64>, Option<i64>) {
        let start = self.tasks.iter().filter_map(|t| t.exec_start).min();
        let done = self
            .tasks
            .iter()
            .all(|t| !ACTIVE.contains(&t.status.as_str()));
        let end = if done {
            self.tasks
                .iter()
                .filter_map(|t| t.exec_end.or(Some(t.updated_at)))
                .max()
        } else {
            None
        };
        (start, end)
    }
}

/// A command result reported by a host agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskOutcome {
    pub task_id: String,
    pub status: String,
    pub exit_code: Option<i64>,
    pub output: String,
    pub dropped: i64,
    pub started_ms: Option<i64>,
    pub ended_ms: Option<i64>,
    pub error: String,
}

/// A task a host agent must run (or is running).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostTask {
    pub task_id: String,
    pub instance_id: String,
    pub status: String,
    pub command: CommandRow,
}

/// Filters of the Describe actions (AND across fields, OR within one).
#[derive(Debug, Clone, Default)]
pub struct TaskQuery {
    pub invocation_ids: Vec<String>,
    pub task_ids: Vec<String>,
    pub instance_ids: Vec<String>,
    pub command_ids: Vec<String>,
    pub offset: i64,
    pub limit: i64,
}

const TASK_COLS: &str = "t.task_id, t.invocation_id, t.instance_id, t.host_id, t.status, t.exit_code, t.output, t.dropped, t.error_info, t.exec_start, t.exec_end, t.created_at, t.updated_at, c.command_id, c.name, c.description, i.content, i.command_type, i.working_directory, i.timeout_s, i.username";

fn command_from(r: &AnyRow) -> Result<CommandRow> {
    Ok(CommandRow {
        command_id: col(r, "command_id")?,
        name: col(r, "name")?,
        description: col(r, "description")?,
        content: col(r, "content")?,
        command_type: col(r, "command_type")?,
        working_directory: col(r, "working_directory")?,
        timeout_s: col(r, "timeout_s")?,
        username: col(r, "username")?,
    })
}

fn task_from(r: &AnyRow) -> Result<TaskRow> {
    Ok(TaskRow {
        task_id: col(r, "task_id")?,
        invocation_id: col(r, "invocation_id")?,
        instance_id: col(r, "instance_id")?,
        host_id: col(r, "host_id")?,
        status: col(r, "status")?,
        exit_code: col(r, "exit_code")?,
        output: col(r, "output")?,
        dropped: col(r, "dropped")?,
        error_info: col(r, "error_info")?,
        exec_start: col(r, "exec_start")?,
        exec_end: col(r, "exec_end")?,
        created_at: col(r, "created_at")?,
        updated_at: col(r, "updated_at")?,
        command: command_from(r)?,
    })
}

fn any_of(column: &str, values: &[String], args: &mut Vec<String>, where_: &mut String) {
    if values.is_empty() {
        return;
    }
    let start = args.len() + 2;
    args.extend(values.iter().cloned());
    where_.push_str(&format!(
        " AND {column} IN ({})",
        placeholders(start, values.len())
    ));
}

impl Store {
    /// Creates a command, an invocation and its tasks; wakes the hosts.
    pub async fn invocation_create(
        &self,
        scope: &TenantScope,
        inv: &NewInvocation,
    ) -> std::result::Result<(), TxError> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        if inv.new_command && inv.saved {
            library_room(&mut tx, scope, inv.library_max).await?;
            name_free(&mut tx, scope, &inv.name, None).await?;
        }
        if inv.new_command {
            sqlx::query(
                "INSERT INTO commands (command_id, app_id, name, description, content, command_type, working_directory, timeout_s, username, saved, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11)",
            )
            .bind(&inv.command_id)
            .bind(scope.app_id())
            .bind(&inv.name)
            .bind(&inv.description)
            .bind(&inv.content)
            .bind(&inv.command_type)
            .bind(&inv.working_directory)
            .bind(inv.timeout_s)
            .bind(&inv.username)
            .bind(i64::from(inv.saved))
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(|e| named(e, &inv.name))?;
        } else {
            // The command must still be in the library (a DeleteCommand may
            // have raced this InvokeCommand).
            let n = sqlx::query(
                "UPDATE commands SET saved = saved WHERE command_id = $1 AND app_id = $2 AND saved = 1",
            )
            .bind(&inv.command_id)
            .bind(scope.app_id())
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n != 1 {
                return Err(CloudError::TatCommandNotFound(inv.command_id.clone()).into());
            }
        }
        sqlx::query(
            "INSERT INTO invocations (invocation_id, app_id, command_id, description, created_at, content, command_type, working_directory, timeout_s, username)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&inv.invocation_id)
        .bind(scope.app_id())
        .bind(&inv.command_id)
        .bind(&inv.description)
        .bind(now)
        .bind(&inv.content)
        .bind(&inv.command_type)
        .bind(&inv.working_directory)
        .bind(inv.timeout_s)
        .bind(&inv.username)
        .execute(&mut *tx)
        .await?;
        let mut hosts: Vec<&String> = Vec::new();
        for (task, instance, host) in &inv.tasks {
            sqlx::query(
                "INSERT INTO invocation_tasks (task_id, invocation_id, app_id, instance_id, host_id, status, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, 'PENDING', $6, $6)",
            )
            .bind(task)
            .bind(&inv.invocation_id)
            .bind(scope.app_id())
            .bind(instance)
            .bind(host)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            if !hosts.contains(&host) {
                hosts.push(host);
            }
        }
        for h in hosts {
            sqlx::query("UPDATE hosts SET generation = generation + 1 WHERE host_id = $1")
                .bind(h)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Saves a command in the tenant's library. Names are unique in a
    /// library; it holds at most `max` commands.
    pub async fn command_create(
        &self,
        scope: &TenantScope,
        c: &CommandRow,
        max: i64,
    ) -> std::result::Result<(), TxError> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        library_room(&mut tx, scope, max).await?;
        name_free(&mut tx, scope, &c.name, None).await?;
        sqlx::query(
            "INSERT INTO commands (command_id, app_id, name, description, content, command_type, working_directory, timeout_s, username, saved, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 1, $10, $10)",
        )
        .bind(&c.command_id)
        .bind(scope.app_id())
        .bind(&c.name)
        .bind(&c.description)
        .bind(&c.content)
        .bind(&c.command_type)
        .bind(&c.working_directory)
        .bind(c.timeout_s)
        .bind(&c.username)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(|e| named(e, &c.name))?;
        tx.commit().await?;
        Ok(())
    }

    /// Saved commands of a tenant, filtered and paged, newest first:
    /// (total, page).
    pub async fn commands(
        &self,
        scope: &TenantScope,
        q: &CommandQuery,
    ) -> Result<(i64, Vec<SavedCommand>)> {
        let mut where_ = String::from("app_id = $1 AND saved = 1");
        let mut args: Vec<String> = Vec::new();
        any_of("command_id", &q.ids, &mut args, &mut where_);
        any_of("name", &q.names, &mut args, &mut where_);
        any_of("command_type", &q.types, &mut args, &mut where_);
        let count_sql =
            format!("SELECT CAST(COUNT(*) AS BIGINT) AS n FROM commands WHERE {where_}");
        let mut cq = sqlx::query(&count_sql).bind(scope.app_id());
        for a in &args {
            cq = cq.bind(a);
        }
        let total: i64 = col(&cq.fetch_one(self.r()).await?, "n")?;
        let sql = format!(
            "SELECT command_id, name, description, content, command_type, working_directory, timeout_s, username, created_at, updated_at
             FROM commands WHERE {where_} ORDER BY created_at DESC, command_id LIMIT ${} OFFSET ${}",
            args.len() + 2,
            args.len() + 3
        );
        let mut pq = sqlx::query(&sql).bind(scope.app_id());
        for a in &args {
            pq = pq.bind(a);
        }
        let rows = pq.bind(q.limit).bind(q.offset).fetch_all(self.r()).await?;
        rows.iter()
            .map(|r| {
                Ok(SavedCommand {
                    command: command_from(r)?,
                    created_at: col(r, "created_at")?,
                    updated_at: col(r, "updated_at")?,
                })
            })
            .collect::<Result<Vec<_>>>()
            .map(|v| (total, v))
    }

    /// One saved command of a tenant.
    pub async fn command_get(&self, scope: &TenantScope, id: &str) -> Result<Option<SavedCommand>> {
        let (_, mut v) = self
            .commands(
                scope,
                &CommandQuery {
                    ids: vec![id.to_string()],
                    limit: 1,
                    ..Default::default()
                },
            )
            .await?;
        Ok(v.pop())
    }

    /// Changes a saved command: the fields that are `Some`. Past invocations
    /// keep what they ran.
    pub async fn command_modify(
        &self,
        scope: &TenantScope,
        id: &str,
        ch: &CommandChanges,
    ) -> std::result::Result<(), TxError> {
        let mut tx = self.begin_write().await?;
        let exists = sqlx::query(
            "SELECT command_id FROM commands WHERE command_id = $1 AND app_id = $2 AND saved = 1",
        )
        .bind(id)
        .bind(scope.app_id())
        .fetch_optional(&mut *tx)
        .await?;
        if exists.is_none() {
            return Err(CloudError::TatCommandNotFound(id.to_string()).into());
        }
        if let Some(n) = &ch.name {
            name_free(&mut tx, scope, n, Some(id)).await?;
        }
        let n = sqlx::query(
            "UPDATE commands SET name = COALESCE($1, name), description = COALESCE($2, description),
               content = COALESCE($3, content), command_type = COALESCE($4, command_type),
               working_directory = COALESCE($5, working_directory), timeout_s = COALESCE($6, timeout_s),
               username = COALESCE($7, username), updated_at = $8
             WHERE command_id = $9 AND app_id = $10 AND saved = 1",
        )
        .bind(&ch.name)
        .bind(&ch.description)
        .bind(&ch.content)
        .bind(&ch.command_type)
        .bind(&ch.working_directory)
        .bind(ch.timeout_s)
        .bind(&ch.username)
        .bind(now_ms())
        .bind(id)
        .bind(scope.app_id())
        .execute(&mut *tx)
        .await
        .map_err(|e| named(e, ch.name.as_deref().unwrap_or_default()))?
        .rows_affected();
        if n != 1 {
            // Deleted since it was read.
            return Err(CloudError::TatCommandNotFound(id.to_string()).into());
        }
        tx.commit().await?;
        Ok(())
    }

    /// Takes commands out of the library, all or none. Their past (and
    /// running) invocations are untouched: each keeps what it ran.
    pub async fn commands_delete(
        &self,
        scope: &TenantScope,
        ids: &[String],
    ) -> std::result::Result<(), TxError> {
        let mut tx = self.begin_write().await?;
        for id in ids {
            let n = sqlx::query(
                "UPDATE commands SET saved = 0, updated_at = $3 WHERE command_id = $1 AND app_id = $2 AND saved = 1",
            )
            .bind(id)
            .bind(scope.app_id())
            .bind(now_ms())
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n != 1 {
                return Err(CloudError::TatCommandNotFound(id.clone()).into());
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Tasks of a tenant, filtered and paged, newest first: (total, page).
    pub async fn tasks(&self, scope: &TenantScope, q: &TaskQuery) -> Result<(i64, Vec<TaskRow>)> {
        let mut where_ = String::from("t.app_id = $1");
        let mut args: Vec<String> = Vec::new();
        any_of("t.invocation_id", &q.invocation_ids, &mut args, &mut where_);
        any_of("t.task_id", &q.task_ids, &mut args, &mut where_);
        any_of("t.instance_id", &q.instance_ids, &mut args, &mut where_);
        any_of("c.command_id", &q.command_ids, &mut args, &mut where_);
        let from = "FROM invocation_tasks t JOIN invocations i ON i.invocation_id = t.invocation_id JOIN commands c ON c.command_id = i.command_id";
        let count_sql = format!("SELECT CAST(COUNT(*) AS BIGINT) AS n {from} WHERE {where_}");
        let mut cq = sqlx::query(&count_sql).bind(scope.app_id());
        for a in &args {
            cq = cq.bind(a);
        }
        let total: i64 = col(&cq.fetch_one(self.r()).await?, "n")?;
        let sql = format!(
            "SELECT {TASK_COLS} {from} WHERE {where_} ORDER BY t.created_at DESC, t.task_id LIMIT ${} OFFSET ${}",
            args.len() + 2,
            args.len() + 3
        );
        let mut pq = sqlx::query(&sql).bind(scope.app_id());
        for a in &args {
            pq = pq.bind(a);
        }
        let rows = pq.bind(q.limit).bind(q.offset).fetch_all(self.r()).await?;
        Ok((total, rows.iter().map(task_from).collect::<Result<_>>()?))
    }

    /// Invocations of a tenant with their tasks, newest first: (total, page).
    pub async fn invocations(
        &self,
        scope: &TenantScope,
        ids: &[String],
        command_ids: &[String],
        offset: i64,
        limit: i64,
    ) -> Result<(i64, Vec<InvocationRow>)> {
        let mut where_ = String::from("i.app_id = $1");
        let mut args: Vec<String> = Vec::new();
        any_of("i.invocation_id", ids, &mut args, &mut where_);
        any_of("i.command_id", command_ids, &mut args, &mut where_);
        let count_sql =
            format!("SELECT CAST(COUNT(*) AS BIGINT) AS n FROM invocations i WHERE {where_}");
        let mut cq = sqlx::query(&count_sql).bind(scope.app_id());
        for a in &args {
            cq = cq.bind(a);
        }
        let total: i64 = col(&cq.fetch_one(self.r()).await?, "n")?;
        let sql = format!(
            "SELECT i.invocation_id, i.description AS inv_description, i.created_at AS inv_created, c.command_id, c.name, c.description, i.content, i.command_type, i.working_directory, i.timeout_s, i.username
             FROM invocations i JOIN commands c ON c.command_id = i.command_id WHERE {where_}
             ORDER BY i.created_at DESC, i.invocation_id LIMIT ${} OFFSET ${}",
            args.len() + 2,
            args.len() + 3
        );
        let mut pq = sqlx::query(&sql).bind(scope.app_id());
        for a in &args {
            pq = pq.bind(a);
        }
        let rows = pq.bind(limit).bind(offset).fetch_all(self.r()).await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let id: String = col(r, "invocation_id")?;
            let (_, tasks) = self
                .tasks(
                    scope,
                    &TaskQuery {
                        invocation_ids: vec![id.clone()],
                        limit: 10_000,
                        ..Default::default()
                    },
                )
                .await?;
            out.push(InvocationRow {
                invocation_id: id,
                description: col(r, "inv_description")?,
                created_at: col(r, "inv_created")?,
                command: command_from(r)?,
                tasks,
            });
        }
        Ok((total, out))
    }

    /// The tasks a host must run or is running.
    pub async fn host_tasks(&self, host_id: &str) -> Result<Vec<HostTask>> {
        let rows = sqlx::query(&format!(
            "SELECT {TASK_COLS} FROM invocation_tasks t JOIN invocations i ON i.invocation_id = t.invocation_id
             JOIN commands c ON c.command_id = i.command_id
             WHERE t.host_id = $1 AND t.status IN ('PENDING', 'RUNNING') ORDER BY t.created_at, t.task_id"
        ))
        .bind(host_id)
        .fetch_all(self.r())
        .await?;
        rows.iter()
            .map(|r| {
                let t = task_from(r)?;
                Ok(HostTask {
                    task_id: t.task_id,
                    instance_id: t.instance_id,
                    status: t.status,
                    command: t.command,
                })
            })
            .collect()
    }

    /// Records outcomes a host reported; final states are never overwritten.
    pub(crate) async fn apply_task_outcomes(
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        host_id: &str,
        outcomes: &[TaskOutcome],
    ) -> Result<usize> {
        let now = now_ms();
        let mut changed = 0;
        for o in outcomes {
            let n = sqlx::query(
                "UPDATE invocation_tasks SET status = $1, exit_code = $2, output = $3, dropped = $4, error_info = $5,
                   exec_start = COALESCE($6, exec_start), exec_end = $7, updated_at = $8
                 WHERE task_id = $9 AND host_id = $10 AND status IN ('PENDING', 'RUNNING')
                   AND NOT (status = $1 AND $1 = 'RUNNING')",
            )
            .bind(&o.status)
            .bind(o.exit_code)
            .bind(&o.output)
            .bind(o.dropped)
            .bind(&o.error)
            .bind(o.started_ms)
            .bind(o.ended_ms)
            .bind(now)
            .bind(&o.task_id)
            .bind(host_id)
            .execute(&mut **tx)
            .await?
            .rows_affected();
            changed += n as usize;
        }
        Ok(changed)
    }

    /// Ends tasks that got no result in time (their timeout plus `grace_ms`):
    /// `TASK_TIMEOUT`. Returns how many. The clock starts when the task was
    /// created or, once the host said it runs, when that report arrived —
    /// the host's own timeout runs from the start, which may come late (a
    /// host that was unreachable), and its result must still be taken.
    pub async fn tasks_expire(&self, grace_ms: i64) -> Result<u64> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        let rows = sqlx::query(
            "SELECT t.task_id, t.status, t.created_at, t.updated_at, i.timeout_s FROM invocation_tasks t JOIN invocations i ON i.invocation_id = t.invocation_id
             WHERE t.status IN ('PENDING', 'RUNNING')",
        )
        .fetch_all(&mut *tx)
        .await?;
        let mut n = 0;
        for r in &rows {
            let from: i64 = if col::<String>(r, "status")? == "RUNNING" {
                // Set when RUNNING was recorded; a repeated RUNNING does not
                // touch it.
                col(r, "updated_at")?
            } else {
                col(r, "created_at")?
            };
            let timeout: i64 = col(r, "timeout_s")?;
            if from + timeout * 1000 + grace_ms < now {
                n += sqlx::query(
                    "UPDATE invocation_tasks SET status = 'TASK_TIMEOUT', error_info = 'no result arrived from the host agent in time', updated_at = $2
                     WHERE task_id = $1 AND status IN ('PENDING', 'RUNNING')",
                )
                .bind(col::<String>(r, "task_id")?)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            }
        }
        tx.commit().await?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inv(statuses: &[&str]) -> InvocationRow {
        InvocationRow {
            invocation_id: "inv-a".into(),
            description: String::new(),
            created_at: 0,
            command: CommandRow {
                command_id: "cmd-a".into(),
                name: String::new(),
                description: String::new(),
                content: String::new(),
                command_type: "SHELL".into(),
                working_directory: "/root".into(),
                timeout_s: 60,
                username: "root".into(),
            },
            tasks: statuses
                .iter()
                .map(|s| TaskRow {
                    task_id: "t".into(),
                    invocation_id: "inv-a".into(),
                    instance_id: "i".into(),
                    host_id: "h".into(),
                    status: s.to_string(),
                    exit_code: None,
                    output: String::new(),
                    dropped: 0,
                    error_info: String::new(),
                    exec_start: Some(1),
                    exec_end: Some(2),
                    created_at: 0,
                    updated_at: 3,
                    command: inv_command(),
                })
                .collect(),
        }
    }

    fn inv_command() -> CommandRow {
        CommandRow {
            command_id: "cmd-a".into(),
            name: String::new(),
            description: String::new(),
            content: String::new(),
            command_type: "SHELL".into(),
            working_directory: "/root".into(),
            timeout_s: 60,
            username: "root".into(),
        }
    }

    #[test]
    fn invocation_status_from_tasks() {
        assert_eq!(inv(&["PENDING", "PENDING"]).status(), "PENDING");
        assert_eq!(inv(&["PENDING", "SUCCESS"]).status(), "RUNNING");
        assert_eq!(inv(&["SUCCESS", "SUCCESS"]).status(), "SUCCESS");
        assert_eq!(inv(&["SUCCESS", "FAILED"]).status(), "PARTIAL_FAILED");
        assert_eq!(inv(&["FAILED", "START_FAILED"]).status(), "FAILED");
        assert_eq!(inv(&["TIMEOUT"]).status(), "TIMEOUT");
        assert_eq!(inv(&["SUCCESS"]).times(), (Some(1), Some(2)));
        assert_eq!(inv(&["RUNNING"]).times().1, None);
    }
}
