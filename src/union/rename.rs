//! rename and exchange. Refusals come before any copy-up, as in the kernel; what moves is
//! copied up first (a file as metadata only when it can), then both directories are locked
//! and the names change on disk, then in memory.
//!
//! Lock order: never copy up while holding a directory state lock; directory state locks are
//! taken shallower directory first (then by inode number), so parent-before-child holds
//! everywhere.

use std::io;
use std::os::fd::AsFd;
use std::sync::Arc;

use super::copy_up::Data;
use super::{errno, Union};
use crate::sys;
use crate::sys::c;
use crate::sys::ops;
use crate::union::attr::Kind;
use crate::union::dirstate::{DirState, UpperEntry};
use crate::union::inode::{Link, Node};
use crate::union::ovl::{self, Marker};

/// The flags of rename(2).
#[derive(Clone, Copy, Debug, Default)]
pub struct RenameMode {
    /// RENAME_EXCHANGE: both names exist and trade places.
    pub exchange: bool,
    /// RENAME_NOREPLACE: fail with EEXIST rather than replace the new name.
    pub noreplace: bool,
    /// RENAME_WHITEOUT: refused (it is the union's own way of writing a whiteout).
    pub whiteout: bool,
}

fn depth(node: &Node) -> usize {
    let mut d = 0;
    let mut cur = node.inner.read().parent().cloned();
    while let Some(p) = cur {
        d += 1;
        cur = p.inner.read().parent().cloned();
    }
    d
}
impl Union {
    /// Renames `name` in `parent` to `newname` in `newparent`.
    pub fn rename(
        &self,
        parent: u64,
        name: &[u8],
        newparent: u64,
        newname: &[u8],
        mode: RenameMode,
    ) -> io::Result<()> {
        super::create::check_name(newname)?;
        let RenameMode {
            exchange,
            noreplace,
            whiteout,
        } = mode;
        if whiteout || (exchange && noreplace) {
            return Err(errno(c::EINVAL));
        }
        let upper = self.writable_upper()?;
        let src_parent = self.node(parent)?;
        let dst_parent = self.node(newparent)?;
        if !self.format.redirect_dir {
            // Before any copy-up, as the kernel checks it.
            self.check_movable(&src_parent, name)?;
            if exchange {
                self.check_movable(&dst_parent, newname)?;
            }
        }
        // Refusals come before any copy-up, as in the kernel: a failed rename leaves the upper
        // dir as it was. (They are checked again under the locks below.)
        self.check_rename(&src_parent, name, &dst_parent, newname, exchange, noreplace)?;
        self.ensure_upper(&src_parent, Data::All)?;
        self.ensure_upper(&dst_parent, Data::All)?;

        // Copy up what will move before taking any directory lock.
        let src_node = {
            let st = self.dir_state(&src_parent)?;
            let st = st.read();
            let r = st.resolve(name).ok_or(errno(c::ENOENT))?;
            self.peek_node(&src_parent, &st, name, r)?
        };
        let src_link = Link::new(&src_parent, name);
        // A file moves as a metadata-only copy when it can (the kernel's metacopy=on): its data
        // stays below, named by the redirect mark_moved writes.
        self.ensure_upper_as(&src_node, Data::Meta, Some(src_link))?;
        let dst_node = {
            let st = self.dir_state(&dst_parent)?;
            let st = st.read();
            match st.resolve(newname) {
                Some(r) => Some(self.peek_node(&dst_parent, &st, newname, r)?),
                None => None,
            }
        };
        if exchange {
            let dst = dst_node.as_ref().ok_or(errno(c::ENOENT))?;
            let dst_link = Link::new(&dst_parent, newname);
            self.ensure_upper_as(dst, Data::Meta, Some(dst_link))?;
        } else if dst_node.is_some() {
            self.copy_up_linked_lower(&dst_parent, newname)?;
        }

        let same_dir = Arc::ptr_eq(&src_parent, &dst_parent);
        let src_lock = self.dir_state(&src_parent)?;
        let dst_lock = self.dir_state(&dst_parent)?;
        let (mut src_state, mut dst_state_guard);
        if same_dir {
            src_state = src_lock.write();
            dst_state_guard = None;
        } else if (depth(&src_parent), src_parent.ino) < (depth(&dst_parent), dst_parent.ino) {
            src_state = src_lock.write();
            dst_state_guard = Some(dst_lock.write());
        } else {
            dst_state_guard = Some(dst_lock.write());
            src_state = src_lock.write();
        }

        // Re-check under the locks: another request may have changed either name.
        let src_now = src_state.resolve(name).ok_or(errno(c::ENOENT))?;
        if src_now.ino() != src_node.ino {
            return Err(errno(c::EAGAIN));
        }
        let src_is_dir = src_node.kind == Kind::Dir;
        let dst_now = match &dst_state_guard {
            Some(d) => d.resolve(newname).map(|r| (r.ino(), r.kind())),
            None => src_state.resolve(newname).map(|r| (r.ino(), r.kind())),
        };
        if same_dir && name == newname {
            return Ok(());
        }
        if let Some((dst_ino, dst_kind)) = dst_now {
            if dst_ino == src_node.ino {
                // Two names of one inode: rename(2) does nothing.
                return Ok(());
            }
            if noreplace {
                return Err(errno(c::EEXIST));
            }
            if !exchange {
                let dst_is_dir = dst_kind == Kind::Dir;
                if src_is_dir && !dst_is_dir {
                    return Err(errno(c::ENOTDIR));
                }
                if !src_is_dir && dst_is_dir {
                    return Err(errno(c::EISDIR));
                }
                if dst_is_dir {
                    let dn = dst_node.as_ref().ok_or(errno(c::EIO))?;
                    if !self.dir_state(dn)?.read().is_empty() {
                        return Err(errno(c::ENOTEMPTY));
                    }
                }
            }
        } else if exchange {
            return Err(errno(c::ENOENT));
        }

        let src_dir = upper.open_dir(&self.upper_rel(&src_parent)?)?;
        let dst_dir = if same_dir {
            src_dir.try_clone()?
        } else {
            upper.open_dir(&self.upper_rel(&dst_parent)?)?
        };
        let name_c = sys::cstr(name)?;
        let newname_c = sys::cstr(newname)?;
        // The one move on disk, from the source name to the target name, with rename flags.
        let rename_in_upper =
            |flags| ops::rename_at(src_dir.as_fd(), &name_c, dst_dir.as_fd(), &newname_c, flags);

        // Directories and metacopy files keep reading their lower content from where it
        // was: record it.
        self.mark_moved(
            &src_node,
            name,
            dst_now.is_some() || self.lower_has(&dst_state_guard, &src_state, newname),
            same_dir,
        )?;
        // The object a plain rename replaces lives on for its open files and other names.
        let replaced_object = match &dst_node {
            Some(dn)
                if !exchange
                    && dst_now.is_some_and(|(i, _)| i == dn.ino)
                    && dn.kind != Kind::Dir =>
            {
                self.open_node_path(dn).ok().map(Arc::new)
            }
            _ => None,
        };

        if exchange {
            // The other directory moves too: mark it at its place before the swap.
            if let Some(dn) = &dst_node {
                self.mark_moved(dn, newname, true, same_dir)?;
            }
            rename_in_upper(ops::RENAME_EXCHANGE)?;
        } else {
            let src_lower_has = src_state.lower_entry(name).is_some();
            let dst_upper_entry = match &dst_state_guard {
                Some(d) => d.upper.get(newname).copied(),
                None => src_state.upper.get(newname).copied(),
            };
            // An empty directory being replaced may still hold whiteouts: clear it first.
            if let (
                Some(UpperEntry::Present {
                    kind: Kind::Dir, ..
                }),
                true,
            ) = (dst_upper_entry, src_is_dir)
            {
                upper.remove_via_work(dst_dir.as_fd(), &newname_c)?;
            }
            let dst_is_whiteout = matches!(dst_upper_entry, Some(UpperEntry::Whiteout));
            if src_is_dir && dst_is_whiteout {
                // A directory cannot replace a whiteout: swap, then keep or drop the whiteout.
                rename_in_upper(ops::RENAME_EXCHANGE)?;
                if !src_lower_has {
                    ops::unlink_at(src_dir.as_fd(), &name_c, false)?;
                }
            } else {
                let fl = if src_lower_has {
                    ops::RENAME_WHITEOUT
                } else {
                    0
                };
                rename_in_upper(fl)?;
            }
        }

        // Disk is done: now the in-memory view.
        if exchange {
            let dn = dst_node.clone().ok_or(errno(c::EIO))?;
            let dir_lower = |n: &Node| {
                n.inner
                    .read()
                    .lower
                    .clone()
                    .filter(|l| n.kind == Kind::Dir && !l.dir_layers.is_empty())
            };
            let (src_lower, dst_lower) = (dir_lower(&src_node), dir_lower(&dn));
            src_state.set_present(name, dn.ino, dn.kind);
            src_state.redirects.remove(name);
            if let Some(l) = dst_lower {
                src_state.redirects.insert(name.to_vec(), l);
            }
            let dst_state: &mut DirState = match dst_state_guard.as_mut() {
                Some(d) => d,
                None => &mut src_state,
            };
            dst_state.set_present(newname, src_node.ino, src_node.kind);
            dst_state.redirects.remove(newname);
            if let Some(l) = src_lower {
                dst_state.redirects.insert(newname.to_vec(), l);
            }
            // Each inode keeps its other names; only the two exchanged names trade places.
            src_node
                .inner
                .write()
                .move_link((src_parent.ino, name), &dst_parent, newname);
            dn.inner
                .write()
                .move_link((dst_parent.ino, newname), &src_parent, name);
        } else {
            src_state.remove_name(name);
            let moved_lower = src_node
                .inner
                .read()
                .lower
                .clone()
                .filter(|l| !l.dir_layers.is_empty());
            let dst_state: &mut DirState = match dst_state_guard.as_mut() {
                Some(d) => d,
                None => &mut src_state,
            };
            dst_state.set_present(newname, src_node.ino, src_node.kind);
            if let (Kind::Dir, Some(l)) = (src_node.kind, moved_lower) {
                dst_state.redirects.insert(newname.to_vec(), l);
            }
            drop(src_state);
            drop(dst_state_guard);
            let replaced = dst_node
                .as_ref()
                .filter(|dn| dst_now.is_some_and(|(i, _)| i == dn.ino));
            if let Some(dn) = replaced {
                self.detach_node(dn, dst_parent.ino, newname, replaced_object);
            }
            src_node
                .inner
                .write()
                .move_link((src_parent.ino, name), &dst_parent, newname);
        }
        Ok(())
    }

