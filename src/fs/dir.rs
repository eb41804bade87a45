//! opendir / readdir / readdirplus: each open directory gets a snapshot, sorted by name, so
//! offsets stay stable for the life of the handle (telldir/seekdir work).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use fuser::{
    Errno, FileHandle, FileType, FopenFlags, INodeNo, ReplyDirectory, ReplyDirectoryPlus, ReplyOpen,
};

use super::{file::Handle, StrataFs, TTL};
use crate::index::DirIndex;
use crate::inode::lower_ino;

/// Offsets: 1 = after ".", 2 = after "..", 2 + i + 1 = after index entry i.
const DOT_ENTRIES: u64 = 2;

impl StrataFs {
    pub(super) fn do_opendir(&self, ino: INodeNo, reply: ReplyOpen) {
        let node = match self.node(ino) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        match self.dir_index(&node) {
            Ok(idx) => {
                let fh = self.alloc_fh();
                self.handles
                    .insert(fh, Arc::new(Handle::Dir { index: idx }));
                reply.opened(
                    FileHandle(fh),
                    FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_CACHE_DIR,
                )
            }
            Err(e) => reply.error(e),
        }
    }

    fn dir_snapshot(&self, fh: FileHandle) -> Result<Arc<DirIndex>, Errno> {
        match self.handles.get(fh.0).as_deref() {
            Some(Handle::Dir { index }) => Ok(index.clone()),
            _ => Err(Errno::EBADF),
        }
    }

    fn parent_ino(&self, ino: INodeNo) -> u64 {
        self.nodes
            .get(ino.0)
            .map(|n| n.inner.read().parent)
            .unwrap_or(ino.0)
    }

    pub(super) fn do_readdir(
        &self,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let idx = match self.dir_snapshot(fh) {
            Ok(i) => i,
            Err(e) => return reply.error(e),
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
        for i in (off - DOT_ENTRIES) as usize..idx.len() {
            let e = idx.entry(i);
            let d_ino = lower_ino(e.layer, e.attr.host_ino);
            if reply.add(
                INodeNo(d_ino),
                DOT_ENTRIES + i as u64 + 1,
                e.attr.kind(),
                OsStr::from_bytes(idx.name(e)),
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
        let idx = match self.dir_snapshot(fh) {
            Ok(i) => i,
            Err(e) => return reply.error(e),
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
                .do_getattr(INodeNo(target))
                .or_else(|_| self.do_getattr(ino))
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
                fuser::Generation(0),
            ) {
                return reply.ok();
            }
            off += 1;
        }
        for i in (off - DOT_ENTRIES) as usize..idx.len() {
            let e = idx.entry(i);
            let name = idx.name(e);
            let ino_e = lower_ino(e.layer, e.attr.host_ino);
            let attr = e.attr.to_file_attr(ino_e);
            // Count the reference only if the entry fits: an entry that does not fit is not
            // sent, and the kernel would never forget it.
            if reply.add(
                INodeNo(ino_e),
                DOT_ENTRIES + i as u64 + 1,
                OsStr::from_bytes(name),
                &TTL,
                &attr,
                fuser::Generation(0),
            ) {
                break;
            }
            self.node_for_entry(&dir, &idx, e, name);
        }
        reply.ok()
    }
}
