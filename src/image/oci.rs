//! The OCI image layout on disk (image-spec `image-layout.md`): `oci-layout`, `index.json`
//! and `blobs/sha256/<hex>`, and the JSON documents it holds (index, manifest, config).
//!
//! The types serialize back to what they were read from: fields stratafs does not use are
//! kept in `extra`, so a config or manifest read, changed and written again loses nothing.
//! The reader ([`Layout`]) resolves `DIR[:TAG]` to a manifest, its config and its layers,
//! refusing any blob whose sha256 or size is not the one its descriptor names.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::blob::sha256_id;

use crate::sys::c;

/// Media types, OCI and Docker (image manifest v2 schema 2).
pub mod media {
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
    pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
    pub const OCI_LAYER_FOREIGN: &str = "application/vnd.oci.image.layer.nondistributable.v1.tar";
    pub const OCI_LAYER_FOREIGN_GZIP: &str =
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
    pub const OCI_LAYER_FOREIGN_ZSTD: &str =
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd";
    pub const DOCKER_MANIFEST_LIST: &str =
        "application/vnd.docker.distribution.manifest.list.v2+json";
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
    pub const DOCKER_LAYER_FOREIGN_GZIP: &str =
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
    /// Plain tar layers as podman and buildah write them in Docker manifests.
    pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
}

/// The annotation that names a manifest in `index.json` (what `DIR:TAG` matches).
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// The content of `oci-layout`.
pub const LAYOUT_VERSION: &str = "1.0.0";

/// Largest JSON document (index, manifest, config) read into memory.
const MAX_JSON: u64 = 16 << 20;

/// Nested indexes followed at most (an index of indexes of manifests is 2).
const MAX_INDEX_DEPTH: usize = 4;

/// How a layer blob is compressed, from its media type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerCompression {
    None,
    Gzip,
    Zstd,
}

/// `oci-layout`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OciLayoutFile {
    #[serde(rename = "imageLayoutVersion")]
    pub image_layout_version: String,
}

/// A descriptor: what a blob is, where (digest) and how big.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    /// `sha256:<64 hex>`.
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl Descriptor {
    /// The `org.opencontainers.image.ref.name` annotation.
    pub fn ref_name(&self) -> Option<&str> {
        self.annotations.get(REF_NAME).map(String::as_str)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// `index.json`, or an image index blob.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Index {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// An image manifest (OCI or Docker v2 schema 2: the same fields).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// An image config; only what stratafs reads is typed, the rest (`config`, `architecture`,
/// `os`, ...) is kept as it was.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architecture: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    pub rootfs: RootFs,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<History>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RootFs {
    /// Always `layers`.
    #[serde(rename = "type")]
    pub kind: String,
    /// sha256 of each layer's uncompressed tar, bottom layer first.
    pub diff_ids: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// True for a history entry that made no layer (ENV, CMD...).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub empty_layer: bool,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// Why a layout, or an image in it, cannot be read.
#[derive(Debug)]
pub enum LayoutError {
    /// Not an OCI image layout (no `oci-layout`, or an unknown version).
    NotALayout { dir: PathBuf, reason: String },
    /// `DIR:TAG` names no manifest; `present` lists the tags the index has.
    NoSuchTag {
        dir: PathBuf,
        tag: String,
        present: Vec<String>,
    },
    /// `DIR` without a tag, and the index holds several images.
    Ambiguous { dir: PathBuf, present: Vec<String> },
    /// A descriptor names a blob that is not in `blobs/`.
    BlobMissing { path: PathBuf, what: String },
    /// A blob's bytes do not hash to its digest, or are not of its size.
    DigestMismatch {
        path: PathBuf,
        what: String,
        expected: String,
        actual: String,
    },
    /// A document or descriptor says something stratafs cannot use.
    Invalid { path: PathBuf, reason: String },
    /// A layer (blob `path`) of a media type that is no tar layer stratafs reads.
    LayerMediaType { path: PathBuf, media_type: String },
    Io {
        path: PathBuf,
        action: &'static str,
        source: io::Error,
    },
}

impl std::fmt::Display for LayoutError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LayoutError::NotALayout { dir, reason } => write!(
                f,
                "{} is not an OCI image layout ({reason}); make one with `podman save --format oci-dir -o DIR IMAGE` or `skopeo copy ... oci:DIR:TAG`",
                dir.display()
            ),
            LayoutError::NoSuchTag { dir, tag, present } => write!(
                f,
                "{} has no image tagged {tag:?}; it has: {}",
                dir.display(),
                list_or_none(present)
            ),
            LayoutError::Ambiguous { dir, present } => write!(
                f,
                "{} holds several images; name one as {}:TAG, TAG one of: {}",
                dir.display(),
                dir.display(),
                list_or_none(present)
            ),
            LayoutError::BlobMissing { path, what } => {
                write!(f, "{what}: blob {} is missing from the layout", path.display())
            }
            LayoutError::DigestMismatch {
                path,
                what,
                expected,
                actual,
            } => write!(
                f,
                "{what}: blob {} is corrupt: expected {expected}, found {actual}; the layout was damaged or changed after it was written",
                path.display()
            ),
            LayoutError::Invalid { path, reason } => write!(f, "{}: {reason}", path.display()),
            LayoutError::LayerMediaType { path, media_type } if media_type.contains("+encrypted") => write!(
                f,
                "{}: layer media type {media_type}: encrypted layers are not supported; decrypt the image first (skopeo copy --decryption-key)",
                path.display()
            ),
            LayoutError::LayerMediaType { path, media_type } => write!(
                f,
                "{}: layer media type {media_type:?} is not a tar layer stratafs reads (OCI or Docker tar, tar+gzip, tar+zstd)",
                path.display()
            ),
            LayoutError::Io {
                path,
                action,
                source,
            } => write!(f, "cannot {action} {}: {source}", path.display()),
        }
    }
}

