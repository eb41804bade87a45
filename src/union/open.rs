//! Opening an object for I/O, and the I/O on an open file.
//!
//! An open for writing copies the object up first. A lower file opened through FUSE
//! passthrough is read by the kernel itself; when such a file is copied up while those
//! readers live, its name moves to a new inode (see [`Union::open`]), as the kernel allows
//! one backing file per inode and would write through a read-only backing file.
//!
//! A read-only open of a lower file whose passthrough backing the adapter already holds
//! needs no host file at all: [`Union::open_lower_deferred`] answers it without a system
//! call, and the file is opened only if the daemon itself must do I/O on it (lseek,
//! copy_file_range).

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, OnceLock};

use super::copy_up::Data;
use super::{errno, Union};
use crate::sys;
use crate::sys::c;
use crate::sys::ops;
use crate::union::inode::{upper_ino, Node, NodeInner, OpenCount};
use crate::union::layer::relpath;

/// A file opened for I/O. Reads and writes at an offset, as FUSE asks for them.
pub struct OpenFile {
    /// The host file: set at the open, or on first use for a deferred open.
    file: OnceLock<File>,
    /// Where a deferred open finds its host file.
    deferred: Option<DeferredOpen>,
    /// Counts the open file on its node (dropped after the file itself is closed).
    _open: OpenCount,
}

/// A lower data file to open on first use: its layer's root, its path there, the flags.
struct DeferredOpen {
    root: Arc<OwnedFd>,
    path: CString,
    flags: i32,
}

/// What an open returns: the file, and whether its content is lower content (which never
/// changes, so the kernel may keep its page cache across opens).
pub struct Opened {
    pub file: OpenFile,
    pub lower: bool,
}

/// Flags passed on to the host open of the object: access mode and behaviour, never creation.
pub(super) fn host_open_flags(flags: i32) -> i32 {
    let keep = c::O_ACCMODE
        | c::O_APPEND
        | c::O_TRUNC
        | c::O_DIRECT
        | c::O_SYNC
        | c::O_DSYNC
        | c::O_NOATIME;
    (flags & keep) | c::O_NOFOLLOW
}

/// An open(2) with `flags` only reads: a lower file stays lower.
pub fn read_only_open(flags: i32) -> bool {
    flags & c::O_ACCMODE == c::O_RDONLY && flags & c::O_TRUNC == 0
}

/// The node's data is a lower file (not copied up, or copied up as metadata only).
fn data_is_lower(inner: &NodeInner) -> bool {
    !((inner.upper && !inner.metacopy) || inner.index.is_some())
}

impl OpenFile {
    pub(super) fn new(file: File, open: OpenCount) -> OpenFile {
        OpenFile {
            file: OnceLock::from(file),
            deferred: None,
            _open: open,
        }
    }

    /// The host file, opened now if the open was deferred.
    pub fn as_file(&self) -> io::Result<&File> {
        if let Some(file) = self.file.get() {
            return Ok(file);
        }
        let d = self.deferred.as_ref().ok_or(errno(c::EBADF))?;
        let fd = sys::open_beneath(d.root.as_fd(), &d.path, d.flags, 0)?;
        // Two threads may race here: one file wins, the other is closed.
        Ok(self.file.get_or_init(|| File::from(fd)))
    }

    /// The host file if it is open (a deferred open may not have needed it yet).
    pub fn opened_file(&self) -> Option<&File> {
        self.file.get()
    }

