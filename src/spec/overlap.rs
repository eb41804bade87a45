//! Whether two directories of a mount overlap, judged by identity rather than by path.
//!
//! Paths lie: `mount --bind LAYER ALIAS` makes ALIAS the very directory LAYER is, under an
//! unrelated name, and a bind of `LAYER/sub` puts a piece of the layer anywhere. Like the
//! kernel's overlayfs (which refuses with "conflicting lowerdir path"), each directory is
//! known by its (st_dev, st_ino) and those of its ancestors, and by its path inside its own
//! filesystem, which is the same whatever mount shows it.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use crate::sys;
use crate::sys::mountinfo::MountEntry;

/// How one directory stands to another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relation {
    Same,
    Inside,
    Contains,
}

impl Relation {
    /// The words between "A" and "B" in "A <relation> B".
    pub fn words(self) -> &'static str {
        match self {
            Relation::Same => "is the same directory as",
            Relation::Inside => "is inside",
            Relation::Contains => "contains",
        }
    }
}

/// One directory's identity.
#[derive(Debug)]
pub struct Place {
    /// (st_dev, st_ino) of the directory, then of each ancestor up to the root, following
    /// `..` as path lookup does.
    chain: Vec<(u64, u64)>,
    /// The filesystem (mountinfo's major:minor) and the directory's path inside it.
    in_fs: Option<(String, PathBuf)>,
    /// The directory's path as this process sees it (to tell an alias from a plain path).
    seen_as: Option<PathBuf>,
}

/// Bounds the walk up the tree (the root is reached long before on any real system).
const MAX_DEPTH: usize = 4096;

/// Finds the identities of many directories at once: the mount table is read once, and the
/// chain of ancestors is walked only up to the first directory already met (the layers of a
/// mount usually share every ancestor but their own directory; there may be hundreds).
pub struct Places {
    mounts: Vec<MountEntry>,
    /// By (st_dev, st_ino, mount id) of a directory met: its chain, itself first.
    chains: HashMap<(u64, u64, u64), Vec<(u64, u64)>>,
}

impl Default for Places {
    fn default() -> Self {
        Places {
            mounts: crate::sys::mountinfo::mounts(),
            chains: HashMap::new(),
        }
    }
}

impl Places {
    /// The identity of directory `path` (symlinks in it are followed, as in any argument).
    pub fn of(&mut self, path: &Path) -> io::Result<Place> {
        let fd = sys::open_dir_path(path)?;
        let seen_as = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok();
        let in_fs = seen_as
            .as_deref()
            .and_then(|p| place_in_fs(&fd, p, &self.mounts));
        Ok(Place {
            chain: self.chain(fd)?,
            in_fs,
            seen_as,
        })
    }

    /// (st_dev, st_ino) of the directory behind `fd` and of each ancestor up to the root,
    /// following `..` as path lookup does.
    fn chain(&mut self, fd: OwnedFd) -> io::Result<Vec<(u64, u64)>> {
        let mut met = Vec::new();
        let mut chain = Vec::new();
        let mut cur = fd;
        let mut id = sys::mount_identity(cur.as_fd())?;
        for _ in 0..MAX_DEPTH {
            if let Some(known) = self.chains.get(&id) {
                chain.extend_from_slice(known);
                break;
            }
            met.push(id);
            chain.push((id.0, id.1));
            let parent = sys::open_parent(cur.as_fd())?;
            let parent_id = sys::mount_identity(parent.as_fd())?;
            if (parent_id.0, parent_id.1) == (id.0, id.1) {
                break;
            }
            (cur, id) = (parent, parent_id);
        }
        for (i, id) in met.into_iter().enumerate() {
            self.chains.insert(id, chain[i..].to_vec());
        }
        Ok(chain)
    }
}

impl Place {
    /// How `self` stands to `other`, if they overlap at all.
    pub fn relation(&self, other: &Place) -> Option<Relation> {
        if self.chain[0] == other.chain[0] {
            return Some(Relation::Same);
        }
        if self.chain[1..].contains(&other.chain[0]) {
            return Some(Relation::Inside);
        }
        if other.chain[1..].contains(&self.chain[0]) {
            return Some(Relation::Contains);
        }
        let ((dev_a, a), (dev_b, b)) = (self.in_fs.as_ref()?, other.in_fs.as_ref()?);
        if dev_a != dev_b {
            return None;
        }
        if a == b {
            Some(Relation::Same)
        } else if a.starts_with(b) {
            Some(Relation::Inside)
        } else if b.starts_with(a) {
            Some(Relation::Contains)
        } else {
            None
        }
    }

    /// Whether the paths alone do not show the overlap (one is reached through an alias).
    pub fn hidden_from_paths(&self, other: &Place) -> bool {
        match (&self.seen_as, &other.seen_as) {
            (Some(a), Some(b)) => !(a.starts_with(b) || b.starts_with(a)),
            _ => true,
        }
    }
}

/// The filesystem and path inside it of the directory behind `fd`, seen at `seen_as`: from
/// the mount the fd is on (its id in fdinfo), whose root field says which directory of the
/// filesystem it shows.
fn place_in_fs(fd: &OwnedFd, seen_as: &Path, mounts: &[MountEntry]) -> Option<(String, PathBuf)> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())).ok()?;
    let mnt_id: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("mnt_id:"))?
        .trim()
        .parse()
        .ok()?;
    let mount = mounts.iter().find(|m| m.id == mnt_id)?;
    let below = seen_as.strip_prefix(&mount.mount_point).ok()?;
    Some((mount.device.clone(), mount.root.join(below)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(label: &str) -> PathBuf {
        let p =
            std::env::temp_dir().join(format!("stratafs-overlap-{label}-{}", std::process::id()));
        std::fs::create_dir_all(p.join("a/b/c")).unwrap();
        std::fs::create_dir_all(p.join("d")).unwrap();
        p
    }

    #[test]
    fn relations_by_identity() {
        let t = scratch("rel");
        let mut places = Places::default();
        let mut place = |rel: &str| places.of(&t.join(rel)).unwrap();
        let (a, b, c, d) = (place("a"), place("a/b"), place("a/b/c"), place("d"));
        assert_eq!(a.relation(&place("a/b/..")), Some(Relation::Same));
        assert_eq!(c.relation(&a), Some(Relation::Inside));
        assert_eq!(a.relation(&b), Some(Relation::Contains));
        assert_eq!(d.relation(&c), None);
        assert!(!c.hidden_from_paths(&a));
        // A symlink is another path to the same directory.
        std::os::unix::fs::symlink(t.join("a/b"), t.join("link")).unwrap();
        assert_eq!(place("link/c").relation(&b), Some(Relation::Inside));
        let _ = std::fs::remove_dir_all(&t);
    }
}
