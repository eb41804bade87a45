//! The union core: the merged view of the lower layers and the writable upper layer, and every
//! change to it, in the kernel overlayfs on-disk format. It knows nothing of FUSE: operations
//! take inode numbers, names as bytes and plain integers, and return `io::Result` (errno
//! values in the `io::Error`); the FUSE adapter (`crate::fs`) turns requests into these calls.
//!
//! - `dirload`: the merged state of a directory (whiteouts, opaque directories, redirects,
//!   the index of copied-up hard links) and the inode numbers of its upper entries.
//! - `lowerpath`: paths through the lower layers only (where a redirect points).
//! - `resolve`: name lookup to nodes, upper paths, attributes.
//! - `real`: where a node's object and its data lie (upper, index, lower, orphan).
//! - `create`, `remove`, `rename`: the namespace changes (create and link share one
//!   preamble and one way of replacing a whiteout).
//! - `copy_up`: when and where a node is copied up (parents, index, metacopy); the copy of
//!   one object itself is `crate::union::copy_object`.
//! - `setattr`, `xattr`: metadata changes and the file's own xattrs.
//! - `open`: opening an object for I/O, and the I/O on an open file.
//! - `readdir`: the snapshot an open directory lists from.
//!
//! Methods take `&self` and run on several threads at once; shared state is in sharded maps,
//! per-directory locks and per-node locks, never behind one global lock. Every change is
//! applied to disk first, then to the in-memory state, then returned.

pub(crate) mod acl;
pub(crate) mod attr;
pub(crate) mod copy_object;
#[cfg(test)]
mod core_tests;
pub(crate) mod dirstate;
pub(crate) mod idmap;
pub(crate) mod inode;
pub(crate) mod layer;
pub(crate) mod listing;
pub(crate) mod lowerwalk;
pub(crate) mod merge;
pub(crate) mod ovl;
pub(crate) mod private_dir;
pub(crate) mod rootless;
pub(crate) mod sharded;
pub(crate) mod statpool;
pub(crate) mod tempname;
pub(crate) mod treecopy;
pub(crate) mod upper;
pub(crate) mod whiteout;

mod copy_up;
mod create;
mod dirload;
mod lowerpath;
mod open;
mod readdir;
mod real;
mod remove;
mod rename;
mod resolve;
mod setattr;
#[cfg(test)]
mod tests;
mod xattr;

use std::io;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

use crate::sys;
use crate::sys::c;
use crate::union::attr::{Attr, Kind};
use crate::union::dirstate::DirState;
use crate::union::inode::{LowerRef, Node, NodeAttr, NodeInner, NodeTable, ROOT_INO};
use crate::union::layer::Layer;
use crate::union::sharded::ShardedMap;
use crate::union::upper::Upper;

pub use create::NewObject;
pub use open::{read_only_open, OpenFile};
pub use readdir::DirSnapshot;
pub use rename::RenameMode;
pub use setattr::{Change, SetTime};

/// The longest name any layer's filesystem can hold (Linux NAME_MAX).
const NAME_MAX: usize = 255;

/// The error of a failed call, as the errno `code` (a `sys::c::E*` value).
pub(crate) fn errno(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

/// A node as a lookup (or a create, link, readdirplus entry) returns it: the caller holds
/// one more reference on it, given back with [`Union::forget`].
#[derive(Clone, Copy, Debug)]
pub struct Entry {
    pub ino: u64,
    /// Increases when a number is reused by a new object (see `NodeTable::lookup_or_insert`).
    pub generation: u64,
    pub attr: Attr,
}

/// Who asks for a new object: its owner.
#[derive(Clone, Copy, Debug)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
}

/// What statfs reports: the upper layer's filesystem, else the top layer's.
#[derive(Clone, Copy, Debug)]
pub struct FsStats {
    pub blocks: u64,
    pub blocks_free: u64,
    pub blocks_available: u64,
    pub files: u64,
    pub files_free: u64,
    pub block_size: u32,
    pub name_max: u32,
    pub fragment_size: u32,
}

pub struct Union {
    layers: Vec<Layer>,
    upper: Option<Upper>,
    nodes: NodeTable,
    /// Merged directories by inode, loaded on first use and kept for the life of the mount.
    dirs: ShardedMap<Arc<RwLock<DirState>>>,
    format: crate::union::rootless::Format,
    /// How owners are stored (id maps, squashing) for the owners callers give.
    ownership: crate::union::idmap::Ownership,
    /// Upper host inode -> inode number, for hard-linked upper files (see upper_entry_ino).
    upper_link_inos: parking_lot::Mutex<std::collections::HashMap<u64, u64>>,
    /// Set once sub-mounts are in place on a --read-only mount: the union refuses writes.
    deny_writes: Arc<AtomicBool>,
}

