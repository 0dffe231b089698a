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
            guest_agent: true,
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

/// An image the tenant may launch from, by id: `InvalidImageId.Malformed`
/// for a malformed id, `InvalidImageId.NotFound` for one that is absent or
/// another tenant's.
pub async fn visible(
    store: &Store,
    scope: &gpucloud_store::TenantScope,
    image_id: &str,
) -> Result<ImageRow, gpucloud_core::CloudError> {
    use gpucloud_api_types::ids::{is_valid, IdKind};
    use gpucloud_core::CloudError;
    if !is_valid(IdKind::Image, image_id) {
        return Err(CloudError::ImageIdMalformed(image_id.to_string()));
    }
    store
        .image_visible(scope, image_id)
        .await
        .map_err(super::internal)?
        .ok_or_else(|| CloudError::ImageNotFound(image_id.to_string()))
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

/// The manifest next to an image file (`image.json`), as the scripts in
/// `images/` write it.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageManifest {
    /// `img-…` (8 lower-case letters or digits after the prefix).
    pub id: String,
    /// Image name.
    pub name: String,
    /// Operating system.
    pub os_name: String,
    /// Platform (`Debian`, `Ubuntu` …).
    pub platform: String,
    /// Description.
    #[serde(default)]
    pub description: String,
    /// `container` or `qemu`.
    pub runtime: String,
    /// The image file (or directory), relative to the manifest.
    pub file: String,
    /// Disk size shown in the API, GiB.
    pub size_gib: i64,
    /// Unpacked size, MiB (informational).
    #[serde(default)]
    pub size_mib: i64,
    /// Whether a GPU driver is preinstalled.
    #[serde(default)]
    pub gpu_driver: bool,
    /// VM images: a kernel to boot directly (relative to the manifest);
    /// without one the VM boots its disk through firmware.
    #[serde(default)]
    pub kernel: Option<String>,
    /// VM images: the initial RAM disk for `kernel`.
    #[serde(default)]
    pub initrd: Option<String>,
    /// VM images: the kernel command line.
    #[serde(default)]
    pub cmdline: Option<String>,
    /// VM images: whether the image runs the QEMU guest agent (read by the
    /// agent; default yes).
    #[serde(default)]
    pub guest_agent: Option<bool>,
}

