//! Upper objects reached from a held fd of their directory. Each upper directory the kernel
//! holds a node of keeps one open fd, taken on first use: a new name, a removal, a stat or a
//! setattr of an entry is then one *at call on (directory fd, name) instead of a walk of the
//! whole path from the upper root with an open and a close around it (an untar makes nine
//! requests per file). The fd follows its directory through renames; it is let go when the
//! directory's name goes (rmdir, rename over it) or the kernel forgets the node.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use super::{errno, Union};
use crate::sys;
use crate::sys::c;
use crate::union::attr::Kind;
use crate::union::inode::Node;

/// The fd of a directory's upper copy, for the node of that generation (a removed
/// directory's number may come back for another directory under the next generation).
#[derive(Clone)]
pub(super) struct HeldDir {
    generation: u64,
    fd: Arc<OwnedFd>,
}

impl Union {
    /// An fd (O_RDONLY | O_DIRECTORY) of the upper copy of directory node `dir`, which
    /// must exist.
    pub(super) fn upper_dir(&self, dir: &Node) -> io::Result<Arc<OwnedFd>> {
        if let Some(held) = self.upper_dirs.get(dir.ino) {
            if held.generation == dir.generation {
                return Ok(held.fd);
            }
        }
        let fd = Arc::new(self.upper()?.open_dir(&self.upper_rel(dir)?)?);
        self.upper_dirs.insert(
            dir.ino,
            HeldDir {
                generation: dir.generation,
                fd: fd.clone(),
            },
        );
        Ok(fd)
    }

    /// Where the upper object of `node`, reached by its name, is for *at calls: its
    /// directory's fd and its name, or for a directory its own fd and "".
    pub(super) fn upper_at(&self, node: &Node) -> io::Result<(Arc<OwnedFd>, CString)> {
        if node.kind == Kind::Dir {
            return Ok((self.upper_dir(node)?, CString::default()));
        }
        let (parent, name) = {
            let inner = node.inner.read();
            let link = inner.any_link().ok_or(errno(c::ENOENT))?;
            (link.parent.clone(), sys::cstr(&link.name)?)
        };
        Ok((self.upper_dir(&parent)?, name))
    }

    /// Opens the upper object of `node`, reached by its name, with `flags` (never following a
    /// symlink): one open relative to its directory's held fd.
    pub(super) fn open_upper(&self, node: &Node, flags: i32) -> io::Result<OwnedFd> {
        let (at, name) = self.upper_at(node)?;
        let name = if name.is_empty() { c"." } else { &name };
        sys::open_beneath(at.as_fd(), name, flags | c::O_NOFOLLOW, 0)
    }

    /// The held fd of directory `ino` is let go (its name is gone, or the kernel forgot it).
    pub(super) fn drop_upper_dir(&self, ino: u64) {
        self.upper_dirs.remove(ino);
    }
}
