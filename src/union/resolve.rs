//! Name resolution: a name of a merged directory to its node (made on first lookup, with
//! where its lower and upper objects are), the node's upper path, and its attributes.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use super::real::Real;
use super::{errno, Entry, Union};
use crate::sys;
use crate::sys::c;
use crate::union::attr::{Attr, Kind};
use crate::union::dirstate::{DirState, Resolved};
use crate::union::inode::{lower_ino, Node, NodeAttr, NodeInner, ROOT_INO};
use crate::union::listing::ListedEntry;
use crate::union::ovl::{self, Marker};

impl Union {
    /// Resolves `name` in `parent` and counts a reference on the result.
    pub fn lookup(&self, parent: u64, name: &[u8]) -> io::Result<Entry> {
        // Like the kernel's ovl_lookup: such a name is refused, not merely absent, so every
        // call on it (chmod, unlink, rename, ...) fails with ENAMETOOLONG.
        if name.len() > super::NAME_MAX {
            return Err(errno(c::ENAMETOOLONG));
        }
        let parent_node = self.node(parent)?;
        let state = self.dir_state(&parent_node)?;
        let state = state.read();
        let resolved = state.resolve(name).ok_or(errno(c::ENOENT))?;
        let node = self.node_for(&parent_node, &state, name, resolved)?;
        self.entry(&node)
    }

    /// A node as an entry to return: its number, generation and attributes.
    pub(super) fn entry(&self, node: &Node) -> io::Result<Entry> {
        Ok(Entry {
            ino: node.ino,
            generation: node.generation,
            attr: self.node_attr(node)?,
        })
    }

    /// An entry of a directory listing with its attributes, as a lookup (readdirplus): None
    /// when the name is gone since the listing was taken. The caller holds one reference.
    pub fn lookup_listed(&self, dir: u64, name: &[u8]) -> Option<Entry> {
        let dir = self.node(dir).ok()?;
        let state = self.dir_state(&dir).ok()?;
        let node = {
            let state = state.read();
            let resolved = state.resolve(name)?;
            self.node_for(&dir, &state, name, resolved).ok()?
        };
        match self.entry(&node) {
            Ok(e) => Some(e),
            Err(_) => {
                self.nodes.forget(node.ino, 1);
                None
            }
        }
    }

    /// The number of the directory holding `ino` (`ino` itself for the root).
    pub fn parent_ino(&self, ino: u64) -> u64 {
        self.nodes
            .get(ino)
            .and_then(|n| n.inner.read().parent().map(|p| p.ino))
            .unwrap_or(ino)
    }

    /// The node for a resolved name (created if the kernel did not know it), with one more
    /// kernel reference.
    pub(super) fn node_for(
        &self,
        parent: &Arc<Node>,
        state: &DirState,
        name: &[u8],
        resolved: Resolved<'_>,
    ) -> io::Result<Arc<Node>> {
        let ino = resolved.ino();
        let parent_lower = parent.inner.read().lower.clone();
        // The name's entry in the lower listing: the node points there for its name and
        // (when the lower object is what the name shows) its attributes.
        let listed = state
            .lower
            .position(name)
            .ok()
            .map(|i| ListedEntry::new(&state.lower, i));
        let lower_entry = listed
            .as_ref()
            .map(ListedEntry::entry)
            .filter(|e| lower_ino(e.layer, e.attr().host_ino) == ino);
        let lower = match (parent_lower, lower_entry) {
            _ if state.redirects.contains_key(name) => state.redirects.get(name).cloned(),
            (Some(pl), Some(e)) => Some(self.lower_child(&pl, name, &state.lower, e)),
            _ => None,
        };
        let is_upper = matches!(resolved, Resolved::Upper { .. });
        let index = if is_upper {
            None
        } else {
            state.indexed.get(name).cloned().map(Box::new)
        };
        // A copied-up file may hold metadata only: its data is then the lower file's.
        let mut lower = lower;
        let mut metacopy = false;
        if is_upper && resolved.kind() == Kind::File && self.nodes.get(ino).is_none() {
            if let Some(redirected) = self.metacopy_data(parent, name) {
                metacopy = true;
                // A metacopy file renamed by kernel overlayfs names its data by redirect.
                if let Some(r) = redirected {
                    lower = Some(r);
                }
                metacopy &= lower.is_some();
            }
        }
        let attr = match (resolved, &listed) {
            (Resolved::Lower(_), Some(listed)) => NodeAttr::Listed(listed.clone()),
            (Resolved::Lower(e), None) => NodeAttr::Own(Some(Box::new(e.attr()))),
            (Resolved::Upper { .. }, _) => NodeAttr::Own(None),
        };
        let node = self.nodes.lookup_or_insert(ino, || {
            Node::new(
                ino,
                resolved.kind(),
                NodeInner {
                    links: Default::default(),
                    lower,
                    upper: is_upper,
                    object: None,
                    metacopy,
                    index,
                    attr,
                },
            )
        });
        // One more name of a hard link, or the first name of a new node.
        let mut inner = node.inner.write();
        if inner.links.is_empty() && node.ino != crate::union::inode::ROOT_INO {
            // A node whose known names were all removed is reached by a name that exists: a
            // hard link the daemon had not seen. What the name shows is the node now.
            inner.upper |= is_upper;
            if !inner.upper {
                // What was held for open files was the lower object: never an upper identity.
                inner.object = None;
            }
        }
        match &listed {
            Some(listed) => inner.add_listed_link(parent, listed),
            None => inner.add_link(parent, name),
        }
        drop(inner);
        Ok(node)
    }

