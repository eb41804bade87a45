//! Thin libc wrappers for the operation executor: each returns the raw errno on failure, so two
//! filesystems can be compared on exactly how an operation failed.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

pub type Sys<T> = Result<T, i32>;

fn c(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).expect("test paths hold no NUL")
}

/// The errno of the call that just failed.
pub fn last() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// A call's int return: the errno when it is negative.
pub fn check(ret: libc::c_int) -> Sys<libc::c_int> {
    if ret < 0 {
        Err(last())
    } else {
        Ok(ret)
    }
}

fn check_size(ret: libc::ssize_t) -> Sys<usize> {
    if ret < 0 {
        Err(last())
    } else {
        Ok(ret as usize)
    }
}

/// An open file descriptor, closed on drop.
pub struct Fd(libc::c_int);

impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: we own this fd and close it exactly once.
        unsafe { libc::close(self.0) };
    }
}

impl Fd {
    pub fn close(self) -> Sys<()> {
        let fd = self.0;
        std::mem::forget(self);
        // SAFETY: we own this fd; forget() above keeps Drop from closing it again.
        check(unsafe { libc::close(fd) }).map(|_| ())
    }
}

pub fn open(path: &Path, flags: i32, mode: u32) -> Sys<Fd> {
    let p = c(path);
    // SAFETY: NUL-terminated path; the returned fd is owned by the Fd.
    check(unsafe { libc::open(p.as_ptr(), flags | libc::O_CLOEXEC, mode) }).map(Fd)
}

pub fn write_all_at(fd: &Fd, mut off: Option<u64>, mut data: &[u8]) -> Sys<()> {
    while !data.is_empty() {
        // SAFETY: the buffer is valid for data.len() bytes.
        let n = check_size(unsafe {
            match off {
                Some(o) => libc::pwrite(fd.0, data.as_ptr().cast(), data.len(), o as i64),
                None => libc::write(fd.0, data.as_ptr().cast(), data.len()),
            }
        })?;
        if n == 0 {
            return Err(libc::EIO);
        }
        data = &data[n..];
        off = off.map(|o| o + n as u64);
    }
    Ok(())
}

pub fn read_all(fd: &Fd) -> Sys<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        // SAFETY: the buffer is valid for buf.len() bytes.
        let n = check_size(unsafe { libc::read(fd.0, buf.as_mut_ptr().cast(), buf.len()) })?;
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n]);
    }
}

/// The whole file from offset 0, whatever the fd's position.
pub fn pread_all(fd: &Fd) -> Sys<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        // SAFETY: the buffer is valid for buf.len() bytes.
        let n = check_size(unsafe {
            libc::pread(fd.0, buf.as_mut_ptr().cast(), buf.len(), out.len() as i64)
        })?;
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n]);
    }
}

pub fn fstat(fd: &Fd) -> Sys<libc::stat> {
    // SAFETY: stat is plain old data; fstat fills it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid fd and out pointer.
    check(unsafe { libc::fstat(fd.0, &mut st) })?;
    Ok(st)
}

pub fn lstat(path: &Path) -> Sys<libc::stat> {
    let p = c(path);
    // SAFETY: stat is plain old data; lstat fills it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: NUL-terminated path and valid out pointer.
    check(unsafe { libc::lstat(p.as_ptr(), &mut st) })?;
    Ok(st)
}

pub fn truncate(path: &Path, size: u64) -> Sys<()> {
    let p = c(path);
    // SAFETY: NUL-terminated path.
    check(unsafe { libc::truncate(p.as_ptr(), size as i64) }).map(|_| ())
}

pub fn chmod(path: &Path, mode: u32) -> Sys<()> {
    let p = c(path);
    // SAFETY: NUL-terminated path.
    check(unsafe { libc::chmod(p.as_ptr(), mode) }).map(|_| ())
}

pub fn lchown(path: &Path, uid: u32, gid: u32) -> Sys<()> {
    let p = c(path);
    // SAFETY: NUL-terminated path.
    check(unsafe { libc::lchown(p.as_ptr(), uid, gid) }).map(|_| ())
}

/// Sets atime and mtime of `path` itself (never a symlink's target).
pub fn lutimes(path: &Path, atime: i64, mtime: i64) -> Sys<()> {
    let p = c(path);
    let times = [
        libc::timespec {
            tv_sec: atime,
            tv_nsec: 0,
        },
        libc::timespec {
            tv_sec: mtime,
            tv_nsec: 0,
        },
    ];
    // SAFETY: NUL-terminated path and a two-element timespec array.
    check(unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            p.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map(|_| ())
}

pub const RENAME_NOREPLACE: u32 = 1;
pub const RENAME_EXCHANGE: u32 = 2;

/// renameat2(2), called directly (glibc wrappers vary by version).
pub fn rename2(from: &Path, to: &Path, flags: u32) -> Sys<()> {
    let (a, b) = (c(from), c(to));
    // SAFETY: NUL-terminated paths; AT_FDCWD for both directories.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            flags,
        )
    };
    if ret < 0 {
        Err(last())
    } else {
        Ok(())
    }
}

