//! The read-only union, checked against kernel overlayfs: each stack is mounted by both,
//! walked, and compared path by path (type, mode, owner, size, content, symlink target,
//! device numbers, xattrs, link counts, mtime, and which paths share an inode). Kernel
//! overlayfs is in turn checked against the model in `common::model`, so a kernel quirk
//! cannot pass for the right answer; `common::convert` lists the quirks found.

mod common;

use std::ffi::OsString;
use std::io::ErrorKind;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use common::mount::{KernelOverlay, StrataMount};
use common::walk::{d_ino_mismatches, names_starting_with};
use common::{convert, gen, model, sys, Ns, Stack};

/// Mounts `stack` with kernel overlayfs (on a converted copy) and with stratafs, and checks
/// kernel == model and stratafs == kernel, plus stratafs' own promises: readdir d_ino equals
/// st_ino, no `.wh.` name shows, and the daemon exits cleanly on unmount. Returns the
/// stratafs tree.
fn check_stack(stack: &Stack, what: &str) -> common::Snapshot {
    check_stack_with(stack, what, &[])
}

/// [`check_stack`] with extra `stratafs mount` options.
fn check_stack_with(stack: &Stack, what: &str, options: &[&str]) -> common::Snapshot {
    let layers = stack.layers();
    let expected = model::expected(layers);
    let before = raw_layers(layers);

    let kernel_layers = convert::kernel_copy(layers, &stack.scratch().path().join("kernel"));
    let kmnt = stack.mountpoint("kernel");
    let kernel = {
        let _k = KernelOverlay::mount(&kernel_layers, &kmnt);
        common::snapshot(&kmnt)
    };
    common::assert_same(what, "model", &expected, "kernel overlayfs", &kernel);

    let smnt = stack.mountpoint("stratafs");
    let mut args: Vec<OsString> = options.iter().map(OsString::from).collect();
    args.extend(common::mount::layer_args(layers));
    let m = StrataMount::foreground_args(args, &smnt);
    let strata = common::snapshot(&smnt);
    common::assert_same(what, "kernel overlayfs", &kernel, "stratafs", &strata);
    let bad = d_ino_mismatches(&strata);
    assert!(
        bad.is_empty(),
        "{what}: readdir d_ino != st_ino:\n{}",
        bad.join("\n")
    );
    let wh = names_starting_with(&strata, b".wh.");
    assert!(wh.is_empty(), "{what}: .wh. names shown: {wh:?}");
    m.unmount().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_layers_unchanged(what, layers, &before);
    strata
}

/// Every layer recorded with contents, inode numbers and change times.
fn raw_layers(layers: &[PathBuf]) -> Vec<common::Snapshot> {
    layers
        .iter()
        .map(|l| common::walk::snapshot_raw(l))
        .collect()
}

/// Serving a stack must leave its layers exactly as they were.
fn assert_layers_unchanged(what: &str, layers: &[PathBuf], before: &[common::Snapshot]) {
    for (l, b) in layers.iter().zip(before) {
        let after = common::walk::snapshot_raw(l);
        common::assert_same(
            &format!("{what}: layer {}", l.display()),
            "before",
            b,
            "after",
            &after,
        );
    }
}

/// Like [`check_stack`] for stacks kernel overlayfs cannot serve correctly: stratafs is
/// compared with the model only.
fn check_against_model(stack: &Stack, what: &str) -> common::Snapshot {
    let expected = model::expected(stack.layers());
    let smnt = stack.mountpoint("stratafs");
    let m = StrataMount::foreground(stack.layers(), &smnt);
    let strata = common::snapshot(&smnt);
    common::assert_same(what, "model", &expected, "stratafs", &strata);
    m.unmount().unwrap_or_else(|e| panic!("{what}: {e}"));
    strata
}

/// Asserts `rel` does not resolve in the mount (lookup, not just readdir).
fn assert_absent(mnt: &Path, rel: &str) {
    match mnt.join(rel).symlink_metadata() {
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        other => panic!("{rel}: expected ENOENT from lstat, got {other:?}"),
    }
}

fn mounted(stack: &Stack) -> (StrataMount, PathBuf) {
    let mnt = stack.mountpoint("stratafs");
    (StrataMount::foreground(stack.layers(), &mnt), mnt)
}

/// Bottom layer with one object of each kind under `d/` and at the root.
fn base_layer(stack: &mut Stack) {
    let l = stack.add_layer();
    l.file("keep", b"kept\n")
        .file("gone", b"whited out\n")
        .file("d/keep", b"kept\n")
        .file("d/gone", b"whited out\n")
        .file("d/sub/deep", b"deep\n")
        .file("gonedir/inner", b"whole dir whited out\n");
}

