//! Thin wrappers over the few system calls std does not offer: xattrs, mknod, utimensat.
//! Every call works on the path itself and never follows a final symlink.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

fn cpath(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).expect("path without NUL bytes")
}

fn cname(name: &OsStr) -> CString {
    CString::new(name.as_bytes()).expect("xattr name without NUL bytes")
}

fn check(ret: libc::ssize_t) -> io::Result<usize> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

/// The names of every xattr of `path`, in the order the filesystem gives them.
pub fn list_xattrs(path: &Path) -> io::Result<Vec<OsString>> {
    let p = cpath(path);
    loop {
        // SAFETY: a null buffer with size 0 only asks for the needed size.
        let size = check(unsafe { libc::llistxattr(p.as_ptr(), std::ptr::null_mut(), 0) })?;
        if size == 0 {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; size];
        // SAFETY: buf is valid for writes of buf.len() bytes.
        let got = unsafe { libc::llistxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        match check(got) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf
                    .split(|b| *b == 0)
                    .filter(|n| !n.is_empty())
                    .map(|n| OsString::from_vec(n.to_vec()))
                    .collect());
            }
            // The list grew between the two calls: ask again.
            Err(e) if e.raw_os_error() == Some(libc::ERANGE) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// The value of xattr `name` on `path`, or None if it is not set.
pub fn get_xattr(path: &Path, name: &str) -> io::Result<Option<Vec<u8>>> {
    let p = cpath(path);
    let n = cname(OsStr::new(name));
    loop {
        // SAFETY: a null buffer with size 0 only asks for the needed size.
        let size = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), std::ptr::null_mut(), 0) };
        let size = match check(size) {
            Ok(s) => s,
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut buf = vec![0u8; size];
        // SAFETY: buf is valid for writes of buf.len() bytes.
        let got =
            unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        match check(got) {
            Ok(len) => {
                buf.truncate(len);
                return Ok(Some(buf));
            }
            Err(e) if e.raw_os_error() == Some(libc::ERANGE) => continue,
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => return Ok(None),
            Err(e) => return Err(e),
        }
    }
}

pub fn set_xattr(path: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    let p = cpath(path);
    let n = cname(OsStr::new(name));
    // SAFETY: value is valid for reads of value.len() bytes; both strings are NUL-terminated.
    let ret = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    check(ret as libc::ssize_t).map(|_| ())
}

pub fn remove_xattr(path: &Path, name: &str) -> io::Result<()> {
    let p = cpath(path);
    let n = cname(OsStr::new(name));
    // SAFETY: both strings are NUL-terminated.
    let ret = unsafe { libc::lremovexattr(p.as_ptr(), n.as_ptr()) };
    check(ret as libc::ssize_t).map(|_| ())
}

/// mknod(2): `kind` is one of libc::S_IFCHR, S_IFBLK, S_IFIFO.
pub fn mknod(path: &Path, kind: libc::mode_t, perm: u32, major: u32, minor: u32) -> io::Result<()> {
    let p = cpath(path);
    let dev = libc::makedev(major, minor);
    // SAFETY: p is NUL-terminated; mknod reads nothing else from memory.
    let ret = unsafe { libc::mknod(p.as_ptr(), kind | perm as libc::mode_t, dev) };
    check(ret as libc::ssize_t).map(|_| ())
}

/// Sets atime and mtime (seconds, nanoseconds) of `path` itself, symlinks included.
pub fn set_times(path: &Path, atime: (i64, i64), mtime: (i64, i64)) -> io::Result<()> {
    let p = cpath(path);
    let ts = [
        libc::timespec {
            tv_sec: atime.0,
            tv_nsec: atime.1,
        },
        libc::timespec {
            tv_sec: mtime.0,
            tv_nsec: mtime.1,
        },
    ];
    // SAFETY: ts holds the two timespecs utimensat reads; p is NUL-terminated.
    let ret = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            p.as_ptr(),
            ts.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    check(ret as libc::ssize_t).map(|_| ())
}

/// truncate(2) by path.
pub fn truncate(path: &Path, len: i64) -> io::Result<()> {
    let p = cpath(path);
    // SAFETY: p is NUL-terminated.
    let ret = unsafe { libc::truncate(p.as_ptr(), len) };
    check(ret as libc::ssize_t).map(|_| ())
}

/// Free bytes of the filesystem holding `path` (statvfs(2): free blocks times fragment size).
pub fn free_bytes(path: &Path) -> io::Result<u64> {
    let p = cpath(path);
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: p is NUL-terminated and st is a buffer of the size statvfs writes.
    let ret = unsafe { libc::statvfs(p.as_ptr(), st.as_mut_ptr()) };
    check(ret as libc::ssize_t)?;
    // SAFETY: statvfs succeeded and filled the buffer.
    let st = unsafe { st.assume_init() };
    Ok(st.f_bfree * st.f_frsize)
}

/// Sends signal `sig` to process `pid`.
pub fn send_signal(pid: u32, sig: i32) -> io::Result<()> {
    // SAFETY: kill has no memory-safety preconditions.
    if unsafe { libc::kill(pid as i32, sig) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
