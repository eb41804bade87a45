//! The copy of one object (data, metadata, xattrs, origin) into the upper layer, made in the
//! work dir and renamed into place. When and where the union copies a node up (its parents,
//! the index of hard links, metacopy) is `union::copy_up`; a whole tree for a volume is
//! `treecopy`.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use crate::sys;
use crate::sys::c;
use crate::sys::ops;
use crate::union::ovl::{self, Marker};

pub struct CopyOptions<'a> {
    /// Copy the file's data (false: an empty file, for open(O_TRUNC) and truncate(0)).
    pub with_data: bool,
    /// Copy metadata only (the kernel's metacopy format): a sparse file of the right size
    /// marked metacopy, whose data stays in the lower layer until a write.
    pub metacopy: bool,
    pub fsync: bool,
    /// Where the mount writes its markers.
    pub ns: ovl::Namespace,
    /// Where the data is read from when it is not the source object itself (a metacopy
    /// file in a lower layer holds only metadata).
    pub data_from: Option<BorrowedFd<'a>>,
}

/// Copies the object behind `src` (an O_PATH fd) into `dest_dir/name`, atomically: the copy is
/// made complete in `work` and then renamed into place.
pub fn copy_up(
    src: BorrowedFd<'_>,
    work: BorrowedFd<'_>,
    dest_dir: BorrowedFd<'_>,
    name: &CStr,
    opts: &CopyOptions<'_>,
) -> io::Result<()> {
    let st = sys::fstat(src)?;
    let tmp = crate::union::tempname::new("copyup")?;
    let result = make_copy(src, &st, work, &tmp, opts)
        // Nothing is replaced: a whiteout at the name would mean the object is not visible,
        // and then it would not be copied up.
        .and_then(|()| ops::rename_at(work, &tmp, dest_dir, name, ops::RENAME_NOREPLACE));
    if result.is_err() {
        let _ = crate::union::upper::remove_tree(work, &tmp);
    }
    result
}

fn make_copy(
    src: BorrowedFd<'_>,
    st: &c::stat,
    work: BorrowedFd<'_>,
    tmp: &CStr,
    opts: &CopyOptions<'_>,
) -> io::Result<()> {
    match st.st_mode & c::S_IFMT {
        c::S_IFREG => {
            let out = sys::open_beneath(work, tmp, c::O_WRONLY | c::O_CREAT | c::O_EXCL, 0o600)?;
            if opts.metacopy {
                ops::ftruncate(out.as_fd(), st.st_size as u64)?;
                ovl::set(out.as_fd(), opts.ns, Marker::Metacopy, b"")?;
            } else if opts.with_data {
                let input = ops::reopen(opts.data_from.unwrap_or(src), c::O_RDONLY)?;
                copy_data(input.as_fd(), out.as_fd(), st.st_size as u64)?;
            }
            copy_metadata(src, st, out.as_fd())?;
            record_origin(src, out.as_fd(), opts.ns);
            // Copied data must be on disk before the rename makes it the file; a metacopy or
            // an empty copy has no data to lose.
            if opts.fsync && opts.with_data && !opts.metacopy {
                ops::fsync(out.as_fd(), false)?;
            }
            Ok(())
        }
        c::S_IFDIR => {
            ops::mkdir_at(work, tmp, 0o700)?;
            let fd = sys::open_beneath(work, tmp, c::O_PATH | c::O_NOFOLLOW, 0)?;
            copy_metadata(src, st, fd.as_fd())?;
            record_origin(src, fd.as_fd(), opts.ns);
            Ok(())
        }
        c::S_IFLNK => {
            let target = sys::readlink_at(src, c"")?;
            ops::symlink_at(&sys::cstr(&target)?, work, tmp)?;
            let fd = sys::open_beneath(work, tmp, c::O_PATH | c::O_NOFOLLOW, 0)?;
            copy_metadata(src, st, fd.as_fd())?;
            record_origin(src, fd.as_fd(), opts.ns);
            Ok(())
        }
        _ => {
            ops::mknod_at(work, tmp, st.st_mode & c::S_IFMT, st.st_rdev)?;
            let fd = sys::open_beneath(work, tmp, c::O_PATH | c::O_NOFOLLOW, 0)?;
            copy_metadata(src, st, fd.as_fd())?;
            record_origin(src, fd.as_fd(), opts.ns);
            Ok(())
        }
    }
}

