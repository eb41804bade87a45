//! Extended attributes of objects reached through O_PATH fds.
//!
//! An O_PATH fd cannot be used with f*xattr, and l*xattr on a path would walk the host tree. The
//! magic link /proc/self/fd/N resolves to exactly the object behind the fd (a symlink included),
//! so the path-based calls on it never leave the layer.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use super::{check, check_size, cstr};

fn proc_path(fd: BorrowedFd<'_>) -> io::Result<std::ffi::CString> {
    cstr(format!("/proc/self/fd/{}", fd.as_raw_fd()).as_bytes())
}

/// Reads xattr `name`; Ok(None) when the object does not have it.
pub fn get(fd: BorrowedFd<'_>, name: &CStr) -> io::Result<Option<Vec<u8>>> {
    let path = proc_path(fd)?;
    let mut buf = vec![0u8; 256];
    loop {
        // SAFETY: path and name are NUL-terminated; buf is writable for its length.
        let ret = unsafe {
            libc::getxattr(
                path.as_ptr(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        match check_size(ret) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(Some(buf));
            }
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => return Ok(None),
            Err(e) if e.raw_os_error() == Some(libc::ERANGE) => {
                // SAFETY: size query with a null buffer.
                let need = check_size(unsafe {
                    libc::getxattr(path.as_ptr(), name.as_ptr(), std::ptr::null_mut(), 0)
                })?;
                buf.resize(need.max(buf.len() * 2), 0);
            }
            Err(e) => return Err(e),
        }
    }
}

/// Lists xattr names (each without its NUL).
pub fn list(fd: BorrowedFd<'_>) -> io::Result<Vec<Vec<u8>>> {
    let path = proc_path(fd)?;
    let mut buf = vec![0u8; 1024];
    let n = loop {
        // SAFETY: path is NUL-terminated; buf is writable for its length.
        let ret = unsafe { libc::listxattr(path.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        match check_size(ret) {
            Ok(n) => break n,
            Err(e) if e.raw_os_error() == Some(libc::ERANGE) => {
                // SAFETY: size query.
                let need =
                    check_size(unsafe { libc::listxattr(path.as_ptr(), std::ptr::null_mut(), 0) })?;
                buf.resize(need.max(buf.len() * 2), 0);
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        }
    };
    Ok(buf[..n]
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(<[u8]>::to_vec)
        .collect())
}

pub fn set(fd: BorrowedFd<'_>, name: &CStr, value: &[u8], flags: i32) -> io::Result<()> {
    let path = proc_path(fd)?;
    // SAFETY: pointers valid for the given lengths.
    check(unsafe {
        libc::setxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    })?;
    Ok(())
}

pub fn remove(fd: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    let path = proc_path(fd)?;
    // SAFETY: NUL-terminated strings.
    check(unsafe { libc::removexattr(path.as_ptr(), name.as_ptr()) })?;
    Ok(())
}
