//! Adding an image to an OCI image layout: a committed layer on top of a base image, as a new
//! manifest and config tagged in `index.json`.
//!
//! Crash safety comes from the order of writes: every blob (base layers copied in, the new
//! layer, config, manifest) is written to a temp name, synced and renamed to its digest first;
//! `index.json` is replaced last, by rename. A crash at any point leaves the old index, which
//! names only blobs that were there before; at worst unreferenced blobs stay behind, which
//! layout readers ignore. Concurrent commits to one layout are serialized by an flock on the
//! layout directory, so neither loses the other's tag.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::blob::{sha256_id, Compression, Digests};
use super::error::{ImageError, IoContext, Result};
use super::oci::{
    digest_hex, media, Descriptor, History, Image, ImageConfig, ImageRef, Index, Layout, Manifest,
    OciLayoutFile, LAYOUT_VERSION, REF_NAME,
};

use crate::sys::c;

/// The annotations podman and buildah put on a manifest to name the image it was built on.
const BASE_NAME: &str = "org.opencontainers.image.base.name";
const BASE_DIGEST: &str = "org.opencontainers.image.base.digest";

/// `--to-layout DIR:TAG`: where the new image goes. The directory need not exist yet, so the
/// split is textual: at the last `:`, the tag holding no `/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetRef {
    pub dir: PathBuf,
    pub tag: String,
}

impl TargetRef {
    pub fn parse(s: &str) -> Result<TargetRef> {
        match s.rsplit_once(':') {
            Some((dir, tag)) if !dir.is_empty() && valid_tag(tag) => Ok(TargetRef {
                dir: dir.into(),
                tag: tag.into(),
            }),
            _ => Err(ImageError::BadTarget(s.to_string())),
        }
    }
}

fn valid_tag(tag: &str) -> bool {
    !tag.is_empty()
        && tag.len() <= 128
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// What the new image is built on: a layout (the target or another) and a tag in it.
pub struct Base {
    pub layout: Layout,
    pub image: Image,
    /// How the base was named, for the base-name annotation.
    pub name: String,
}

impl Base {
    /// `--from`: `DIR[:TAG]` when DIR is an OCI layout, otherwise a tag of the target layout.
    pub fn resolve(from: &str, target: &TargetRef) -> Result<Base> {
        let as_ref = ImageRef::parse(from);
        if as_ref.dir.join("oci-layout").is_file() {
            let layout = Layout::open(&as_ref.dir)?;
            let image = layout.resolve(as_ref.tag.as_deref())?;
            return Ok(Base {
                layout,
                image,
                name: from.to_string(),
            });
        }
        let layout = Layout::open(&target.dir).map_err(|source| ImageError::BadBase {
            from: from.to_string(),
            source,
        })?;
        let image = layout.resolve(Some(from))?;
        Ok(Base {
            layout,
            image,
            name: from.to_string(),
        })
    }
}

/// The new image's history entry.
pub struct Provenance {
    /// RFC 3339 time, also the config's `created`.
    pub created: String,
    pub created_by: String,
}

/// A layer blob already written to a file (by `stratafs commit`).
pub struct LayerBlob<'a> {
    pub path: &'a Path,
    pub digests: &'a Digests,
    pub compression: Compression,
}

/// What was added to the layout.
#[derive(Debug)]
pub struct Appended {
    pub manifest: Descriptor,
    pub config_digest: String,
}