#[test]
fn whiteout_char_device() {
    let mut s = Stack::new("wh-chardev");
    base_layer(&mut s);
    s.add_layer()
        .whiteout_dev("gone")
        .whiteout_dev("d/gone")
        .whiteout_dev("gonedir")
        .whiteout_dev("never-existed")
        .file("d/new", b"new\n");
    // Whiteouts that hide nothing: in the bottom layer, in a directory with no copy below,
    // and inside an opaque directory.
    s.layer(0).whiteout_dev("bottom-whiteout");
    s.layer(1)
        .whiteout_dev("fresh/nothing-below")
        .opaque_xattr("opq", Ns::Trusted)
        .whiteout_dev("opq/nothing");
    // A directory whited out, then made again above: nothing from below comes back.
    s.add_layer().file("gonedir/new", b"recreated\n");
    let t = check_stack(&s, "char 0:0 whiteouts");
    assert!(t.entries.contains_key(Path::new("gonedir/new")));
    assert!(t.entries.contains_key(Path::new("d/new")));
    let (_m, mnt) = mounted(&s);
    for p in [
        "gone",
        "d/gone",
        "gonedir/inner",
        "never-existed",
        "bottom-whiteout",
        "fresh/nothing-below",
        "opq/nothing",
    ] {
        assert_absent(&mnt, p);
    }
}

#[test]
fn whiteout_aufs_files() {
    let mut s = Stack::new("wh-aufs");
    base_layer(&mut s);
    s.add_layer()
        .whiteout_aufs("gone")
        .whiteout_aufs("d/gone")
        .whiteout_aufs("gonedir")
        .whiteout_aufs("never-existed")
        .file(".wh..wh.plnk/1234.5678", b"aufs hard link store\n")
        .file(".wh..wh.aufs", b"")
        .file("d/.wh.", b"")
        .file("d/new", b"new\n");
    s.layer(0).whiteout_aufs("bottom-whiteout");
    s.layer(1).whiteout_aufs("fresh/nothing-below");
    s.add_layer().file("gonedir/new", b"recreated\n");
    check_stack(&s, ".wh. whiteouts");
    let (_m, mnt) = mounted(&s);
    for p in [
        "gone",
        "d/gone",
        "gonedir/inner",
        ".wh.gone",
        "d/.wh.gone",
        ".wh.never-existed",
        ".wh..wh.plnk",
        ".wh..wh.plnk/1234.5678",
        ".wh..wh.aufs",
        "d/.wh.",
        ".wh.bottom-whiteout",
        "fresh/.wh.nothing-below",
    ] {
        assert_absent(&mnt, p);
    }
}

/// Checks that the overlay's own opacity xattrs are invisible through getxattr too.
fn assert_no_overlay_xattrs(mnt: &Path, rel: &str) {
    for name in [
        "trusted.overlay.opaque",
        "user.overlay.opaque",
        "trusted.overlay.whiteout",
        "user.overlay.whiteout",
    ] {
        let got = sys::get_xattr(&mnt.join(rel), name);
        assert!(
            matches!(got, Ok(None)),
            "{rel}: getxattr {name} should be ENODATA, got {got:?}"
        );
    }
}

fn opaque_stack(label: &str, make_opaque: impl Fn(&common::Layer, &str)) -> Stack {
    let mut s = Stack::new(label);
    let l0 = s.add_layer();
    l0.file("o/below", b"hidden by the opaque dir\n")
        .file("o/sub/below", b"hidden too\n")
        .file("o/both", b"old\n")
        .file("t/below", b"visible: t is not opaque\n");
    let l1 = s.add_layer();
    l1.file("o/mid", b"also hidden\n");
    let l2 = s.add_layer();
    make_opaque(&l2, "o");
    l2.file("o/above", b"shown\n")
        .file("o/both", b"new\n")
        .file("t/above", b"shown\n");
    l2.xattr("o", "user.kept", b"an ordinary xattr stays");
    s
}

fn check_opaque(s: &Stack, what: &str) {
    let t = check_stack(s, what);
    let names: Vec<_> = t
        .entries
        .keys()
        .filter(|p| p.starts_with("o"))
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["o", "o/above", "o/both"], "{what}");
    let (_m, mnt) = mounted(s);
    assert_absent(&mnt, "o/below");
    assert_absent(&mnt, "o/mid");
    assert_absent(&mnt, "o/.wh..wh..opq");
    assert_no_overlay_xattrs(&mnt, "o");
    assert_eq!(
        sys::get_xattr(&mnt.join("o"), "user.kept")
            .unwrap()
            .as_deref(),
        Some(&b"an ordinary xattr stays"[..])
    );
}

