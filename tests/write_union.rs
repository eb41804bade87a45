//! Differential tests of the writable layer against kernel overlayfs: the same operations on both
//! over identical copies of the same layers must observe the same results and leave the same
//! merged tree and the same upper dir (in the kernel's format); each implementation must read
//! the upper dir the other one wrote, and stratafs must show the same tree after a remount.
//!
//! Randomized runs: STRATAFS_SEEDS=N runs seeds 1..=N (default 150; 1..500 all match the
//! kernel); STRATAFS_SEED=S runs only seed S; STRATAFS_KEEP_GOING=1 goes on after a failing
//! seed and reports them all. A failure prints the seed and the operation list shrunk to a
//! minimal failing one.

mod common;

#[path = "write_union/differential.rs"]
mod differential;
#[path = "write_union/fixture.rs"]
mod fixture;
#[path = "write_union/identity.rs"]
mod identity;
#[path = "write_union/markers.rs"]
mod markers;
#[path = "write_union/mmap_times.rs"]
mod mmap_times;
#[path = "write_union/ops.rs"]
mod ops;
#[path = "write_union/script.rs"]
mod script;
#[path = "write_union/sysc.rs"]
mod sysc;
#[path = "write_union/tree.rs"]
mod tree;

use std::path::{Path, PathBuf};

