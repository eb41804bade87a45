//! Objects users make through the mount that the on-disk format would read as markers
//! (whiteouts, opaque dirs, redirects, metacopy): compared with kernel overlayfs, including a
//! remount, so nothing made through the mount is read back as something else.

use std::path::Path;

use crate::common::rw::require_root;
use crate::common::tmp::TempDir;
use crate::differential::{mount_both, run, side, Options, Report};
use crate::fixture::{build_template, Extras};
use crate::ops::{apply, describe, Mode, Op, RenameFlags::*};

/// A char device 0:0 and xattrs named like the kernel's markers: the kernel refuses the
/// device (EPERM) and stores the xattrs escaped (`trusted.overlay.overlay.*`), which
/// listxattr/getxattr show under the name given. stratafs must do the same, and a remount
/// must show the same tree on both.
#[test]
fn device_and_xattr_markers_stay_data() {
    require_root();
    let dir = TempDir::new("wu-markers");
    let template = build_template(dir.path(), Extras::default());
    #[rustfmt::skip]
    let ops = vec![
        // A whiteout made through the mount: new name, lower name, upper name.
        Op::MknodChar { path: "wh", major: 0, minor: 0 },
        Op::MknodChar { path: "d/f", major: 0, minor: 0 },
        Op::Create { path: "new", mode: Mode(0o644), len: 10, byte: 1 },
        Op::Unlink { path: "new" },
        Op::MknodChar { path: "new", major: 0, minor: 0 },
        Op::MknodChar { path: "null", major: 1, minor: 3 },
        // Marker xattrs on a merged dir, a lower dir, a lower file, a new file.
        Op::SetXattr { path: "d", name: "trusted.overlay.opaque", value: "y" },
        Op::SetXattr { path: "sub", name: "trusted.overlay.redirect", value: "/e" },
        Op::SetXattr { path: "f", name: "trusted.overlay.metacopy", value: "" },
        Op::SetXattr { path: "g", name: "trusted.overlay.origin", value: "x" },
        Op::Mkdir { path: "xd", mode: Mode(0o755) },
        Op::SetXattr { path: "xd", name: "trusted.overlay.opaque", value: "x" },
        Op::Create { path: "xd/z", mode: Mode(0o644), len: 0, byte: 0 },
        Op::SetXattr { path: "xd/z", name: "trusted.overlay.whiteout", value: "" },
        Op::SetXattr { path: "n/f", name: "trusted.overlay.overlay.x", value: "escaped twice" },
        Op::Xattrs { path: "d" },
        Op::Xattrs { path: "sub" },
        Op::Xattrs { path: "f" },
        Op::Xattrs { path: "xd/z" },
        Op::Xattrs { path: "n/f" },
        Op::Remount,
        Op::Stat { path: "wh" },
        Op::Stat { path: "new" },
        Op::Stat { path: "null" },
        Op::ListDir { path: "d" },
        Op::ListDir { path: "sub" },
        Op::ListDir { path: "xd" },
        Op::Read { path: "f" },
        Op::Xattrs { path: "d" },
        Op::Xattrs { path: "f" },
        Op::Xattrs { path: "xd/z" },
        Op::Xattrs { path: "n/f" },
        Op::RemoveXattr { path: "d", name: "trusted.overlay.opaque" },
        Op::Xattrs { path: "d" },
    ];
    let report = run(&template, &ops, &Options::default()).unwrap_or_else(|e| panic!("{e}"));
    let outcome = |op: Op| {
        let i = ops.iter().position(|o| *o == op).expect("op in the list");
        describe(&report.outcomes[i])
    };
    // The outcomes are the kernel's; spot-check they are the ones this test is about.
    let whiteout = Op::MknodChar {
        path: "wh",
        major: 0,
        minor: 0,
    };
    assert_eq!(outcome(whiteout), "EPERM");
    assert_eq!(outcome(Op::Stat { path: "wh" }), "ENOENT");
    assert!(
        outcome(Op::Xattrs { path: "d" }).contains("trusted.overlay.opaque=y"),
        "{}",
        outcome(Op::Xattrs { path: "d" })
    );
    assert_stored_as(
        &report,
        &[
            ("f", "trusted.overlay.overlay.metacopy"),
            ("xd/z", "trusted.overlay.overlay.whiteout"),
            ("sub", "trusted.overlay.overlay.redirect"),
        ],
    );
}

