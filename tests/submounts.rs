//! Volumes, bind overlays and tmpfs paths inside the merged view, end to end: the real binary
//! mounted with `--daemon` on private scratch and state dirs, checked through the mount, on
//! the backing dirs and in /proc/self/mountinfo, with Docker's semantics as the reference.

mod common;

use std::collections::BTreeMap;
use std::ffi::{CString, OsString};
use std::fs::{self, File, FileTimes, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant, SystemTime};

use common::{mount_type, mounts_under, require_root, stratafs_bin, umount, Scratch};
use serde_json::Value;

// ---------------------------------------------------------------------------------------------
// Harness: one scratch tree per test, and a guard per daemon-mode mount.

/// Scratch dirs of one test: an image layer, upper/work, a state dir, host dirs, a mountpoint.
struct Env {
    /// The bottom layer; `layers_above` go on top of it, in order.
    image: PathBuf,
    layers_above: Vec<PathBuf>,
    upper: PathBuf,
    work: PathBuf,
    state: PathBuf,
    host: PathBuf,
    mnt: PathBuf,
    scratch: Scratch,
}

impl Env {
    fn new(tag: &str) -> Env {
        require_root();
        let scratch = Scratch::new(&format!("sub-{tag}"));
        let root = scratch.path.canonicalize().expect("scratch dir");
        let d = |rel: &str| {
            let p = root.join(rel);
            fs::create_dir_all(&p).expect("scratch subdir");
            p
        };
        Env {
            image: d("image"),
            layers_above: Vec::new(),
            upper: d("upper"),
            work: d("work"),
            state: d("state"),
            host: d("host"),
            mnt: d("mnt"),
            scratch,
        }
    }

    fn root(&self) -> PathBuf {
        self.scratch.path.canonicalize().expect("scratch dir")
    }

    /// A path inside the merged view.
    fn at(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel.trim_start_matches('/'))
    }

    fn vol_data(&self, name: &str) -> PathBuf {
        self.state.join("volumes").join(name).join("_data")
    }

    fn mount_args(&self, with_upper: bool, extra: &[&str]) -> Vec<OsString> {
        let mut a: Vec<OsString> = vec!["mount".into(), "--daemon".into()];
        for l in std::iter::once(&self.image).chain(&self.layers_above) {
            a.extend(["--layer".into(), l.clone().into()]);
        }
        if with_upper {
            a.extend(["--upper".into(), self.upper.clone().into()]);
            a.extend(["--work".into(), self.work.clone().into()]);
        }
        a.extend(["--state-dir".into(), self.state.clone().into()]);
        a.extend(extra.iter().map(OsString::from));
        a.push(self.mnt.clone().into());
        a
    }

    /// `stratafs mount --daemon ...`: Ok once the mount and its sub-mounts are live.
    fn try_mount(&self, with_upper: bool, extra: &[&str]) -> Result<Strata, Output> {
        let out = Command::new(stratafs_bin())
            .args(self.mount_args(with_upper, extra))
            .env_remove("STRATAFS_STATE_DIR")
            .env_remove("RUST_LOG")
            .output()
            .expect("cannot run stratafs");
        if !out.status.success() {
            return Err(out);
        }
        let pid = daemon_pids(&self.mnt).first().copied();
        let m = Strata {
            mnt: self.mnt.clone(),
            pid,
        };
        assert!(
            mount_type(&self.mnt).is_some_and(|t| t.starts_with("fuse")),
            "stratafs mount exited 0 but nothing is mounted at {}",
            self.mnt.display()
        );
        assert!(pid.is_some(), "no daemon serves {}", self.mnt.display());
        Ok(m)
    }

    /// Mounts image + upper with `extra`, panicking with the error on failure.
    fn mount(&self, extra: &[&str]) -> Strata {
        self.try_mount(true, extra)
            .unwrap_or_else(|o| panic!("mount {extra:?} failed: {}", text(&o.stderr)))
    }

    /// Expects the mount to be refused: non-zero exit, a one-line error, nothing left mounted
    /// below the mountpoint and no daemon left. Returns the error line.
    fn refused(&self, with_upper: bool, extra: &[&str]) -> String {
        let out = match self.try_mount(with_upper, extra) {
            Ok(m) => {
                let below = mounts_under(&self.mnt);
                drop(m);
                panic!("mount {extra:?} should be refused; it mounted {below:?}");
            }
            Err(o) => o,
        };
        let err = text(&out.stderr);
        assert_eq!(
            err.trim_end().lines().count(),
            1,
            "{extra:?}: the error is not one line: {err:?}"
        );
        assert!(err.starts_with("stratafs: "), "{extra:?}: {err:?}");
        assert!(
            mounts_under(&self.mnt).is_empty(),
            "{extra:?}: refused, yet {:?} stayed mounted",
            mounts_under(&self.mnt)
        );
        assert!(
            wait_no_daemon(&self.mnt, Duration::from_secs(5)),
            "{extra:?}: a daemon for {} is still running after the refusal",
            self.mnt.display()
        );
        err.trim_end().to_string()
    }

    /// `stratafs volume --state-dir STATE ARGS...`
    fn volume(&self, args: &[&str]) -> Output {
        Command::new(stratafs_bin())
            .arg("volume")
            .arg("--state-dir")
            .arg(&self.state)
            .args(args)
            .env_remove("STRATAFS_STATE_DIR")
            .env_remove("RUST_LOG")
            .output()
            .expect("cannot run stratafs volume")
    }

    fn volume_ok(&self, args: &[&str]) -> String {
        let o = self.volume(args);
        assert!(
            o.status.success(),
            "volume {args:?} failed: {}",
            text(&o.stderr)
        );
        text(&o.stdout)
    }

    /// `volume ls --format json`, one object per volume, by name.
    fn volumes(&self) -> BTreeMap<String, Value> {
        self.volume_ok(&["ls", "--format", "json"])
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).expect("ls json line");
                (v["Name"].as_str().expect("Name").to_string(), v)
            })
            .collect()
    }
}

/// A daemon-mode stratafs mount. Drop runs `stratafs umount` (detaching whatever is left,
/// also on panic) and waits for the daemon to exit, killing it if it lingers.
struct Strata {
    mnt: PathBuf,
    pid: Option<u32>,
}

impl Strata {
    /// kill -9 of the daemon (a crash): the mount and its sub-mounts stay, dead.
    fn crash(&mut self) {
        let pid = self.pid.expect("daemon pid");
        // SAFETY: kill(2) on the pid of the daemon this test started.
        assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
        assert!(
            wait_no_daemon(&self.mnt, Duration::from_secs(5)),
            "pid {pid} survived kill -9"
        );
    }

    /// `stratafs umount`: must succeed, leave nothing mounted below, and end the daemon.
    fn unmount(self) {
        let out = Command::new(stratafs_bin())
            .arg("umount")
            .arg(&self.mnt)
            .output()
            .expect("cannot run stratafs umount");
        assert!(
            out.status.success(),
            "stratafs umount {}: {}",
            self.mnt.display(),
            text(&out.stderr)
        );
        assert!(
            mounts_under(&self.mnt).is_empty(),
            "after stratafs umount, still mounted: {:?}",
            mounts_under(&self.mnt)
        );
        assert!(
            wait_no_daemon(&self.mnt, Duration::from_secs(10)),
            "the daemon of {} (pid {:?}) did not exit after umount",
            self.mnt.display(),
            self.pid
        );
    }
}

impl Drop for Strata {
    fn drop(&mut self) {
        if mount_type(&self.mnt).is_some() {
            let _ = Command::new(stratafs_bin())
                .arg("umount")
                .arg(&self.mnt)
                .output();
            for m in mounts_under(&self.mnt).into_iter().rev() {
                let _ = umount(&m, true);
            }
        }
        if !wait_no_daemon(&self.mnt, Duration::from_secs(5)) {
            for pid in daemon_pids(&self.mnt) {
                // SAFETY: kill(2) on the pid of the daemon this test started.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
        }
    }
}

/// Live processes running `stratafs mount ... MNT` (the daemon forked by `--daemon`).
fn daemon_pids(mnt: &Path) -> Vec<u32> {
    let want = mnt.as_os_str().as_bytes();
    let mut pids = Vec::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .collect();
        if args.get(1) == Some(&&b"mount"[..]) && args.last() == Some(&want) {
            pids.push(pid);
        }
    }
    pids
}

