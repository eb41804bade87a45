//! What can go wrong with images, layers and the layer store, worded for the person at the
//! command line: each message names the thing (path, digest, layer, image) and, where there
//! is one, the fix. The command line reports it as `crate::error::Error::Image`.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use super::oci::LayoutError;
use crate::tarball::error::ArchiveError;
use crate::volume::VolumeError;

#[derive(Debug)]
pub enum ImageError {
    /// An OCI layout, or an image in it, that cannot be read.
    Layout(LayoutError),
    /// The state dir cannot be found (no HOME, no --state-dir).
    StateDir(VolumeError),
    /// A file operation failed: `action` is what was done to `path` ("open", "lock",
    /// "create the state dir"...).
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// A rename that publishes a finished file or directory failed.
    Rename {
        from: PathBuf,
        to: PathBuf,
        source: io::Error,
    },
    /// The kernel's random source failed (for a temp or lease name).
    Random(io::Error),
    /// A digest that is not `sha256:<64 hex>`; `what` says whose ("diffID", "manifest
    /// digest").
    BadDigest { what: &'static str, digest: String },
    /// A document could not be serialized; `what` names it ("image config").
    Serialize {
        what: &'static str,
        source: serde_json::Error,
    },
    /// A path of the state dir that is not a directory (a symlink, a file).
    NotADirectory(PathBuf),
    /// `image rm` of an image a live mount (or diff, commit) uses: `holders` use the image,
    /// `layers` the layers only it has, each with its holders. Nothing was removed.
    InUse {
        image: String,
        holders: Vec<String>,
        layers: Vec<(String, Vec<String>)>,
    },
    /// `image rm NAME`: no image of the store is NAME.
    NoSuchImage(String),
    /// `image rm NAME`: NAME is a digest prefix of several images (their references).
    AmbiguousImage { name: String, matches: Vec<String> },
    /// Several independent failures (one per image of `image rm`), in order.
    Several(Vec<ImageError>),
    /// A layer blob could not be read or decompressed; `layer` is `layer I/N (DIGEST)`.
    LayerRead { layer: String, source: io::Error },
    /// A layer's tar stream could not be extracted.
    LayerArchive { layer: String, source: ArchiveError },
    /// The tar of a layer is not the one the image config names.
    DiffIdMismatch {
        layer: String,
        found: String,
        expected: String,
    },
    /// A layer was not stored because of the inner error (its temp dir is gone).
    NothingStored(Box<ImageError>),
    /// `layer unpack` of a tarball failed; `dir` was not created.
    Unpack {
        tar: PathBuf,
        dir: PathBuf,
        source: ArchiveError,
    },
    /// `layer unpack -` with stdin a terminal.
    NoLayerOnStdin,
    /// `layer unpack TAR DIR` where DIR does not end in a name.
    UnpackDirName(PathBuf),
    /// `layer unpack TAR DIR` where DIR exists.
    UnpackDirExists(PathBuf),
    /// More layers than a mount can stack.
    TooManyLayers(usize),
    /// A path of the upper dir (as in the container) could not be read.
    Upper { path: String, source: io::Error },
    /// A path of the image's layers (as in the container) could not be read.
    Lower { path: String, source: io::Error },
    /// An object of the new tree (`path` as in the container) could not be read for the
    /// layer tarball.
    Entry { path: String, source: io::Error },
    /// A layer tarball could not be written.
    Archive(ArchiveError),
    /// An xattr name a PAX record cannot hold.
    XattrName { path: String, name: String },
    /// `commit -o FILE` with an extension that names no compression.
    OutputName(PathBuf),
    /// `--to-layout` not in the form DIR:TAG.
    BadTarget(String),
    /// `--from` that is neither a layout nor a tag of the target layout.
    BadBase { from: String, source: LayoutError },
    /// A zstd layer asked for on a base with a Docker manifest.
    ZstdInDockerManifest,
    /// `SOURCE_DATE_EPOCH` that is not a number of seconds.
    SourceDateEpoch(String),
}

pub type Result<T> = std::result::Result<T, ImageError>;

impl ImageError {
    pub fn io(action: &'static str, path: &Path, source: io::Error) -> Self {
        ImageError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Adds what was being done, and to which path, to an io::Error.
pub trait IoContext<T> {
    fn context(self, action: &'static str, path: &Path) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn context(self, action: &'static str, path: &Path) -> Result<T> {
        self.map_err(|e| ImageError::io(action, path, e))
    }
}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageError::Layout(e) => e.fmt(f),
            ImageError::StateDir(e) => e.fmt(f),
            ImageError::Io {
                action,
                path,
                source,
            } => write!(f, "cannot {action} {}: {source}", path.display()),
            ImageError::Rename { from, to, source } => write!(
                f,
                "cannot rename {} to {}: {source}",
                from.display(),
                to.display()
            ),
            ImageError::Random(e) => write!(f, "cannot read random bytes: {e}"),
            ImageError::BadDigest { what, digest } => {
                write!(f, "{what} {digest:?} is not sha256:<64 hex digits>")
            }
            ImageError::Serialize { what, source } => {
                write!(f, "cannot serialize the {what}: {source}")
            }
            ImageError::NotADirectory(path) => write!(
                f,
                "{} is not a directory: stratafs never follows symlinks in its state dir; move it away",
                path.display()
            ),
            ImageError::InUse {
                image,
                holders,
                layers,
            } => {
                let mut uses: Vec<String> = holders
                    .iter()
                    .map(|h| format!("it is in use by {h}"))
                    .collect();
                uses.extend(
                    layers
                        .iter()
                        .map(|(d, h)| format!("layer {d} is in use by {}", h.join(", "))),
                );
                uses.dedup();
                write!(
                    f,
                    "image {image}: {}; unmount it first. Nothing was removed",
                    uses.join("; ")
                )
            }
            ImageError::NoSuchImage(name) => write!(
                f,
                "no image {name:?} in the store; `stratafs image ls` lists them"
            ),
            ImageError::AmbiguousImage { name, matches } => write!(
                f,
                "{name:?} names {} images ({}); give more of the digest",
                matches.len(),
                matches.join(", ")
            ),
            ImageError::Several(errors) => {
                let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
                f.write_str(&lines.join("\n"))
            }
            ImageError::LayerRead { layer, source } => write!(f, "{layer}: cannot read: {source}"),
            ImageError::LayerArchive { layer, source } => write!(f, "{layer}: {source}"),
            ImageError::DiffIdMismatch {
                layer,
                found,
                expected,
            } => write!(
                f,
                "{layer}: the uncompressed layer is {found}, but the image config says {expected}; the image is inconsistent, nothing was stored"
            ),
            ImageError::NothingStored(e) => write!(f, "{e}; nothing was stored"),
            ImageError::Unpack { tar, dir, source } => write!(
                f,
                "unpack of {}: {source}; {} was not created",
                tar.display(),
                dir.display()
            ),
            ImageError::NoLayerOnStdin => {
                f.write_str("no layer on stdin: pass TAR or pipe a tarball in")
            }
            ImageError::UnpackDirName(dir) => write!(
                f,
                "{}: DIR must end in a name (not . or ..)",
                dir.display()
            ),
            ImageError::UnpackDirExists(dir) => write!(
                f,
                "{} already exists: layer unpack makes a new directory; remove it or pick another name",
                dir.display()
            ),
            ImageError::TooManyLayers(n) => {
                write!(f, "{n} layers: at most {} are supported", u16::MAX)
            }
            ImageError::Upper { path, source } => {
                write!(f, "cannot read {path} in the upper dir: {source}")
            }
            ImageError::Lower { path, source } => {
                write!(f, "cannot read {path} in the layers: {source}")
            }
            ImageError::Entry { path, source } => write!(f, "{path}: {source}"),
            ImageError::Archive(e) => e.fmt(f),
            ImageError::XattrName { path, name } => write!(
                f,
                "{path}: xattr {name:?} has a name that is not UTF-8, which a PAX record cannot hold"
            ),
            ImageError::OutputName(path) => write!(
                f,
                "{}: name the output LAYER.tar, LAYER.tar.gz or LAYER.tar.zst (the extension picks the compression)",
                path.display()
            ),
            ImageError::BadTarget(spec) => write!(
                f,
                "--to-layout {spec:?}: give DIR:TAG, the layout directory and the tag the new image gets (a tag is letters, digits, '.', '_', '-', without '/' or ':')"
            ),
            ImageError::BadBase { from, source } => write!(
                f,
                "--from {from:?} is neither an OCI layout directory nor a tag of the target layout: {source}"
            ),
            ImageError::ZstdInDockerManifest => f.write_str(
                "the base image has a Docker manifest, which cannot hold a zstd layer: write the layer as .tar.gz or .tar",
            ),
            ImageError::SourceDateEpoch(value) => write!(
                f,
                "SOURCE_DATE_EPOCH={value:?} is not a number of seconds"
            ),
        }
    }
}

