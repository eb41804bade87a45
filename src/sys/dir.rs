//! Directory reading with getdents64 semantics through `fdopendir`/`readdir`.

use std::ffi::CStr;
use std::io;
use std::os::fd::{IntoRawFd, OwnedFd};

pub struct RawEntry {
    pub name: Vec<u8>,
    pub d_type: u8,
}

/// Reads every entry of the directory open at `fd` (O_RDONLY|O_DIRECTORY), skipping "." and "..".
/// Consumes the fd.
pub fn read_all(fd: OwnedFd) -> io::Result<Vec<RawEntry>> {
    let raw = fd.into_raw_fd();
    // SAFETY: `raw` is an owned directory fd; on success DIR takes ownership of it.
    let dir = unsafe { libc::fdopendir(raw) };
    if dir.is_null() {
        let err = io::Error::last_os_error();
        // SAFETY: fdopendir failed, so we still own `raw`.
        unsafe { libc::close(raw) };
        return Err(err);
    }
    let mut out = Vec::new();
    let result = loop {
        // SAFETY: errno is thread-local; reset it to tell end-of-directory from an error.
        unsafe { *libc::__errno_location() = 0 };
        // SAFETY: `dir` is a valid DIR* until closedir below.
        let ent = unsafe { libc::readdir64(dir) };
        if ent.is_null() {
            let err = io::Error::last_os_error();
            break if err.raw_os_error().unwrap_or(0) == 0 {
                Ok(())
            } else {
                Err(err)
            };
        }
        // SAFETY: readdir returned a valid dirent whose d_name is NUL-terminated.
        let (name, d_type) = unsafe {
            let e = &*ent;
            (CStr::from_ptr(e.d_name.as_ptr()).to_bytes(), e.d_type)
        };
        if name == b"." || name == b".." {
            continue;
        }
        out.push(RawEntry {
            name: name.to_vec(),
            d_type,
        });
    };
    // SAFETY: `dir` is valid and closed exactly once; this also closes `raw`.
    unsafe { libc::closedir(dir) };
    result.map(|()| out)
}