/// Names that are markers in the OCI/AUFS format (`.wh.NAME`, `.wh..wh..opq`). Kernel
/// overlayfs does not read them and lets users make them; stratafs reads them in every layer
/// (rootless fuse-overlayfs uppers and OCI layers hold them), so it refuses to make them
/// (EINVAL), as OCI asks of a filesystem that reads them. On both, nothing made through the
/// mount is read as a whiteout after a remount.
#[test]
fn whiteout_names_are_never_reinterpreted() {
    require_root();
    let dir = TempDir::new("wu-whnames");
    let template = build_template(&dir.subdir("template"), Extras::default());
    let scratch = TempDir::new("wu-whnames-run");
    let k = side(&scratch, "kernel", &template);
    let s = side(&scratch, "strata", &template);
    #[rustfmt::skip]
    let ops = [
        Op::Create { path: ".wh.f", mode: Mode(0o644), len: 0, byte: 0 },
        Op::Mkdir { path: "d/.wh..wh..opq", mode: Mode(0o755) },
        Op::Symlink { target: "x", path: ".wh.g" },
        Op::Mkfifo { path: "d/.wh.h", mode: Mode(0o644) },
        Op::Link { from: "n/f", to: ".wh.sub" },
        Op::Rename { from: "n/f", to: "d/.wh.sub", flags: Plain },
        Op::Rename { from: "f", to: ".wh.n", flags: NoReplace },
    ];
    let (kernel, strata) = mount_both(&scratch, &k, &s).unwrap_or_else(|e| panic!("{e}"));
    let list = |root: &Path, dir: &'static str| describe(&apply(root, &Op::ListDir { path: dir }));
    let (s_root_before, s_d_before) = (list(&s.mnt, ""), list(&s.mnt, "d"));
    for op in &ops {
        assert_eq!(describe(&apply(&k.mnt, op)), "ok", "kernel: {op:?}");
        assert_eq!(describe(&apply(&s.mnt, op)), "EINVAL", "stratafs: {op:?}");
    }
    kernel.unmount().unwrap_or_else(|e| panic!("{e}"));
    strata.unmount().unwrap_or_else(|e| panic!("{e}"));

    let (kernel, strata) = mount_both(&scratch, &k, &s).unwrap_or_else(|e| panic!("{e}"));
    let (k_root, k_d) = (list(&k.mnt, ""), list(&k.mnt, "d"));
    let (s_root, s_d) = (list(&s.mnt, ""), list(&s.mnt, "d"));
    kernel.unmount().unwrap_or_else(|e| panic!("{e}"));
    strata.unmount().unwrap_or_else(|e| panic!("{e}"));
    // The kernel shows the names as plain entries and hides nothing with them.
    let words = |s: &str| s.split(' ').map(str::to_string).collect::<Vec<_>>();
    for name in [".wh.f", ".wh.g", ".wh.sub", ".wh.n", "g", "sub", "n"] {
        assert!(
            words(&k_root).contains(&name.to_string()),
            "kernel /: {k_root}"
        );
    }
    for name in [".wh..wh..opq", ".wh.h", ".wh.sub", "h", "sub"] {
        assert!(words(&k_d).contains(&name.to_string()), "kernel d: {k_d}");
    }
    // stratafs made none of them, so nothing changed and nothing is hidden.
    assert!(words(&s_root).contains(&"sub".to_string()), "{s_root}");
    assert_eq!(s_root, s_root_before, "stratafs / after a remount");
    assert_eq!(s_d, s_d_before, "stratafs d after a remount");
}

/// `user.overlay.*` names set through a (privileged) mount: stratafs reads user.overlay.*
/// markers in upper dirs written by rootless mounts, so it stores such user attributes
/// escaped (`user.overlay.overlay.*`, the kernel's userxattr escaping); the kernel's
/// privileged mount stores them as they are and never reads them. What users see is the same
/// on both, also after a remount (the operations' outcomes are compared); the stored name
/// differs, so the trees of those paths are not compared (the kernel mounted on stratafs's
/// upper dir shows the escaped name, and stratafs on the kernel's upper dir reads the plain
/// one as a marker); the stored name is checked here.
#[test]
fn user_overlay_xattrs_stay_data() {
    require_root();
    let dir = TempDir::new("wu-usermarkers");
    let template = build_template(dir.path(), Extras::default());
    #[rustfmt::skip]
    let ops = vec![
        Op::SetXattr { path: "d", name: "user.overlay.opaque", value: "y" },
        Op::SetXattr { path: "f", name: "user.overlay.metacopy", value: "" },
        Op::Mkdir { path: "xd", mode: Mode(0o755) },
        Op::SetXattr { path: "xd", name: "user.overlay.opaque", value: "x" },
        Op::Create { path: "xd/z", mode: Mode(0o644), len: 0, byte: 0 },
        Op::SetXattr { path: "xd/z", name: "user.overlay.whiteout", value: "" },
        Op::Xattrs { path: "d" },
        Op::Remount,
        Op::ListDir { path: "d" },
        Op::ListDir { path: "xd" },
        Op::Read { path: "f" },
        Op::Xattrs { path: "d" },
        Op::Xattrs { path: "f" },
        Op::Xattrs { path: "xd/z" },
    ];
    let opts = Options {
        ignore_paths: &["d", "f", "xd"],
        ..Options::default()
    };
    let report = run(&template, &ops, &opts).unwrap_or_else(|e| panic!("{e}"));
    assert!(describe(&report.outcomes[6]).contains("user.overlay.opaque=y"));
    assert_stored_as(
        &report,
        &[
            ("d", "user.overlay.overlay.opaque"),
            ("f", "user.overlay.overlay.metacopy"),
            ("xd/z", "user.overlay.overlay.whiteout"),
        ],
    );
}

/// Each (path, name): stratafs's upper dir holds the user's attribute on `path` under the
/// escaped `name`, not as the marker it is named like.
fn assert_stored_as(report: &Report, stored: &[(&str, &str)]) {
    for (path, name) in stored {
        let e = &report.strata_upper[*path];
        assert!(
            e.xattrs.contains_key(*name),
            "{path}: a user's attribute stored as {:?}, want {name}",
            e.xattrs.keys()
        );
    }
}