#[test]
fn opaque_aufs_marker() {
    let s = opaque_stack("opq-aufs", |l, d| {
        l.opaque_marker(d);
    });
    check_opaque(&s, ".wh..wh..opq");
}

#[test]
fn opaque_trusted_xattr() {
    let s = opaque_stack("opq-trusted", |l, d| {
        l.opaque_xattr(d, Ns::Trusted);
    });
    check_opaque(&s, "trusted.overlay.opaque=y");
}

#[test]
fn opaque_user_xattr() {
    let s = opaque_stack("opq-user", |l, d| {
        l.opaque_xattr(d, Ns::User);
    });
    check_opaque(&s, "user.overlay.opaque=y");
}

#[test]
fn opaque_in_middle_layer_hides_only_what_is_below() {
    let mut s = Stack::new("opq-middle");
    s.add_layer().file("d/bottom", b"hidden\n");
    s.add_layer()
        .opaque_marker("d")
        .file("d/middle", b"shown\n");
    s.add_layer().file("d/top", b"shown\n");
    let t = check_stack(&s, "opaque middle layer");
    assert!(t.entries.contains_key(Path::new("d/middle")));
    assert!(t.entries.contains_key(Path::new("d/top")));
    assert!(!t.entries.contains_key(Path::new("d/bottom")));
}

fn xattr_whiteout_stack(label: &str, ns: Ns) -> Stack {
    let mut s = Stack::new(label);
    base_layer(&mut s);
    s.add_layer()
        .xattr_whiteout("d/gone", ns)
        .xattr_whiteout("d/sub", ns)
        .file("d/new", b"new\n")
        // Same marker on a file with data: not a whiteout, shown without the marker.
        .file("d/notempty", b"data\n")
        .xattr("d/notempty", &ns.name("whiteout"), b"");
    // Hides nothing: the bottom layer and a directory with no copy below.
    s.layer(0).xattr_whiteout("bottomdir/w", ns);
    s.layer(1).xattr_whiteout("fresh/w", ns);
    s
}

fn check_xattr_whiteouts(s: &Stack, what: &str) {
    let t = check_stack(s, what);
    assert!(t.entries.contains_key(Path::new("d/keep")), "{what}");
    assert!(t.entries.contains_key(Path::new("d/notempty")), "{what}");
    let (_m, mnt) = mounted(s);
    for p in ["d/gone", "d/sub", "d/sub/deep", "bottomdir/w", "fresh/w"] {
        assert_absent(&mnt, p);
    }
    assert_no_overlay_xattrs(&mnt, "d");
    assert_no_overlay_xattrs(&mnt, "d/notempty");
}

#[test]
fn xattr_whiteout_trusted() {
    let s = xattr_whiteout_stack("wh-xattr-trusted", Ns::Trusted);
    check_xattr_whiteouts(&s, "trusted.overlay.whiteout in opaque=x dir");
}

#[test]
fn xattr_whiteout_user() {
    let s = xattr_whiteout_stack("wh-xattr-user", Ns::User);
    check_xattr_whiteouts(&s, "user.overlay.whiteout in opaque=x dir");
}

/// Kernel overlayfs lists a zero-size file carrying `trusted.overlay.whiteout` outside an
/// opaque=x directory in readdir, yet lookup of it says ENOENT. stratafs must at least be
/// consistent; the model (and the mount contract) treat it as a plain empty file, since
/// xattr whiteouts count only inside opaque=x directories.
#[test]
fn xattr_whiteout_outside_opaque_x_dir_is_consistent() {
    let mut s = Stack::new("wh-xattr-no-x");
    s.add_layer().file("d/f", b"below\n");
    s.add_layer()
        .file("d/f", b"")
        .xattr("d/f", "trusted.overlay.whiteout", b"")
        .file("d/g", b"")
        .xattr("d/g", "user.overlay.whiteout", b"");
    let (_m, mnt) = mounted(&s);
    for name in ["f", "g"] {
        let listed = std::fs::read_dir(mnt.join("d"))
            .unwrap()
            .any(|e| e.unwrap().file_name() == name);
        let found = mnt.join("d").join(name).symlink_metadata().is_ok();
        assert_eq!(
            listed, found,
            "d/{name}: readdir lists it: {listed}, lookup finds it: {found}"
        );
    }
    drop(_m);
    check_against_model(&s, "xattr whiteout outside opaque=x");
}

