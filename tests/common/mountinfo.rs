//! What is mounted where, from /proc/self/mountinfo.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

pub struct MountEntry {
    pub point: PathBuf,
    pub fs_type: String,
    /// st_dev of the mount; for FUSE its minor number names the connection in fusectl.
    pub minor: u32,
}

/// Undoes the `\ooo` octal escapes mountinfo uses for space, tab, newline and backslash.
fn unescape(field: &str) -> PathBuf {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b.get(i + 1..i + 4);
        match octal {
            Some(d) if b[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            _ => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    PathBuf::from(OsString::from_vec(out))
}

pub fn mounts() -> Vec<MountEntry> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").expect("read /proc/self/mountinfo");
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let sep = fields.iter().position(|f| *f == "-")?;
            Some(MountEntry {
                point: unescape(fields.get(4)?),
                fs_type: fields.get(sep + 1)?.to_string(),
                minor: fields.get(2)?.split(':').nth(1)?.parse().ok()?,
            })
        })
        .collect()
}

pub fn mount_points() -> Vec<PathBuf> {
    mounts().into_iter().map(|m| m.point).collect()
}

/// The filesystem types mounted exactly at `path`, bottom of the stack first.
pub fn types_at(path: &Path) -> Vec<String> {
    mounts()
        .into_iter()
        .filter(|m| m.point == path)
        .map(|m| m.fs_type)
        .collect()
}

/// The FUSE connection number of the topmost mount at `path`.
pub fn fuse_connection(path: &Path) -> Option<u32> {
    mounts()
        .into_iter()
        .rev()
        .find(|m| m.point == path && m.fs_type.starts_with("fuse"))
        .map(|m| m.minor)
}

pub fn is_mounted(path: &Path) -> bool {
    !types_at(path).is_empty()
}
