//! The kernel overlayfs xattrs stratafs reads and writes in the upper dir.

use std::os::fd::{AsFd, BorrowedFd};

use crate::sys;

pub const ORIGIN: &std::ffi::CStr = c"trusted.overlay.origin";
pub const METACOPY: &std::ffi::CStr = c"trusted.overlay.metacopy";
pub const NLINK: &std::ffi::CStr = c"trusted.overlay.nlink";

/// The upper file holds metadata only; its data is the lower file's.
pub fn is_metacopy(obj: BorrowedFd<'_>) -> bool {
    matches!(sys::xattr::get(obj, METACOPY), Ok(Some(_)))
}

/// Union metadata that belongs to the layer, not to the file: never copied up as such.
/// Escaped user attributes (`trusted.overlay.overlay.X`) are the user's and are kept.
pub fn is_private(name: &[u8]) -> bool {
    for prefix in [&b"trusted.overlay."[..], b"user.overlay."] {
        if let Some(rest) = name.strip_prefix(prefix) {
            return !rest.starts_with(b"overlay.");
        }
    }
    false
}

/// The upper object was copied up from a lower one (the kernel records an origin handle).
pub fn has_origin(obj: BorrowedFd<'_>) -> bool {
    matches!(sys::xattr::get(obj, ORIGIN), Ok(Some(_)))
        || matches!(sys::xattr::get(obj, c"user.overlay.origin"), Ok(Some(_)))
}

/// The origin value for a lower object, in the kernel's `struct ovl_fb` layout: version 0,
/// magic 0xfb, total length, flags (0: little-endian host), handle type, the lower
/// filesystem's uuid, then the file handle. The uuid is left null, which is what the kernel
/// itself writes when lower and upper share a filesystem (and accepts with uuid=null/auto).
pub fn origin_value(lower: BorrowedFd<'_>) -> std::io::Result<Vec<u8>> {
    let (kind, handle) = sys::ops::file_handle(lower)?;
    let len = 5 + 16 + handle.len();
    if len > u8::MAX as usize || !(0..=255).contains(&kind) {
        return Err(std::io::Error::from_raw_os_error(libc::EOVERFLOW));
    }
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(&[
        0,
        0xfb,
        len as u8,
        if cfg!(target_endian = "big") { 1 } else { 0 },
        kind as u8,
    ]);
    v.extend_from_slice(&[0u8; 16]);
    v.extend_from_slice(&handle);
    Ok(v)
}

/// Adds `delta` to the kernel's `trusted.overlay.nlink` ("U+n"/"U-n": the merged link count
/// relative to the upper inode's) of the index entry `name` in `index`.
pub fn adjust_nlink(index: BorrowedFd<'_>, name: &std::ffi::CStr, delta: i64) {
    let Ok(fd) = sys::open_beneath(index, name, libc::O_PATH | libc::O_NOFOLLOW, 0) else {
        return;
    };
    let current = match sys::xattr::get(fd.as_fd(), NLINK) {
        Ok(Some(v)) => String::from_utf8_lossy(&v)
            .strip_prefix('U')
            .and_then(|d| d.parse::<i64>().ok())
            .unwrap_or(0),
        _ => 0,
    };
    let value = format!("U{:+}", current + delta);
    if let Err(e) = sys::xattr::set(fd.as_fd(), NLINK, value.as_bytes(), 0) {
        log::warn!("index: cannot record the link count: {e}");
    }
}

/// Hex name of an origin value: the name the kernel gives the object's entry in the
/// `<workdir>/index` directory.
pub fn index_name(origin: &[u8]) -> String {
    origin.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_names() {
        assert!(is_private(b"trusted.overlay.origin"));
        assert!(is_private(b"user.overlay.opaque"));
        assert!(!is_private(b"trusted.overlay.overlay.x"));
        assert!(!is_private(b"user.mime"));
        assert!(!is_private(b"security.capability"));
    }

    #[test]
    fn origin_has_the_kernel_layout() {
        let f = std::fs::File::open("/proc/self/exe").unwrap();
        let v = origin_value(std::os::fd::AsFd::as_fd(&f)).unwrap();
        assert_eq!(&v[..2], &[0, 0xfb]);
        assert_eq!(v[2] as usize, v.len());
        assert_eq!(index_name(&[0, 0xfb, 0x1d]), "00fb1d");
    }
}
