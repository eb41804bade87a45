//! The writable layer: the upper dir and its work dir, in the kernel overlayfs format.
//!
//! Multi-step changes are prepared in `<workdir>/work` (same filesystem as the upper dir) and
//! put in place with one rename, so a crash never leaves a half-made object visible.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::sys;
use crate::sys::c;
use crate::sys::ops;
use crate::union::private_dir;

pub struct Upper {
    root: OwnedFd,
    work: OwnedFd,
    /// `<workdir>/index`: hard-linked lower files that were copied up, by origin handle (the
    /// kernel's index=on layout), so their other names find the copy.
    index: OwnedFd,
    index_used: std::sync::atomic::AtomicBool,
    /// False for volatile mounts (fsync=0): skip every fsync.
    pub fsync: bool,
    /// Objects made here start with no xattrs (no security label from the host, as the
    /// daemon's fresh work dir shows): a new object of the daemon's is known bare.
    pub new_objects_bare: bool,
    /// The shared whiteout inode (see `make_whiteout`), once made.
    shared_whiteout: Mutex<Option<Arc<OwnedFd>>>,
}

/// Name of the kernel's scratch dir inside the work dir.
const WORK_SUBDIR: &str = "work";
const INDEX_SUBDIR: &str = "index";
/// The whiteout inode every whiteout of this mount links to.
const SHARED_WHITEOUT: &CStr = c"#whiteout";

