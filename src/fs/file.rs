//! open / read / release of regular files. Lower files are served by FUSE passthrough when the
//! kernel offers it (the kernel reads the backing file directly), else by pread in the daemon.

use std::fs::File;
use std::os::fd::AsFd;
use std::sync::{Arc, Weak};

use fuser::{
    BackingId, Errno, FileHandle, FopenFlags, INodeNo, OpenAccMode, OpenFlags, ReplyData, ReplyOpen,
};
use parking_lot::Mutex;

use super::{errno, StrataFs};
use crate::index::DirIndex;
use crate::layer::relpath;
use crate::sys;

pub enum Handle {
    File {
        file: File,
        /// Keeps the kernel's backing id alive until release.
        _backing: Option<Arc<BackingId>>,
    },
    Dir {
        index: Arc<DirIndex>,
    },
}

/// One backing id per inode at a time (the kernel refuses a second one for the same inode).
#[derive(Default)]
pub struct BackingCache {
    by_ino: Mutex<std::collections::HashMap<u64, Weak<BackingId>>>,
}

impl StrataFs {
    pub(super) fn do_open(&self, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.acc_mode() != OpenAccMode::O_RDONLY || flags.0 & libc::O_TRUNC != 0 {
            return reply.error(Errno::EROFS);
        }
        let node = match self.node(ino) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let Some(lower) = node.inner.read().lower.clone() else {
            return reply.error(Errno::ENOENT);
        };
        let layer = &self.layers[lower.slot as usize];
        let file = match relpath::to_cstring(&lower.rel).and_then(|rel| {
            layer.open(
                &rel,
                libc::O_RDONLY | libc::O_NOFOLLOW | (flags.0 & libc::O_DIRECT),
            )
        }) {
            Ok(fd) => File::from(fd),
            Err(e) => return reply.error(errno(&e)),
        };
        let fh = self.alloc_fh();
        if self.passthrough.load(std::sync::atomic::Ordering::Relaxed) {
            match self.backing_for(ino.0, &file, &reply) {
                Ok(backing) => {
                    self.handles.insert(
                        fh,
                        Arc::new(Handle::File {
                            file,
                            _backing: Some(backing.clone()),
                        }),
                    );
                    return reply.opened_passthrough(FileHandle(fh), FopenFlags::empty(), &backing);
                }
                Err(e) => log::debug!("passthrough unavailable for inode {ino:?}: {e}"),
            }
        }
        self.handles.insert(
            fh,
            Arc::new(Handle::File {
                file,
                _backing: None,
            }),
        );
        // Lower content never changes: keep the page cache across opens.
        reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE)
    }

    fn backing_for(
        &self,
        ino: u64,
        file: &File,
        reply: &ReplyOpen,
    ) -> std::io::Result<Arc<BackingId>> {
        let mut map = self.backing.by_ino.lock();
        if let Some(id) = map.get(&ino).and_then(Weak::upgrade) {
            return Ok(id);
        }
        let id = Arc::new(reply.open_backing(file.as_fd())?);
        map.insert(ino, Arc::downgrade(&id));
        Ok(id)
    }

    pub(super) fn do_read(&self, fh: FileHandle, offset: u64, size: u32, reply: ReplyData) {
        let handle = self.handles.get(fh.0);
        let Some(Handle::File { file, .. }) = handle.as_deref() else {
            return reply.error(Errno::EBADF);
        };
        let mut buf = vec![0u8; size as usize];
        let mut done = 0;
        // pread may return short counts; FUSE expects a short reply only at end of file.
        while done < buf.len() {
            match sys::pread(file.as_fd(), &mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return reply.error(errno(&e)),
            }
        }
        reply.data(&buf[..done])
    }
}
