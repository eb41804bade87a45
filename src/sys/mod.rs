//! The thin syscall layer: every `unsafe` block of stratafs lives under this module.
//!
//! Each wrapper takes and returns owned Rust types (`OwnedFd`, `CString`, `Vec<u8>`) and maps
//! failures to `io::Error`, so the rest of the daemon stays safe code.

mod beneath;
pub mod c;
pub mod dir;
#[cfg(test)]
pub mod heapcount;
pub mod lockfile;
pub mod mountinfo;
pub mod ops;
pub mod splice;
pub mod xattr;

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;

pub use beneath::open_beneath;

/// Converts a byte string to a `CString`, refusing interior NULs (EINVAL, as the kernel would).
pub fn cstr(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn check_size(ret: libc::ssize_t) -> io::Result<usize> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

/// Opens a directory by absolute host path (used for layer, upper and work roots at mount time).
pub fn open_dir_path(path: &std::path::Path) -> io::Result<OwnedFd> {
    let c = cstr(path.as_os_str().as_bytes())?;
    // SAFETY: `c` is NUL-terminated; the fd is owned by the caller.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    check(fd)?;
    // SAFETY: fresh fd from open.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Fills `buf` from the kernel's random pool (getrandom(2)); for names other processes must
/// not be able to predict.
pub fn random_bytes(buf: &mut [u8]) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: `rest` is writable for its length; flags 0 blocks only until the pool is
        // initialised at boot.
        match check_size(unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) }) {
            Ok(n) => done += n,
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The effective user id of the daemon: the owner of everything it creates for itself.
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// The effective group id of the daemon: the group of what it creates outside setgid dirs.
pub fn effective_gid() -> u32 {
    // SAFETY: getegid has no preconditions and cannot fail.
    unsafe { libc::getegid() }
}

/// Opens the parent directory of the directory behind `dir` (O_PATH), following `..` as
/// path lookup does: at a mount root it leads into the mount below.
pub fn open_parent(dir: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    // SAFETY: NUL-terminated name; the fd is fresh and owned by the caller.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c"..".as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    check(fd)?;
    // SAFETY: fresh fd from openat.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The (st_dev, st_ino) of the object behind `fd` and the id of the mount it is reached
/// through (mountinfo's first field): together they fix where `..` of a directory leads.
pub fn mount_identity(fd: BorrowedFd<'_>) -> io::Result<(u64, u64, u64)> {
    let mut stx = std::mem::MaybeUninit::<libc::statx>::zeroed();
    // SAFETY: `stx` is a valid out-buffer for struct statx; the path is an empty C string.
    check(unsafe {
        libc::statx(
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_INO | libc::STATX_MNT_ID,
            stx.as_mut_ptr(),
        )
    })?;
    // SAFETY: statx succeeded and filled the struct.
    let stx = unsafe { stx.assume_init() };
    if stx.stx_mask & libc::STATX_MNT_ID == 0 {
        return Err(io::Error::from_raw_os_error(libc::ENOSYS));
    }
    let dev = libc::makedev(stx.stx_dev_major, stx.stx_dev_minor);
    Ok((dev, stx.stx_ino, stx.stx_mnt_id))
}

/// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`; an empty name stats `dir` itself.
pub fn stat_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<libc::stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::zeroed();
    let flags = if name.is_empty() {
        libc::AT_SYMLINK_NOFOLLOW | libc::AT_EMPTY_PATH
    } else {
        libc::AT_SYMLINK_NOFOLLOW
    };
    // SAFETY: `st` is a valid out-buffer for struct stat; `name` is NUL-terminated.
    check(unsafe { libc::fstatat(dir.as_raw_fd(), name.as_ptr(), st.as_mut_ptr(), flags) })?;
    // SAFETY: fstatat succeeded and filled the struct.
    Ok(unsafe { st.assume_init() })
}

pub fn fstat(fd: BorrowedFd<'_>) -> io::Result<libc::stat> {
    stat_at(fd, c"")
}

/// Reads the target of the symlink `name` in `dir` (empty name: `dir` is an O_PATH fd of the link).
pub fn readlink_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
    // SAFETY: buf is writable for buf.len() bytes; name is NUL-terminated.
    let n = check_size(unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    })?;
    buf.truncate(n);
    Ok(buf)
}