    /// Without directory redirects (the userxattr format) a directory with lower content
    /// cannot move: like kernel overlayfs with redirect_dir=nofollow, EXDEV, and `mv` copies.
    fn check_movable(&self, parent: &Arc<Node>, name: &[u8]) -> io::Result<()> {
        let state_lock = self.dir_state(parent)?;
        let state = state_lock.read();
        let Some(resolved) = state.resolve(name) else {
            return Ok(());
        };
        if resolved.kind() != Kind::Dir {
            return Ok(());
        }
        let node = self.peek_node(parent, &state, name, resolved)?;
        let has_lower = node
            .inner
            .read()
            .lower
            .as_ref()
            .is_some_and(|l| !l.dir_layers.is_empty());
        if has_lower {
            return Err(errno(c::EXDEV));
        }
        Ok(())
    }

    fn lower_has(
        &self,
        dst: &Option<parking_lot::RwLockWriteGuard<'_, DirState>>,
        src: &DirState,
        name: &[u8],
    ) -> bool {
        match dst {
            Some(d) => d.lower_entry(name).is_some(),
            None => src.lower_entry(name).is_some(),
        }
    }

    /// A copied-up lower hard link that moves keeps a redirect to its lower path, as the
    /// kernel writes with index=on, so its origin stays reachable by path.
    fn mark_moved_hard_link(&self, node: &Node) -> io::Result<()> {
        let (lower, nlink) = {
            let inner = node.inner.read();
            (inner.lower.clone(), inner.attr().nlink)
        };
        let Some(lower) = lower.filter(|_| nlink > 1 && self.format.redirect_dir) else {
            return Ok(());
        };
        self.writable_upper()?;
        let fd = self.upper_object(node)?;
        let mut target = b"/".to_vec();
        target.extend_from_slice(&lower.rel);
        ovl::set(fd.as_fd(), self.format.ns, Marker::Redirect, &target)
    }

