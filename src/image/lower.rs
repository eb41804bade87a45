//! The read-only image under a writable layer: its layers merged (whiteouts and opaque
//! directories applied, by the same merge the mount uses) and looked up by path.

use std::collections::HashMap;
use std::io;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;

use crate::index::{DirIndex, IndexEntry};
use crate::layer::{relpath, Layer};
use crate::merge::merge_lower_dir;

/// One merged directory of the lower layers: its path from the layer roots ("." for the root)
/// and the layers holding it, top first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LowerDir {
    pub rel: Vec<u8>,
    pub sources: Vec<u16>,
}

pub struct LowerStack {
    layers: Vec<Layer>,
    /// Merged listings already read, by directory path (each is read once per run).
    listings: HashMap<Vec<u8>, Arc<DirIndex>>,
}

/// A name found in a merged lower directory.
pub struct Found {
    pub entry: IndexEntry,
    /// The directory under this name, for directories.
    pub dir: Option<LowerDir>,
}

impl LowerStack {
    /// Opens `paths`, bottom layer first (the order of `--layer`).
    pub fn open(paths: &[PathBuf]) -> Result<LowerStack, String> {
        if paths.len() > usize::from(u16::MAX) {
            return Err(format!(
                "{} layers: at most {} are supported",
                paths.len(),
                u16::MAX
            ));
        }
        let layers = paths
            .iter()
            .enumerate()
            .map(|(slot, p)| {
                Layer::open_root(slot as u16, p)
                    .map_err(|e| format!("cannot open layer {}: {e}", p.display()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(LowerStack {
            layers,
            listings: HashMap::new(),
        })
    }

    /// The root of the merged lower tree (every layer, top first).
    pub fn root(&self) -> LowerDir {
        LowerDir {
            rel: b".".to_vec(),
            sources: (0..self.layers.len() as u16).rev().collect(),
        }
    }

    /// The merged listing of `dir`.
    pub fn list(&mut self, dir: &LowerDir) -> io::Result<Arc<DirIndex>> {
        if let Some(listing) = self.listings.get(&dir.rel) {
            return Ok(listing.clone());
        }
        let listing = Arc::new(merge_lower_dir(&self.layers, &dir.rel, &dir.sources)?);
        self.listings.insert(dir.rel.clone(), listing.clone());
        Ok(listing)
    }

    /// `name` in merged directory `dir`.
    pub fn find(&mut self, dir: &LowerDir, name: &[u8]) -> io::Result<Option<Found>> {
        let listing = self.list(dir)?;
        Ok(listing.find(name).map(|e| Found {
            entry: *e,
            dir: (e.attr().mode & libc::S_IFMT == libc::S_IFDIR).then(|| LowerDir {
                rel: relpath::join(&dir.rel, name),
                sources: listing.dir_layers(e).to_vec(),
            }),
        }))
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
            match found.dir {
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

    /// Opens the winning object of `entry`, the name `name` in `dir`, with `flags`.
    pub fn open_object(
        &self,
        dir: &LowerDir,
        name: &[u8],
        entry: &IndexEntry,
        flags: i32,
    ) -> io::Result<OwnedFd> {
        let rel = relpath::to_cstring(&relpath::join(&dir.rel, name))?;
        self.layers[usize::from(entry.layer)].open(&rel, flags | libc::O_NOFOLLOW)
    }
}
