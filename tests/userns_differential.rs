//! The differential tests of the writable layer, run the rootless way: as an unprivileged user
//! inside a user namespace (its subordinate ids mapped, as rootless podman maps them), stratafs
//! against kernel overlayfs mounted with `userxattr` in the same namespace. Same operation sets
//! as tests/write_union.rs (the scripted list and random seeds), same comparisons: merged trees,
//! upper dirs in the kernel's userxattr format, a remount, and each system on the upper dir the
//! other one wrote.
//!
//! Each `#[test]` here runs as root and starts its `inner_*` twin (ignored when run directly) in
//! the namespace; `.ci/rootless-user` sets up the user. STRATAFS_SEEDS / STRATAFS_SEED /
//! STRATAFS_KEEP_GOING work as in tests/write_union.rs (default 8 seeds here).

mod common;

#[path = "write_union/differential.rs"]
mod differential;
#[path = "write_union/fixture.rs"]
mod fixture;
#[path = "write_union/ops.rs"]
mod ops;
#[path = "write_union/script.rs"]
mod script;
#[path = "write_union/sysc.rs"]
mod sysc;
#[path = "write_union/tree.rs"]
mod tree;

use std::time::Duration;

use common::rw::require_root;
use common::tmp::TempDir;
use common::userns::{require_user_namespace, run_inner_test, Mapping};
use differential::{random_runs, run, Format, Options};
use fixture::{build_template, Extras};
use ops::{describe, Mode, Op, RenameFlags::*};

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
fn userns_scripted_differential() {
    require_root();
    run_inner_test("inner_scripted", Mapping::Subordinate, INNER_TIMEOUT);
}

/// The whole scripted list: metadata changes of lower objects copy data up, renaming a merged
/// or lower directory gives EXDEV, and every marker is in user.overlay.*.
#[test]
#[ignore = "runs in a user namespace, started by userns_scripted_differential"]
fn inner_scripted() {
    require_user_namespace();
    let dir = TempDir::new("wu-template");
    let template = rootless_template(&dir);
    let ops = script::scripted_ops();
    let report = match run(&template, &ops, &rootless_options()) {
        Ok(r) => r,
        Err(e) => panic!("scripted differential run in a user namespace failed: {e}"),
    };
    check_userxattr_script(&ops, &report);
}

/// `--userxattr` asks for the rootless format where the privileged one is possible: as root,
/// against kernel overlayfs mounted with userxattr, the same scripted run and results.
#[test]
fn userxattr_option_as_root_matches_kernel_userxattr() {
    require_root();
    let dir = TempDir::new("wu-template");
    let template = rootless_template(&dir);
    let ops = script::scripted_ops();
    let opts = Options {
        strata_args: &["--userxattr"],
        ..rootless_options()
    };
    let report = match run(&template, &ops, &opts) {
        Ok(r) => r,
        Err(e) => panic!("scripted differential run with --userxattr failed: {e}"),
    };
    check_userxattr_script(&ops, &report);
}

/// What the scripted run must have gone through in the userxattr format (the same on both
/// sides, or the run failed before).
fn check_userxattr_script(ops: &[Op], report: &differential::Report) {
    let outcome = |op: Op| {
        let i = ops.iter().position(|o| *o == op).expect("op in the script");
        describe(&report.outcomes[i])
    };
    #[rustfmt::skip]
    let expected = [
        (Op::Chmod { path: "g", mode: Mode(0o4755) }, "ok"),
        (Op::Chown { path: "d/sub/f", uid: 1000, gid: 1000 }, "ok"),
        (Op::Utimes { path: "d/sub", secs: 610_000_000 }, "ok"),
        (Op::Rename { from: "sub/d", to: "moved", flags: Plain }, "EXDEV"),
        (Op::Rename { from: "d/sub", to: "d/sub2", flags: Plain }, "EXDEV"),
        (Op::Rename { from: "e", to: "n", flags: Exchange }, "EXDEV"),
        (Op::Stat { path: "sub/f" }, "ENOENT"),
        (Op::Stat { path: "d/f" }, "ENOENT"),
    ];
    for (op, want) in expected {
        assert_eq!(outcome(op.clone()), want, "{op:?}");
    }
    let upper = &report.strata_upper;
    let with = |name: &str| {
        upper
            .values()
            .filter(|e| e.xattrs.contains_key(name))
            .count()
    };
    // No metacopy: the upper files hold their data, compared with the kernel's above.
    assert_eq!(
        with("user.overlay.metacopy"),
        0,
        "metacopy in a userxattr upper"
    );
    assert_eq!(
        with("user.overlay.redirect"),
        0,
        "redirect in a userxattr upper"
    );
    assert!(
        with("user.overlay.opaque") > 0,
        "the re-created dirs are not marked opaque in user.overlay.*"
    );
    let trusted = upper
        .values()
        .flat_map(|e| e.xattrs.keys())
        .find(|n| n.starts_with("trusted."));
    assert_eq!(trusted, None, "a trusted xattr in a userxattr upper");
}

