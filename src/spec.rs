//! What to mount, and its validation: every error names the path and the fix.

use std::path::{Path, PathBuf};

use crate::layer::Layer;
use crate::mountinfo;
use crate::upper::Upper;

#[derive(Debug, Clone, Default)]
pub struct MountSpec {
    /// Bottom layer first.
    pub layers: Vec<PathBuf>,
    pub mountpoint: PathBuf,
    /// Writable layer: upper dir and work dir (both or neither).
    pub upper: Option<PathBuf>,
    pub work: Option<PathBuf>,
    /// Skip fsync (volatile / fsync=0): faster, and a crash may lose recent changes.
    pub volatile: bool,
    pub passthrough: bool,
    /// Do not enforce POSIX ACLs (fuse-overlayfs's noacl).
    pub noacl: bool,
    /// Volumes, binds and tmpfs paths inside the merged view.
    pub submounts: Vec<crate::submount::SubMount>,
    /// Every write outside sub-mounts fails with EROFS.
    pub read_only_union: bool,
    pub nodev: bool,
    pub nosuid: bool,
    pub noexec: bool,
    /// Where volumes live (None: the default state dir).
    pub state_dir: Option<PathBuf>,
    pub threads: Option<usize>,
    pub fsname: Option<String>,
    /// Where log lines go once the daemon runs (None: stderr, or the system log if detached).
    pub log_file: Option<PathBuf>,
    /// A directory the daemon deletes when it exits (the demo's unpacked image).
    pub remove_on_exit: Option<PathBuf>,
    /// Write the rootless (`userxattr`) format even where the privileged one is possible.
    pub userxattr: bool,
}

fn describe(path: &Path) -> String {
    format!("{}", path.display())
}

/// Checks `path` is an existing directory; `what` says which argument it came from.
fn require_dir(path: &Path, what: &str, fix: &str) -> Result<(), String> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(format!(
            "{what} {}: is not a directory: {fix}",
            describe(path)
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(format!("{what} {}: does not exist: {fix}", describe(path)))
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => Err(stale_mount(path)),
        Err(e) => Err(format!("{what} {}: {e}: {fix}", describe(path))),
    }
}

/// What to say about a FUSE mount whose daemon is gone (every access fails with ENOTCONN).
fn stale_mount(path: &Path) -> String {
    format!(
        "the mount at {} is stale (its daemon is gone): run `stratafs umount {}` (or umount -l), then mount again",
        describe(path),
        describe(path)
    )
}