impl Union {
    /// `layers` is bottom first; slot i is `layers[i]`. `format`: what the writable layer
    /// writes (marker namespace, metacopy, directory redirects); `ownership`: how the owners
    /// callers give are stored.
    pub fn new(
        layers: Vec<Layer>,
        upper: Option<Upper>,
        format: crate::union::rootless::Format,
        ownership: crate::union::idmap::Ownership,
    ) -> io::Result<Union> {
        let top = layers.last().ok_or_else(|| io::Error::other("no layers"))?;
        let root_stat = match &upper {
            Some(u) => sys::fstat(u.root())?,
            None => sys::fstat(top.root())?,
        };
        let top_slot = top.slot;
        let all_layers: Vec<u16> = (0..layers.len() as u16).rev().collect();
        let union = Union {
            nodes: NodeTable::default(),
            dirs: ShardedMap::default(),
            format,
            ownership,
            upper_link_inos: Default::default(),
            deny_writes: Arc::new(AtomicBool::new(false)),
            layers,
            upper,
        };
        let has_upper = union.upper.is_some();
        union.nodes.insert_pinned(Node::new(
            ROOT_INO,
            Kind::Dir,
            NodeInner {
                links: Default::default(),
                lower: Some(LowerRef {
                    slot: top_slot,
                    rel: b".".to_vec().into(),
                    dir_layers: all_layers.into(),
                    ..LowerRef::default()
                }),
                upper: has_upper,
                object: None,
                metacopy: false,
                index: None,
                attr: NodeAttr::Own(Some(Box::new(Attr::from_stat(&root_stat)))),
            },
        ));
        Ok(union)
    }

    fn node(&self, ino: u64) -> io::Result<Arc<Node>> {
        self.nodes.get(ino).ok_or(errno(c::ENOENT))
    }

    fn upper(&self) -> io::Result<&Upper> {
        self.upper.as_ref().ok_or(errno(c::EROFS))
    }

    /// The upper layer for a change: EROFS on a read-only mount.
    fn writable_upper(&self) -> io::Result<&Upper> {
        if self.deny_writes.load(Ordering::Relaxed) {
            return Err(errno(c::EROFS));
        }
        self.upper()
    }

    pub fn deny_writes_handle(&self) -> Arc<AtomicBool> {
        self.deny_writes.clone()
    }

    /// Drops `n` kernel references to `ino`; true when the kernel no longer knows the node.
    pub fn forget(&self, ino: u64, n: u64) -> bool {
        self.nodes.forget(ino, n);
        self.nodes.get(ino).is_none()
    }

    /// The generation of node `ino` (0 if unknown).
    pub fn generation(&self, ino: u64) -> u64 {
        self.nodes.generation(ino)
    }

    /// access(2) beyond the permission bits the kernel checks itself: writing needs a
    /// writable upper layer.
    pub fn access(&self, ino: u64, write: bool) -> io::Result<()> {
        self.node(ino)?;
        if write {
            self.writable_upper()?;
        }
        Ok(())
    }

    pub fn statfs(&self) -> io::Result<FsStats> {
        let fd = match &self.upper {
            Some(u) => u.root(),
            None => self.layers.last().expect("at least one layer").root(),
        };
        let s = sys::fstatvfs(fd)?;
        Ok(FsStats {
            blocks: s.f_blocks,
            blocks_free: s.f_bfree,
            blocks_available: s.f_bavail,
            files: s.f_files,
            files_free: s.f_ffree,
            block_size: s.f_bsize as u32,
            name_max: s.f_namemax as u32,
            fragment_size: s.f_frsize as u32,
        })
    }

    /// Stack depth for passthrough: 1 keeps this mount usable as an overlayfs lower; layers
    /// that themselves sit on a stacking filesystem (overlayfs, FUSE) need 2.
    pub fn passthrough_stack_depth(&self) -> u32 {
        const OVERLAYFS_MAGIC: i64 = 0x794c7630;
        const FUSE_MAGIC: i64 = 0x65735546;
        let stacked = |fd: std::os::fd::BorrowedFd<'_>| matches!(sys::fstatfs_type(fd), Ok(t) if t == OVERLAYFS_MAGIC || t == FUSE_MAGIC);
        let upper_stacked = self.upper.as_ref().is_some_and(|u| stacked(u.root()));
        if upper_stacked || self.layers.iter().any(|l| stacked(l.root().as_fd())) {
            2
        } else {
            1
        }
    }

    /// Design figure: entries and heap bytes of the lower index over all loaded directories.
    pub fn index_stats(&self) -> (usize, usize) {
        self.dirs.values().iter().fold((0, 0), |(n, b), d| {
            let d = d.read();
            (n + d.lower.len(), b + d.lower.heap_bytes())
        })
    }

    /// How many nodes the kernel holds references to (with the root).
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }
}