impl std::error::Error for ImageError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ImageError::Layout(e) | ImageError::BadBase { source: e, .. } => Some(e),
            ImageError::StateDir(e) => Some(e),
            ImageError::Io { source, .. }
            | ImageError::Rename { source, .. }
            | ImageError::Random(source)
            | ImageError::LayerRead { source, .. }
            | ImageError::Upper { source, .. }
            | ImageError::Lower { source, .. }
            | ImageError::Entry { source, .. } => Some(source),
            ImageError::Serialize { source, .. } => Some(source),
            ImageError::LayerArchive { source, .. }
            | ImageError::Unpack { source, .. }
            | ImageError::Archive(source) => Some(source),
            ImageError::NothingStored(e) => Some(e.as_ref()),
            _ => None,
        }
    }
}

impl From<LayoutError> for ImageError {
    fn from(e: LayoutError) -> Self {
        ImageError::Layout(e)
    }
}

impl From<VolumeError> for ImageError {
    fn from(e: VolumeError) -> Self {
        ImageError::StateDir(e)
    }
}

impl From<ArchiveError> for ImageError {
    fn from(e: ArchiveError) -> Self {
        ImageError::Archive(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::c;

    #[test]
    fn a_refused_removal_names_every_user_and_the_fix() {
        let e = ImageError::InUse {
            image: "/l:v1".into(),
            holders: vec!["mount /m".into()],
            layers: vec![(
                "sha256:aa".into(),
                vec!["mount /m".into(), "stratafs diff".into()],
            )],
        };
        assert_eq!(
            e.to_string(),
            "image /l:v1: it is in use by mount /m; layer sha256:aa is in use by mount /m, \
             stratafs diff; unmount it first. Nothing was removed"
        );
    }

    #[test]
    fn a_layer_not_stored_says_so_after_its_cause() {
        let e = ImageError::NothingStored(Box::new(ImageError::LayerRead {
            layer: "layer 2/3 (sha256:bb)".into(),
            source: io::Error::from_raw_os_error(c::EIO),
        }));
        assert_eq!(
            e.to_string(),
            "layer 2/3 (sha256:bb): cannot read: Input/output error (os error 5); nothing was stored"
        );
        let source = std::error::Error::source(&e).expect("the cause is kept");
        assert!(source.to_string().starts_with("layer 2/3"), "{source}");
    }

    #[test]
    fn io_errors_name_the_action_and_the_path() {
        let e: Result<()> = Err(io::Error::from_raw_os_error(c::EACCES))
            .context("lock", Path::new("/s/layers.lock"));
        assert_eq!(
            e.unwrap_err().to_string(),
            "cannot lock /s/layers.lock: Permission denied (os error 13)"
        );
    }
}
