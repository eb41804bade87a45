//! Reading the mount table (/proc/self/mountinfo).

use std::path::{Path, PathBuf};

/// Undoes the octal escapes (`\040` for space, `\012` newline, `\\`) mountinfo uses in paths.
fn unescape(field: &str) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len() + 1
            && b[i + 1..].len() >= 3
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

pub struct MountEntry {
    /// The mount's id (as in /proc/self/fdinfo's mnt_id).
    pub id: u64,
    /// The device (major:minor) and the directory of it that the mount shows.
    pub device: String,
    pub root: PathBuf,
    pub mount_point: PathBuf,
    pub fs_type: String,
    pub source: String,
}

pub fn mounts() -> Vec<MountEntry> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let sep = fields.iter().position(|f| *f == "-")?;
            Some(MountEntry {
                id: fields.first()?.parse().ok()?,
                device: fields.get(2)?.to_string(),
                root: unescape(fields.get(3)?),
                mount_point: unescape(fields.get(4)?),
                fs_type: fields.get(sep + 1)?.to_string(),
                source: fields.get(sep + 2).unwrap_or(&"").to_string(),
            })
        })
        .collect()
}

/// The mount whose mount point is exactly `path` (the last one, if stacked).
pub fn mount_at(path: &Path) -> Option<MountEntry> {
    let canon = path.canonicalize().ok()?;
    mounts().into_iter().rev().find(|m| m.mount_point == canon)
}

/// Mount points that show `dir` (or a directory below it) through a bind mount, wherever
/// they are: found by device and root, so they count even when the path to them is gone
/// (the union above them lost its daemon).
pub fn binds_of(dir: &Path) -> Vec<PathBuf> {
    let Ok(dir) = dir.canonicalize() else {
        return Vec::new();
    };
    let all = mounts();
    let Some(home) = all
        .iter()
        .filter(|m| dir.starts_with(&m.mount_point))
        .max_by_key(|m| m.mount_point.as_os_str().len())
    else {
        return Vec::new();
    };
    let Ok(rel) = dir.strip_prefix(&home.mount_point) else {
        return Vec::new();
    };
    let shown = home.root.join(rel);
    all.iter()
        .filter(|m| m.device == home.device && m.root.starts_with(&shown) && m.mount_point != dir)
        .map(|m| m.mount_point.clone())
        .collect()
}

/// The type the mount shows in /proc/mounts, as fuse-overlayfs shows `fuse.fuse-overlayfs`.
pub const FS_TYPE: &str = "fuse.stratafs";

/// Whether a mount table entry is a stratafs union (also one mounted by older versions,
/// which showed the plain type `fuse` with the source `stratafs`).
pub fn is_stratafs(entry: &MountEntry) -> bool {
    entry.fs_type == FS_TYPE || (entry.fs_type == "fuse" && entry.source == "stratafs")
}

/// The stratafs union a sub-mount at `path` sits in: the deepest stratafs mount above it
/// (also one whose daemon is gone). `path` itself when there is none.
pub fn union_above(path: &Path) -> PathBuf {
    mounts()
        .into_iter()
        .filter(|m| m.mount_point != path && path.starts_with(&m.mount_point))
        .filter(is_stratafs)
        .max_by_key(|m| m.mount_point.as_os_str().len())
        .map(|m| m.mount_point)
        .unwrap_or_else(|| path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_are_decoded() {
        assert_eq!(unescape("/a\\040b\\012c"), PathBuf::from("/a b\nc"));
        assert_eq!(unescape("/plain"), PathBuf::from("/plain"));
        assert_eq!(unescape("/end\\04"), PathBuf::from("/end\\04"));
    }

    #[test]
    fn root_is_mounted() {
        assert!(mount_at(Path::new("/")).is_some());
    }
}
