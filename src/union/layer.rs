//! A read-only image layer: a directory reached only through fds relative to its root.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::sys;

pub struct Layer {
    /// Position in the stack, 0 = bottom. Part of every inode number the layer produces.
    pub slot: u16,
    pub path: PathBuf,
    /// Shared with open files that open their host file on first use (see `OpenFile`).
    root: Arc<OwnedFd>,
}

impl Layer {
    pub fn open_root(slot: u16, path: &Path) -> io::Result<Layer> {
        let root = sys::open_tree_clone(path).or_else(|e| {
            log::debug!(
                "layer {}: no private mount ({e}); mounts inside it are entered",
                path.display()
            );
            sys::open_dir_path(path)
        })?;
        Ok(Layer {
            slot,
            path: path.to_path_buf(),
            root: Arc::new(root),
        })
    }

    pub fn root(&self) -> BorrowedFd<'_> {
        self.root.as_fd()
    }

    /// The layer root, for an open file that opens its host file later.
    pub fn shared_root(&self) -> Arc<OwnedFd> {
        self.root.clone()
    }

    /// Opens `rel` (a path relative to the layer root, "." for the root) without following any
    /// symlink and without leaving the root.
    pub fn open(&self, rel: &CStr, flags: i32) -> io::Result<OwnedFd> {
        sys::open_beneath(self.root(), rel, flags, 0)
    }
}

/// Helpers for relative paths stored as bytes ("." is the root).
pub mod relpath {
    use std::ffi::CString;
    use std::io;

    pub fn join(parent: &[u8], name: &[u8]) -> Vec<u8> {
        if parent == b"." {
            name.to_vec()
        } else {
            let mut p = Vec::with_capacity(parent.len() + 1 + name.len());
            p.extend_from_slice(parent);
            p.push(b'/');
            p.extend_from_slice(name);
            p
        }
    }

    pub fn to_cstring(rel: &[u8]) -> io::Result<CString> {
        crate::sys::cstr(rel)
    }
}
