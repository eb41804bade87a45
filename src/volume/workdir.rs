//! Private work directories in `volumes/` for long operations (import, clone) that run
//! without the store lock and publish their result with one rename at the end.
//!
//! A work dir is `volumes/.work-<random>`, held with an flock on the directory for as long as
//! its owner lives: a sweep removes only the ones nobody holds (their owner crashed or was
//! killed), never one in use by a concurrent import.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::error::{IoContext, Result};
use super::name;
use super::store::{delete_trash, make_dir};

pub const WORK_PREFIX: &str = ".work-";

pub struct WorkDir {
    path: PathBuf,
    /// Holds the flock; closing it (drop) releases the dir for sweeping.
    _lock: File,
}

impl WorkDir {
    /// A new, locked, empty work dir under `volumes_dir` (mode 0700: nobody else looks in).
    pub fn new(volumes_dir: &Path) -> Result<WorkDir> {
        let path = volumes_dir.join(format!("{WORK_PREFIX}{}", name::random_hex(8)?));
        make_dir(&path, 0o700).context(|| format!("cannot create {}", path.display()))?;
        let lock = File::open(&path)
            .and_then(|f| f.try_lock().map(|()| f).map_err(std::io::Error::other))
            .context(|| format!("cannot lock {}", path.display()));
        match lock {
            Ok(lock) => Ok(WorkDir { path, _lock: lock }),
            Err(e) => {
                let _ = delete_trash(&path);
                Err(e)
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if let Err(e) = delete_trash(&self.path) {
            log::warn!("cannot remove {}: {e}", self.path.display());
        }
    }
}

/// Removes the work dirs in `volumes_dir` that no live process holds.
pub fn sweep(volumes_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(volumes_dir) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(WORK_PREFIX) {
            continue;
        }
        let path = entry.path();
        // A symlink or file under that name is not ours to follow: File::open of a symlink
        // would lock its target; such an entry is simply removed.
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        let free = !is_dir || File::open(&path).is_ok_and(|f| f.try_lock().is_ok());
        if !free {
            continue;
        }
        let removed = if is_dir {
            delete_trash(&path)
        } else {
            std::fs::remove_file(&path)
        };
        if let Err(e) = removed {
            log::warn!("cannot remove {}: {e}", path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    #[test]
    fn sweep_removes_only_abandoned_work_dirs() {
        let tmp = TempDir::new("workdir");
        let live = WorkDir::new(tmp.path()).unwrap();
        std::fs::write(live.path().join("f"), b"x").unwrap();
        let abandoned = tmp.path().join(format!("{WORK_PREFIX}dead"));
        std::fs::create_dir_all(abandoned.join("sub")).unwrap();
        std::fs::create_dir(tmp.path().join("other")).unwrap();
        sweep(tmp.path());
        assert!(live.path().join("f").exists(), "a held work dir is kept");
        assert!(!abandoned.exists(), "an abandoned work dir is removed");
        assert!(tmp.path().join("other").exists());
        let path = live.path().to_path_buf();
        drop(live);
        assert!(!path.exists(), "dropping a work dir removes it");
    }
}
