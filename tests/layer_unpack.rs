//! `stratafs layer unpack` end to end: the real binary, layers checked through a kernel
//! overlayfs mount of the result. Needs root (whiteout devices, trusted xattrs, mounts).

use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

#[path = "support/scratch.rs"]
mod scratch;
use scratch::TempDir;
#[path = "support/rawtar.rs"]
mod rawtar;
use rawtar::RawTar;

/// A read-only kernel overlayfs mount, unmounted on drop (also when a test panics).
struct Overlay(PathBuf);

impl Overlay {
    fn mount(lowers_top_first: &[&Path], target: PathBuf) -> Overlay {
        std::fs::create_dir_all(&target).unwrap();
        let lower: Vec<String> = lowers_top_first
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        let st = Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o"])
            .arg(format!("ro,lowerdir={}", lower.join(":")))
            .arg(&target)
            .status()
            .unwrap();
        assert!(st.success(), "mount -t overlay failed");
        Overlay(target)
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        if !Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success())
        {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

fn unpack(args: &[&Path], extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stratafs"))
        .args(["layer", "unpack"])
        .args(extra)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn unpack_ok(tar: &Path, dir: &Path, extra: &[&str]) {
    let o = unpack(&[tar, dir], extra);
    assert!(
        o.status.success(),
        "unpack {}: {}",
        tar.display(),
        stderr(&o)
    );
}

fn tar_dir(src: &Path, out: &Path, flags: &[&str]) {
    let st = Command::new("tar")
        .args(flags)
        .arg("-C")
        .arg(src)
        .arg("-cf")
        .arg(out)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
}

fn names(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in walkdir(dir) {
        out.push(e.strip_prefix(dir).unwrap().display().to_string());
    }
    out.sort();
    out
}

fn walkdir(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        out.push(p.clone());
        if std::fs::symlink_metadata(&p).unwrap().is_dir() {
            out.extend(walkdir(&p));
        }
    }
    out
}

fn xattr(path: &Path, name: &str) -> Option<String> {
    let o = Command::new("getfattr")
        .args(["-h", "--only-values", "-n", name])
        .arg(path)
        .output()
        .unwrap();
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).into_owned())
}

/// A base layer and a layer above it that deletes a file, makes a directory opaque, adds
/// files, and carries an AUFS metadata entry.
fn two_layers(tmp: &Path) -> (PathBuf, PathBuf) {
    let base = tmp.join("src-base");
    let top = tmp.join("src-top");
    for d in ["d/sub", "keepdir"] {
        std::fs::create_dir_all(base.join(d)).unwrap();
    }
    std::fs::create_dir_all(top.join("d")).unwrap();
    std::fs::create_dir_all(top.join("keepdir")).unwrap();
    std::fs::create_dir_all(top.join(".wh..wh.plnk")).unwrap();
    for (f, data) in [
        ("a", "a"),
        ("d/x", "x"),
        ("d/sub/y", "y"),
        ("keepdir/k", "k"),
        ("keep", "keep"),
    ] {
        std::fs::write(base.join(f), data).unwrap();
    }
    for (f, data) in [
        (".wh.a", ""),
        ("d/.wh..wh..opq", ""),
        ("d/z", "z"),
        ("new", "new"),
        ("keepdir/.wh.k", ""),
    ] {
        std::fs::write(top.join(f), data).unwrap();
    }
    (base, top)
}

