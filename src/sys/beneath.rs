//! Opening a path below a directory fd without ever leaving it or following a symlink, at
//! any depth: the one way the daemon reaches an object inside a layer, the upper dir, the work
//! dir, a volume or a bind root.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use super::cstr;

/// Resolution flags for every path walk inside a layer, volume or bind root: the walk must stay
/// beneath the root and may not follow any symlink (a symlink inside a layer is data to show,
/// never a path for the daemon to take).
const RESOLVE_STRICT: u64 =
    libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;

/// The longest path the kernel takes in one call, its NUL included (PATH_MAX).
const PATH_MAX: usize = libc::PATH_MAX as usize;

/// `openat2` confined beneath `dir` without following any symlink. `path` is relative; "." is
/// `dir`. A path of any length is taken: one the kernel would refuse as too long (a deep
/// directory of a layer) is walked in pieces (`open_long_beneath`); a shorter one, the common
/// case, costs the one call.
pub fn open_beneath(
    dir: BorrowedFd<'_>,
    path: &CStr,
    flags: i32,
    mode: u32,
) -> io::Result<OwnedFd> {
    let bytes = path.to_bytes();
    if bytes.len() < PATH_MAX {
        return openat2_strict(dir, path, flags, mode);
    }
    open_long_beneath(dir, bytes, flags, mode)
}

/// Opens a path of PATH_MAX bytes or more below `dir`: each piece, cut at a '/' and shorter
/// than PATH_MAX, is opened (O_PATH) beneath the directory the piece before it reached, with
/// the same strict resolution as every walk, so the whole walk stays beneath `dir` and
/// follows no symlink; the last piece is opened with `flags`.
fn open_long_beneath(
    dir: BorrowedFd<'_>,
    path: &[u8],
    flags: i32,
    mode: u32,
) -> io::Result<OwnedFd> {
    let mut reached: Option<OwnedFd> = None;
    let mut rest = path;
    while rest.len() >= PATH_MAX {
        // The longest start of `rest` that ends before a '/' and fits in one call. A name
        // longer than the limit leaves none: the kernel refuses such a name anyway.
        let cut = rest[..PATH_MAX]
            .iter()
            .rposition(|b| *b == b'/')
            .filter(|i| *i > 0)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENAMETOOLONG))?;
        let at = reached.as_ref().map_or(dir, |fd| fd.as_fd());
        let piece = cstr(&rest[..cut])?;
        reached = Some(openat2_strict(
            at,
            &piece,
            libc::O_PATH | libc::O_DIRECTORY,
            0,
        )?);
        rest = &rest[cut..];
        while let Some(tail) = rest.strip_prefix(b"/") {
            rest = tail;
        }
    }
    let at = reached.as_ref().map_or(dir, |fd| fd.as_fd());
    let last = if rest.is_empty() { &b"."[..] } else { rest };
    openat2_strict(at, &cstr(last)?, flags, mode)
}

