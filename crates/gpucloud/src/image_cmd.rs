//! `gpucloud image import`: registers an image as a public image.
//!
//! Two kinds of input:
//! - a manifest (`image.json`) written by a script in `images/`: the files
//!   stay where they are, and agents resolve them against their images
//!   directory;
//! - a disk image as clouds publish them (a Debian or Ubuntu cloud image's
//!   qcow2, or raw, vmdk … — anything `qemu-img` reads): it is checked with
//!   `qemu-img info`, copied (or converted) into `<images-dir>/<image-id>/`
//!   as a standalone qcow2 next to a manifest written for it, and registered
//!   as a `runtime=qemu` image that boots through firmware. A failed import
//!   leaves neither files nor a catalog row behind.

use crate::admin::{store_of, Target};
use crate::cloud::chain;
use crate::output::{json, table, Output};
use anyhow::{bail, Context, Result};
use gpucloud_store::images::ImageRow;
use std::path::{Path, PathBuf};

/// Subcommands of `image`.
#[derive(clap::Subcommand, Debug)]
pub enum ImageCmd {
    /// Registers an image: an image.json from images/*/build.sh, or a disk
    /// image file (a cloud image's qcow2, raw, vmdk …) that is copied into the
    /// images directory.
    Import(ImportArgs),
}

/// Flags of `image import`.
#[derive(clap::Args, Debug)]
pub struct ImportArgs {
    /// An image.json, or a disk image file.
    pub file: PathBuf,
    /// Manifests: the images directory agents resolve image files against
    /// (default: the manifest's parent directory's parent).
    #[arg(long)]
    pub images_root: Option<PathBuf>,
    /// Disk images: the images directory to copy into (default:
    /// <data-dir>/images, where `up`'s agent looks). Hosts of a cluster need
    /// the same directory under their agent's --images-dir.
    #[arg(long)]
    pub images_dir: Option<PathBuf>,
    /// Disk images: the image ID (img- and 8 lower-case letters or digits;
    /// default: a new random one).
    #[arg(long)]
    pub id: Option<String>,
    /// Disk images: the image name (default: the file's name).
    #[arg(long)]
    pub name: Option<String>,
    /// Disk images: the operating system, e.g. "Ubuntu Server 24.04 LTS 64bit"
    /// (default: the name).
    #[arg(long)]
    pub os_name: Option<String>,
    /// Disk images: the platform, e.g. Ubuntu, Debian, CentOS.
    #[arg(long, default_value = "Linux")]
    pub platform: String,
    /// Disk images: a description.
    #[arg(long, default_value = "")]
    pub description: String,
    /// Disk images: the image has no QEMU guest agent (TAT commands cannot
    /// reach it; readiness is the console's login prompt).
    #[arg(long)]
    pub no_guest_agent: bool,
}

/// Flags of the top-level `image` command.
#[derive(clap::Args, Debug)]
pub struct ImageArgs {
    #[command(subcommand)]
    cmd: ImageCmd,
    #[command(flatten)]
    target: Target,
}

/// Runs `gpucloud image …`.
pub async fn run_top(a: ImageArgs) -> Result<()> {
    run(a.cmd, a.target).await
}

