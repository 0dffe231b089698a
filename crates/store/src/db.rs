//! Connection, migrations and transaction helpers.

use crate::secrets::SecretBox;
use crate::{Result, StoreError};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyPool, Executor, Row, Transaction};
use std::sync::{Arc, Once};
use std::time::Duration;

/// The database engine behind a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite file.
    Sqlite,
    /// PostgreSQL server.
    Postgres,
}

/// The migrations, in order. Never edit a released one; add a new one.
pub const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "init", include_str!("../migrations/0001_init.sql")),
    (
        2,
        "agents_and_commands",
        include_str!("../migrations/0002_agents_and_commands.sql"),
    ),
    (
        3,
        "console_sessions",
        include_str!("../migrations/0003_console_sessions.sql"),
    ),
    (
        4,
        "image_guest_agent",
        include_str!("../migrations/0004_image_guest_agent.sql"),
    ),
    (
        5,
        "command_library",
        include_str!("../migrations/0005_command_library.sql"),
    ),
    (
        6,
        "reinstall",
        include_str!("../migrations/0006_reinstall.sql"),
    ),
    (
        7,
        "join_token_host",
        include_str!("../migrations/0007_join_token_host.sql"),
    ),
    (
        8,
        "host_error",
        include_str!("../migrations/0008_host_error.sql"),
    ),
    (
        9,
        "console_relay",
        include_str!("../migrations/0009_console_relay.sql"),
    ),
];

/// A handle on the database. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
    /// The PostgreSQL URL, for the `LISTEN` connection of [`crate::wakeups`].
    pub(crate) pg_url: Option<Arc<str>>,
    read: AnyPool,
    write: AnyPool,
    secrets: Arc<SecretBox>,
    /// Default networks already known to exist: they are never deleted.
    nets:
        Arc<std::sync::Mutex<std::collections::HashMap<(i64, String), crate::network::DefaultNet>>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .finish()
    }
}

static DRIVERS: Once = Once::new();

impl Store {
    /// Opens the database at `url` (`sqlite:///path/file.db`, `postgres://…`)
    /// and brings its schema up to date.
    pub async fn connect(url: &str, secrets: SecretBox) -> Result<Self> {
        DRIVERS.call_once(sqlx::any::install_default_drivers);
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(StoreError::Corrupt(format!(
                "unsupported database URL `{url}`: use sqlite:///path/to/file.db or postgres://user@host/db"
            )));
        };
        let (read, write) = match backend {
            Backend::Sqlite => {
                let url = if url.contains('?') {
                    url.to_string()
                } else {
                    format!("{url}?mode=rwc")
                };
                let opts = || {
                    AnyPoolOptions::new()
                        .acquire_timeout(Duration::from_secs(60))
                        .after_connect(|conn, _| {
                            Box::pin(async move {
                                for pragma in [
                                    "PRAGMA busy_timeout = 15000",
                                    "PRAGMA journal_mode = WAL",
                                    "PRAGMA synchronous = NORMAL",
                                    "PRAGMA foreign_keys = ON",
                                ] {
                                    conn.execute(pragma).await?;
                                }
                                Ok(())
                            })
                        })
                };
                // The writer first, so WAL mode is set before readers open.
                let write = opts().max_connections(1).connect(&url).await?;
                let read = opts().max_connections(4).connect(&url).await?;
                (read, write)
            }
            Backend::Postgres => {
                let pool = AnyPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(Duration::from_secs(60))
                    .connect(url)
                    .await?;
                (pool.clone(), pool)
            }
        };
        let store = Self {
            backend,
            pg_url: (backend == Backend::Postgres).then(|| Arc::from(url)),
            read,
            write,
            secrets: Arc::new(secrets),
            nets: Arc::default(),
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Which engine this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The secret sealer.
    pub fn secrets(&self) -> &SecretBox {
        &self.secrets
    }

    /// The tenant's default network in a zone, created on first use.
    pub(crate) async fn default_net(
        &self,
        tx: &mut Transaction<'static, Any>,
        scope: &crate::TenantScope,
        zone: &str,
    ) -> Result<crate::network::DefaultNet> {
        let key = (scope.app_id(), zone.to_string());
        if let Some(n) = self
            .nets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok(n.clone());
        }
        crate::network::ensure_default_net(tx, scope, zone).await
    }

