//! An inode is not its first name: hard links reached through any of their names, after the
//! first name is removed, exchanged or renamed over, before and after copy-up and across a
//! remount, must act on the right inode, as kernel overlayfs does.

use crate::common::rw::require_root;
use crate::common::tmp::TempDir;
use crate::differential::{run, Options};
use crate::fixture::{build_template, Extras};
use crate::ops::{describe, Mode, Op, RenameFlags::*};

/// Upper-dir paths where stratafs's format differs from the kernel's, by design: the kernel
/// links a lower hard link's name into the upper dir ("links up") when an operation reaches
/// the inode through that name, and writes a redirect or nlink marker accordingly. A FUSE
/// request names the inode, not the name, so stratafs changes the one shared copy (held in
/// the index) and the other lower names keep resolving to it through the index. What users
/// see (the merged trees, after remounts and on cross mounts) must still be equal.
fn run_ok(ops: &[Op], what: &str, linked_up_by_kernel: &[&str]) -> Vec<String> {
    require_root();
    let dir = TempDir::new("wu-identity");
    let template = build_template(
        dir.path(),
        Extras {
            lower_hardlinks: true,
            ..Extras::default()
        },
    );
    let opts = Options {
        ignore_upper_paths: linked_up_by_kernel,
        ..Options::default()
    };
    match run(&template, ops, &opts) {
        Ok(report) => report.outcomes.iter().map(describe).collect(),
        Err(e) => panic!("{what}: {e}"),
    }
}

/// RENAME_EXCHANGE of two names whose inodes have other names: each inode keeps its data and
/// every later write through any name lands in that name's inode.
#[test]
fn exchange_of_hard_linked_names_keeps_each_inode() {
    #[rustfmt::skip]
    let ops = vec![
        // Upper files, each with a second name, in two directories.
        Op::Create { path: "d/a", mode: Mode(0o644), len: 10, byte: 1 },
        Op::Link { from: "d/a", to: "d/a2" },
        Op::Create { path: "e/b", mode: Mode(0o600), len: 20, byte: 2 },
        Op::Link { from: "e/b", to: "e/b2" },
        Op::Rename { from: "d/a2", to: "e/b2", flags: Exchange },
        Op::Append { path: "d/a", len: 5, byte: 3 },
        Op::Append { path: "e/b", len: 6, byte: 4 },
        Op::Append { path: "d/a2", len: 7, byte: 5 },
        Op::Chmod { path: "e/b2", mode: Mode(0o640) },
        Op::SetXattr { path: "d/a2", name: "user.a", value: "1" },
        Op::Read { path: "d/a" },
        Op::Read { path: "e/b" },
        Op::Stat { path: "e/b2" },
        // Lower hard links, exchanged before any copy-up.
        Op::Stat { path: "hl1" },
        Op::Rename { from: "hl2", to: "d/f", flags: Exchange },
        Op::Append { path: "hl1", len: 3, byte: 6 },
        Op::Append { path: "d/f", len: 4, byte: 7 },
        Op::Read { path: "hl2" },
        Op::Read { path: "hl1" },
        Op::Stat { path: "d/f" },
        Op::Remount,
        Op::Append { path: "d/a", len: 2, byte: 8 },
        Op::Append { path: "e/b2", len: 2, byte: 9 },
        Op::Rename { from: "d/a", to: "e/b", flags: Exchange },
        Op::Append { path: "e/b", len: 1, byte: 10 },
        Op::Read { path: "d/a2" },
        Op::Read { path: "e/b2" },
        Op::Read { path: "d/f" },
    ];
    let out = run_ok(&ops, "exchange of hard-linked names", &["hl1", "d/f"]);
    // The appends went where the names say: a's inode got 10 + 5, b's 20 + 6 + 7 (via d/a2).
    assert!(out[10].starts_with("ok: 15 bytes "), "d/a: {}", out[10]);
    assert!(out[11].starts_with("ok: 33 bytes "), "e/b: {}", out[11]);
}

