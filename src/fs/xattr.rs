//! getxattr / listxattr. The overlay's own markers (`trusted.overlay.*`, `user.overlay.*`) are
//! metadata of the union, not of the file, and are hidden; escaped user attributes
//! (`trusted.overlay.overlay.X`, the kernel's format) are shown as `trusted.overlay.X`.

use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;

use fuser::{Errno, INodeNo, ReplyXattr};

use super::{errno, StrataFs};
use crate::sys;

const PRIVATE_PREFIXES: [&[u8]; 2] = [b"trusted.overlay.", b"user.overlay."];

/// Maps a stored xattr name to the name users see; None when it is private to the union.
fn visible_name(stored: &[u8]) -> Option<Vec<u8>> {
    for prefix in PRIVATE_PREFIXES {
        if let Some(rest) = stored.strip_prefix(prefix) {
            // trusted.overlay.overlay.X -> trusted.overlay.X
            return rest.strip_prefix(b"overlay.").map(|x| [prefix, x].concat());
        }
    }
    Some(stored.to_vec())
}

/// Maps a user-visible name to the stored one.
pub(super) fn stored_name(visible: &[u8]) -> Vec<u8> {
    for prefix in PRIVATE_PREFIXES {
        if let Some(rest) = visible.strip_prefix(prefix) {
            return [prefix, b"overlay.", rest].concat();
        }
    }
    visible.to_vec()
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
        let cname = sys::cstr(&stored_name(name.as_bytes())).map_err(|e| errno(&e))?;
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
            let cname = sys::cstr(&stored_name(name.as_bytes())).map_err(|e| errno(&e))?;
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
                for n in names.iter().filter_map(|n| visible_name(n)) {
                    out.extend_from_slice(&n);
                    out.push(0);
                }
                reply_sized(&out, size, reply)
            }
            Err(e) => reply.error(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_names_are_hidden_and_escaped_names_unescaped() {
        assert_eq!(visible_name(b"user.foo"), Some(b"user.foo".to_vec()));
        assert_eq!(visible_name(b"trusted.overlay.opaque"), None);
        assert_eq!(visible_name(b"user.overlay.origin"), None);
        assert_eq!(
            visible_name(b"trusted.overlay.overlay.opaque"),
            Some(b"trusted.overlay.opaque".to_vec())
        );
        assert_eq!(
            stored_name(b"trusted.overlay.x"),
            b"trusted.overlay.overlay.x".to_vec()
        );
        assert_eq!(
            stored_name(b"security.capability"),
            b"security.capability".to_vec()
        );
    }
}
