//! Modifying calls on the upper layer, each relative to a directory fd.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use super::{check, check_size};

pub fn mknod_at(dir: BorrowedFd<'_>, name: &CStr, mode: u32, rdev: u64) -> io::Result<()> {
    // SAFETY: NUL-terminated name; plain integer arguments.
    check(unsafe { libc::mknodat(dir.as_raw_fd(), name.as_ptr(), mode, rdev) })?;
    Ok(())
}

pub fn mkdir_at(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> io::Result<()> {
    // SAFETY: NUL-terminated name.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode) })?;
    Ok(())
}

pub fn symlink_at(target: &CStr, dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    // SAFETY: NUL-terminated strings.
    check(unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) })?;
    Ok(())
}

pub fn link_at(
    old_dir: BorrowedFd<'_>,
    old: &CStr,
    new_dir: BorrowedFd<'_>,
    new: &CStr,
) -> io::Result<()> {
    // SAFETY: NUL-terminated names; no AT_SYMLINK_FOLLOW, so a symlink is linked itself.
    check(unsafe {
        libc::linkat(
            old_dir.as_raw_fd(),
            old.as_ptr(),
            new_dir.as_raw_fd(),
            new.as_ptr(),
            0,
        )
    })?;
    Ok(())
}

/// Adds the name `new` in `new_dir` for the object behind `fd` (any fd, O_PATH included):
/// the link is made to exactly that inode, whatever name it has now or had when opened.
pub fn link_fd_at(fd: BorrowedFd<'_>, new_dir: BorrowedFd<'_>, new: &CStr) -> io::Result<()> {
    let path = super::cstr(format!("/proc/self/fd/{}", fd.as_raw_fd()).as_bytes())?;
    // SAFETY: NUL-terminated names; AT_SYMLINK_FOLLOW resolves the /proc magic link to the
    // object itself (which needs no CAP_DAC_READ_SEARCH, unlike AT_EMPTY_PATH).
    check(unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            path.as_ptr(),
            new_dir.as_raw_fd(),
            new.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    })?;
    Ok(())
}

pub fn unlink_at(dir: BorrowedFd<'_>, name: &CStr, is_dir: bool) -> io::Result<()> {
    let flags = if is_dir { libc::AT_REMOVEDIR } else { 0 };
    // SAFETY: NUL-terminated name.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) })?;
    Ok(())
}

pub const RENAME_NOREPLACE: u32 = 1;
pub const RENAME_EXCHANGE: u32 = 2;
pub const RENAME_WHITEOUT: u32 = 4;

pub fn rename_at(
    old_dir: BorrowedFd<'_>,
    old: &CStr,
    new_dir: BorrowedFd<'_>,
    new: &CStr,
    flags: u32,
) -> io::Result<()> {
    // SAFETY: NUL-terminated names; renameat2 via the raw syscall (glibc wrapper may be absent).
    let ret = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            old_dir.as_raw_fd(),
            old.as_ptr(),
            new_dir.as_raw_fd(),
            new.as_ptr(),
            flags,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// chown without following a symlink; `u32::MAX` leaves an id unchanged.
pub fn chown_at(dir: BorrowedFd<'_>, name: &CStr, uid: u32, gid: u32) -> io::Result<()> {
    let flags = libc::AT_SYMLINK_NOFOLLOW
        | if name.is_empty() {
            libc::AT_EMPTY_PATH
        } else {
            0
        };
    // SAFETY: NUL-terminated name.
    check(unsafe { libc::fchownat(dir.as_raw_fd(), name.as_ptr(), uid, gid, flags) })?;
    Ok(())
}

/// chmod of `name` in `dir` ("": `dir` itself, an O_PATH fd included), never following a
/// symlink: one fchmodat2 call (Linux 6.6) with no path walk beyond the name. Older kernels
/// (ENOSYS) take an O_PATH fd of the object and chmod through its magic link.
pub fn chmod_nofollow(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> io::Result<()> {
    let flags = libc::AT_SYMLINK_NOFOLLOW
        | if name.is_empty() {
            libc::AT_EMPTY_PATH
        } else {
            0
        };
    // SAFETY: NUL-terminated name; plain integer arguments.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_fchmodat2,
            dir.as_raw_fd(),
            name.as_ptr(),
            mode,
            flags,
        )
    };
    match check(ret as libc::c_int) {
        Ok(_) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
            let obj = if name.is_empty() {
                None
            } else {
                Some(super::open_beneath(
                    dir,
                    name,
                    libc::O_PATH | libc::O_NOFOLLOW,
                    0,
                )?)
            };
            let fd = obj.as_ref().map_or(dir, |o| std::os::fd::AsFd::as_fd(o));
            let path = super::cstr(format!("/proc/self/fd/{}", fd.as_raw_fd()).as_bytes())?;
            chmod_at(fd, &path, mode)
        }
        Err(e) => Err(e),
    }
}

