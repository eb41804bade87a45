//! Where a node's object lies, the one answer every operation asks (the kernel's
//! `ovl_path_real` / `ovl_path_realdata`): the upper copy (held open or reached by a name),
//! the index entry of a copied-up hard link, or the lower object; and for data, where a
//! metacopy file's data lies.
//!
//! The data location of a lower file is looked at on first need (open, copy-up) rather than
//! at lookup: only a file from a layer that was once an upper dir can be a metacopy, and the
//! check costs a getxattr that most lookups never need.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use super::{errno, Union};
use crate::sys;
use crate::sys::c;
use crate::sys::ops;
use crate::union::attr::Kind;
use crate::union::inode::{LowerRef, Node};

/// Where a node's object is.
pub enum Real {
    /// Held open: a hard-linked upper file (its names come and go independently), or an
    /// orphan, whose names are all gone while open files still use it.
    Held(Arc<OwnedFd>),
    /// In the upper layer, reached through a live name.
    Upper,
    /// The copy of a hard-linked lower file in the index dir, by entry name.
    Index(CString),
    /// The lower object (for data: the layer and path holding its data).
    Lower(LowerRef),
    /// An upper object whose names are all gone and that nothing holds: only what was
    /// last known of it remains.
    Gone,
}

impl Union {
    /// Where the node's object is: what getattr stats, xattrs are read from, readlink reads.
    pub(super) fn path_real(&self, node: &Node) -> Real {
        let inner = node.inner.read();
        let unlinked = node.ino != crate::union::inode::ROOT_INO && inner.links.is_empty();
        match (&inner.object, inner.upper) {
            (Some(obj), _) if inner.upper || unlinked => Real::Held(obj.clone()),
            (None, true) if !unlinked => Real::Upper,
            _ => match (&inner.index, &inner.lower) {
                (Some(idx), _) => Real::Index((**idx).clone()),
                (None, Some(lower)) => Real::Lower(lower.clone()),
                (None, None) if unlinked => Real::Gone,
                (None, None) => Real::Upper,
            },
        }
    }

    /// Where the node's data is: the upper copy unless it holds metadata only, else the
    /// index copy, else the lower file (with the data of a lower metacopy looked up).
    pub(super) fn path_realdata(&self, node: &Node) -> io::Result<Real> {
        let (upper_data, held, index) = {
            let inner = node.inner.read();
            (
                inner.upper && !inner.metacopy,
                inner.object.clone(),
                inner.index.as_deref().cloned(),
            )
        };
        if upper_data {
            return Ok(held.map_or(Real::Upper, Real::Held));
        }
        if let Some(idx) = index {
            return Ok(Real::Index(idx));
        }
        Ok(Real::Lower(self.lower_with_data(node)?))
    }

    /// Opens the node's object with `flags` (O_PATH for metadata), never following a
    /// symlink.
    pub(super) fn open_real(&self, node: &Node, flags: i32) -> io::Result<OwnedFd> {
        self.open_at(node, self.path_real(node), flags)
    }

    /// Opens the node's data with `flags`: a lower file is opened read-only whatever the
    /// access mode asked (it never changes; writes go to a copy-up first).
    pub(super) fn open_realdata(&self, node: &Node, flags: i32) -> io::Result<OwnedFd> {
        match self.path_realdata(node)? {
            Real::Lower(lower) => {
                let ro = (flags & !(c::O_ACCMODE | c::O_TRUNC | c::O_APPEND)) | c::O_RDONLY;
                lower.open_data(&self.layers, ro | c::O_NOFOLLOW)
            }
            real => self.open_at(node, real, flags),
        }
    }

    pub(super) fn open_at(&self, node: &Node, real: Real, flags: i32) -> io::Result<OwnedFd> {
        let flags = flags | c::O_NOFOLLOW;
        match real {
            Real::Held(obj) if flags & c::O_PATH != 0 => obj.try_clone(),
            // The object itself, whatever its names.
            Real::Held(obj) => ops::reopen(obj.as_fd(), flags & !c::O_NOFOLLOW),
            Real::Upper => {
                let rel = self.upper_rel(node)?;
                sys::open_beneath(self.upper()?.root(), &sys::cstr(&rel)?, flags, 0)
            }
            Real::Index(idx) => sys::open_beneath(self.upper()?.index(), &idx, flags, 0),
            Real::Lower(lower) => lower.open(&self.layers, flags),
            Real::Gone => Err(errno(c::ENOENT)),
        }
    }

    /// The node's lower reference with its data location known (looked at once, then kept).
    pub(super) fn lower_with_data(&self, node: &Node) -> io::Result<LowerRef> {
        let lower = node.inner.read().lower.clone().ok_or(errno(c::ENOENT))?;
        if node.kind != Kind::File || lower.data.is_some() {
            return Ok(lower);
        }
        let data = crate::union::lowerwalk::lower_data(&self.layers, &lower);
        if data == crate::union::inode::LowerData::Missing {
            log::warn!(
                "{:?}: metacopy file whose data no lower layer holds",
                String::from_utf8_lossy(&lower.rel)
            );
        }
        let mut inner = node.inner.write();
        if let Some(l) = inner.lower.as_mut().filter(|l| l.rel == lower.rel) {
            l.data = Some(data.clone());
        }
        Ok(LowerRef {
            data: Some(data),
            ..lower
        })
    }
}