#[test]
fn file_replaced_by_dir_and_dir_by_file() {
    let mut s = Stack::new("replace");
    s.add_layer()
        .file("f2d", b"a file first\n")
        .file("d2f/old", b"in a dir first\n")
        .file("back/x", b"first dir copy\n");
    s.add_layer()
        .file("f2d/inner", b"now a directory\n")
        .file("d2f", b"now a file\n")
        .file("back", b"a file in between\n");
    // A directory over a file over a directory: no merging through the file.
    s.add_layer().file("back/y", b"second dir copy\n");
    let t = check_stack(&s, "replacement across layers");
    assert!(t.entries.contains_key(Path::new("back/y")));
    assert!(!t.entries.contains_key(Path::new("back/x")));
    assert!(!t.entries.contains_key(Path::new("d2f/old")));
}

#[test]
fn symlinks_are_shown_never_followed() {
    let mut s = Stack::new("symlinks");
    s.add_layer()
        .file("real", b"real file\n")
        .symlink("abs", "/etc/passwd")
        .symlink("root", "/")
        .symlink("dangling", "/nonexistent/target")
        .symlink("rel-dangling", "no/such/file")
        .symlink("escape", "../../../../../../../../etc")
        .symlink("rel", "real")
        .symlink("loop", "loop")
        // A lower symlink to a host directory under an upper directory of the same name.
        .symlink("etc", "/etc")
        .symlink("dirlink", "/usr");
    s.add_layer()
        .file("etc/only-this", b"the upper dir does not merge with /etc\n")
        .symlink("replaced", "/tmp")
        .file("dirlink-neighbour", b"x\n");
    s.layer(0).file("replaced", b"a file below a symlink\n");
    let t = check_stack(&s, "symlinks");
    let etc: Vec<_> = t.entries.keys().filter(|p| p.starts_with("etc")).collect();
    assert_eq!(etc.len(), 2, "etc must hold only its upper file: {etc:?}");
    let (_m, mnt) = mounted(&s);
    assert_eq!(
        std::fs::read_link(mnt.join("escape")).unwrap(),
        Path::new("../../../../../../../../etc")
    );
    assert!(mnt.join("loop").symlink_metadata().unwrap().is_symlink());
}

/// A symlink must be reported as itself: its own size, owner and xattrs, never those of
/// the host file it points to.
#[test]
fn symlink_metadata_is_not_the_target_s() {
    let mut s = Stack::new("symlink-meta");
    let host = s.scratch().subdir("host");
    let host_file = host.join("secret");
    std::fs::write(&host_file, b"host data, must not show through the mount\n").unwrap();
    sys::set_xattr(&host_file, "user.host", b"leaked").unwrap();
    sys::set_xattr(&host_file, "trusted.host", b"leaked").unwrap();
    sys::set_xattr(&host, "user.host", b"leaked dir").unwrap();
    s.add_layer()
        .symlink("to-host-file", &host_file)
        .symlink("to-host-dir", &host)
        .chown("to-host-file", 4242, 4242)
        .xattr("to-host-file", "trusted.own", b"the link's own");
    s.add_layer()
        .symlink("upper-link", &host_file)
        .file("to-host-dir/inside", b"an upper dir over a lower symlink\n");
    let t = check_stack(&s, "symlink metadata");
    let e = &t.entries[Path::new("to-host-file")];
    assert_eq!(e.uid, 4242);
    assert_eq!(e.size, Some(host_file.as_os_str().len() as u64));
    assert_eq!(e.xattrs.len(), 1, "xattrs: {:?}", e.xattrs);
}

#[test]
fn hard_links_share_inode_and_count() {
    let mut s = Stack::new("hardlinks");
    s.add_layer()
        .file("a/one", b"linked\n")
        .hardlink("a/one", "a/two")
        .hardlink("a/one", "b/three")
        .file("pair1", b"pair\n")
        .hardlink("pair1", "pair2")
        .symlink("sym", "target")
        .hardlink("sym", "sym-link");
    s.add_layer()
        // Hide one name of a group: the others keep the on-disk link count.
        .whiteout_dev("pair2")
        .file("c/x", b"other layer\n")
        .hardlink("c/x", "c/y");
    let t = check_stack(&s, "hard links");
    let ino = |p: &str| t.entries[Path::new(p)].ino;
    let nlink = |p: &str| t.entries[Path::new(p)].nlink;
    assert_eq!(ino("a/one"), ino("a/two"));
    assert_eq!(ino("a/one"), ino("b/three"));
    assert_eq!(nlink("a/one"), Some(3));
    assert_eq!(ino("c/x"), ino("c/y"));
    assert_ne!(ino("a/one"), ino("c/x"));
    assert_eq!(ino("sym"), ino("sym-link"));
}

