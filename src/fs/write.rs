//! Namespace changes: create, mknod, mkdir, symlink, link, unlink, rmdir, rename.
//!
//! Lock order: never copy up while holding a directory state lock; directory state locks are
//! taken shallower directory first (then by inode number), so parent-before-child holds
//! everywhere.

use std::ffi::{CStr, OsStr};
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use fuser::{Errno, FileAttr, FileType, INodeNo, RenameFlags, Request};
use parking_lot::RwLock;

use super::copy::Data;
use super::{errno, StrataFs};
use crate::acl;
use crate::attr::kind_of_mode;
use crate::dirstate::{DirState, Resolved, UpperEntry};
use crate::inode::{upper_ino, Link, Node, NodeInner};
use crate::ovl::{self, Marker};
use crate::sys;
use crate::sys::ops;
use crate::whiteout;

/// What to create; `umask` is the caller's (the kernel leaves it to the daemon, FUSE_DONT_MASK).
pub enum NewObject<'a> {
    File { mode: u32, umask: u32, flags: i32 },
    Dir { mode: u32, umask: u32 },
    Node { mode: u32, umask: u32, rdev: u32 },
    Symlink { target: &'a OsStr },
}

/// The mode to create an object with in the upper directory `dir`: the caller's umask applies
/// unless `dir` has a default ACL, which decides instead (POSIX). The host filesystem applies
/// that ACL to an object made in `dir` itself; one made `away` from it (in the work dir, to be
/// renamed over a whiteout) gets the ACLs returned here.
fn creation_mode(
    dir: BorrowedFd<'_>,
    mode: u32,
    umask: u32,
    is_dir: bool,
    away: bool,
) -> (u32, Option<acl::Inherited>) {
    match sys::xattr::get(dir, acl::DEFAULT_XATTR) {
        Ok(Some(default)) if away => match acl::inherit(&default, mode, is_dir) {
            Some(inherited) => (inherited.mode, Some(inherited)),
            // Not an ACL the kernel would have stored: as if there were none.
            None => (mode & !umask, None),
        },
        Ok(Some(_)) => (mode, None),
        _ => (mode & !umask, None),
    }
}