    /// Remembers default networks once the transaction that may have created them committed.
    pub(crate) fn remember_nets(
        &self,
        scope: &crate::TenantScope,
        nets: Vec<(String, crate::network::DefaultNet)>,
    ) {
        let mut cache = self.nets.lock().unwrap_or_else(|p| p.into_inner());
        for (zone, net) in nets {
            cache.insert((scope.app_id(), zone), net);
        }
    }

    /// The pool for reads.
    pub(crate) fn r(&self) -> &AnyPool {
        &self.read
    }

    /// Starts a write transaction. On SQLite it takes the write lock at once
    /// (`BEGIN IMMEDIATE`), so a transaction that reads before it writes never
    /// fails on a concurrent writer; it waits for it instead.
    pub(crate) async fn begin_write(&self) -> Result<Transaction<'static, Any>> {
        Ok(match self.backend {
            Backend::Sqlite => self.write.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.write.begin().await?,
        })
    }

    /// Closes the pools.
    pub async fn close(&self) {
        self.write.close().await;
        self.read.close().await;
    }

    async fn migrate(&self) -> Result<()> {
        let mut tx = self.begin_write().await?;
        if self.backend == Backend::Postgres {
            // Serialise concurrent servers migrating the same database.
            sqlx::query("SELECT pg_advisory_xact_lock(7301190001)")
                .execute(&mut *tx)
                .await?;
        }
        tx.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
        )
        .await?;
        let current: i64 = sqlx::query(
            "SELECT CAST(COALESCE(MAX(version), 0) AS BIGINT) AS v FROM schema_migrations",
        )
        .fetch_one(&mut *tx)
        .await?
        .try_get("v")?;
        let known = MIGRATIONS.last().map_or(0, |m| m.0);
        if current > known {
            return Err(StoreError::SchemaTooNew {
                found: current,
                known,
            });
        }
        for (version, name, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
            for stmt in split_statements(sql) {
                tx.execute(stmt.as_str())
                    .await
                    .map_err(|source| StoreError::Migration {
                        version: *version,
                        name,
                        source,
                    })?;
            }
            sqlx::query(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
            )
            .bind(*version)
            .bind(*name)
            .bind(crate::now_ms())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Current schema version.
    pub async fn schema_version(&self) -> Result<i64> {
        Ok(sqlx::query(
            "SELECT CAST(COALESCE(MAX(version), 0) AS BIGINT) AS v FROM schema_migrations",
        )
        .fetch_one(self.r())
        .await?
        .try_get("v")?)
    }

    /// A cloud-wide setting.
    pub async fn setting(&self, key: &str) -> Result<Option<String>> {
        Ok(sqlx::query("SELECT value FROM settings WHERE key = $1")
            .bind(key)
            .fetch_optional(self.r())
            .await?
            .map(|r| r.try_get("value"))
            .transpose()?)
    }

    /// Sets a cloud-wide setting.
    pub async fn set_setting(&self, key: &str, value: &str) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = $2")
            .bind(key)
            .bind(value)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}

/// Splits a migration file into statements (`;` at end of line; `--` comments dropped).
fn split_statements(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in sql.lines() {
        let line = match line.find("--") {
            Some(i) => &line[..i],
            None => line,
        };
        if line.trim().is_empty() {
            continue;
        }
        cur.push_str(line);
        cur.push('\n');
        if line.trim_end().ends_with(';') {
            out.push(std::mem::take(&mut cur));
        }
    }
    if !cur.trim().is_empty() {
        out.push(cur);
    }
    out
}

/// Reads a column, mapping decode errors.
pub(crate) fn col<T>(row: &AnyRow, name: &str) -> Result<T>
where
    T: for<'r> sqlx::Decode<'r, Any> + sqlx::Type<Any>,
{
    row.try_get(name).map_err(StoreError::from)
}

/// Reads a JSON column.
pub(crate) fn json_col<T: serde::de::DeserializeOwned>(row: &AnyRow, name: &str) -> Result<T> {
    let s: String = col(row, name)?;
    serde_json::from_str(&s).map_err(|e| StoreError::Corrupt(format!("column {name}: {e}")))
}

/// `$start, $start+1, …` placeholders for `n` values.
pub(crate) fn placeholders(start: usize, n: usize) -> String {
    (start..start + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_statements() {
        let s = split_statements(
            "-- c\nCREATE TABLE a (x BIGINT); -- t\n\nCREATE INDEX i\n ON a(x);\n",
        );
        assert_eq!(s.len(), 2);
        assert!(s[1].contains("ON a(x);"));
    }
}