#[test]
fn fifos_and_device_nodes() {
    let mut s = Stack::new("special");
    s.add_layer()
        .fifo("fifo")
        .char_dev("null", 1, 3)
        .char_dev("tty", 136, 2)
        .block_dev("sda", 8, 0)
        .block_dev("nvme", 259, 7)
        .fifo("replaced");
    s.add_layer()
        .char_dev("replaced", 4, 64)
        .chmod("replaced", 0o620)
        .chown("replaced", 0, 5);
    check_stack(&s, "fifos and devices");
}

#[test]
fn sparse_files() {
    let mut s = Stack::new("sparse");
    s.add_layer()
        .sparse("holes-only", 5 << 20, &[])
        .sparse("data-at-end", 3 << 20, &[((3 << 20) - 10, b"0123456789")])
        .sparse(
            "scattered",
            9 << 20,
            &[(0, b"head"), (4 << 20, b"middle"), ((9 << 20) - 4, b"tail")],
        );
    s.add_layer().sparse("later", 1 << 20, &[(65536, b"x")]);
    let t = check_stack(&s, "sparse files");
    assert_eq!(t.entries[Path::new("scattered")].size, Some(9 << 20));
}

fn name(bytes: &[u8]) -> OsString {
    OsString::from_vec(bytes.to_vec())
}

#[test]
fn awkward_names() {
    let long = vec![b'n'; 255];
    let mut long_dir = vec![b'D'; 254];
    long_dir.push(b'!');
    let names = [
        name(b"with space"),
        name(b" leading and trailing "),
        name(b"new\nline"),
        name(b"tab\tand\rcarriage"),
        name("ünïcödé-日本語-😀".as_bytes()),
        name(b"\xff\xfe not UTF-8"),
        name(b"-rf"),
        name(b"..."),
        name(b"back\\slash"),
        name(b"colon:and,comma"),
        name(b".wh"),
        name(b"x.wh.y"),
        name(&long),
    ];
    let mut s = Stack::new("names");
    let l0 = s.add_layer();
    for n in &names {
        l0.file(Path::new("files").join(n), n.as_encoded_bytes());
        l0.file(Path::new("gone").join(n), b"whited out above\n");
        l0.file(
            Path::new(&name(&long_dir)).join(n),
            b"in a long-named dir\n",
        );
    }
    let l1 = s.add_layer();
    for n in &names {
        l1.whiteout_dev(Path::new("gone").join(n));
    }
    let t = check_stack(&s, "awkward names");
    for n in &names {
        assert!(t.entries.contains_key(&Path::new("files").join(n)), "{n:?}");
        assert!(!t.entries.contains_key(&Path::new("gone").join(n)), "{n:?}");
    }
}

#[test]
fn owners_modes_times_and_xattrs() {
    let mut s = Stack::new("attrs");
    s.add_layer()
        .file("f", b"x\n")
        .chown("f", 1000, 1000)
        .chmod("f", 0o4755)
        .mtime("f", 1_234_567_890, 123_456_789)
        .xattr("f", "user.mime", b"text/plain")
        .xattr("f", "trusted.app", b"\x00\x01binary")
        .xattr("f", "security.label", b"lbl")
        .file("acl", b"x\n")
        .acl("acl", false)
        .dir("acldir")
        .acl("acldir", false)
        .acl("acldir", true)
        .file("big-xattr", b"x\n")
        .xattr("big-xattr", "user.big", &[0xa5; 3000])
        .file("many-xattrs", b"x\n")
        .file("d/x", b"x\n")
        .chmod("d", 0o700)
        .chown("d", 12345, 54321)
        .xattr("d", "user.dir", b"bottom");
    // The top directory copy decides the directory's attributes.
    s.add_layer()
        .dir("d")
        .chmod("d", 0o1777)
        .xattr("d", "user.dir", b"top")
        .mtime("d", 1_500_000_000, 5)
        .symlink("l", "f")
        .chown("l", 7, 8);
    let l0 = s.layer(0);
    for i in 0..40 {
        l0.xattr(
            "many-xattrs",
            &format!("user.attribute-number-{i:03}"),
            b"v",
        );
    }
    let t = check_stack(&s, "owners, modes, times, xattrs");
    assert_eq!(t.entries[Path::new("many-xattrs")].xattrs.len(), 40);
    assert_eq!(t.entries[Path::new("acldir")].xattrs.len(), 2);
}

