//! The read-only image under a writable layer: its layers merged (whiteouts, opaque
//! directories and the redirects of layers that were once an upper dir applied, by the same
//! merge the mount uses) and looked up by path.

use std::collections::HashMap;
use std::io;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;

use super::error::{ImageError, IoContext, Result};
use crate::sys::c;
use crate::union::inode::{LowerData, LowerRef};
use crate::union::layer::{relpath, Layer};
use crate::union::listing::{DirListing, ListingEntry};
use crate::union::lowerwalk;
use crate::union::merge::merge_lower_dir;

/// A merged directory of the lower layers (or, for a file, its winning copy).
pub type LowerDir = LowerRef;

pub struct LowerStack {
    layers: Vec<Layer>,
    /// Merged listings already read, by directory path (each is read once per run).
    listings: HashMap<Vec<u8>, Arc<DirListing>>,
}

/// A name found in a merged lower directory.
pub struct Found {
    pub entry: ListingEntry,
    /// The object under the name.
    pub obj: LowerRef,
}

impl Found {
    pub fn is_dir(&self) -> bool {
        self.entry.attr().mode & c::S_IFMT == c::S_IFDIR
    }

    /// The merged directory under the name, for a directory.
    pub fn into_dir(self) -> Option<LowerDir> {
        self.is_dir().then_some(self.obj)
    }
}

impl LowerStack {
    /// Opens `paths`, bottom layer first (the order of `--layer`).
    pub fn open(paths: &[PathBuf]) -> Result<LowerStack> {
        if paths.len() > usize::from(u16::MAX) {
            return Err(ImageError::TooManyLayers(paths.len()));
        }
        let layers = paths
            .iter()
            .enumerate()
            .map(|(slot, p)| Layer::open_root(slot as u16, p).context("open layer", p))
            .collect::<Result<Vec<_>>>()?;
        Ok(LowerStack {
            layers,
            listings: HashMap::new(),
        })
    }

    /// The root of the merged lower tree (every layer, top first).
    pub fn root(&self) -> LowerDir {
        LowerRef {
            slot: self.layers.len().saturating_sub(1) as u16,
            rel: b".".to_vec().into(),
            dir_layers: (0..self.layers.len() as u16).rev().collect(),
            ..LowerRef::default()
        }
    }

    /// The merged listing of `dir`.
    pub fn list(&mut self, dir: &LowerDir) -> io::Result<Arc<DirListing>> {
        if let Some(listing) = self.listings.get(&dir.rel[..]) {
            return Ok(listing.clone());
        }
        let listing = Arc::new(merge_lower_dir(&self.layers, dir)?);
        self.listings.insert(dir.rel.to_vec(), listing.clone());
        Ok(listing)
    }

    /// `name` in merged directory `dir`.
    pub fn find(&mut self, dir: &LowerDir, name: &[u8]) -> io::Result<Option<Found>> {
        let listing = self.list(dir)?;
        Ok(listing.find(name).map(|e| Found {
            entry: *e,
            obj: lowerwalk::child(
                &self.layers,
                dir,
                name,
                e.layer,
                listing.dir_layers(e).to_vec(),
            ),
        }))
    }

    /// Every name of merged directory `dir`, in byte order.
    pub fn entries(&mut self, dir: &LowerDir) -> io::Result<Vec<(Vec<u8>, Found)>> {
        let listing = self.list(dir)?;
        Ok((0..listing.len())
            .map(|i| {
                let e = listing.entry(i);
                let name = listing.name(e);
                let obj = lowerwalk::child(
                    &self.layers,
                    dir,
                    name,
                    e.layer,
                    listing.dir_layers(e).to_vec(),
                );
                (name.to_vec(), Found { entry: *e, obj })
            })
            .collect())
    }

    /// The object at `path` (components separated by `/`, relative to the lower root).
    pub fn find_path(&mut self, path: &[u8]) -> io::Result<Option<Found>> {
        let mut dir = self.root();
        let mut parts = path
            .split(|b| *b == b'/')
            .filter(|p| !p.is_empty() && *p != b".")
            .peekable();
        while let Some(part) = parts.next() {
            if part == b".." {
                return Ok(None);
            }
            let Some(found) = self.find(&dir, part)? else {
                return Ok(None);
            };
            if parts.peek().is_none() {
                return Ok(Some(found));
            }
            match found.into_dir() {
                Some(d) => dir = d,
                None => return Ok(None),
            }
        }
        Ok(None)
    }

    /// Where a redirect marker on an upper object points: an absolute path from the layer
    /// roots, or a name relative to the lower directory of the object's parent.
    pub fn redirect_path(value: &[u8], parent: Option<&LowerDir>) -> Option<Vec<u8>> {
        match value.strip_prefix(b"/") {
            Some(abs) => Some(abs.to_vec()),
            None => parent.map(|p| relpath::join(&p.rel, value)),
        }
    }

    /// Opens the winning copy of `obj` with `flags`, never following a symlink.
    pub fn open_object(&self, obj: &LowerRef, flags: i32) -> io::Result<OwnedFd> {
        let rel = relpath::to_cstring(obj.path())?;
        self.layers[usize::from(obj.slot)].open(&rel, flags | c::O_NOFOLLOW)
    }

    /// Opens the data of regular file `obj` for reading: the winning copy, or when that is a
    /// metacopy (its layer was once an upper dir) the full copy below it.
    pub fn open_data(&self, obj: &LowerRef) -> io::Result<OwnedFd> {
        let flags = c::O_RDONLY | c::O_NONBLOCK | c::O_NOCTTY | c::O_NOFOLLOW;
        match lowerwalk::lower_data(&self.layers, obj) {
            LowerData::Own => self.open_object(obj, flags),
            LowerData::At(slot, path) => {
                self.layers[usize::from(slot)].open(&relpath::to_cstring(&path)?, flags)
            }
            LowerData::Missing => Err(io::Error::other(
                "a metacopy file of a layer whose data is in no layer below it",
            )),
        }
    }
}