#[test]
fn whiteouts_become_what_kernel_overlayfs_reads() {
    let tmp = TempDir::new("overlay");
    let (base, top) = two_layers(&tmp.0);
    // Plain and gzip layers, as registries serve them.
    tar_dir(&base, &tmp.0.join("base.tar"), &[]);
    tar_dir(&top, &tmp.0.join("top.tar.gz"), &["-z"]);
    let (l1, l2) = (tmp.0.join("layers/l1"), tmp.0.join("layers/l2"));
    std::fs::create_dir(tmp.0.join("layers")).unwrap();
    unpack_ok(&tmp.0.join("base.tar"), &l1, &[]);
    unpack_ok(&tmp.0.join("top.tar.gz"), &l2, &[]);

    let wh = std::fs::symlink_metadata(l2.join("a")).unwrap();
    assert!(
        wh.file_type().is_char_device() && wh.rdev() == 0,
        "a is a 0:0 whiteout"
    );
    assert_eq!(
        xattr(&l2.join("d"), "trusted.overlay.opaque").as_deref(),
        Some("y")
    );
    assert_eq!(names(&l2), ["a", "d", "d/z", "keepdir", "keepdir/k", "new"]);

    let merged = Overlay::mount(&[&l2, &l1], tmp.0.join("merged"));
    assert_eq!(names(&merged.0), ["d", "d/z", "keep", "keepdir", "new"]);
    assert_eq!(std::fs::read(merged.0.join("keep")).unwrap(), b"keep");
    let left: Vec<_> = std::fs::read_dir(tmp.0.join("layers"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 2, "no temp dirs left: {left:?}");
}

#[test]
fn keep_wh_keeps_whiteout_files_and_zstd_is_detected() {
    let tmp = TempDir::new("keepwh");
    let (_, top) = two_layers(&tmp.0);
    tar_dir(&top, &tmp.0.join("top.tar"), &[]);
    let zst = zstd::encode_all(&std::fs::read(tmp.0.join("top.tar")).unwrap()[..], 3).unwrap();
    std::fs::write(tmp.0.join("top.tar.zst"), zst).unwrap();
    let l = tmp.0.join("l");
    unpack_ok(&tmp.0.join("top.tar.zst"), &l, &["--keep-wh"]);
    assert!(std::fs::symlink_metadata(l.join(".wh.a"))
        .unwrap()
        .is_file());
    assert!(std::fs::symlink_metadata(l.join("d/.wh..wh..opq"))
        .unwrap()
        .is_file());
    assert_eq!(xattr(&l.join("d"), "trusted.overlay.opaque"), None);
    assert_eq!(std::fs::read(l.join("d/z")).unwrap(), b"z");
}

#[test]
fn hostile_layers_are_refused_and_dir_is_never_created() {
    let tmp = TempDir::new("hostile");
    let outside = tmp.0.join("outside");
    std::fs::create_dir(&outside).unwrap();
    let out = outside.to_str().unwrap();
    let cases = [
        (
            "dot-dot",
            RawTar::default().file("../escape", "x").finish(),
            "`..`",
        ),
        (
            "absolute",
            RawTar::default().file(&format!("{out}/abs"), "x").finish(),
            "absolute",
        ),
        (
            "symlink escape",
            RawTar::default()
                .symlink("etc", out)
                .file("etc/passwd", "x")
                .finish(),
            "etc is a symlink",
        ),
        (
            "whiteout through a symlink",
            RawTar::default()
                .symlink("etc", out)
                .file("etc/.wh.secret", "")
                .finish(),
            "etc is a symlink",
        ),
        (
            "hard link out",
            RawTar::default()
                .hard_link("h", &format!("{out}/x"))
                .finish(),
            "absolute",
        ),
    ];
    for (i, (what, bytes, reason)) in cases.into_iter().enumerate() {
        let tar = tmp.0.join(format!("case{i}.tar"));
        std::fs::write(&tar, bytes).unwrap();
        let dir = tmp.0.join(format!("layer{i}"));
        let o = unpack(&[&tar, &dir], &[]);
        let err = stderr(&o);
        assert!(!o.status.success(), "{what}: unpack succeeded");
        assert!(
            err.contains(reason) && err.contains("was not created"),
            "{what}: {err}"
        );
        assert!(!dir.exists(), "{what}: {} exists", dir.display());
        assert_eq!(
            std::fs::read_dir(&outside).unwrap().count(),
            0,
            "{what}: wrote outside"
        );
    }
    assert!(!tmp.0.join("escape").exists());
    let temps: Vec<_> = std::fs::read_dir(&tmp.0)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".unpack-"))
        .collect();
    assert!(temps.is_empty(), "{temps:?}");
}

#[test]
fn a_killed_unpack_never_leaves_a_half_layer() {
    let tmp = TempDir::new("kill");
    let dir = tmp.0.join("layer");
    let mut raw = RawTar::default().file("first", "1");
    let chunk = vec![0x77u8; 4 << 20];
    for i in 0..8 {
        raw = raw.entry(
            format!("big{i}").as_bytes(),
            tar::EntryType::Regular,
            b"",
            &chunk,
        );
    }
    let bytes = raw.finish();
    let mut child = Command::new(env!("CARGO_BIN_EXE_stratafs"))
        .args(["layer", "unpack", "-"])
        .arg(&dir)
        .stdin(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&bytes[..bytes.len() / 2]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let temp = loop {
        let found = std::fs::read_dir(&tmp.0)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.join("first").exists());
        if let Some(p) = found {
            break p;
        }
        assert!(Instant::now() < deadline, "the unpack never started");
        std::thread::sleep(Duration::from_millis(20));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    drop(stdin);
    assert!(!dir.exists(), "a killed unpack left {}", dir.display());
    assert!(temp
        .file_name()
        .unwrap()
        .to_string_lossy()
        .starts_with(".layer.unpack-"));

    // The next unpack into the same place finishes and removes the abandoned temp dir.
    let tar = tmp.0.join("full.tar");
    std::fs::write(&tar, &bytes).unwrap();
    unpack_ok(&tar, &dir, &[]);
    assert!(!temp.exists(), "abandoned temp dir swept");
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 9);
    let o = unpack(&[&tar, &dir], &[]);
    assert!(
        !o.status.success() && stderr(&o).contains("already exists"),
        "{}",
        stderr(&o)
    );
}

/// Root of a user namespace (where rootless podman runs stratafs) cannot write trusted.*
/// xattrs: the unpacked layer carries user.overlay.opaque instead, what kernel overlayfs with
/// userxattr and stratafs's rootless mounts read.
#[test]
fn root_of_a_user_namespace_writes_user_overlay_markers() {
    let tmp = TempDir::new("userns");
    let (_, top) = two_layers(&tmp.0);
    tar_dir(&top, &tmp.0.join("top.tar"), &["--numeric-owner"]);
    let dir = tmp.0.join("l2");
    let o = Command::new("unshare")
        .args(["--user", "--map-root-user"])
        .arg(env!("CARGO_BIN_EXE_stratafs"))
        .args(["layer", "unpack"])
        .arg(tmp.0.join("top.tar"))
        .arg(&dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "unpack in a user namespace: {}",
        stderr(&o)
    );
    assert_eq!(
        xattr(&dir.join("d"), "user.overlay.opaque").as_deref(),
        Some("y")
    );
    assert_eq!(xattr(&dir.join("d"), "trusted.overlay.opaque"), None);
    let wh = std::fs::symlink_metadata(dir.join("a")).unwrap();
    assert!(
        wh.file_type().is_char_device() && wh.rdev() == 0,
        "a is a 0:0 whiteout"
    );
}
