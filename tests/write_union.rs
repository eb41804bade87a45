//! Differential tests of the writable layer against kernel overlayfs: the same operations on both
//! over identical copies of the same layers must observe the same results and leave the same
//! merged tree and the same upper dir (in the kernel's format); each implementation must read
//! the upper dir the other one wrote, and stratafs must show the same tree after a remount.
//!
//! Randomized runs: STRATAFS_SEEDS=N runs seeds 1..=N (default 20); STRATAFS_SEED=S runs only
//! seed S; STRATAFS_KEEP_GOING=1 goes on after a failing seed and reports them all. A failure
//! prints the seed and the operation list shrunk to a minimal failing one.

mod common;

#[path = "write_union/differential.rs"]
mod differential;
#[path = "write_union/fixture.rs"]
mod fixture;
#[path = "write_union/identity.rs"]
mod identity;
#[path = "write_union/ops.rs"]
mod ops;
#[path = "write_union/script.rs"]
mod script;
#[path = "write_union/sysc.rs"]
mod sysc;
#[path = "write_union/tree.rs"]
mod tree;

use std::path::Path;

use common::rw::{require_root, KernelMount};
use common::tmp::TempDir;
use differential::{random_runs, run, Options};
use fixture::{build_template, Extras};
use ops::{describe, Mode, Op, RenameFlags::*};
use script::scripted_ops;

#[test]
fn scripted_differential() {
    require_root();
    let dir = TempDir::new("wu-template");
    let template = build_template(dir.path(), Extras::default());
    let ops = scripted_ops();
    let report = match run(&template, &ops, &Options::default()) {
        Ok(r) => r,
        Err(e) => panic!("scripted differential run failed: {e}"),
    };
    // The script exercises what it claims: spot-check a few outcomes (same on both, checked).
    let outcome = |op: Op| {
        let i = ops.iter().position(|o| *o == op).expect("op in the script");
        describe(&report.outcomes[i])
    };
    for old in ["sub/f", "sub/d", "d/f", "d/sub2", "d/d", "d/d/f"] {
        assert_eq!(
            outcome(Op::Stat { path: old }),
            "ENOENT",
            "{old} must stay gone"
        );
    }
    assert_eq!(
        outcome(Op::ListDir { path: "d" }),
        "ok",
        "a new dir over a removed one is empty"
    );
    assert_eq!(
        outcome(Op::Rename {
            from: "f",
            to: "g",
            flags: NoReplace
        }),
        "EEXIST"
    );
    assert_eq!(
        outcome(Op::SetXattr {
            path: "h",
            name: "user.a",
            value: "1"
        }),
        "EPERM"
    );
    let unlinked = outcome(Op::OpenUnlinkWrite {
        path: "g-link",
        len: 5000,
        byte: 10,
    });
    assert!(
        unlinked.starts_with("ok: size 5001 nlink 1 ") && unlinked.ends_with("name ENOENT"),
        "write through an fd whose name was unlinked: {unlinked}"
    );
    // The moved lower dir is recorded with a redirect in stratafs's upper dir.
    let moved = report
        .strata_upper
        .values()
        .filter(|e| e.xattrs.contains_key("trusted.overlay.redirect"))
        .count();
    assert!(moved > 0, "no redirect in stratafs's upper dir");
    assert_eq!(
        outcome(Op::SparseWrite {
            path: "f",
            gap: 64 << 20,
            byte: 6
        }),
        format!("ok: size {}", 16 + (64 << 20) + 4)
    );
    // Copy-up keeps holes: the 8 MiB lower file with 4 bytes of data stays small in the upper.
    let copied = &report.strata_upper["sparse"];
    assert!(
        copied.blocks * 512 < 1 << 20,
        "copy-up of a sparse file allocated {} bytes for a few bytes of data",
        copied.blocks * 512
    );
}

