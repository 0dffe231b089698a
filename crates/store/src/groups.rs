//! Spread placement groups (Tencent's "disaster recover groups", `ps-…`).

use crate::db::{col, json_col, placeholders};
use crate::instances::TxError;
use crate::{now_ms, Result, Store, TenantScope};
use gpucloud_core::error::CloudError;
use sqlx::any::AnyRow;

/// A stored group.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GroupRow {
    pub group_id: String,
    pub name: String,
    pub group_type: String,
    pub quota: i64,
    pub affinity: i64,
    pub strategy: String,
    pub partition_count: i64,
    pub tags: Vec<(String, String)>,
    pub created_at: i64,
    pub instance_ids: Vec<String>,
}

fn from_row(r: &AnyRow) -> Result<GroupRow> {
    Ok(GroupRow {
        group_id: col(r, "group_id")?,
        name: col(r, "name")?,
        group_type: col(r, "group_type")?,
        quota: col(r, "quota")?,
        affinity: col(r, "affinity")?,
        strategy: col(r, "strategy")?,
        partition_count: col(r, "partition_count")?,
        tags: json_col(r, "tags")?,
        created_at: col(r, "created_at")?,
        instance_ids: vec![],
    })
}

impl Store {
    /// Creates a group (or returns the one made by an earlier call with the same ClientToken).
    pub async fn group_create(
        &self,
        scope: &TenantScope,
        g: &GroupRow,
        client_token: Option<&str>,
    ) -> std::result::Result<GroupRow, TxError> {
        let mut tx = self.begin_write().await?;
        // The token first: a concurrent retry waits on it and then answers
        // with the group this call made.
        if let Some(t) = client_token {
            let n = sqlx::query(
                "INSERT INTO client_tokens (app_id, action, token, result, created_at) VALUES ($1, 'CreateDisasterRecoverGroup', $2, $3, $4) ON CONFLICT DO NOTHING",
            )
            .bind(scope.app_id())
            .bind(t)
            .bind(serde_json::to_string(&[&g.group_id]).unwrap_or_default())
            .bind(now_ms())
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n == 0 {
                let r = sqlx::query(
                    "SELECT result FROM client_tokens WHERE app_id = $1 AND action = 'CreateDisasterRecoverGroup' AND token = $2",
                )
                .bind(scope.app_id())
                .bind(t)
                .fetch_one(&mut *tx)
                .await?;
                let ids: Vec<String> = json_col(&r, "result")?;
                drop(tx);
                let mut v = self.groups(scope, Some(&ids)).await?;
                return v
                    .pop()
                    .ok_or_else(|| CloudError::PlacementGroupNotFound(ids.join(",")).into());
            }
        }
        sqlx::query(
            "INSERT INTO placement_groups (group_id, app_id, name, group_type, quota, affinity, strategy, partition_count, tags, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&g.group_id)
        .bind(scope.app_id())
        .bind(&g.name)
        .bind(&g.group_type)
        .bind(g.quota)
        .bind(g.affinity)
        .bind(&g.strategy)
        .bind(g.partition_count)
        .bind(serde_json::to_string(&g.tags).unwrap_or_else(|_| "[]".into()))
        .bind(g.created_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(g.clone())
    }

    /// Groups of a tenant, by ID or all, with their member instances.
    pub async fn groups(
        &self,
        scope: &TenantScope,
        ids: Option<&[String]>,
    ) -> Result<Vec<GroupRow>> {
        let rows = match ids {
            Some(ids) if !ids.is_empty() => {
                let sql = format!(
                    "SELECT * FROM placement_groups WHERE app_id = $1 AND group_id IN ({}) ORDER BY created_at, group_id",
                    placeholders(2, ids.len())
                );
                let mut q = sqlx::query(&sql).bind(scope.app_id());
                for id in ids {
                    q = q.bind(id);
                }
                q.fetch_all(self.r()).await?
            }
            Some(_) => vec![],
            None => sqlx::query(
                "SELECT * FROM placement_groups WHERE app_id = $1 ORDER BY created_at, group_id",
            )
            .bind(scope.app_id())
            .fetch_all(self.r())
            .await?,
        };
        let mut out: Vec<GroupRow> = rows.iter().map(from_row).collect::<Result<_>>()?;
        if !out.is_empty() {
            let ids: Vec<String> = out.iter().map(|g| g.group_id.clone()).collect();
            let sql = format!(
                "SELECT placement_group_id, instance_id FROM instances WHERE app_id = $1 AND state <> 'TERMINATED' AND placement_group_id IN ({}) ORDER BY instance_id",
                placeholders(2, ids.len())
            );
            let mut q = sqlx::query(&sql).bind(scope.app_id());
            for id in &ids {
                q = q.bind(id);
            }
            for r in q.fetch_all(self.r()).await? {
                let gid: String = col(&r, "placement_group_id")?;
                if let Some(g) = out.iter_mut().find(|g| g.group_id == gid) {
                    g.instance_ids.push(col(&r, "instance_id")?);
                }
            }
        }
        Ok(out)
    }

    /// Deletes empty groups (all or none).
    pub async fn groups_delete(
        &self,
        scope: &TenantScope,
        ids: &[String],
    ) -> std::result::Result<(), TxError> {
        let existing = self.groups(scope, Some(ids)).await?;
        for id in ids {
            match existing.iter().find(|g| &g.group_id == id) {
                None => return Err(CloudError::PlacementGroupNotFound(id.clone()).into()),
                Some(g) if !g.instance_ids.is_empty() => {
                    return Err(CloudError::PlacementGroupNotEmpty(id.clone()).into())
                }
                Some(_) => {}
            }
        }
        let mut tx = self.begin_write().await?;
        for id in ids {
            sqlx::query("DELETE FROM placement_groups WHERE app_id = $1 AND group_id = $2")
                .bind(scope.app_id())
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