impl std::error::Error for LayoutError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LayoutError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn list_or_none(tags: &[String]) -> String {
    if tags.is_empty() {
        "no tagged image (no org.opencontainers.image.ref.name annotation)".into()
    } else {
        tags.join(", ")
    }
}

pub type Result<T> = std::result::Result<T, LayoutError>;

/// `OCI_LAYOUT[:TAG]` from the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRef {
    pub dir: PathBuf,
    pub tag: Option<String>,
}

impl ImageRef {
    /// Splits `DIR:TAG` at its last `:` when what follows holds no `/` and what comes before
    /// is a directory; otherwise the whole string is the directory (which may hold `:`).
    pub fn parse(s: &str) -> ImageRef {
        if let Some((dir, tag)) = s.rsplit_once(':') {
            if !tag.is_empty() && !tag.contains('/') && Path::new(dir).is_dir() {
                return ImageRef {
                    dir: dir.into(),
                    tag: Some(tag.into()),
                };
            }
        }
        ImageRef {
            dir: s.trim_end_matches(':').into(),
            tag: None,
        }
    }
}

impl std::fmt::Display for ImageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.tag {
            Some(t) => write!(f, "{}:{t}", self.dir.display()),
            None => write!(f, "{}", self.dir.display()),
        }
    }
}

/// One layer of a resolved image.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageLayer {
    pub descriptor: Descriptor,
    /// From the config's `rootfs.diff_ids`: the sha256 of the uncompressed tar.
    pub diff_id: String,
    pub compression: LayerCompression,
}

/// An image resolved from a layout.
#[derive(Clone, Debug)]
pub struct Image {
    /// The manifest's descriptor in the index (its `ref.name` is the tag).
    pub manifest_descriptor: Descriptor,
    pub manifest: Manifest,
    pub config: ImageConfig,
    /// Bottom layer first.
    pub layers: Vec<ImageLayer>,
}

/// An OCI image layout directory.
#[derive(Clone, Debug)]
pub struct Layout {
    dir: PathBuf,
}

