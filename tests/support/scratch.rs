//! Scratch space for the tests that run the real binary on private state: a temp dir removed
//! on drop, and a small tmpfs unmounted on drop (also when a test panics).
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// A fresh directory `$TMPDIR/stratafs-<tag>-<pid>-<n>`, removed with its contents on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "stratafs-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path.canonicalize().unwrap())
    }

    /// The volume state dir of this test.
    pub fn state(&self) -> PathBuf {
        self.0.join("state")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A 1 MiB tmpfs mounted on a fresh directory, unmounted on drop.
pub struct TmpfsMount(pub PathBuf);

impl TmpfsMount {
    pub fn new(dir: PathBuf) -> TmpfsMount {
        std::fs::create_dir_all(&dir).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
            .arg(&dir)
            .status()
            .expect("run mount");
        assert!(
            st.success(),
            "mount -t tmpfs on {} failed (needs root)",
            dir.display()
        );
        TmpfsMount(dir)
    }

    /// Unmounts now (lazily if busy); drop does nothing afterwards.
    pub fn unmount(&mut self) {
        if self.0.as_os_str().is_empty() {
            return;
        }
        let ok = Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
        self.0 = PathBuf::new();
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        self.unmount();
    }
}