/// Directories too big for one readdir reply, merged across layers.
#[test]
fn large_directories() {
    let mut s = Stack::new("bigdir");
    let l0 = s.add_layer();
    for i in 0..1500 {
        let pad = "p".repeat(i % 200);
        l0.file(format!("big/{i:05}-{pad}"), format!("{i}\n").as_bytes());
    }
    let l1 = s.add_layer();
    for i in (0..1500).step_by(3) {
        let name = format!("big/{i:05}-{}", "p".repeat(i % 200));
        match i % 2 {
            0 => l1.whiteout_dev(&name),
            _ => l1.whiteout_aufs(&name),
        };
    }
    let l2 = s.add_layer();
    for i in 0..500 {
        l2.file(format!("big/new-{i:04}-{}", "n".repeat(240)), b"new\n");
    }
    let t = check_stack(&s, "large directories");
    let big = t.entries.keys().filter(|p| p.starts_with("big")).count();
    assert_eq!(big, 1 + 1000 + 500);
}

/// More layers than a container image usually has, each changing the same paths.
#[test]
fn many_layers() {
    let mut s = Stack::new("many");
    let mut deep = PathBuf::from("deep");
    for k in 0..150 {
        let l = s.add_layer();
        l.file("common/f", format!("layer {k}\n").as_bytes())
            .file(format!("common/only-{k}"), b"x\n");
        if k > 0 && k % 2 == 0 {
            l.whiteout_dev(format!("common/only-{}", k - 1));
        }
        if k % 10 == 9 {
            l.opaque_marker("common")
                .file("common/f", b"after an opaque layer\n");
        }
        // A chain one level deeper every fifth layer, each layer adding to its end.
        if k % 5 == 0 {
            deep.push(format!("{k}"));
        }
        l.file(deep.join(format!("leaf-{k}")), format!("{k}\n").as_bytes());
    }
    let t = check_stack(&s, "150 layers");
    assert!(t.entries.contains_key(Path::new("common/only-149")));
    assert!(!t.entries.contains_key(Path::new("common/only-139")));
}

/// The daemon's own read path (no FUSE passthrough).
#[test]
fn generated_stack_without_passthrough() {
    let mut s = Stack::new("gen-nopt");
    gen::generate(&mut s, 4, 30);
    check_stack_with(
        &s,
        "generated stack, --no-passthrough",
        &["--no-passthrough"],
    );
}

/// Several readers walking one mount at once all see the model's tree.
#[test]
fn concurrent_walks_agree() {
    let mut s = Stack::new("concurrent");
    gen::generate(&mut s, 5, 30);
    let expected = model::expected(s.layers());
    let (m, mnt) = mounted(&s);
    std::thread::scope(|scope| {
        let walkers: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| common::snapshot(&mnt)))
            .collect();
        for (i, w) in walkers.into_iter().enumerate() {
            let got = w.join().expect("walker");
            common::assert_same(&format!("walker {i}"), "model", &expected, "stratafs", &got);
        }
    });
    m.unmount().expect("unmount");
}

/// A filesystem mounted on a directory inside a layer is not part of the layer: kernel
/// overlayfs shows the directory underneath, and so must stratafs (entering such mounts also
/// mixes inode numbers of two filesystems and, for a mount of the union itself inside a
/// layer, makes the daemon wait on itself).
#[test]
fn mounts_inside_a_layer_are_not_entered() {
    let mut s = Stack::new("mount-in-layer");
    s.add_layer().file("sub/under", b"the layer's own file\n");
    s.add_layer().file("top", b"x\n");
    let sub = s.layers()[0].join("sub");
    let out = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&sub)
        .output()
        .expect("mount tmpfs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(sub.join("over"), b"not in the layer\n").unwrap();
    let kmnt = s.mountpoint("kernel");
    let kernel = {
        let _k = KernelOverlay::mount(s.layers(), &kmnt);
        common::snapshot(&kmnt)
    };
    assert!(kernel.entries.contains_key(Path::new("sub/under")));
    assert!(!kernel.entries.contains_key(Path::new("sub/over")));
    let (m, smnt) = mounted(&s);
    let strata = common::snapshot(&smnt);
    common::assert_same(
        "a tmpfs mounted inside a layer",
        "kernel overlayfs",
        &kernel,
        "stratafs",
        &strata,
    );
    m.unmount().expect("unmount");
    // The scratch dir detaches the tmpfs when dropped.
}