/// Runs an image command (also reached as `admin image …`).
pub async fn run(cmd: ImageCmd, target: Target) -> Result<()> {
    let ImageCmd::Import(args) = cmd;
    let store = store_of(&target).await?;
    let is_manifest = args.file.extension().is_some_and(|e| e == "json");
    let (row, copy_hint) = if is_manifest {
        let root = args
            .images_root
            .clone()
            .or_else(|| {
                args.file
                    .parent()
                    .and_then(|p| p.parent())
                    .map(PathBuf::from)
            })
            .unwrap_or_else(|| PathBuf::from("."));
        let row = gpucloud_server::app::images::import(&store, &args.file, &root)
            .await
            .map_err(|e| anyhow::anyhow!(chain(&e)))?;
        (row, root)
    } else {
        let images_dir = match &args.images_dir {
            Some(d) => d.clone(),
            None => target
                .data_dir
                .clone()
                .unwrap_or_else(crate::default_data_dir)
                .join("images"),
        };
        let row = import_disk(&store, &args, &images_dir).await?;
        (row, images_dir)
    };
    match target.output {
        Output::Json => json(&row),
        Output::Table => {
            table(
                &["Image", "Name", "Runtime", "Size GiB", "Location"],
                vec![vec![
                    row.image_id.clone(),
                    row.name.clone(),
                    row.runtime.clone(),
                    row.size_gib.to_string(),
                    row.location.clone(),
                ]],
            );
            eprintln!(
                "Agents look for the file under their images directory ({} here); on a cluster, copy it to every host that should run the image. Launch it with RunInstances --ImageId {}.",
                copy_hint.display(),
                row.image_id
            );
        }
    }
    Ok(())
}

/// What `qemu-img info` says of a disk image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskInfo {
    /// `qcow2`, `raw`, `vmdk` …
    pub format: String,
    /// Virtual size, bytes.
    pub virtual_size: u64,
    /// Whether it needs a backing file.
    pub has_backing: bool,
    /// Whether its data lives in an external file (qcow2 `data-file`).
    pub has_data_file: bool,
}

/// Reads a disk image's format and size with `qemu-img info`.
pub fn disk_info(file: &Path) -> Result<DiskInfo> {
    let out = std::process::Command::new("qemu-img")
        .args(["info", "--output=json", "-U"])
        .arg(file)
        .output()
        .context("qemu-img is needed to import disk images (apt-get install qemu-utils)")?;
    if !out.status.success() {
        bail!(
            "{} is not a disk image qemu-img can read: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("qemu-img info printed no JSON")?;
    let format = v["format"].as_str().unwrap_or_default().to_string();
    let virtual_size = v["virtual-size"].as_u64().unwrap_or(0);
    if format.is_empty() || virtual_size == 0 {
        bail!("{}: qemu-img found no disk format or size", file.display());
    }
    Ok(DiskInfo {
        format,
        virtual_size,
        has_backing: v.get("backing-filename").is_some(),
        has_data_file: v["format-specific"]["data"].get("data-file").is_some(),
    })
}

fn random_image_id() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    let tail: String = (0..8)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect();
    format!("img-{tail}")
}

/// Copies or converts `args.file` into `<images_dir>/<id>/disk.qcow2`,
/// writes its manifest and registers it. Nothing is left behind on failure.
pub async fn import_disk(
    store: &gpucloud_store::Store,
    args: &ImportArgs,
    images_dir: &Path,
) -> Result<ImageRow> {
    let src = args.file.clone();
    if !src.is_file() {
        bail!("{} is not a file", src.display());
    }
    let info = {
        let src = src.clone();
        tokio::task::spawn_blocking(move || disk_info(&src)).await??
    };
    // Only self-contained formats: a qcow2 that names another file (backing
    // or external data file) or a vmdk whose extents do would make QEMU or
    // qemu-img read files of this host into a tenant's disk.
    if !matches!(info.format.as_str(), "qcow2" | "raw") {
        bail!(
            "{} is a {} image; import qcow2 or raw (convert it yourself with `qemu-img convert -O qcow2` after checking it)",
            src.display(),
            info.format
        );
    }
    if info.has_backing || info.has_data_file {
        bail!(
            "{} refers to other files (a backing file or an external data file); import a standalone qcow2 (`qemu-img convert -O qcow2` flattens it)",
            src.display()
        );
    }
    let id = args.id.clone().unwrap_or_else(random_image_id);
    if !gpucloud_api_types::ids::is_valid(gpucloud_api_types::ids::IdKind::Image, &id) {
        bail!("`{id}` is not an image ID: img- and 8 lower-case letters or digits");
    }
    if store.images_all().await?.iter().any(|i| i.image_id == id) {
        bail!("image {id} already exists; pass another --id");
    }
    let name = args.name.clone().unwrap_or_else(|| {
        src.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| id.clone())
    });
    let name: String = name.chars().take(60).collect();
    let final_dir = images_dir.join(&id);
    if final_dir.exists() {
        bail!(
            "{} already exists; remove it or pass another --id",
            final_dir.display()
        );
    }
    std::fs::create_dir_all(images_dir)
        .with_context(|| format!("creating {}", images_dir.display()))?;
    let staging = images_dir.join(format!(".import-{id}-{}", std::process::id()));
    let manifest = serde_json::json!({
        "id": id,
        "name": name,
        "os_name": args.os_name.clone().unwrap_or_else(|| name.clone()),
        "platform": args.platform,
        "description": args.description,
        "runtime": "qemu",
        "file": "disk.qcow2",
        "size_gib": info.virtual_size.div_ceil(1 << 30).max(1),
        "guest_agent": !args.no_guest_agent,
    });
    // Only a directory this import renamed into place is removed on failure.
    let renamed = std::sync::atomic::AtomicBool::new(false);
    let result = async {
        std::fs::create_dir_all(&staging)?;
        {
            let (src, dst, info) = (src.clone(), staging.join("disk.qcow2"), info.clone());
            tokio::task::spawn_blocking(move || place_disk(&src, &dst, &info)).await??;
        }
        let size_mib = std::fs::metadata(staging.join("disk.qcow2"))?
            .len()
            .div_ceil(1 << 20);
        let mut m = manifest.clone();
        m["size_mib"] = size_mib.into();
        std::fs::write(staging.join("image.json"), serde_json::to_vec_pretty(&m)?)?;
        std::fs::rename(&staging, &final_dir)?;
        renamed.store(true, std::sync::atomic::Ordering::Relaxed);
        gpucloud_server::app::images::import(store, &final_dir.join("image.json"), images_dir)
            .await
            .map_err(|e| anyhow::anyhow!(chain(&e)))
    }
    .await;
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
        if renamed.load(std::sync::atomic::Ordering::Relaxed) {
            let _ = std::fs::remove_dir_all(&final_dir);
        }
    }
    result
}

