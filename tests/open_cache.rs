//! The open path keeps a lower file's passthrough backing across opens, so that a read-only
//! open of a lower file the kernel has opened before costs the daemon no system call. What
//! that must not change, against kernel overlayfs on the same machine:
//! - a later open sees the upper file once a writer copied the file up, and the file keeps
//!   its inode number across that copy-up;
//! - a file opened before the copy-up keeps reading what it read;
//! - O_DIRECT and mmap reads of a lower file read its data;
//! - the space of an unlinked file comes back at the unlink, however often it was read
//!   (nothing kept may hold an upper file).

mod common;

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use common::procfds::{io_fds_on, wait_closed_by};
use common::rw::{require_root, KernelMount, StrataChild, StrataSpec, Tmpfs};
use common::tmp::TempDir;

/// One writable mount's dirs: the lower layer is shared, upper and work are its own.
struct Dirs {
    upper: PathBuf,
    work: PathBuf,
    mnt: PathBuf,
}

fn dirs(scratch: &TempDir, upper_root: &Path, tag: &str) -> Dirs {
    let upper = upper_root.join(format!("{tag}-upper"));
    let work = upper_root.join(format!("{tag}-work"));
    std::fs::create_dir_all(&upper).expect("mkdir upper");
    std::fs::create_dir_all(&work).expect("mkdir work");
    Dirs {
        upper,
        work,
        mnt: scratch.subdir(&format!("{tag}-mnt")),
    }
}