use common::rw::{require_root, KernelMount, StrataChild, StrataSpec};
use common::tmp::TempDir;
use differential::{random_runs, run, Options, KERNEL_OPTS};
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
    let failures = random_runs(&template, &Options::default(), 150);
    assert!(
        failures.is_empty(),
        "{} seed(s) failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

/// Which implementation writes the upper dir that is then stacked as a lower layer.
#[derive(Clone, Copy, Debug)]
enum Writer {
    Kernel,
    Stratafs,
}

/// Runs `ops` on `writer` over `layers` with a fresh upper dir and returns that upper dir (in
/// `dir`/upper-`tag`); every operation must succeed.
fn write_upper(
    dir: &TempDir,
    tag: &str,
    writer: Writer,
    layers: &[PathBuf],
    ops: &[Op],
) -> PathBuf {
    let upper = dir.subdir(&format!("upper-{tag}"));
    let work = dir.subdir(&format!("work-{tag}"));
    let mnt = dir.subdir(&format!("mnt-{tag}"));
    let apply_all = |root: &Path| {
        for op in ops {
            let outcome = ops::apply(root, op);
            assert_eq!(describe(&outcome), "ok", "{writer:?}: {op:?}");
        }
    };
    match writer {
        Writer::Kernel => {
            let m = KernelMount::mount(layers, Some((&upper, &work)), &mnt, KERNEL_OPTS)
                .unwrap_or_else(|e| panic!("{e}"));
            apply_all(&mnt);
            m.unmount().unwrap_or_else(|e| panic!("{e}"));
        }
        Writer::Stratafs => {
            let m = StrataChild::start(&StrataSpec {
                layers: layers.to_vec(),
                upper: Some((upper.clone(), work)),
                mountpoint: mnt.clone(),
                log: dir.path().join(format!("stratafs-{tag}.log")),
                extra_args: Vec::new(),
            })
            .unwrap_or_else(|e| panic!("{e}"));
            apply_all(&mnt);
            m.unmount().unwrap_or_else(|e| panic!("{e}"));
        }
    }
    upper
}

/// A finished container's upper dir stacked as the next image layer (what containers/storage
/// does) keeps what it recorded: renamed dirs (redirects, relative and absolute) show their
/// older content from the layers below, metacopy files (chmod'ed, also renamed) their data
/// from below. Compared with kernel overlayfs (redirect_dir=on, metacopy=on) on the rotated
/// stack, for an upper written by the kernel and one written by stratafs, and changed again
/// there (the unionmount suite's rename-dir, rename-pop-dir and rename-move-dir cases).
#[test]
fn upper_rotated_into_a_lower_layer() {
    require_root();
    #[rustfmt::skip]
    let first = vec![
        // rename-dir: a merged dir renamed in place (relative redirect).
        Op::Rename { from: "d", to: "d-renamed", flags: Plain },
        // rename-move-dir: a lower dir moved to another parent (absolute redirect).
        Op::Rename { from: "sub/d", to: "moved", flags: Plain },
        Op::Rename { from: "n", to: "d-renamed/n-in", flags: Plain },
        // Metadata-only copy-ups, one of them renamed afterwards.
        Op::Chmod { path: "d-renamed/g", mode: Mode(0o600) },
        Op::Chmod { path: "sub/f", mode: Mode(0o640) },
        Op::Rename { from: "sub/f", to: "f-moved", flags: Plain },
    ];
    #[rustfmt::skip]
    let second = vec![
        Op::ListDir { path: "d-renamed" },
        Op::ListDir { path: "d-renamed/sub" },
        Op::ListDir { path: "moved/n" },
        Op::Read { path: "d-renamed/g" },
        Op::Read { path: "f-moved" },
        Op::Read { path: "moved/g" },
        // rename-pop-dir: a redirected lower dir renamed again and populated.
        Op::Rename { from: "d-renamed", to: "d-again", flags: Plain },
        Op::Create { path: "d-again/new", mode: Mode(0o644), len: 10, byte: 1 },
        Op::ListDir { path: "d-again" },
        Op::Rename { from: "moved", to: "d-again/moved2", flags: Plain },
        Op::ListDir { path: "d-again/moved2/n" },
        // Copy-ups of lower metacopy files: data from the layer below them.
        Op::Append { path: "f-moved", len: 3, byte: 2 },
        Op::Chmod { path: "d-again/g", mode: Mode(0o644) },
        Op::Read { path: "d-again/g" },
        Op::Truncate { path: "d-again/moved2/g", size: 5 },
    ];
    for writer in [Writer::Kernel, Writer::Stratafs] {
        let dir = TempDir::new("wu-rotate");
        let template = build_template(&dir.subdir("template"), Extras::default());
        let upper = write_upper(&dir, "first", writer, &template.layers, &first);
        let mut layers = template.layers.clone();
        layers.push(upper);
        let rotated = fixture::Template { layers };
        if let Err(e) = run(&rotated, &second, &Options::default()) {
            panic!("upper written by {writer:?}, rotated into a lower layer: {e}");
        }
    }
}

/// A metacopy file in a lower layer whose data no layer below holds reads EIO, as in the
/// kernel, never zeros.
#[test]
fn lower_metacopy_without_data_reads_eio() {
    require_root();
    let dir = TempDir::new("wu-rotate-nodata");
    let template = build_template(&dir.subdir("template"), Extras::default());
    let chmod = [Op::Chmod {
        path: "g",
        mode: Mode(0o600),
    }];
    let upper = write_upper(&dir, "first", Writer::Kernel, &template.layers, &chmod);
    assert!(
        sysc::lgetxattr(&upper.join("g"), b"trusted.overlay.metacopy").is_ok(),
        "the kernel should have made g a metacopy"
    );
    // g's data is in the bottom layer only: drop it there.
    std::fs::remove_file(template.layers[0].join("g")).unwrap();
    let layers = vec![
        template.layers[0].clone(),
        template.layers[1].clone(),
        upper,
    ];
    let read = Op::Read { path: "g" };
    let kmnt = dir.subdir("kmnt");
    let kernel = KernelMount::mount(&layers, None, &kmnt, "redirect_dir=on,metacopy=on")
        .unwrap_or_else(|e| panic!("{e}"));
    let kernel_read = describe(&ops::apply(&kmnt, &read));
    kernel.unmount().unwrap();
    let smnt = dir.subdir("smnt");
    let strata = StrataChild::start(&StrataSpec {
        layers: layers.clone(),
        upper: None,
        mountpoint: smnt.clone(),
        log: dir.path().join("stratafs.log"),
        extra_args: Vec::new(),
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let strata_read = describe(&ops::apply(&smnt, &read));
    strata.unmount().unwrap();
    assert_eq!(kernel_read, "EIO");
    assert_eq!(strata_read, "EIO");
}