    /// Reads up to `buf.len()` bytes at `offset`: short only at end of file.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let file = self.as_file()?;
        let mut done = 0;
        // pread may return short counts; FUSE expects a short reply only at end of file.
        while done < buf.len() {
            match sys::pread(file.as_fd(), &mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }

    /// Writes `data` at `offset`; a failure after some bytes were written is a short write.
    pub fn write_at(&self, data: &[u8], offset: u64) -> io::Result<usize> {
        let file = self.as_file()?;
        let mut done = 0;
        while done < data.len() {
            match ops::pwrite(file.as_fd(), &data[done..], offset + done as u64) {
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if done > 0 => {
                    log::debug!("short write: {e}");
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }

    pub fn fallocate(&self, offset: u64, length: u64, mode: i32) -> io::Result<()> {
        ops::fallocate(self.as_file()?.as_fd(), mode, offset, length)
    }

    pub fn lseek(&self, offset: i64, whence: i32) -> io::Result<i64> {
        ops::lseek(self.as_file()?.as_fd(), offset, whence)
    }

    /// Copies up to `len` bytes (at most 1 GiB per call) from this file to `out`.
    pub fn copy_range_to(
        &self,
        off_in: u64,
        out: &OpenFile,
        off_out: u64,
        len: u64,
    ) -> io::Result<usize> {
        let len = len.min(1 << 30) as usize;
        let (fin, fout) = (self.as_file()?, out.as_file()?);
        ops::copy_file_range(fin.as_fd(), off_in, fout.as_fd(), off_out, len)
    }

    /// The daemon serves this file's reads and writes through its own buffers, which
    /// O_DIRECT's alignment rules would refuse (EINVAL); the kernel has already bypassed its
    /// page cache for an O_DIRECT open. (A passthrough file keeps the opener's flags.)
    pub fn for_daemon_io(&self) -> io::Result<()> {
        match self.file.get() {
            Some(file) => ops::clear_o_direct(file.as_fd()),
            // A deferred open never asks for O_DIRECT.
            None => Ok(()),
        }
    }
}

impl Union {
    /// Opens `ino` with the open(2) `flags`, copying it up first for a write.
    ///
    /// `lower_backing_live(ino)`: whether the kernel reads this inode's lower file through a
    /// passthrough backing file right now. A copied-up file must not be served under that
    /// inode: its name moves to a new inode, and the open fails with ESTALE so that the
    /// kernel looks the name up again and opens the new inode.
    pub fn open(
        &self,
        ino: u64,
        flags: i32,
        lower_backing_live: impl Fn(u64) -> bool,
    ) -> io::Result<Opened> {
        let node = self.node(ino)?;
        if !read_only_open(flags) {
            let data = if flags & c::O_TRUNC != 0 {
                Data::None
            } else {
                Data::All
            };
            self.writable_upper()?;
            self.ensure_upper(&node, data)?;
        }
        if node.inner.read().upper && lower_backing_live(node.ino) {
            self.move_to_new_inode(&node)?;
            return Err(errno(c::ESTALE));
        }
        // Counted before the object is opened: a name removed meanwhile keeps the object.
        let open = node.opened();
        let file = File::from(self.open_realdata(&node, host_open_flags(flags))?);
        let lower = data_is_lower(&node.inner.read());
        Ok(Opened {
            file: OpenFile::new(file, open),
            lower,
        })
    }

    /// A read-only open of `ino` whose data is still the lower file it had when the caller
    /// kept what it needs to serve it (a passthrough backing): no system call, the host file
    /// is opened only on first use by the daemon. None when the data is no longer lower (a
    /// copy-up) or not yet located: the caller then opens with [`Union::open`].
    pub fn open_lower_deferred(&self, ino: u64, flags: i32) -> io::Result<Option<OpenFile>> {
        if !read_only_open(flags) {
            return Ok(None);
        }
        let node = self.node(ino)?;
        let (slot, path) = {
            let inner = node.inner.read();
            let Some(lower) = inner.lower.as_ref().filter(|_| data_is_lower(&inner)) else {
                return Ok(None);
            };
            if lower.data.is_none() {
                return Ok(None);
            }
            let (slot, path) = lower.data_source()?;
            (slot, relpath::to_cstring(path)?)
        };
        // Read-only, and without O_DIRECT: only the daemon's own I/O goes through this file.
        let ro = host_open_flags(flags) & !(c::O_ACCMODE | c::O_APPEND | c::O_DIRECT);
        Ok(Some(OpenFile {
            file: OnceLock::new(),
            deferred: Some(DeferredOpen {
                root: self.layers[slot as usize].shared_root(),
                path,
                flags: ro | c::O_RDONLY,
            }),
            _open: node.opened(),
        }))
    }

    /// The copied-up object gets its own inode number, under the same name.
    fn move_to_new_inode(&self, node: &Arc<Node>) -> io::Result<()> {
        let obj = self.upper_object(node)?;
        let st = sys::fstat(obj.as_fd())?;
        let new_ino = upper_ino(st.st_ino);
        let link = node
            .inner
            .read()
            .any_link()
            .cloned()
            .ok_or(errno(c::ENOENT))?;
        let state = self.dir_state(&link.parent)?;
        state.write().set_present(&link.name, new_ino, node.kind);
        // The old inode keeps serving its open readers from the lower file.
        let mut inner = node.inner.write();
        inner.upper = false;
        inner.links.clear();
        inner.object = None;
        Ok(())
    }

    /// fsync of an open file (nothing on a mount without fsync).
    pub fn fsync(&self, file: &OpenFile, datasync: bool) -> io::Result<()> {
        if self.upper.as_ref().is_some_and(|u| !u.fsync) {
            return Ok(());
        }
        // A deferred open not yet used is a read-only lower file: nothing of the mount's to
        // sync (kernel overlayfs does not sync a lower file either).
        let Some(f) = file.opened_file() else {
            return Ok(());
        };
        ops::fsync(f.as_fd(), datasync)
    }

    /// fsync of a directory's upper copy (nothing for a directory only the lower layers hold).
    pub fn fsyncdir(&self, ino: u64, datasync: bool) -> io::Result<()> {
        let node = self.node(ino)?;
        let Some(upper) = self.upper.as_ref().filter(|u| u.fsync) else {
            return Ok(());
        };
        if !node.inner.read().upper {
            return Ok(());
        }
        let dir = upper.open_dir(&self.upper_rel(&node)?)?;
        ops::fsync(dir.as_fd(), datasync)
    }
}