/// A standalone qcow2 at `dst`: a copy of a qcow2 (with a progress bar), or
/// a raw disk converted by `qemu-img convert -f raw` (with its own).
fn place_disk(src: &Path, dst: &Path, info: &DiskInfo) -> Result<()> {
    if info.format == "qcow2" {
        use std::io::{Read, Write};
        let mut r = std::fs::File::open(src)?;
        let total = r.metadata()?.len();
        let mut w = std::fs::File::create(dst)?;
        let bar = indicatif::ProgressBar::new(total);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "copying {bytes}/{total_bytes} [{bar:30}] {eta}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        let mut buf = vec![0u8; 4 << 20];
        loop {
            let n = r.read(&mut buf)?;
            if n == 0 {
                break;
            }
            w.write_all(&buf[..n])?;
            bar.inc(n as u64);
        }
        w.sync_all()?;
        bar.finish_and_clear();
    } else {
        let mut cmd = std::process::Command::new("qemu-img");
        cmd.args(["convert", "-f", &info.format, "-O", "qcow2"]);
        if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            cmd.arg("-p");
        }
        let st = cmd.arg(src).arg(dst).status()?;
        if !st.success() {
            bail!("qemu-img convert {} failed ({st})", src.display());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qemu_img(args: &[&str]) {
        let st = std::process::Command::new("qemu-img")
            .args(args)
            .stdout(std::process::Stdio::null())
            .status()
            .expect("qemu-img (qemu-utils) is installed");
        assert!(st.success(), "qemu-img {args:?}");
    }

    async fn store(dir: &Path) -> gpucloud_store::Store {
        gpucloud_store::Store::connect(
            &format!("sqlite://{}", dir.join("t.db").display()),
            gpucloud_store::SecretBox::from_key(&[3u8; 32]),
        )
        .await
        .unwrap()
    }

    fn args(file: &Path, id: Option<&str>) -> ImportArgs {
        ImportArgs {
            file: file.to_path_buf(),
            images_root: None,
            images_dir: None,
            id: id.map(String::from),
            name: None,
            os_name: None,
            platform: "Ubuntu".into(),
            description: String::new(),
            no_guest_agent: false,
        }
    }

    #[tokio::test]
    async fn disk_images_are_copied_or_converted_and_registered() {
        let dir = tempfile::tempdir().unwrap();
        let st = store(dir.path()).await;
        let images = dir.path().join("images");
        // A qcow2 as clouds publish it: copied as is.
        let q = dir.path().join("noble-server-cloudimg-amd64.img");
        qemu_img(&["create", "-f", "qcow2", q.to_str().unwrap(), "3G"]);
        let row = import_disk(&st, &args(&q, Some("img-ubuntu24")), &images)
            .await
            .unwrap();
        assert_eq!(
            (
                row.image_id.as_str(),
                row.runtime.as_str(),
                row.size_gib,
                row.name.as_str()
            ),
            ("img-ubuntu24", "qemu", 3, "noble-server-cloudimg-amd64")
        );
        assert_eq!(row.location, "img-ubuntu24/disk.qcow2");
        let d = disk_info(&images.join("img-ubuntu24/disk.qcow2")).unwrap();
        assert_eq!((d.format.as_str(), d.has_backing), ("qcow2", false));
        let m: serde_json::Value =
            serde_json::from_slice(&std::fs::read(images.join("img-ubuntu24/image.json")).unwrap())
                .unwrap();
        assert_eq!(m["guest_agent"], true);
        assert!(m.get("kernel").is_none(), "boots through firmware");
        // A raw disk becomes a qcow2.
        let r = dir.path().join("disk.raw");
        qemu_img(&["create", "-f", "raw", r.to_str().unwrap(), "1536M"]);
        let row = import_disk(&st, &args(&r, None), &images).await.unwrap();
        assert_eq!(row.size_gib, 2);
        let d = disk_info(&images.join(&row.image_id).join("disk.qcow2")).unwrap();
        assert_eq!(d.format, "qcow2");
        // Images that name other files of this host are refused.
        let overlay = dir.path().join("overlay.qcow2");
        qemu_img(&[
            "create",
            "-f",
            "qcow2",
            "-F",
            "qcow2",
            "-b",
            q.to_str().unwrap(),
            overlay.to_str().unwrap(),
        ]);
        let e = import_disk(&st, &args(&overlay, None), &images)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("refers to other files"), "{e}");
        let vmdk = dir.path().join("disk.vmdk");
        qemu_img(&["create", "-f", "vmdk", vmdk.to_str().unwrap(), "1G"]);
        let e = import_disk(&st, &args(&vmdk, None), &images)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("import qcow2 or raw"), "{e}");
        // Nothing stays in staging.
        let names: Vec<String> = std::fs::read_dir(&images)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");
        assert_eq!(st.images_all().await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn bad_imports_leave_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let st = store(dir.path()).await;
        let images = dir.path().join("images");
        let q = dir.path().join("a.qcow2");
        qemu_img(&["create", "-f", "qcow2", q.to_str().unwrap(), "1G"]);
        import_disk(&st, &args(&q, Some("img-aaaaaaaa")), &images)
            .await
            .unwrap();
        // The same ID again, a bad ID, a file that is not there.
        let e = import_disk(&st, &args(&q, Some("img-aaaaaaaa")), &images)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("already exists"), "{e}");
        let e = import_disk(&st, &args(&q, Some("img-BAD")), &images)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("not an image ID"), "{e}");
        let e = import_disk(&st, &args(&dir.path().join("nope.qcow2"), None), &images)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("not a file"), "{e}");
        assert_eq!(std::fs::read_dir(&images).unwrap().count(), 1);
        assert_eq!(st.images_all().await.unwrap().len(), 1);
    }
}
