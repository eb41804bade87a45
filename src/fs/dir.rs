//! Directory listings as the kernel reads them: "." and "..", then the snapshot taken at
//! opendir (a new one on rewinddir), with attributes for readdirplus.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use fuser::{Errno, FileHandle, Generation, INodeNo, ReplyDirectory, ReplyDirectoryPlus};

use super::handles::OpenDirHandle;
use super::reply::{file_type, ToErrno};
use super::{StrataFs, DOT_ENTRIES, TTL};

impl StrataFs {
    /// The snapshot a read at `offset` lists from. A read from the start after the first one
    /// is a rewinddir: it must show names created or removed since opendir (the kernel only
    /// asks again once a change dropped its cached listing), so it takes a new snapshot.
    pub(super) fn dir_handle(
        &self,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
    ) -> Result<Arc<OpenDirHandle>, Errno> {
        let handle = self.dirs.get(fh.0)?;
        if !handle.served.swap(true, Ordering::Relaxed) || offset != 0 {
            return Ok(handle);
        }
        let snapshot = self.union.list_dir(ino.0).or_errno("readdir")?;
        Ok(self.dirs.replace(
            fh.0,
            OpenDirHandle {
                snapshot,
                served: AtomicBool::new(true),
            },
        ))
    }

    /// The entries "." and ".." that a read of directory `ino` at `offset` still lists, each
    /// as (offset after it, name, node).
    fn dot_entries(
        &self,
        ino: INodeNo,
        offset: u64,
    ) -> impl Iterator<Item = (u64, &'static str, u64)> + '_ {
        (offset..DOT_ENTRIES).map(move |off| match off {
            0 => (1, ".", ino.0),
            _ => (2, "..", self.union.parent_ino(ino.0)),
        })
    }

    pub(super) fn fill_dir(
        &self,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let handle = match self.dir_handle(ino, fh, offset) {
            Ok(h) => h,
            Err(e) => return reply.error(e),
        };
        let snap = &handle.snapshot;
        for (next, name, target) in self.dot_entries(ino, offset) {
            if reply.add(INodeNo(target), next, fuser::FileType::Directory, name) {
                return reply.ok();
            }
        }
        for i in first_listed(offset)..snap.len() {
            let (name, d_ino, kind) = snap.get(i);
            if reply.add(
                INodeNo(d_ino),
                offset_after(i),
                file_type(kind),
                OsStr::from_bytes(name),
            ) {
                break;
            }
        }
        reply.ok()
    }

    pub(super) fn fill_dir_plus(
        &self,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let handle = match self.dir_handle(ino, fh, offset) {
            Ok(h) => h,
            Err(e) => return reply.error(e),
        };
        let snap = &handle.snapshot;
        // "." and ".." carry attributes but are not lookups (the kernel takes no reference).
        for (next, name, target) in self.dot_entries(ino, offset) {
            let attr = self
                .union
                .getattr(target, None)
                .map(|a| (target, a))
                .or_else(|_| self.union.getattr(ino.0, None).map(|a| (ino.0, a)))
                .or_errno("readdirplus");
            let (attr_ino, attr) = match attr {
                Ok(a) => a,
                Err(e) => return reply.error(e),
            };
            if reply.add(
                INodeNo(target),
                next,
                name,
                &TTL,
                &self.file_attr(attr_ino, &attr),
                Generation(self.union.generation(attr_ino)),
            ) {
                return reply.ok();
            }
        }
        for i in first_listed(offset)..snap.len() {
            let (name, _, _) = snap.get(i);
            // The snapshot may be older than the directory: names that are gone are skipped.
            // The entry counts as a lookup once it is sent; the reference taken here is given
            // back if it does not fit.
            let Some(entry) = self.union.lookup_listed(ino.0, name) else {
                continue;
            };
            if reply.add(
                INodeNo(entry.ino),
                offset_after(i),
                OsStr::from_bytes(name),
                &self.attr_ttl(entry.ino),
                &self.file_attr(entry.ino, &entry.attr),
                Generation(entry.generation),
            ) {
                self.union.forget(entry.ino, 1);
                break;
            }
        }
        reply.ok()
    }
}

/// The first listing entry a read at `offset` lists (offsets 0 to 2 cover "." and "..").
fn first_listed(offset: u64) -> usize {
    offset.saturating_sub(DOT_ENTRIES) as usize
}

/// The offset after listing entry `i`, where a read resumes.
fn offset_after(i: usize) -> u64 {
    DOT_ENTRIES + i as u64 + 1
}
