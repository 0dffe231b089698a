//! Images. Public images (no owner) are visible to every tenant; private
//! images only to their owner.

use crate::db::{col, json_col};
use crate::{now_ms, Result, Store, TenantScope};
use sqlx::any::AnyRow;

/// A stored image.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ImageRow {
    pub image_id: String,
    pub app_id: Option<i64>,
    pub name: String,
    pub os_name: String,
    pub platform: String,
    pub description: String,
    pub size_gib: i64,
    pub architecture: String,
    pub image_type: String,
    pub source: String,
    pub state: String,
    pub runtime: String,
    pub location: String,
    pub gpu_driver: bool,
    /// Whether TAT can reach instances of this image (VM images: the QEMU
    /// guest agent runs in them).
    pub guest_agent: bool,
    pub tags: Vec<(String, String)>,
    pub created_at: i64,
}

fn from_row(r: &AnyRow) -> Result<ImageRow> {
    let gd: i64 = col(r, "gpu_driver")?;
    let ga: i64 = col(r, "guest_agent")?;
    Ok(ImageRow {
        image_id: col(r, "image_id")?,
        app_id: col(r, "app_id")?,
        name: col(r, "name")?,
        os_name: col(r, "os_name")?,
        platform: col(r, "platform")?,
        description: col(r, "description")?,
        size_gib: col(r, "size_gib")?,
        architecture: col(r, "architecture")?,
        image_type: col(r, "image_type")?,
        source: col(r, "source")?,
        state: col(r, "state")?,
        runtime: col(r, "runtime")?,
        location: col(r, "location")?,
        gpu_driver: gd == 1,
        guest_agent: ga == 1,
        tags: json_col(r, "tags")?,
        created_at: col(r, "created_at")?,
    })
}

impl Store {
    /// Creates or updates an image (operator: built-in and imported images).
    pub async fn image_upsert(&self, i: &ImageRow) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO images (image_id, app_id, name, os_name, platform, description, size_gib, architecture, image_type, source, state, runtime, location, gpu_driver, tags, created_at, guest_agent)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
             ON CONFLICT (image_id) DO UPDATE SET app_id = $2, name = $3, os_name = $4, platform = $5, description = $6, size_gib = $7,
               architecture = $8, image_type = $9, source = $10, state = $11, runtime = $12, location = $13, gpu_driver = $14, tags = $15, guest_agent = $17",
        )
        .bind(&i.image_id)
        .bind(i.app_id)
        .bind(&i.name)
        .bind(&i.os_name)
        .bind(&i.platform)
        .bind(&i.description)
        .bind(i.size_gib)
        .bind(&i.architecture)
        .bind(&i.image_type)
        .bind(&i.source)
        .bind(&i.state)
        .bind(&i.runtime)
        .bind(&i.location)
        .bind(i64::from(i.gpu_driver))
        .bind(serde_json::to_string(&i.tags).unwrap_or_else(|_| "[]".into()))
        .bind(if i.created_at == 0 { now_ms() } else { i.created_at })
        .bind(i64::from(i.guest_agent))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Images a tenant can see: public ones and its own.
    pub async fn images_visible(&self, scope: &TenantScope) -> Result<Vec<ImageRow>> {
        let rows = sqlx::query("SELECT * FROM images WHERE app_id IS NULL OR app_id = $1 ORDER BY created_at, image_id")
            .bind(scope.app_id())
            .fetch_all(self.r())
            .await?;
        rows.iter().map(from_row).collect()
    }

    /// One image a tenant can see.
    pub async fn image_visible(&self, scope: &TenantScope, id: &str) -> Result<Option<ImageRow>> {
        let row = sqlx::query(
            "SELECT * FROM images WHERE image_id = $1 AND (app_id IS NULL OR app_id = $2)",
        )
        .bind(id)
        .bind(scope.app_id())
        .fetch_optional(self.r())
        .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// All images (operator view).
    pub async fn images_all(&self) -> Result<Vec<ImageRow>> {
        let rows = sqlx::query("SELECT * FROM images ORDER BY created_at, image_id")
            .fetch_all(self.r())
            .await?;
        rows.iter().map(from_row).collect()
    }
}
