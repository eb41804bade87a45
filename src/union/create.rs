//! New names: create, mknod, mkdir, symlink, and link. They share one preamble (the name
//! checked, the parent copied up, the name still free under the directory's lock) and one
//! way of making the object: in place, or over a whiteout by making it in the work dir and
//! swapping it in atomically.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use parking_lot::RwLock;

use super::copy_up::Data;
use super::open::{host_open_flags, OpenFile};
use super::{errno, Caller, Entry, Union};
use crate::sys;
use crate::sys::c;
use crate::sys::ops;
use crate::union::acl;
use crate::union::attr::{kind_of_mode, Attr, Kind};
use crate::union::dirstate::{DirState, UpperEntry};
use crate::union::inode::{upper_ino, Node, NodeAttr, NodeInner};
use crate::union::ovl::{self, Marker};
use crate::union::upper::Upper;
use crate::union::whiteout;

/// What to create; `umask` is the caller's (the kernel leaves it to the daemon, FUSE_DONT_MASK).
pub enum NewObject<'a> {
    /// `flags`: the open flags of create(2); the new file is returned open with them.
    File {
        mode: u32,
        umask: u32,
        flags: i32,
    },
    Dir {
        mode: u32,
        umask: u32,
    },
    Node {
        mode: u32,
        umask: u32,
        rdev: u32,
    },
    Symlink {
        target: &'a [u8],
    },
}

/// A free name in an upper directory, with its directory's state locked for writing.
struct NewName {
    dir: OwnedFd,
    name: CString,
    /// The name hides a lower one: the object replaces the whiteout.
    over_whiteout: bool,
}

/// How to create an object in the upper directory `dir`.
struct Creation {
    mode: u32,
    /// ACLs to set on an object made away from `dir` (see `creation_mode`).
    acls: Option<acl::Inherited>,
    /// `dir` has a default ACL: the new object gets ACLs of its own.
    inherits_acl: bool,
}

/// The mode to create an object with in the upper directory `dir`: the caller's umask applies
/// unless `dir` has a default ACL, which decides instead (POSIX). The host filesystem applies
/// that ACL to an object made in `dir` itself; one made `away` from it (in the work dir, to be
/// renamed over a whiteout) gets the ACLs returned here.
fn creation_mode(dir: BorrowedFd<'_>, mode: u32, umask: u32, is_dir: bool, away: bool) -> Creation {
    let plain = |mode| Creation {
        mode,
        acls: None,
        inherits_acl: false,
    };
    match sys::xattr::get(dir, acl::DEFAULT_XATTR) {
        Ok(Some(default)) if away => match acl::inherit(&default, mode, is_dir) {
            Some(inherited) => Creation {
                mode: inherited.mode,
                acls: Some(inherited),
                inherits_acl: true,
            },
            // Not an ACL the kernel would have stored: as if there were none.
            None => plain(mode & !umask),
        },
        Ok(Some(_)) => Creation {
            mode,
            acls: None,
            inherits_acl: true,
        },
        _ => plain(mode & !umask),
    }
}

/// Whether a new object the daemon made is already owned by `uid` and `gid` (`u32::MAX`:
/// the group is the setgid directory's, as made).
fn made_with_owner(uid: u32, gid: u32) -> bool {
    uid == sys::effective_uid() && (gid == u32::MAX || gid == sys::effective_gid())
}

pub(super) fn check_name(name: &[u8]) -> io::Result<()> {
    if name.len() > super::NAME_MAX {
        return Err(errno(c::ENAMETOOLONG));
    }
    // Names starting with `.wh.` are whiteouts in every layer format: such a file could not be
    // told apart from a whiteout by any reader of the upper dir.
    if name.starts_with(whiteout::WH_PREFIX) {
        return Err(errno(c::EINVAL));
    }
    Ok(())
}

impl Union {
    /// Creates `name` in `parent`, owned by `caller`; a regular file is returned open.
    pub fn create(
        &self,
        parent: u64,
        name: &[u8],
        spec: NewObject<'_>,
        caller: Caller,
    ) -> io::Result<(Entry, Option<OpenFile>)> {
        // A char device 0:0 is a whiteout in the upper dir: it would hide its name after a
        // remount. Kernel overlayfs refuses to create one the same way.
        if let NewObject::Node { mode, rdev: 0, .. } = spec {
            if mode & c::S_IFMT == c::S_IFCHR {
                return Err(errno(c::EPERM));
            }
        }
        let parent_node = self.prepare_new_name(parent, name)?;
        let (st, node, file) = self.with_new_name(&parent_node, name, |state, new| {
            let (file, bare) = self.create_in_upper(caller, new, &spec)?;
            let st = sys::stat_at(new.dir.as_fd(), &new.name)?;
            let ino = upper_ino(st.st_ino);
            let kind = kind_of_mode(st.st_mode);
            state.set_present(name, ino, kind);
            let node = self.nodes.lookup_or_insert(ino, || {
                Node::new(
                    ino,
                    kind,
                    NodeInner {
                        links: Default::default(),
                        lower: None,
                        upper: true,
                        object: None,
                        metacopy: false,
                        index: None,
                        attr: NodeAttr::Own(Some(Box::new(Attr::from_stat(&st)))),
                    },
                )
            });
            node.inner.write().add_link(&parent_node, name);
            node.bare.store(bare, std::sync::atomic::Ordering::Relaxed);
            Ok((st, node, file))
        })?;
        if node.kind == Kind::Dir {
            // A new directory hides whatever the lower layers had under its name.
            self.dirs.insert(
                node.ino,
                Arc::new(RwLock::new(DirState {
                    opaque: true,
                    ..Default::default()
                })),
            );
        }
        let entry = Entry {
            ino: node.ino,
            generation: node.generation,
            attr: Attr::from_stat(&st),
        };
        Ok((entry, file.map(|f| OpenFile::new(f, node.opened()))))
    }