impl Layout {
    /// Opens `dir`, checking its `oci-layout` file.
    pub fn open(dir: &Path) -> Result<Layout> {
        let marker = dir.join("oci-layout");
        let not_a_layout = |reason: String| LayoutError::NotALayout {
            dir: dir.to_path_buf(),
            reason,
        };
        let text = match read_limited(&marker) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(not_a_layout(if dir.is_dir() {
                    "it has no oci-layout file".into()
                } else {
                    "no such directory".into()
                }))
            }
            Err(source) => {
                return Err(LayoutError::Io {
                    path: marker,
                    action: "read",
                    source,
                })
            }
        };
        let file: OciLayoutFile = serde_json::from_slice(&text)
            .map_err(|e| not_a_layout(format!("oci-layout is not valid: {e}")))?;
        if file.image_layout_version.split('.').next() != Some("1") {
            return Err(not_a_layout(format!(
                "image layout version {} (stratafs reads 1.x)",
                file.image_layout_version
            )));
        }
        Ok(Layout {
            dir: dir.to_path_buf(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `index.json`.
    pub fn index(&self) -> Result<Index> {
        let path = self.dir.join("index.json");
        let bytes = read_limited(&path).map_err(|source| LayoutError::Io {
            path: path.clone(),
            action: "read",
            source,
        })?;
        parse_json(&path, &bytes)
    }

    /// The path of the blob with `digest`, after checking the digest's form (so a digest can
    /// never name a path outside `blobs/`).
    pub fn blob_path(&self, digest: &str) -> Result<PathBuf> {
        let hex = digest_hex(digest).ok_or_else(|| LayoutError::Invalid {
            path: self.dir.join("index.json"),
            reason: format!(
                "digest {digest:?} is not sha256:<64 lower-case hex digits> (the only algorithm stratafs reads)"
            ),
        })?;
        Ok(self.dir.join("blobs").join("sha256").join(hex))
    }

    /// Opens a blob for streaming; [`VerifiedBlob::finish`] says whether it was intact.
    pub fn open_blob(&self, desc: &Descriptor, what: &str) -> Result<VerifiedBlob> {
        let path = self.blob_path(&desc.digest)?;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(c::O_NOFOLLOW | c::O_CLOEXEC)
            .open(&path)
            .map_err(|source| {
                if source.kind() == io::ErrorKind::NotFound {
                    LayoutError::BlobMissing {
                        path: path.clone(),
                        what: what.to_string(),
                    }
                } else {
                    LayoutError::Io {
                        path: path.clone(),
                        action: "open",
                        source,
                    }
                }
            })?;
        Ok(VerifiedBlob {
            file,
            path,
            what: what.to_string(),
            expected_digest: desc.digest.clone(),
            expected_size: desc.size,
            hasher: Sha256::new(),
            read: 0,
        })
    }

    /// Reads and parses a JSON blob (manifest, config, index), verified.
    pub fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        desc: &Descriptor,
        what: &str,
    ) -> Result<T> {
        if desc.size > MAX_JSON {
            return Err(LayoutError::Invalid {
                path: self.blob_path(&desc.digest)?,
                reason: format!(
                    "{what} of {} bytes: too large for a JSON document",
                    desc.size
                ),
            });
        }
        let mut blob = self.open_blob(desc, what)?;
        let mut bytes = Vec::with_capacity(desc.size as usize);
        (&mut blob)
            .take(MAX_JSON + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| blob.error(e))?;
        let path = blob.path.clone();
        blob.finish()?;
        parse_json(&path, &bytes)
    }

    /// Every tag (`ref.name`) in the index, in index order.
    pub fn tags(&self) -> Result<Vec<String>> {
        Ok(self
            .index()?
            .manifests
            .iter()
            .filter_map(|d| d.ref_name().map(str::to_string))
            .collect())
    }

    /// The image tagged `tag` (or the only image, without a tag): its manifest, config and
    /// layers, each JSON blob verified against its digest.
    pub fn resolve(&self, tag: Option<&str>) -> Result<Image> {
        let index = self.index()?;
        let present: Vec<String> = index
            .manifests
            .iter()
            .filter_map(|d| d.ref_name().map(str::to_string))
            .collect();
        let chosen = match tag {
            Some(tag) => find_tag(&index.manifests, tag).ok_or_else(|| LayoutError::NoSuchTag {
                dir: self.dir.clone(),
                tag: tag.to_string(),
                present: present.clone(),
            })?,
            None => match index.manifests.as_slice() {
                [only] => only,
                [] => {
                    return Err(LayoutError::Invalid {
                        path: self.dir.join("index.json"),
                        reason: "the index lists no image".into(),
                    })
                }
                _ => {
                    return Err(LayoutError::Ambiguous {
                        dir: self.dir.clone(),
                        present,
                    })
                }
            },
        };
        let manifest_descriptor = self.to_manifest(chosen.clone(), 0)?;
        let manifest: Manifest = self.read_json(&manifest_descriptor, "image manifest")?;
        let config: ImageConfig = self.read_json(&manifest.config, "image config")?;
        let layers = self.layers_of(&manifest, &config)?;
        Ok(Image {
            manifest_descriptor,
            manifest,
            config,
            layers,
        })
    }

    /// Follows nested indexes down to one image manifest, picking this machine's platform.
    fn to_manifest(&self, desc: Descriptor, depth: usize) -> Result<Descriptor> {
        match desc.media_type.as_str() {
            media::OCI_MANIFEST | media::DOCKER_MANIFEST => Ok(desc),
            media::OCI_INDEX | media::DOCKER_MANIFEST_LIST if depth < MAX_INDEX_DEPTH => {
                let nested: Index = self.read_json(&desc, "image index")?;
                let path = self.blob_path(&desc.digest)?;
                let pick =
                    pick_platform(&nested.manifests).ok_or_else(|| LayoutError::Invalid {
                        path,
                        reason: format!(
                            "the image index has no manifest for {}/{}",
                            host_os(),
                            host_arch()
                        ),
                    })?;
                // The tag stays the one of the outer descriptor.
                let mut inner = self.to_manifest(pick.clone(), depth + 1)?;
                if inner.ref_name().is_none() {
                    if let Some(name) = desc.ref_name() {
                        inner.annotations.insert(REF_NAME.into(), name.into());
                    }
                }
                Ok(inner)
            }
            other => Err(LayoutError::Invalid {
                path: self.blob_path(&desc.digest)?,
                reason: format!("media type {other:?} is not an image manifest or index"),
            }),
        }
    }

    fn layers_of(&self, manifest: &Manifest, config: &ImageConfig) -> Result<Vec<ImageLayer>> {
        let config_path = self.blob_path(&manifest.config.digest)?;
        if manifest.layers.len() != config.rootfs.diff_ids.len() {
            return Err(LayoutError::Invalid {
                path: config_path,
                reason: format!(
                    "the manifest lists {} layers but the config's rootfs.diff_ids {}",
                    manifest.layers.len(),
                    config.rootfs.diff_ids.len()
                ),
            });
        }
        manifest
            .layers
            .iter()
            .zip(&config.rootfs.diff_ids)
            .map(|(desc, diff_id)| {
                let path = self.blob_path(&desc.digest)?;
                if digest_hex(diff_id).is_none() {
                    return Err(LayoutError::Invalid {
                        path: config_path.clone(),
                        reason: format!("diff_id {diff_id:?} is not sha256:<64 hex digits>"),
                    });
                }
                let compression = layer_compression(&desc.media_type).ok_or_else(|| {
                    LayoutError::LayerMediaType {
                        path,
                        media_type: desc.media_type.clone(),
                    }
                })?;
                Ok(ImageLayer {
                    descriptor: desc.clone(),
                    diff_id: diff_id.clone(),
                    compression,
                })
            })
            .collect()
    }
}

/// The descriptor tagged `tag`: its `ref.name` equal to `tag`, else the only one whose
/// `ref.name` ends in `:TAG` or whose repository name is `TAG` (`busybox` for
/// `docker.io/library/busybox:latest`).
fn find_tag<'a>(manifests: &'a [Descriptor], tag: &str) -> Option<&'a Descriptor> {
    if let Some(d) = manifests.iter().find(|d| d.ref_name() == Some(tag)) {
        return Some(d);
    }
    let loose: Vec<&Descriptor> = manifests
        .iter()
        .filter(|d| {
            d.ref_name().is_some_and(|name| {
                let (repo, version) = name.rsplit_once(':').unwrap_or((name, ""));
                version == tag || repo == tag || repo.rsplit('/').next() == Some(tag)
            })
        })
        .collect();
    match loose.as_slice() {
        [one] => Some(one),
        _ => None,
    }
}

fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

fn host_os() -> &'static str {
    std::env::consts::OS
}

fn pick_platform(manifests: &[Descriptor]) -> Option<&Descriptor> {
    manifests
        .iter()
        .find(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| p.os == host_os() && p.architecture == host_arch())
        })
        .or_else(|| match manifests {
            [only] if only.platform.is_none() => Some(only),
            _ => None,
        })
}

/// The compression of a layer media type; None for encrypted and unknown types (refused as
/// [`LayoutError::LayerMediaType`]).
pub fn layer_compression(media_type: &str) -> Option<LayerCompression> {
    use media::*;
    match media_type {
        OCI_LAYER | OCI_LAYER_FOREIGN | DOCKER_LAYER => Some(LayerCompression::None),
        OCI_LAYER_GZIP | OCI_LAYER_FOREIGN_GZIP | DOCKER_LAYER_GZIP | DOCKER_LAYER_FOREIGN_GZIP => {
            Some(LayerCompression::Gzip)
        }
        OCI_LAYER_ZSTD | OCI_LAYER_FOREIGN_ZSTD => Some(LayerCompression::Zstd),
        _ => None,
    }
}

/// The hex part of `sha256:<64 lower-case hex>`, or None.
pub fn digest_hex(digest: &str) -> Option<&str> {
    let hex = digest.strip_prefix("sha256:")?;
    (hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))).then_some(hex)
}

