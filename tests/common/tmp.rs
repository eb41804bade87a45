//! Unique scratch directories under /tmp, removed on drop (after detaching anything still
//! mounted inside, so a failed test never deletes files through a live mount).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::mountinfo;

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// Where temp dirs go instead of /tmp, when set.
pub const TEST_TMP_ENV: &str = "STRATAFS_TEST_TMP";

pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// A new empty directory `/tmp/stratafs-test.<pid>.<n>.<label>` (under $STRATAFS_TEST_TMP
    /// instead of /tmp when set: a test run as another user keeps its files in a directory its
    /// parent test removes).
    pub fn new(label: &str) -> TempDir {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let base =
            std::env::var_os(TEST_TMP_ENV).map_or_else(|| PathBuf::from("/tmp"), PathBuf::from);
        let path = base.join(format!(
            "stratafs-test.{}.{}.{}",
            std::process::id(),
            n,
            label
        ));
        std::fs::create_dir(&path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        // Whatever the umask, other users may pass through (tests run commands as them).
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A new directory (and its parents) inside this one.
    pub fn subdir(&self, rel: &str) -> PathBuf {
        let p = self.path.join(rel);
        std::fs::create_dir_all(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // Deepest first, so nested mounts go before the ones they sit on.
        let mut inside: Vec<PathBuf> = mountinfo::mount_points()
            .into_iter()
            .filter(|m| m.starts_with(&self.path))
            .collect();
        inside.sort_by_key(|m| std::cmp::Reverse(m.as_os_str().len()));
        for m in &inside {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(m)
                .status();
        }
        if mountinfo::mount_points()
            .iter()
            .any(|m| m.starts_with(&self.path))
        {
            // Never recurse into a live mount.
            eprintln!("leaving {}: still has mounts inside", self.path.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