/// For each path, as user `uid`: whether it can be opened for reading, listed, and
/// looked up (0 = allowed, else the tool's exit status).
fn access_as(uid: u32, root: &Path, paths: &[&str]) -> Vec<String> {
    use std::os::unix::process::CommandExt;
    let script = r#"for p in "$@"; do
        cat -- "$p" >/dev/null 2>&1; r=$?
        ls -- "$p" >/dev/null 2>&1; l=$?
        stat -- "$p" >/dev/null 2>&1; s=$?
        echo "$p: read=$r list=$l stat=$s"
    done"#;
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg("sh")
        .args(paths)
        .current_dir(root)
        .uid(uid)
        .gid(uid)
        .output()
        .expect("run sh as another user");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| format!("uid {uid} {l}"))
        .collect()
}

/// Permission checks for other users (modes, owners, groups, ACLs, the top directory
/// copy's mode) give the same answers as kernel overlayfs.
#[test]
fn permissions_for_other_users_match_kernel() {
    let mut s = Stack::new("perms");
    s.add_layer()
        .file("secret", b"s\n")
        .chmod("secret", 0o600)
        .file("shared", b"s\n")
        .chmod("shared", 0o644)
        .file("group-file", b"g\n")
        .chown("group-file", 0, 1000)
        .chmod("group-file", 0o640)
        .file("acl-file", b"a\n")
        .chmod("acl-file", 0o600)
        .acl("acl-file", false)
        .file("private/inside", b"i\n")
        .chmod("private", 0o700)
        .file("search-only/inside", b"i\n")
        .chmod("search-only", 0o711)
        .file("owned/inside", b"i\n")
        .chown("owned", 1000, 1000)
        .chmod("owned", 0o700)
        .file("acl-dir/inside", b"i\n")
        .chmod("acl-dir", 0o700)
        .acl("acl-dir", false)
        .file("reopened/inside", b"i\n")
        .chmod("reopened", 0o700);
    // The top copy of a directory decides its mode.
    s.add_layer()
        .dir("reopened")
        .chmod("reopened", 0o755)
        .file("other-readable", b"o\n")
        .chmod("other-readable", 0o604);
    let paths = [
        "secret",
        "shared",
        "group-file",
        "acl-file",
        "private",
        "private/inside",
        "search-only",
        "search-only/inside",
        "owned",
        "owned/inside",
        "acl-dir",
        "acl-dir/inside",
        "reopened",
        "reopened/inside",
        "other-readable",
    ];
    let kernel_layers = convert::kernel_copy(s.layers(), &s.scratch().path().join("kernel"));
    let kmnt = s.mountpoint("kernel");
    let _k = KernelOverlay::mount(&kernel_layers, &kmnt);
    let (_m, smnt) = mounted(&s);
    let mut diffs = Vec::new();
    for uid in [1000, 65534] {
        let k = access_as(uid, &kmnt, &paths);
        let st = access_as(uid, &smnt, &paths);
        assert_eq!(k.len(), paths.len(), "{k:?}");
        for (a, b) in k.iter().zip(&st) {
            if a != b {
                diffs.push(format!("kernel overlayfs: {a}\n          stratafs: {b}"));
            }
        }
    }
    assert!(diffs.is_empty(), "access differs:\n{}", diffs.join("\n"));
}

/// Deep random stacks in every format: at least 30 layers each.
fn generated(seed: u64, layers: usize) {
    let mut s = Stack::new(&format!("gen-{seed}"));
    gen::generate(&mut s, seed, layers);
    let c = gen::coverage(s.layers());
    eprintln!("seed {seed}: {c:?}");
    for (what, n) in [
        ("char 0:0 whiteouts", c.char_whiteouts),
        (".wh. whiteouts", c.aufs_whiteouts),
        ("xattr whiteouts", c.xattr_whiteouts),
        (".wh..wh..opq markers", c.opaque_markers),
        ("trusted opaque dirs", c.opaque_trusted),
        ("user opaque dirs", c.opaque_user),
        ("symlinks", c.symlinks),
        ("hard-linked files", c.hard_linked),
        ("fifos", c.fifos),
        ("device nodes", c.devices),
        ("255-byte names", c.long_names),
    ] {
        assert!(n > 0, "seed {seed}: the generated stack has no {what}");
    }
    assert!(
        c.max_depth >= 8,
        "seed {seed}: tree depth only {}",
        c.max_depth
    );
    let t = check_stack(
        &s,
        &format!("generated stack, seed {seed}, {layers} layers"),
    );
    assert!(
        t.entries.len() > 100,
        "seed {seed}: only {} paths",
        t.entries.len()
    );
}