/// Lower files hard-linked to each other stay one inode after a copy-up, on both sides: stratafs
/// keeps them together through the kernel's index format (the reference runs with index=on), and
/// every later stage (remount, cross mounts) must agree.
#[test]
fn lower_hard_links_stay_one_inode() {
    require_root();
    let dir = TempDir::new("wu-template");
    let template = build_template(
        dir.path(),
        Extras {
            lower_hardlinks: true,
            ..Extras::default()
        },
    );
    #[rustfmt::skip]
    let ops = vec![
        Op::Append { path: "hl1", len: 9, byte: 0x41 },
        Op::Chmod { path: "hl2", mode: Mode(0o600) },
        Op::Stat { path: "hl1" },
        Op::Read { path: "hl2" },
    ];
    let live = |kernel: &Path, strata: &Path| -> Result<(), String> {
        let mut expected = b"linked lower file\n".to_vec();
        expected.extend(ops::pattern(9, 0x41));
        for (name, root) in [("kernel", kernel), ("stratafs", strata)] {
            let read =
                |p: &Path| std::fs::read(p).map_err(|e| format!("read {}: {e}", p.display()));
            let stat = |p: &Path| {
                sysc::lstat(p)
                    .map(|st| (st.st_ino, st.st_nlink, st.st_mode & 0o7777))
                    .map_err(|e| format!("stat {}: {}", p.display(), sysc::errno_name(e)))
            };
            let (d1, d2) = (read(&root.join("hl1"))?, read(&root.join("hl2"))?);
            if d1 != expected || d2 != expected {
                return Err(format!(
                    "{name}: hl1 {:?} / hl2 {:?}, both should be {:?}",
                    String::from_utf8_lossy(&d1),
                    String::from_utf8_lossy(&d2),
                    String::from_utf8_lossy(&expected)
                ));
            }
            let (i1, i2) = (stat(&root.join("hl1"))?, stat(&root.join("hl2"))?);
            if i1 != i2 || i1.1 != 2 || i1.2 != 0o600 {
                return Err(format!(
                    "{name}: (ino, nlink, mode) of hl1 {i1:?} and hl2 {i2:?}: want one inode, nlink 2, mode 600"
                ));
            }
        }
        Ok(())
    };
    // Documented divergence in the upper dir only: the kernel links hl2 into the upper dir when
    // chmod reaches it through the name hl2 (and counts links in trusted.overlay.nlink). A FUSE
    // setattr names an inode, not a name, so stratafs changes the one shared copy (hl1 and the
    // index entry) and hl2 keeps resolving to it through the index. The live check above
    // asserts what users see on both sides: one inode, both names, nlink 2, same content.
    let opts = Options {
        ignore_upper_paths: &["hl1", "hl2"],
        live_check: Some(&live),
        ..Options::default()
    };
    if let Err(e) = run(&template, &ops, &opts) {
        panic!("hard-linked lower files: {e}");
    }
    // More names for the linked inode, removals and renames, compared like any other run.
    #[rustfmt::skip]
    let more = vec![
        Op::Link { from: "hl2", to: "d/hl3" },
        Op::Append { path: "d/hl3", len: 5, byte: 1 },
        Op::Unlink { path: "hl1" },
        Op::Rename { from: "hl2", to: "e/hl2", flags: Plain },
        Op::Stat { path: "e/hl2" },
        Op::Truncate { path: "e/hl2", size: 4 },
        Op::Read { path: "d/hl3" },
        Op::Stat { path: "d/hl3" },
    ];
    if let Err(e) = run(&template, &more, &Options::default()) {
        panic!("more names for hard-linked lower files: {e}");
    }
}

/// A name longer than NAME_MAX is refused with ENAMETOOLONG by every call, as kernel
/// overlayfs's lookup refuses it (pjdfstest */02.t), not reported as absent; 255 bytes work.
#[test]
fn names_longer_than_name_max_are_refused() {
    require_root();
    const LONG: &str = "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";
    const MAX: &str = "yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy";
    let dir = TempDir::new("wu-namemax");
    let template = build_template(dir.path(), Extras::default());
    #[rustfmt::skip]
    let refused = vec![
        Op::Chmod { path: LONG, mode: Mode(0o600) },
        Op::Chown { path: LONG, uid: 1, gid: 1 },
        Op::Truncate { path: LONG, size: 0 },
        Op::Unlink { path: LONG },
        Op::Rmdir { path: LONG },
        Op::Link { from: LONG, to: "l1" },
        Op::Link { from: "f", to: LONG },
        Op::Rename { from: LONG, to: "r1", flags: Plain },
        Op::Rename { from: "f", to: LONG, flags: Plain },
        Op::Stat { path: LONG },
        Op::Create { path: LONG, mode: Mode(0o644), len: 1, byte: 1 },
        Op::Mkdir { path: LONG, mode: Mode(0o755) },
    ];
    let mut ops = refused.clone();
    #[rustfmt::skip]
    ops.extend([
        Op::Create { path: MAX, mode: Mode(0o644), len: 3, byte: 2 },
        Op::Chmod { path: MAX, mode: Mode(0o600) },
        Op::Rename { from: MAX, to: "d/moved", flags: Plain },
    ]);
    let report = run(&template, &ops, &Options::default()).unwrap_or_else(|e| panic!("{e}"));
    for (op, outcome) in refused.iter().zip(&report.outcomes) {
        assert_eq!(describe(outcome), "ENAMETOOLONG", "{op:?}");
    }
    for outcome in &report.outcomes[refused.len()..] {
        assert_eq!(describe(outcome), "ok");
    }
}

/// The divergence the index avoids: kernel overlayfs with index=off breaks a lower hard link
/// on copy-up (the other name keeps the old data). Documents why the reference uses index=on.
#[test]
fn kernel_without_index_breaks_lower_hard_links() {
    require_root();
    let dir = TempDir::new("wu-noindex");
    let template = build_template(
        &dir.subdir("template"),
        Extras {
            lower_hardlinks: true,
            ..Extras::default()
        },
    );
    let (upper, work, mnt) = (dir.subdir("u"), dir.subdir("w"), dir.subdir("m"));
    let kernel = KernelMount::mount(
        &template.layers,
        Some((&upper, &work)),
        &mnt,
        "redirect_dir=on,index=off,metacopy=off",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let appended = ops::apply(
        &mnt,
        &Op::Append {
            path: "hl1",
            len: 3,
            byte: 1,
        },
    );
    assert_eq!(describe(&appended), "ok");
    let hl2 = std::fs::read(mnt.join("hl2")).expect("read hl2");
    assert_eq!(
        hl2, b"linked lower file\n",
        "kernel overlayfs with index=off now keeps lower hard links together"
    );
    kernel.unmount().expect("unmount");
}

#[test]
fn random_differential() {
    require_root();
    let dir = TempDir::new("wu-template");
    let template = build_template(dir.path(), Extras::default());
    let failures = random_runs(&template, &Options::default(), 20);
    assert!(
        failures.is_empty(),
        "{} seed(s) failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}