pub fn unlink(path: &Path) -> Sys<()> {
    let p = c(path);
    // SAFETY: NUL-terminated path.
    check(unsafe { libc::unlink(p.as_ptr()) }).map(|_| ())
}

pub fn rmdir(path: &Path) -> Sys<()> {
    let p = c(path);
    // SAFETY: NUL-terminated path.
    check(unsafe { libc::rmdir(p.as_ptr()) }).map(|_| ())
}

pub fn mkdir(path: &Path, mode: u32) -> Sys<()> {
    let p = c(path);
    // SAFETY: NUL-terminated path.
    check(unsafe { libc::mkdir(p.as_ptr(), mode) }).map(|_| ())
}

pub fn link(from: &Path, to: &Path) -> Sys<()> {
    let (a, b) = (c(from), c(to));
    // SAFETY: NUL-terminated paths.
    check(unsafe { libc::link(a.as_ptr(), b.as_ptr()) }).map(|_| ())
}

pub fn symlink(target: &str, path: &Path) -> Sys<()> {
    let t = CString::new(target).expect("no NUL in a symlink target");
    let p = c(path);
    // SAFETY: NUL-terminated strings.
    check(unsafe { libc::symlink(t.as_ptr(), p.as_ptr()) }).map(|_| ())
}

pub fn mknod(path: &Path, mode: u32, dev: u64) -> Sys<()> {
    let p = c(path);
    // SAFETY: NUL-terminated path; plain integers.
    check(unsafe { libc::mknod(p.as_ptr(), mode, dev) }).map(|_| ())
}

pub fn lsetxattr(path: &Path, name: &str, value: &[u8]) -> Sys<()> {
    let p = c(path);
    let n = CString::new(name).expect("no NUL in an xattr name");
    // SAFETY: NUL-terminated strings; value valid for its length.
    check(unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })
    .map(|_| ())
}

pub fn lremovexattr(path: &Path, name: &str) -> Sys<()> {
    let p = c(path);
    let n = CString::new(name).expect("no NUL in an xattr name");
    // SAFETY: NUL-terminated strings.
    check(unsafe { libc::lremovexattr(p.as_ptr(), n.as_ptr()) }).map(|_| ())
}

/// All xattr names of `path` itself.
pub fn llistxattr(path: &Path) -> Sys<Vec<Vec<u8>>> {
    let p = c(path);
    let mut buf = vec![0u8; 4096];
    loop {
        // SAFETY: NUL-terminated path; buffer valid for its length.
        let n = unsafe { libc::llistxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            buf.truncate(n as usize);
            return Ok(buf
                .split(|b| *b == 0)
                .filter(|s| !s.is_empty())
                .map(|s| s.to_vec())
                .collect());
        }
        match last() {
            libc::ERANGE => buf.resize(buf.len() * 4, 0),
            e => return Err(e),
        }
    }
}

pub fn lgetxattr(path: &Path, name: &[u8]) -> Sys<Vec<u8>> {
    let p = c(path);
    let n = CString::new(name).expect("no NUL in an xattr name");
    let mut buf = vec![0u8; 4096];
    loop {
        // SAFETY: NUL-terminated strings; buffer valid for its length.
        let r =
            unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if r >= 0 {
            buf.truncate(r as usize);
            return Ok(buf);
        }
        match last() {
            libc::ERANGE => buf.resize(buf.len() * 4, 0),
            e => return Err(e),
        }
    }
}

/// A readable name for an errno value, for reports.
pub fn errno_name(e: i32) -> String {
    let name = match e {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EIO => "EIO",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::EACCES => "EACCES",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::EXDEV => "EXDEV",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::EFBIG => "EFBIG",
        libc::ENOSPC => "ENOSPC",
        libc::EROFS => "EROFS",
        libc::EMLINK => "EMLINK",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::ENOTEMPTY => "ENOTEMPTY",
        libc::ELOOP => "ELOOP",
        libc::ENODATA => "ENODATA",
        libc::ENOTSUP => "ENOTSUP",
        libc::ENOTCONN => "ENOTCONN",
        libc::ENXIO => "ENXIO",
        libc::ETXTBSY => "ETXTBSY",
        libc::ERANGE => "ERANGE",
        libc::ESPIPE => "ESPIPE",
        libc::ENOSYS => "ENOSYS",
        _ => return format!("errno {e}"),
    };
    name.to_string()
}