    /// Links `ino` as `newname` in `newparent`.
    pub fn link(&self, ino: u64, newparent: u64, newname: &[u8]) -> io::Result<Entry> {
        let node = self.node(ino)?;
        if node.kind == Kind::Dir {
            return Err(errno(c::EPERM));
        }
        let parent_node = self.prepare_new_name(newparent, newname)?;
        // Like the kernel with metacopy=on: the link shares a metadata-only copy, which names
        // its lower data by an absolute redirect (another name may be in another directory).
        self.ensure_upper(&node, Data::Meta)?;
        self.redirect_metacopy(&node, None)?;
        // The object is linked, not one of its names: any name may have gone meanwhile.
        let obj = self.upper_object(&node)?;
        self.with_new_name(&parent_node, newname, |state, new| {
            self.make_entry(new, false, |at, at_name| {
                ops::link_fd_at(obj.as_fd(), at, at_name)
            })?;
            state.set_present(newname, node.ino, node.kind);
            if let Ok(st) = sys::fstat(obj.as_fd()) {
                self.upper_link_inos.lock().insert(st.st_ino, node.ino);
            }
            // Now hard-linked: from here on the object, not a name, is the node.
            let mut inner = node.inner.write();
            inner.object.get_or_insert(obj.clone());
            inner.add_link(&parent_node, newname);
            Ok(())
        })?;
        let node = self
            .nodes
            .lookup_or_insert(node.ino, || unreachable!("the node is alive"));
        self.entry(&node)
    }

    /// What every new name needs before its directory is locked: a valid name, a writable
    /// union, the parent copied up. A name that exists fails here, before any copy-up.
    fn prepare_new_name(&self, parent: u64, name: &[u8]) -> io::Result<Arc<Node>> {
        check_name(name)?;
        self.writable_upper()?;
        let parent_node = self.node(parent)?;
        if self.dir_state(&parent_node)?.read().resolve(name).is_some() {
            return Err(errno(c::EEXIST));
        }
        self.ensure_upper(&parent_node, Data::All)?;
        Ok(parent_node)
    }

    /// Runs `make` with `parent`'s state locked for writing and `name` checked free again
    /// under the lock (another request may have taken it since `prepare_new_name`).
    fn with_new_name<R>(
        &self,
        parent: &Arc<Node>,
        name: &[u8],
        make: impl FnOnce(&mut DirState, &NewName) -> io::Result<R>,
    ) -> io::Result<R> {
        let upper = self.writable_upper()?;
        let state = self.dir_state(parent)?;
        let mut state = state.write();
        if state.resolve(name).is_some() {
            return Err(errno(c::EEXIST));
        }
        let new = NewName {
            over_whiteout: matches!(state.upper.get(name), Some(UpperEntry::Whiteout)),
            dir: upper.open_dir(&self.upper_rel(parent)?)?,
            name: sys::cstr(name)?,
        };
        make(&mut state, &new)
    }

