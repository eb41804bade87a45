//! Crash and out-of-space behaviour of the writable layer.
//!
//! - A daemon killed (SIGKILL) in the middle of bringing up the data of a large lower file (a
//!   copy-up through the work dir, or the completion of a metadata-only copy-up in place)
//!   leaves the lower file or the complete result visible after a remount, never a partial
//!   one; the work dir is cleaned at mount.
//! - A daemon killed in the middle of an untar keeps every file whose fsync returned.
//! - On a full upper filesystem writers get ENOSPC (not EIO), earlier files stay intact and the
//!   daemon keeps serving.

mod common;

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::procfds::wait_closed_by;
use common::rw::{require_root, umount, StrataChild, StrataSpec, Tmpfs};
use common::tmp::TempDir;

/// Words of a file whose every 8 bytes differ: a partial or shifted copy cannot pass as whole.
fn fill_pattern(buf: &mut [u8], start: u64) {
    for (i, chunk) in buf.chunks_exact_mut(8).enumerate() {
        let w = (start / 8 + i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5A5A;
        chunk.copy_from_slice(&w.to_le_bytes());
    }
}

fn write_pattern_file(path: &Path, size: u64) {
    let mut f = File::create(path).expect("create big lower file");
    let mut buf = vec![0u8; 4 << 20];
    let mut off = 0;
    while off < size {
        let n = (size - off).min(buf.len() as u64) as usize;
        fill_pattern(&mut buf[..n], off);
        f.write_all(&buf[..n]).expect("write big lower file");
        off += n as u64;
    }
}

/// (size, fingerprint) of a stream, independent of how reads split it.
fn fingerprint_of(mut r: impl Read) -> std::io::Result<(u64, u64)> {
    let mut buf = vec![0u8; 4 << 20];
    let (mut size, mut h) = (0u64, 0xcbf2_9ce4_8422_2325u64);
    loop {
        let mut n = 0;
        while n < buf.len() {
            match r.read(&mut buf[n..])? {
                0 => break,
                k => n += k,
            }
        }
        for chunk in buf[..n].chunks(8) {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            h = (h ^ u64::from_le_bytes(w))
                .wrapping_mul(0x100_0000_01b3)
                .rotate_left(5);
        }
        size += n as u64;
        if n < buf.len() {
            return Ok((size, h));
        }
    }
}

fn fingerprint(path: &Path) -> std::io::Result<(u64, u64)> {
    fingerprint_of(File::open(path)?)
}

fn entries(dir: &Path) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| {
                    let size = e.metadata().map(|m| m.len()).unwrap_or(0);
                    (e.file_name().to_string_lossy().into_owned(), size)
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

struct Paths {
    lower: PathBuf,
    upper: PathBuf,
    work: PathBuf,
    mnt: PathBuf,
    log: PathBuf,
}

impl Paths {
    fn new(scratch: &TempDir, lower: &Path, upper_root: &Path) -> Paths {
        let upper = upper_root.join("upper");
        let work = upper_root.join("work");
        std::fs::create_dir_all(&upper).expect("mkdir upper");
        std::fs::create_dir_all(&work).expect("mkdir work");
        Paths {
            lower: lower.to_path_buf(),
            upper,
            work,
            mnt: scratch.subdir("mnt"),
            log: scratch.path().join("stratafs.log"),
        }
    }

    fn spec(&self) -> StrataSpec {
        StrataSpec {
            layers: vec![self.lower.clone()],
            upper: Some((self.upper.clone(), self.work.clone())),
            mountpoint: self.mnt.clone(),
            log: self.log.clone(),
            extra_args: Vec::new(),
        }
    }

    fn mount(&self) -> StrataChild {
        StrataChild::start(&self.spec()).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The kernel overlayfs scratch dir stratafs uses for copy-ups.
    fn scratch_dir(&self) -> PathBuf {
        self.work.join("work")
    }
}

/// Kills the daemon (SIGKILL), then detaches the dead mount as an admin would (umount -l).
fn crash(m: &mut StrataChild) {
    m.kill();
    umount(m.path(), true).expect("umount -l of the dead mount");
}

const BIG: u64 = 512 << 20;
const TAIL: &[u8] = b"appended after the crash test\n";

/// Whether `path` itself carries the xattr `name`.
fn has_xattr(path: &Path, name: &str) -> bool {
    let p = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("no NUL");
    let n = std::ffi::CString::new(name).expect("no NUL");
    // SAFETY: NUL-terminated strings; a null buffer of size 0 only asks for the value size.
    unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), std::ptr::null_mut(), 0) >= 0 }
}