/// Writes the image `base` + `layer` into `target` under its tag. `layer.path` is moved into
/// the layout when it is one of its temp files ([`TargetLayout::temp_path`]), copied otherwise.
pub fn append(
    target: &TargetLayout,
    tag: &str,
    base: &Base,
    layer: LayerBlob<'_>,
    provenance: &Provenance,
) -> Result<Appended> {
    let _lock = target.lock()?;
    let manifest_type = base
        .image
        .manifest_descriptor
        .media_type
        .as_str()
        .to_string();
    let layer_type = layer_media_type(&manifest_type, layer.compression)?;

    // 1. Blobs: the base's layers (when the base is in another layout), the new layer, the
    //    config and the manifest.
    if !same_dir(base.layout.dir(), target.dir()) {
        for (i, l) in base.image.layers.iter().enumerate() {
            target.copy_blob(
                &base.layout,
                &l.descriptor,
                &format!("base layer {}", i + 1),
            )?;
        }
    }
    target.add_layer_file(layer.path, &layer.digests.digest)?;
    let layer_desc = Descriptor {
        media_type: layer_type.to_string(),
        digest: layer.digests.digest.clone(),
        size: layer.digests.size,
        ..Default::default()
    };
    let config = new_config(&base.image.config, &layer.digests.diff_id, provenance);
    let config_desc = target.write_json_blob(
        base.image.manifest.config.media_type.as_str(),
        &config,
        "image config",
    )?;
    let manifest = new_manifest(&base.image, &base.name, config_desc.clone(), layer_desc);
    let mut manifest_desc = target.write_json_blob(&manifest_type, &manifest, "image manifest")?;
    target.sync_blobs()?;

    // 2. The index, last.
    manifest_desc
        .annotations
        .insert(REF_NAME.to_string(), tag.to_string());
    target.set_tag(tag, manifest_desc.clone())?;
    Ok(Appended {
        manifest: manifest_desc,
        config_digest: config_desc.digest,
    })
}

/// The layer's media type in a manifest of `manifest_type`: OCI types in OCI manifests,
/// Docker's in Docker ones (which have no zstd).
fn layer_media_type(manifest_type: &str, compression: Compression) -> Result<&'static str> {
    match (manifest_type, compression) {
        (media::DOCKER_MANIFEST, Compression::None) => Ok(media::DOCKER_LAYER),
        (media::DOCKER_MANIFEST, Compression::Gzip) => Ok(media::DOCKER_LAYER_GZIP),
        (media::DOCKER_MANIFEST, Compression::Zstd) => Err(ImageError::ZstdInDockerManifest),
        (_, c) => Ok(c.media_type()),
    }
}

/// The base's config with the new layer: its diffID appended, a history entry for it, and
/// the new creation time. Everything else (environment, command, labels...) is kept.
pub fn new_config(base: &ImageConfig, diff_id: &str, provenance: &Provenance) -> ImageConfig {
    let mut config = base.clone();
    config.rootfs.diff_ids.push(diff_id.to_string());
    config.history.push(History {
        created: Some(provenance.created.clone()),
        created_by: Some(provenance.created_by.clone()),
        ..Default::default()
    });
    config.created = Some(provenance.created.clone());
    config
}

/// The base's manifest with the new config and layer, naming the base in its annotations
/// (OCI manifests only: Docker's have none).
pub fn new_manifest(
    base: &Image,
    base_name: &str,
    config: Descriptor,
    layer: Descriptor,
) -> Manifest {
    let mut manifest = base.manifest.clone();
    manifest.config = config;
    manifest.layers.push(layer);
    if manifest.media_type.as_deref() != Some(media::DOCKER_MANIFEST) {
        manifest
            .annotations
            .insert(BASE_NAME.into(), base_name.to_string());
        manifest
            .annotations
            .insert(BASE_DIGEST.into(), base.manifest_descriptor.digest.clone());
    }
    manifest
}

/// A layout being written to.
pub struct TargetLayout {
    dir: PathBuf,
}

