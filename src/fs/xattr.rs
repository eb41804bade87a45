//! getxattr / listxattr / setxattr / removexattr. The overlay's own markers are metadata of
//! the union, not of the file: hidden, and user attributes that would look like them are
//! escaped (the rule and the escaping: ovl.rs).

use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;

use fuser::{Errno, INodeNo, ReplyXattr};

use super::{errno, StrataFs};
use crate::ovl;
use crate::sys;

/// The stored name for a user-visible one, as a C string; EPERM for a name reserved to the
/// union's format.
fn stored_cname(visible: &[u8]) -> Result<std::ffi::CString, Errno> {
    match ovl::stored_name(visible) {
        ovl::StoredName::At(name) => sys::cstr(&name).map_err(|e| errno(&e)),
        ovl::StoredName::Reserved => Err(Errno::EPERM),
    }
}

fn reply_sized(data: &[u8], size: u32, reply: ReplyXattr) {
    if size == 0 {
        reply.size(data.len() as u32)
    } else if data.len() > size as usize {
        reply.error(Errno::ERANGE)
    } else {
        reply.data(data)
    }
}

impl StrataFs {
    /// setxattr (`Some((value, flags))`) or removexattr (`None`), on the upper copy.
    pub(super) fn do_setxattr(
        &self,
        ino: INodeNo,
        name: &OsStr,
        set: Option<(&[u8], i32)>,
    ) -> Result<(), Errno> {
        self.writable_upper()?;
        let node = self.node(ino)?;
        let cname = stored_cname(name.as_bytes())?;
        // A request that must fail fails before any copy-up, as in the kernel.
        let exists = sys::xattr::get(self.open_node_path(&node)?.as_fd(), &cname)
            .map_err(|e| errno(&e))?
            .is_some();
        match set {
            None if !exists => return Err(Errno::ENODATA),
            Some((_, flags)) if flags & libc::XATTR_REPLACE != 0 && !exists => {
                return Err(Errno::ENODATA)
            }
            Some((_, flags)) if flags & libc::XATTR_CREATE != 0 && exists => {
                return Err(Errno::EEXIST)
            }
            _ => {}
        }
        self.ensure_upper(&node, super::copy::Data::Meta)?;
        let fd = self.open_node_path(&node)?;
        match set {
            Some((value, flags)) => sys::xattr::set(fd.as_fd(), &cname, value, flags),
            None => sys::xattr::remove(fd.as_fd(), &cname),
        }
        .map_err(|e| errno(&e))
    }

    pub(super) fn do_getxattr(&self, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let result = (|| {
            let node = self.node(ino)?;
            let fd = self.open_node_path(&node)?;
            // A name reserved to the union is never the file's: it has no value to show.
            let cname = stored_cname(name.as_bytes()).map_err(|_| Errno::ENODATA)?;
            sys::xattr::get(fd.as_fd(), &cname)
                .map_err(|e| errno(&e))?
                .ok_or(Errno::ENODATA)
        })();
        match result {
            Ok(v) => reply_sized(&v, size, reply),
            Err(e) => reply.error(e),
        }
    }

    pub(super) fn do_listxattr(&self, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let result = (|| {
            let node = self.node(ino)?;
            let fd = self.open_node_path(&node)?;
            sys::xattr::list(fd.as_fd()).map_err(|e| errno(&e))
        })();
        match result {
            Ok(names) => {
                let mut out = Vec::new();
                for n in names.iter().filter_map(|n| ovl::visible_name(n)) {
                    out.extend_from_slice(&n);
                    out.push(0);
                }
                reply_sized(&out, size, reply)
            }
            Err(e) => reply.error(e),
        }
    }
}