fn check_name(name: &[u8]) -> Result<(), Errno> {
    if name.len() > super::NAME_MAX {
        return Err(Errno::ENAMETOOLONG);
    }
    // Names starting with `.wh.` are whiteouts in every layer format: such a file could not be
    // told apart from a whiteout by any reader of the upper dir.
    if name.starts_with(whiteout::WH_PREFIX) {
        return Err(Errno::EINVAL);
    }
    Ok(())
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

impl StrataFs {
    /// Creates one object in the upper copy of `parent`, owned by the caller.
    fn create_in_upper(
        &self,
        req: &Request,
        dir: BorrowedFd<'_>,
        name: &CStr,
        spec: &NewObject<'_>,
        over_whiteout: bool,
    ) -> Result<Option<File>, Errno> {
        let upper = self.writable_upper()?;
        let parent_st = sys::fstat(dir).map_err(|e| errno(&e))?;
        // In a setgid directory the new object takes the directory's group, as on any fs.
        let gid = if parent_st.st_mode & libc::S_ISGID != 0 {
            u32::MAX
        } else {
            req.gid()
        };
        // Over a whiteout, the object is made in the work dir and swapped in atomically.
        let tmp = upper.temp_name().map_err(|e| errno(&e))?;
        let (at, at_name): (BorrowedFd<'_>, &CStr) = if over_whiteout {
            (upper.work(), &tmp)
        } else {
            (dir, name)
        };
        let mut file = None;
        let mut acls = None;
        let made = match spec {
            NewObject::File { mode, umask, flags } => {
                let fl = (flags & !libc::O_ACCMODE) | libc::O_RDWR | libc::O_CREAT | libc::O_EXCL;
                let (mode, inherited) = creation_mode(dir, *mode, *umask, false, over_whiteout);
                acls = inherited;
                sys::open_beneath(at, at_name, fl, mode & 0o7777)
                    .map(|fd: OwnedFd| file = Some(File::from(fd)))
            }
            NewObject::Dir { mode, umask } => {
                let (mode, inherited) = creation_mode(dir, *mode, *umask, true, over_whiteout);
                acls = inherited;
                ops::mkdir_at(at, at_name, mode & 0o7777)
            }
            NewObject::Node { mode, umask, rdev } => {
                let (mode, inherited) = creation_mode(dir, *mode, *umask, false, over_whiteout);
                acls = inherited;
                ops::mknod_at(at, at_name, mode, *rdev as u64)
            }
            NewObject::Symlink { target } => {
                sys::cstr(target.as_bytes()).and_then(|t| ops::symlink_at(&t, at, at_name))
            }
        };
        made.map_err(|e| errno(&e))?;
        let finish = (|| {
            let (uid, gid) = self.ownership.stored(req.uid(), gid);
            ops::chown_at(at, at_name, uid, gid)?;
            if let Some(inherited) = &acls {
                let fd = sys::open_beneath(at, at_name, libc::O_PATH | libc::O_NOFOLLOW, 0)?;
                if let Some(access) = &inherited.access {
                    sys::xattr::set(fd.as_fd(), acl::ACCESS_XATTR, access, 0)?;
                }
                if let Some(default) = &inherited.default {
                    sys::xattr::set(fd.as_fd(), acl::DEFAULT_XATTR, default, 0)?;
                }
            }
            if over_whiteout {
                if matches!(spec, NewObject::Dir { .. }) {
                    // A directory made where a lower one was deleted must hide the old content.
                    let fd = sys::open_beneath(at, at_name, libc::O_PATH | libc::O_NOFOLLOW, 0)?;
                    ovl::set(fd.as_fd(), self.format.ns, Marker::Opaque, b"y")?;
                    // A directory cannot replace a whiteout by rename: swap them, drop the whiteout.
                    ops::rename_at(at, at_name, dir, name, ops::RENAME_EXCHANGE)?;
                    ops::unlink_at(at, at_name, false)?;
                } else {
                    ops::rename_at(at, at_name, dir, name, 0)?;
                }
            }
            Ok::<(), std::io::Error>(())
        })();
        if let Err(e) = finish {
            if over_whiteout {
                upper.discard(at_name);
            } else {
                let _ = ops::unlink_at(dir, name, matches!(spec, NewObject::Dir { .. }));
            }
            return Err(errno(&e));
        }
        Ok(file)
    }

    /// The common path of create, mknod, mkdir and symlink.
    pub(super) fn create_entry(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        spec: NewObject<'_>,
    ) -> Result<(FileAttr, Arc<Node>, Option<File>), Errno> {
        let name = name.as_bytes();
        check_name(name)?;
        let upper = self.writable_upper()?;
        let parent_node = self.node(parent)?;
        if self.dir_state(&parent_node)?.read().resolve(name).is_some() {
            return Err(Errno::EEXIST);
        }
        self.ensure_upper(&parent_node, Data::All)?;
        let state = self.dir_state(&parent_node)?;
        let mut state = state.write();
        if state.resolve(name).is_some() {
            return Err(Errno::EEXIST);
        }
        let over_whiteout = matches!(state.upper.get(name), Some(UpperEntry::Whiteout));
        let dir = upper
            .open_dir(&self.upper_rel(&parent_node)?)
            .map_err(|e| errno(&e))?;
        let name_c = sys::cstr(name).map_err(|e| errno(&e))?;
        let file = self.create_in_upper(req, dir.as_fd(), &name_c, &spec, over_whiteout)?;
        let st = sys::stat_at(dir.as_fd(), &name_c).map_err(|e| errno(&e))?;
        let ino = upper_ino(st.st_ino);
        let kind = kind_of_mode(st.st_mode);
        state.set_present(name, ino, kind);
        let node = self.nodes.lookup_or_insert(ino, || {
            Node::new(
                ino,
                kind,
                NodeInner {
                    links: Vec::new(),
                    lower: None,
                    upper: true,
                    object: None,
                    metacopy: false,
                    index: None,
                    attr: crate::attr::Attr::from_stat(&st),
                },
            )
        });
        node.inner.write().add_link(&parent_node, name);
        if kind == FileType::Directory {
            // A new directory hides whatever the lower layers had under its name.
            self.dirs.insert(
                ino,
                Arc::new(RwLock::new(DirState {
                    opaque: true,
                    ..Default::default()
                })),
            );
        }
        let attr = crate::attr::Attr::from_stat(&st).to_file_attr(ino, &self.ownership);
        Ok((attr, node, file))
    }

    pub(super) fn do_create_object(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        spec: NewObject<'_>,
    ) -> Result<FileAttr, Errno> {
        self.create_entry(req, parent, name, spec)
            .map(|(attr, _, _)| attr)
    }

    /// A node for `name` without counting a kernel reference (for internal use).
    fn peek_node(
        &self,
        parent: &Arc<Node>,
        state: &DirState,
        name: &[u8],
        resolved: Resolved<'_>,
    ) -> Result<Arc<Node>, Errno> {
        if let Some(n) = self.nodes.get(resolved.ino()) {
            // The name is one of the node's names (a hard link may not have been seen by it).
            n.inner.write().add_link(parent, name);
            return Ok(n);
        }
        let node = self.node_for(parent, state, name, resolved)?;
        self.nodes.forget(node.ino, 1);
        Ok(node)
    }

    pub(super) fn do_remove(
        &self,
        parent: INodeNo,
        name: &OsStr,
        is_dir: bool,
    ) -> Result<(), Errno> {
        let name = name.as_bytes();
        let upper = self.writable_upper()?;
        let parent_node = self.node(parent)?;
        // A removal that must fail fails before the parent is copied up, as in the kernel.
        self.check_removable(&parent_node, name, is_dir)?;
        self.ensure_upper(&parent_node, Data::All)?;
        self.copy_up_linked_lower(&parent_node, name)?;
        let state_lock = self.dir_state(&parent_node)?;
        let mut state = state_lock.write();
        let resolved = state.resolve(name).ok_or(Errno::ENOENT)?;
        let kind = resolved.kind();
        match (is_dir, kind == FileType::Directory) {
            (true, false) => return Err(Errno::ENOTDIR),
            (false, true) => return Err(Errno::EISDIR),
            _ => {}
        }
        let child = self.peek_node(&parent_node, &state, name, resolved)?;
        if is_dir {
            let child_state = self.dir_state(&child)?;
            if !child_state.read().is_empty() {
                return Err(Errno::ENOTEMPTY);
            }
        }
        let dir = upper
            .open_dir(&self.upper_rel(&parent_node)?)
            .map_err(|e| errno(&e))?;
        let name_c = sys::cstr(name).map_err(|e| errno(&e))?;
        let lower_has = state.lower_entry(name).is_some();
        let indexed_name = if in_upper_of(&resolved) {
            None
        } else {
            self.indexed_lower_name(&parent_node, &state, name)
        };
        let orphan = if is_dir {
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
        done.map_err(|e| errno(&e))?;
        if let Some(idx) = indexed_name {
            // A lower name of a copied-up hard link is gone: one name less.
            crate::ovl::adjust_nlink(upper.index(), self.format.ns, &idx, -1);
        }
        state.remove_name(name);
        drop(state);
        self.detach_node(&child, parent_node.ino, name, orphan);
        Ok(())
    }

    /// Before the name `name` of a hard-linked lower file goes (unlink, rename over): the file
    /// is copied up under that name first, as the kernel does with index=on, so the index
    /// entry exists and the link count of the other names drops with the name.
    fn copy_up_linked_lower(&self, parent: &Arc<Node>, name: &[u8]) -> Result<(), Errno> {
        let child = {
            let state_lock = self.dir_state(parent)?;
            let state = state_lock.read();
            let Some(resolved @ Resolved::Lower(e)) = state.resolve(name) else {
                return Ok(());
            };
            if e.attr().nlink < 2 || e.attr().kind() != FileType::RegularFile {
                return Ok(());
            }
            self.peek_node(parent, &state, name, resolved)?
        };
        let at = Link {
            parent: parent.clone(),
            name: name.to_vec(),
        };
        self.ensure_upper_as(&child, Data::All, Some(at))
    }

    /// The checks of unlink/rmdir that need no change on disk.
    fn check_removable(&self, parent: &Arc<Node>, name: &[u8], is_dir: bool) -> Result<(), Errno> {
        let state_lock = self.dir_state(parent)?;
        let state = state_lock.read();
        let resolved = state.resolve(name).ok_or(Errno::ENOENT)?;
        match (is_dir, resolved.kind() == FileType::Directory) {
            (true, false) => return Err(Errno::ENOTDIR),
            (false, true) => return Err(Errno::EISDIR),
            _ => {}
        }
        if is_dir {
            let child = self.peek_node(parent, &state, name, resolved)?;
            drop(state);
            if !self.dir_state(&child)?.read().is_empty() {
                return Err(Errno::ENOTEMPTY);
            }
        }
        Ok(())
    }

    /// After the name `name` in directory `parent_ino` is gone: the node keeps its other
    /// names; with none left it lives on for open files through `object` (an O_PATH fd of
    /// the object, taken before the name went).
    fn detach_node(
        &self,
        node: &Arc<Node>,
        parent_ino: u64,
        name: &[u8],
        object: Option<Arc<OwnedFd>>,
    ) {
        let mut inner = node.inner.write();
        inner.remove_link(parent_ino, name);
        let gone = inner.links.is_empty();
        if gone && inner.object.is_none() {
            inner.object = object;
        }
        drop(inner);
        if gone && node.kind == FileType::Directory {
            self.dirs.remove(node.ino);
            // A directory never comes back by another name: its number may now be reused.
            node.removed
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }

    pub(super) fn do_link(
        &self,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
    ) -> Result<FileAttr, Errno> {
        let newname = newname.as_bytes();
        check_name(newname)?;
        let upper = self.writable_upper()?;
        let node = self.node(ino)?;
        if node.kind == FileType::Directory {
            return Err(Errno::EPERM);
        }
        // Like the kernel with metacopy=on: the link shares a metadata-only copy, which names
        // its lower data by an absolute redirect (another name may be in another directory).
        self.ensure_upper(&node, Data::Meta)?;
        self.redirect_metacopy(&node, None)?;
        let parent_node = self.node(newparent)?;
        self.ensure_upper(&parent_node, Data::All)?;
        // The object is linked, not one of its names: any name may have gone meanwhile.
        let obj = self.upper_object(&node)?;
        let state_lock = self.dir_state(&parent_node)?;
        let mut state = state_lock.write();
        if state.resolve(newname).is_some() {
            return Err(Errno::EEXIST);
        }
        let over_whiteout = matches!(state.upper.get(newname), Some(UpperEntry::Whiteout));
        let dir = upper
            .open_dir(&self.upper_rel(&parent_node)?)
            .map_err(|e| errno(&e))?;
        let name_c = sys::cstr(newname).map_err(|e| errno(&e))?;
        let linked = if over_whiteout {
            let tmp = upper.temp_name().map_err(|e| errno(&e))?;
            ops::link_fd_at(obj.as_fd(), upper.work(), &tmp).and_then(|()| {
                ops::rename_at(upper.work(), &tmp, dir.as_fd(), &name_c, 0)
                    .inspect_err(|_| upper.discard(&tmp))
            })
        } else {
            ops::link_fd_at(obj.as_fd(), dir.as_fd(), &name_c)
        };
        linked.map_err(|e| errno(&e))?;
        state.set_present(newname, node.ino, node.kind);
        if let Ok(st) = sys::fstat(obj.as_fd()) {
            self.upper_link_inos.lock().insert(st.st_ino, node.ino);
        }
        {
            // Now hard-linked: from here on the object, not a name, is the node.
            let mut inner = node.inner.write();
            inner.object.get_or_insert(obj);
            inner.add_link(&parent_node, newname);
        }
        drop(state);
        let node = self
            .nodes
            .lookup_or_insert(node.ino, || unreachable!("the node is alive"));
        self.node_attr(&node)
    }

    pub(super) fn do_rename(
        &self,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
    ) -> Result<(), Errno> {
        let (name, newname) = (name.as_bytes(), newname.as_bytes());
        check_name(newname)?;
        let exchange = flags.contains(RenameFlags::RENAME_EXCHANGE);
        let noreplace = flags.contains(RenameFlags::RENAME_NOREPLACE);
        if flags.contains(RenameFlags::RENAME_WHITEOUT) || (exchange && noreplace) {
            return Err(Errno::EINVAL);
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
            let r = st.resolve(name).ok_or(Errno::ENOENT)?;
            self.peek_node(&src_parent, &st, name, r)?
        };
        let src_link = Link {
            parent: src_parent.clone(),
            name: name.to_vec(),
        };
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
            let dst = dst_node.as_ref().ok_or(Errno::ENOENT)?;
            let dst_link = Link {
                parent: dst_parent.clone(),
                name: newname.to_vec(),
            };
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
        let src_now = src_state.resolve(name).ok_or(Errno::ENOENT)?;
        if src_now.ino() != src_node.ino {
            return Err(Errno::EAGAIN);
        }
        let src_is_dir = src_node.kind == FileType::Directory;
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
                return Err(Errno::EEXIST);
            }
            if !exchange {
                let dst_is_dir = dst_kind == FileType::Directory;
                if src_is_dir && !dst_is_dir {
                    return Err(Errno::ENOTDIR);
                }
                if !src_is_dir && dst_is_dir {
                    return Err(Errno::EISDIR);
                }
                if dst_is_dir {
                    let dn = dst_node.as_ref().ok_or(Errno::EIO)?;
                    if !self.dir_state(dn)?.read().is_empty() {
                        return Err(Errno::ENOTEMPTY);
                    }
                }
            }
        } else if exchange {
            return Err(Errno::ENOENT);
        }

        let src_dir = upper
            .open_dir(&self.upper_rel(&src_parent)?)
            .map_err(|e| errno(&e))?;
        let dst_dir = if same_dir {
            src_dir.try_clone().map_err(|e| errno(&e))?
        } else {
            upper
                .open_dir(&self.upper_rel(&dst_parent)?)
                .map_err(|e| errno(&e))?
        };
        let name_c = sys::cstr(name).map_err(|e| errno(&e))?;
        let newname_c = sys::cstr(newname).map_err(|e| errno(&e))?;

        // Directories and metacopy files keep reading their lower content from where it
        // was: record it.
        self.mark_moved(
            &src_node,
            dst_now.is_some() || self.lower_has(&dst_state_guard, &src_state, newname),
            same_dir,
        )?;
        // The object a plain rename replaces lives on for its open files and other names.
        let replaced_object = match &dst_node {
            Some(dn)
                if !exchange
                    && dst_now.is_some_and(|(i, _)| i == dn.ino)
                    && dn.kind != FileType::Directory =>
            {
                self.open_node_path(dn).ok().map(Arc::new)
            }
            _ => None,
        };

        if exchange {
            // The other directory moves too: mark it at its place before the swap.
            if let Some(dn) = &dst_node {
                self.mark_moved(dn, true, same_dir)?;
            }
            ops::rename_at(
                src_dir.as_fd(),
                &name_c,
                dst_dir.as_fd(),
                &newname_c,
                ops::RENAME_EXCHANGE,
            )
            .map_err(|e| errno(&e))?;
        } else {
            let src_lower_has = src_state.lower_entry(name).is_some();
            let dst_upper_entry = match &dst_state_guard {
                Some(d) => d.upper.get(newname).copied(),
                None => src_state.upper.get(newname).copied(),
            };
            // An empty directory being replaced may still hold whiteouts: clear it first.
            if let (
                Some(UpperEntry::Present {
                    kind: FileType::Directory,
                    ..
                }),
                true,
            ) = (dst_upper_entry, src_is_dir)
            {
                upper
                    .remove_via_work(dst_dir.as_fd(), &newname_c)
                    .map_err(|e| errno(&e))?;
            }
            let dst_is_whiteout = matches!(dst_upper_entry, Some(UpperEntry::Whiteout));
            if src_is_dir && dst_is_whiteout {
                // A directory cannot replace a whiteout: swap, then keep or drop the whiteout.
                ops::rename_at(
                    src_dir.as_fd(),
                    &name_c,
                    dst_dir.as_fd(),
                    &newname_c,
                    ops::RENAME_EXCHANGE,
                )
                .map_err(|e| errno(&e))?;
                if !src_lower_has {
                    ops::unlink_at(src_dir.as_fd(), &name_c, false).map_err(|e| errno(&e))?;
                }
            } else {
                let fl = if src_lower_has {
                    ops::RENAME_WHITEOUT
                } else {
                    0
                };
                ops::rename_at(src_dir.as_fd(), &name_c, dst_dir.as_fd(), &newname_c, fl)
                    .map_err(|e| errno(&e))?;
            }
        }

        // Disk is done: now the in-memory view.
        if exchange {
            let dn = dst_node.clone().ok_or(Errno::EIO)?;
            let dir_lower = |n: &Node| {
                n.inner
                    .read()
                    .lower
                    .clone()
                    .filter(|l| n.kind == FileType::Directory && !l.dir_layers.is_empty())
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
            if let (FileType::Directory, Some(l)) = (src_node.kind, moved_lower) {
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
    fn check_movable(&self, parent: &Arc<Node>, name: &[u8]) -> Result<(), Errno> {
        let state_lock = self.dir_state(parent)?;
        let state = state_lock.read();
        let Some(resolved) = state.resolve(name) else {
            return Ok(());
        };
        if resolved.kind() != FileType::Directory {
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
            return Err(Errno::EXDEV);
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

    /// Before a directory moves: a directory with lower content gets a redirect to its lower
    /// path (the kernel's redirect_dir format), and a pure upper directory landing where a
    /// lower name exists becomes opaque, so nothing of the new place leaks into it.
    /// A copied-up lower hard link that moves keeps a redirect to its lower path, as the
    /// kernel writes with index=on, so its origin stays reachable by path.
    fn mark_moved_hard_link(&self, node: &Node) -> Result<(), Errno> {
        let (lower, nlink) = {
            let inner = node.inner.read();
            (inner.lower.clone(), inner.attr.nlink)
        };
        let Some(lower) = lower.filter(|_| nlink > 1 && self.format.redirect_dir) else {
            return Ok(());
        };
        self.writable_upper()?;
        let fd = self.upper_object(node)?;
        let mut target = b"/".to_vec();
        target.extend_from_slice(&lower.rel);
        ovl::set(fd.as_fd(), self.format.ns, Marker::Redirect, &target).map_err(|e| errno(&e))
    }

    /// A metacopy file that moves (or gains a name) names its lower data by redirect, as the
    /// kernel writes it: the old name for a move inside its directory (`same_dir`, one lower
    /// link), else the absolute lower path.
    fn redirect_metacopy(&self, node: &Node, same_dir: Option<bool>) -> Result<(), Errno> {
        let (lower, metacopy, nlink) = {
            let inner = node.inner.read();
            (inner.lower.clone(), inner.metacopy, inner.attr.nlink)
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
            [&b"/"[..], &lower.rel].concat()
        };
        ovl::set(fd.as_fd(), self.format.ns, Marker::Redirect, &target).map_err(|e| errno(&e))
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
    ) -> Result<(), Errno> {
        let (src_ino, src_kind) = {
            let st = self.dir_state(src_parent)?;
            let st = st.read();
            let r = st.resolve(name).ok_or(Errno::ENOENT)?;
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
            return if exchange { Err(Errno::ENOENT) } else { Ok(()) };
        };
        if dst_ino == src_ino || exchange {
            return Ok(());
        }
        if noreplace {
            return Err(Errno::EEXIST);
        }
        let src_is_dir = src_kind == FileType::Directory;
        let dst_is_dir = dst_kind == FileType::Directory;
        if src_is_dir && !dst_is_dir {
            return Err(Errno::ENOTDIR);
        }
        if !src_is_dir && dst_is_dir {
            return Err(Errno::EISDIR);
        }
        if dst_is_dir && !self.dir_state(&dst_node)?.read().is_empty() {
            return Err(Errno::ENOTEMPTY);
        }
        Ok(())
    }

    fn mark_moved(&self, node: &Node, lands_on_lower: bool, same_dir: bool) -> Result<(), Errno> {
        if node.kind == FileType::RegularFile {
            if node.inner.read().metacopy {
                return self.redirect_metacopy(node, Some(same_dir));
            }
            return self.mark_moved_hard_link(node);
        }

        if node.kind != FileType::Directory {
            return Ok(());
        }
        self.writable_upper()?;
        let lower = node.inner.read().lower.clone();
        let fd = self.upper_object(node)?;
        match lower {
            Some(l) if !l.dir_layers.is_empty() => {
                let mut target = b"/".to_vec();
                target.extend_from_slice(&l.rel);
                ovl::set(fd.as_fd(), self.format.ns, Marker::Redirect, &target)
                    .map_err(|e| errno(&e))
            }
            _ if lands_on_lower => {
                ovl::set(fd.as_fd(), self.format.ns, Marker::Opaque, b"y").map_err(|e| errno(&e))
            }
            _ => Ok(()),
        }
    }
}

fn in_upper_of(r: &Resolved<'_>) -> bool {
    matches!(r, Resolved::Upper { .. })
}
