//! SSH key pairs of a tenant. Private keys are never stored.

use crate::db::{col, json_col, placeholders};
use crate::{now_ms, Result, Store, StoreError, TenantScope};
use gpucloud_core::error::CloudError;
use sqlx::any::AnyRow;

/// Most key pairs a tenant may hold.
pub const MAX_KEY_PAIRS: i64 = 500;

/// A stored key pair.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KeyPairRow {
    pub key_id: String,
    pub name: String,
    pub project_id: i64,
    pub description: String,
    pub public_key: String,
    pub fingerprint: String,
    pub tags: Vec<(String, String)>,
    pub created_at: i64,
    pub instance_ids: Vec<String>,
}

fn from_row(r: &AnyRow) -> Result<KeyPairRow> {
    Ok(KeyPairRow {
        key_id: col(r, "key_id")?,
        name: col(r, "name")?,
        project_id: col(r, "project_id")?,
        description: col(r, "description")?,
        public_key: col(r, "public_key")?,
        fingerprint: col(r, "fingerprint")?,
        tags: json_col(r, "tags")?,
        created_at: col(r, "created_at")?,
        instance_ids: vec![],
    })
}

/// A new key pair.
#[derive(Debug, Clone)]
pub struct NewKeyPair {
    pub key_id: String,
    pub name: String,
    pub project_id: i64,
    pub public_key: String,
    pub fingerprint: String,
    pub tags: Vec<(String, String)>,
}

impl Store {
    /// Stores a key pair; refuses a duplicate name or public key.
    pub async fn key_pair_create(
        &self,
        scope: &TenantScope,
        k: &NewKeyPair,
    ) -> std::result::Result<(), crate::instances::TxError> {
        let mut tx = self.begin_write().await?;
        let n: i64 = col(
            &sqlx::query("SELECT CAST(COUNT(*) AS BIGINT) AS n FROM key_pairs WHERE app_id = $1")
                .bind(scope.app_id())
                .fetch_one(&mut *tx)
                .await?,
            "n",
        )?;
        if n >= MAX_KEY_PAIRS {
            return Err(CloudError::KeyPairLimit(MAX_KEY_PAIRS).into());
        }
        if sqlx::query("SELECT key_id FROM key_pairs WHERE app_id = $1 AND name = $2")
            .bind(scope.app_id())
            .bind(&k.name)
            .fetch_optional(&mut *tx)
            .await?
            .is_some()
        {
            return Err(CloudError::KeyPairNameDuplicate(k.name.clone()).into());
        }
        if let Some(r) =
            sqlx::query("SELECT key_id FROM key_pairs WHERE app_id = $1 AND fingerprint = $2")
                .bind(scope.app_id())
                .bind(&k.fingerprint)
                .fetch_optional(&mut *tx)
                .await?
        {
            return Err(CloudError::PublicKeyDuplicate(col(&r, "key_id")?).into());
        }
        sqlx::query(
            "INSERT INTO key_pairs (key_id, app_id, name, project_id, description, public_key, fingerprint, tags, created_at)
             VALUES ($1, $2, $3, $4, '', $5, $6, $7, $8)",
        )
        .bind(&k.key_id)
        .bind(scope.app_id())
        .bind(&k.name)
        .bind(k.project_id)
        .bind(&k.public_key)
        .bind(&k.fingerprint)
        .bind(serde_json::to_string(&k.tags).unwrap_or_else(|_| "[]".into()))
        .bind(now_ms())
        .execute(&mut *tx)
        .await
        .map_err(|e| match StoreError::from(e) {
            StoreError::Conflict(_) => crate::instances::TxError::Cloud(CloudError::KeyPairNameDuplicate(k.name.clone())),
            other => other.into(),
        })?;
        tx.commit().await?;
        Ok(())
    }

