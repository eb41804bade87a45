//! open / create / read / write / fsync and friends on regular files.
//!
//! Reads and writes go through FUSE passthrough when the kernel offers it: the kernel then
//! reads and writes the backing file itself. The kernel allows one backing file per inode and
//! will happily write through a backing file that was registered read-only, so a lower file's
//! backing is never handed to a writer: when a lower file with live passthrough readers is
//! copied up, its name moves to a new inode (the open gets ESTALE and the kernel retries it on
//! the new inode), and the old readers keep reading the lower file.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::AsFd;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use fuser::{
    BackingId, Errno, FileHandle, FopenFlags, INodeNo, OpenAccMode, OpenFlags, ReplyCreate,
    ReplyData, ReplyOpen,
};
use parking_lot::Mutex;

use super::copy::Data;
use super::dir::DirSnapshot;
use super::{errno, StrataFs, TTL};
use crate::inode::{upper_ino, Node};
use crate::layer::relpath;
use crate::sys;
use crate::sys::ops;
use crate::sys::splice::{SpliceError, SplicePipes};

thread_local! {
    /// The read buffer of a session thread (reads without passthrough).
    static READ_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    /// The splice pipes of a session thread (reads without passthrough, when splicing).
    static SPLICE_PIPES: std::cell::RefCell<Option<SplicePipes>> =
        const { std::cell::RefCell::new(None) };
}

pub enum Handle {
    File {
        file: File,
        /// Keeps the kernel's backing id alive until release.
        _backing: Option<Arc<BackingId>>,
    },
    Dir(DirSnapshot),
}

struct Backing {
    id: Weak<BackingId>,
    /// Registered from a lower-layer file (read-only data).
    lower: bool,
}

/// One backing id per inode at a time (the kernel refuses a second one for the same inode).
#[derive(Default)]
pub struct BackingCache {
    by_ino: Mutex<HashMap<u64, Backing>>,
}

impl BackingCache {
    fn live_lower(&self, ino: u64) -> bool {
        self.by_ino
            .lock()
            .get(&ino)
            .is_some_and(|b| b.lower && b.id.strong_count() > 0)
    }
}

/// Flags passed on to the host open of the object: access mode and behaviour, never creation.
fn host_open_flags(flags: i32) -> i32 {
    let keep = libc::O_ACCMODE
        | libc::O_APPEND
        | libc::O_TRUNC
        | libc::O_DIRECT
        | libc::O_SYNC
        | libc::O_DSYNC
        | libc::O_NOATIME;
    (flags & keep) | libc::O_NOFOLLOW
}