impl MountSpec {
    /// Reports every missing directory at once (layers, upper, work, mountpoint), so that a
    /// first try does not fail once per path. One missing path is left to the checks that
    /// follow, whose message is specific to it.
    pub fn check_all_exist(&self) -> Result<(), String> {
        let wanted = self
            .layers
            .iter()
            .map(|p| ("layer", p))
            .chain(self.upper.iter().map(|p| ("upper dir", p)))
            .chain(self.work.iter().map(|p| ("work dir", p)))
            .chain(std::iter::once(("mountpoint", &self.mountpoint)));
        let missing: Vec<(&str, &PathBuf)> = wanted
            .filter(|(_, p)| {
                std::fs::symlink_metadata(p)
                    .is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound)
            })
            .collect();
        if missing.len() < 2 {
            return Ok(());
        }
        let list: Vec<String> = missing
            .iter()
            .map(|(what, p)| format!("{what} {}", describe(p)))
            .collect();
        let paths: Vec<String> = missing.iter().map(|(_, p)| describe(p)).collect();
        Err(format!(
            "{} directories do not exist: {}: create them first (mkdir -p {})",
            missing.len(),
            list.join(", "),
            paths.join(" ")
        ))
    }

    /// Validates paths and opens the layers (bottom first).
    pub fn open_layers(&self) -> Result<Vec<Layer>, String> {
        if self.layers.is_empty() {
            return Err(
                "no layers given: pass at least one --layer DIR (bottom layer first)".into(),
            );
        }
        if self.layers.len() > u16::MAX as usize - 2 {
            return Err(format!(
                "{} layers given: at most {} are supported",
                self.layers.len(),
                u16::MAX - 2
            ));
        }
        let mut layers = Vec::with_capacity(self.layers.len());
        for (slot, path) in self.layers.iter().enumerate() {
            require_dir(
                path,
                "layer",
                "pass an existing directory (--layer, or lowerdir= in the -o form)",
            )?;
            let layer = Layer::open_root(slot as u16, path)
                .map_err(|e| format!("layer {}: cannot open: {e}", describe(path)))?;
            layers.push(layer);
        }
        Ok(layers)
    }

    /// Validates and opens the writable layer, if any.
    pub fn open_upper(&self) -> Result<Option<Upper>, String> {
        let (upper, work) = match (&self.upper, &self.work) {
            (None, None) => return Ok(None),
            (Some(_), None) => {
                return Err(
                    "--upper needs --work: pass an empty directory on the same filesystem".into(),
                )
            }
            (None, Some(_)) => {
                return Err("--work needs --upper: pass the writable layer's directory".into())
            }
            (Some(u), Some(w)) => (u, w),
        };
        require_dir(upper, "upper dir", "create it first with mkdir")?;
        require_dir(work, "work dir", "create it first with mkdir")?;
        let canon = |p: &Path| {
            p.canonicalize()
                .map_err(|e| format!("{}: {e}", describe(p)))
        };
        let (cu, cw) = (canon(upper)?, canon(work)?);
        if cu.starts_with(&cw) || cw.starts_with(&cu) {
            return Err(format!(
                "upper dir {} and work dir {} overlap: use two separate directories side by side",
                describe(upper),
                describe(work)
            ));
        }
        for layer in &self.layers {
            let cl = canon(layer)?;
            for (what, p, c) in [("upper dir", upper, &cu), ("work dir", work, &cw)] {
                if c.starts_with(&cl) || cl.starts_with(c) {
                    return Err(format!(
                        "{what} {} overlaps layer {}: keep the writable layer outside every image layer",
                        describe(p),
                        describe(layer)
                    ));
                }
            }
        }
        let cm = canon(&self.mountpoint)?;
        for (what, p, c) in [("upper dir", upper, &cu), ("work dir", work, &cw)] {
            if c.starts_with(&cm) {
                return Err(format!(
                    "{what} {} is inside the mountpoint: keep it outside",
                    describe(p)
                ));
            }
        }
        let dev = |p: &Path| {
            std::fs::metadata(p)
                .map(|m| std::os::unix::fs::MetadataExt::dev(&m))
                .map_err(|e| e.to_string())
        };
        if dev(upper)? != dev(work)? {
            return Err(format!(
                "work dir {} is not on the same filesystem as upper dir {}: the atomic rename needs one filesystem",
                describe(work),
                describe(upper)
            ));
        }
        Upper::open(upper, work, !self.volatile)
            .map(Some)
            .map_err(|e| {
                format!(
                    "upper dir {}: cannot open the writable layer: {e}",
                    describe(upper)
                )
            })
    }

    /// The volume store, opened only when a volume is asked for.
    pub fn volume_provider(&self) -> Result<Box<dyn crate::submount::VolumeProvider>, String> {
        let wants_volumes = self
            .submounts
            .iter()
            .any(|s| matches!(s.kind, crate::submount::Kind::Volume { .. }));
        if !wants_volumes {
            return Ok(Box::new(NoVolumes));
        }
        crate::volattach::provider(self.state_dir.as_deref(), &self.mountpoint)
    }

    pub fn check_mountpoint(&self) -> Result<(), String> {
        require_dir(
            &self.mountpoint,
            "mountpoint",
            "pass an existing directory (mkdir it first)",
        )?;
        // A mountpoint inside a layer would make the daemon read its own mount while it
        // indexes that layer.
        if let Ok(cm) = self.mountpoint.canonicalize() {
            for layer in &self.layers {
                if layer.canonicalize().is_ok_and(|cl| cm.starts_with(&cl)) {
                    return Err(format!(
                        "mountpoint {} is inside layer {}: use a mountpoint outside every layer",
                        describe(&self.mountpoint),
                        describe(layer)
                    ));
                }
            }
        }
        if let Some(m) = mountinfo::mount_at(&self.mountpoint) {
            if m.mount_point != Path::new("/") {
                return Err(format!(
                    "mountpoint {}: already mounted ({} from {}): unmount it first (umount {})",
                    describe(&self.mountpoint),
                    m.fs_type,
                    m.source,
                    describe(&self.mountpoint)
                ));
            }
        }
        Ok(())
    }
}

struct NoVolumes;

impl crate::submount::VolumeProvider for NoVolumes {
    fn attach(&mut self, _name: Option<&str>) -> Result<(PathBuf, bool), String> {
        Err("no volume was asked for".into())
    }
}