const METACOPY: &str = "trusted.overlay.metacopy";

/// What starts the data copy that the test interrupts.
#[derive(Clone, Copy, Debug, PartialEq)]
enum CopyUpTrigger {
    /// An append: a full copy-up through the work dir.
    Append,
    /// truncate(2) one byte longer: a full copy-up, then the size change.
    Truncate,
    /// chmod first (a metadata-only copy-up, done at once), then an append that brings the
    /// data up in place into the metacopy file.
    ChmodThenAppend,
}

fn trigger(how: CopyUpTrigger, target: &Path) -> std::io::Result<()> {
    match how {
        CopyUpTrigger::Append | CopyUpTrigger::ChmodThenAppend => {
            let mut f = OpenOptions::new().append(true).open(target)?;
            f.write_all(TAIL)
        }
        CopyUpTrigger::Truncate => OpenOptions::new()
            .write(true)
            .open(target)?
            .set_len(BIG + 1),
    }
}

/// One crash in the middle of bringing up the data of the 512 MiB lower file `big`.
fn crash_mid_copy_up(scratch: &TempDir, lower: &Path, how: CopyUpTrigger) {
    let open_lower = || File::open(lower.join("big")).expect("open lower");
    let lower_fp = fingerprint(&lower.join("big")).expect("fingerprint lower");
    let complete_fp = match how {
        CopyUpTrigger::Truncate => fingerprint_of(open_lower().chain(&[0u8][..])),
        _ => fingerprint_of(open_lower().chain(TAIL)),
    }
    .expect("fingerprint of the complete result");
    let whole = |fp: (u64, u64)| fp == lower_fp || fp == complete_fp;

    let root = scratch.subdir(&format!("{how:?}"));
    let p = Paths::new(scratch, lower, &root);
    let mut m = p.mount();
    let target = p.mnt.join("big");
    let upper_big = p.upper.join("big");
    if how == CopyUpTrigger::ChmodThenAppend {
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600))
            .expect("chmod (metadata-only copy-up)");
        assert!(
            has_xattr(&upper_big, METACOPY),
            "chmod of a lower file did not make a metacopy upper file"
        );
    }
    let t = target.clone();
    let worker = std::thread::spawn(move || trigger(how, &t));

    // Wait until the data copy is under way, then kill the daemon in the middle of it.
    let scratch_dir = p.scratch_dir();
    let mid_copy = || -> Option<String> {
        if how == CopyUpTrigger::ChmodThenAppend {
            let st = std::fs::symlink_metadata(&upper_big).ok()?;
            let allocated = std::os::unix::fs::MetadataExt::blocks(&st) * 512;
            (allocated > 0 && allocated < BIG && has_xattr(&upper_big, METACOPY))
                .then(|| format!("{allocated} bytes of data in the metacopy file"))
        } else {
            let seen = entries(&scratch_dir);
            seen.iter()
                .any(|(_, size)| *size > 0 && *size < BIG)
                .then(|| format!("work dir: {seen:?}"))
        }
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut observed = None;
    while Instant::now() < deadline && !worker.is_finished() && observed.is_none() {
        observed = mid_copy();
        std::thread::sleep(Duration::from_micros(200));
    }
    assert!(
        observed.is_some() && !worker.is_finished(),
        "{how:?}: the copy of 512 MiB finished (or never started) before the test saw it"
    );
    eprintln!(
        "{how:?}: daemon killed mid-copy: {}",
        observed.as_deref().unwrap_or("")
    );
    crash(&mut m);
    let result = worker.join().expect("worker thread");
    assert!(
        result.is_err(),
        "{how:?} succeeded although the daemon died mid-copy ({observed:?})"
    );
    if how != CopyUpTrigger::ChmodThenAppend {
        assert!(
            !entries(&scratch_dir).is_empty(),
            "{how:?}: no partial copy in the work dir after the kill ({observed:?})"
        );
    }

    // Nothing partial may be visible in the upper dir: a file there is complete, or still
    // marked metacopy (its data is read from the lower file).
    if upper_big.exists() && !has_xattr(&upper_big, METACOPY) {
        let fp = fingerprint(&upper_big).expect("read upper copy");
        assert!(
            whole(fp),
            "{how:?}: partial upper file after a crash: {} bytes",
            fp.0
        );
    }

    // Remount: the work dir is cleaned, the file is whole, chmod survived.
    let m = p.mount();
    assert_eq!(
        entries(&scratch_dir),
        vec![],
        "{how:?}: the work dir keeps leftovers of the crashed copy-up after a remount"
    );
    let fp = fingerprint(&target).expect("read big after the remount");
    assert!(
        whole(fp),
        "{how:?}: after crash and remount big shows {} bytes (fingerprint {:x}), neither the lower file nor the complete result",
        fp.0,
        fp.1
    );
    if how == CopyUpTrigger::ChmodThenAppend {
        let mode = std::fs::metadata(&target).expect("stat big").permissions();
        assert_eq!(
            mode.mode() & 0o7777,
            0o600,
            "the chmod before the crash was lost"
        );
    }

    // The interrupted operation works once the daemon is back, and the upper copy is the file.
    trigger(how, &target).expect("the operation again after the remount");
    assert!(
        !has_xattr(&upper_big, METACOPY),
        "{how:?}: the upper file is still metacopy after a write"
    );
    assert_eq!(
        fingerprint(&upper_big).expect("upper copy after the operation"),
        fingerprint(&target).expect("read big"),
        "{how:?}: the upper copy differs from what the mount shows"
    );
    m.unmount().expect("clean unmount");
}

