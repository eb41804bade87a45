//! Copies a directory tree with its metadata (modes, owners, times, xattrs, symlinks, hard
//! links), never following a symlink: used to fill an empty volume from the image content.

use std::collections::HashMap;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use crate::sys;
use crate::sys::c;
use crate::sys::ops;
use crate::union::copy_object::{copy_data, copy_metadata};

/// Copies the contents of directory `src` into the existing directory `dst`, then gives `dst`
/// the metadata of `src`.
pub fn copy_tree(src: BorrowedFd<'_>, dst: BorrowedFd<'_>) -> io::Result<()> {
    copy_tree_reporting(src, dst, &mut |_| {})
}

/// [`copy_tree`], calling `copied(bytes)` after each object (bytes: a file's size, else 0),
/// for progress reports.
pub fn copy_tree_reporting(
    src: BorrowedFd<'_>,
    dst: BorrowedFd<'_>,
    copied: &mut dyn FnMut(u64),
) -> io::Result<()> {
    let mut links = HashMap::new();
    copy_dir_contents(src, dst, &mut links, copied)?;
    let st = sys::fstat(src)?;
    copy_metadata(src, &st, dst)
}

type LinkMap = HashMap<(u64, u64), (std::os::fd::OwnedFd, CString)>;

fn copy_dir_contents(
    src: BorrowedFd<'_>,
    dst: BorrowedFd<'_>,
    links: &mut LinkMap,
    copied: &mut dyn FnMut(u64),
) -> io::Result<()> {
    let reader = sys::open_beneath(src, c".", c::O_RDONLY | c::O_DIRECTORY, 0)?;
    for entry in sys::dir::read_all(reader)? {
        let name = sys::cstr(&entry.name)?;
        let st = sys::stat_at(src, &name)?;
        let obj = sys::open_beneath(src, &name, c::O_PATH | c::O_NOFOLLOW, 0)?;
        let kind = st.st_mode & c::S_IFMT;
        if kind != c::S_IFDIR && st.st_nlink > 1 {
            if let Some((first_dir, first_name)) = links.get(&(st.st_dev, st.st_ino)) {
                ops::link_at(first_dir.as_fd(), first_name, dst, &name)?;
                continue;
            }
        }
        match kind {
            c::S_IFDIR => {
                ops::mkdir_at(dst, &name, 0o700)?;
                let sub_dst = sys::open_beneath(dst, &name, c::O_RDONLY | c::O_DIRECTORY, 0)?;
                let sub_src = sys::open_beneath(src, &name, c::O_RDONLY | c::O_DIRECTORY, 0)?;
                copy_dir_contents(sub_src.as_fd(), sub_dst.as_fd(), links, copied)?;
                copy_metadata(obj.as_fd(), &st, sub_dst.as_fd())?;
                continue;
            }
            c::S_IFREG => {
                let input = ops::reopen(obj.as_fd(), c::O_RDONLY)?;
                let out =
                    sys::open_beneath(dst, &name, c::O_WRONLY | c::O_CREAT | c::O_EXCL, 0o600)?;
                copy_data(input.as_fd(), out.as_fd(), st.st_size as u64)?;
                copied(st.st_size as u64);
            }
            c::S_IFLNK => {
                let target = sys::readlink_at(obj.as_fd(), c"")?;
                ops::symlink_at(&sys::cstr(&target)?, dst, &name)?;
            }
            _ => ops::mknod_at(dst, &name, kind, st.st_rdev)?,
        }
        let made = sys::open_beneath(dst, &name, c::O_PATH | c::O_NOFOLLOW, 0)?;
        copy_metadata(obj.as_fd(), &st, made.as_fd())?;
        if kind != c::S_IFDIR && st.st_nlink > 1 {
            let dir_copy = sys::open_beneath(dst, c".", c::O_PATH | c::O_DIRECTORY, 0)?;
            links.insert((st.st_dev, st.st_ino), (dir_copy, name));
        }
    }
    Ok(())
}