/// One `openat2` call with RESOLVE_STRICT; `path` must be shorter than PATH_MAX.
fn openat2_strict(dir: BorrowedFd<'_>, path: &CStr, flags: i32, mode: u32) -> io::Result<OwnedFd> {
    // SAFETY: open_how is plain old data; all-zero is a valid value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.mode = mode as u64;
    how.resolve = RESOLVE_STRICT;
    loop {
        // SAFETY: `how` is a valid open_how of the size passed; `path` is NUL-terminated; the
        // returned fd is fresh and owned by the caller.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir.as_raw_fd(),
                path.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if ret >= 0 {
            // SAFETY: the kernel just returned this fd to us.
            return Ok(unsafe { OwnedFd::from_raw_fd(ret as RawFd) });
        }
        let err = io::Error::last_os_error();
        // openat2 returns EAGAIN when a concurrent rename raced the walk: retry.
        if err.raw_os_error() != Some(libc::EAGAIN) {
            return Err(err);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::ops;

    /// A name of 200 bytes for level `i`.
    fn level(i: usize) -> Vec<u8> {
        let mut n = format!("d{i:02}").into_bytes();
        n.resize(200, b'x');
        n
    }

    /// Makes a chain of `depth` directories below `root` (each relative to the one before, as
    /// the whole path is too long for one call); returns the path and the deepest dir's fd.
    fn chain(root: BorrowedFd<'_>, depth: usize) -> (Vec<u8>, OwnedFd) {
        let mut path = Vec::new();
        let mut fd = open_beneath(root, c".", libc::O_PATH | libc::O_DIRECTORY, 0).unwrap();
        for i in 0..depth {
            let name = cstr(&level(i)).unwrap();
            ops::mkdir_at(fd.as_fd(), &name, 0o755).unwrap();
            fd = open_beneath(fd.as_fd(), &name, libc::O_PATH | libc::O_DIRECTORY, 0).unwrap();
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(&level(i));
        }
        (path, fd)
    }

    #[test]
    fn paths_longer_than_path_max_open_below_the_dir() {
        let tmp = crate::testutil::TempDir::new("beneath-long");
        let root = crate::sys::open_dir_path(tmp.path()).unwrap();
        let (path, deepest) = chain(root.as_fd(), 45);
        assert!(path.len() > 2 * PATH_MAX, "{} bytes", path.len());
        let file = [&path[..], b"/f"].concat();
        let made = open_beneath(
            root.as_fd(),
            &cstr(&file).unwrap(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
            0o600,
        )
        .expect("create at the end of a long path");
        let st = crate::sys::fstat(made.as_fd()).unwrap();
        assert_eq!(
            crate::sys::stat_at(deepest.as_fd(), c"f").unwrap().st_ino,
            st.st_ino
        );
        // Doubled and trailing slashes where the path is cut change nothing.
        let mut slashes: Vec<u8> = path
            .iter()
            .flat_map(|b| {
                if *b == b'/' {
                    &b"//"[..]
                } else {
                    std::slice::from_ref(b)
                }
            })
            .copied()
            .collect();
        slashes.extend_from_slice(b"//");
        let dir = open_beneath(root.as_fd(), &cstr(&slashes).unwrap(), libc::O_PATH, 0).unwrap();
        let want = crate::sys::fstat(deepest.as_fd()).unwrap().st_ino;
        assert_eq!(crate::sys::fstat(dir.as_fd()).unwrap().st_ino, want);
    }

    #[test]
    fn long_paths_never_follow_a_symlink_nor_leave_the_dir() {
        let tmp = crate::testutil::TempDir::new("beneath-guard");
        let root = crate::sys::open_dir_path(tmp.path()).unwrap();
        let (path, _) = chain(root.as_fd(), 30);
        // A symlink at the end of the first piece and one in the last piece.
        let mid = 15;
        let prefix: Vec<u8> = path
            .split(|b| *b == b'/')
            .take(mid)
            .collect::<Vec<_>>()
            .join(&b'/');
        let parent = open_beneath(root.as_fd(), &cstr(&prefix).unwrap(), libc::O_PATH, 0).unwrap();
        ops::symlink_at(c".", parent.as_fd(), c"link").unwrap();
        let deep_link = [&path[..], b"/link/f"].concat();
        let deepest = open_beneath(root.as_fd(), &cstr(&path).unwrap(), libc::O_PATH, 0).unwrap();
        ops::symlink_at(c"/", deepest.as_fd(), c"link").unwrap();
        let through_mid = [&prefix[..], b"/link/", &path[..]].concat();
        for p in [deep_link, through_mid] {
            assert!(p.len() >= PATH_MAX);
            let err = open_beneath(root.as_fd(), &cstr(&p).unwrap(), libc::O_PATH, 0).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::ELOOP), "{err}");
        }
        // Enough ".." to climb above the root, in a path cut into pieces.
        let up = [&path[..], b"/", &b"../".repeat(31)[..], b"etc"].concat();
        let err = open_beneath(root.as_fd(), &cstr(&up).unwrap(), libc::O_PATH, 0).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EXDEV), "{err}");
    }
}