#[test]
fn crash_during_large_copy_up() {
    require_root();
    let scratch = TempDir::new("crash-copyup");
    let lower = scratch.subdir("lower");
    write_pattern_file(&lower.join("big"), BIG);
    crash_mid_copy_up(&scratch, &lower, CopyUpTrigger::Append);
    crash_mid_copy_up(&scratch, &lower, CopyUpTrigger::Truncate);
    crash_mid_copy_up(&scratch, &lower, CopyUpTrigger::ChmodThenAppend);
}

/// Content of the n-th file the fsync writer makes (sizes vary, 0 to ~9 KiB).
fn synced_content(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; (n * 37) % 9000 / 8 * 8];
    fill_pattern(&mut v, n as u64 * 4096);
    v
}

/// Source tree for the untar: a few thousand small files in nested dirs.
fn untar_source(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    for d in 0..60 {
        for f in 0..100 {
            let rel = format!("t/d{d:02}/s{}/f{f:03}", f % 4);
            let mut data = vec![0u8; (d * 131 + f * 17) % 6000 / 8 * 8];
            fill_pattern(&mut data, (d * 1000 + f) as u64 * 8192);
            let path = dir.join(&rel);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir source");
            std::fs::write(&path, &data).expect("write source file");
            files.push((rel, data));
        }
    }
    files
}

