//! Tenants (accounts) and their API keys. Operator functions; no scope.

use crate::db::col;
use crate::secrets::random_bytes;
use crate::{now_ms, Result, Store, StoreError, TenantScope};
use sqlx::Row;

/// Default number of instances a tenant may hold.
pub const DEFAULT_INSTANCE_QUOTA: i64 = 1000;

/// A tenant.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Tenant {
    /// AppId.
    pub app_id: i64,
    /// Owner Uin.
    pub uin: i64,
    /// Unique name.
    pub name: String,
    /// Instance quota.
    pub instance_quota: i64,
    /// Created (ms).
    pub created_at: i64,
}

/// A freshly created API key (the only time the SecretKey is shown).
#[derive(Clone, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct NewCredentials {
    /// AppId.
    pub app_id: i64,
    /// Uin.
    pub uin: i64,
    /// Tenant name.
    pub name: String,
    /// SecretId.
    pub secret_id: String,
    /// SecretKey.
    pub secret_key: String,
}

gpucloud_api_types::debug_redacted!(NewCredentials { app_id, uin, name, secret_id } secret { secret_key });

/// What authentication needs of a key.
#[derive(Clone)]
pub struct KeyRecord {
    /// The tenant.
    pub scope: TenantScope,
    /// The SecretKey (unsealed).
    pub secret_key: String,
    /// Whether the key is active.
    pub active: bool,
}

gpucloud_api_types::debug_redacted!(KeyRecord { scope, active } secret { secret_key });

const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

fn random_alnum(n: usize) -> String {
    let bytes = random_bytes::<64>();
    bytes
        .iter()
        .take(n)
        .map(|b| ALNUM[(*b as usize) % ALNUM.len()] as char)
        .collect()
}

fn random_u64() -> u64 {
    u64::from_le_bytes(random_bytes::<8>())
}

impl Store {
    /// Creates a tenant with one API key.
    pub async fn tenant_create(&self, name: &str, quota: i64) -> Result<NewCredentials> {
        let name = name.trim();
        if name.is_empty() || name.len() > 64 {
            return Err(StoreError::Conflict(
                "tenant names are 1-64 characters".to_string(),
            ));
        }
        for _ in 0..8 {
            let app_id = 1_300_000_000 + (random_u64() % 700_000_000) as i64;
            let uin = 100_000_000_000 + (random_u64() % 900_000_000_000) as i64;
            let mut tx = self.begin_write().await?;
            let exists = sqlx::query("SELECT app_id FROM tenants WHERE name = $1")
                .bind(name)
                .fetch_optional(&mut *tx)
                .await?;
            if exists.is_some() {
                return Err(StoreError::Conflict(format!(
                    "a tenant named {name} already exists"
                )));
            }
            let res = sqlx::query(
                "INSERT INTO tenants (app_id, uin, name, instance_quota, created_at) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(app_id)
            .bind(uin)
            .bind(name)
            .bind(quota)
            .bind(now_ms())
            .execute(&mut *tx)
            .await;
            match res.map_err(StoreError::from) {
                Ok(_) => {}
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e),
            }
            let (secret_id, secret_key) = self.insert_key(&mut tx, app_id).await?;
            tx.commit().await?;
            return Ok(NewCredentials {
                app_id,
                uin,
                name: name.to_string(),
                secret_id,
                secret_key,
            });
        }
        Err(StoreError::Conflict(
            "could not allocate a unique AppId".into(),
        ))
    }

    async fn insert_key(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        app_id: i64,
    ) -> Result<(String, String)> {
        let secret_id = format!("AKID{}", random_alnum(32));
        let secret_key = random_alnum(32);
        sqlx::query(
            "INSERT INTO api_keys (secret_id, app_id, secret_key_sealed, status, created_at) VALUES ($1, $2, $3, 'Active', $4)",
        )
        .bind(&secret_id)
        .bind(app_id)
        .bind(self.secrets().seal(&secret_key))
        .bind(now_ms())
        .execute(&mut **tx)
        .await?;
        Ok((secret_id, secret_key))
    }

    /// Adds an API key to a tenant.
    pub async fn api_key_create(&self, app_id: i64) -> Result<(String, String)> {
        let mut tx = self.begin_write().await?;
        let found = sqlx::query("SELECT app_id FROM tenants WHERE app_id = $1")
            .bind(app_id)
            .fetch_optional(&mut *tx)
            .await?;
        if found.is_none() {
            return Err(StoreError::NotFound(format!("tenant {app_id}")));
        }
        let k = self.insert_key(&mut tx, app_id).await?;
        tx.commit().await?;
        Ok(k)
    }