/// chmod of a non-symlink (symlink modes cannot change on Linux).
pub fn chmod_at(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> io::Result<()> {
    // SAFETY: NUL-terminated name.
    check(unsafe { libc::fchmodat(dir.as_raw_fd(), name.as_ptr(), mode, 0) })?;
    Ok(())
}

pub const UTIME_OMIT: i64 = libc::UTIME_OMIT;
pub const UTIME_NOW: i64 = libc::UTIME_NOW;

/// Sets atime/mtime given as (sec, nsec) with UTIME_NOW/UTIME_OMIT allowed in nsec.
pub fn utimens_at(
    dir: BorrowedFd<'_>,
    name: &CStr,
    atime: (i64, i64),
    mtime: (i64, i64),
) -> io::Result<()> {
    let times = [
        libc::timespec {
            tv_sec: atime.0,
            tv_nsec: atime.1,
        },
        libc::timespec {
            tv_sec: mtime.0,
            tv_nsec: mtime.1,
        },
    ];
    let flags = libc::AT_SYMLINK_NOFOLLOW
        | if name.is_empty() {
            libc::AT_EMPTY_PATH
        } else {
            0
        };
    // SAFETY: `times` is an array of two timespecs; name is NUL-terminated.
    check(unsafe { libc::utimensat(dir.as_raw_fd(), name.as_ptr(), times.as_ptr(), flags) })?;
    Ok(())
}

pub fn ftruncate(fd: BorrowedFd<'_>, size: u64) -> io::Result<()> {
    // SAFETY: plain fd call.
    check(unsafe { libc::ftruncate(fd.as_raw_fd(), size as i64) })?;
    Ok(())
}

pub fn fallocate(fd: BorrowedFd<'_>, mode: i32, offset: u64, len: u64) -> io::Result<()> {
    // SAFETY: plain fd call.
    check(unsafe { libc::fallocate(fd.as_raw_fd(), mode, offset as i64, len as i64) })?;
    Ok(())
}

pub fn lseek(fd: BorrowedFd<'_>, offset: i64, whence: i32) -> io::Result<i64> {
    // SAFETY: plain fd call.
    let ret = unsafe { libc::lseek(fd.as_raw_fd(), offset, whence) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(ret)
}

pub fn fsync(fd: BorrowedFd<'_>, data_only: bool) -> io::Result<()> {
    // SAFETY: plain fd calls.
    check(unsafe {
        if data_only {
            libc::fdatasync(fd.as_raw_fd())
        } else {
            libc::fsync(fd.as_raw_fd())
        }
    })?;
    Ok(())
}

pub fn pwrite(fd: BorrowedFd<'_>, data: &[u8], offset: u64) -> io::Result<usize> {
    // SAFETY: data is readable for its length.
    check_size(unsafe {
        libc::pwrite(
            fd.as_raw_fd(),
            data.as_ptr().cast(),
            data.len(),
            offset as i64,
        )
    })
}

pub fn copy_file_range(
    fd_in: BorrowedFd<'_>,
    off_in: u64,
    fd_out: BorrowedFd<'_>,
    off_out: u64,
    len: usize,
) -> io::Result<usize> {
    let mut oi = off_in as i64;
    let mut oo = off_out as i64;
    // SAFETY: offsets are local variables the kernel updates; fds are open.
    check_size(unsafe {
        libc::copy_file_range(
            fd_in.as_raw_fd(),
            &mut oi,
            fd_out.as_raw_fd(),
            &mut oo,
            len,
            0,
        )
    } as libc::ssize_t)
}

/// Sets the process umask (the daemon creates files with the caller's exact mode).
pub fn set_umask(mask: u32) {
    // SAFETY: umask has no failure mode.
    unsafe { libc::umask(mask) };
}

/// Reopens an O_PATH fd with real access flags through its /proc magic link (the object stays
/// the same; no path in any layer is walked again).
pub fn reopen(fd: BorrowedFd<'_>, flags: i32) -> io::Result<std::os::fd::OwnedFd> {
    let path = super::cstr(format!("/proc/self/fd/{}", fd.as_raw_fd()).as_bytes())?;
    // SAFETY: NUL-terminated path; the fd is owned by the caller afterwards.
    let ret = unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC) };
    check(ret)?;
    // SAFETY: fresh fd.
    Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(ret) })
}