#[test]
fn crash_during_untar_keeps_fsynced_files() {
    require_root();
    let scratch = TempDir::new("crash-untar");
    let lower = scratch.subdir("lower");
    std::fs::create_dir(lower.join("t")).expect("lower dir t");
    std::fs::write(lower.join("t/lower-file"), b"from the image\n").expect("lower file");
    let src = scratch.subdir("src");
    let files = untar_source(&src);
    let archive = scratch.path().join("files.tar");
    let st = Command::new("tar")
        .arg("-cf")
        .arg(&archive)
        .arg("-C")
        .arg(&src)
        .arg("t")
        .status()
        .expect("run tar -c");
    assert!(st.success(), "tar -c failed");

    let root = scratch.subdir("rw");
    let p = Paths::new(&scratch, &lower, &root);
    let mut m = p.mount();
    std::fs::create_dir(p.mnt.join("synced")).expect("mkdir synced");

    // The fsync writer records a name only once its data and fsync returned.
    let recorded = Arc::new(Mutex::new(Vec::<usize>::new()));
    let rec = recorded.clone();
    let dir = p.mnt.join("synced");
    let writer = std::thread::spawn(move || {
        for n in 0.. {
            let r = (|| -> std::io::Result<()> {
                let mut f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o644)
                    .open(dir.join(format!("f{n:05}")))?;
                f.write_all(&synced_content(n))?;
                f.sync_all()
            })();
            if r.is_err() {
                return;
            }
            rec.lock().expect("lock").push(n);
        }
    });

    // Start the untar once the writer is going, so both run when the daemon dies.
    let writer_going = Instant::now() + Duration::from_secs(30);
    while recorded.lock().expect("lock").len() < 100 && Instant::now() < writer_going {
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut tar = Command::new("tar")
        .arg("-xf")
        .arg(&archive)
        .arg("-C")
        .arg(&p.mnt)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run tar -x");

    // Kill midway: once tar has extracted a couple of its 60 directories.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let synced = recorded.lock().expect("lock").len();
        let untarred = std::fs::read_dir(p.upper.join("t"))
            .map(|rd| rd.count())
            .unwrap_or(0);
        let tar_done = tar.try_wait().ok().flatten().is_some();
        if (synced >= 100 && untarred >= 2) || tar_done || Instant::now() > deadline {
            assert!(
                !tar_done,
                "tar finished before the crash; make the archive larger"
            );
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    crash(&mut m);
    writer.join().expect("writer thread");
    let tar_exit = (0..500)
        .find_map(|_| {
            let r = tar.try_wait().ok().flatten();
            if r.is_none() {
                std::thread::sleep(Duration::from_millis(10));
            }
            r
        })
        .or_else(|| {
            let _ = tar.kill();
            tar.wait().ok()
        });
    assert!(
        tar_exit.is_some_and(|s| !s.success()),
        "tar should have failed when the daemon died"
    );
    let recorded = recorded.lock().expect("lock").clone();
    assert!(
        recorded.len() >= 100,
        "too few fsynced files: {}",
        recorded.len()
    );

    let m = p.mount();
    assert_eq!(
        entries(&p.scratch_dir()),
        vec![],
        "the work dir keeps leftovers after a remount"
    );
    for n in &recorded {
        let path = p.mnt.join(format!("synced/f{n:05}"));
        let data = std::fs::read(&path).unwrap_or_else(|e| {
            panic!("fsynced file {} lost after the crash: {e}", path.display())
        });
        assert!(
            data == synced_content(*n),
            "fsynced file {} damaged after the crash: {} bytes, want {}",
            path.display(),
            data.len(),
            synced_content(*n).len()
        );
    }
    // Untarred files were not fsynced: each one present holds a prefix of its data (tar was
    // killed while writing at most one of them), and the lower file is still there.
    let mut present = 0;
    for (rel, want) in &files {
        match std::fs::read(p.mnt.join(rel)) {
            Ok(data) => {
                present += 1;
                assert!(
                    data.len() <= want.len() && want.starts_with(&data),
                    "untarred {rel}: {} bytes that are not a prefix of its {} bytes",
                    data.len(),
                    want.len()
                );
            }
            Err(e) => assert_eq!(
                e.raw_os_error(),
                Some(libc::ENOENT),
                "untarred {rel}: {e} (only absent or intact files are acceptable)"
            ),
        }
    }
    eprintln!(
        "untar crash: {} fsynced files intact, {present} of {} untarred files present",
        recorded.len(),
        files.len()
    );
    assert!(
        present > 0,
        "no untarred file survived: the crash came too early"
    );
    assert!(
        present < files.len(),
        "every file was untarred: the crash came too late"
    );
    assert_eq!(
        std::fs::read(p.mnt.join("t/lower-file")).expect("lower file after the crash"),
        b"from the image\n"
    );
    m.unmount().expect("clean unmount");
}

fn errno_of(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ENOSPC) => "ENOSPC".into(),
        Some(libc::EIO) => "EIO".into(),
        _ => e.to_string(),
    }
}

