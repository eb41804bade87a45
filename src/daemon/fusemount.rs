//! The union's own FUSE mount: made here with mount(2) rather than by fuser, so that the
//! daemon knows which mount is its own. fuser unmounts by path when its session is dropped,
//! and so unmounted whatever was at the path by then: after `umount MNT; stratafs mount ...
//! MNT`, the old daemon took the new mount down. Here a mount is unmounted only while it
//! still shows this session's FUSE connection (its device number), and never once the
//! kernel has ended the session.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::sys;
use crate::sys::c;
use crate::sys::mountinfo::{self, FS_TYPE};
use crate::sys::ops;

#[derive(Debug, Clone, Copy, Default)]
pub struct Flags {
    pub read_only: bool,
    pub nodev: bool,
    pub nosuid: bool,
    pub noexec: bool,
}

impl Flags {
    fn bits(&self) -> c::c_ulong {
        let mut bits = c::MS_NOATIME;
        for (on, bit) in [
            (self.read_only, c::MS_RDONLY),
            (self.nodev, c::MS_NODEV),
            (self.nosuid, c::MS_NOSUID),
            (self.noexec, c::MS_NOEXEC),
        ] {
            if on {
                bits |= bit;
            }
        }
        bits
    }
}

/// This session's mount: where it was made and the device of its FUSE connection.
#[derive(Debug, Clone)]
pub struct OwnMount {
    /// The mountpoint, absolute and free of symlinks.
    pub path: PathBuf,
    /// `major:minor` of the connection, as mountinfo shows it.
    device: String,
    flags: Flags,
}

/// Opens /dev/fuse and mounts a connection on `mountpoint`. Returns the device fd to serve
/// and the mount's identity. EPERM means the caller may not mount (not root, no user
/// namespace): the caller then falls back to fusermount3.
pub fn mount(mountpoint: &Path, fsname: &str, flags: Flags) -> io::Result<(OwnedFd, OwnMount)> {
    // Resolved before mounting: once the mount is there, every stat of its root waits for
    // the session to serve.
    let path = mountpoint.canonicalize()?;
    let target = sys::open_dir_path(&path)?;
    let root_mode = sys::fstat(target.as_fd())?.st_mode & c::S_IFMT;
    let dev = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(c::O_CLOEXEC)
        .open("/dev/fuse")?;
    let (uid, gid) = sys::process::ids();
    let data = format!(
        "fd={},rootmode={root_mode:o},user_id={uid},group_id={gid},default_permissions,allow_other",
        dev.as_raw_fd()
    );
    let cstr = |s: &str| sys::cstr(s.as_bytes());
    ops::mount_on(
        Some(&cstr(fsname)?),
        target.as_fd(),
        Some(&cstr(FS_TYPE)?),
        flags.bits(),
        Some(&cstr(&data)?),
    )?;
    let own = mountinfo::mounts()
        .into_iter()
        .rev()
        .find(|m| m.mount_point == path && m.fs_type == FS_TYPE)
        .map(|m| OwnMount {
            path: path.clone(),
            device: m.device,
            flags,
        });
    match own {
        Some(own) => Ok((OwnedFd::from(dev), own)),
        None => Err(io::Error::other(format!(
            "mounted {}, but the mount table does not show it",
            path.display()
        ))),
    }
}

impl OwnMount {
    /// The identity of a mount made by fusermount3 (the fallback): the topmost FUSE mount at
    /// the path right after it was made.
    pub fn find(mountpoint: &Path, flags: Flags) -> Option<OwnMount> {
        let path = mountpoint.canonicalize().ok()?;
        mountinfo::mounts()
            .into_iter()
            .rev()
            .find(|m| m.mount_point == path)
            .filter(|m| m.fs_type.starts_with("fuse"))
            .map(|m| OwnMount {
                path,
                device: m.device,
                flags,
            })
    }

    /// Where this session's mount shows now (normally only `path`; none once unmounted).
    fn places(&self) -> Vec<PathBuf> {
        mountinfo::mounts()
            .into_iter()
            .filter(|m| m.device == self.device && m.root == Path::new("/"))
            .filter(|m| m.fs_type.starts_with("fuse"))
            .map(|m| m.mount_point)
            .collect()
    }

    /// Unmounts the sub-mounts and this session's mount, wherever it is; a mount made by
    /// someone else at the same path is left alone. Call only while the session is live
    /// (its device number could be reused once the kernel has ended it).
    pub fn unmount(&self) {
        let places = self.places();
        if places.is_empty() {
            log::info!(
                "{}: the mount is gone already: nothing to unmount",
                self.path.display()
            );
        }
        for place in places {
            crate::daemon::submount::detach_all(&place);
            if let Err(e) = sys::process::umount(&place, false) {
                log::warn!("unmount of {} failed ({e}); detaching it", place.display());
                let _ = sys::process::umount(&place, true);
            }
        }
    }

    /// Marks the union read-only for every user (shown as `ro` in /proc/mounts), once the
    /// daemon has placed its sub-mounts through it. Sub-mounts keep their own flags.
    pub fn make_read_only(&self) -> io::Result<()> {
        let target = sys::open_dir_path(&self.path)?;
        let flags = Flags {
            read_only: true,
            ..self.flags
        };
        ops::mount_on(
            None,
            target.as_fd(),
            None,
            c::MS_REMOUNT | c::MS_BIND | flags.bits(),
            None,
        )
    }
}
