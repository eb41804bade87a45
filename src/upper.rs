//! The writable layer: the upper dir and its work dir, in the kernel overlayfs format.
//!
//! Multi-step changes are prepared in `<workdir>/work` (same filesystem as the upper dir) and
//! put in place with one rename, so a crash never leaves a half-made object visible.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::sys;
use crate::sys::ops;

pub struct Upper {
    root: OwnedFd,
    work: OwnedFd,
    /// `<workdir>/index`: hard-linked lower files that were copied up, by origin handle (the
    /// kernel's index=on layout), so their other names find the copy.
    index: OwnedFd,
    index_used: std::sync::atomic::AtomicBool,
    /// False for volatile mounts (fsync=0): skip every fsync.
    pub fsync: bool,
    counter: AtomicU64,
}

/// Name of the kernel's scratch dir inside the work dir.
const WORK_SUBDIR: &str = "work";
const INDEX_SUBDIR: &str = "index";
/// The whiteout inode every whiteout of this mount links to.
const SHARED_WHITEOUT: &CStr = c"#whiteout";

impl Upper {
    pub fn open(upper: &Path, workdir: &Path, fsync: bool) -> io::Result<Upper> {
        let root = sys::open_dir_path(upper)?;
        let work_path = workdir.join(WORK_SUBDIR);
        match std::fs::create_dir(&work_path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        let work = sys::open_dir_path(&work_path)?;
        let index_path = workdir.join(INDEX_SUBDIR);
        match std::fs::create_dir(&index_path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        let index = sys::open_dir_path(&index_path)?;
        let index_reader =
            sys::open_beneath(index.as_fd(), c".", libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
        let index_used = !sys::dir::read_all(index_reader)?.is_empty();
        let upper = Upper {
            root,
            work,
            index,
            index_used: std::sync::atomic::AtomicBool::new(index_used),
            fsync,
            counter: AtomicU64::new(0),
        };
        upper.clean_work()?;
        Ok(upper)
    }

    /// Removes what an interrupted operation left in the work dir (never visible in the union).
    fn clean_work(&self) -> io::Result<()> {
        let dir = self.open_work_dir()?;
        for entry in sys::dir::read_all(dir.try_clone()?)? {
            let name = sys::cstr(&entry.name)?;
            if let Err(e) = remove_tree(dir.as_fd(), &name) {
                log::warn!(
                    "work dir: cannot remove leftover {:?}: {e}",
                    String::from_utf8_lossy(&entry.name)
                );
            }
        }
        Ok(())
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

    fn open_work_dir(&self) -> io::Result<OwnedFd> {
        sys::open_beneath(self.work(), c".", libc::O_RDONLY | libc::O_DIRECTORY, 0)
    }

    /// Opens the upper copy of directory `rel` for *at calls.
    pub fn open_dir(&self, rel: &[u8]) -> io::Result<OwnedFd> {
        let c = sys::cstr(rel)?;
        sys::open_beneath(self.root(), &c, libc::O_RDONLY | libc::O_DIRECTORY, 0)
    }

    pub fn open_path(&self, rel: &[u8]) -> io::Result<OwnedFd> {
        let c = sys::cstr(rel)?;
        sys::open_beneath(self.root(), &c, libc::O_PATH | libc::O_NOFOLLOW, 0)
    }

    /// A fresh name for a temp object in the work dir.
    pub fn temp_name(&self) -> CString {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        sys::cstr(format!("#{:x}-{n}", std::process::id()).as_bytes())
            .expect("no NUL in a formatted name")
    }

    /// Creates a whiteout (char 0:0) named `name` in `dir`, where nothing of that name exists.
    ///
    /// Like the kernel, whiteouts are hard links of one shared whiteout inode kept in the work
    /// dir: a link costs far less than allocating a device inode per deleted name.
    pub fn make_whiteout(&self, dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
        for _ in 0..3 {
            match ops::link_at(self.work(), SHARED_WHITEOUT, dir, name) {
                Ok(()) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => self.new_shared_whiteout()?,
                // The shared inode is at its link limit: start a fresh one.
                Err(e) if e.raw_os_error() == Some(libc::EMLINK) => {
                    let _ = ops::unlink_at(self.work(), SHARED_WHITEOUT, false);
                    self.new_shared_whiteout()?;
                }
                Err(_) => break,
            }
        }
        ops::mknod_at(dir, name, libc::S_IFCHR, 0)
    }

    fn new_shared_whiteout(&self) -> io::Result<()> {
        let tmp = self.temp_name();
        ops::mknod_at(self.work(), &tmp, libc::S_IFCHR, 0)?;
        match ops::rename_at(
            self.work(),
            &tmp,
            self.work(),
            SHARED_WHITEOUT,
            ops::RENAME_NOREPLACE,
        ) {
            // Another thread made it first: use theirs.
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                let _ = ops::unlink_at(self.work(), &tmp, false);
                Ok(())
            }
            r => r,
        }
    }

    /// Replaces the object `name` in `dir` with a whiteout atomically (the object moves to the
    /// work dir and is removed there).
    pub fn replace_with_whiteout(&self, dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
        let tmp = self.temp_name();
        ops::rename_at(dir, name, self.work(), &tmp, ops::RENAME_WHITEOUT)?;
        self.discard(&tmp);
        Ok(())
    }

    /// Moves object `name` out of `dir` into the work dir and removes it there.
    pub fn remove_via_work(&self, dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
        let tmp = self.temp_name();
        ops::rename_at(dir, name, self.work(), &tmp, 0)?;
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
        Err(e) if matches!(e.raw_os_error(), Some(libc::EISDIR) | Some(libc::EPERM)) => {}
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
        Err(e) => return Err(e),
    }
    let sub = sys::open_beneath(dir, name, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    for entry in sys::dir::read_all(sub.try_clone()?)? {
        remove_tree(sub.as_fd(), &sys::cstr(&entry.name)?)?;
    }
    ops::unlink_at(dir, name, true)
}