#[test]
fn enospc_on_the_upper_fs() {
    require_root();
    let scratch = TempDir::new("enospc");
    let lower = scratch.subdir("lower");
    write_pattern_file(&lower.join("lowerfile"), 4 << 20);
    std::fs::write(lower.join("small"), b"small lower file\n").expect("small lower file");
    let lower_fp = fingerprint(&lower.join("lowerfile")).expect("fingerprint lower");
    let tmpfs_dir = scratch.subdir("tmpfs");
    let _tmpfs = Tmpfs::mount(&tmpfs_dir, "8m").unwrap_or_else(|e| panic!("{e}"));
    let p = Paths::new(&scratch, &lower, &tmpfs_dir);
    let m = p.mount();

    // Files written (and fsynced) before the filesystem fills up.
    let keep: Vec<(String, Vec<u8>)> = (0..2)
        .map(|i| {
            let mut data = vec![0u8; 1 << 20];
            fill_pattern(&mut data, i << 30);
            (format!("keep{i}"), data)
        })
        .collect();
    for (name, data) in &keep {
        let mut f = File::create(p.mnt.join(name)).expect("create keep file");
        f.write_all(data).expect("write keep file");
        f.sync_all().expect("fsync keep file");
    }

    // Fill the upper fs through the mount: the writer must see ENOSPC.
    let fill = p.mnt.join("fill");
    let mut f = File::create(&fill).expect("create fill");
    let chunk = vec![0xABu8; 64 << 10];
    let mut written = 0u64;
    let err = loop {
        match f.write(&chunk) {
            Ok(0) => panic!("write returned 0 before the fs was full"),
            Ok(n) => written += n as u64,
            Err(e) => break e,
        }
        assert!(
            written < 64 << 20,
            "wrote 64 MiB into an 8 MiB tmpfs without an error"
        );
    };
    assert_eq!(
        err.raw_os_error(),
        Some(libc::ENOSPC),
        "writing to a full upper fs: got {} after {written} bytes, want ENOSPC",
        errno_of(&err)
    );
    // Whatever the kernel still buffered must not turn into EIO either.
    if let Err(e) = f.sync_all() {
        assert_eq!(
            e.raw_os_error(),
            Some(libc::ENOSPC),
            "fsync: {}",
            errno_of(&e)
        );
    }
    drop(f);

    // The daemon keeps serving: stat, readdir, reads.
    let lowerfile = p.mnt.join("lowerfile");
    let mut names: Vec<String> = std::fs::read_dir(&p.mnt)
        .expect("readdir after ENOSPC")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["fill", "keep0", "keep1", "lowerfile", "small"]);
    for (name, data) in &keep {
        assert!(
            std::fs::read(p.mnt.join(name)).expect("read keep file") == *data,
            "{name} damaged by the ENOSPC"
        );
    }
    assert_eq!(fingerprint(&lowerfile).expect("read lowerfile"), lower_fp);
    assert_eq!(
        std::fs::metadata(&fill).expect("stat fill").len(),
        written,
        "the fill file's size is not what the writer was told it wrote"
    );

    // A copy-up that does not fit fails with ENOSPC and leaves nothing behind.
    let append = |data: &[u8]| -> std::io::Result<()> {
        OpenOptions::new()
            .append(true)
            .open(&lowerfile)?
            .write_all(data)
    };
    let e = append(TAIL).expect_err("append to a 4 MiB lower file on a full upper fs");
    assert_eq!(
        e.raw_os_error(),
        Some(libc::ENOSPC),
        "copy-up on a full upper fs: {}",
        errno_of(&e)
    );
    assert_eq!(
        entries(&p.scratch_dir()),
        vec![],
        "a failed copy-up left its partial copy in the work dir"
    );
    assert!(
        !p.upper.join("lowerfile").exists(),
        "a failed copy-up left a file in the upper dir"
    );

    // Room again: delete, create, and the copy-up that failed now works.
    std::fs::remove_file(&fill).expect("delete fill");
    std::fs::write(p.mnt.join("after"), b"written after ENOSPC\n").expect("create after ENOSPC");
    assert_eq!(
        std::fs::read(p.mnt.join("after")).expect("read after"),
        b"written after ENOSPC\n"
    );
    append(TAIL).expect("append once there is room");
    assert_eq!(
        fingerprint(&lowerfile).expect("read lowerfile"),
        fingerprint_of(
            File::open(lower.join("lowerfile"))
                .expect("open lower")
                .chain(TAIL)
        )
        .expect("fingerprint lower + tail")
    );
    m.unmount().expect("clean unmount");
}

/// When the space of a file unlinked through the mount comes back on the upper fs.
#[derive(Debug, PartialEq)]
struct SpaceReport {
    /// Not open: back as soon as unlink returns (every try).
    back_at_unlink: bool,
    /// Open while unlinked: still taken until the close.
    held_while_open: bool,
    /// fstat of the open unlinked file: (nlink, size).
    fstat_while_open: (u64, u64),
    /// Back (within a moment: FUSE sends the release after close returns) after the close.
    back_after_close: bool,
}

const SPACE_FILE: u64 = 8 << 20;
const SPACE_TRIES: usize = 10;

fn write_big(path: &Path) -> File {
    let mut f = File::create(path).expect("create big file through the mount");
    let mut data = vec![0u8; SPACE_FILE as usize];
    fill_pattern(&mut data, 0);
    f.write_all(&data).expect("write big file");
    f.sync_all().expect("fsync big file");
    f
}

