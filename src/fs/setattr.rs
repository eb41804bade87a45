//! setattr: chmod, chown, truncate, utimens. A lower object is copied up first (truncate to
//! zero copies no data).

use std::os::fd::AsFd;

use fuser::{Errno, FileAttr, FileHandle, FileType, INodeNo, Request};

use super::copy::Data;
use super::file::Handle;
use super::{errno, StrataFs};
use crate::sys;
use crate::sys::ops;

pub struct Change {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    /// (sec, nsec) with UTIME_OMIT / UTIME_NOW in nsec.
    pub atime: (i64, i64),
    pub mtime: (i64, i64),
}

impl Change {
    fn touches_times(&self) -> bool {
        self.atime.1 != ops::UTIME_OMIT || self.mtime.1 != ops::UTIME_OMIT
    }
}

impl StrataFs {
    pub(super) fn do_setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: Option<FileHandle>,
        change: Change,
    ) -> Result<FileAttr, Errno> {
        let node = self.node(ino)?;
        let nothing = change.mode.is_none()
            && change.uid.is_none()
            && change.gid.is_none()
            && change.size.is_none()
            && !change.touches_times();
        if nothing {
            return self.do_getattr(ino, fh);
        }
        self.writable_upper()?;
        let data = match change.size {
            Some(0) => Data::None,
            Some(_) => Data::All,
            None => Data::Meta,
        };
        self.ensure_upper(&node, data)?;
        // An open handle is the object even when its name is gone.
        let handle = fh.and_then(|fh| self.handles.get(fh.0));
        let obj = match handle.as_deref() {
            Some(Handle::File { file, .. }) => {
                file.as_fd().try_clone_to_owned().map_err(|e| errno(&e))?
            }
            _ => self.open_node_path(&node)?,
        };
        let obj = obj.as_fd();
        if change.uid.is_some() || change.gid.is_some() {
            let (uid, gid) = self.ownership.stored(
                change.uid.unwrap_or(u32::MAX),
                change.gid.unwrap_or(u32::MAX),
            );
            ops::chown_at(obj, c"", uid, gid).map_err(|e| errno(&e))?;
        }
        if let Some(mode) = change.mode {
            if node.kind != FileType::Symlink {
                // fchmod does not work on O_PATH fds: go through the magic link.
                let path = sys::cstr(
                    format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&obj)).as_bytes(),
                )
                .map_err(|e| errno(&e))?;
                ops::chmod_at(obj, &path, mode & 0o7777).map_err(|e| errno(&e))?;
            }
        }
        if let Some(size) = change.size {
            let writable = match handle.as_deref() {
                Some(Handle::File { file, .. }) => ops::ftruncate(file.as_fd(), size)
                    .map(|_| true)
                    .unwrap_or(false),
                _ => false,
            };
            if !writable {
                let f = ops::reopen(obj, libc::O_WRONLY).map_err(|e| errno(&e))?;
                ops::ftruncate(f.as_fd(), size).map_err(|e| errno(&e))?;
            }
        }
        if change.touches_times() {
            ops::utimens_at(obj, c"", change.atime, change.mtime).map_err(|e| errno(&e))?;
        }
        match handle.as_deref() {
            Some(Handle::File { file, .. }) if node.is_unlinked() => {
                let st = sys::fstat(file.as_fd()).map_err(|e| errno(&e))?;
                Ok(crate::attr::Attr::from_stat(&st).to_file_attr(node.ino, &self.ownership))
            }
            _ => self.node_attr(&node),
        }
    }
}