/// `ln a b; rm a`: every operation through `b` still reaches the inode (upper files, lower
/// hard links before and after copy-up, and after a remount).
#[test]
fn removing_the_first_name_keeps_the_others_working() {
    #[rustfmt::skip]
    let ops = vec![
        Op::Create { path: "nf", mode: Mode(0o644), len: 100, byte: 1 },
        Op::Link { from: "nf", to: "d/nl" },
        Op::Unlink { path: "nf" },
        Op::Chmod { path: "d/nl", mode: Mode(0o600) },
        Op::Truncate { path: "d/nl", size: 3 },
        Op::Append { path: "d/nl", len: 5, byte: 2 },
        Op::SetXattr { path: "d/nl", name: "user.a", value: "red" },
        Op::Link { from: "d/nl", to: "n2" },
        Op::Rename { from: "d/nl", to: "e/nl", flags: Plain },
        Op::Stat { path: "n2" },
        Op::Unlink { path: "n2" },
        Op::Chown { path: "e/nl", uid: 1000, gid: 100 },
        Op::Utimes { path: "e/nl", secs: 700_000_000 },
        Op::Read { path: "e/nl" },
        // Lower hard links, the first name removed before any copy-up.
        Op::Stat { path: "hl1" },
        Op::Stat { path: "hl2" },
        Op::Unlink { path: "hl1" },
        Op::Chmod { path: "hl2", mode: Mode(0o604) },
        Op::Append { path: "hl2", len: 5, byte: 3 },
        Op::Stat { path: "hl2" },
        Op::Link { from: "hl2", to: "hl1" },
        Op::Unlink { path: "hl2" },
        Op::SetXattr { path: "hl1", name: "user.b", value: "1" },
        Op::Rename { from: "hl1", to: "d/hl", flags: Plain },
        Op::Truncate { path: "d/hl", size: 2 },
        Op::Stat { path: "d/hl" },
        Op::Remount,
        Op::Link { from: "e/nl", to: "e/nl2" },
        Op::Unlink { path: "e/nl" },
        Op::Append { path: "e/nl2", len: 3, byte: 4 },
        Op::Chmod { path: "e/nl2", mode: Mode(0o644) },
        Op::Stat { path: "e/nl2" },
    ];
    let out = run_ok(&ops, "removing the first name", &["d/hl"]);
    assert_eq!(out[3], "ok", "chmod through the remaining name");
    assert_eq!(
        out[17], "ok",
        "chmod of a lower hard link whose first name is gone"
    );
}

/// The same after copy-up: the lower hard link is copied up through one name, then that name
/// goes and the other name is used.
#[test]
fn removing_the_copied_up_name_of_a_lower_hard_link() {
    #[rustfmt::skip]
    let ops = vec![
        Op::Stat { path: "hl2" },
        Op::Append { path: "hl1", len: 4, byte: 1 },
        Op::Unlink { path: "hl1" },
        Op::Chmod { path: "hl2", mode: Mode(0o600) },
        Op::Truncate { path: "hl2", size: 5 },
        Op::SetXattr { path: "hl2", name: "user.c", value: "1" },
        Op::Append { path: "hl2", len: 4, byte: 2 },
        Op::Stat { path: "hl2" },
        Op::Remount,
        Op::Stat { path: "hl2" },
        Op::Link { from: "hl2", to: "d/hl3" },
        Op::Unlink { path: "hl2" },
        Op::Append { path: "d/hl3", len: 1, byte: 3 },
        Op::Stat { path: "d/hl3" },
    ];
    run_ok(&ops, "removing the copied-up name", &[]);
}

/// Renaming over a name whose inode has other links: the surviving link shows the new link
/// count and ctime at once; an open file renamed over has no link left.
#[test]
fn rename_over_a_linked_name_updates_the_other_links() {
    #[rustfmt::skip]
    let ops = vec![
        Op::Create { path: "src", mode: Mode(0o644), len: 10, byte: 1 },
        Op::Create { path: "dst", mode: Mode(0o644), len: 20, byte: 2 },
        Op::Link { from: "dst", to: "d/dstlnk" },
        Op::Stat { path: "d/dstlnk" },
        Op::RenameOverLink { from: "src", to: "dst", other: "d/dstlnk" },
        Op::Stat { path: "d/dstlnk" },
        Op::Stat { path: "dst" },
        // Lower hard links renamed over, before copy-up.
        Op::Stat { path: "hl2" },
        Op::RenameOverLink { from: "f", to: "hl1", other: "hl2" },
        Op::Append { path: "hl2", len: 3, byte: 3 },
        // Open files renamed over: an upper file, a copied-up lower file, a hard link.
        Op::Create { path: "o1", mode: Mode(0o644), len: 10, byte: 4 },
        Op::Create { path: "o2", mode: Mode(0o644), len: 10, byte: 5 },
        Op::OpenRenameOver { path: "o1", from: "o2" },
        Op::OpenRenameOver { path: "d/g", from: "d/h" },
        Op::Link { from: "o1", to: "o1-link" },
        Op::OpenRenameOver { path: "o1", from: "d/dstlnk" },
        Op::Stat { path: "o1-link" },
    ];
    let out = run_ok(&ops, "rename over a linked name", &["hl2"]);
    assert_eq!(out[4], "ok: d/dstlnk: nlink 2 -> 1, ctime moved: true");
    assert!(out[12].contains("fd: size 14 nlink 0"), "{}", out[12]);
}