    /// The link count of a hard-linked upper file as the kernel's nlink marker
    /// records it ("U+n"/"U-n" relative to the upper count, "L+n"/"L-n" to the lower one),
    /// so an upper dir written by kernel overlayfs with index=on shows the same counts.
    fn merged_nlink(&self, fd: BorrowedFd<'_>, upper_nlink: u32, lower_nlink: u32) -> u32 {
        let (base, delta) = match ovl::get(fd, Marker::Nlink)
            .as_deref()
            .and_then(ovl::parse_nlink)
        {
            Some(ovl::NlinkBase::Upper(d)) => (upper_nlink, d),
            Some(ovl::NlinkBase::Lower(d)) => (lower_nlink, d),
            None => return upper_nlink,
        };
        u32::try_from(base as i64 + delta)
            .ok()
            .filter(|n| *n > 0)
            .unwrap_or(upper_nlink)
    }

    /// The path of `node`'s upper object relative to the upper root ("." for the root),
    /// through one of its live names. Only for objects one name identifies (directories, and
    /// files without other links); hard-linked and unlinked files are reached through
    /// `upper_object`.
    pub(super) fn upper_rel(&self, node: &Node) -> io::Result<Vec<u8>> {
        if node.ino == ROOT_INO {
            return Ok(b".".to_vec());
        }
        let mut parts: Vec<Vec<u8>> = Vec::new();
        let mut cur = {
            let inner = node.inner.read();
            let link = inner.any_link().ok_or(errno(c::ENOENT))?;
            parts.push(link.name.to_vec());
            link.parent.clone()
        };
        while cur.ino != ROOT_INO {
            let next = {
                let inner = cur.inner.read();
                let link = inner.any_link().ok_or(errno(c::ENOENT))?;
                parts.push(link.name.to_vec());
                link.parent.clone()
            };
            cur = next;
        }
        parts.reverse();
        Ok(parts.join(&b'/'))
    }

    /// An O_PATH fd of the node's upper object: the one held for hard-linked and unlinked
    /// files, else opened through the node's name.
    pub(super) fn upper_object(&self, node: &Node) -> io::Result<Arc<OwnedFd>> {
        if let Some(obj) = node.inner.read().object.clone() {
            return Ok(obj);
        }
        let rel = self.upper_rel(node)?;
        let fd = self.upper()?.open_path(&rel)?;
        Ok(Arc::new(fd))
    }

    /// Keeps the upper object of a hard-linked file open, so that it stays reachable whichever
    /// of its names goes. `fd` is an O_PATH fd of the object just reached through a live name.
    pub(super) fn hold_if_linked(&self, node: &Node, fd: &Arc<OwnedFd>, nlink: u64) {
        if node.kind == Kind::Dir || nlink < 2 {
            return;
        }
        let mut inner = node.inner.write();
        if inner.object.is_none() {
            inner.object = Some(fd.clone());
        }
    }

