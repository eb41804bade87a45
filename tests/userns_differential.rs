//! The differential tests of the writable layer, run the rootless way: as an unprivileged user
//! inside a user namespace (its subordinate ids mapped, as rootless podman maps them), stratafs
//! against kernel overlayfs mounted with `userxattr` in the same namespace. Same operation sets
//! as tests/write_union.rs (the scripted list and random seeds), same comparisons: merged trees,
//! upper dirs in the kernel's userxattr format, a remount, and each system on the upper dir the
//! other one wrote.
//!
//! Each `#[test]` here runs as root and starts its `inner_*` twin (ignored when run directly) in
//! the namespace; `.ci/rootless-user` sets up the user.

mod common;

#[path = "write_union/differential.rs"]
mod differential;
#[path = "write_union/fixture.rs"]
mod fixture;
#[path = "write_union/ops.rs"]
mod ops;
#[path = "write_union/sysc.rs"]
mod sysc;
#[path = "write_union/tree.rs"]
mod tree;

use std::time::Duration;

use common::rw::require_root;
use common::tmp::TempDir;
use common::userns::{require_user_namespace, run_inner_test, Mapping};
use differential::{run, Format, Options};
use fixture::{build_template, Extras};
use ops::{Mode, Op, RenameFlags::*};

const INNER_TIMEOUT: Duration = Duration::from_secs(900);

fn rootless_template(dir: &TempDir) -> fixture::Template {
    build_template(
        dir.path(),
        Extras {
            ns: Format::Userxattr.ns(),
            ..Extras::default()
        },
    )
}

fn rootless_options() -> Options<'static> {
    Options {
        format: Format::Userxattr,
        ..Options::default()
    }
}

#[test]
fn userns_file_changes_differential() {
    require_root();
    run_inner_test("inner_file_changes", Mapping::Subordinate, INNER_TIMEOUT);
}

/// Changes of file data and of names (no metadata change of a lower object, no directory move):
/// what needs no overlay marker beyond whiteouts.
#[test]
#[ignore = "runs in a user namespace, started by userns_file_changes_differential"]
fn inner_file_changes() {
    require_user_namespace();
    let dir = TempDir::new("wu-template");
    let template = rootless_template(&dir);
    #[rustfmt::skip]
    let ops = vec![
        Op::Create { path: "new", mode: Mode(0o644), len: 100, byte: 1 },
        Op::Append { path: "f", len: 10, byte: 2 },
        Op::Append { path: "d/g", len: 5000, byte: 3 },
        Op::Overwrite { path: "sub/d/g", off: 4090, len: 20, byte: 4 },
        Op::WriteTrunc { path: "d/f", len: 7, byte: 5 },
        Op::Truncate { path: "sub/f", size: 0 },
        Op::Truncate { path: "g", size: 50 },
        Op::SparseWrite { path: "sparse", gap: 1 << 20, byte: 7 },
        Op::Rename { from: "new", to: "d/new", flags: Plain },
        Op::Rename { from: "f", to: "g", flags: NoReplace },
        Op::Rename { from: "sub/d/f", to: "d/f", flags: Plain },
        Op::Rename { from: "d/h", to: "f3", flags: Plain },
        Op::Link { from: "g", to: "g-link" },
        Op::Symlink { target: "g", path: "s1" },
        Op::Mkfifo { path: "fifo1", mode: Mode(0o640) },
        Op::SetXattr { path: "f3", name: "user.a", value: "1" },
        Op::Unlink { path: "h" },
        Op::Unlink { path: "d/sub/h" },
        Op::OpenUnlinkWrite { path: "g-link", len: 5000, byte: 10 },
        Op::Mkdir { path: "newdir", mode: Mode(0o755) },
        Op::Rename { from: "newdir", to: "sub/newdir", flags: Plain },
        Op::ListDir { path: "" },
        Op::ListDir { path: "d" },
    ];
    if let Err(e) = run(&template, &ops, &rootless_options()) {
        panic!("file changes in a user namespace: {e}");
    }
}
