//! Extended attributes of objects reached through fds, O_PATH ones included.
//!
//! An fd opened for reading (a directory being merged, an open file) takes the f*xattr calls
//! directly: one syscall with no path walk. An O_PATH fd cannot (the kernel answers EBADF);
//! l*xattr on a path would walk the host tree, so for those the magic link /proc/self/fd/N,
//! which resolves to exactly the object behind the fd (a symlink included), is used instead.
//! It costs a walk through /proc with its revalidations, about 15 times the f*xattr call.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use super::{check, check_size, cstr};

fn proc_path(fd: BorrowedFd<'_>) -> io::Result<CString> {
    cstr(format!("/proc/self/fd/{}", fd.as_raw_fd()).as_bytes())
}

/// The object an xattr call works on: the fd itself, or its magic link for O_PATH fds.
enum Target {
    Fd(libc::c_int),
    Path(CString),
}

impl Target {
    fn get(&self, name: &CStr, buf: &mut [u8]) -> io::Result<usize> {
        let (ptr, len) = (buf.as_mut_ptr().cast(), buf.len());
        // SAFETY: name (and path) are NUL-terminated; buf is writable for len bytes (a null
        // pointer with len 0 is the size query).
        check_size(unsafe {
            match self {
                Target::Fd(fd) => libc::fgetxattr(*fd, name.as_ptr(), ptr, len),
                Target::Path(p) => libc::getxattr(p.as_ptr(), name.as_ptr(), ptr, len),
            }
        })
    }

    fn list(&self, buf: &mut [u8]) -> io::Result<usize> {
        let (ptr, len) = (buf.as_mut_ptr().cast(), buf.len());
        // SAFETY: path is NUL-terminated; buf is writable for len bytes.
        check_size(unsafe {
            match self {
                Target::Fd(fd) => libc::flistxattr(*fd, ptr, len),
                Target::Path(p) => libc::listxattr(p.as_ptr(), ptr, len),
            }
        })
    }

    fn set(&self, name: &CStr, value: &[u8], flags: i32) -> io::Result<()> {
        let (ptr, len) = (value.as_ptr().cast(), value.len());
        // SAFETY: pointers valid for the given lengths.
        check(unsafe {
            match self {
                Target::Fd(fd) => libc::fsetxattr(*fd, name.as_ptr(), ptr, len, flags),
                Target::Path(p) => libc::setxattr(p.as_ptr(), name.as_ptr(), ptr, len, flags),
            }
        })?;
        Ok(())
    }

    fn remove(&self, name: &CStr) -> io::Result<()> {
        // SAFETY: NUL-terminated strings.
        check(unsafe {
            match self {
                Target::Fd(fd) => libc::fremovexattr(*fd, name.as_ptr()),
                Target::Path(p) => libc::removexattr(p.as_ptr(), name.as_ptr()),
            }
        })?;
        Ok(())
    }
}

fn is_ebadf(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EBADF)
}

/// Runs `op` on the fd, and again on its magic link when the fd is an O_PATH one.
fn on_object<T>(fd: BorrowedFd<'_>, op: impl Fn(&Target) -> io::Result<T>) -> io::Result<T> {
    match op(&Target::Fd(fd.as_raw_fd())) {
        Err(e) if is_ebadf(&e) => op(&Target::Path(proc_path(fd)?)),
        other => other,
    }
}

/// Reads xattr `name`; Ok(None) when the object does not have it.
pub fn get(fd: BorrowedFd<'_>, name: &CStr) -> io::Result<Option<Vec<u8>>> {
    on_object(fd, |target| {
        let mut buf = vec![0u8; 256];
        loop {
            match target.get(name, &mut buf) {
                Ok(n) => {
                    buf.truncate(n);
                    return Ok(Some(buf));
                }
                Err(e) if e.raw_os_error() == Some(libc::ENODATA) => return Ok(None),
                Err(e) if e.raw_os_error() == Some(libc::ERANGE) => {
                    let need = target.get(name, &mut [])?;
                    buf.resize(need.max(buf.len() * 2), 0);
                }
                Err(e) => return Err(e),
            }
        }
    })
}

/// Lists xattr names (each without its NUL).
pub fn list(fd: BorrowedFd<'_>) -> io::Result<Vec<Vec<u8>>> {
    let raw = on_object(fd, |target| {
        let mut buf = vec![0u8; 1024];
        loop {
            match target.list(&mut buf) {
                Ok(n) => {
                    buf.truncate(n);
                    return Ok(buf);
                }
                Err(e) if e.raw_os_error() == Some(libc::ERANGE) => {
                    let need = target.list(&mut [])?;
                    buf.resize(need.max(buf.len() * 2), 0);
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(Vec::new()),
                Err(e) => return Err(e),
            }
        }
    })?;
    Ok(raw
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(<[u8]>::to_vec)
        .collect())
}

pub fn set(fd: BorrowedFd<'_>, name: &CStr, value: &[u8], flags: i32) -> io::Result<()> {
    on_object(fd, |target| target.set(name, value, flags))
}

pub fn remove(fd: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    on_object(fd, |target| target.remove(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    /// The same answers through a readable fd (f*xattr) and an O_PATH fd (the magic link).
    #[test]
    fn readable_and_o_path_fds_read_the_same_xattrs() {
        let dir = crate::testutil::TempDir::new("sys-xattr");
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        let readable = std::fs::File::open(&file).unwrap();
        let o_path = crate::sys::open_dir_path(dir.path())
            .and_then(|d| crate::sys::open_beneath(d.as_fd(), c"f", libc::O_PATH, 0))
            .unwrap();
        let name = c"user.stratafs-test";
        set(o_path.as_fd(), name, b"v1", 0).unwrap();
        assert_eq!(get(readable.as_fd(), name).unwrap(), Some(b"v1".to_vec()));
        set(readable.as_fd(), name, &[7u8; 600], 0).unwrap();
        for fd in [readable.as_fd(), o_path.as_fd()] {
            assert_eq!(
                get(fd, name).unwrap(),
                Some(vec![7u8; 600]),
                "grows past 256"
            );
            assert!(list(fd).unwrap().contains(&name.to_bytes().to_vec()));
        }
        remove(readable.as_fd(), name).unwrap();
        assert_eq!(get(o_path.as_fd(), name).unwrap(), None);
        assert_eq!(get(readable.as_fd(), name).unwrap(), None);
    }
}
