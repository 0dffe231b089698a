//! gpucloud's persistence: one schema and one set of migrations for SQLite
//! (the embedded default) and PostgreSQL (several stateless servers).
//!
//! # Portability
//! Queries are plain SQL through sqlx's `Any` driver: `$n` placeholders (both
//! engines accept them), only `BIGINT`/`TEXT`/`DOUBLE PRECISION` columns,
//! `INSERT … ON CONFLICT`, no engine-specific functions. The same test suite
//! runs against both engines.
//!
//! # Tenant walls
//! Every repository function for a tenant's resources takes a [`TenantScope`]
//! and puts its `app_id` into the `WHERE` clause, so another tenant's resource
//! is simply not found. Functions without a scope are the agent gateway's and
//! the operator's (`admin`) and say so.
//!
//! # No double booking
//! GPU claims are rows under a primary key on the GPU; CPU and memory are
//! counters updated with a conditional `UPDATE … WHERE used + n <= total`.
//! Both happen in the transaction that creates or moves the instance, so two
//! servers racing for the last GPU cannot both win. See [`instances`].
//!
//! # SQLite writers
//! SQLite allows one writer. The store sends all writes through a
//! single-connection pool (WAL mode, so reads never wait on it) and retries a
//! transaction that another process locked.

pub mod agents;
pub mod commands;
pub mod consoles;
pub mod db;
pub mod groups;
pub mod hosts;
pub mod images;
pub mod instances;
pub mod keypairs;
pub mod network;
pub mod secrets;
pub mod tenants;
pub mod wakeups;

pub use db::{Backend, Store};
pub use secrets::SecretBox;

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed.
    #[error("database error")]
    Db(#[source] sqlx::Error),
    /// A unique constraint refused the write.
    #[error("conflicting write: {0}")]
    Conflict(String),
    /// A row that must exist does not.
    #[error("{0} not found")]
    NotFound(String),
    /// Data in the database is not what the code expects.
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// A sealed secret could not be opened.
    #[error("secret")]
    Secret(#[source] secrets::SecretError),
    /// Migration failure.
    #[error("migration {version} ({name}) failed")]
    Migration {
        /// Version.
        version: i64,
        /// Name.
        name: &'static str,
        /// Cause.
        #[source]
        source: sqlx::Error,
    },
    /// The database schema is newer than this binary.
    #[error("the database schema version {found} is newer than this gpucloud ({known}); upgrade gpucloud")]
    SchemaTooNew {
        /// Found in the database.
        found: i64,
        /// Known to the binary.
        known: i64,
    },
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(d) = &e {
            if d.is_unique_violation() {
                return StoreError::Conflict(d.message().to_string());
            }
        }
        StoreError::Db(e)
    }
}

/// Result of store operations.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The tenant a request acts for. Only the authentication layer (from a
/// verified signature) and operator commands create scopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TenantScope {
    app_id: i64,
}

impl TenantScope {
    /// A scope for `app_id`. Call only after authenticating the caller.
    pub fn new(app_id: i64) -> Self {
        Self { app_id }
    }

    /// The tenant's AppId.
    pub fn app_id(&self) -> i64 {
        self.app_id
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// ISO 8601 UTC (`2024-01-01T00:00:00Z`) of a millisecond timestamp.
pub fn iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// `YYYY-MM-DD hh:mm:ss` (UTC) of a millisecond timestamp.
pub fn datetime(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}