fn start_stratafs(scratch: &TempDir, lower: &Path, d: &Dirs) -> StrataChild {
    StrataChild::start(&StrataSpec {
        layers: vec![lower.to_path_buf()],
        upper: Some((d.upper.clone(), d.work.clone())),
        mountpoint: d.mnt.clone(),
        log: scratch.path().join("stratafs.log"),
        extra_args: Vec::new(),
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

/// Kernel overlayfs in the format stratafs writes: chmod copies up metadata only.
fn mount_kernel(lower: &Path, d: &Dirs) -> KernelMount {
    KernelMount::mount(
        &[lower.to_path_buf()],
        Some((&d.upper, &d.work)),
        &d.mnt,
        "redirect_dir=on,index=on,metacopy=on",
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

/// Runs `story` on kernel overlayfs, then on stratafs, each over `lower` with an upper of its
/// own under `scratch`; returns (kernel, stratafs). Each mount is gone before the next starts.
fn on_kernel_then_stratafs<T>(
    scratch: &TempDir,
    lower: &Path,
    story: impl Fn(&Path) -> T,
) -> (T, T) {
    let k = dirs(scratch, scratch.path(), "k");
    let kernel = {
        let m = mount_kernel(lower, &k);
        let seen = story(&k.mnt);
        m.unmount().expect("unmount kernel overlay");
        seen
    };
    let s = dirs(scratch, scratch.path(), "s");
    let m = start_stratafs(scratch, lower, &s);
    let strata = story(&s.mnt);
    m.unmount().expect("clean unmount");
    (kernel, strata)
}

fn read(path: &Path) -> String {
    let mut s = String::new();
    File::open(path)
        .and_then(|mut f| f.read_to_string(&mut s))
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    s
}

fn append(path: &Path, data: &[u8]) {
    OpenOptions::new()
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(data))
        .unwrap_or_else(|e| panic!("append to {}: {e}", path.display()));
}

/// A lower file read before is opened again with no fd of the daemon's on it: the open is
/// served from the kept backing (the kernel reads through its own backing file).
#[test]
fn reopen_of_a_read_lower_file_holds_no_daemon_fd() {
    require_root();
    let scratch = TempDir::new("open-cache-fd");
    let lower = scratch.subdir("lower");
    std::fs::write(lower.join("f"), b"lower data\n").expect("lower file");
    let d = dirs(&scratch, scratch.path(), "s");
    let m = start_stratafs(&scratch, &lower, &d);
    let pid = m.pid().expect("daemon pid");
    let f = d.mnt.join("f");
    assert_eq!(read(&f), "lower data\n");
    wait_closed_by(pid, &lower.join("f"));
    let held = File::open(&f).expect("open again");
    assert_eq!(
        io_fds_on(pid, &lower.join("f")),
        0,
        "the daemon opened the lower file again for a read-only open"
    );
    let mut buf = [0u8; 64];
    let n = held.read_at(&mut buf, 0).expect("read the reopened file");
    assert_eq!(&buf[..n], b"lower data\n");
    // lseek(SEEK_DATA) reaches the daemon, which must then open the file itself.
    // SAFETY: lseek on an fd this test holds open.
    let pos = unsafe { libc::lseek(std::os::fd::AsRawFd::as_raw_fd(&held), 3, libc::SEEK_DATA) };
    assert_eq!(
        pos,
        3,
        "lseek(SEEK_DATA): {}",
        std::io::Error::last_os_error()
    );
    drop(held);
    m.unmount().expect("clean unmount");
}

/// What a sequence of opens around a copy-up sees, on one mount; and what a file opened
/// before the copy-up reads after it.
fn copy_up_story(mnt: &Path) -> (Vec<String>, String) {
    let mut log = Vec::new();
    let f = mnt.join("f");
    // Read twice (the second open reuses what the first kept), then copied up by a writer.
    log.push(read(&f));
    log.push(read(&f));
    let ino_before = std::fs::metadata(&f).expect("stat f").ino();
    append(&f, b"+new\n");
    log.push(format!("after copy-up: {}", read(&f)));
    let ino_after = std::fs::metadata(&f).expect("stat f").ino();
    log.push(format!("same inode: {}", ino_before == ino_after));
    // A new open after a copy-up by a writer sees the write, also while a file opened before
    // the copy-up is still open.
    let g = mnt.join("g");
    log.push(read(&g));
    let before = File::open(&g).expect("open g");
    append(&g, b"+new\n");
    let mut buf = [0u8; 64];
    let n = before.read_at(&mut buf, 0).expect("read g opened before");
    let opened_before = String::from_utf8_lossy(&buf[..n]).into_owned();
    log.push(format!("opened after: {}", read(&g)));
    drop(before);
    log.push(format!("after close: {}", read(&g)));
    // Truncated by an O_TRUNC open after reads: the next read-only open sees it empty.
    let h = mnt.join("h");
    log.push(read(&h));
    OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&h)
        .expect("open h with O_TRUNC");
    log.push(format!("truncated: {:?}", read(&h)));
    // Copied up by truncate(2) and by chmod(2) (metadata only where the format allows it):
    // the next read-only open reads the copy.
    let t = mnt.join("t");
    log.push(read(&t));
    let path = std::ffi::CString::new(t.as_os_str().as_encoded_bytes()).expect("no NUL");
    // SAFETY: truncate(2) of a NUL-terminated path.
    let rc = unsafe { libc::truncate(path.as_ptr(), 3) };
    assert_eq!(rc, 0, "truncate: {}", std::io::Error::last_os_error());
    log.push(format!("truncate(2): {:?}", read(&t)));
    let c = mnt.join("c");
    log.push(read(&c));
    std::fs::set_permissions(&c, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod c");
    log.push(format!("chmod: {:?}", read(&c)));
    append(&c, b"+new\n");
    log.push(format!("chmod, then append: {:?}", read(&c)));
    (log, opened_before)
}

#[test]
fn opens_around_a_copy_up_see_what_the_kernel_shows() {
    require_root();
    let scratch = TempDir::new("open-cache-copyup");
    let lower = scratch.subdir("lower");
    for name in ["f", "g", "h", "t", "c"] {
        std::fs::write(lower.join(name), format!("lower {name}\n")).expect("lower file");
    }
    let (kernel, strata) = on_kernel_then_stratafs(&scratch, &lower, copy_up_story);
    assert_eq!(
        kernel.0[2], "after copy-up: lower f\n+new\n",
        "kernel overlayfs"
    );
    assert_eq!(strata.0, kernel.0, "stratafs against kernel overlayfs");
    // Documented divergence (see `Union::open`): the kernel reopens the real file of an open
    // file after a copy-up, so it reads the write; a passthrough file keeps its backing file,
    // the lower one, and reads what it read before. Never anything else.
    assert_eq!(
        kernel.1, "lower g\n+new\n",
        "kernel overlayfs, file opened before"
    );
    assert_eq!(strata.1, "lower g\n", "stratafs, file opened before");
}

/// O_DIRECT and mmap reads of a lower file opened before (its backing kept).
fn direct_and_mapped_reads(mnt: &Path) -> Vec<String> {
    let f = mnt.join("big");
    let mut log = vec![format!("{} bytes", read(&f).len())];
    let direct = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(&f)
        .expect("open O_DIRECT");
    // O_DIRECT wants an aligned buffer: 4 KiB inside a larger vector.
    let mut raw = vec![0u8; 3 * 4096];
    let start = raw.as_ptr().align_offset(4096);
    let buf = &mut raw[start..start + 4096];
    let n = direct.read_at(buf, 4096).expect("O_DIRECT read");
    log.push(format!("direct: {n} bytes, first {:?}", &buf[..4]));
    drop(direct);
    let mapped = File::open(&f).expect("open for mmap");
    // SAFETY: a private read-only mapping of a file this test owns, unmapped below.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            8192,
            libc::PROT_READ,
            libc::MAP_PRIVATE,
            std::os::fd::AsRawFd::as_raw_fd(&mapped),
            0,
        )
    };
    assert_ne!(
        p,
        libc::MAP_FAILED,
        "mmap: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: the mapping is 8192 bytes long and readable.
    let bytes = unsafe { std::slice::from_raw_parts(p as *const u8, 8192) };
    log.push(format!(
        "mapped: {:?} {:?}",
        &bytes[..4],
        &bytes[4096..4100]
    ));
    // SAFETY: unmaps exactly the mapping made above.
    unsafe { libc::munmap(p, 8192) };
    log
}

#[test]
fn direct_and_mapped_reads_of_a_kept_lower_file() {
    require_root();
    let scratch = TempDir::new("open-cache-direct");
    let lower = scratch.subdir("lower");
    let data: Vec<u8> = (0..8192u32).map(|i| (i / 4096 + i % 7) as u8).collect();
    std::fs::write(lower.join("big"), &data).expect("lower file");
    let (kernel, strata) = on_kernel_then_stratafs(&scratch, &lower, direct_and_mapped_reads);
    assert_eq!(strata, kernel, "stratafs against kernel overlayfs");
}

const SPACE_FILE: usize = 8 << 20;

/// Files read again and again, then unlinked: a copied-up lower file and a file created in
/// the upper layer. Their space is back when unlink returns.
#[test]
fn unlink_of_files_read_before_frees_their_space_at_once() {
    require_root();
    let scratch = TempDir::new("open-cache-space");
    let lower = scratch.subdir("lower");
    std::fs::write(lower.join("lf"), vec![7u8; SPACE_FILE]).expect("lower file");
    let fs_dir = scratch.subdir("fs");
    let _tmpfs = Tmpfs::mount(&fs_dir, "64m").unwrap_or_else(|e| panic!("{e}"));
    let s = dirs(&scratch, &fs_dir, "s");
    let m = start_stratafs(&scratch, &lower, &s);
    let pid = m.pid().expect("daemon pid");
    let free_bytes = || {
        common::sys::free_bytes(&fs_dir)
            .unwrap_or_else(|e| panic!("statvfs {}: {e}", fs_dir.display()))
    };

    let lf = s.mnt.join("lf");
    for _ in 0..2 {
        assert_eq!(read(&lf).len(), SPACE_FILE);
    }
    append(&lf, b"x");
    for _ in 0..2 {
        assert_eq!(read(&lf).len(), SPACE_FILE + 1);
    }
    let uf = s.mnt.join("uf");
    let mut f = File::create(&uf).expect("create an upper file");
    f.write_all(&vec![9u8; SPACE_FILE])
        .expect("write the upper file");
    drop(f);
    for _ in 0..2 {
        assert_eq!(read(&uf).len(), SPACE_FILE);
    }
    for name in ["lf", "uf"] {
        wait_closed_by(pid, &s.upper.join(name));
        let before = free_bytes();
        std::fs::remove_file(s.mnt.join(name)).expect("unlink");
        let after = free_bytes();
        assert!(
            after >= before + SPACE_FILE as u64,
            "{name}: {} bytes came back at the unlink, not {SPACE_FILE}",
            after.saturating_sub(before)
        );
    }
    m.unmount().expect("clean unmount");
}
