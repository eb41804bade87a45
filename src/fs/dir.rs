//! opendir / readdir / readdirplus: each open directory gets a snapshot, sorted by name, so
//! offsets stay stable for the life of the handle (telldir/seekdir work). Reading from the
//! start again (rewinddir) takes a new snapshot, as POSIX requires.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use fuser::{
    Errno, FileHandle, FileType, FopenFlags, INodeNo, ReplyDirectory, ReplyDirectoryPlus, ReplyOpen,
};

use super::{file::Handle, StrataFs, TTL};
use crate::dirstate::{DirState, ListEntry};
use crate::index::DirIndex;
use crate::inode::lower_ino;

/// Offsets: 1 = after ".", 2 = after "..", 2 + i + 1 = after listing entry i.
const DOT_ENTRIES: u64 = 2;

/// What an open directory lists: the lower index itself when the upper layer adds nothing
/// (no copy), else a merged listing.
pub struct DirSnapshot {
    lower: Arc<DirIndex>,
    merged: Option<Vec<ListEntry>>,
    /// A read has been served from it: a later read from offset 0 is a rewind.
    served: AtomicBool,
}

impl DirSnapshot {
    fn len(&self) -> usize {
        self.merged.as_ref().map_or(self.lower.len(), Vec::len)
    }

    /// (name, ino, kind) of entry i.
    fn get(&self, i: usize) -> (&[u8], u64, FileType) {
        let lower_entry = |j: usize| {
            let e = self.lower.entry(j);
            (
                self.lower.name(e),
                lower_ino(e.layer, e.attr().host_ino),
                e.attr().kind(),
            )
        };
        match &self.merged {
            None => lower_entry(i),
            Some(list) => match &list[i] {
                ListEntry::Lower(j) => lower_entry(*j),
                ListEntry::Upper { name, ino, kind } => (name, *ino, *kind),
            },
        }
    }
}

fn take_snapshot(state: &DirState) -> DirSnapshot {
    DirSnapshot {
        lower: state.lower.clone(),
        merged: state.listing(),
        served: AtomicBool::new(false),
    }
}

impl StrataFs {
    pub(super) fn do_opendir(&self, ino: INodeNo, reply: ReplyOpen) {
        let result = self.node(ino).and_then(|node| self.dir_state(&node));
        match result {
            Ok(state) => {
                let snapshot = take_snapshot(&state.read());
                let fh = self.alloc_fh();
                self.handles.insert(fh, Arc::new(Handle::Dir(snapshot)));
                // Every change to a directory goes through the daemon, which keeps the
                // kernel's cached listing valid (the kernel drops it on create/unlink/rename).
                reply.opened(
                    FileHandle(fh),
                    FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_CACHE_DIR,
                )
            }
            Err(e) => reply.error(e),
        }
    }

    /// The snapshot a read at `offset` lists from. A read from the start after the first one
    /// is a rewinddir: it must show names created or removed since opendir (the kernel only
    /// asks again once a change dropped its cached listing), so it takes a new snapshot.
    fn snapshot(&self, ino: INodeNo, fh: FileHandle, offset: u64) -> Result<Arc<Handle>, Errno> {
        let handle = match self.handles.get(fh.0) {
            Some(h) if matches!(*h, Handle::Dir(_)) => h,
            _ => return Err(Errno::EBADF),
        };
        let Handle::Dir(snap) = &*handle else {
            return Err(Errno::EBADF);
        };
        if !snap.served.swap(true, Ordering::Relaxed) || offset != 0 {
            return Ok(handle);
        }
        let state = self.node(ino).and_then(|node| self.dir_state(&node))?;
        let fresh = take_snapshot(&state.read());
        fresh.served.store(true, Ordering::Relaxed);
        let fresh = Arc::new(Handle::Dir(fresh));
        self.handles.insert(fh.0, fresh.clone());
        Ok(fresh)
    }

    fn parent_ino(&self, ino: INodeNo) -> u64 {
        self.nodes
            .get(ino.0)
            .and_then(|n| n.inner.read().parent().map(|p| p.ino))
            .unwrap_or(ino.0)
    }

    pub(super) fn do_readdir(
        &self,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let handle = match self.snapshot(ino, fh, offset) {
            Ok(h) => h,
            Err(e) => return reply.error(e),
        };
        let Handle::Dir(snap) = &*handle else {
            return reply.error(Errno::EBADF);
        };
        let mut off = offset;
        while off < DOT_ENTRIES {
            let (name, target) = if off == 0 {
                (".", ino.0)
            } else {
                ("..", self.parent_ino(ino))
            };
            if reply.add(INodeNo(target), off + 1, FileType::Directory, name) {
                return reply.ok();
            }
            off += 1;
        }
        for i in (off - DOT_ENTRIES) as usize..snap.len() {
            let (name, d_ino, kind) = snap.get(i);
            if reply.add(
                INodeNo(d_ino),
                DOT_ENTRIES + i as u64 + 1,
                kind,
                OsStr::from_bytes(name),
            ) {
                break;
            }
        }
        reply.ok()
    }

    pub(super) fn do_readdirplus(
        &self,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let handle = match self.snapshot(ino, fh, offset) {
            Ok(h) => h,
            Err(e) => return reply.error(e),
        };
        let Handle::Dir(snap) = &*handle else {
            return reply.error(Errno::EBADF);
        };
        let dir = match self.node(ino) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let mut off = offset;
        while off < DOT_ENTRIES {
            // "." and ".." carry attributes but are not lookups (the kernel takes no reference).
            let target = if off == 0 {
                ino.0
            } else {
                self.parent_ino(ino)
            };
            let attr = match self
                .do_getattr(INodeNo(target), None)
                .or_else(|_| self.do_getattr(ino, None))
            {
                Ok(a) => a,
                Err(e) => return reply.error(e),
            };
            let name = if off == 0 { "." } else { ".." };
            if reply.add(
                INodeNo(target),
                off + 1,
                name,
                &TTL,
                &attr,
                self.generation(&attr),
            ) {
                return reply.ok();
            }
            off += 1;
        }
        let state = match self.dir_state(&dir) {
            Ok(s) => s,
            Err(e) => return reply.error(e),
        };
        for i in (off - DOT_ENTRIES) as usize..snap.len() {
            let (name, _, _) = snap.get(i);
            // The snapshot may be older than the directory: skip names that are gone.
            let state = state.read();
            let Some(resolved) = state.resolve(name) else {
                continue;
            };
            // The entry counts as a lookup once it is sent; the reference taken here is given
            // back if it does not fit.
            let node = match self.node_for(&dir, &state, name, resolved) {
                Ok(n) => n,
                Err(_) => continue,
            };
            drop(state);
            let attr = match self.node_attr(&node) {
                Ok(a) => a,
                Err(_) => {
                    self.nodes.forget(node.ino, 1);
                    continue;
                }
            };
            if reply.add(
                INodeNo(node.ino),
                DOT_ENTRIES + i as u64 + 1,
                OsStr::from_bytes(name),
                &TTL,
                &attr,
                self.generation(&attr),
            ) {
                self.nodes.forget(node.ino, 1);
                break;
            }
        }
        reply.ok()
    }
}
