//! Directory-relative file operations for trees deeper than PATH_MAX: the test process never
//! names a whole path below its starting directory (the kernel would refuse it as too long);
//! every call is relative to an open directory, as `openat`, `mkdirat`, `renameat` take it.
//! Failures are raw errnos, so two filesystems compare on exactly how a call failed.

use std::collections::BTreeMap;
use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::sysc::{check, errno_name, last, Sys};

fn c(name: &[u8]) -> CString {
    CString::new(name).expect("test names hold no NUL")
}

/// One outcome as a comparable line: the value, or the errno's name.
pub fn outcome<T: std::fmt::Debug>(r: Sys<T>) -> String {
    match r {
        Ok(v) => format!("{v:?}"),
        Err(e) => errno_name(e),
    }
}

/// An open directory.
pub struct Dir(OwnedFd);

impl Dir {
    /// Opens the directory at `path` (a short path: a mountpoint or a layer root).
    pub fn open(path: &Path) -> Dir {
        let p = c(path.as_os_str().as_bytes());
        // SAFETY: NUL-terminated path; the fd is owned by the Dir.
        let fd = unsafe {
            libc::open(
                p.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        assert!(fd >= 0, "open {}: {}", path.display(), errno_name(last()));
        // SAFETY: fresh fd.
        Dir(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    fn raw(&self) -> libc::c_int {
        self.0.as_raw_fd()
    }

    fn openat(&self, name: &[u8], flags: i32, mode: u32) -> Sys<OwnedFd> {
        let n = c(name);
        // SAFETY: NUL-terminated name; the fd is owned by the caller.
        let fd =
            check(unsafe { libc::openat(self.raw(), n.as_ptr(), flags | libc::O_CLOEXEC, mode) })?;
        // SAFETY: fresh fd.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// The subdirectory `name`, never through a symlink.
    pub fn sub(&self, name: &[u8]) -> Sys<Dir> {
        self.openat(
            name,
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
            0,
        )
        .map(Dir)
    }

    pub fn mkdir(&self, name: &[u8], mode: u32) -> Sys<()> {
        let n = c(name);
        // SAFETY: NUL-terminated name.
        check(unsafe { libc::mkdirat(self.raw(), n.as_ptr(), mode) }).map(|_| ())
    }

    /// mkdir then open: the next level of a chain.
    pub fn mkdir_sub(&self, name: &[u8]) -> Sys<Dir> {
        self.mkdir(name, 0o755)?;
        self.sub(name)
    }

    fn write_with(&self, name: &[u8], flags: i32, data: &[u8]) -> Sys<()> {
        let fd = self.openat(name, libc::O_WRONLY | libc::O_NOFOLLOW | flags, 0o644)?;
        let mut done = 0;
        while done < data.len() {
            let rest = &data[done..];
            // SAFETY: `rest` is readable for its length; the fd is open.
            let n = unsafe { libc::write(fd.as_raw_fd(), rest.as_ptr().cast(), rest.len()) };
            if n < 0 {
                return Err(last());
            }
            done += n as usize;
        }
        Ok(())
    }

    /// Creates `name` (it must not exist) with `data`.
    pub fn create(&self, name: &[u8], data: &[u8]) -> Sys<()> {
        self.write_with(name, libc::O_CREAT | libc::O_EXCL, data)
    }

    pub fn append(&self, name: &[u8], data: &[u8]) -> Sys<()> {
        self.write_with(name, libc::O_APPEND, data)
    }

    pub fn read(&self, name: &[u8]) -> Sys<Vec<u8>> {
        let fd = self.openat(name, libc::O_RDONLY | libc::O_NOFOLLOW, 0)?;
        let mut data = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            // SAFETY: `buf` is writable for its length; the fd is open.
            let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            match n {
                0 => return Ok(data),
                n if n < 0 => return Err(last()),
                n => data.extend_from_slice(&buf[..n as usize]),
            }
        }
    }

    pub fn stat(&self, name: &[u8]) -> Sys<libc::stat> {
        let n = c(name);
        let mut st = std::mem::MaybeUninit::<libc::stat>::zeroed();
        let flags = libc::AT_SYMLINK_NOFOLLOW
            | if name.is_empty() {
                libc::AT_EMPTY_PATH
            } else {
                0
            };
        // SAFETY: `st` is a valid out-buffer; the name is NUL-terminated.
        check(unsafe { libc::fstatat(self.raw(), n.as_ptr(), st.as_mut_ptr(), flags) })?;
        // SAFETY: fstatat filled it.
        Ok(unsafe { st.assume_init() })
    }

    /// "kind mode size nlink" of `name`: what the comparisons look at.
    pub fn describe(&self, name: &[u8]) -> Sys<String> {
        let st = self.stat(name)?;
        Ok(format!(
            "{} {:o} size {} nlink {}",
            crate::ops::kind_name(st.st_mode),
            st.st_mode & 0o7777,
            if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
                0
            } else {
                st.st_size
            },
            if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
                0
            } else {
                st.st_nlink
            },
        ))
    }

    pub fn chmod(&self, name: &[u8], mode: u32) -> Sys<()> {
        let n = c(name);
        // SAFETY: NUL-terminated name.
        check(unsafe { libc::fchmodat(self.raw(), n.as_ptr(), mode, 0) }).map(|_| ())
    }

    pub fn rename(&self, name: &[u8], to: &Dir, newname: &[u8]) -> Sys<()> {
        let (a, b) = (c(name), c(newname));
        // SAFETY: NUL-terminated names; both fds are open.
        check(unsafe { libc::renameat(self.raw(), a.as_ptr(), to.raw(), b.as_ptr()) }).map(|_| ())
    }

    pub fn link(&self, name: &[u8], to: &Dir, newname: &[u8]) -> Sys<()> {
        let (a, b) = (c(name), c(newname));
        // SAFETY: NUL-terminated names; both fds are open.
        check(unsafe { libc::linkat(self.raw(), a.as_ptr(), to.raw(), b.as_ptr(), 0) }).map(|_| ())
    }

    pub fn symlink(&self, target: &[u8], name: &[u8]) -> Sys<()> {
        let (t, n) = (c(target), c(name));
        // SAFETY: NUL-terminated strings.
        check(unsafe { libc::symlinkat(t.as_ptr(), self.raw(), n.as_ptr()) }).map(|_| ())
    }

    pub fn readlink(&self, name: &[u8]) -> Sys<Vec<u8>> {
        let n = c(name);
        let mut buf = vec![0u8; libc::PATH_MAX as usize];
        // SAFETY: `buf` is writable for its length; the name is NUL-terminated.
        let len =
            unsafe { libc::readlinkat(self.raw(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if len < 0 {
            return Err(last());
        }
        buf.truncate(len as usize);
        Ok(buf)
    }

    pub fn unlink(&self, name: &[u8]) -> Sys<()> {
        let n = c(name);
        // SAFETY: NUL-terminated name.
        check(unsafe { libc::unlinkat(self.raw(), n.as_ptr(), 0) }).map(|_| ())
    }

    pub fn rmdir(&self, name: &[u8]) -> Sys<()> {
        let n = c(name);
        // SAFETY: NUL-terminated name.
        check(unsafe { libc::unlinkat(self.raw(), n.as_ptr(), libc::AT_REMOVEDIR) }).map(|_| ())
    }

    /// The entry names, sorted, without "." and "..".
    pub fn names(&self) -> Sys<Vec<Vec<u8>>> {
        let fd = self.openat(b".", libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
        let raw = std::os::fd::IntoRawFd::into_raw_fd(fd);
        // SAFETY: `raw` is an open directory fd; the stream owns it from here and closedir
        // closes it.
        let stream = unsafe { libc::fdopendir(raw) };
        if stream.is_null() {
            let e = last();
            // SAFETY: fdopendir failed, so the fd is still ours to close.
            unsafe { libc::close(raw) };
            return Err(e);
        }
        let mut names = Vec::new();
        loop {
            // SAFETY: `stream` is open; the entry stays valid until the next call.
            let ent = unsafe { libc::readdir(stream) };
            if ent.is_null() {
                break;
            }
            // SAFETY: d_name is NUL-terminated inside the entry just returned.
            let name = unsafe { CStr::from_ptr((*ent).d_name.as_ptr()) }
                .to_bytes()
                .to_vec();
            if name != b"." && name != b".." {
                names.push(name);
            }
        }
        // SAFETY: `stream` is open and not used again.
        unsafe { libc::closedir(stream) };
        names.sort();
        Ok(names)
    }

    /// The /proc path of entry `name` of this directory: short whatever the depth.
    fn proc_path(&self, name: &[u8]) -> CString {
        c(&[format!("/proc/self/fd/{}/", self.raw()).as_bytes(), name].concat())
    }

    /// Sets xattr `attr` of entry `name` (never following a symlink).
    pub fn set_xattr(&self, name: &[u8], attr: &str, value: &[u8]) -> Sys<()> {
        let (path, a) = (self.proc_path(name), c(attr.as_bytes()));
        // SAFETY: NUL-terminated strings; `value` is readable for its length.
        check(unsafe {
            libc::lsetxattr(
                path.as_ptr(),
                a.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        })
        .map(|_| ())
    }

    /// Truncates the regular file `name` to `len` bytes.
    pub fn truncate(&self, name: &[u8], len: i64) -> Sys<()> {
        let fd = self.openat(name, libc::O_WRONLY | libc::O_NOFOLLOW, 0)?;
        // SAFETY: plain call on an open fd.
        check(unsafe { libc::ftruncate(fd.as_raw_fd(), len) }).map(|_| ())
    }

    /// The xattrs of entry `name` (never following a symlink), through this process's
    /// /proc link of the directory: a short path whatever the depth.
    pub fn xattrs(&self, name: &[u8]) -> Sys<BTreeMap<String, Vec<u8>>> {
        let path = self.proc_path(name);
        // SAFETY: a null buffer of size 0 asks for the size.
        let size = unsafe { libc::llistxattr(path.as_ptr(), std::ptr::null_mut(), 0) };
        if size < 0 {
            return Err(last());
        }
        let mut list = vec![0u8; size as usize];
        // SAFETY: `list` is writable for its length.
        let size = unsafe { libc::llistxattr(path.as_ptr(), list.as_mut_ptr().cast(), list.len()) };
        if size < 0 {
            return Err(last());
        }
        list.truncate(size as usize);
        let mut out = BTreeMap::new();
        for attr in list.split(|b| *b == 0).filter(|a| !a.is_empty()) {
            let a = c(attr);
            // SAFETY: a null buffer of size 0 asks for the size.
            let len =
                unsafe { libc::lgetxattr(path.as_ptr(), a.as_ptr(), std::ptr::null_mut(), 0) };
            if len < 0 {
                return Err(last());
            }
            let mut value = vec![0u8; len as usize];
            // SAFETY: `value` is writable for its length.
            let len = unsafe {
                libc::lgetxattr(
                    path.as_ptr(),
                    a.as_ptr(),
                    value.as_mut_ptr().cast(),
                    value.len(),
                )
            };
            if len < 0 {
                return Err(last());
            }
            value.truncate(len as usize);
            out.insert(String::from_utf8_lossy(attr).into_owned(), value);
        }
        Ok(out)
    }
}

/// How a name shows in a report: long names shortened to their start and length.
pub fn show(name: &[u8]) -> String {
    if name.len() > 12 {
        format!("{}…({})", String::from_utf8_lossy(&name[..4]), name.len())
    } else {
        String::from_utf8_lossy(name).into_owned()
    }
}