#[test]
fn generated_stack_seed_1() {
    generated(1, 32);
}

#[test]
fn generated_stack_seed_2() {
    generated(2, 40);
}

#[test]
fn generated_stack_seed_3() {
    generated(0x5eed_cafe, 36);
}

#[test]
fn inode_numbers_survive_remount() {
    let mut s = Stack::new("remount");
    gen::generate(&mut s, 7, 30);
    let mnt = s.mountpoint("stratafs");
    let first = {
        let m = StrataMount::foreground(s.layers(), &mnt);
        let t = common::snapshot(&mnt);
        m.unmount().expect("first unmount");
        t
    };
    // Unique within the mount, apart from hard links.
    let groups = first
        .entries
        .values()
        .filter(|e| e.nlink.unwrap_or(1) == 1)
        .map(|e| e.ino)
        .collect::<std::collections::BTreeSet<_>>();
    let singles = first
        .entries
        .values()
        .filter(|e| e.nlink.unwrap_or(1) == 1)
        .count();
    assert_eq!(groups.len(), singles, "st_ino reused by unrelated objects");

    let m = StrataMount::daemon(s.layers(), &mnt);
    let second = common::snapshot(&mnt);
    let mut changed = Vec::new();
    for (p, e) in &first.entries {
        match second.entries.get(p) {
            Some(e2) if e2.ino == e.ino => {}
            Some(e2) => changed.push(format!("{p:?}: {} then {}", e.ino, e2.ino)),
            None => changed.push(format!("{p:?}: missing after remount")),
        }
    }
    assert!(
        changed.is_empty(),
        "st_ino changed across remount:\n{}",
        changed.join("\n")
    );
    m.unmount().expect("daemon exits after unmount");
}

/// Every way of writing fails with EROFS and leaves the layers untouched.
#[test]
fn writes_fail_with_erofs_and_layers_stay_unchanged() {
    let mut s = Stack::new("erofs");
    gen::generate(&mut s, 11, 4);
    s.layer(3)
        .file("file", b"data\n")
        .file("d/inner", b"x\n")
        .symlink("link", "file")
        .file("gone", b"x\n");
    s.add_layer().whiteout_aufs("gone");
    let before = raw_layers(s.layers());
    let (m, mnt) = mounted(&s);
    let p = |r: &str| mnt.join(r);
    let erofs = |what: &str, r: std::io::Result<()>| match r {
        Err(e) if e.raw_os_error() == Some(libc::EROFS) => {}
        other => panic!("{what}: expected EROFS, got {other:?}"),
    };
    use std::fs;
    use std::os::unix::fs::PermissionsExt;
    erofs("create", fs::File::create(p("new")).map(drop));
    erofs(
        "create over a whiteout",
        fs::File::create(p("gone")).map(drop),
    );
    erofs(
        "open for write",
        fs::OpenOptions::new().write(true).open(p("file")).map(drop),
    );
    erofs(
        "open O_APPEND",
        fs::OpenOptions::new()
            .append(true)
            .open(p("file"))
            .map(drop),
    );
    erofs(
        "open O_TRUNC",
        fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(p("file"))
            .map(drop),
    );
    erofs("unlink", fs::remove_file(p("file")));
    erofs("unlink symlink", fs::remove_file(p("link")));
    erofs("mkdir", fs::create_dir(p("newdir")));
    erofs("rmdir", fs::remove_dir(p("d")));
    erofs("rename", fs::rename(p("file"), p("renamed")));
    erofs("symlink", std::os::unix::fs::symlink("x", p("newlink")));
    erofs("hard link", fs::hard_link(p("file"), p("newhard")));
    erofs(
        "chmod",
        fs::set_permissions(p("file"), fs::Permissions::from_mode(0o600)),
    );
    erofs(
        "chown",
        std::os::unix::fs::chown(p("file"), Some(1), Some(1)),
    );
    erofs("truncate", sys::truncate(&p("file"), 0));
    erofs("utimes", sys::set_times(&p("file"), (1, 0), (1, 0)));
    erofs("mknod", sys::mknod(&p("fifo"), libc::S_IFIFO, 0o644, 0, 0));
    erofs("setxattr", sys::set_xattr(&p("file"), "user.new", b"v"));
    erofs("setxattr on dir", sys::set_xattr(&p("d"), "user.new", b"v"));
    erofs("removexattr", sys::remove_xattr(&p("file"), "user.none"));
    // Reading everything must not change anything either.
    let _ = common::snapshot(&mnt);
    m.unmount().expect("unmount");
    assert_layers_unchanged("after write attempts", s.layers(), &before);
}
