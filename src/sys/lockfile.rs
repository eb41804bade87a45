//! Lock files of the stores in the state dir (layer store, volume store, per-layer unpack
//! locks): opened the one safe way, then held with an flock for as long as the file lives.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Opens lock file `path` for reading and writing, made 0600 when missing. Never through a
/// symlink (the state dir may be shared with less trusted users), and not inherited by
/// programs this process execs (a lock must end with its holder).
pub fn open(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Opens existing lock file `path` read-only (never through a symlink): enough for a shared
/// flock, for a reader that may not write the state dir.
pub fn open_read_only(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Waits for the lock on `file`: exclusive (one holder) or shared (any number of them).
pub fn lock(file: &File, exclusive: bool) -> io::Result<()> {
    if exclusive {
        file.lock()
    } else {
        file.lock_shared()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_file_is_private_and_never_followed() {
        let dir = std::env::temp_dir().join(format!("stratafs-lockfile-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("store.lock");
        let held = open(&path).unwrap();
        lock(&held, true).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // The exclusive lock is held: another open file description cannot take it.
        let other = open_read_only(&path).unwrap();
        assert!(other.try_lock_shared().is_err());
        drop(held);
        lock(&other, false).unwrap();
        let link = dir.join("link.lock");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        let err = open(&link).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ELOOP));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