impl TargetLayout {
    /// Opens the layout at `dir`, or makes one there (`oci-layout`, an empty index) when `dir`
    /// does not exist or is empty.
    pub fn open_or_create(dir: &Path) -> Result<TargetLayout> {
        let target = TargetLayout {
            dir: dir.to_path_buf(),
        };
        let empty = match std::fs::read_dir(dir) {
            Ok(mut entries) => entries.next().is_none(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::fs::create_dir(dir).context("create the layout directory", dir)?;
                true
            }
            Err(e) => return Err(ImageError::io("read", dir, e)),
        };
        if !empty {
            Layout::open(dir)?;
            std::fs::create_dir_all(target.blob_dir()).context("create", &target.blob_dir())?;
            return Ok(target);
        }
        std::fs::create_dir_all(target.blob_dir()).context("create", &target.blob_dir())?;
        // The index first, the marker last: a directory with a marker is a whole layout.
        let index = Index {
            schema_version: 2,
            media_type: Some(media::OCI_INDEX.into()),
            ..Default::default()
        };
        target.replace_file("index.json", &to_json(&index, "index")?)?;
        let marker = OciLayoutFile {
            image_layout_version: LAYOUT_VERSION.into(),
        };
        target.replace_file("oci-layout", &to_json(&marker, "layout marker")?)?;
        Ok(target)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn blob_dir(&self) -> PathBuf {
        self.dir.join("blobs").join("sha256")
    }

    /// A temp name in the blob directory for a file to be moved in by `append` (`.NAME`:
    /// hidden, never taken for a blob, whose names are 64 hex digits).
    pub fn temp_path(&self, name: &str) -> PathBuf {
        self.blob_dir()
            .join(format!(".{name}.{}.partial", std::process::id()))
    }

    /// Exclusive flock on the layout directory, for as long as the file lives.
    fn lock(&self) -> Result<File> {
        let dir = File::open(&self.dir).context("open", &self.dir)?;
        dir.lock().context("lock", &self.dir)?;
        Ok(dir)
    }

    fn blob_path(&self, digest: &str) -> Result<PathBuf> {
        let hex = digest_hex(digest).ok_or_else(|| ImageError::BadDigest {
            what: "digest",
            digest: digest.to_string(),
        })?;
        Ok(self.blob_dir().join(hex))
    }

    /// Whether the blob is there with the right size and content.
    fn has_blob(&self, desc: &Descriptor) -> bool {
        match Layout::open(&self.dir).and_then(|l| l.open_blob(desc, "blob")) {
            Ok(blob) => blob.finish().is_ok(),
            Err(_) => false,
        }
    }

    /// Copies a blob from `from`, verifying it on the way, unless this layout has it intact.
    fn copy_blob(&self, from: &Layout, desc: &Descriptor, what: &str) -> Result<()> {
        if self.has_blob(desc) {
            return Ok(());
        }
        let mut src = from.open_blob(desc, what)?;
        let dest = self.blob_path(&desc.digest)?;
        self.write_then_rename(&dest, |out| io::copy(&mut src, out).map(|_| ()))?;
        if let Err(e) = src.finish() {
            let _ = std::fs::remove_file(&dest);
            return Err(e.into());
        }
        Ok(())
    }

    /// Moves (or, from outside the layout, copies) the layer file to its blob name.
    fn add_layer_file(&self, path: &Path, digest: &str) -> Result<()> {
        let dest = self.blob_path(digest)?;
        if path.parent() == Some(self.blob_dir().as_path()) {
            return std::fs::rename(path, &dest).map_err(|source| ImageError::Rename {
                from: path.to_path_buf(),
                to: dest,
                source,
            });
        }
        let mut src = File::open(path).context("open the layer", path)?;
        self.write_then_rename(&dest, |out| io::copy(&mut src, out).map(|_| ()))
    }

    /// Serializes `value` and stores it as a blob; returns its descriptor.
    fn write_json_blob<T: serde::Serialize>(
        &self,
        media_type: &str,
        value: &T,
        what: &'static str,
    ) -> Result<Descriptor> {
        let bytes = to_json(value, what)?;
        let digest = sha256_id(Sha256::digest(&bytes).as_slice());
        let dest = self.blob_path(&digest)?;
        self.write_then_rename(&dest, |out| out.write_all(&bytes))?;
        Ok(Descriptor {
            media_type: media_type.to_string(),
            digest,
            size: bytes.len() as u64,
            ..Default::default()
        })
    }

    /// Syncs the blob directory, so every renamed blob is on disk before the index names it.
    fn sync_blobs(&self) -> Result<()> {
        sync_dir(&self.blob_dir())
    }

    /// Points `tag` at `manifest` in index.json; every other entry stays as it was.
    fn set_tag(&self, tag: &str, manifest: Descriptor) -> Result<()> {
        let layout = Layout::open(&self.dir)?;
        let mut index = layout.index()?;
        index.manifests.retain(|d| d.ref_name() != Some(tag));
        index.manifests.push(manifest);
        self.replace_file("index.json", &to_json(&index, "index")?)
    }

    /// Replaces `NAME` in the layout directory by rename from a synced temp file.
    fn replace_file(&self, name: &str, bytes: &[u8]) -> Result<()> {
        self.write_then_rename(&self.dir.join(name), |out| out.write_all(bytes))?;
        sync_dir(&self.dir)
    }

    /// Writes `dest` through a temp file next to it: filled by `fill`, synced, renamed.
    fn write_then_rename(
        &self,
        dest: &Path,
        fill: impl FnOnce(&mut File) -> io::Result<()>,
    ) -> Result<()> {
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let temp = dest.with_file_name(format!(".{name}.{}.partial", std::process::id()));
        let written = (|| -> io::Result<()> {
            let mut out = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o644)
                .custom_flags(c::O_NOFOLLOW | c::O_CLOEXEC)
                .open(&temp)?;
            fill(&mut out)?;
            out.sync_all()?;
            std::fs::rename(&temp, dest)
        })();
        written.map_err(|e| {
            let _ = std::fs::remove_file(&temp);
            ImageError::io("write", dest, e)
        })
    }
}