/// `settle(name)` waits until what serves the mount has released the closed file `name`.
fn space_report(mnt: &Path, upper_fs: &Path, settle: &dyn Fn(&str)) -> SpaceReport {
    let free_bytes = || {
        common::sys::free_bytes(upper_fs)
            .unwrap_or_else(|e| panic!("statvfs {}: {e}", upper_fs.display()))
    };
    // A file that is not open: its space is free when unlink returns, every time.
    let mut back_at_unlink = true;
    for i in 0..SPACE_TRIES {
        let name = format!("big{i}");
        let path = mnt.join(&name);
        drop(write_big(&path));
        settle(&name);
        let before = free_bytes();
        std::fs::remove_file(&path).expect("unlink big file");
        let after = free_bytes();
        back_at_unlink &= after >= before + SPACE_FILE;
    }
    // An open file keeps its space until the close.
    let path = mnt.join("open-big");
    let f = write_big(&path);
    let before = free_bytes();
    std::fs::remove_file(&path).expect("unlink open big file");
    std::thread::sleep(Duration::from_millis(100));
    let held_while_open = free_bytes() < before + SPACE_FILE / 2;
    let md = f.metadata().expect("fstat the open unlinked file");
    let fstat_while_open = (std::os::unix::fs::MetadataExt::nlink(&md), md.len());
    drop(f);
    let deadline = Instant::now() + Duration::from_secs(2);
    let back_after_close = loop {
        if free_bytes() >= before + SPACE_FILE {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    SpaceReport {
        back_at_unlink,
        held_while_open,
        fstat_while_open,
        back_after_close,
    }
}

/// The space of an upper file unlinked through the mount comes back at the unlink when the
/// file is not open, and at its last close when it is, as on kernel overlayfs (the daemon
/// must not hold the unlinked object until the kernel forgets the inode).
#[test]
fn unlinked_upper_file_frees_its_space_like_the_kernel() {
    use common::rw::KernelMount;
    require_root();
    let scratch = TempDir::new("space");
    let lower = scratch.subdir("lower");
    std::fs::write(lower.join("f"), b"lower\n").expect("lower file");
    let report = |kernel: bool| {
        let tag = if kernel { "kernel" } else { "stratafs" };
        let fs_dir = scratch.subdir(&format!("{tag}-fs"));
        let _tmpfs = Tmpfs::mount(&fs_dir, "64m").unwrap_or_else(|e| panic!("{e}"));
        let p = Paths::new(&scratch, &lower, &fs_dir);
        let mnt = scratch.subdir(&format!("{tag}-mnt"));
        if kernel {
            let m = KernelMount::mount(
                std::slice::from_ref(&lower),
                Some((&p.upper, &p.work)),
                &mnt,
                "",
            )
            .unwrap_or_else(|e| panic!("{e}"));
            // Kernel overlayfs releases the upper file within close.
            let r = space_report(&mnt, &fs_dir, &|_| {});
            m.unmount().expect("unmount kernel overlay");
            r
        } else {
            let m = StrataChild::start(&StrataSpec {
                mountpoint: mnt.clone(),
                ..p.spec()
            })
            .unwrap_or_else(|e| panic!("{e}"));
            let pid = m.pid().expect("daemon pid");
            let r = space_report(&mnt, &fs_dir, &|name: &str| {
                wait_closed_by(pid, &p.upper.join(name))
            });
            m.unmount().expect("clean unmount");
            r
        }
    };
    // Kernel quirk: while other tests load the machine, kernel overlayfs now and then frees an
    // unlinked file's space a moment after unlink returns (its inode, which holds the upper
    // file, is evicted later). The reference is the kernel's behaviour when that does not
    // happen: up to three runs, the first whose space came back at the unlink. stratafs is
    // held to it on its first run.
    let mut kernel = report(true);
    for _ in 0..2 {
        if kernel.back_at_unlink {
            break;
        }
        kernel = report(true);
    }
    assert_eq!(
        kernel,
        SpaceReport {
            back_at_unlink: true,
            held_while_open: true,
            fstat_while_open: (0, SPACE_FILE),
            back_after_close: true,
        },
        "kernel overlayfs"
    );
    assert_eq!(report(false), kernel, "stratafs against kernel overlayfs");
}