    /// A metacopy file that moves (or gains a name) names its lower data by redirect, as the
    /// kernel writes it: the old name for a move inside its directory (`same_dir`, one lower
    /// link), else the absolute lower path.
    pub(super) fn redirect_metacopy(&self, node: &Node, same_dir: Option<bool>) -> io::Result<()> {
        let (lower, metacopy, nlink) = {
            let inner = node.inner.read();
            (inner.lower.clone(), inner.metacopy, inner.attr().nlink)
        };
        let Some(lower) = lower.filter(|_| metacopy) else {
            return Ok(());
        };
        let fd = self.upper_object(node)?;
        if ovl::has(fd.as_fd(), Marker::Redirect) {
            // Already named (moved before): the path it names has not changed.
            return Ok(());
        }
        let (lower_dir, lower_name) = match lower.rel.iter().rposition(|b| *b == b'/') {
            Some(i) => (&lower.rel[..i], &lower.rel[i + 1..]),
            None => (&b"."[..], &lower.rel[..]),
        };
        let parent_lower = node
            .inner
            .read()
            .parent()
            .and_then(|p| p.inner.read().lower.as_ref().map(|l| l.rel.clone()));
        let relative =
            same_dir == Some(true) && nlink < 2 && parent_lower.as_deref() == Some(lower_dir);
        let target = if relative {
            lower_name.to_vec()
        } else {
            absolute_redirect(&lower.rel)?
        };
        ovl::set(fd.as_fd(), self.format.ns, Marker::Redirect, &target)
    }

