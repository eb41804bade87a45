//! Volumes: data directories managed by stratafs, whose life does not depend on any mount.
//!
//! # On disk
//!
//! ```text
//! STATE_DIR/
//!   volumes.lock             flock: exclusive for changes, shared for reads
//!   volumes/NAME/_data/      the volume's content (what a mount shows)
//!   volumes/NAME/meta.json   {"version":1,"created_at":"…Z","labels":{},"options":{},"anonymous":false}
//!   leases/ID.json           one usage record per live use (see below)
//! ```
//!
//! STATE_DIR is `--state-dir DIR` (an option of `stratafs volume` and of `stratafs mount`),
//! else `$STRATAFS_STATE_DIR`, else `/var/lib/stratafs` for root, else
//! `$XDG_DATA_HOME/stratafs` (`~/.local/share/stratafs` when XDG_DATA_HOME is unset).
//!
//! - meta.json is written to a temp file, fsynced, renamed over, and the directory fsynced,
//!   so a crash leaves the old or the new file. A new volume is built whole in
//!   `volumes/.tmp-*` and renamed into place; `rm` renames it to `volumes/.trash-*` before
//!   deleting, so a volume is never seen half made or half deleted. Leftovers of a crash are
//!   swept by later calls.
//! - A volume whose meta.json is missing or corrupt is still listed (with a warning saying
//!   what is wrong), inspectable (`Error` in the JSON), usable by mounts (its data is intact)
//!   and removable with `volume rm`; `prune` leaves it alone. Nothing rewrites it silently.
//! - The store never follows a symlink inside the state dir: `volumes`, `leases`,
//!   `volumes/NAME`, `_data` and meta.json must be what they claim (checked with lstat and
//!   O_NOFOLLOW); anything else is reported as an error naming the path.
//! - Names follow [`name::check`]: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, at most 128 bytes.
//!
//! # Usage records
//!
//! `leases/ID.json` is `{"volume":"NAME","mountpoint":"/abs/path","pid":123,"pid_start":456}`
//! (`pid_start`, the process start time from /proc/PID/stat, is optional). A record is live
//! while that process runs and the mountpoint is in /proc/self/mountinfo; stale records (a
//! daemon killed with SIGKILL) are ignored and deleted by the next scan. `volume rm` and
//! `volume prune` refuse volumes with live records, whatever `-f` says.
//!
//! # API for the mount daemon
//!
//! ```ignore
//! let store = VolumeStore::open(&resolve_state_dir(spec.state_dir.as_deref())?)?;
//! // Once the FUSE mount is live, in the process that serves it:
//! let lease = store.acquire(Some("pgdata"), &mountpoint)?; // None: new anonymous volume
//! if lease.was_empty() { /* populate lease.data_dir() from the image */ }
//! /* bind-mount lease.data_dir() at the target */
//! drop(lease); // or lease.release()?: the usage record is gone, rm may proceed
//! ```
//!
//! `acquire` creates the volume on first use, records the usage and returns the data dir and
//! whether it was empty. `crate::spec::volattach` wraps this as the daemon's `VolumeProvider`.

mod archive;
mod archive_cli;
pub mod cli;
mod error;
mod filter;
mod meta;
pub(crate) use meta::rfc3339_utc;
mod name;
mod store;
mod usage;
mod workdir;

use std::path::{Path, PathBuf};

pub use error::{Result, VolumeError};
/// The one volume-name rule, for the store and for `--volume NAME:/path` alike.
pub use name::check as check_name;
#[allow(unused_imports)]
pub use store::{disk_usage, VolumeInfo, VolumeLease, VolumeStore};

pub const STATE_DIR_ENV: &str = "STRATAFS_STATE_DIR";
const ROOT_STATE_DIR: &str = "/var/lib/stratafs";

/// The state dir: `explicit`, else $STRATAFS_STATE_DIR, else the default for this user.
pub fn resolve_state_dir(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(dir) = explicit.filter(|d| !d.as_os_str().is_empty()) {
        return Ok(dir.to_path_buf());
    }
    if let Some(dir) = std::env::var_os(STATE_DIR_ENV).filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    default_state_dir(
        effective_uid() == Some(0),
        std::env::var_os("XDG_DATA_HOME").map(PathBuf::from),
        std::env::var_os("HOME").map(PathBuf::from),
    )
}

fn default_state_dir(
    root: bool,
    xdg_data_home: Option<PathBuf>,
    home: Option<PathBuf>,
) -> Result<PathBuf> {
    if root {
        return Ok(PathBuf::from(ROOT_STATE_DIR));
    }
    // The XDG spec says to ignore a relative XDG_DATA_HOME.
    if let Some(xdg) = xdg_data_home.filter(|p| p.is_absolute()) {
        return Ok(xdg.join("stratafs"));
    }
    match home.filter(|p| p.is_absolute()) {
        Some(home) => Ok(home.join(".local/share/stratafs")),
        None => Err(VolumeError::Invalid(format!(
            "no state dir: HOME and XDG_DATA_HOME are unset; pass --state-dir DIR or set {STATE_DIR_ENV}"
        ))),
    }
}

/// The effective uid, read from /proc/self/status (`Uid: real effective saved fs`).
fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_state_dirs() {
        let some = |p: &str| Some(PathBuf::from(p));
        assert_eq!(
            default_state_dir(true, some("/x"), some("/home/u")).unwrap(),
            PathBuf::from("/var/lib/stratafs")
        );
        assert_eq!(
            default_state_dir(false, some("/x"), some("/home/u")).unwrap(),
            PathBuf::from("/x/stratafs")
        );
        assert_eq!(
            default_state_dir(false, some("rel"), some("/home/u")).unwrap(),
            PathBuf::from("/home/u/.local/share/stratafs")
        );
        let err = default_state_dir(false, None, None).unwrap_err();
        assert!(err.to_string().contains("--state-dir"));
    }

    #[test]
    fn explicit_state_dir_wins() {
        assert_eq!(
            resolve_state_dir(Some(Path::new("/srv/s"))).unwrap(),
            PathBuf::from("/srv/s")
        );
    }

    #[test]
    fn effective_uid_is_readable() {
        let uid = effective_uid().expect("uid");
        let owner = std::os::unix::fs::MetadataExt::uid(
            &std::fs::metadata("/proc/self").expect("/proc/self"),
        );
        assert_eq!(uid, owner);
    }
}
