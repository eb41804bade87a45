//! getxattr / listxattr / setxattr / removexattr. The overlay's own markers are metadata of
//! the union, not of the file: hidden, and user attributes that would look like them are
//! escaped (the rule and the escaping: ovl.rs).

use std::io;
use std::os::fd::AsFd;
use std::sync::atomic::Ordering;

use super::copy_up::Data;
use super::{errno, Union};
use crate::sys;
use crate::sys::c;
use crate::union::ovl;

/// The stored name for a user-visible one, as a C string; EPERM for a name reserved to the
/// union's format.
fn stored_cname(visible: &[u8]) -> io::Result<std::ffi::CString> {
    match ovl::stored_name(visible) {
        ovl::StoredName::At(name) => sys::cstr(&name),
        ovl::StoredName::Reserved => Err(errno(c::EPERM)),
    }
}

impl Union {
    /// setxattr (`Some((value, flags))`) or removexattr (`None`), on the upper copy.
    pub fn setxattr(&self, ino: u64, name: &[u8], set: Option<(&[u8], i32)>) -> io::Result<()> {
        self.writable_upper()?;
        let node = self.node(ino)?;
        let cname = stored_cname(name)?;
        // A request that must fail fails before any copy-up, as in the kernel.
        let exists = sys::xattr::get(self.open_node_path(&node)?.as_fd(), &cname)?.is_some();
        match set {
            None if !exists => return Err(errno(c::ENODATA)),
            Some((_, flags)) if flags & c::XATTR_REPLACE != 0 && !exists => {
                return Err(errno(c::ENODATA))
            }
            Some((_, flags)) if flags & c::XATTR_CREATE != 0 && exists => {
                return Err(errno(c::EEXIST))
            }
            _ => {}
        }
        self.ensure_upper(&node, Data::Meta)?;
        // Known bare no longer, whatever comes of the call.
        node.bare.store(false, Ordering::Relaxed);
        let fd = self.open_node_path(&node)?;
        match set {
            Some((value, flags)) => sys::xattr::set(fd.as_fd(), &cname, value, flags),
            None => sys::xattr::remove(fd.as_fd(), &cname),
        }
    }

    /// The value of the file's xattr `name`; ENODATA when it has none.
    pub fn getxattr(&self, ino: u64, name: &[u8]) -> io::Result<Vec<u8>> {
        let node = self.node(ino)?;
        if node.bare.load(Ordering::Relaxed) {
            return Err(errno(c::ENODATA));
        }
        let fd = self.open_node_path(&node)?;
        // A name reserved to the union is never the file's: it has no value to show.
        let cname = stored_cname(name).map_err(|_| errno(c::ENODATA))?;
        sys::xattr::get(fd.as_fd(), &cname)?.ok_or(errno(c::ENODATA))
    }

    /// The names of the file's own xattrs, each followed by a NUL (as listxattr(2) gives them).
    pub fn listxattr(&self, ino: u64) -> io::Result<Vec<u8>> {
        let node = self.node(ino)?;
        if node.bare.load(Ordering::Relaxed) {
            return Ok(Vec::new());
        }
        let fd = self.open_node_path(&node)?;
        let mut out = Vec::new();
        for n in sys::xattr::list(fd.as_fd())?
            .iter()
            .filter_map(|n| ovl::visible_name(n))
        {
            out.extend_from_slice(&n);
            out.push(0);
        }
        Ok(out)
    }
}