/// `value` as JSON; `what` names the document in the error.
fn to_json<T: serde::Serialize>(value: &T, what: &'static str) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|source| ImageError::Serialize { what, source })
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .context("sync", dir)
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// `created` for the new image: `SOURCE_DATE_EPOCH` when set (reproducible builds), else now.
pub fn creation_time() -> Result<String> {
    let secs = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => v
            .trim()
            .parse::<u64>()
            .map_err(|_| ImageError::SourceDateEpoch(v.clone()))?,
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    };
    Ok(rfc3339(secs))
}

/// `YYYY-MM-DDTHH:MM:SSZ` for seconds since the epoch (UTC), as volume records write it.
pub fn rfc3339(secs: u64) -> String {
    crate::volume::rfc3339_utc(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::super::blob::BlobWriter;
    use super::*;

    /// A temp dir removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(label: &str) -> Scratch {
            let dir = std::env::temp_dir().join(format!(
                "stratafs-layout-write-{label}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A layer file holding `data` (any bytes do: the writer never looks inside).
    fn layer_file(dir: &Path, name: &str, data: &[u8], c: Compression) -> (PathBuf, Digests) {
        let mut w = BlobWriter::new(Vec::new(), c).unwrap();
        w.write_all(data).unwrap();
        let (digests, bytes) = w.finish().unwrap();
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        (path, digests)
    }

    fn provenance(by: &str) -> Provenance {
        Provenance {
            created: rfc3339(1_790_000_000),
            created_by: by.into(),
        }
    }

    /// A layout at `dir` with one image tagged `tag`: one layer, a config with an
    /// environment and a history entry, made by this module from an empty base.
    fn base_layout(dir: &Path, scratch: &Path, tag: &str) -> Descriptor {
        let target = TargetLayout::open_or_create(dir).unwrap();
        let config = ImageConfig {
            architecture: Some("amd64".into()),
            os: Some("linux".into()),
            history: vec![History {
                created_by: Some("base".into()),
                ..Default::default()
            }],
            extra: [("config".to_string(), serde_json::json!({"Env": ["A=1"]}))].into(),
            ..Default::default()
        };
        let (path, digests) = layer_file(scratch, "base.tar", b"base layer", Compression::None);
        target.add_layer_file(&path, &digests.digest).unwrap();
        let mut config = config;
        config.rootfs.kind = "layers".into();
        config.rootfs.diff_ids.push(digests.diff_id.clone());
        let config = target
            .write_json_blob(media::OCI_CONFIG, &config, "config")
            .unwrap();
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(media::OCI_MANIFEST.into()),
            config,
            layers: vec![Descriptor {
                media_type: media::OCI_LAYER.into(),
                digest: digests.digest,
                size: digests.size,
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut desc = target
            .write_json_blob(media::OCI_MANIFEST, &manifest, "manifest")
            .unwrap();
        desc.annotations.insert(REF_NAME.into(), tag.into());
        target.set_tag(tag, desc.clone()).unwrap();
        desc
    }

    fn target(dir: &Path, tag: &str) -> TargetRef {
        TargetRef {
            dir: dir.to_path_buf(),
            tag: tag.into(),
        }
    }

    /// Every blob the image tagged `tag` names is present and intact.
    fn assert_whole(dir: &Path, tag: &str) -> Image {
        let layout = Layout::open(dir).unwrap();
        let image = layout.resolve(Some(tag)).unwrap();
        for l in &image.layers {
            layout
                .open_blob(&l.descriptor, "layer")
                .unwrap()
                .finish()
                .unwrap();
        }
        image
    }

    #[test]
    fn a_new_tag_in_the_same_layout_stacks_the_layer_and_keeps_the_old_tag() {
        let s = Scratch::new("same");
        let dir = s.0.join("layout");
        let old = base_layout(&dir, &s.0, "v1");
        let to = target(&dir, "v2");
        let base = Base::resolve("v1", &to).unwrap();
        let (path, digests) = layer_file(&s.0, "new.tar.gz", b"new layer", Compression::Gzip);
        let layout = TargetLayout::open_or_create(&dir).unwrap();
        let layer = LayerBlob {
            path: &path,
            digests: &digests,
            compression: Compression::Gzip,
        };
        let added = append(&layout, "v2", &base, layer, &provenance("made here")).unwrap();

        let image = assert_whole(&dir, "v2");
        assert_eq!(image.manifest_descriptor.digest, added.manifest.digest);
        let diff_ids: Vec<&str> = image.layers.iter().map(|l| l.diff_id.as_str()).collect();
        assert_eq!(
            diff_ids,
            [base.image.layers[0].diff_id.as_str(), &digests.diff_id]
        );
        let top = &image.layers[1].descriptor;
        assert_eq!(top.media_type, media::OCI_LAYER_GZIP);
        assert_eq!(
            (top.digest.as_str(), top.size),
            (digests.digest.as_str(), digests.size)
        );
        let history: Vec<Option<&str>> = image
            .config
            .history
            .iter()
            .map(|h| h.created_by.as_deref())
            .collect();
        assert_eq!(history, [Some("base"), Some("made here")]);
        assert_eq!(
            image.config.history[1].created.as_deref(),
            Some("2026-09-21T14:13:20Z")
        );
        assert_eq!(
            image.config.created.as_deref(),
            Some("2026-09-21T14:13:20Z")
        );
        // What stratafs does not read is kept.
        assert_eq!(
            image.config.extra["config"],
            serde_json::json!({"Env": ["A=1"]})
        );
        assert_eq!(image.manifest.annotations[BASE_DIGEST], old.digest);
        assert_eq!(image.manifest.annotations[BASE_NAME], "v1");

        // The old tag still names the same manifest, and the index holds both.
        let index = Layout::open(&dir).unwrap().index().unwrap();
        let v1: Vec<&Descriptor> = index
            .manifests
            .iter()
            .filter(|d| d.ref_name() == Some("v1"))
            .collect();
        assert_eq!(v1.len(), 1);
        assert_eq!(v1[0].digest, old.digest);
        assert_eq!(index.manifests.len(), 2);
        // A layer file outside the layout is copied, not moved.
        assert!(path.exists());
    }

    #[test]
    fn a_new_layout_gets_the_base_layers_copied_and_verified() {
        let s = Scratch::new("new");
        let src = s.0.join("src");
        base_layout(&src, &s.0, "base");
        let dir = s.0.join("out");
        let to = target(&dir, "c1");
        let base = Base::resolve(&format!("{}:base", src.display()), &to).unwrap();
        let layout = TargetLayout::open_or_create(&dir).unwrap();
        let temp = layout.temp_path("layer.tar.zst");
        let (made, digests) = layer_file(&s.0, "l.tar.zst", b"zstd layer", Compression::Zstd);
        std::fs::rename(&made, &temp).unwrap();
        let layer = LayerBlob {
            path: &temp,
            digests: &digests,
            compression: Compression::Zstd,
        };
        append(&layout, "c1", &base, layer, &provenance("x")).unwrap();
        let image = assert_whole(&dir, "c1");
        assert_eq!(image.layers.len(), 2);
        assert_eq!(image.layers[1].descriptor.media_type, media::OCI_LAYER_ZSTD);
        // A temp file of the layout is moved, not copied: nothing is left but blobs.
        assert!(!temp.exists());
        let names: Vec<String> = std::fs::read_dir(dir.join("blobs/sha256"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            names
                .iter()
                .all(|n| digest_hex(&format!("sha256:{n}")).is_some()),
            "{names:?}"
        );
        // The base layout is untouched: one image.
        assert_eq!(Layout::open(&src).unwrap().tags().unwrap(), ["base"]);
    }

    #[test]
    fn a_corrupt_base_layer_is_not_copied() {
        let s = Scratch::new("corrupt");
        let src = s.0.join("src");
        base_layout(&src, &s.0, "base");
        let src_layout = Layout::open(&src).unwrap();
        let image = src_layout.resolve(Some("base")).unwrap();
        let layer_path = src_layout
            .blob_path(&image.layers[0].descriptor.digest)
            .unwrap();
        std::fs::write(&layer_path, b"BASE LAYER").unwrap(); // same size, other bytes
        let dir = s.0.join("out");
        let to = target(&dir, "c1");
        let base = Base::resolve(&format!("{}:base", src.display()), &to).unwrap();
        let layout = TargetLayout::open_or_create(&dir).unwrap();
        let (path, digests) = layer_file(&s.0, "l.tar", b"l", Compression::None);
        let layer = LayerBlob {
            path: &path,
            digests: &digests,
            compression: Compression::None,
        };
        let err = append(&layout, "c1", &base, layer, &provenance("x"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("corrupt"), "{err}");
        assert!(Layout::open(&dir).unwrap().tags().unwrap().is_empty());
        assert!(!layout
            .blob_path(&image.layers[0].descriptor.digest)
            .unwrap()
            .exists());
    }

    #[test]
    fn retagging_moves_only_that_tag() {
        let s = Scratch::new("retag");
        let dir = s.0.join("layout");
        base_layout(&dir, &s.0, "v1");
        let layout = TargetLayout::open_or_create(&dir).unwrap();
        let mut manifests = Vec::new();
        for data in [b"one".as_slice(), b"two"] {
            let base = Base::resolve("v1", &target(&dir, "next")).unwrap();
            let (path, digests) = layer_file(&s.0, "l.tar", data, Compression::None);
            let layer = LayerBlob {
                path: &path,
                digests: &digests,
                compression: Compression::None,
            };
            manifests.push(
                append(&layout, "next", &base, layer, &provenance("x"))
                    .unwrap()
                    .manifest,
            );
        }
        let index = Layout::open(&dir).unwrap().index().unwrap();
        let tags: Vec<Option<&str>> = index.manifests.iter().map(|d| d.ref_name()).collect();
        assert_eq!(tags, [Some("v1"), Some("next")]);
        assert_eq!(index.manifests[1].digest, manifests[1].digest);
        assert_ne!(manifests[0].digest, manifests[1].digest);
    }

    #[test]
    fn a_failed_index_write_leaves_the_old_index() {
        let s = Scratch::new("crash");
        let dir = s.0.join("layout");
        base_layout(&dir, &s.0, "v1");
        let before = std::fs::read(dir.join("index.json")).unwrap();
        // The index's temp name taken by a directory: the last step fails, after the blobs.
        std::fs::create_dir(dir.join(format!(".index.json.{}.partial", std::process::id())))
            .unwrap();
        let base = Base::resolve("v1", &target(&dir, "v2")).unwrap();
        let layout = TargetLayout::open_or_create(&dir).unwrap();
        let (path, digests) = layer_file(&s.0, "l.tar", b"layer", Compression::None);
        let layer = LayerBlob {
            path: &path,
            digests: &digests,
            compression: Compression::None,
        };
        let err = append(&layout, "v2", &base, layer, &provenance("x"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("index.json"), "{err}");
        assert_eq!(std::fs::read(dir.join("index.json")).unwrap(), before);
        assert_whole(&dir, "v1");
        // The blobs are there already: they were written first.
        assert!(layout.blob_path(&digests.digest).unwrap().exists());
    }

    #[test]
    fn docker_manifests_get_docker_layer_types() {
        let media_type = |m, c| layer_media_type(m, c).unwrap();
        assert_eq!(
            media_type(media::DOCKER_MANIFEST, Compression::Gzip),
            media::DOCKER_LAYER_GZIP
        );
        assert_eq!(
            media_type(media::DOCKER_MANIFEST, Compression::None),
            media::DOCKER_LAYER
        );
        assert!(layer_media_type(media::DOCKER_MANIFEST, Compression::Zstd)
            .unwrap_err()
            .to_string()
            .contains(".tar.gz"));
        assert_eq!(
            media_type(media::OCI_MANIFEST, Compression::Zstd),
            media::OCI_LAYER_ZSTD
        );
    }

    #[test]
    fn an_unknown_base_says_what_it_looked_for() {
        let s = Scratch::new("nobase");
        let dir = s.0.join("layout");
        base_layout(&dir, &s.0, "v1");
        let err = Base::resolve("v9", &target(&dir, "x"))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("\"v9\"") && err.contains("v1"), "{err}");
        let err = Base::resolve("v1", &target(&s.0.join("none"), "x"))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("neither an OCI layout"), "{err}");
    }

    #[test]
    fn a_non_layout_directory_is_not_written_to() {
        let s = Scratch::new("notlayout");
        std::fs::write(s.0.join("file"), b"x").unwrap();
        let err = TargetLayout::open_or_create(&s.0)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("not an OCI image layout"), "{err}");
        assert!(!s.0.join("index.json").exists());
    }

    #[test]
    fn targets_need_a_tag() {
        assert_eq!(
            TargetRef::parse("/a/b:v1.0").unwrap(),
            TargetRef {
                dir: "/a/b".into(),
                tag: "v1.0".into()
            }
        );
        assert_eq!(
            TargetRef::parse("dir:with:colon").unwrap().dir,
            Path::new("dir:with")
        );
        for bad in ["/a/b", "/a/b:", ":v1", "/a:b/c", "/a:t t"] {
            assert!(TargetRef::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_790_000_000), "2026-09-21T14:13:20Z");
        assert_eq!(rfc3339(4_102_444_799), "2099-12-31T23:59:59Z");
    }
}
