//! What to mount, and its validation: every error names the path and the fix.

use std::path::{Path, PathBuf};

use crate::layer::Layer;
use crate::mountinfo;

#[derive(Debug, Clone, Default)]
pub struct MountSpec {
    /// Bottom layer first.
    pub layers: Vec<PathBuf>,
    pub mountpoint: PathBuf,
    pub passthrough: bool,
    pub threads: Option<usize>,
    pub fsname: Option<String>,
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
        Err(e) => Err(format!("{what} {}: {e}: {fix}", describe(path))),
    }
}

impl MountSpec {
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
            require_dir(path, "layer", "pass an existing directory with --layer")?;
            let layer = Layer::open_root(slot as u16, path)
                .map_err(|e| format!("layer {}: cannot open: {e}", describe(path)))?;
            layers.push(layer);
        }
        Ok(layers)
    }

    pub fn check_mountpoint(&self) -> Result<(), String> {
        require_dir(&self.mountpoint, "mountpoint", "create it first with mkdir")?;
        if let Some(m) = mountinfo::mount_at(&self.mountpoint) {
            if m.mount_point != Path::new("/") {
                return Err(format!(
                    "mountpoint {}: already mounted ({} from {}): unmount it first (stratafs umount {})",
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