/// A blob being read: hashes what goes through, and at the end checks it is the blob its
/// descriptor names (size and sha256).
pub struct VerifiedBlob {
    file: File,
    path: PathBuf,
    what: String,
    expected_digest: String,
    expected_size: u64,
    hasher: Sha256,
    read: u64,
}

impl VerifiedBlob {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes read so far.
    pub fn bytes_read(&self) -> u64 {
        self.read
    }

    /// Reads what is left and checks size and digest.
    pub fn finish(mut self) -> Result<()> {
        io::copy(&mut self, &mut io::sink()).map_err(|e| self.error(e))?;
        if self.read != self.expected_size {
            return Err(LayoutError::DigestMismatch {
                path: self.path,
                what: self.what,
                expected: format!("{} bytes", self.expected_size),
                actual: format!("{} bytes", self.read),
            });
        }
        let actual = sha256_id(self.hasher.finalize().as_slice());
        if actual != self.expected_digest {
            return Err(LayoutError::DigestMismatch {
                path: self.path,
                what: self.what,
                expected: self.expected_digest,
                actual,
            });
        }
        Ok(())
    }

    /// A read error as a layout error naming the blob. A blob longer than its descriptor
    /// says is reported as a mismatch.
    pub fn error(&self, source: io::Error) -> LayoutError {
        if source.kind() == io::ErrorKind::FileTooLarge {
            return LayoutError::DigestMismatch {
                path: self.path.clone(),
                what: self.what.clone(),
                expected: format!("{} bytes", self.expected_size),
                actual: "more".into(),
            };
        }
        LayoutError::Io {
            path: self.path.clone(),
            action: "read",
            source,
        }
    }
}

impl Read for VerifiedBlob {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // One byte past the declared size is enough to know the blob is not the one named.
        let left = (self.expected_size + 1).saturating_sub(self.read);
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        if want == 0 {
            return Err(io::Error::new(
                io::ErrorKind::FileTooLarge,
                "blob larger than its descriptor says",
            ));
        }
        let n = self.file.read(&mut buf[..want])?;
        self.hasher.update(&buf[..n]);
        self.read += n as u64;
        if self.read > self.expected_size {
            return Err(io::Error::new(
                io::ErrorKind::FileTooLarge,
                "blob larger than its descriptor says",
            ));
        }
        Ok(n)
    }
}

fn read_limited(path: &Path) -> io::Result<Vec<u8>> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(c::O_NOFOLLOW | c::O_CLOEXEC)
        .open(path)?;
    let mut bytes = Vec::new();
    file.take(MAX_JSON).read_to_end(&mut bytes)?;
    Ok(bytes)
}