    /// Makes the new object with `make(dir, name)`, then `finish(dir, name)` (owner, ACLs)
    /// before it shows. In place; or, over a whiteout, in the work dir under a temp name and
    /// then renamed over the whiteout, so the name never shows a half-made object. Nothing
    /// is left behind on failure.
    fn make_entry(
        &self,
        new: &NewName,
        is_dir: bool,
        make: impl FnOnce(BorrowedFd<'_>, &CStr) -> io::Result<()>,
    ) -> io::Result<()> {
        self.make_entry_then(new, is_dir, make, |_, _| Ok(()))
    }

    fn make_entry_then(
        &self,
        new: &NewName,
        is_dir: bool,
        make: impl FnOnce(BorrowedFd<'_>, &CStr) -> io::Result<()>,
        finish: impl FnOnce(BorrowedFd<'_>, &CStr) -> io::Result<()>,
    ) -> io::Result<()> {
        let upper = self.writable_upper()?;
        let tmp;
        let (at, at_name): (BorrowedFd<'_>, &CStr) = if new.over_whiteout {
            tmp = upper.temp_name()?;
            (upper.work(), &tmp)
        } else {
            (new.dir.as_fd(), &new.name)
        };
        make(at, at_name)?;
        let placed = finish(at, at_name).and_then(|()| {
            if new.over_whiteout {
                self.replace_whiteout(upper, at_name, new, is_dir)
            } else {
                Ok(())
            }
        });
        if let Err(e) = placed {
            if new.over_whiteout {
                upper.discard(at_name);
            } else {
                let _ = ops::unlink_at(new.dir.as_fd(), &new.name, is_dir);
            }
            return Err(e);
        }
        Ok(())
    }

    /// Moves the object `tmp` of the work dir over the whiteout `new`.
    fn replace_whiteout(
        &self,
        upper: &Upper,
        tmp: &CStr,
        new: &NewName,
        is_dir: bool,
    ) -> io::Result<()> {
        let (work, dir) = (upper.work(), new.dir.as_fd());
        if is_dir {
            // A directory made where a lower one was deleted must hide the old content.
            let fd = sys::open_beneath(work, tmp, c::O_PATH | c::O_NOFOLLOW, 0)?;
            ovl::set(fd.as_fd(), self.format.ns, Marker::Opaque, b"y")?;
            // A directory cannot replace a whiteout by rename: swap them, drop the whiteout.
            ops::rename_at(work, tmp, dir, &new.name, ops::RENAME_EXCHANGE)?;
            ops::unlink_at(work, tmp, false)
        } else {
            ops::rename_at(work, tmp, dir, &new.name, 0)
        }
    }

    /// Creates one object under the free name `new`, owned by the caller; with whether it is
    /// known to carry no xattr (see `Node::bare`).
    fn create_in_upper(
        &self,
        caller: Caller,
        new: &NewName,
        spec: &NewObject<'_>,
    ) -> io::Result<(Option<File>, bool)> {
        let dir = new.dir.as_fd();
        let parent_st = sys::fstat(dir)?;
        // In a setgid directory the new object takes the directory's group, as on any fs.
        let gid = if parent_st.st_mode & c::S_ISGID != 0 {
            u32::MAX
        } else {
            caller.gid
        };
        let away = new.over_whiteout;
        let how = match spec {
            NewObject::File { mode, umask, .. } => creation_mode(dir, *mode, *umask, false, away),
            NewObject::Dir { mode, umask } => creation_mode(dir, *mode, *umask, true, away),
            NewObject::Node { mode, umask, .. } => creation_mode(dir, *mode, *umask, false, away),
            // Symlinks take no ACL.
            NewObject::Symlink { .. } => Creation {
                mode: 0,
                acls: None,
                inherits_acl: false,
            },
        };
        let (mode, acls) = (how.mode, how.acls);
        let bare = !how.inherits_acl && self.writable_upper()?.new_objects_bare;
        let mut file = None;
        let is_dir = matches!(spec, NewObject::Dir { .. });
        let make = |at: BorrowedFd<'_>, at_name: &CStr| match spec {
            NewObject::File { flags, .. } => {
                let fl =
                    (host_open_flags(*flags) & !c::O_ACCMODE) | c::O_RDWR | c::O_CREAT | c::O_EXCL;
                sys::open_beneath(at, at_name, fl, mode & 0o7777)
                    .map(|fd: OwnedFd| file = Some(File::from(fd)))
            }
            NewObject::Dir { .. } => ops::mkdir_at(at, at_name, mode & 0o7777),
            NewObject::Node { rdev, .. } => ops::mknod_at(at, at_name, mode, *rdev as u64),
            NewObject::Symlink { target } => {
                sys::cstr(target).and_then(|t| ops::symlink_at(&t, at, at_name))
            }
        };
        let finish = |at: BorrowedFd<'_>, at_name: &CStr| {
            let (uid, gid) = self.ownership.stored(caller.uid, gid);
            // The object was made with the daemon's own ids: a chown to those would change
            // nothing and cost a call per created object (untar, make).
            if !made_with_owner(uid, gid) {
                ops::chown_at(at, at_name, uid, gid)?;
            }
            if let Some(inherited) = &acls {
                let fd = sys::open_beneath(at, at_name, c::O_PATH | c::O_NOFOLLOW, 0)?;
                if let Some(access) = &inherited.access {
                    sys::xattr::set(fd.as_fd(), acl::ACCESS_XATTR, access, 0)?;
                }
                if let Some(default) = &inherited.default {
                    sys::xattr::set(fd.as_fd(), acl::DEFAULT_XATTR, default, 0)?;
                }
            }
            Ok(())
        };
        self.make_entry_then(new, is_dir, make, finish)?;
        Ok((file, bare))
    }
}