fn wait_no_daemon(mnt: &Path, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    loop {
        if daemon_pids(mnt).is_empty() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

// ---------------------------------------------------------------------------------------------
// Small file-system helpers.

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn put(p: &Path, content: &[u8]) {
    if let Some(d) = p.parent() {
        fs::create_dir_all(d).unwrap();
    }
    fs::write(p, content).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
}

fn read(p: &Path) -> Vec<u8> {
    fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("readdir {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn lstat(p: &Path) -> fs::Metadata {
    fs::symlink_metadata(p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()))
}

fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

fn lchown(p: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid)).unwrap();
}

fn set_mtime(p: &Path, secs: u64) {
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
    File::open(p)
        .unwrap()
        .set_times(FileTimes::new().set_accessed(t).set_modified(t))
        .unwrap();
}

fn mknod(p: &Path, mode: u32, dev: libc::dev_t) {
    let cp = cpath(p);
    // SAFETY: NUL-terminated path.
    let r = unsafe { libc::mknod(cp.as_ptr(), mode, dev) };
    assert_eq!(
        r,
        0,
        "mknod {}: {}",
        p.display(),
        io::Error::last_os_error()
    );
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("no NUL in a test path")
}

fn lsetxattr(p: &Path, name: &str, value: &[u8]) {
    let (cp, cn) = (cpath(p), CString::new(name).unwrap());
    // SAFETY: NUL-terminated strings and a buffer of the length passed.
    let r = unsafe {
        libc::lsetxattr(
            cp.as_ptr(),
            cn.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(
        r,
        0,
        "lsetxattr {} {name}: {}",
        p.display(),
        io::Error::last_os_error()
    );
}

/// The user.* extended attributes of `p` (not following a symlink).
fn user_xattrs(p: &Path) -> BTreeMap<String, Vec<u8>> {
    let cp = cpath(p);
    let mut list = vec![0u8; 4096];
    // SAFETY: buffer of the length passed.
    let n = unsafe { libc::llistxattr(cp.as_ptr(), list.as_mut_ptr().cast(), list.len()) };
    assert!(
        n >= 0,
        "llistxattr {}: {}",
        p.display(),
        io::Error::last_os_error()
    );
    let mut out = BTreeMap::new();
    for name in list[..n as usize]
        .split(|b| *b == 0)
        .filter(|n| n.starts_with(b"user."))
    {
        let cn = CString::new(name).unwrap();
        let mut val = vec![0u8; 4096];
        // SAFETY: NUL-terminated strings and a buffer of the length passed.
        let len = unsafe {
            libc::lgetxattr(cp.as_ptr(), cn.as_ptr(), val.as_mut_ptr().cast(), val.len())
        };
        assert!(
            len >= 0,
            "lgetxattr {}: {}",
            p.display(),
            io::Error::last_os_error()
        );
        val.truncate(len as usize);
        out.insert(text(name), val);
    }
    out
}

/// The errno of a call expected to fail.
fn errno<T: std::fmt::Debug>(r: io::Result<T>, what: &str) -> i32 {
    match r {
        Ok(v) => panic!("{what}: succeeded ({v:?}), expected an error"),
        Err(e) => e
            .raw_os_error()
            .unwrap_or_else(|| panic!("{what}: not an OS error: {e}")),
    }
}

/// Deterministic content for file `i` of writer `t`.
fn pattern(t: usize, i: usize, len: usize) -> Vec<u8> {
    let mut x = (t as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (i as u64 + 1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Recursive comparison of two trees: type, mode, owner, content, device numbers, symlink
/// targets, user xattrs, mtimes (not of symlinks), and which names are hard links.
fn assert_same_tree(a: &Path, b: &Path) {
    fn walk(a: &Path, b: &Path, rel: &str, links: &mut BTreeMap<(u64, u64), (u64, u64)>) {
        let (ma, mb) = (lstat(a), lstat(b));
        let what = if rel.is_empty() { "." } else { rel };
        assert_eq!(
            ma.mode(),
            mb.mode(),
            "{what}: mode {:o} vs {:o}",
            ma.mode(),
            mb.mode()
        );
        assert_eq!((ma.uid(), ma.gid()), (mb.uid(), mb.gid()), "{what}: owner");
        assert_eq!(user_xattrs(a), user_xattrs(b), "{what}: xattrs");
        let ft = ma.file_type();
        if !ft.is_symlink() {
            assert_eq!(ma.mtime(), mb.mtime(), "{what}: mtime");
        }
        assert_eq!(ma.rdev(), mb.rdev(), "{what}: device number");
        if ft.is_symlink() {
            assert_eq!(
                fs::read_link(a).unwrap(),
                fs::read_link(b).unwrap(),
                "{what}: target"
            );
        } else if ft.is_file() {
            assert_eq!(read(a), read(b), "{what}: content");
            assert_eq!(ma.nlink(), mb.nlink(), "{what}: link count");
            if ma.nlink() > 1 {
                // The same inode on one side must be the same inode on the other.
                let key = (ma.dev(), ma.ino());
                let val = (mb.dev(), mb.ino());
                assert_eq!(
                    *links.entry(key).or_insert(val),
                    val,
                    "{what}: hard link broken"
                );
            }
        } else if ft.is_dir() {
            let (na, nb) = (names(a), names(b));
            assert_eq!(na, nb, "{what}: entries");
            for n in na {
                walk(&a.join(&n), &b.join(&n), &format!("{rel}/{n}"), links);
            }
        }
    }
    walk(a, b, "", &mut BTreeMap::new());
}

/// An image dir with every kind of metadata a volume must keep: modes, owners, times, xattrs,
/// hard links, symlinks (one aimed at the host's /etc/passwd), nested dirs.
fn build_rich_dir(dir: &Path) {
    fs::create_dir_all(dir).unwrap();
    put(&dir.join("a.txt"), b"alpha");
    chmod(&dir.join("a.txt"), 0o640);
    lchown(&dir.join("a.txt"), 1001, 1002);
    lsetxattr(&dir.join("a.txt"), "user.k", b"v1");
    put(&dir.join("run.sh"), b"#!/bin/sh\necho hi\n");
    chmod(&dir.join("run.sh"), 0o4755);
    put(&dir.join("sub/deep.bin"), &pattern(9, 9, 200_000));
    chmod(&dir.join("sub/deep.bin"), 0o600);
    fs::create_dir(dir.join("sub/empty")).unwrap();
    chmod(&dir.join("sub/empty"), 0o1777);
    put(&dir.join("hl1"), b"linked");
    fs::hard_link(dir.join("hl1"), dir.join("sub/hl2")).unwrap();
    symlink("a.txt", dir.join("link")).unwrap();
    lchown(&dir.join("link"), 1005, 1006);
    symlink("/etc/passwd", dir.join("pw")).unwrap();
    mknod(&dir.join("fifo"), libc::S_IFIFO | 0o620, 0);
    mknod(
        &dir.join("full"),
        libc::S_IFCHR | 0o666,
        libc::makedev(1, 7),
    );
    lchown(&dir.join("full"), 0, 5);
    for (p, t) in [("a.txt", 1_100_000_000), ("run.sh", 1_100_000_100)] {
        set_mtime(&dir.join(p), t);
    }
    set_mtime(&dir.join("sub/deep.bin"), 1_150_000_000);
    set_mtime(&dir.join("sub/empty"), 1_160_000_000);
    chmod(&dir.join("sub"), 0o700);
    lchown(&dir.join("sub"), 1003, 1003);
    set_mtime(&dir.join("sub"), 1_200_000_000);
    chmod(dir, 0o750);
    lchown(dir, 1234, 2345);
    lsetxattr(dir, "user.dir", b"top");
    set_mtime(dir, 1_000_000_000);
}

// ---------------------------------------------------------------------------------------------
// Volumes: population, nocopy, read-only, lifetime, rm and prune.

#[test]
fn empty_volume_is_filled_from_the_image_with_all_metadata() {
    let env = Env::new("fill");
    build_rich_dir(&env.image.join("data"));
    put(&env.image.join("outside"), b"o");
    let m = env.mount(&["--volume", "db:/data"]);
    assert!(
        mounts_under(&env.mnt).contains(&env.at("data")),
        "no mount at /data"
    );

    // Through the mount and in the volume's data dir: the image content, metadata and all; the
    // volume root took the image dir's mode, owner, times and xattrs.
    assert_same_tree(&env.image.join("data"), &env.at("data"));
    assert_same_tree(&env.image.join("data"), &env.vol_data("db"));
    let data = env.vol_data("db");
    assert_eq!(
        lstat(&data.join("hl1")).ino(),
        lstat(&data.join("sub/hl2")).ino()
    );
    assert!(
        lstat(&data.join("pw")).file_type().is_symlink(),
        "a symlink was copied as a file"
    );

    // Writes go to the volume, not to the upper layer.
    put(&env.at("data/new"), b"in the volume");
    fs::remove_file(env.at("data/a.txt")).unwrap();
    assert_eq!(read(&data.join("new")), b"in the volume");
    assert!(
        !env.upper.join("data/new").exists(),
        "a volume write reached the upper dir"
    );
    m.unmount();

    // A non-empty volume is never filled again: the deleted file stays deleted.
    let m = env.mount(&["--volume", "db:/data"]);
    assert!(
        !env.at("data/a.txt").exists(),
        "the volume was filled again"
    );
    assert_eq!(read(&env.at("data/new")), b"in the volume");
    m.unmount();
}

#[test]
fn volume_is_filled_from_the_merged_view_not_from_one_layer() {
    let mut env = Env::new("merged");
    for n in ["a", "b", "b2", "c"] {
        put(
            &env.image.join("data").join(n),
            format!("lower {n}").as_bytes(),
        );
    }
    put(&env.image.join("data/sub/old"), b"old");
    put(&env.image.join("data/sub2/old"), b"old");
    let top = env.root().join("layer2");
    put(&top.join("data/b"), b"top b");
    mknod(&top.join("data/a"), libc::S_IFCHR, 0);
    put(&top.join("data/.wh.b2"), b"");
    put(&top.join("data/sub/new"), b"new");
    lsetxattr(&top.join("data/sub"), "trusted.overlay.opaque", b"y");
    put(&top.join("data/sub2/.wh..wh..opq"), b"");
    put(&top.join("data/sub2/new2"), b"new2");
    env.layers_above.push(top);
    // The writable layer from an earlier run: one file added, one deleted.
    let m = env.mount(&[]);
    put(&env.at("data/fromupper"), b"upper");
    fs::remove_file(env.at("data/c")).unwrap();
    m.unmount();
    // What the merged view shows at /data, copied with cp -a as the reference.
    let m = env.mount(&[]);
    let merged = env.root().join("merged-copy");
    common::copy_tree(&env.at("data"), &merged);
    m.unmount();

    let m = env.mount(&["--volume", "mv:/data"]);
    let data = env.vol_data("mv");
    assert_eq!(names(&data), ["b", "fromupper", "sub", "sub2"]);
    assert_eq!(read(&data.join("b")), b"top b");
    assert_eq!(read(&data.join("fromupper")), b"upper");
    assert_eq!(names(&data.join("sub")), ["new"]);
    assert_eq!(names(&data.join("sub2")), ["new2"]);
    let cp = cpath(&data.join("sub"));
    let mut buf = [0u8; 8];
    // SAFETY: NUL-terminated strings and a buffer of the length passed.
    let r = unsafe {
        libc::lgetxattr(
            cp.as_ptr(),
            c"trusted.overlay.opaque".as_ptr(),
            buf.as_mut_ptr().cast(),
            8,
        )
    };
    assert!(
        r < 0,
        "the opaque marker of a layer was copied into the volume"
    );
    assert_same_tree(&merged, &data);
    m.unmount();
}

#[test]
fn one_volume_in_two_live_mounts_rw_and_ro() {
    let env = Env::new("shared");
    put(&env.image.join("data/img"), b"image");
    let mut env2 = Env::new("shared2");
    env2.state = env.state.clone();
    let a = env.mount(&["--volume", "shared:/data"]);
    let b = env2.mount(&["--volume", "shared:/data:ro"]);
    // Filled once, by the first mount; the second saw a non-empty volume.
    assert_eq!(names(&env2.at("data")), ["img"]);
    put(&env.at("data/from-a"), b"a");
    assert_eq!(read(&env2.at("data/from-a")), b"a");
    let e = errno(
        fs::write(env2.at("data/from-b"), b"b"),
        "write to the ro use",
    );
    assert_eq!(e, libc::EROFS);
    let mut used: Vec<String> = env.volumes()["shared"]["UsedBy"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    used.sort();
    let mut want = vec![
        env.mnt.display().to_string(),
        env2.mnt.display().to_string(),
    ];
    want.sort();
    assert_eq!(used, want);
    a.unmount();
    let o = env.volume(&["rm", "shared"]);
    assert!(
        !o.status.success(),
        "removed while the second mount uses it"
    );
    assert!(
        text(&o.stderr).contains(env2.mnt.to_str().unwrap()),
        "{}",
        text(&o.stderr)
    );
    b.unmount();
    env.volume_ok(&["rm", "shared"]);
}

#[test]
fn stratafs_umount_cleans_up_after_a_crashed_daemon() {
    let env = Env::new("crash");
    let bind = format!("{}:/srv", env.host.display());
    let mut m = env.mount(&["--volume", "cr:/data", "--bind", &bind, "--tmpfs", "/tmp"]);
    put(&env.at("data/f"), b"kept");
    m.crash();
    assert_eq!(
        mounts_under(&env.mnt).len(),
        4,
        "{:?}",
        mounts_under(&env.mnt)
    );
    let out = Command::new(stratafs_bin())
        .arg("umount")
        .arg(&env.mnt)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "umount of a crashed mount: {}",
        text(&out.stderr)
    );
    assert!(
        mounts_under(&env.mnt).is_empty(),
        "left: {:?}",
        mounts_under(&env.mnt)
    );
    assert_eq!(read(&env.vol_data("cr").join("f")), b"kept");
    // And it mounts again.
    let m = env.mount(&["--volume", "cr:/data"]);
    assert_eq!(read(&env.at("data/f")), b"kept");
    m.unmount();
}

#[test]
fn volume_rm_is_refused_while_a_crashed_mount_still_holds_the_volume() {
    let env = Env::new("crashrm");
    let mut m = env.mount(&["--volume", "held:/data"]);
    put(&env.at("data/f"), b"precious");
    m.crash();
    // The daemon is gone, but its volume is still mounted below the dead union.
    assert!(mounts_under(&env.mnt).contains(&env.at("data")));
    let o = env.volume(&["rm", "held"]);
    let survived = env.vol_data("held").join("f").exists();
    assert!(
        !o.status.success() && survived,
        "volume rm deleted a volume still mounted at {} (exit {}, stderr {:?})",
        env.at("data").display(),
        o.status,
        text(&o.stderr)
    );
    // The error names the union's mountpoint (what `stratafs umount` takes), not the
    // volume's own mount below it, and `volume ls` agrees that the volume is used.
    let err = text(&o.stderr);
    let advice = format!("(stratafs umount {})", env.mnt.display());
    assert!(err.contains(&advice), "{err}");
    let mnt = env.mnt.to_str().unwrap();
    assert_eq!(env.volumes()["held"]["UsedBy"], serde_json::json!([mnt]));
    let table = env.volume_ok(&["ls"]);
    assert!(
        table
            .lines()
            .any(|l| l.contains("  held  ") && l.ends_with(mnt)),
        "{table}"
    );
    // `stratafs umount` of the volume's own mount points at the union.
    let out = Command::new(stratafs_bin())
        .arg("umount")
        .arg(env.at("data"))
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains(&format!("run stratafs umount {mnt}")), "{err}");
    // The advice works, and then the volume is free.
    let out = Command::new(stratafs_bin())
        .arg("umount")
        .arg(&env.mnt)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(env.volumes()["held"]["UsedBy"], serde_json::json!([]));
    drop(m);
    env.volume_ok(&["rm", "held"]);
}

#[test]
fn submount_errors_name_the_symlink_on_the_way_and_a_missing_target() {
    let env = Env::new("errpath");
    fs::create_dir_all(env.image.join("real/lib")).unwrap();
    symlink("real", env.image.join("var")).unwrap();
    let err = env.refused(true, &["--volume", "v:/var/lib/data"]);
    assert!(
        err.contains("/var is not a directory in the image (a symlink is there)"),
        "{err}"
    );
    // Without a writable layer a missing target cannot be made: say so and what to do.
    let err = env.refused(false, &["--tmpfs", "/real/missing/t"]);
    assert!(
        err.contains("/real/missing does not exist in the image") && err.contains("--upper"),
        "{err}"
    );
}

#[test]
fn a_refused_mount_removes_the_targets_it_made_in_the_upper() {
    let env = Env::new("undo");
    symlink("/etc", env.image.join("sneaky")).unwrap();
    // /made/t (two levels) is made and mounted before /sneaky/x/y (three) fails.
    let err = env.refused(true, &["--tmpfs", "/made/t", "--tmpfs", "/sneaky/x/y"]);
    assert!(err.contains("symlink"), "{err}");
    assert_eq!(names(&env.upper), Vec::<String>::new(), "left in the upper");
    // And the image and a later mount see no trace of them.
    let m = env.mount(&[]);
    assert!(!env.at("made").exists());
    m.unmount();
}

#[test]
fn docker_volume_forms() {
    let env = Env::new("docker");
    put(&env.host.join("hf"), b"host");
    // A host dir whose path holds ':' (the target is the last part starting with '/').
    let colon = env.root().join("a:b");
    put(&colon.join("cf"), b"colon");
    let host_as_volume = format!("{}:/hostdata:ro", env.host.display());
    let colon_bind = format!("{}:/colon", colon.display());
    let m = env.mount(&[
        "--volume",
        &host_as_volume,
        "--volume",
        "nv:/data:ro,nocopy",
        "--bind",
        &colon_bind,
    ]);
    // -v /host:/path is a bind, as in Docker: no volume is made, the host dir shows.
    assert_eq!(read(&env.at("hostdata/hf")), b"host");
    assert!(!env.vol_data("host").exists());
    let e = errno(
        fs::write(env.at("hostdata/new"), b"x"),
        "write to a ro bind",
    );
    assert_eq!(e, libc::EROFS);
    // ro,nocopy: both options apply.
    assert!(names(&env.vol_data("nv")).is_empty());
    let e = errno(fs::write(env.at("data/new"), b"x"), "write to a ro volume");
    assert_eq!(e, libc::EROFS);
    assert_eq!(read(&env.at("colon/cf")), b"colon");
    m.unmount();
}

#[test]
fn two_submounts_on_one_target_and_a_zero_tmpfs_size_are_refused() {
    let env = Env::new("dup");
    let bind = format!("{}:/data", env.host.display());
    for args in [
        &["--volume", "a:/data", "--tmpfs", "/data"][..],
        &["--bind", &bind, "--volume", "b:/data"],
        &["--tmpfs", "/t", "--tmpfs", "/t"],
    ] {
        let err = env.refused(true, args);
        assert!(err.contains("given twice"), "{args:?}: {err}");
    }
    let err = env.refused(true, &["--tmpfs", "/t:size=0"]);
    assert!(
        err.contains("size=0") && err.contains("no size limit"),
        "{err}"
    );
    let made: Vec<String> = env.volumes().into_keys().collect();
    assert!(made.is_empty(), "a refused mount made volumes: {made:?}");
}

#[test]
fn read_only_image_without_upper_takes_submounts_on_existing_targets() {
    let env = Env::new("noupper");
    put(&env.image.join("etc/img"), b"image");
    fs::create_dir_all(env.image.join("data")).unwrap();
    fs::create_dir_all(env.image.join("tmp")).unwrap();
    let m = env
        .try_mount(
            false,
            &["--read-only", "--volume", "nu:/data", "--tmpfs", "/tmp"],
        )
        .unwrap_or_else(|o| panic!("{}", text(&o.stderr)));
    put(&env.at("data/v"), b"v");
    put(&env.at("tmp/t"), b"t");
    let e = errno(
        fs::write(env.at("etc/new"), b"x"),
        "create in a read-only union",
    );
    assert_eq!(e, libc::EROFS);
    m.unmount();
    assert_eq!(read(&env.vol_data("nu").join("v")), b"v");
    // A missing target cannot be made without a writable layer.
    let err = env.refused(false, &["--tmpfs", "/missing"]);
    assert!(err.contains("/missing"), "{err}");
}

#[test]
fn non_empty_volume_is_not_filled_and_nocopy_volume_stays_empty() {
    let env = Env::new("nofill");
    put(&env.image.join("data/img1"), b"1");
    put(&env.image.join("data/img2"), b"2");
    assert_eq!(env.volume_ok(&["create", "pre"]).trim(), "pre");
    put(&env.vol_data("pre").join("mine"), b"mine");

    let m = env.mount(&["--volume", "pre:/data"]);
    assert_eq!(names(&env.at("data")), ["mine"]);
    assert_eq!(names(&env.vol_data("pre")), ["mine"]);
    m.unmount();

    // nocopy over image content: the volume stays empty, the image content is hidden.
    put(&env.image.join("data2/img"), b"i");
    let m = env.mount(&["--volume", "nc3:/data2:nocopy"]);
    assert_eq!(names(&env.at("data2")), Vec::<String>::new());
    assert_eq!(names(&env.vol_data("nc3")), Vec::<String>::new());
    m.unmount();
    // Still empty, so a later mount without nocopy fills it.
    let m = env.mount(&["--volume", "nc3:/data2"]);
    assert_eq!(names(&env.vol_data("nc3")), ["img"]);
    m.unmount();
}

#[test]
fn read_only_volume_and_bind_give_erofs() {
    let env = Env::new("ro");
    put(&env.image.join("data/img"), b"image");
    put(&env.host.join("h"), b"host");
    let bind = format!("{}:/srv:ro", env.host.display());
    let m = env.mount(&["--volume", "rov:/data:ro", "--bind", &bind]);
    // A read-only volume is still filled from the image on first use.
    assert_eq!(read(&env.at("data/img")), b"image");
    assert_eq!(read(&env.at("srv/h")), b"host");
    for dir in ["data", "srv"] {
        let d = env.at(dir);
        let erofs = |r: io::Result<()>, what: &str| {
            assert_eq!(
                errno(r, &format!("{what} in /{dir}")),
                libc::EROFS,
                "{what} in /{dir}"
            )
        };
        erofs(fs::write(d.join("new"), b"x"), "create");
        erofs(fs::create_dir(d.join("newdir")), "mkdir");
        let existing = d.join(if dir == "data" { "img" } else { "h" });
        erofs(
            OpenOptions::new().append(true).open(&existing).map(drop),
            "open for append",
        );
        erofs(fs::remove_file(&existing), "unlink");
        erofs(
            fs::set_permissions(&existing, fs::Permissions::from_mode(0o600)),
            "chmod",
        );
        erofs(fs::rename(&existing, d.join("moved")), "rename");
    }
    // The union itself stays writable.
    put(&env.at("free"), b"ok");
    m.unmount();
    assert_eq!(read(&env.host.join("h")), b"host");
    assert_eq!(names(&env.host), ["h"]);
    assert_eq!(names(&env.vol_data("rov")), ["img"]);
}

#[test]
fn volume_outlives_the_mount_and_the_upper_layer() {
    let env = Env::new("outlive");
    let m = env.mount(&["--volume", "keep:/var/lib/app"]);
    put(&env.at("var/lib/app/db"), b"precious");
    put(&env.at("var/lib/app/dir/more"), b"more");
    put(&env.at("scratchfile"), b"union");
    m.unmount();
    assert_eq!(read(&env.vol_data("keep").join("db")), b"precious");

    // A new container: the writable layer is gone, the volume is not.
    fs::remove_dir_all(&env.upper).unwrap();
    fs::remove_dir_all(&env.work).unwrap();
    fs::create_dir(&env.upper).unwrap();
    fs::create_dir(&env.work).unwrap();
    let m = env.mount(&["--volume", "keep:/var/lib/app"]);
    assert!(
        !env.at("scratchfile").exists(),
        "the old upper layer is still visible"
    );
    assert_eq!(read(&env.at("var/lib/app/db")), b"precious");
    assert_eq!(read(&env.at("var/lib/app/dir/more")), b"more");
    m.unmount();
    assert!(env.volumes().contains_key("keep"));
}

#[test]
fn volume_rm_is_refused_while_mounted_and_accepted_after() {
    let env = Env::new("rm");
    let m = env.mount(&["--volume", "busy:/data"]);
    put(&env.at("data/f"), b"x");
    let used_by = &env.volumes()["busy"]["UsedBy"];
    assert_eq!(
        used_by[0].as_str(),
        Some(env.mnt.to_str().unwrap()),
        "{used_by}"
    );
    for args in [&["rm", "busy"][..], &["rm", "-f", "busy"][..]] {
        let o = env.volume(args);
        assert!(
            !o.status.success(),
            "volume {args:?} removed a volume in use"
        );
        let err = text(&o.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "{err:?}");
        assert!(err.contains("in use"), "{err}");
        assert!(
            err.contains(env.mnt.to_str().unwrap()),
            "the error does not name the mount: {err}"
        );
    }
    assert!(env
        .volume_ok(&["prune", "-a"])
        .contains("Total reclaimed space: 0B"));
    assert_eq!(
        read(&env.at("data/f")),
        b"x",
        "the volume's data went away under the mount"
    );
    m.unmount();

    assert_eq!(env.volume_ok(&["rm", "busy"]).trim(), "busy");
    assert!(!env.state.join("volumes/busy").exists());
    assert!(env.volumes().is_empty());
}

#[test]
fn volume_prune_removes_unused_anonymous_volumes_only_and_all_unused_with_a() {
    let env = Env::new("prune");
    let m = env.mount(&["--volume", "/anon1", "--volume", "named1:/n1"]);
    put(&env.at("anon1/f"), b"1");
    m.unmount();
    // A second mount, still live, with its own anonymous volume and a named one.
    let mut env2 = Env::new("prune2");
    env2.state = env.state.clone();
    let live = env2.mount(&["--volume", "/anon2", "--volume", "named2:/n2"]);

    let vols = env.volumes();
    assert_eq!(vols.len(), 4, "{vols:?}");
    let anon: Vec<&String> = vols
        .keys()
        .filter(|k| vols[*k]["Anonymous"] == true)
        .collect();
    assert_eq!(anon.len(), 2, "{vols:?}");
    let (unused_anon, live_anon): (Vec<&String>, Vec<&String>) = anon
        .into_iter()
        .partition(|k| vols[*k]["UsedBy"].as_array().unwrap().is_empty());
    let (unused_anon, live_anon) = (unused_anon[0].clone(), live_anon[0].clone());

    let out = env.volume_ok(&["prune"]);
    assert!(
        out.contains(&format!("Deleted Volumes:\n{unused_anon}\n")),
        "{out}"
    );
    let left: Vec<String> = env.volumes().into_keys().collect();
    let mut want = vec![
        live_anon.clone(),
        "named1".to_string(),
        "named2".to_string(),
    ];
    want.sort();
    assert_eq!(left, want);

    let out = env.volume_ok(&["prune", "-a"]);
    assert!(out.contains("named1"), "{out}");
    let left: Vec<String> = env.volumes().into_keys().collect();
    let mut want = vec![live_anon.clone(), "named2".to_string()];
    want.sort();
    assert_eq!(left, want, "prune -a touched a volume in use");
    assert!(env2.at("anon2").is_dir());

    live.unmount();
    env.volume_ok(&["prune"]);
    assert_eq!(env.volumes().into_keys().collect::<Vec<_>>(), ["named2"]);
    drop(env2);
}

// ---------------------------------------------------------------------------------------------
// Shadowing, binds, nesting.

#[test]
fn submounts_shadow_image_content_which_reappears_untouched_after_unmount() {
    let env = Env::new("shadow");
    put(&env.image.join("data/a"), b"image a");
    put(&env.image.join("srv/x"), b"image x");
    put(&env.image.join("cache/old"), b"image old");
    put(&env.image.join("etc/conf"), b"image conf");
    assert_eq!(env.volume_ok(&["create", "full"]).trim(), "full");
    put(&env.vol_data("full").join("v"), b"volume v");
    put(&env.host.join("dir/h"), b"host h");
    put(&env.host.join("conf"), b"host conf");
    let (bdir, bfile) = (
        format!("{}:/srv", env.host.join("dir").display()),
        format!("{}:/etc/conf", env.host.join("conf").display()),
    );
    let m = env.mount(&[
        "--volume",
        "full:/data",
        "--bind",
        &bdir,
        "--bind",
        &bfile,
        "--tmpfs",
        "/cache",
    ]);
    assert_eq!(names(&env.at("data")), ["v"]);
    assert_eq!(names(&env.at("srv")), ["h"]);
    assert_eq!(names(&env.at("cache")), Vec::<String>::new());
    assert_eq!(read(&env.at("etc/conf")), b"host conf");
    // Same names as the hidden image files: they land in the sub-mounts.
    put(&env.at("data/a"), b"vol a");
    put(&env.at("srv/x"), b"host x");
    put(&env.at("cache/old"), b"tmp old");
    m.unmount();

    let before_upper = names(&env.upper);
    let m = env.mount(&[]);
    assert_eq!(read(&env.at("data/a")), b"image a");
    assert_eq!(read(&env.at("srv/x")), b"image x");
    assert_eq!(read(&env.at("cache/old")), b"image old");
    assert_eq!(read(&env.at("etc/conf")), b"image conf");
    assert_eq!(names(&env.at("data")), ["a"]);
    assert_eq!(names(&env.at("srv")), ["x"]);
    assert_eq!(names(&env.at("cache")), ["old"]);
    m.unmount();
    // Nothing written through a sub-mount reached the writable layer.
    for d in ["data", "srv", "cache"] {
        let p = env.upper.join(d);
        assert!(
            !p.exists() || names(&p).is_empty(),
            "upper/{d}: {:?}",
            names(&p)
        );
    }
    assert_eq!(names(&env.upper), before_upper);
    assert_eq!(read(&env.image.join("data/a")), b"image a");
    assert_eq!(read(&env.vol_data("full").join("a")), b"vol a");
    assert_eq!(read(&env.host.join("dir/x")), b"host x");
}

#[test]
fn single_file_bind_shows_where_the_image_has_nothing_and_changes_flow_both_ways() {
    let env = Env::new("filebind");
    put(&env.image.join("etc/hostname"), b"image-host\n");
    put(&env.host.join("app.conf"), b"v1\n");
    put(&env.host.join("hostname"), b"bound-host\n");
    let b1 = format!(
        "{}:/opt/app/conf.d/app.conf",
        env.host.join("app.conf").display()
    );
    let b2 = format!("{}:/etc/hostname", env.host.join("hostname").display());
    let m = env.mount(&["--bind", &b1, "--bind", &b2]);
    let target = env.at("opt/app/conf.d/app.conf");
    assert!(lstat(&target).is_file());
    assert_eq!(read(&target), b"v1\n");
    assert_eq!(read(&env.at("etc/hostname")), b"bound-host\n");
    // The missing parents were made in the upper layer.
    assert!(
        env.upper.join("opt/app/conf.d").is_dir(),
        "parents not created in the upper dir"
    );
    assert_eq!(names(&env.at("opt/app/conf.d")), ["app.conf"]);

    // Host-side change, seen at once; a change through the mount reaches the host file.
    put(&env.host.join("app.conf"), b"v2 from the host\n");
    assert_eq!(read(&target), b"v2 from the host\n");
    OpenOptions::new()
        .append(true)
        .open(&target)
        .unwrap()
        .write_all(b"v3\n")
        .unwrap();
    assert_eq!(read(&env.host.join("app.conf")), b"v2 from the host\nv3\n");
    assert_eq!(
        lstat(&target).ino(),
        lstat(&env.host.join("app.conf")).ino()
    );
    // The bound file itself cannot be removed or replaced by rename: it is a mountpoint.
    let e = errno(fs::remove_file(&target), "unlink of a bound file");
    assert_eq!(e, libc::EBUSY, "unlink of a bound file: errno {e}");
    m.unmount();
    assert_eq!(read(&env.host.join("hostname")), b"bound-host\n");
    let m = env.mount(&[]);
    assert_eq!(read(&env.at("etc/hostname")), b"image-host\n");
    m.unmount();
}

#[test]
fn bind_and_volume_changes_on_the_host_are_visible_at_once() {
    let env = Env::new("hostside");
    put(&env.host.join("a"), b"1");
    let bind = format!("{}:/srv", env.host.display());
    let m = env.mount(&["--bind", &bind, "--volume", "hv:/data"]);
    let (host, data) = (&env.host, env.vol_data("hv"));
    for (hostdir, mdir) in [
        (host.clone(), env.at("srv")),
        (data.clone(), env.at("data")),
    ] {
        put(&hostdir.join("new"), b"created on the host");
        assert_eq!(read(&mdir.join("new")), b"created on the host");
        put(&hostdir.join("new"), b"changed");
        assert_eq!(read(&mdir.join("new")), b"changed");
        fs::rename(hostdir.join("new"), hostdir.join("renamed")).unwrap();
        assert!(!mdir.join("new").exists());
        assert_eq!(read(&mdir.join("renamed")), b"changed");
        chmod(&hostdir.join("renamed"), 0o604);
        assert_eq!(lstat(&mdir.join("renamed")).mode() & 0o7777, 0o604);
        fs::remove_file(hostdir.join("renamed")).unwrap();
        assert!(!mdir.join("renamed").exists());
        // And the reverse.
        put(&mdir.join("from-mount"), b"m");
        assert_eq!(read(&hostdir.join("from-mount")), b"m");
        fs::create_dir(mdir.join("d")).unwrap();
        assert!(hostdir.join("d").is_dir());
    }
    m.unmount();
    assert_eq!(names(host), ["a", "d", "from-mount"]);
}

#[test]
fn nested_submounts_resolve_to_the_deepest() {
    let env = Env::new("nested");
    put(&env.image.join("data/img"), b"i");
    let bind = format!("{}:/data/sub", env.host.display());
    // Deepest first on the command line: the daemon must order them itself.
    let m = env.mount(&[
        "--tmpfs",
        "/data/sub/tmp",
        "--bind",
        &bind,
        "--volume",
        "outer:/data",
    ]);
    let below = mounts_under(&env.mnt);
    let want = [
        env.mnt.clone(),
        env.at("data"),
        env.at("data/sub"),
        env.at("data/sub/tmp"),
    ];
    assert_eq!(below, want, "mount order in mountinfo");
    assert_eq!(
        mount_type(&env.at("data/sub/tmp")).as_deref(),
        Some("tmpfs")
    );

    put(&env.at("data/v"), b"volume");
    put(&env.at("data/sub/b"), b"bind");
    put(&env.at("data/sub/tmp/t"), b"tmpfs");
    assert_eq!(read(&env.vol_data("outer").join("v")), b"volume");
    assert_eq!(read(&env.host.join("b")), b"bind");
    assert!(
        !env.vol_data("outer").join("sub/b").exists(),
        "a bind write reached the volume"
    );
    assert!(
        !env.host.join("tmp/t").exists(),
        "a tmpfs write reached the bind source"
    );
    // The volume got the image content and the mountpoint dir for the bind.
    assert_eq!(names(&env.vol_data("outer")), ["img", "sub", "v"]);
    m.unmount();
    assert!(
        env.host.join("tmp").is_dir(),
        "the tmpfs mountpoint dir was made in the bind"
    );
    assert_eq!(names(&env.host.join("tmp")), Vec::<String>::new());
}

// ---------------------------------------------------------------------------------------------
// tmpfs and --read-only.

#[test]
fn tmpfs_is_empty_at_each_mount_size_limited_and_gone_at_unmount() {
    let env = Env::new("tmpfs");
    put(&env.image.join("scratch/old"), b"image");
    let m = env.mount(&[
        "--tmpfs",
        "/scratch:size=65536",
        "--tmpfs",
        "/private:mode=700",
        "--tmpfs",
        "/run",
    ]);
    assert_eq!(mount_type(&env.at("scratch")).as_deref(), Some("tmpfs"));
    assert_eq!(names(&env.at("scratch")), Vec::<String>::new());
    assert_eq!(
        lstat(&env.at("scratch")).mode() & 0o7777,
        0o1777,
        "default tmpfs mode"
    );
    assert_eq!(
        lstat(&env.at("run")).mode() & 0o7777,
        0o1777,
        "default tmpfs mode"
    );
    assert_eq!(lstat(&env.at("private")).mode() & 0o7777, 0o700);

    let mut f = File::create(env.at("scratch/big")).unwrap();
    let e = errno(
        f.write_all(&vec![7u8; 256 << 10]),
        "writing 256 KiB in a 64 KiB tmpfs",
    );
    assert_eq!(e, libc::ENOSPC, "errno {e}");
    drop(f);
    fs::remove_file(env.at("scratch/big")).unwrap();
    put(&env.at("scratch/small"), &[1u8; 4096]);
    put(&env.at("run/pid"), b"1");
    m.unmount();
    assert!(!env.upper.join("scratch/small").exists() && !env.upper.join("run/pid").exists());

    let m = env.mount(&["--tmpfs", "/scratch:size=65536", "--tmpfs", "/run"]);
    assert_eq!(
        names(&env.at("scratch")),
        Vec::<String>::new(),
        "tmpfs content survived"
    );
    assert_eq!(
        names(&env.at("run")),
        Vec::<String>::new(),
        "tmpfs content survived"
    );
    m.unmount();
}

#[test]
fn read_only_union_refuses_every_write_outside_submounts() {
    let env = Env::new("rounion");
    put(&env.image.join("etc/img"), b"image");
    fs::create_dir_all(env.image.join("data")).unwrap();
    fs::create_dir_all(env.image.join("tmp")).unwrap();
    fs::create_dir_all(env.image.join("srv")).unwrap();
    fs::create_dir_all(env.image.join("emptydir")).unwrap();
    // A file already in the writable layer from an earlier run.
    let m = env.mount(&[]);
    put(&env.at("etc/up"), b"upper");
    m.unmount();
    let upper_before = fs::read_dir(env.upper.join("etc")).unwrap().count();

    let bind = format!("{}:/srv", env.host.display());
    let m = env.mount(&[
        "--read-only",
        "--volume",
        "rw:/data",
        "--bind",
        &bind,
        "--tmpfs",
        "/tmp",
    ]);
    let erofs = |r: io::Result<()>, what: &str| {
        assert_eq!(errno(r, what), libc::EROFS, "{what}");
    };
    for existing in ["etc/img", "etc/up"] {
        let p = env.at(existing);
        erofs(
            OpenOptions::new().write(true).open(&p).map(drop),
            &format!("open {existing} O_WRONLY"),
        );
        erofs(
            OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(&p)
                .map(drop),
            &format!("truncate {existing}"),
        );
        erofs(fs::remove_file(&p), &format!("unlink {existing}"));
        erofs(
            fs::set_permissions(&p, fs::Permissions::from_mode(0o600)),
            &format!("chmod {existing}"),
        );
        erofs(
            std::os::unix::fs::chown(&p, Some(1), Some(1)),
            &format!("chown {existing}"),
        );
        erofs(
            File::open(&p).and_then(|f| f.set_modified(SystemTime::UNIX_EPOCH)),
            &format!("utimes {existing}"),
        );
        erofs(
            fs::rename(&p, env.at("etc/moved")),
            &format!("rename {existing}"),
        );
        erofs(
            fs::hard_link(&p, env.at("etc/link")),
            &format!("link {existing}"),
        );
        let cp = cpath(&p);
        // SAFETY: NUL-terminated strings and a buffer of the length passed.
        let r =
            unsafe { libc::lsetxattr(cp.as_ptr(), c"user.x".as_ptr(), b"1".as_ptr().cast(), 1, 0) };
        let e = if r == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        };
        erofs(e, &format!("setxattr {existing}"));
    }
    erofs(fs::write(env.at("newfile"), b"x"), "create");
    erofs(fs::create_dir(env.at("newdir")), "mkdir");
    erofs(symlink("x", env.at("newlink")), "symlink");
    erofs(fs::remove_dir(env.at("emptydir")), "rmdir");
    // Volumes, binds and tmpfs stay writable.
    put(&env.at("data/ok"), b"v");
    put(&env.at("srv/ok"), b"b");
    put(&env.at("tmp/ok"), b"t");
    m.unmount();
    assert_eq!(read(&env.vol_data("rw").join("ok")), b"v");
    assert_eq!(read(&env.host.join("ok")), b"b");
    assert_eq!(
        fs::read_dir(env.upper.join("etc")).unwrap().count(),
        upper_before
    );
    assert_eq!(read(&env.upper.join("etc/up")), b"upper");
    assert!(!env.upper.join("newfile").exists());
}

// ---------------------------------------------------------------------------------------------
// The sub-mount boundary.

#[test]
fn rename_and_link_across_a_submount_boundary_fail() {
    let env = Env::new("exdev");
    put(&env.image.join("img"), b"image");
    put(&env.host.join("h"), b"host");
    let bind = format!("{}:/srv", env.host.display());
    let m = env.mount(&["--volume", "xv:/data", "--bind", &bind, "--tmpfs", "/tmp"]);
    put(&env.at("u"), b"union");
    put(&env.at("data/v"), b"volume");
    let exdev = |from: &str, to: &str| {
        let (f, t) = (env.at(from), env.at(to));
        let e = errno(fs::rename(&f, &t), &format!("rename {from} -> {to}"));
        assert_eq!(e, libc::EXDEV, "rename {from} -> {to}: errno {e}");
        let e = errno(fs::hard_link(&f, &t), &format!("link {from} -> {to}"));
        assert_eq!(e, libc::EXDEV, "link {from} -> {to}: errno {e}");
    };
    exdev("u", "data/u");
    exdev("img", "data/img");
    exdev("data/v", "v");
    exdev("data/v", "srv/v");
    exdev("srv/h", "tmp/h");
    exdev("srv/h", "h");
    // The mountpoints themselves: the kernel says EBUSY (same parent mount, busy dentry).
    for mp in ["data", "srv", "tmp"] {
        let e = errno(
            fs::rename(env.at(mp), env.at("moved")),
            &format!("rename /{mp}"),
        );
        assert_eq!(e, libc::EBUSY, "rename of mountpoint /{mp}: errno {e}");
        let e = errno(fs::remove_dir(env.at(mp)), &format!("rmdir /{mp}"));
        assert_eq!(e, libc::EBUSY, "rmdir of mountpoint /{mp}: errno {e}");
        // Renaming something over a mountpoint is refused the same way.
        fs::create_dir(env.at("spare")).unwrap();
        let e = errno(
            fs::rename(env.at("spare"), env.at(mp)),
            &format!("rename over /{mp}"),
        );
        assert_eq!(e, libc::EBUSY, "rename over mountpoint /{mp}: errno {e}");
        fs::remove_dir(env.at("spare")).unwrap();
    }
    // Inside one sub-mount, rename and link work.
    fs::rename(env.at("data/v"), env.at("data/v2")).unwrap();
    fs::hard_link(env.at("data/v2"), env.at("data/v3")).unwrap();
    assert_eq!(lstat(&env.vol_data("xv").join("v3")).nlink(), 2);
    m.unmount();
    assert_eq!(read(&env.image.join("img")), b"image");
    assert_eq!(names(&env.host), ["h"]);
}

// ---------------------------------------------------------------------------------------------
// Symlinks: no target may be redirected, and symlinks are shown, not followed.

#[test]
fn targets_through_image_symlinks_are_refused_and_nothing_lands_on_the_host() {
    let env = Env::new("escape");
    let victim = env.root().join("victim");
    fs::create_dir(&victim).unwrap();
    put(&victim.join("victim-file"), b"victim");
    let victim_rel = victim.strip_prefix("/").unwrap();
    let unique = format!("stratafs-escape-{}", std::process::id());
    fs::create_dir_all(env.image.join("a")).unwrap();
    symlink(&victim, env.image.join("sneaky")).unwrap();
    symlink(
        format!("../../../../../../../../{}", victim_rel.display()),
        env.image.join("rel"),
    )
    .unwrap();
    symlink(&victim, env.image.join("a/b")).unwrap();
    symlink("/etc", env.image.join("etcl")).unwrap();
    symlink(victim.join("victim-file"), env.image.join("filelink")).unwrap();
    // A symlink in the writable layer, as a container would leave it.
    symlink(&victim, env.upper.join("upsneaky")).unwrap();
    put(&env.host.join("hfile"), b"host file");
    fs::create_dir(env.host.join("hdir")).unwrap();

    let hdir = env.host.join("hdir");
    let hfile = env.host.join("hfile");
    let mut cases: Vec<(String, String)> = Vec::new();
    for t in [
        "/sneaky/x",
        "/rel/x",
        "/a/b/c/x",
        "/upsneaky/x",
        "/sneaky",
        &format!("/etcl/{unique}"),
    ] {
        cases.push(("--volume".into(), format!("esc:{t}")));
        cases.push(("--bind".into(), format!("{}:{t}", hdir.display())));
        cases.push(("--tmpfs".into(), t.to_string()));
    }
    for t in [
        "/sneaky/victim-file",
        &format!("/etcl/{unique}"),
        "/etcl/passwd",
    ] {
        cases.push(("--bind".into(), format!("{}:{t}", hfile.display())));
    }
    for (flag, spec) in &cases {
        let err = env.refused(true, &[flag, spec]);
        assert!(
            err.contains("symlink"),
            "{flag} {spec}: the error does not say a symlink is in the way: {err}"
        );
        assert_eq!(
            names(&victim),
            ["victim-file"],
            "{flag} {spec}: wrote into the victim dir"
        );
        assert_eq!(read(&victim.join("victim-file")), b"victim");
        assert!(
            mounts_under(&victim).is_empty(),
            "{flag} {spec}: mounted on the host"
        );
        assert!(
            mounts_under(Path::new("/etc")).is_empty(),
            "{flag} {spec}: mounted in /etc"
        );
        assert!(
            !Path::new("/etc").join(&unique).exists(),
            "{flag} {spec}: created in /etc"
        );
    }
    // A sub-mount before the bad one is taken down again, and its volume is free.
    let err = env.refused(true, &["--volume", "first:/ok", "--tmpfs", "/sneaky/x"]);
    assert!(err.contains("/sneaky/x"), "{err}");
    assert_eq!(env.volume_ok(&["rm", "first"]).trim(), "first");
}

#[test]
fn file_bind_onto_an_image_symlink_is_refused() {
    let env = Env::new("filelink");
    let victim = env.root().join("victim");
    put(&victim, b"victim");
    symlink(&victim, env.image.join("filelink")).unwrap();
    symlink("/etc/passwd", env.image.join("pwlink")).unwrap();
    put(&env.host.join("hfile"), b"host file");
    for t in ["/filelink", "/pwlink"] {
        let spec = format!("{}:{t}", env.host.join("hfile").display());
        let err = env.refused(true, &["--bind", &spec]);
        assert!(err.contains("symlink"), "--bind {spec}: {err}");
        assert_eq!(read(&victim), b"victim");
        assert!(mounts_under(&victim).is_empty() && mounts_under(Path::new("/etc")).is_empty());
    }
}

#[test]
fn symlinks_in_binds_volumes_and_the_image_are_shown_never_followed() {
    let env = Env::new("links");
    symlink("/etc/passwd", env.host.join("pw")).unwrap();
    symlink("../../../../etc/shadow", env.host.join("rel")).unwrap();
    fs::create_dir_all(env.image.join("data")).unwrap();
    symlink("/etc/passwd", env.image.join("data/pw")).unwrap();
    symlink("/etc/passwd", env.image.join("pw")).unwrap();
    let bind = format!("{}:/srv", env.host.display());
    let m = env.mount(&["--bind", &bind, "--volume", "lv:/data"]);
    for (p, target) in [
        ("srv/pw", "/etc/passwd"),
        ("srv/rel", "../../../../etc/shadow"),
        ("data/pw", "/etc/passwd"),
        ("pw", "/etc/passwd"),
    ] {
        assert!(
            lstat(&env.at(p)).file_type().is_symlink(),
            "{p} is not a symlink"
        );
        assert_eq!(fs::read_link(env.at(p)).unwrap(), Path::new(target), "{p}");
    }
    let copied = env.vol_data("lv").join("pw");
    assert!(
        lstat(&copied).file_type().is_symlink(),
        "the volume copy followed the symlink"
    );
    assert_eq!(fs::read_link(&copied).unwrap(), Path::new("/etc/passwd"));
    m.unmount();
}

// ---------------------------------------------------------------------------------------------
// Bad names and targets.

#[test]
fn bad_volume_names_and_targets_are_refused_with_one_line() {
    let env = Env::new("bad");
    put(&env.image.join("dir/file"), b"f");
    let long = "x".repeat(129);
    let host = env.host.display().to_string();
    let mut bad: Vec<Vec<String>> = Vec::new();
    for name in ["..", "a/b", "", ".hidden", &long, "a b", "."] {
        bad.push(vec!["--volume".into(), format!("{name}:/data")]);
    }
    // Glued, or clap would take "-dash..." for a flag.
    bad.push(vec!["--volume=-dash:/data".into()]);
    for target in [
        "data", "/", "/a/../b", "/..", "/a//b", "//a", "/a/./b", "/a/", "",
    ] {
        bad.push(vec!["--volume".into(), format!("v:{target}")]);
        bad.push(vec!["--bind".into(), format!("{host}:{target}")]);
        bad.push(vec!["--tmpfs".into(), target.to_string()]);
    }
    for spec in ["v:/data:bogus".to_string(), "v:/data:ro:extra".to_string()] {
        bad.push(vec!["--volume".into(), spec]);
    }
    bad.push(vec!["--bind".into(), format!("{host}/missing:/data")]);
    bad.push(vec!["--bind".into(), "relative/host:/data".into()]);
    bad.push(vec!["--bind".into(), host.clone()]);
    bad.push(vec!["--tmpfs".into(), "/t:size=lots".into()]);
    bad.push(vec!["--tmpfs".into(), "/t:mode=99999".into()]);
    // Targets the image makes impossible: a directory bound onto a file, a file onto a dir.
    bad.push(vec!["--bind".into(), format!("{host}:/dir/file")]);
    put(&env.host.join("f"), b"f");
    bad.push(vec!["--bind".into(), format!("{host}/f:/dir")]);
    bad.push(vec!["--tmpfs".into(), "/dir/file".into()]);
    bad.push(vec!["--volume".into(), "v:/dir/file/below".into()]);
    bad.push(vec!["--volume".into(), "v:/dir/file".into()]);
    for args in &bad {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        // A good sub-mount along with the bad one must not stay mounted either.
        let mut with_good = vec!["--tmpfs", "/good"];
        with_good.extend(&args);
        env.refused(true, &with_good);
    }
    let made: Vec<String> = env.volumes().into_keys().collect();
    assert!(made.is_empty(), "a refused mount made volumes: {made:?}");
    // The longest valid name works.
    let max = "n".repeat(128);
    let m = env.mount(&["--volume", &format!("{max}:/data")]);
    assert!(env.vol_data(&max).is_dir());
    m.unmount();
}

// ---------------------------------------------------------------------------------------------
// Concurrency.

#[test]
fn concurrent_writers_in_a_volume_a_bind_and_the_union() {
    let env = Env::new("concurrent");
    put(&env.image.join("spool/seed"), b"seed");
    let bind = format!("{}:/srv", env.host.display());
    let m = env.mount(&["--volume", "cv:/data", "--bind", &bind]);
    const WRITERS: usize = 6;
    const FILES: usize = 30;
    const RECORD: usize = 32;
    let dirs = ["data", "spool", "srv"];
    std::thread::scope(|s| {
        for t in 0..WRITERS {
            let env = &env;
            s.spawn(move || {
                let dir = env.at(dirs[t % dirs.len()]).join(format!("w{t}"));
                fs::create_dir(&dir).unwrap();
                let mut logs: Vec<File> = ["data/log", "spool/log"]
                    .iter()
                    .map(|p| {
                        OpenOptions::new()
                            .create(true)
                            .append(true)
                            .mode(0o644)
                            .open(env.at(p))
                            .unwrap()
                    })
                    .collect();
                for i in 0..FILES {
                    let len = 1 + (t * 7919 + i * 104_729) % 150_000;
                    let data = pattern(t, i, len);
                    let mut f = File::create(dir.join(format!("f{i}"))).unwrap();
                    for chunk in data.chunks(8192 + t * 512) {
                        f.write_all(chunk).unwrap();
                    }
                    drop(f);
                    let rec = format!("{t:02}-{i:04}");
                    let rec = format!("{rec:<width$}\n", width = RECORD - 1);
                    for log in &mut logs {
                        log.write_all(rec.as_bytes()).unwrap();
                    }
                }
            });
        }
    });
    let check = |root: &dyn Fn(usize) -> PathBuf, logs: &[PathBuf]| {
        for t in 0..WRITERS {
            for i in 0..FILES {
                let p = root(t).join(format!("f{i}"));
                let len = 1 + (t * 7919 + i * 104_729) % 150_000;
                assert!(
                    read(&p) == pattern(t, i, len),
                    "{}: wrong content",
                    p.display()
                );
            }
        }
        for log in logs {
            let body = read(log);
            assert_eq!(
                body.len(),
                WRITERS * FILES * RECORD,
                "{}: size",
                log.display()
            );
            let mut recs: Vec<&[u8]> = body.chunks(RECORD).collect();
            recs.sort();
            let mut want: Vec<String> = (0..WRITERS)
                .flat_map(|t| {
                    (0..FILES).map(move |i| {
                        format!("{:<width$}\n", format!("{t:02}-{i:04}"), width = RECORD - 1)
                    })
                })
                .collect();
            want.sort();
            let want: Vec<&[u8]> = want.iter().map(|s| s.as_bytes()).collect();
            assert!(recs == want, "{}: records torn or lost", log.display());
        }
    };
    check(
        &|t| env.at(dirs[t % 3]).join(format!("w{t}")),
        &[env.at("data/log"), env.at("spool/log")],
    );
    m.unmount();
    // The same on the backing dirs, after the daemon is gone.
    let backing = |t: usize| -> PathBuf {
        let base = match dirs[t % 3] {
            "data" => env.vol_data("cv"),
            "spool" => env.upper.join("spool"),
            _ => env.host.clone(),
        };
        base.join(format!("w{t}"))
    };
    check(
        &backing,
        &[env.vol_data("cv").join("log"), env.upper.join("spool/log")],
    );
}

#[test]
fn concurrent_writers_of_one_file_copied_up_at_once() {
    let env = Env::new("samefile");
    const STRIPE: usize = 16 << 10;
    const STRIPES: usize = 64;
    const WRITERS: usize = 4;
    let original = pattern(99, 0, STRIPE * STRIPES);
    put(&env.image.join("spool/big"), &original);
    put(&env.image.join("data/big"), &original);
    let m = env.mount(&["--volume", "sv:/data"]);
    // Every writer opens the image file at once (racing copy-ups in the union), then writes
    // its own stripes with pwrite.
    let barrier = std::sync::Barrier::new(WRITERS * 2);
    std::thread::scope(|s| {
        for file in ["spool/big", "data/big"] {
            for t in 0..WRITERS {
                let (env, barrier) = (&env, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    let f = OpenOptions::new().write(true).open(env.at(file)).unwrap();
                    for k in (t..STRIPES).step_by(WRITERS) {
                        if k % 3 == 0 {
                            continue; // left as the image had it
                        }
                        let data = pattern(t, k, STRIPE);
                        std::os::unix::fs::FileExt::write_all_at(&f, &data, (k * STRIPE) as u64)
                            .unwrap();
                    }
                });
            }
        }
    });
    let expected: Vec<u8> = (0..STRIPES)
        .flat_map(|k| {
            if k % 3 == 0 {
                original[k * STRIPE..(k + 1) * STRIPE].to_vec()
            } else {
                pattern(k % WRITERS, k, STRIPE)
            }
        })
        .collect();
    for file in ["spool/big", "data/big"] {
        assert!(read(&env.at(file)) == expected, "{file}: wrong content");
    }
    m.unmount();
    assert!(read(&env.upper.join("spool/big")) == expected, "upper copy");
    assert!(
        read(&env.vol_data("sv").join("big")) == expected,
        "volume copy"
    );
    assert!(
        read(&env.image.join("spool/big")) == original,
        "the image changed"
    );
}