impl StrataFs {
    pub(super) fn do_open(&self, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let node = match self.node(ino) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let writes = flags.acc_mode() != OpenAccMode::O_RDONLY || flags.0 & libc::O_TRUNC != 0;
        if writes {
            let data = if flags.0 & libc::O_TRUNC != 0 {
                Data::None
            } else {
                Data::All
            };
            if let Err(e) = self
                .writable_upper()
                .and_then(|_| self.ensure_upper(&node, data))
            {
                return reply.error(e);
            }
        }
        if node.inner.read().upper && self.backing.live_lower(node.ino) {
            return reply.error(self.move_to_new_inode(&node));
        }
        let file = match self.open_node_file(&node, host_open_flags(flags.0)) {
            Ok(f) => f,
            Err(e) => return reply.error(e),
        };
        let is_upper = {
            let inner = node.inner.read();
            (inner.upper && !inner.metacopy) || inner.index.is_some()
        };
        let (fh, backing) =
            self.register_open_file(node.ino, file, !is_upper, |f| reply.open_backing(f));
        match backing {
            Some(b) => reply.opened_passthrough(FileHandle(fh), FopenFlags::empty(), &b),
            // Lower content never changes: keep the page cache across opens of lower files.
            None if is_upper => reply.opened(FileHandle(fh), FopenFlags::empty()),
            None => reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE),
        }
    }

    /// Opens the node's current object (upper copy if any, else lower, read-only).
    fn open_node_file(&self, node: &Node, flags: i32) -> Result<File, Errno> {
        let (is_upper, lower) = {
            let inner = node.inner.read();
            (inner.upper, inner.lower.clone())
        };
        let index = node.inner.read().index.clone();
        // A metacopy file's data is still the lower file's (writes complete it first).
        let is_upper = is_upper && !node.inner.read().metacopy;
        let fd = if let (false, Some(idx)) = (is_upper, index) {
            sys::open_beneath(self.upper()?.index(), &idx, flags, 0).map_err(|e| errno(&e))?
        } else if is_upper {
            match node.inner.read().object.clone() {
                // A hard-linked or unlinked file: open the object itself, whatever its names.
                Some(obj) => {
                    ops::reopen(obj.as_fd(), flags & !libc::O_NOFOLLOW).map_err(|e| errno(&e))?
                }
                None => {
                    let rel = self.upper_rel(node)?;
                    let c = sys::cstr(&rel).map_err(|e| errno(&e))?;
                    sys::open_beneath(self.upper()?.root(), &c, flags, 0).map_err(|e| errno(&e))?
                }
            }
        } else {
            lower.ok_or(Errno::ENOENT)?;
            // A lower metacopy file's data lies in a layer further down.
            let (slot, path) = self.lower_data_source(node)?;
            let rel = relpath::to_cstring(&path).map_err(|e| errno(&e))?;
            let ro = (flags & !(libc::O_ACCMODE | libc::O_TRUNC | libc::O_APPEND)) | libc::O_RDONLY;
            self.layers[slot as usize]
                .open(&rel, ro)
                .map_err(|e| errno(&e))?
        };
        Ok(File::from(fd))
    }

    /// The copied-up object gets its own inode number, under the same name; the caller replies
    /// ESTALE so that the kernel looks the name up again and opens the new inode.
    fn move_to_new_inode(&self, node: &Arc<Node>) -> Errno {
        let result = (|| {
            let obj = self.upper_object(node)?;
            let st = sys::fstat(obj.as_fd()).map_err(|e| errno(&e))?;
            let new_ino = upper_ino(st.st_ino);
            let link = node.inner.read().any_link().cloned().ok_or(Errno::ENOENT)?;
            let state = self.dir_state(&link.parent)?;
            state.write().set_present(&link.name, new_ino, node.kind);
            // The old inode keeps serving its open readers from the lower file.
            let mut inner = node.inner.write();
            inner.upper = false;
            inner.links.clear();
            inner.object = None;
            Ok::<(), Errno>(())
        })();
        match result {
            Ok(()) => Errno::ESTALE,
            Err(e) => e,
        }
    }

    /// Stores an open file under a new handle, with a passthrough backing id when the kernel
    /// offers passthrough; returns the handle and the backing id to reply with.
    fn register_open_file(
        &self,
        ino: u64,
        file: File,
        lower: bool,
        register: impl FnOnce(&File) -> std::io::Result<BackingId>,
    ) -> (u64, Option<Arc<BackingId>>) {
        let fh = self.alloc_fh();
        let backing = if self.passthrough.load(Ordering::Relaxed) {
            match self.backing_for(ino, &file, lower, register) {
                Ok(b) => Some(b),
                // The kernel wants CAP_SYS_ADMIN in the initial user namespace for a backing
                // file: without it (a user namespace, a plain user) every open would fail the
                // same way, so the mount stops asking.
                Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                    if self.passthrough.swap(false, Ordering::Relaxed) {
                        log::info!(
                            "passthrough unavailable: the kernel refused a backing file ({e}; it \
                             needs CAP_SYS_ADMIN in the initial user namespace): reads and \
                             writes go through the daemon"
                        );
                    }
                    None
                }
                Err(e) => {
                    log::debug!("passthrough unavailable for inode {ino}: {e}");
                    None
                }
            }
        } else {
            None
        };
        if backing.is_none() {
            // The daemon serves this file's reads and writes through its own buffers, which
            // O_DIRECT's alignment rules would refuse (EINVAL); the kernel has already bypassed
            // its page cache for an O_DIRECT open. (A passthrough file takes the opener's flags.)
            if let Err(e) = sys::ops::clear_o_direct(file.as_fd()) {
                log::warn!("inode {ino}: cannot turn O_DIRECT off for daemon I/O: {e}");
            }
        }
        self.handles.insert(
            fh,
            Arc::new(Handle::File {
                file,
                _backing: backing.clone(),
            }),
        );
        (fh, backing)
    }

    fn backing_for(
        &self,
        ino: u64,
        file: &File,
        lower: bool,
        register: impl FnOnce(&File) -> std::io::Result<BackingId>,
    ) -> std::io::Result<Arc<BackingId>> {
        let mut map = self.backing.by_ino.lock();
        if let Some(b) = map.get(&ino) {
            if let Some(id) = b.id.upgrade() {
                if b.lower == lower {
                    return Ok(id);
                }
                return Err(std::io::Error::from_raw_os_error(libc::EBUSY));
            }
        }
        let id = Arc::new(register(file)?);
        map.insert(
            ino,
            Backing {
                id: Arc::downgrade(&id),
                lower,
            },
        );
        Ok(id)
    }

    pub(super) fn do_create(
        &self,
        req: &fuser::Request,
        parent: INodeNo,
        name: &OsStr,
        (mode, umask): (u32, u32),
        flags: i32,
        reply: ReplyCreate,
    ) {
        let spec = super::write::NewObject::File {
            mode,
            umask,
            flags: host_open_flags(flags),
        };
        let (attr, node, file) = match self.create_entry(req, parent, name, spec) {
            Ok((attr, node, file)) => (attr, node, file.expect("a file was created")),
            Err(e) => return reply.error(e),
        };
        let (fh, backing) =
            self.register_open_file(node.ino, file, false, |f| reply.open_backing(f));
        match backing {
            Some(b) => reply.created_passthrough(
                &TTL,
                &attr,
                self.generation(&attr),
                FileHandle(fh),
                FopenFlags::empty(),
                &b,
            ),
            None => reply.created(
                &TTL,
                &attr,
                self.generation(&attr),
                FileHandle(fh),
                FopenFlags::empty(),
            ),
        }
    }

    fn file_of(&self, fh: FileHandle) -> Result<Arc<Handle>, Errno> {
        match self.handles.get(fh.0) {
            Some(h) if matches!(*h, Handle::File { .. }) => Ok(h),
            _ => Err(Errno::EBADF),
        }
    }

    pub(super) fn do_read(
        &self,
        unique: u64,
        fh: FileHandle,
        offset: u64,
        size: u32,
        reply: ReplyData,
    ) {
        let handle = match self.file_of(fh) {
            Ok(h) => h,
            Err(e) => return reply.error(e),
        };
        let Handle::File { file, .. } = &*handle else {
            return reply.error(Errno::EBADF);
        };
        let reply = match self.splice_read(unique, file, offset, size as usize, reply) {
            Some(unsent) => unsent,
            None => return,
        };
        READ_BUF.with_borrow_mut(|buf| {
            // One buffer per session thread, grown once: a read costs no allocation.
            if buf.len() < size as usize {
                buf.resize(size as usize, 0);
            }
            let buf = &mut buf[..size as usize];
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
        })
    }

    /// Replies to a read by splicing the file's pages to the device, where the session
    /// allows it (see sys::splice); hands the reply back when it must be sent the usual way.
    fn splice_read(
        &self,
        unique: u64,
        file: &File,
        offset: u64,
        size: usize,
        reply: ReplyData,
    ) -> Option<ReplyData> {
        let Some(device) = self.splice_device.get() else {
            return Some(reply);
        };
        let sent = SPLICE_PIPES.with_borrow_mut(|slot| {
            if slot.is_none() {
                *slot = SplicePipes::new()
                    .map_err(|e| log::debug!("no splice pipes: {e}"))
                    .ok();
            }
            let pipes = slot.as_mut().filter(|p| p.fits(size))?;
            let sent = pipes.reply_read(device.as_fd(), unique, file.as_fd(), offset, size);
            if sent.is_err() {
                // The pipes may hold part of the reply: start afresh next time.
                *slot = None;
            }
            Some(sent)
        });
        match sent {
            None => Some(reply),
            Some(Err(SpliceError::NotSent(e))) => {
                log::debug!("read not spliced, copied: {e}");
                Some(reply)
            }
            Some(Ok(_)) => {
                // The reply went to the device directly; the ReplyData, unused, must not send
                // a second one (its drop would answer EIO to a request already answered).
                std::mem::forget(reply);
                None
            }
            Some(Err(SpliceError::Device(e))) => {
                log::debug!("spliced read reply failed: {e}");
                reply.error(errno(&e));
                None
            }
        }
    }

    pub(super) fn do_write(
        &self,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
    ) -> Result<usize, Errno> {
        let handle = self.file_of(fh)?;
        let Handle::File { file, .. } = &*handle else {
            return Err(Errno::EBADF);
        };
        let mut done = 0;
        while done < data.len() {
            match ops::pwrite(file.as_fd(), &data[done..], offset + done as u64) {
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) if done > 0 => {
                    log::debug!("short write: {e}");
                    break;
                }
                Err(e) => return Err(errno(&e)),
            }
        }
        Ok(done)
    }

    pub(super) fn do_fsync(&self, fh: FileHandle, datasync: bool) -> Result<(), Errno> {
        let handle = self.file_of(fh)?;
        let Handle::File { file, .. } = &*handle else {
            return Err(Errno::EBADF);
        };
        if self.upper.as_ref().is_some_and(|u| !u.fsync) {
            return Ok(());
        }
        ops::fsync(file.as_fd(), datasync).map_err(|e| errno(&e))
    }

    pub(super) fn do_fsyncdir(&self, ino: INodeNo, datasync: bool) -> Result<(), Errno> {
        let node = self.node(ino)?;
        let Some(upper) = self.upper.as_ref().filter(|u| u.fsync) else {
            return Ok(());
        };
        if !node.inner.read().upper {
            return Ok(());
        }
        let dir = upper
            .open_dir(&self.upper_rel(&node)?)
            .map_err(|e| errno(&e))?;
        ops::fsync(dir.as_fd(), datasync).map_err(|e| errno(&e))
    }

    pub(super) fn do_fallocate(
        &self,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
    ) -> Result<(), Errno> {
        let handle = self.file_of(fh)?;
        let Handle::File { file, .. } = &*handle else {
            return Err(Errno::EBADF);
        };
        ops::fallocate(file.as_fd(), mode, offset, length).map_err(|e| errno(&e))
    }

    pub(super) fn do_lseek(&self, fh: FileHandle, offset: i64, whence: i32) -> Result<i64, Errno> {
        let handle = self.file_of(fh)?;
        let Handle::File { file, .. } = &*handle else {
            return Err(Errno::EBADF);
        };
        ops::lseek(file.as_fd(), offset, whence).map_err(|e| errno(&e))
    }

    pub(super) fn do_copy_file_range(
        &self,
        fh_in: FileHandle,
        off_in: u64,
        fh_out: FileHandle,
        off_out: u64,
        len: u64,
    ) -> Result<usize, Errno> {
        let hin = self.file_of(fh_in)?;
        let hout = self.file_of(fh_out)?;
        let (Handle::File { file: fin, .. }, Handle::File { file: fout, .. }) = (&*hin, &*hout)
        else {
            return Err(Errno::EBADF);
        };
        let len = len.min(1 << 30) as usize;
        ops::copy_file_range(fin.as_fd(), off_in, fout.as_fd(), off_out, len).map_err(|e| errno(&e))
    }
}