fn parse_json<T: serde::de::DeserializeOwned>(path: &Path, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| LayoutError::Invalid {
        path: path.to_path_buf(),
        reason: format!("not a valid document: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest_of(data: &[u8]) -> String {
        sha256_id(Sha256::digest(data).as_slice())
    }

    /// A layout in a new temp dir: writes blobs and index.json.
    struct TestLayout {
        dir: PathBuf,
    }

    impl TestLayout {
        fn new(tag: &str) -> TestLayout {
            let dir = std::env::temp_dir().join(format!(
                "stratafs-oci-{tag}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
            std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
            TestLayout { dir }
        }

        fn blob(&self, media_type: &str, data: &[u8]) -> Descriptor {
            let digest = digest_of(data);
            std::fs::write(
                self.dir
                    .join("blobs/sha256")
                    .join(digest_hex(&digest).unwrap()),
                data,
            )
            .unwrap();
            Descriptor {
                media_type: media_type.into(),
                digest,
                size: data.len() as u64,
                ..Default::default()
            }
        }

        fn image(&self, layers: &[&[u8]], name: Option<&str>) -> Descriptor {
            let layer_descs: Vec<Descriptor> = layers
                .iter()
                .map(|l| self.blob(media::OCI_LAYER, l))
                .collect();
            let config = ImageConfig {
                architecture: Some("amd64".into()),
                os: Some("linux".into()),
                rootfs: RootFs {
                    kind: "layers".into(),
                    diff_ids: layers.iter().map(|l| digest_of(l)).collect(),
                },
                ..Default::default()
            };
            let config = self.blob(media::OCI_CONFIG, &serde_json::to_vec(&config).unwrap());
            let manifest = Manifest {
                schema_version: 2,
                media_type: Some(media::OCI_MANIFEST.into()),
                config,
                layers: layer_descs,
                ..Default::default()
            };
            let mut desc = self.blob(media::OCI_MANIFEST, &serde_json::to_vec(&manifest).unwrap());
            if let Some(n) = name {
                desc.annotations.insert(REF_NAME.into(), n.into());
            }
            desc
        }

        fn index(&self, manifests: Vec<Descriptor>) {
            let index = Index {
                schema_version: 2,
                manifests,
                ..Default::default()
            };
            std::fs::write(
                self.dir.join("index.json"),
                serde_json::to_vec(&index).unwrap(),
            )
            .unwrap();
        }
    }

    impl Drop for TestLayout {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    #[test]
    fn a_tag_resolves_to_its_layers_in_order() {
        let t = TestLayout::new("order");
        let a = t.image(&[b"layer one", b"layer two"], Some("v1"));
        let b = t.image(&[b"other"], Some("docker.io/library/busybox:latest"));
        t.index(vec![a, b]);
        let layout = Layout::open(&t.dir).unwrap();
        let img = layout.resolve(Some("v1")).unwrap();
        let diff_ids: Vec<&str> = img.layers.iter().map(|l| l.diff_id.as_str()).collect();
        assert_eq!(diff_ids, [digest_of(b"layer one"), digest_of(b"layer two")]);
        assert_eq!(img.layers[0].compression, LayerCompression::None);
        // The full name, its version and its short repository name all find the second.
        for tag in ["docker.io/library/busybox:latest", "latest", "busybox"] {
            let img = layout.resolve(Some(tag)).unwrap();
            assert_eq!(img.layers[0].diff_id, digest_of(b"other"), "{tag}");
        }
        let err = layout.resolve(None).unwrap_err().to_string();
        assert!(
            err.contains("several images") && err.contains("v1"),
            "{err}"
        );
    }

    #[test]
    fn an_unknown_tag_lists_the_tags_present() {
        let t = TestLayout::new("tags");
        let a = t.image(&[b"x"], Some("v1"));
        let b = t.image(&[b"y"], Some("v2"));
        t.index(vec![a, b]);
        let err = Layout::open(&t.dir)
            .unwrap()
            .resolve(Some("v3"))
            .unwrap_err();
        assert!(matches!(err, LayoutError::NoSuchTag { .. }));
        let msg = err.to_string();
        assert!(msg.contains("\"v3\"") && msg.contains("v1, v2"), "{msg}");
    }

    #[test]
    fn one_untagged_image_needs_no_tag() {
        let t = TestLayout::new("untagged");
        let a = t.image(&[b"only"], None);
        t.index(vec![a]);
        let img = Layout::open(&t.dir).unwrap().resolve(None).unwrap();
        assert_eq!(img.layers.len(), 1);
    }

    #[test]
    fn a_changed_manifest_is_refused() {
        let t = TestLayout::new("corrupt");
        let a = t.image(&[b"data"], Some("v1"));
        let path = t
            .dir
            .join("blobs/sha256")
            .join(digest_hex(&a.digest).unwrap());
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[0] = b' ';
        std::fs::write(&path, bytes).unwrap();
        t.index(vec![a]);
        let err = Layout::open(&t.dir)
            .unwrap()
            .resolve(Some("v1"))
            .unwrap_err();
        assert!(matches!(err, LayoutError::DigestMismatch { .. }), "{err}");
        assert!(err.to_string().contains("image manifest"), "{err}");
    }

    #[test]
    fn a_missing_or_oversized_blob_is_named() {
        let t = TestLayout::new("missing");
        let a = t.image(&[b"data"], Some("v1"));
        t.index(vec![a]);
        let layout = Layout::open(&t.dir).unwrap();
        let img = layout.resolve(Some("v1")).unwrap();
        let layer = &img.layers[0].descriptor;
        let path = layout.blob_path(&layer.digest).unwrap();
        std::fs::write(&path, b"data and more").unwrap();
        let mut blob = layout.open_blob(layer, "layer 1").unwrap();
        let err = io::copy(&mut blob, &mut io::sink()).unwrap_err();
        assert!(matches!(
            blob.error(err),
            LayoutError::DigestMismatch { .. }
        ));
        std::fs::remove_file(&path).unwrap();
        let err = layout.open_blob(layer, "layer 1").err().unwrap();
        assert!(matches!(err, LayoutError::BlobMissing { .. }), "{err}");
    }

    #[test]
    fn digests_cannot_name_paths() {
        assert!(digest_hex("sha256:../../etc/passwd").is_none());
        assert!(digest_hex(&format!("sha256:{}", "A".repeat(64))).is_none());
        assert!(digest_hex(&format!("sha512:{}", "a".repeat(64))).is_none());
        assert!(digest_hex(&format!("sha256:{}", "a".repeat(64))).is_some());
    }

    #[test]
    fn not_a_layout_says_how_to_make_one() {
        let t = TestLayout::new("notlayout");
        std::fs::remove_file(t.dir.join("oci-layout")).unwrap();
        let err = Layout::open(&t.dir).unwrap_err().to_string();
        assert!(
            err.contains("no oci-layout") && err.contains("podman save"),
            "{err}"
        );
    }

    #[test]
    fn documents_round_trip_with_unknown_fields() {
        let text = r#"{"architecture":"amd64","os":"linux","config":{"Env":["A=1"]},"rootfs":{"type":"layers","diff_ids":["sha256:aa"]},"history":[{"created_by":"x","empty_layer":true}],"future":1}"#;
        let config: ImageConfig = serde_json::from_str(text).unwrap();
        assert!(config.history[0].empty_layer);
        let back: Value = serde_json::to_value(&config).unwrap();
        assert_eq!(back, serde_json::from_str::<Value>(text).unwrap());
    }

    #[test]
    fn media_types_give_the_compression() {
        assert_eq!(
            layer_compression(media::DOCKER_LAYER_GZIP),
            Some(LayerCompression::Gzip)
        );
        assert_eq!(
            layer_compression(media::OCI_LAYER_ZSTD),
            Some(LayerCompression::Zstd)
        );
        assert_eq!(
            layer_compression(media::DOCKER_LAYER),
            Some(LayerCompression::None)
        );
        let encrypted = "application/vnd.oci.image.layer.v1.tar+gzip+encrypted";
        assert_eq!(layer_compression(encrypted), None);
        assert_eq!(layer_compression("text/plain"), None);
        let refused = |media_type: &str| {
            LayoutError::LayerMediaType {
                path: "/l/blobs/sha256/aa".into(),
                media_type: media_type.into(),
            }
            .to_string()
        };
        let e = refused(encrypted);
        assert!(
            e.contains("encrypted") && e.contains("skopeo copy --decryption-key"),
            "{e}"
        );
        let e = refused("text/plain");
        assert!(e.contains("\"text/plain\" is not a tar layer"), "{e}");
    }

    #[test]
    fn image_refs_split_at_the_tag() {
        let t = TestLayout::new("refs");
        let dir = t.dir.to_str().unwrap();
        let r = ImageRef::parse(&format!("{dir}:v1"));
        assert_eq!(
            (r.dir.as_path(), r.tag.as_deref()),
            (t.dir.as_path(), Some("v1"))
        );
        assert_eq!(ImageRef::parse(dir).tag, None);
        // A name with ':' whose prefix is no directory is all path.
        assert_eq!(ImageRef::parse("/nonexistent/a:b").tag, None);
    }
}
