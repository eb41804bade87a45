//! The daemon's own directories in the work dir (`work`, `index`) and the shared whiteout:
//! created private whatever the umask, and checked to be the daemon's own and not writable by
//! other users before use. Another user able to put an object there could have it linked or
//! renamed into the upper layer as root.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use crate::sys;
use crate::sys::c;
use crate::sys::ops;

/// Owner-only: what the daemon's own directories get (fuse-overlayfs uses 0700 too; the kernel
/// uses 000, which only root could work with).
const PRIVATE_DIR_MODE: u32 = 0o700;

/// A new, empty private directory `name` in `base`, replacing whatever was there: the work
/// dir's scratch space holds nothing worth keeping across mounts (as in the kernel).
pub fn fresh(base: BorrowedFd<'_>, name: &str) -> io::Result<OwnedFd> {
    let c = sys::cstr(name.as_bytes())?;
    crate::union::upper::remove_tree(base, &c)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot remove the old one: {e}")))?;
    ops::mkdir_at(base, &c, PRIVATE_DIR_MODE)?;
    let fd = sys::open_beneath(base, &c, c::O_PATH | c::O_DIRECTORY, 0)?;
    check_private(&sys::fstat(fd.as_fd())?)?;
    Ok(fd)
}

/// The private directory `name` in `base`, created if missing; kept if it exists (the index
/// outlives mounts). An existing one made writable by others (older versions created it
/// 0777 under the daemon's umask 0) is made private again, with a warning.
pub fn kept(base: BorrowedFd<'_>, name: &str) -> io::Result<OwnedFd> {
    let c = sys::cstr(name.as_bytes())?;
    match ops::mkdir_at(base, &c, PRIVATE_DIR_MODE) {
        Err(e) if e.raw_os_error() != Some(c::EEXIST) => return Err(e),
        _ => {}
    }
    let fd = sys::open_beneath(base, &c, c::O_PATH | c::O_DIRECTORY, 0).map_err(|e| {
        let why = match e.raw_os_error() {
            Some(c::ELOOP) => "is a symlink: remove it".to_string(),
            Some(c::ENOTDIR) => "is not a directory: remove it".to_string(),
            _ => e.to_string(),
        };
        io::Error::new(e.kind(), why)
    })?;
    let st = sys::fstat(fd.as_fd())?;
    check_owner(&st)?;
    if st.st_mode & 0o077 != 0 {
        if st.st_mode & 0o022 != 0 {
            log::warn!(
                "{name} in the work dir was writable by other users (mode {:o}): made private \
                 ({PRIVATE_DIR_MODE:o}); entries put there by others would be trusted",
                st.st_mode & 0o7777
            );
        }
        let path = sys::cstr(format!("/proc/self/fd/{}", fd.as_raw_fd()).as_bytes())?;
        ops::chmod_at(fd.as_fd(), &path, PRIVATE_DIR_MODE)?;
        check_private(&sys::fstat(fd.as_fd())?)?;
    }
    Ok(fd)
}

fn check_owner(st: &c::stat) -> io::Result<()> {
    let me = sys::effective_uid();
    if st.st_uid != me {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "owned by uid {}, not by the daemon (uid {me}): another user may have put \
                 objects in it; check it and remove it",
                st.st_uid
            ),
        ));
    }
    Ok(())
}

fn check_private(st: &c::stat) -> io::Result<()> {
    check_owner(st)?;
    if st.st_mode & c::S_IFMT != c::S_IFDIR || st.st_mode & 0o077 != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "not a private directory (mode {:o}) right after it was made",
                st.st_mode
            ),
        ));
    }
    Ok(())
}

/// The shared whiteout is a char 0:0 device owned by the daemon that no one else may change.
pub fn is_own_whiteout(st: &c::stat) -> bool {
    crate::union::whiteout::is_device_whiteout(st)
        && st.st_uid == sys::effective_uid()
        && st.st_mode & 0o022 == 0
}