    /// A tenant's API keys, oldest first: `(SecretId, status, created ms)`
    /// (never the SecretKey).
    pub async fn api_keys_of(&self, app_id: i64) -> Result<Vec<(String, String, i64)>> {
        let rows = sqlx::query(
            "SELECT secret_id, status, created_at FROM api_keys WHERE app_id = $1 ORDER BY created_at, secret_id",
        )
        .bind(app_id)
        .fetch_all(self.r())
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    col(r, "secret_id")?,
                    col(r, "status")?,
                    col(r, "created_at")?,
                ))
            })
            .collect()
    }

    /// Turns an API key off (`Inactive`: every request signed with it is
    /// refused) or on again. Returns the tenant's AppId; `NotFound` for an
    /// unknown SecretId.
    pub async fn api_key_set_active(&self, secret_id: &str, active: bool) -> Result<i64> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query("SELECT app_id FROM api_keys WHERE secret_id = $1")
            .bind(secret_id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("API key {secret_id}")))?;
        sqlx::query("UPDATE api_keys SET status = $2 WHERE secret_id = $1")
            .bind(secret_id)
            .bind(if active { "Active" } else { "Inactive" })
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        col(&row, "app_id")
    }

    /// Looks up a SecretId for authentication.
    pub async fn api_key_lookup(&self, secret_id: &str) -> Result<Option<KeyRecord>> {
        let row = sqlx::query(
            "SELECT app_id, secret_key_sealed, status FROM api_keys WHERE secret_id = $1",
        )
        .bind(secret_id)
        .fetch_optional(self.r())
        .await?;
        let Some(row) = row else { return Ok(None) };
        let sealed: String = col(&row, "secret_key_sealed")?;
        let secret_key = self.secrets().open(&sealed).map_err(StoreError::Secret)?;
        let status: String = col(&row, "status")?;
        Ok(Some(KeyRecord {
            scope: TenantScope::new(col(&row, "app_id")?),
            secret_key,
            active: status == "Active",
        }))
    }

    /// The oldest active API key of a tenant, unsealed (operator credentials file).
    pub async fn api_key_first(&self, app_id: i64) -> Result<Option<(String, String)>> {
        let row = sqlx::query(
            "SELECT secret_id, secret_key_sealed FROM api_keys WHERE app_id = $1 AND status = 'Active' ORDER BY created_at, secret_id LIMIT 1",
        )
        .bind(app_id)
        .fetch_optional(self.r())
        .await?;
        let Some(row) = row else { return Ok(None) };
        let sealed: String = col(&row, "secret_key_sealed")?;
        Ok(Some((
            col(&row, "secret_id")?,
            self.secrets().open(&sealed).map_err(StoreError::Secret)?,
        )))
    }

    /// A tenant by AppId.
    pub async fn tenant_get(&self, app_id: i64) -> Result<Option<Tenant>> {
        let row = sqlx::query("SELECT * FROM tenants WHERE app_id = $1")
            .bind(app_id)
            .fetch_optional(self.r())
            .await?;
        row.map(|r| tenant_from_row(&r)).transpose()
    }

    /// A tenant by name.
    pub async fn tenant_by_name(&self, name: &str) -> Result<Option<Tenant>> {
        let row = sqlx::query("SELECT * FROM tenants WHERE name = $1")
            .bind(name)
            .fetch_optional(self.r())
            .await?;
        row.map(|r| tenant_from_row(&r)).transpose()
    }

    /// All tenants.
    pub async fn tenant_list(&self) -> Result<Vec<Tenant>> {
        let rows = sqlx::query("SELECT * FROM tenants ORDER BY created_at")
            .fetch_all(self.r())
            .await?;
        rows.iter().map(tenant_from_row).collect()
    }

    /// Sets a tenant's instance quota.
    pub async fn tenant_set_quota(&self, app_id: i64, quota: i64) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let n = sqlx::query("UPDATE tenants SET instance_quota = $1 WHERE app_id = $2")
            .bind(quota)
            .bind(app_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if n == 0 {
            return Err(StoreError::NotFound(format!("tenant {app_id}")));
        }
        tx.commit().await?;
        Ok(())
    }
}

fn tenant_from_row(r: &sqlx::any::AnyRow) -> Result<Tenant> {
    Ok(Tenant {
        app_id: r.try_get("app_id")?,
        uin: r.try_get("uin")?,
        name: r.try_get("name")?,
        instance_quota: r.try_get("instance_quota")?,
        created_at: r.try_get("created_at")?,
    })
}