impl Upper {
    pub fn open(upper: &Path, workdir: &Path, fsync: bool) -> io::Result<Upper> {
        let root = sys::open_dir_path(upper)?;
        let base = sys::open_dir_path(workdir)?;
        let work = private_dir::fresh(base.as_fd(), WORK_SUBDIR).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("{}: {e}", workdir.join(WORK_SUBDIR).display()),
            )
        })?;
        let index = private_dir::kept(base.as_fd(), INDEX_SUBDIR).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("{}: {e}", workdir.join(INDEX_SUBDIR).display()),
            )
        })?;
        let index_reader = sys::open_beneath(index.as_fd(), c".", c::O_RDONLY | c::O_DIRECTORY, 0)?;
        let index_used = !sys::dir::read_all(index_reader)?.is_empty();
        let new_objects_bare = sys::xattr::list(work.as_fd()).is_ok_and(|n| n.is_empty());
        Ok(Upper {
            root,
            work,
            index,
            index_used: std::sync::atomic::AtomicBool::new(index_used),
            fsync,
            new_objects_bare,
            shared_whiteout: Mutex::new(None),
        })
    }

    pub fn index(&self) -> BorrowedFd<'_> {
        self.index.as_fd()
    }

    /// Whether any hard-linked file was copied up (only then do lookups consult the index).
    pub fn index_in_use(&self) -> bool {
        self.index_used.load(Ordering::Relaxed)
    }

    pub fn mark_index_used(&self) {
        self.index_used.store(true, Ordering::Relaxed);
    }

    pub fn root(&self) -> BorrowedFd<'_> {
        self.root.as_fd()
    }

    pub fn work(&self) -> BorrowedFd<'_> {
        self.work.as_fd()
    }

    /// Opens the upper copy of directory `rel` for *at calls.
    pub fn open_dir(&self, rel: &[u8]) -> io::Result<OwnedFd> {
        let c = sys::cstr(rel)?;
        sys::open_beneath(self.root(), &c, c::O_RDONLY | c::O_DIRECTORY, 0)
    }

    pub fn open_path(&self, rel: &[u8]) -> io::Result<OwnedFd> {
        let c = sys::cstr(rel)?;
        sys::open_beneath(self.root(), &c, c::O_PATH | c::O_NOFOLLOW, 0)
    }

    /// A fresh, unpredictable name for a temp object in the work dir.
    pub fn temp_name(&self) -> io::Result<CString> {
        crate::union::tempname::new("tmp")
    }

    /// Creates a whiteout (char 0:0) named `name` in `dir`, where nothing of that name exists.
    ///
    /// Like the kernel, whiteouts are hard links of one shared whiteout inode kept in the work
    /// dir: a link costs far less than allocating a device inode per deleted name. The link is
    /// made from the daemon's own fd of that inode, checked before each use, so no name in the
    /// work dir can substitute another object.
    pub fn make_whiteout(&self, dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
        for _ in 0..3 {
            let shared = self.shared_whiteout()?;
            match ops::link_fd_at(shared.as_fd(), dir, name) {
                Ok(()) => return Ok(()),
                // At its link limit (EMLINK), or no longer linked anywhere (ENOENT): start a
                // fresh one.
                Err(e) if matches!(e.raw_os_error(), Some(c::EMLINK | c::ENOENT)) => {
                    let mut slot = self.shared_whiteout.lock();
                    if slot.as_ref().is_some_and(|s| Arc::ptr_eq(s, &shared)) {
                        *slot = None;
                    }
                }
                Err(_) => break,
            }
        }
        ops::mknod_at(dir, name, c::S_IFCHR, 0)
    }

    /// The shared whiteout inode, made by the daemon itself on first use.
    fn shared_whiteout(&self) -> io::Result<Arc<OwnedFd>> {
        let mut slot = self.shared_whiteout.lock();
        if let Some(fd) = slot.as_ref() {
            if private_dir::is_own_whiteout(&sys::fstat(fd.as_fd())?) {
                return Ok(fd.clone());
            }
            log::warn!(
                "work dir: the shared whiteout was changed by someone else; making a new one"
            );
        }
        let fd = Arc::new(self.new_shared_whiteout()?);
        *slot = Some(fd.clone());
        Ok(fd)
    }

    fn new_shared_whiteout(&self) -> io::Result<OwnedFd> {
        let tmp = self.temp_name()?;
        ops::mknod_at(self.work(), &tmp, c::S_IFCHR, 0)?;
        let made = sys::open_beneath(self.work(), &tmp, c::O_PATH | c::O_NOFOLLOW, 0)
            .and_then(|fd| {
                if private_dir::is_own_whiteout(&sys::fstat(fd.as_fd())?) {
                    Ok(fd)
                } else {
                    Err(io::Error::other(
                        "the new shared whiteout is not a private char 0:0 device",
                    ))
                }
            })
            // Under its well-known name too (replacing any older one), which keeps it linked
            // while no whiteout uses it.
            .and_then(|fd| {
                ops::rename_at(self.work(), &tmp, self.work(), SHARED_WHITEOUT, 0).map(|()| fd)
            });
        if made.is_err() {
            self.discard(&tmp);
        }
        made
    }

    /// Replaces the object `name` in `dir` with a whiteout atomically (the object moves to the
    /// work dir and is removed there).
    pub fn replace_with_whiteout(&self, dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
        let tmp = self.temp_name()?;
        ops::rename_at(
            dir,
            name,
            self.work(),
            &tmp,
            ops::RENAME_WHITEOUT | ops::RENAME_NOREPLACE,
        )?;
        self.discard(&tmp);
        Ok(())
    }

    /// Moves object `name` out of `dir` into the work dir and removes it there.
    pub fn remove_via_work(&self, dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
        let tmp = self.temp_name()?;
        ops::rename_at(dir, name, self.work(), &tmp, ops::RENAME_NOREPLACE)?;
        self.discard(&tmp);
        Ok(())
    }

    /// Removes a temp object of the work dir (and its contents, for directories).
    pub fn discard(&self, tmp: &CStr) {
        if let Err(e) = remove_tree(self.work(), tmp) {
            log::warn!("work dir: cannot remove {tmp:?}: {e}");
        }
    }
}

/// Removes `name` in `dir`, recursively for a directory, never following symlinks.
pub fn remove_tree(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    match ops::unlink_at(dir, name, false) {
        Ok(()) => return Ok(()),
        Err(e) if matches!(e.raw_os_error(), Some(c::EISDIR) | Some(c::EPERM)) => {}
        Err(e) if e.raw_os_error() == Some(c::ENOENT) => return Ok(()),
        Err(e) => return Err(e),
    }
    let sub = sys::open_beneath(dir, name, c::O_RDONLY | c::O_DIRECTORY, 0)?;
    for entry in sys::dir::read_all(sub.try_clone()?)? {
        remove_tree(sub.as_fd(), &sys::cstr(&entry.name)?)?;
    }
    ops::unlink_at(dir, name, true)
}
