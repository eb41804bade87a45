//! Who uses a volume: one usage record per lease, `leases/<id>.json`.
//!
//! A record names the volume, the mountpoint of the mount using it and the pid (plus that
//! process's start time, so a recycled pid does not count) of the daemon serving that mount.
//! A record is live only while that process runs AND its mountpoint is in
//! /proc/self/mountinfo: a daemon killed with SIGKILL, or one whose mount is gone, leaves a
//! stale record that every scan ignores and deletes.

use std::collections::{BTreeMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::sys::c;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRecord {
    pub volume: String,
    /// Absolute, symlink-free path of the mount using the volume.
    pub mountpoint: PathBuf,
    pub pid: u32,
    /// Start time of `pid` (field 22 of /proc/PID/stat); absent: any process with that pid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_start: Option<u64>,
}

impl UsageRecord {
    /// A record for the calling process.
    pub fn for_this_process(volume: &str, mountpoint: &Path) -> UsageRecord {
        let pid = std::process::id();
        UsageRecord {
            volume: volume.to_string(),
            mountpoint: mountpoint.to_path_buf(),
            pid,
            pid_start: process_start_time(pid),
        }
    }
}

/// Start time of a running (non-zombie) process, in clock ticks since boot; None if it is gone.
pub fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may itself hold spaces or ')'.
    let after_comm = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // fields[0] is field 3 (state), so field 22 (starttime) is fields[19].
    if matches!(fields.first(), Some(&"Z") | Some(&"X") | None) {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// A snapshot of which processes and mountpoints exist, to judge records against.
pub struct Liveness {
    mounted: HashSet<PathBuf>,
}

impl Liveness {
    pub fn now() -> Liveness {
        Liveness {
            mounted: crate::sys::mountinfo::mounts()
                .into_iter()
                .map(|m| m.mount_point)
                .collect(),
        }
    }

    pub fn is_live(&self, rec: &UsageRecord) -> bool {
        let running = match (process_start_time(rec.pid), rec.pid_start) {
            (Some(now), Some(then)) => now == then,
            (Some(_), None) => true,
            (None, _) => false,
        };
        running && self.mounted.contains(&rec.mountpoint)
    }

    /// Mountpoints at or below `dir` (a volume must not be deleted with a filesystem inside).
    pub fn mounts_under(&self, dir: &Path) -> Vec<PathBuf> {
        let mut found: Vec<PathBuf> = self
            .mounted
            .iter()
            .filter(|m| m.starts_with(dir))
            .cloned()
            .collect();
        found.sort();
        found
    }
}

pub fn record_file_name(id: &str) -> String {
    format!("{id}.json")
}

/// Reads every record under `dir` and returns, per volume, the mountpoints of live users.
/// Stale and unreadable records are deleted; so are temp files, which the caller's lock
/// guarantees no writer is still filling.
pub fn live_users(dir: &Path, liveness: &Liveness) -> io::Result<BTreeMap<String, Vec<PathBuf>>> {
    let mut users: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') {
            remove_quietly(&path);
            continue;
        }
        if !name.ends_with(".json") {
            continue;
        }
        match read_record(&path) {
            Ok(rec) if liveness.is_live(&rec) => {
                let list = users.entry(rec.volume).or_default();
                if !list.contains(&rec.mountpoint) {
                    list.push(rec.mountpoint);
                }
            }
            Ok(rec) => {
                log::info!(
                    "dropping stale usage record {} (pid {} at {})",
                    path.display(),
                    rec.pid,
                    rec.mountpoint.display()
                );
                remove_quietly(&path);
            }
            Err(e) => {
                log::warn!("dropping unreadable usage record {}: {e}", path.display());
                remove_quietly(&path);
            }
        }
    }
    Ok(users)
}

fn read_record(path: &Path) -> Result<UsageRecord, String> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut text = String::new();
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(c::O_NOFOLLOW)
        .open(path)
        .and_then(|f| io::Read::read_to_string(&mut io::Read::take(f, 64 * 1024), &mut text))
        .map_err(|e| e.to_string())?;
    serde_json::from_str(&text).map_err(|e| e.to_string())
}

fn remove_quietly(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        if e.kind() != io::ErrorKind::NotFound {
            log::warn!("cannot remove {}: {e}", path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;
    use crate::volume::meta::write_atomic;

    fn write(dir: &Path, id: &str, rec: &UsageRecord) {
        write_atomic(
            dir,
            &record_file_name(id),
            &serde_json::to_vec(rec).unwrap(),
        )
        .unwrap();
    }

    #[test]
    fn this_process_has_a_start_time() {
        let me = std::process::id();
        let t = process_start_time(me).expect("own start time");
        assert_eq!(process_start_time(me), Some(t));
        assert_eq!(process_start_time(u32::MAX), None);
    }

    #[test]
    fn live_needs_process_and_mount() {
        let live = Liveness::now();
        let me = UsageRecord::for_this_process("v", Path::new("/"));
        assert!(live.is_live(&me));
        // Not a mountpoint.
        let unmounted = UsageRecord {
            mountpoint: PathBuf::from("/definitely/not/mounted"),
            ..me.clone()
        };
        assert!(!live.is_live(&unmounted));
        // The pid was reused by another process (different start time).
        let reused = UsageRecord {
            pid_start: me.pid_start.map(|t| t + 1),
            ..me.clone()
        };
        assert!(!live.is_live(&reused));
        // No such process.
        let dead = UsageRecord {
            pid: u32::MAX,
            pid_start: None,
            ..me.clone()
        };
        assert!(!live.is_live(&dead));
    }

    #[test]
    fn stale_records_are_ignored_and_deleted() {
        let dir = TempDir::new("usage");
        let live_rec = UsageRecord::for_this_process("db", Path::new("/"));
        let stale = UsageRecord {
            pid: u32::MAX,
            ..live_rec.clone()
        };
        write(dir.path(), "live", &live_rec);
        write(dir.path(), "stale", &stale);
        std::fs::write(dir.path().join("junk.json"), b"{not json").unwrap();
        std::fs::write(dir.path().join(".leftover.json.tmp"), b"{").unwrap();

        let users = live_users(dir.path(), &Liveness::now()).unwrap();
        assert_eq!(users.len(), 1);
        assert_eq!(users["db"], vec![PathBuf::from("/")]);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, vec!["live.json".to_string()]);
    }
}
