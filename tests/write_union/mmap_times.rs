//! A write through a shared mapping changes the upper file's mtime and ctime, and stat must
//! show it (generic/215): kernel overlayfs stats the real file every time, and with FUSE
//! passthrough the mapping is the upper file's own, so no request reaches the daemon.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

use crate::common::rw::{require_root, KernelMount, StrataChild, StrataSpec};
use crate::common::tmp::TempDir;

const LEN: usize = 8192;

/// Times of a file as `stat -c %Y/%Z` asks for them: statx for mtime and ctime only. (A full
/// stat also asks for atime, which the kernel's FUSE client refetches after an mmap; a
/// request for the times alone is answered from its attribute cache while that is valid.)
fn times(path: &Path) -> (i128, i128) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("no NUL");
    let mut stx = std::mem::MaybeUninit::<libc::statx>::zeroed();
    // SAFETY: a NUL-terminated path and a buffer of the size statx writes.
    let rc = unsafe {
        libc::statx(
            libc::AT_FDCWD,
            c.as_ptr(),
            0,
            libc::STATX_MTIME | libc::STATX_CTIME,
            stx.as_mut_ptr(),
        )
    };
    assert_eq!(
        rc,
        0,
        "statx {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
    // SAFETY: statx succeeded and filled the buffer.
    let stx = unsafe { stx.assume_init() };
    let ns = |t: libc::statx_timestamp| t.tv_sec as i128 * 1_000_000_000 + t.tv_nsec as i128;
    (ns(stx.stx_mtime), ns(stx.stx_ctime))
}

/// Writes `data` at offset 0 of `f` through a shared mapping, without msync.
fn write_mapped(f: &File, data: &[u8]) -> *mut libc::c_void {
    // SAFETY: a fresh shared mapping of LEN bytes of an open file of at least LEN bytes.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            LEN,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        )
    };
    assert_ne!(
        p,
        libc::MAP_FAILED,
        "mmap: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: the mapping is LEN bytes long and data is shorter.
    unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), p.cast::<u8>(), data.len()) };
    p
}

/// What stat shows of a file written through a shared mapping: whether mtime and ctime
/// moved while mapped and after munmap and close, and the content read back (its first
/// bytes and its length).
#[derive(Debug, PartialEq)]
struct MappedWrite {
    moved_while_mapped: (bool, bool),
    moved_after_close: (bool, bool),
    content: (Vec<u8>, usize),
}

fn mapped_write(path: &Path) -> MappedWrite {
    let before = times(path);
    // Past the timestamp granularity of the upper fs.
    std::thread::sleep(Duration::from_millis(50));
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open for writing");
    let map = write_mapped(&f, b"mapped");
    let mapped = times(path);
    // SAFETY: the mapping made by write_mapped, LEN bytes long, not used after this.
    assert_eq!(unsafe { libc::munmap(map, LEN) }, 0, "munmap");
    drop(f);
    let closed = times(path);
    let mut content = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut content))
        .expect("read back");
    MappedWrite {
        moved_while_mapped: (mapped.0 > before.0, mapped.1 > before.1),
        moved_after_close: (closed.0 > before.0, closed.1 > before.1),
        content: (content[..8.min(content.len())].to_vec(), content.len()),
    }
}

/// For an upper file (created through the mount) and a lower file (copied up by the open).
fn run_on(mnt: &Path) -> Vec<MappedWrite> {
    let upper_file = mnt.join("new");
    let mut f = File::create(&upper_file).expect("create through the mount");
    f.write_all(&[b'a'; LEN]).expect("write");
    f.sync_all().expect("fsync");
    drop(f);
    // A stat between create and mapping caches the attributes (generic/215 does this).
    times(&upper_file);
    vec![mapped_write(&upper_file), mapped_write(&mnt.join("lower"))]
}

#[test]
fn mapped_write_without_msync_moves_times_like_the_kernel() {
    require_root();
    let dir = TempDir::new("wu-mmap");
    let lower = dir.subdir("lower");
    std::fs::write(lower.join("lower"), [b'l'; LEN]).expect("lower file");
    let layers = [lower];
    let (ku, kw, kmnt) = (dir.subdir("ku"), dir.subdir("kw"), dir.subdir("kmnt"));
    let kernel = {
        let m = KernelMount::mount(&layers, Some((&ku, &kw)), &kmnt, "")
            .unwrap_or_else(|e| panic!("{e}"));
        let r = run_on(&kmnt);
        m.unmount().unwrap_or_else(|e| panic!("{e}"));
        r
    };
    for r in &kernel {
        assert_eq!(
            (r.moved_while_mapped, r.moved_after_close),
            ((true, true), (true, true)),
            "kernel overlayfs on this upper fs"
        );
    }
    let (su, sw, smnt) = (dir.subdir("su"), dir.subdir("sw"), dir.subdir("smnt"));
    let m = StrataChild::start(&StrataSpec {
        layers: layers.to_vec(),
        upper: Some((su, sw)),
        mountpoint: smnt.clone(),
        log: dir.path().join("stratafs.log"),
        extra_args: Vec::new(),
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let strata = run_on(&smnt);
    m.unmount().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(strata, kernel, "stratafs against kernel overlayfs");
}
