//! The whiteout and opaque-directory formats found in real layer stacks.
//!
//! - kernel overlayfs: a char device 0:0 named NAME; the opaque marker "y" on a directory;
//!   since Linux 6.7 also a zero-size regular file carrying the whiteout marker inside a
//!   directory whose opaque marker is "x" (marker names: ovl.rs).
//! - OCI/AUFS tar layers (what podman and dockerd write with a mount program): an empty file
//!   `.wh.NAME`, and `.wh..wh..opq` inside a directory to make it opaque.

use std::os::fd::BorrowedFd;

use crate::sys;
use crate::sys::c;
use crate::union::ovl::{self, Marker};

pub const WH_PREFIX: &[u8] = b".wh.";
pub const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
/// AUFS metadata entries (`.wh..wh.plnk`, `.wh..wh.aufs`): never shown, hide nothing.
pub const AUFS_META_PREFIX: &[u8] = b".wh..wh.";

/// What a directory entry name means before looking at the object itself.
#[derive(Debug, PartialEq, Eq)]
pub enum NameKind<'a> {
    /// A regular name to show.
    Plain,
    /// `.wh.NAME`: hides NAME in the layers below.
    Whiteout(&'a [u8]),
    /// `.wh..wh..opq`: the directory hides everything below it.
    OpaqueMarker,
    /// Any other `.wh.` name: invisible, hides nothing.
    Hidden,
}

pub fn classify_name(name: &[u8]) -> NameKind<'_> {
    if name == OPAQUE_MARKER {
        return NameKind::OpaqueMarker;
    }
    if name.starts_with(AUFS_META_PREFIX) {
        return NameKind::Hidden;
    }
    match name.strip_prefix(WH_PREFIX) {
        None => NameKind::Plain,
        Some(target)
            if target.is_empty() || target == b"." || target == b".." || target.contains(&b'/') =>
        {
            NameKind::Hidden
        }
        Some(target) => NameKind::Whiteout(target),
    }
}

/// Opacity of one layer's copy of a directory, from its xattrs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Opacity {
    #[default]
    Transparent,
    /// opaque=y: hides everything below.
    Opaque,
    /// opaque=x: not opaque, but may hold xattr whiteouts.
    HasXattrWhiteouts,
}

pub fn dir_opacity(dir: BorrowedFd<'_>) -> Opacity {
    let mut result = Opacity::Transparent;
    // One listing answers for the three names at once: most directories carry no xattr at
    // all (the reads below stay the authority when the listing fails or shows a marker).
    if let Ok(names) = sys::xattr::list(dir) {
        let listed = |n: &std::ffi::CStr| names.iter().any(|l| l.as_slice() == n.to_bytes());
        if !Marker::Opaque.read_names().any(listed) {
            return result;
        }
    }
    for name in Marker::Opaque.read_names() {
        match sys::xattr::get(dir, name) {
            Ok(Some(v)) if v == b"y" => return Opacity::Opaque,
            Ok(Some(v)) if v == b"x" => result = Opacity::HasXattrWhiteouts,
            _ => {}
        }
    }
    result
}

/// The directory hides the layers below it, by either form: the opaque marker "y", or an
/// OCI `.wh..wh..opq` entry inside it.
pub fn is_opaque_dir(dir: BorrowedFd<'_>) -> bool {
    dir_opacity(dir) == Opacity::Opaque
        || sys::cstr(OPAQUE_MARKER).is_ok_and(|m| sys::stat_at(dir, &m).is_ok())
}

/// A char device 0:0 is a whiteout.
pub fn is_device_whiteout(st: &c::stat) -> bool {
    (st.st_mode & c::S_IFMT) == c::S_IFCHR && st.st_rdev == 0
}

/// A zero-size regular file with an overlay.whiteout xattr (only meaningful in an opaque=x dir).
pub fn is_xattr_whiteout(obj: BorrowedFd<'_>, st: &c::stat) -> bool {
    (st.st_mode & c::S_IFMT) == c::S_IFREG && st.st_size == 0 && ovl::has(obj, Marker::Whiteout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_classified() {
        assert_eq!(classify_name(b"file"), NameKind::Plain);
        assert_eq!(classify_name(b".whx"), NameKind::Plain);
        assert_eq!(classify_name(b".wh.file"), NameKind::Whiteout(b"file"));
        assert_eq!(classify_name(b".wh..wh..opq"), NameKind::OpaqueMarker);
        assert_eq!(classify_name(b".wh..wh.plnk"), NameKind::Hidden);
        assert_eq!(classify_name(b".wh."), NameKind::Hidden);
        assert_eq!(classify_name(b".wh.."), NameKind::Hidden);
        assert_eq!(
            classify_name(b".wh..hidden"),
            NameKind::Whiteout(b".hidden")
        );
    }
}
