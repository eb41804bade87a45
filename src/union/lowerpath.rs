//! Paths through the lower layers only (never the upper): where a redirect of an upper
//! directory or of a metacopy file points, and the lower reference of a directory's entry.

use std::os::fd::AsFd;

use super::Union;
use crate::union::attr::Kind;
use crate::union::inode::{LowerRef, Node};
use crate::union::layer::relpath;
use crate::union::listing::DirListing;
use crate::union::ovl::{self, Marker};

pub(super) struct RedirectTarget {
    pub slot: u16,
    pub host_ino: u64,
    pub lower: LowerRef,
}

impl Union {
    /// The merged lower layers' root directory.
    fn lower_root(&self) -> LowerRef {
        LowerRef {
            slot: self.layers.len().saturating_sub(1) as u16,
            rel: b".".to_vec().into(),
            dir_layers: (0..self.layers.len() as u16).rev().collect(),
            ..LowerRef::default()
        }
    }

    /// Walks the lower layers (never the upper) from the root along `path`.
    pub(super) fn resolve_lower_path(&self, path: &[u8]) -> Option<RedirectTarget> {
        let mut dir = self.lower_root();
        let mut found = None;
        for part in path
            .split(|b| *b == b'/')
            .filter(|p| !p.is_empty() && *p != b".")
        {
            if part == b".." {
                return None;
            }
            let idx = crate::union::merge::merge_lower_dir(&self.layers, &dir).ok()?;
            let e = idx.find(part)?;
            if e.attr().kind() != Kind::Dir {
                return None;
            }
            dir = self.lower_child(&dir, part, &idx, e);
            found = Some(RedirectTarget {
                slot: e.layer,
                host_ino: e.attr().host_ino,
                lower: dir.clone(),
            });
        }
        found
    }

    /// For a metacopy upper file: Some(where its data lives if a redirect says so, else None
    /// for the lower file of the same path). None when the file holds its own data.
    pub(super) fn metacopy_data(&self, parent: &Node, name: &[u8]) -> Option<Option<LowerRef>> {
        let rel = self.upper_rel(parent).ok()?;
        let fd = self
            .upper()
            .ok()?
            .open_path(&relpath::join(&rel, name))
            .ok()?;
        if !ovl::is_metacopy(fd.as_fd()) {
            return None;
        }
        let redirect = ovl::get(fd.as_fd(), Marker::Redirect);
        let Some(target) = redirect else {
            return Some(None);
        };
        let path = match target.strip_prefix(b"/") {
            Some(abs) => abs.to_vec(),
            None => relpath::join(&parent.inner.read().lower.as_ref()?.rel, &target),
        };
        Some(self.resolve_lower_file(&path))
    }

    /// The lower file at `path` (walking the lower layers only).
    fn resolve_lower_file(&self, path: &[u8]) -> Option<LowerRef> {
        let (dir, file) = match path.iter().rposition(|b| *b == b'/') {
            Some(i) => (&path[..i], &path[i + 1..]),
            None => (&b""[..], path),
        };
        let dir = if dir.is_empty() {
            self.lower_root()
        } else {
            self.resolve_lower_path(dir)?.lower
        };
        let idx = crate::union::merge::merge_lower_dir(&self.layers, &dir).ok()?;
        let e = idx.find(file)?;
        Some(self.lower_child(&dir, file, &idx, e))
    }

    /// The lower reference of entry `e` (named `name`) of the merged lower directory `dir`.
    pub(super) fn lower_child(
        &self,
        dir: &LowerRef,
        name: &[u8],
        idx: &DirListing,
        e: &crate::union::listing::ListingEntry,
    ) -> LowerRef {
        crate::union::lowerwalk::child(&self.layers, dir, name, e.layer, idx.dir_layers(e).to_vec())
    }
}