    /// Key pairs of a tenant, by IDs (unknown IDs left out) or all.
    pub async fn key_pairs(
        &self,
        scope: &TenantScope,
        ids: Option<&[String]>,
    ) -> Result<Vec<KeyPairRow>> {
        let rows = match ids {
            Some(ids) if !ids.is_empty() => {
                let sql = format!(
                    "SELECT * FROM key_pairs WHERE app_id = $1 AND key_id IN ({}) ORDER BY created_at, key_id",
                    placeholders(2, ids.len())
                );
                let mut q = sqlx::query(&sql).bind(scope.app_id());
                for id in ids {
                    q = q.bind(id);
                }
                q.fetch_all(self.r()).await?
            }
            Some(_) => vec![],
            None => {
                sqlx::query("SELECT * FROM key_pairs WHERE app_id = $1 ORDER BY created_at, key_id")
                    .bind(scope.app_id())
                    .fetch_all(self.r())
                    .await?
            }
        };
        let mut out: Vec<KeyPairRow> = rows.iter().map(from_row).collect::<Result<_>>()?;
        if !out.is_empty() {
            let ids: Vec<String> = out.iter().map(|k| k.key_id.clone()).collect();
            let sql = format!(
                "SELECT ik.key_id, ik.instance_id FROM instance_key_pairs ik JOIN instances i ON i.instance_id = ik.instance_id
                 WHERE i.app_id = $1 AND i.state <> 'TERMINATED' AND ik.key_id IN ({}) ORDER BY ik.instance_id",
                placeholders(2, ids.len())
            );
            let mut q = sqlx::query(&sql).bind(scope.app_id());
            for id in &ids {
                q = q.bind(id);
            }
            for r in q.fetch_all(self.r()).await? {
                let kid: String = col(&r, "key_id")?;
                if let Some(k) = out.iter_mut().find(|k| k.key_id == kid) {
                    k.instance_ids.push(col(&r, "instance_id")?);
                }
            }
        }
        Ok(out)
    }

    /// Deletes key pairs (all or none); refuses ones still associated.
    pub async fn key_pairs_delete(
        &self,
        scope: &TenantScope,
        ids: &[String],
    ) -> std::result::Result<(), crate::instances::TxError> {
        let existing = self.key_pairs(scope, Some(ids)).await?;
        let missing: Vec<String> = ids
            .iter()
            .filter(|id| !existing.iter().any(|k| &k.key_id == *id))
            .cloned()
            .collect();
        if !missing.is_empty() {
            return Err(CloudError::KeyPairNotFound(missing).into());
        }
        if let Some(k) = existing.iter().find(|k| !k.instance_ids.is_empty()) {
            return Err(CloudError::KeyPairInUse {
                key: k.key_id.clone(),
                instances: k.instance_ids.clone(),
            }
            .into());
        }
        let mut tx = self.begin_write().await?;
        for id in ids {
            sqlx::query("DELETE FROM key_pairs WHERE app_id = $1 AND key_id = $2")
                .bind(scope.app_id())
                .bind(id)
                .execute(&mut *tx)
                .await?;
            // Checked again under the row lock: an association that
            // committed since the check above makes the key in use.
            let users: Vec<String> = sqlx::query(
                "SELECT ik.instance_id FROM instance_key_pairs ik JOIN instances i ON i.instance_id = ik.instance_id
                 WHERE ik.key_id = $1 AND i.state <> 'TERMINATED' ORDER BY ik.instance_id",
            )
            .bind(id)
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| crate::db::col(r, "instance_id"))
            .collect::<crate::Result<_>>()?;
            if !users.is_empty() {
                return Err(CloudError::KeyPairInUse {
                    key: id.clone(),
                    instances: users,
                }
                .into());
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Renames a key pair or changes its description.
    pub async fn key_pair_modify(
        &self,
        scope: &TenantScope,
        id: &str,
        name: Option<&str>,
        description: Option<&str>,
    ) -> std::result::Result<(), crate::instances::TxError> {
        let mut tx = self.begin_write().await?;
        if let Some(n) = name {
            if let Some(r) =
                sqlx::query("SELECT key_id FROM key_pairs WHERE app_id = $1 AND name = $2")
                    .bind(scope.app_id())
                    .bind(n)
                    .fetch_optional(&mut *tx)
                    .await?
            {
                let other: String = col(&r, "key_id")?;
                if other != id {
                    return Err(CloudError::KeyPairNameDuplicate(n.to_string()).into());
                }
            }
        }
        let changed = sqlx::query(
            "UPDATE key_pairs SET name = COALESCE($1, name), description = COALESCE($2, description) WHERE app_id = $3 AND key_id = $4",
        )
        .bind(name.map(String::from))
        .bind(description.map(String::from))
        .bind(scope.app_id())
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed == 0 {
            return Err(CloudError::KeyPairNotFound(vec![id.to_string()]).into());
        }
        tx.commit().await?;
        Ok(())
    }
}
