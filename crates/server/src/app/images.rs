//! Images: the built-in catalog images and their API view.

use gpucloud_api_types::cvm::{Image, Tag};
use gpucloud_core::catalog::BUILTIN_IMAGES;
use gpucloud_store::images::ImageRow;
use gpucloud_store::Store;

/// When the built-in images were published (a fixed date, so answers are stable).
const BUILTIN_CREATED_MS: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

/// Writes the built-in images into the store (idempotent).
pub async fn seed_builtin(store: &Store) -> gpucloud_store::Result<()> {
    let existing = store.images_all().await?;
    for b in BUILTIN_IMAGES {
        let row = ImageRow {
            image_id: b.id.to_string(),
            app_id: None,
            name: b.name.to_string(),
            os_name: b.os_name.to_string(),
            platform: b.platform.to_string(),
            description: b.description.to_string(),
            size_gib: b.size_gib,
            architecture: "x86_64".into(),
            image_type: "PUBLIC_IMAGE".into(),
            source: "OFFICIAL".into(),
            state: "NORMAL".into(),
            runtime: b.runtime.as_str().to_string(),
            location: String::new(),
            gpu_driver: b.gpu_driver,
            tags: vec![("runtime".into(), b.runtime.as_str().into())],
            created_at: BUILTIN_CREATED_MS,
        };
        if existing.contains(&row) {
            continue;
        }
        store.image_upsert(&row).await?;
    }
    Ok(())
}

/// The API view of an image.
pub fn to_api(i: &ImageRow) -> Image {
    Image {
        image_id: i.image_id.clone(),
        os_name: i.os_name.clone(),
        image_type: i.image_type.clone(),
        created_time: gpucloud_store::iso(i.created_at),
        image_name: i.name.clone(),
        image_description: i.description.clone(),
        image_size: i.size_gib,
        architecture: i.architecture.clone(),
        image_state: i.state.clone(),
        platform: i.platform.clone(),
        image_creator: if i.app_id.is_some() {
            "tenant".into()
        } else {
            "gpucloud".into()
        },
        image_source: i.source.clone(),
        sync_percent: 100,
        is_support_cloudinit: true,
        tags: i
            .tags
            .iter()
            .map(|(k, v)| Tag {
                key: Some(k.clone()),
                value: Some(v.clone()),
            })
            .collect(),
        license_type: "TencentCloud".into(),
        image_family: String::new(),
        image_deprecated: false,
    }
}