/// mount(2) onto the object behind `target` (an O_PATH fd): going through its /proc magic link
/// mounts on exactly that object, so no symlink on the way to it is ever followed.
pub fn mount_on(
    source: Option<&CStr>,
    target: BorrowedFd<'_>,
    fstype: Option<&CStr>,
    flags: libc::c_ulong,
    data: Option<&CStr>,
) -> io::Result<()> {
    let path = super::cstr(format!("/proc/self/fd/{}", target.as_raw_fd()).as_bytes())?;
    let ptr = |c: Option<&CStr>| c.map_or(std::ptr::null(), |c| c.as_ptr());
    // SAFETY: every pointer is either null or a NUL-terminated string alive for the call.
    check(unsafe {
        libc::mount(
            ptr(source),
            path.as_ptr(),
            ptr(fstype),
            flags,
            ptr(data).cast(),
        )
    })?;
    Ok(())
}

/// The filesystem's persistent handle for the object behind `fd` (name_to_handle_at with
/// AT_EMPTY_PATH): (handle type, handle bytes).
pub fn file_handle(fd: BorrowedFd<'_>) -> io::Result<(i32, Vec<u8>)> {
    const MAX_HANDLE: usize = 128;
    #[repr(C)]
    struct Handle {
        bytes: u32,
        kind: i32,
        data: [u8; MAX_HANDLE],
    }
    let mut h = Handle {
        bytes: MAX_HANDLE as u32,
        kind: 0,
        data: [0; MAX_HANDLE],
    };
    let mut mount_id: libc::c_int = 0;
    // SAFETY: `h` has the kernel's struct file_handle layout with room for MAX_HANDLE bytes,
    // as declared in `bytes`; the path is empty with AT_EMPTY_PATH.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_name_to_handle_at,
            fd.as_raw_fd(),
            c"".as_ptr(),
            &mut h as *mut Handle,
            &mut mount_id as *mut libc::c_int,
            libc::AT_EMPTY_PATH,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = (h.bytes as usize).min(MAX_HANDLE);
    Ok((h.kind, h.data[..n].to_vec()))
}

/// Reflinks all of `src` into `dst` (FICLONE): O(1) and shares blocks on filesystems that
/// support it (xfs, btrfs, bcachefs); EOPNOTSUPP/EXDEV/EINVAL elsewhere.
pub fn clone_file(src: BorrowedFd<'_>, dst: BorrowedFd<'_>) -> io::Result<()> {
    const FICLONE: libc::c_ulong = 0x4004_9409;
    // SAFETY: FICLONE takes the source fd as its integer argument; both fds are open.
    check(unsafe { libc::ioctl(dst.as_raw_fd(), FICLONE, src.as_raw_fd()) })?;
    Ok(())
}

/// Flushes the whole filesystem holding `fd` to disk: one call makes a tree written file by
/// file durable before the rename that publishes it.
pub fn syncfs(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: plain fd call.
    check(unsafe { libc::syncfs(fd.as_raw_fd()) })?;
    Ok(())
}

pub fn fchmod(fd: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
    // SAFETY: plain fd call.
    check(unsafe { libc::fchmod(fd.as_raw_fd(), mode) })?;
    Ok(())
}

/// chmod of the object behind any fd (O_PATH included), through its /proc magic link.
pub fn chmod_fd(fd: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
    let path = super::cstr(format!("/proc/self/fd/{}", fd.as_raw_fd()).as_bytes())?;
    chmod_at(fd, &path, mode)
}

/// A device number from its major and minor parts (glibc's encoding).
pub fn makedev(major: u32, minor: u32) -> u64 {
    libc::makedev(major, minor)
}

/// The (major, minor) parts of a device number.
pub fn dev_parts(rdev: u64) -> (u32, u32) {
    (libc::major(rdev), libc::minor(rdev))
}

/// Turns O_DIRECT off on an open file, if it is on (F_SETFL can change it on an open file).
pub fn clear_o_direct(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: F_GETFL on an open fd takes no argument.
    let flags = check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) })?;
    if flags & libc::O_DIRECT == 0 {
        return Ok(());
    }
    // SAFETY: F_SETFL with an int argument on an open fd.
    check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags & !libc::O_DIRECT) })?;
    Ok(())
}