pub fn fstatvfs(fd: BorrowedFd<'_>) -> io::Result<libc::statvfs> {
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: valid out-buffer; fd is open for the duration of the call.
    check(unsafe { libc::fstatvfs(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: fstatvfs succeeded.
    Ok(unsafe { st.assume_init() })
}

pub fn fstatfs_type(fd: BorrowedFd<'_>) -> io::Result<i64> {
    let mut st = std::mem::MaybeUninit::<libc::statfs>::zeroed();
    // SAFETY: valid out-buffer; fd is open.
    check(unsafe { libc::fstatfs(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: fstatfs succeeded.
    Ok(unsafe { st.assume_init() }.f_type)
}

/// Process-level calls used by the daemon launcher.
pub mod process {
    use super::check;
    use std::io;

    pub enum Forked {
        Parent,
        Child,
    }

    /// Forks the process. Only called before any thread is started (the FUSE session has
    /// mounted and completed INIT synchronously, but its worker threads do not exist yet).
    pub fn fork() -> io::Result<Forked> {
        // SAFETY: the process is single-threaded at this point (see above), so the child may run
        // arbitrary code.
        let pid = unsafe { libc::fork() };
        match check(pid)? {
            0 => Ok(Forked::Child),
            _ => Ok(Forked::Parent),
        }
    }

    /// Detaches the daemon from the caller: new session, stdio on /dev/null, so that a caller that
    /// reads our stderr until EOF (podman) is released.
    pub fn detach_stdio() -> io::Result<()> {
        // SAFETY: setsid has no memory-safety preconditions.
        unsafe { libc::setsid() };
        let null = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")?;
        use std::os::fd::AsRawFd;
        for target in 0..3 {
            // SAFETY: dup2 onto the standard descriptors; `null` stays open during the call.
            check(unsafe { libc::dup2(null.as_raw_fd(), target) })?;
        }
        Ok(())
    }

    /// Blocks SIGTERM/SIGINT/SIGHUP in the calling thread (and threads it spawns later), so that a
    /// dedicated thread can receive them with `wait_for_signal`.
    pub fn block_termination_signals() -> io::Result<libc::sigset_t> {
        // SAFETY: sigset manipulation on a local, zero-initialised set.
        unsafe {
            let mut set = std::mem::zeroed::<libc::sigset_t>();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGTERM);
            libc::sigaddset(&mut set, libc::SIGINT);
            libc::sigaddset(&mut set, libc::SIGHUP);
            let ret = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            if ret != 0 {
                return Err(io::Error::from_raw_os_error(ret));
            }
            Ok(set)
        }
    }

    /// Unblocks the signals in `set` for this thread (any pending one is delivered now).
    pub fn unblock_signals(set: &libc::sigset_t) -> io::Result<()> {
        // SAFETY: `set` is a valid sigset; the old mask is not asked for.
        let ret = unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, set, std::ptr::null_mut()) };
        if ret != 0 {
            return Err(io::Error::from_raw_os_error(ret));
        }
        Ok(())
    }

    /// Waits for one of the signals in `set` (which the caller has blocked).
    pub fn wait_for_signal(set: &libc::sigset_t) -> i32 {
        let mut sig = 0;
        // SAFETY: `set` is a valid sigset and `sig` a valid out-parameter.
        unsafe { libc::sigwait(set, &mut sig) };
        sig
    }

    /// Raises the soft open-files limit to the hard limit: the daemon holds one fd per open file.
    pub fn raise_nofile_limit() {
        // SAFETY: getrlimit/setrlimit on a local struct.
        unsafe {
            let mut lim = std::mem::zeroed::<libc::rlimit>();
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
                lim.rlim_cur = lim.rlim_max;
                libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            }
        }
    }

    /// Makes every thread allocate from one malloc arena. glibc gives each thread that meets
    /// contention an arena of its own, and memory freed in one (a directory merge's scratch
    /// space) is reused only by the threads allocating there: with one arena per request
    /// thread the daemon held a third more memory after a walk than it had live.
    pub fn use_one_malloc_arena() {
        #[cfg(target_env = "gnu")]
        // SAFETY: mallopt only sets an allocator parameter; called before threads start.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }

    /// Blocks of this size and more get a mapping of their own (see `map_large_blocks`):
    /// glibc's initial threshold, kept.
    pub const LARGE_BLOCK: usize = 128 * 1024;

    /// Gives every block of `LARGE_BLOCK` bytes and more a mapping of its own, returned to
    /// the system when freed. glibc's default raises this threshold to the largest mapped
    /// block freed so far, so after the first big directory merge every merge's scratch
    /// space (hash tables and stat buffers the size of the directory) came from the heap,
    /// where the nodes made in between pinned it: the daemon's peak after a walk of 51,000
    /// entries went from 29.5 MiB to 24.5 MiB with the threshold fixed.
    pub fn map_large_blocks() {
        #[cfg(target_env = "gnu")]
        // SAFETY: mallopt only sets an allocator parameter; a fixed value also turns off the
        // dynamic threshold.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, LARGE_BLOCK as libc::c_int);
        }
    }

    /// The real uid and gid of this process.
    pub fn ids() -> (u32, u32) {
        // SAFETY: getuid/getgid cannot fail and touch no memory.
        unsafe { (libc::getuid(), libc::getgid()) }
    }

    /// Unmounts `path` (MNT_DETACH when `lazy`).
    pub fn umount(path: &std::path::Path, lazy: bool) -> io::Result<()> {
        use std::os::unix::ffi::OsStrExt;
        let c = super::cstr(path.as_os_str().as_bytes())?;
        let flags = if lazy { libc::MNT_DETACH } else { 0 };
        // SAFETY: `c` is NUL-terminated.
        check(unsafe { libc::umount2(c.as_ptr(), flags) })?;
        Ok(())
    }

    #[cfg(all(test, target_env = "gnu"))]
    mod tests {
        use super::*;

        /// glibc marks a block that has a mapping of its own in the size word before it.
        fn is_mapped(block: &[u8]) -> bool {
            const IS_MMAPPED: usize = 2;
            // SAFETY: a block from malloc is preceded by its chunk header, whose last word
            // is the chunk size and flags (glibc's layout); it is read, never written.
            let size_word = unsafe { (block.as_ptr() as *const usize).sub(1).read_unaligned() };
            size_word & IS_MMAPPED != 0
        }

        #[test]
        fn large_blocks_keep_a_mapping_of_their_own() {
            map_large_blocks();
            // With the default dynamic threshold, freeing this would move the threshold to
            // 16 MiB and put the next block in the heap. (Blocks far above the threshold: a
            // free heap block of that size, which malloc would reuse first, is unlikely to be
            // left by the other tests of this process.)
            drop(std::hint::black_box(vec![1u8; 16 << 20]));
            let block = std::hint::black_box(vec![1u8; 8 << 20]);
            assert!(is_mapped(&block));
        }
    }
}

/// Positioned read into `buf` (used by the non-passthrough read path).
pub fn pread(fd: BorrowedFd<'_>, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    // SAFETY: buf is writable for its length.
    check_size(unsafe {
        libc::pread(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            offset as i64,
        )
    })
}

/// A detached, private copy of the mount at `path`, without the mounts below it (open_tree
/// with OPEN_TREE_CLONE, not recursive): what the kernel's overlayfs does for its layers, so
/// a filesystem mounted inside a layer directory is never entered and the layer's own content
/// under it is what shows. Needs CAP_SYS_ADMIN; callers fall back to a plain open.
pub fn open_tree_clone(path: &std::path::Path) -> io::Result<OwnedFd> {
    const OPEN_TREE_CLONE: libc::c_uint = 1;
    let c = cstr(path.as_os_str().as_bytes())?;
    // SAFETY: `c` is NUL-terminated; the returned fd is fresh and owned by the caller.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            c.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd to us.
    Ok(unsafe { OwnedFd::from_raw_fd(ret as RawFd) })
}
