//! `stratafs diff` and `stratafs commit` on upper dirs written by stratafs and by kernel
//! overlayfs: the change list podman prints for the same changes, byte-identical commits, and
//! a committed layer that, applied on the image, gives the container's tree back.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::mount::STRATAFS;
use common::rw::{require_root, KernelMount, StrataChild, StrataSpec};
use common::walk::{self, Snapshot};
use common::Stack;

/// The image: two layers, the top one changing a file of the bottom one.
fn image(label: &str) -> Stack {
    let mut stack = Stack::new(label);
    stack
        .add_layer()
        .file("etc/a.txt", b"a\n")
        .file("etc/b.txt", b"b\n")
        .file("opt/dir1/sub/c", b"c\n")
        .file("opt/ren/deep/r", b"r\n")
        .file("opt/ren/top.txt", b"top\n")
        .file("opt/op/o", b"o\n")
        .file("opt/mode.txt", b"mode\n")
        .file("usr/bin/h1", b"linked\n")
        .hardlink("usr/bin/h1", "usr/bin/h2")
        .file("var/keep/k", b"k\n");
    stack
        .add_layer()
        .file("etc/a.txt", b"a2\n")
        .file("etc/l2.txt", b"l2\n");
    stack
}

/// The changes a container makes, through the mount at `root`.
fn make_changes(root: &Path) {
    let p = |rel: &str| root.join(rel);
    fs::write(p("etc/new.txt"), b"new\n").unwrap();
    fs::hard_link(p("etc/new.txt"), p("etc/new-link")).unwrap();
    common::sys::set_xattr(&p("etc/new.txt"), "user.test", b"hello").unwrap();
    let mut a = fs::OpenOptions::new()
        .append(true)
        .open(p("etc/a.txt"))
        .unwrap();
    std::io::Write::write_all(&mut a, b"more\n").unwrap();
    drop(a);
    fs::remove_file(p("etc/b.txt")).unwrap();
    common::sys::set_xattr(&p("etc/l2.txt"), "user.lower", b"attr").unwrap();
    fs::remove_dir_all(p("opt/dir1")).unwrap();
    fs::create_dir_all(p("opt/newdir/x")).unwrap();
    fs::write(p("opt/newdir/x/y"), b"y\n").unwrap();
    fs::rename(p("opt/ren"), p("opt/renamed")).unwrap();
    fs::write(p("opt/renamed/added.txt"), b"added\n").unwrap();
    fs::remove_file(p("opt/renamed/top.txt")).unwrap();
    fs::remove_dir_all(p("opt/op")).unwrap();
    fs::create_dir(p("opt/op")).unwrap();
    fs::write(p("opt/op/n"), b"n\n").unwrap();
    fs::set_permissions(p("opt/mode.txt"), fs::Permissions::from_mode(0o600)).unwrap();
}

/// What `podman diff` prints for these changes on a kernel overlayfs container (checked
/// against podman 4.3 with the overlay driver): a depth-first walk in name order; changed
/// parents before their content; an opaque directory over an old one deleted, then added to.
const EXPECTED: &str = "\
C /etc
C /etc/a.txt
D /etc/b.txt
C /etc/l2.txt
A /etc/new-link
A /etc/new.txt
C /opt
D /opt/dir1
C /opt/mode.txt
A /opt/newdir
A /opt/newdir/x
A /opt/newdir/x/y
D /opt/op
A /opt/op/n
D /opt/ren
A /opt/renamed
A /opt/renamed/added.txt
A /opt/renamed/deep
A /opt/renamed/deep/r
";