/// Why an image cannot be imported.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The manifest is unreadable or wrong.
    #[error("{path}: {reason}")]
    Manifest {
        /// Manifest path.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The store failed.
    #[error("database")]
    Store(#[from] gpucloud_store::StoreError),
}

/// Registers the image described by `manifest` as a public image. The image
/// file's location is kept relative to `images_root` when it lies under it
/// (agents resolve it against their own images directory), else absolute.
pub async fn import(
    store: &Store,
    manifest: &std::path::Path,
    images_root: &std::path::Path,
) -> Result<ImageRow, ImportError> {
    let bad = |reason: String| ImportError::Manifest {
        path: manifest.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(manifest).map_err(|e| bad(e.to_string()))?;
    let m: ImageManifest = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    if !gpucloud_api_types::ids::is_valid(gpucloud_api_types::ids::IdKind::Image, &m.id) {
        return Err(bad(format!(
            "`{}` is not an image ID (img- and 8 lower-case letters or digits)",
            m.id
        )));
    }
    if BUILTIN_IMAGES.iter().any(|b| b.id == m.id) {
        return Err(bad(format!(
            "{} is a built-in image ID; pick another",
            m.id
        )));
    }
    if !matches!(m.runtime.as_str(), "container" | "qemu") {
        return Err(bad(format!(
            "runtime `{}` is not one of container, qemu",
            m.runtime
        )));
    }
    if m.name.trim().is_empty() || m.name.chars().count() > 60 {
        return Err(bad("name must have 1 to 60 characters".into()));
    }
    if !(1..=16_384).contains(&m.size_gib) {
        return Err(bad("size_gib must be 1 to 16384".into()));
    }
    let dir = manifest
        .parent()
        .ok_or_else(|| bad("the manifest has no directory".into()))?;
    let file = dir.join(&m.file);
    if !file.exists() {
        return Err(bad(format!(
            "the image file {} does not exist",
            file.display()
        )));
    }
    let file = file.canonicalize().map_err(|e| bad(e.to_string()))?;
    for extra in [&m.kernel, &m.initrd].into_iter().flatten() {
        if m.runtime != "qemu" {
            return Err(bad("kernel and initrd are for qemu images".into()));
        }
        if !dir.join(extra).is_file() {
            return Err(bad(format!("{} does not exist", dir.join(extra).display())));
        }
    }
    if m.initrd.is_some() && m.kernel.is_none() {
        return Err(bad("an initrd needs a kernel".into()));
    }
    let location = match images_root
        .canonicalize()
        .ok()
        .and_then(|root| file.strip_prefix(root).ok().map(|p| p.to_path_buf()))
    {
        Some(rel) => rel.display().to_string(),
        None => file.display().to_string(),
    };
    let existing = store
        .images_all()
        .await?
        .into_iter()
        .find(|i| i.image_id == m.id);
    if let Some(e) = &existing {
        if e.app_id.is_some() {
            return Err(bad(format!("{} is a tenant's private image", m.id)));
        }
    }
    let row = ImageRow {
        image_id: m.id.clone(),
        app_id: None,
        name: m.name,
        os_name: m.os_name,
        platform: m.platform,
        description: m.description,
        size_gib: m.size_gib,
        architecture: "x86_64".into(),
        image_type: "PUBLIC_IMAGE".into(),
        source: "IMPORT".into(),
        state: "NORMAL".into(),
        runtime: m.runtime.clone(),
        location,
        gpu_driver: m.gpu_driver,
        // Containers are always reachable through the runtime.
        guest_agent: m.runtime == "container" || m.guest_agent.unwrap_or(true),
        tags: vec![("runtime".into(), m.runtime)],
        created_at: existing.map_or_else(gpucloud_store::now_ms, |e| e.created_at),
    };
    store.image_upsert(&row).await?;
    Ok(row)
}

/// Imports every `*/image.json` under `root` (what `up` does at start).
/// Returns the images imported and the manifests refused, with why.
pub async fn import_dir(store: &Store, root: &std::path::Path) -> (Vec<ImageRow>, Vec<String>) {
    let mut ok = Vec::new();
    let mut refused = Vec::new();
    let Ok(entries) = std::fs::read_dir(root) else {
        return (ok, refused);
    };
    let mut manifests: Vec<std::path::PathBuf> = entries
        .flatten()
        .map(|e| e.path().join("image.json"))
        .filter(|p| p.is_file())
        .collect();
    manifests.sort();
    for m in manifests {
        match import(store, &m, root).await {
            Ok(r) => ok.push(r),
            Err(e) => refused.push(e.to_string()),
        }
    }
    (ok, refused)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn manifests_import_with_relative_locations_or_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = gpucloud_store::Store::connect(
            &format!("sqlite://{}", dir.path().join("t.db").display()),
            gpucloud_store::SecretBox::from_key(&[2u8; 32]),
        )
        .await
        .unwrap();
        let root = dir.path().join("images");
        let good = root.join("busybox");
        std::fs::create_dir_all(&good).unwrap();
        std::fs::write(good.join("rootfs.tar.gz"), b"x").unwrap();
        std::fs::write(
            good.join("image.json"),
            r#"{"id":"img-gc0ctr12","name":"busybox","os_name":"Debian","platform":"Debian","runtime":"container","file":"rootfs.tar.gz","size_gib":1}"#,
        )
        .unwrap();
        let bad = root.join("bad");
        std::fs::create_dir_all(&bad).unwrap();
        std::fs::write(
            bad.join("image.json"),
            r#"{"id":"img-gc0ubt22","name":"x","os_name":"x","platform":"x","runtime":"container","file":"missing","size_gib":1}"#,
        )
        .unwrap();
        let (ok, refused) = import_dir(&store, &root).await;
        assert_eq!(ok.len(), 1, "{refused:?}");
        assert_eq!(ok[0].location, "busybox/rootfs.tar.gz");
        assert_eq!(
            ok[0].tags,
            vec![("runtime".to_string(), "container".to_string())]
        );
        assert_eq!(refused.len(), 1);
        assert!(refused[0].contains("built-in"), "{refused:?}");
        // Importing again keeps the creation time.
        let again = import(&store, &good.join("image.json"), &root)
            .await
            .unwrap();
        assert_eq!(again.created_at, ok[0].created_at);
    }
}