    /// The refusals of rename(2) that depend only on the names: ENOENT, EEXIST, ENOTDIR,
    /// EISDIR, ENOTEMPTY.
    fn check_rename(
        &self,
        src_parent: &Arc<Node>,
        name: &[u8],
        dst_parent: &Arc<Node>,
        newname: &[u8],
        exchange: bool,
        noreplace: bool,
    ) -> io::Result<()> {
        let (src_ino, src_kind) = {
            let st = self.dir_state(src_parent)?;
            let st = st.read();
            let r = st.resolve(name).ok_or(errno(c::ENOENT))?;
            (r.ino(), r.kind())
        };
        let dst = {
            let st = self.dir_state(dst_parent)?;
            let st = st.read();
            match st.resolve(newname) {
                Some(r) => Some((
                    r.ino(),
                    r.kind(),
                    self.peek_node(dst_parent, &st, newname, r)?,
                )),
                None => None,
            }
        };
        let Some((dst_ino, dst_kind, dst_node)) = dst else {
            return if exchange {
                Err(errno(c::ENOENT))
            } else {
                Ok(())
            };
        };
        if dst_ino == src_ino || exchange {
            return Ok(());
        }
        if noreplace {
            return Err(errno(c::EEXIST));
        }
        let src_is_dir = src_kind == Kind::Dir;
        let dst_is_dir = dst_kind == Kind::Dir;
        if src_is_dir && !dst_is_dir {
            return Err(errno(c::ENOTDIR));
        }
        if !src_is_dir && dst_is_dir {
            return Err(errno(c::EISDIR));
        }
        if dst_is_dir && !self.dir_state(&dst_node)?.read().is_empty() {
            return Err(errno(c::ENOTEMPTY));
        }
        Ok(())
    }

    /// Before an object moves, what it needs to be found again after: a directory with lower
    /// content gets a redirect to its lower copies (the kernel's redirect_dir format), and a
    /// pure upper directory landing where a lower name exists becomes opaque, so nothing of
    /// the new place leaks into it; files: see `redirect_metacopy`, `mark_moved_hard_link`.
    /// `name` is the object's name before the move.
    fn mark_moved(
        &self,
        node: &Node,
        name: &[u8],
        lands_on_lower: bool,
        same_dir: bool,
    ) -> io::Result<()> {
        if node.kind == Kind::File {
            if node.inner.read().metacopy {
                return self.redirect_metacopy(node, Some(same_dir));
            }
            return self.mark_moved_hard_link(node);
        }

        if node.kind != Kind::Dir {
            return Ok(());
        }
        self.writable_upper()?;
        let lower = node.inner.read().lower.clone();
        let fd = self.upper_object(node)?;
        match lower {
            Some(l) if !l.dir_layers.is_empty() => {
                // As the kernel writes it: a redirect already there stays when it still
                // names the copies (any one for a move inside the directory, an absolute one
                // for any move); else the old name for a move inside the directory (which
                // holds for a directory at any depth), or the absolute lower path.
                let current = ovl::get(fd.as_fd(), Marker::Redirect);
                if current.is_some_and(|r| same_dir || r.starts_with(b"/")) {
                    return Ok(());
                }
                let target = if same_dir {
                    name.to_vec()
                } else {
                    absolute_redirect(&l.rel)?
                };
                ovl::set(fd.as_fd(), self.format.ns, Marker::Redirect, &target)
            }
            _ if lands_on_lower => ovl::set(fd.as_fd(), self.format.ns, Marker::Opaque, b"y"),
            _ => Ok(()),
        }
    }
}

/// The kernel's default limit on an absolute redirect (overlay's `redirect_max`), '/'
/// included.
const REDIRECT_MAX: usize = 256;

/// The absolute redirect naming lower path `rel`. One longer than the kernel writes is
/// refused as the kernel refuses it, with EXDEV: `mv` then copies the tree, and every
/// redirect stays one that kernel overlayfs reads and that fits any filesystem's xattrs.
fn absolute_redirect(rel: &[u8]) -> io::Result<Vec<u8>> {
    if rel.len() + 1 > REDIRECT_MAX {
        return Err(errno(c::EXDEV));
    }
    Ok([&b"/"[..], rel].concat())
}
