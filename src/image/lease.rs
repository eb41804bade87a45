//! Who uses stored layers: one lease file per user (a mount, a diff, a commit) in
//! `STATE_DIR/image-leases/`, held with an exclusive flock by the process that uses them.
//!
//! The lock is the liveness: it belongs to the open file, which a `--daemon` mount's
//! background process inherits across its fork, and the kernel drops it when the last
//! process holding the file exits, however it exits (kill -9 included). A lease file whose
//! lock can be taken is therefore stale and is deleted by the next scan; a crashed daemon
//! never pins layers. A lease is written under a hidden temp name, locked, then renamed,
//! so a scan never sees a final name without its lock.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::{ImageError, Result};
use crate::sys::c;

/// What a lease file says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// The image as named by the user (`DIR:TAG`).
    pub image: String,
    /// `sha256:...` of its manifest.
    #[serde(default)]
    pub manifest: String,
    /// The layers in use, bottom first.
    pub diff_ids: Vec<String>,
    /// Who holds it, for messages: `mount /mnt/x` or `stratafs diff`.
    pub holder: String,
    pub pid: u32,
}

/// A held lease; the layers it names are not removed while it lives.
pub struct Lease {
    _lock: File,
    path: PathBuf,
}

impl Lease {
    /// Writes and locks a lease in `dir`.
    pub fn take(dir: &Path, record: &LeaseRecord) -> Result<Lease> {
        let mut random = [0u8; 8];
        crate::sys::random_bytes(&mut random).map_err(ImageError::Random)?;
        let id: String = random.iter().map(|b| format!("{b:02x}")).collect();
        let temp = dir.join(format!(".{id}.tmp"));
        let path = dir.join(format!("{id}.json"));
        let written = (|| -> io::Result<File> {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(c::O_NOFOLLOW | c::O_CLOEXEC)
                .open(&temp)?;
            file.lock()?;
            file.write_all(&serde_json::to_vec(record).map_err(io::Error::other)?)?;
            std::fs::rename(&temp, &path)?;
            Ok(file)
        })();
        match written {
            Ok(lock) => Ok(Lease { _lock: lock, path }),
            Err(e) => {
                let _ = std::fs::remove_file(&temp);
                Err(ImageError::io("write the lease", &path, e))
            }
        }
    }

    /// Ends the lease: the file goes, and its lock with it.
    pub fn release(self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// How long a temp lease file may stay unlocked before a scan takes it for abandoned.
const TEMP_GRACE: std::time::Duration = std::time::Duration::from_secs(60);

fn older_than(entry: &std::fs::DirEntry, age: std::time::Duration) -> bool {
    entry
        .metadata()
        .and_then(|m| m.modified())
        .is_ok_and(|t| t.elapsed().is_ok_and(|e| e > age))
}

/// The records of every live lease in `dir`; stale lease files, and temp files a killed
/// writer left over a minute ago (both unlocked), are deleted.
pub fn live(dir: &Path) -> io::Result<Vec<LeaseRecord>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let is_temp = entry.file_name().as_encoded_bytes().starts_with(b".");
        if is_temp && !older_than(&entry, TEMP_GRACE) {
            // Possibly being written right now, not yet locked.
            continue;
        }
        let Ok(mut file) = OpenOptions::new()
            .read(true)
            .custom_flags(c::O_NOFOLLOW | c::O_CLOEXEC)
            .open(&path)
        else {
            continue;
        };
        match file.try_lock_shared() {
            Ok(()) => {
                // Nobody holds it: the writer died or released it.
                let _ = std::fs::remove_file(&path);
                continue;
            }
            Err(std::fs::TryLockError::WouldBlock) => {}
            Err(std::fs::TryLockError::Error(e)) => return Err(e),
        }
        if is_temp || path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let mut text = Vec::new();
        file.read_to_end(&mut text)?;
        match serde_json::from_slice::<LeaseRecord>(&text) {
            Ok(rec) => out.push(rec),
            Err(e) => log::warn!("unreadable lease {}: {e}", path.display()),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_is_live_until_released_and_stale_files_go() {
        let dir = std::env::temp_dir().join(format!("stratafs-lease-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let rec = LeaseRecord {
            image: "layout:v1".into(),
            manifest: "sha256:bb".into(),
            diff_ids: vec!["sha256:aa".into()],
            holder: "mount /mnt/x".into(),
            pid: std::process::id(),
        };
        let lease = Lease::take(&dir, &rec).unwrap();
        // A file nobody locks, as a killed holder leaves.
        std::fs::write(dir.join("dead.json"), serde_json::to_vec(&rec).unwrap()).unwrap();
        assert_eq!(live(&dir).unwrap(), vec![rec]);
        assert!(!dir.join("dead.json").exists());
        lease.release();
        assert!(live(&dir).unwrap().is_empty());
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