fn stratafs(args: &[&OsStr]) -> String {
    let out = Command::new(STRATAFS)
        .args(args)
        .output()
        .expect("run stratafs");
    assert!(
        out.status.success(),
        "stratafs {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

fn container_args<'a>(upper: &'a Path, layers: &'a [PathBuf]) -> Vec<&'a OsStr> {
    let mut args = vec![OsStr::new("--upper"), upper.as_os_str()];
    for l in layers {
        args.push(OsStr::new("--layer"));
        args.push(l.as_os_str());
    }
    args
}

fn diff(upper: &Path, layers: &[PathBuf], json: bool) -> String {
    let mut args: Vec<&OsStr> = vec![OsStr::new("diff")];
    args.extend(container_args(upper, layers));
    if json {
        args.extend([OsStr::new("--format"), OsStr::new("json")]);
    }
    stratafs(&args)
}

/// `stratafs commit`, returning the printed diff_id and digest.
fn commit(upper: &Path, layers: &[PathBuf], out: &Path) -> (String, String) {
    let mut args: Vec<&OsStr> = vec![OsStr::new("commit")];
    args.extend(container_args(upper, layers));
    args.extend([OsStr::new("-o"), out.as_os_str()]);
    let printed = stratafs(&args);
    let field = |name: &str| {
        printed
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {printed:?}"))
            .to_string()
    };
    (field("diff_id: "), field("digest: "))
}

fn sha256_file(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    let text = String::from_utf8(out.stdout).unwrap();
    format!("sha256:{}", text.split_whitespace().next().unwrap())
}

/// A tree as an image shows it: times in whole seconds (what layer tars keep); the root is
/// left out (a layer does not carry it).
fn normalized(mut snap: Snapshot) -> Snapshot {
    snap.entries.remove(Path::new(""));
    for e in snap.entries.values_mut() {
        e.mtime.1 = 0;
    }
    snap
}

/// Checks diff and commit on `upper`, whose merged view with the image is `view`.
fn check_diff_and_commit(stack: &Stack, upper: &Path, view: &Snapshot, label: &str) {
    let layers = stack.layers();
    assert_eq!(
        diff(upper, layers, false),
        EXPECTED,
        "{label}: stratafs diff"
    );
    let json: serde_json::Value =
        serde_json::from_str(&diff(upper, layers, true)).expect("diff --format json is JSON");
    assert_eq!(json["deleted"][0], "/etc/b.txt", "{label}: {json}");
    assert_eq!(
        json["added"].as_array().map(Vec::len),
        Some(10),
        "{label}: {json}"
    );
    assert_eq!(
        json["changed"].as_array().map(Vec::len),
        Some(5),
        "{label}: {json}"
    );

    // Deterministic: the same upper gives the same bytes, whatever the compression.
    let out = stack.scratch().subdir(&format!("out-{label}"));
    let (id1, digest1) = commit(upper, layers, &out.join("one.tar"));
    let (id2, _) = commit(upper, layers, &out.join("two.tar"));
    assert_eq!(id1, id2, "{label}: diff_id of two commits");
    assert_eq!(digest1, id1, "{label}: an uncompressed blob is its own tar");
    assert_eq!(
        sha256_file(&out.join("one.tar")),
        id1,
        "{label}: printed diff_id"
    );
    assert_eq!(
        fs::read(out.join("one.tar")).unwrap(),
        fs::read(out.join("two.tar")).unwrap(),
        "{label}: two commits of one upper differ"
    );
    for ext in ["tar.gz", "tar.zst"] {
        let (a_id, a_digest) = commit(upper, layers, &out.join(format!("one.{ext}")));
        let (_, b_digest) = commit(upper, layers, &out.join(format!("two.{ext}")));
        assert_eq!(a_id, id1, "{label}: {ext} diff_id is the tar's");
        assert_eq!(a_digest, b_digest, "{label}: {ext} blob digests differ");
        assert_eq!(sha256_file(&out.join(format!("one.{ext}"))), a_digest);
        assert_ne!(a_digest, id1, "{label}: {ext} is compressed");
    }

    // The tar's entries follow the OCI layer format.
    let listing = Command::new("tar")
        .arg("-tvf")
        .arg(out.join("one.tar"))
        .output()
        .unwrap();
    let listing = String::from_utf8(listing.stdout).unwrap();
    for needle in [
        "etc/.wh.b.txt",
        "opt/.wh.dir1",
        "opt/.wh.ren",
        "opt/op/.wh..wh..opq",
        "opt/renamed/.wh..wh..opq",
        "opt/renamed/deep/r",
        "etc/new.txt link to etc/new-link",
    ] {
        assert!(
            listing.contains(needle),
            "{label}: no {needle:?} in\n{listing}"
        );
    }
    assert!(
        !listing.contains("top.txt"),
        "{label}: a deleted name of a moved dir: {listing}"
    );
    assert!(
        !listing.contains("usr/"),
        "{label}: an untouched dir: {listing}"
    );

    // Applied on the image as one more layer (the `.wh.` files are whiteouts to stratafs),
    // the committed layer gives the container's tree back.
    let applied = stack.scratch().subdir(&format!("applied-{label}"));
    let status = Command::new("tar")
        .args(["--xattrs", "--xattrs-include=*", "--numeric-owner", "-xpf"])
        .arg(out.join("one.tar"))
        .arg("-C")
        .arg(&applied)
        .status()
        .unwrap();
    assert!(status.success(), "{label}: tar -x of the committed layer");
    let mut with_layer = layers.to_vec();
    with_layer.push(applied);
    let mnt = stack.mountpoint(&format!("applied-{label}"));
    let m = StrataChild::start(&StrataSpec {
        layers: with_layer,
        upper: None,
        mountpoint: mnt.clone(),
        log: stack.scratch().path().join(format!("applied-{label}.log")),
        extra_args: Vec::new(),
    })
    .unwrap();
    let rebuilt = walk::snapshot(&mnt);
    m.unmount().unwrap();
    walk::assert_same(
        &format!("{label}: image + committed layer vs the container"),
        "container",
        &normalized(view.clone()),
        "rebuilt",
        &normalized(rebuilt),
    );
}

#[test]
fn diff_and_commit_of_a_stratafs_upper() {
    require_root();
    let stack = image("img-strata");
    let upper = stack.scratch().subdir("upper");
    let work = stack.scratch().subdir("work");
    let mnt = stack.mountpoint("ctr");
    let spec = StrataSpec {
        layers: stack.layers().to_vec(),
        upper: Some((upper.clone(), work.clone())),
        mountpoint: mnt.clone(),
        log: stack.scratch().path().join("ctr.log"),
        extra_args: Vec::new(),
    };
    let m = StrataChild::start(&spec).unwrap();
    make_changes(&mnt);
    m.unmount().unwrap();
    // The upper holds what the check is about: a redirect and a metacopy file.
    assert!(
        common::sys::get_xattr(&upper.join("opt/renamed"), "trusted.overlay.redirect")
            .unwrap()
            .is_some()
    );
    let m = StrataChild::start(&spec).unwrap();
    let view = walk::snapshot(&mnt);
    m.unmount().unwrap();
    check_diff_and_commit(&stack, &upper, &view, "stratafs");
}

#[test]
fn diff_and_commit_of_a_kernel_overlayfs_upper() {
    require_root();
    let stack = image("img-kernel");
    let upper = stack.scratch().subdir("upper");
    let work = stack.scratch().subdir("work");
    let mnt = stack.mountpoint("ctr");
    // Renamed dirs by redirect and chmod by metacopy, as the kernel writes them.
    let opts = "redirect_dir=on,metacopy=on";
    let m = KernelMount::mount(stack.layers(), Some((&upper, &work)), &mnt, opts).unwrap();
    make_changes(&mnt);
    m.unmount().unwrap();
    assert!(
        common::sys::get_xattr(&upper.join("opt/mode.txt"), "trusted.overlay.metacopy")
            .unwrap()
            .is_some()
    );
    let m = KernelMount::mount(stack.layers(), Some((&upper, &work)), &mnt, opts).unwrap();
    let view = walk::snapshot(&mnt);
    m.unmount().unwrap();
    check_diff_and_commit(&stack, &upper, &view, "kernel");
}

#[test]
fn bad_arguments_are_refused_with_the_fix() {
    let stack = Stack::new("img-args");
    let upper = stack.scratch().subdir("upper");
    let run = |args: &[&str]| Command::new(STRATAFS).args(args).output().unwrap();
    let out = run(&[
        "commit",
        "--upper",
        upper.to_str().unwrap(),
        "--layer",
        "/nonexistent",
        "-o",
        "x.zip",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("LAYER.tar.gz"));
    let out = run(&[
        "diff",
        "--upper",
        upper.to_str().unwrap(),
        "--layer",
        "/nonexistent",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent"));
    let out = run(&[
        "diff",
        "--upper",
        upper.to_str().unwrap(),
        "--layer",
        upper.to_str().unwrap(),
        "--format",
        "yaml",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("json"));
}
