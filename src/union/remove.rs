//! unlink and rmdir: a name goes from the union. A name with a lower object behind it
//! leaves a whiteout; the node lives on through its other names, or as an orphan for its
//! open files.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use super::copy_up::Data;
use super::{errno, Union};
use crate::sys;
use crate::sys::c;
use crate::sys::ops;
use crate::union::attr::Kind;
use crate::union::dirstate::{DirState, Resolved};
use crate::union::inode::{Link, Node};

impl Union {
    /// A node for `name` without counting a kernel reference (for internal use).
    pub(super) fn peek_node(
        &self,
        parent: &Arc<Node>,
        state: &DirState,
        name: &[u8],
        resolved: Resolved<'_>,
    ) -> io::Result<Arc<Node>> {
        if let Some(n) = self.nodes.get(resolved.ino()) {
            // The name is one of the node's names (a hard link may not have been seen by it).
            n.inner.write().add_link(parent, name);
            return Ok(n);
        }
        let node = self.node_for(parent, state, name, resolved)?;
        self.nodes.forget(node.ino, 1);
        Ok(node)
    }

    /// Removes `name` from `parent`: rmdir when `is_dir`, else unlink.
    pub fn remove(&self, parent: u64, name: &[u8], is_dir: bool) -> io::Result<()> {
        let upper = self.writable_upper()?;
        let parent_node = self.node(parent)?;
        // A removal that must fail fails before the parent is copied up, as in the kernel.
        self.check_removable(&parent_node, name, is_dir)?;
        self.ensure_upper(&parent_node, Data::All)?;
        self.copy_up_linked_lower(&parent_node, name)?;
        let state_lock = self.dir_state(&parent_node)?;
        let mut state = state_lock.write();
        let resolved = state.resolve(name).ok_or(errno(c::ENOENT))?;
        let kind = resolved.kind();
        match (is_dir, kind == Kind::Dir) {
            (true, false) => return Err(errno(c::ENOTDIR)),
            (false, true) => return Err(errno(c::EISDIR)),
            _ => {}
        }
        let child = self.peek_node(&parent_node, &state, name, resolved)?;
        if is_dir {
            let child_state = self.dir_state(&child)?;
            if !child_state.read().is_empty() {
                return Err(errno(c::ENOTEMPTY));
            }
        }
        let dir = self.upper_dir(&parent_node)?;
        let name_c = sys::cstr(name)?;
        let lower_has = state.lower_entry(name).is_some();
        let indexed_name = if matches!(resolved, Resolved::Upper { .. }) {
            None
        } else {
            self.indexed_lower_name(&parent_node, &state, name)
        };
        // Only an upper object goes with its last name; a lower one stays where it is, and
        // the node keeps reaching it through its lower reference (one path walk saved per
        // unlink of a lower file).
        let orphan = if is_dir || !has_upper_object(&child) {
            None
        } else {
            self.open_node_path(&child).ok().map(Arc::new)
        };
        let in_upper = matches!(resolved, Resolved::Upper { .. });
        let done = match (in_upper, lower_has) {
            (true, true) => upper.replace_with_whiteout(dir.as_fd(), &name_c),
            (true, false) if is_dir => upper.remove_via_work(dir.as_fd(), &name_c),
            (true, false) => ops::unlink_at(dir.as_fd(), &name_c, false),
            (false, _) => upper.make_whiteout(dir.as_fd(), &name_c),
        };
        done?;
        if let Some(idx) = indexed_name {
            // A lower name of a copied-up hard link is gone: one name less.
            crate::union::ovl::adjust_nlink(upper.index(), self.format.ns, &idx, -1);
        }
        state.remove_name(name);
        drop(state);
        self.detach_node(&child, parent_node.ino, name, orphan);
        Ok(())
    }

    /// Before the name `name` of a hard-linked lower file goes (unlink, rename over): the file
    /// is copied up under that name first, as the kernel does with index=on, so the index
    /// entry exists and the link count of the other names drops with the name.
    pub(super) fn copy_up_linked_lower(&self, parent: &Arc<Node>, name: &[u8]) -> io::Result<()> {
        let child = {
            let state_lock = self.dir_state(parent)?;
            let state = state_lock.read();
            let Some(resolved @ Resolved::Lower(e)) = state.resolve(name) else {
                return Ok(());
            };
            if e.attr().nlink < 2 || e.attr().kind() != Kind::File {
                return Ok(());
            }
            self.peek_node(parent, &state, name, resolved)?
        };
        let at = Link::new(parent, name);
        self.ensure_upper_as(&child, Data::All, Some(at))
    }

    /// The checks of unlink/rmdir that need no change on disk.
    fn check_removable(&self, parent: &Arc<Node>, name: &[u8], is_dir: bool) -> io::Result<()> {
        let state_lock = self.dir_state(parent)?;
        let state = state_lock.read();
        let resolved = state.resolve(name).ok_or(errno(c::ENOENT))?;
        match (is_dir, resolved.kind() == Kind::Dir) {
            (true, false) => return Err(errno(c::ENOTDIR)),
            (false, true) => return Err(errno(c::EISDIR)),
            _ => {}
        }
        if is_dir {
            let child = self.peek_node(parent, &state, name, resolved)?;
            drop(state);
            if !self.dir_state(&child)?.read().is_empty() {
                return Err(errno(c::ENOTEMPTY));
            }
        }
        Ok(())
    }

    /// After the name `name` in directory `parent_ino` is gone: the node keeps its other
    /// names; with none left it lives on for its open files through `object` (an O_PATH fd of
    /// the object, taken before the name went), and without open files lets it go.
    pub(super) fn detach_node(
        &self,
        node: &Arc<Node>,
        parent_ino: u64,
        name: &[u8],
        object: Option<Arc<OwnedFd>>,
    ) {
        let mut inner = node.inner.write();
        inner.remove_link(parent_ino, name);
        let gone = inner.links.is_empty();
        node.settle_unlinked(&mut inner, object);
        drop(inner);
        if gone && node.kind == Kind::Dir {
            self.dirs.remove(node.ino);
            self.drop_upper_dir(node.ino);
            // A directory never comes back by another name: its number may now be reused.
            node.removed
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// Whether the node's object is an upper one (its own copy, or the index copy of a
/// hard-linked file) rather than a lower object that no removal can touch.
fn has_upper_object(node: &Node) -> bool {
    let inner = node.inner.read();
    inner.upper || inner.index.is_some() || inner.object.is_some()
}