#[test]
fn userns_random_differential() {
    require_root();
    run_inner_test("inner_random", Mapping::Subordinate, INNER_TIMEOUT);
}

#[test]
#[ignore = "runs in a user namespace, started by userns_random_differential"]
fn inner_random() {
    require_user_namespace();
    let dir = TempDir::new("wu-template");
    let template = rootless_template(&dir);
    let failures = random_runs(&template, &rootless_options(), 8);
    assert!(
        failures.is_empty(),
        "{} seed(s) failed in a user namespace:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
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

#[test]
fn userns_mount_says_what_it_chose() {
    require_root();
    run_inner_test("inner_mount_log", Mapping::RootOnly, INNER_TIMEOUT);
}

/// In a user namespace stratafs picks the rootless format by itself and says so once, and the
/// first refused passthrough backing file turns passthrough off for the mount, said once,
/// while reads and writes go on through the daemon.
#[test]
#[ignore = "runs in a user namespace, started by userns_mount_says_what_it_chose"]
fn inner_mount_log() {
    use common::mount::{wait_until, StrataMount, STRATAFS};
    require_user_namespace();
    let dir = TempDir::new("mount-log");
    let (lower, upper, work, mnt) = (
        dir.subdir("l"),
        dir.subdir("u"),
        dir.subdir("w"),
        dir.subdir("m"),
    );
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(lower.join("big"), &data).expect("write lower file");
    std::fs::write(lower.join("small"), b"lower\n").expect("write lower file");
    let log_path = dir.path().join("stratafs.log");
    let log = std::fs::File::create(&log_path).expect("create log");
    let mut child = std::process::Command::new(STRATAFS)
        .args(["mount", "--layer"])
        .arg(&lower)
        .arg("--upper")
        .arg(&upper)
        .arg("--work")
        .arg(&work)
        .arg(&mnt)
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start stratafs");
    let live = wait_until(Duration::from_secs(30), || {
        common::mount_type(&mnt).is_some_and(|t| t.starts_with("fuse"))
            || child.try_wait().ok().flatten().is_some()
    });
    let guard = StrataMount::adopt(&mnt);
    let log_text = || std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(
        live && common::mount_type(&mnt).is_some(),
        "stratafs did not mount in a user namespace:\n{}",
        log_text()
    );
    // Several opens: only the first refused backing file may be reported.
    for _ in 0..3 {
        assert_eq!(
            std::fs::read(mnt.join("big")).expect("read lower file"),
            data
        );
    }
    std::fs::write(mnt.join("new"), b"written through the daemon\n").expect("write new file");
    assert_eq!(
        std::fs::read(mnt.join("new")).expect("read new file"),
        b"written through the daemon\n"
    );
    std::fs::write(mnt.join("small"), b"changed\n").expect("write lower file");
    guard.unmount().expect("unmount");
    let _ = child.wait();
    let text = log_text();
    let count = |needle: &str| text.matches(needle).count();
    assert_eq!(count("passthrough unavailable"), 1, "log:\n{text}");
    assert_eq!(count("upper format: rootless"), 1, "log:\n{text}");
    assert!(
        text.contains("trusted.overlay.* cannot be written in the work dir")
            && text.contains("no CAP_SYS_ADMIN in the initial user namespace"),
        "the log does not say why the rootless format was chosen:\n{text}"
    );
    assert_eq!(
        std::fs::read(upper.join("small")).expect("read upper copy"),
        b"changed\n"
    );
}
