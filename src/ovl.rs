//! The kernel overlayfs xattrs stratafs reads and writes in the upper dir.

use std::os::fd::BorrowedFd;

use crate::sys;

pub const ORIGIN: &std::ffi::CStr = c"trusted.overlay.origin";

/// Union metadata that belongs to the layer, not to the file: never copied up as such.
pub fn is_private(name: &[u8]) -> bool {
    (name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay."))
        && !name[name.iter().position(|b| *b == b'.').map_or(0, |i| i + 1)..]
            .starts_with(b"overlay.overlay.")
}

/// The upper object was copied up from a lower one (the kernel records an origin handle).
pub fn has_origin(obj: BorrowedFd<'_>) -> bool {
    matches!(sys::xattr::get(obj, ORIGIN), Ok(Some(_)))
        || matches!(sys::xattr::get(obj, c"user.overlay.origin"), Ok(Some(_)))
}