    /// Attributes of a node: the upper object is stat'ed (its size and times move with
    /// writes, and other names change its link count and ctime); a lower object's come from
    /// the index.
    pub(super) fn node_attr(&self, node: &Node) -> io::Result<Attr> {
        let (is_upper, cached, lower_dirs) = {
            let inner = node.inner.read();
            (
                inner.upper,
                inner.attr(),
                inner.lower.as_ref().map_or(0, |l| l.dir_layers.len()),
            )
        };
        let attr = match self.path_real(node) {
            Real::Held(obj) => self.object_attr(obj.as_fd(), cached.nlink)?,
            Real::Upper => {
                let obj = self.upper_object(node)?;
                let attr = self.object_attr(obj.as_fd(), cached.nlink)?;
                self.hold_if_linked(node, &obj, attr.nlink as u64);
                attr
            }
            Real::Index(idx) => Attr::from_stat(&sys::stat_at(self.upper()?.index(), &idx)?),
            Real::Lower(_) | Real::Gone => cached,
        };
        Ok(self.merged_dir_nlink(node, is_upper, lower_dirs, attr))
    }

    /// The attributes of a node whose upper object (held, or reached by its name) was just
    /// changed through `obj`: stat'ed through that fd rather than reached again.
    pub(super) fn upper_attr_through(&self, node: &Node, obj: BorrowedFd<'_>) -> io::Result<Attr> {
        let (is_upper, cached, lower_dirs, held) = {
            let inner = node.inner.read();
            (
                inner.upper,
                inner.attr(),
                inner.lower.as_ref().map_or(0, |l| l.dir_layers.len()),
                inner.object.is_some(),
            )
        };
        let attr = self.object_attr(obj, cached.nlink)?;
        if !held && node.kind != Kind::Dir && attr.nlink > 1 {
            // A hard link not held yet: node_attr holds its object.
            return self.node_attr(node);
        }
        Ok(self.merged_dir_nlink(node, is_upper, lower_dirs, attr))
    }

    /// Like the kernel: a directory merged from several layers reports one link, since
    /// counting its subdirectories would mean reading every layer.
    fn merged_dir_nlink(
        &self,
        node: &Node,
        is_upper: bool,
        lower_dirs: usize,
        mut attr: Attr,
    ) -> Attr {
        if node.kind == Kind::Dir {
            let opaque = self.dirs.get(node.ino).is_some_and(|s| s.read().opaque);
            let sources = usize::from(is_upper) + if opaque { 0 } else { lower_dirs };
            if sources >= 2 {
                attr.nlink = 1;
            }
        }
        attr
    }

    /// Attributes of an upper object, with the link count the kernel's nlink xattr records
    /// for hard-linked copies of lower files.
    fn object_attr(&self, obj: BorrowedFd<'_>, lower_nlink: u32) -> io::Result<Attr> {
        let mut attr = Attr::from_stat(&sys::fstat(obj)?);
        let is_file = attr.mode & c::S_IFMT == c::S_IFREG;
        if is_file && attr.nlink > 1 {
            attr.nlink = self.merged_nlink(obj, attr.nlink, lower_nlink);
        }
        Ok(attr)
    }

    /// Attributes of `ino`; `open` is the file of the handle the call came with, if any.
    pub fn getattr(&self, ino: u64, open: Option<&File>) -> io::Result<Attr> {
        let node = self.node(ino)?;
        // An unlinked file that is still open: stat it through its handle.
        if let Some(file) = open.filter(|_| node.is_unlinked()) {
            return Ok(Attr::from_stat(&sys::fstat(file.as_fd())?));
        }
        self.node_attr(&node)
    }

    pub fn readlink(&self, ino: u64) -> io::Result<Vec<u8>> {
        let node = self.node(ino)?;
        let fd = self.open_node_path(&node)?;
        sys::readlink_at(fd.as_fd(), c"")
    }

    /// An O_PATH fd of the node's current object (upper copy if any, else lower), never
    /// following a symlink.
    pub(super) fn open_node_path(&self, node: &Node) -> io::Result<OwnedFd> {
        self.open_real(node, c::O_PATH)
    }
}
