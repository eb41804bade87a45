//! Opening an object for I/O, and the I/O on an open file.
//!
//! An open for writing copies the object up first. A lower file opened through FUSE
//! passthrough is read by the kernel itself; when such a file is copied up while those
//! readers live, its name moves to a new inode (see [`Union::open`]), as the kernel allows
//! one backing file per inode and would write through a read-only backing file.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::sync::Arc;

use super::copy_up::Data;
use super::{errno, Union};
use crate::sys;
use crate::sys::c;
use crate::sys::ops;
use crate::union::inode::{upper_ino, Node, OpenCount};

/// A file opened for I/O. Reads and writes at an offset, as FUSE asks for them.
pub struct OpenFile {
    file: File,
    /// Counts the open file on its node (dropped after the file itself is closed).
    _open: OpenCount,
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

impl OpenFile {
    pub(super) fn new(file: File, open: OpenCount) -> OpenFile {
        OpenFile { file, _open: open }
    }

    /// The file, for a passthrough backing registration.
    pub fn as_file(&self) -> &File {
        &self.file
    }

    /// Reads up to `buf.len()` bytes at `offset`: short only at end of file.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let mut done = 0;
        // pread may return short counts; FUSE expects a short reply only at end of file.
        while done < buf.len() {
            match sys::pread(self.file.as_fd(), &mut buf[done..], offset + done as u64) {
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
        let mut done = 0;
        while done < data.len() {
            match ops::pwrite(self.file.as_fd(), &data[done..], offset + done as u64) {
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
        ops::fallocate(self.file.as_fd(), mode, offset, length)
    }

    pub fn lseek(&self, offset: i64, whence: i32) -> io::Result<i64> {
        ops::lseek(self.file.as_fd(), offset, whence)
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
        ops::copy_file_range(self.file.as_fd(), off_in, out.file.as_fd(), off_out, len)
    }

    /// The daemon serves this file's reads and writes through its own buffers, which
    /// O_DIRECT's alignment rules would refuse (EINVAL); the kernel has already bypassed its
    /// page cache for an O_DIRECT open. (A passthrough file keeps the opener's flags.)
    pub fn for_daemon_io(&self) -> io::Result<()> {
        ops::clear_o_direct(self.file.as_fd())
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
        let writes = flags & c::O_ACCMODE != c::O_RDONLY || flags & c::O_TRUNC != 0;
        if writes {
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
        let lower = {
            let inner = node.inner.read();
            !((inner.upper && !inner.metacopy) || inner.index.is_some())
        };
        Ok(Opened {
            file: OpenFile::new(file, open),
            lower,
        })
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
        ops::fsync(file.file.as_fd(), datasync)
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