/// Records where the copy came from (the kernel's origin xattr): it keeps the object's
/// inode number across remounts, here and under kernel overlayfs.
fn record_origin(src: BorrowedFd<'_>, dst: BorrowedFd<'_>, ns: ovl::Namespace) {
    match ovl::origin_value(src) {
        Ok(v) => {
            if let Err(e) = ovl::set(dst, ns, Marker::Origin, &v) {
                log::debug!("copy-up: cannot record the origin: {e}");
            }
        }
        Err(e) => log::debug!("copy-up: no file handle for the origin: {e}"),
    }
}

/// Data copy: a reflink where the filesystem offers one, else only the data extents are
/// copied, in-kernel, so holes stay holes.
pub fn copy_data(input: BorrowedFd<'_>, out: BorrowedFd<'_>, size: u64) -> io::Result<()> {
    if size > 0 && ops::clone_file(input, out).is_ok() {
        return Ok(());
    }
    let mut pos: u64 = 0;
    while pos < size {
        let data = match ops::lseek(input, pos as i64, c::SEEK_DATA) {
            Ok(d) => d as u64,
            Err(e) if e.raw_os_error() == Some(c::ENXIO) => break,
            Err(_) => pos,
        };
        let hole = ops::lseek(input, data as i64, c::SEEK_HOLE)
            .map(|h| h as u64)
            .unwrap_or(size);
        let mut off = data;
        while off < hole {
            let len = (hole - off).min(1 << 30) as usize;
            let n = match ops::copy_file_range(input, off, out, off, len) {
                Ok(n) => n,
                // Across filesystems (a volume filled through the mount) or where the
                // filesystem has no in-kernel copy: copy through a buffer instead.
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(c::EXDEV | c::EOPNOTSUPP | c::EINVAL | c::ENOSYS)
                    ) =>
                {
                    copy_through_buffer(input, out, off, len)?
                }
                Err(e) => return Err(e),
            };
            if n == 0 {
                break;
            }
            off += n as u64;
        }
        pos = hole;
    }
    ops::ftruncate(out, size)
}

fn copy_through_buffer(
    input: BorrowedFd<'_>,
    out: BorrowedFd<'_>,
    off: u64,
    len: usize,
) -> io::Result<usize> {
    let mut buf = vec![0u8; len.min(1 << 20)];
    let n = sys::pread(input, &mut buf, off)?;
    let mut done = 0;
    while done < n {
        done += ops::pwrite(out, &buf[done..n], off + done as u64)?;
    }
    Ok(n)
}

/// Owner, xattrs, times and mode (mode last: chown clears setuid bits).
pub fn copy_metadata(src: BorrowedFd<'_>, st: &c::stat, dst: BorrowedFd<'_>) -> io::Result<()> {
    ops::chown_at(dst, c"", st.st_uid, st.st_gid)?;
    for name in sys::xattr::list(src)? {
        if ovl::is_private(&name) {
            continue;
        }
        let c = sys::cstr(&name)?;
        if let Some(v) = sys::xattr::get(src, &c)? {
            if let Err(e) = sys::xattr::set(dst, &c, &v, 0) {
                // security.* may be refused by an LSM on the upper fs: log, do not fail.
                log::warn!(
                    "copy-up: cannot copy xattr {}: {e}",
                    String::from_utf8_lossy(&name)
                );
            }
        }
    }
    if st.st_mode & c::S_IFMT != c::S_IFLNK {
        let path = sys::cstr(
            format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&dst)).as_bytes(),
        )?;
        ops::chmod_at(dst, &path, st.st_mode & 0o7777)?;
    }
    ops::utimens_at(
        dst,
        c"",
        (st.st_atime, st.st_atime_nsec),
        (st.st_mtime, st.st_mtime_nsec),
    )
}
