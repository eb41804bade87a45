//! Running part of a test as an unprivileged user inside a user namespace, the way rootless
//! podman and buildah run their mount program.
//!
//! The outer test (run as root by `cargo test`) starts one `#[ignore]`d test of the same test
//! binary as the rootless user under `unshare --map-root-user --mount`, optionally with the
//! user's subordinate ids mapped after it (`--map-auto`, what rootless podman does), and checks
//! that exactly that test ran and passed. The inner test keeps its files in a scratch dir that
//! the outer test removes, and whatever process it leaves behind is killed, so a failing inner
//! test leaves neither a mount nor a daemon: its mounts live in its own mount namespace, which
//! goes away with its last process.

use std::ffi::CString;
use std::fs::File;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::tmp::{TempDir, TEST_TMP_ENV};

/// The user the rootless tests run as; `.ci/rootless-user` creates it.
pub const USER_ENV: &str = "STRATAFS_ROOTLESS_USER";
pub const DEFAULT_USER: &str = "stratafs-rootless";

pub struct RootlessUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// The rootless test user (from $STRATAFS_ROOTLESS_USER, default `stratafs-rootless`).
pub fn rootless_user() -> RootlessUser {
    let name = std::env::var(USER_ENV).unwrap_or_else(|_| DEFAULT_USER.into());
    let cname = CString::new(name.clone()).expect("user name without NUL");
    // SAFETY: getpwnam reads a NUL-terminated name; the result is used before any other
    // passwd call of this thread.
    let pw = unsafe { libc::getpwnam(cname.as_ptr()) };
    assert!(
        !pw.is_null(),
        "the rootless tests run as user {name:?}, which does not exist: run `.ci/rootless-user` \
         as root (it creates the user with subordinate ids and opens /dev/fuse to it)"
    );
    // SAFETY: pw is a valid passwd entry (checked non-null above).
    let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
    RootlessUser { name, uid, gid }
}

/// Whether this process runs in a user namespace other than the initial one.
pub fn in_user_namespace() -> bool {
    let map = std::fs::read_to_string("/proc/self/uid_map").unwrap_or_default();
    let initial = map
        .split_whitespace()
        .collect::<Vec<_>>()
        .eq(&["0", "0", "4294967295"]);
    !initial
}

/// Fails an inner test run outside a user namespace (by hand, with --ignored): it would test
/// the privileged path and prove nothing about the rootless one.
pub fn require_user_namespace() {
    assert!(
        in_user_namespace(),
        "this test runs inside a user namespace as an unprivileged user; its outer test starts it"
    );
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "the inner test runs as root of its user namespace");
}

/// Which ids the user namespace maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mapping {
    /// Only the user, as root (`unshare -Ur`): other owners show up as nobody.
    RootOnly,
    /// The user as root and its 65536 subordinate ids after it, as rootless podman maps them.
    Subordinate,
}

/// Runs the `#[ignore]`d test `name` of this test binary as the rootless user in a new user
/// and mount namespace; panics with its output unless it ran and passed within `timeout`.
pub fn run_inner_test(name: &str, mapping: Mapping, timeout: Duration) {
    use std::os::unix::process::CommandExt;
    let user = rootless_user();
    let scratch = TempDir::new("userns");
    std::os::unix::fs::chown(scratch.path(), Some(user.uid), Some(user.gid))
        .unwrap_or_else(|e| panic!("chown {}: {e}", scratch.path().display()));
    let work = scratch.path().join("tmp");
    std::fs::create_dir(&work).expect("mkdir the inner test's temp dir");
    std::os::unix::fs::chown(&work, Some(user.uid), Some(user.gid)).expect("chown temp dir");
    let log_path = scratch.path().join("output");
    let log = File::create(&log_path).expect("create the inner test's log");

    let exe = std::env::current_exe().expect("path of the test binary");
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={}", user.uid))
        .arg(format!("--regid={}", user.gid))
        .arg("--init-groups")
        .arg("--")
        .arg("unshare")
        .args(["--map-root-user", "--mount"]);
    if mapping == Mapping::Subordinate {
        cmd.arg("--map-auto");
    }
    cmd.arg("--")
        .arg(&exe)
        .arg(name)
        .args(["--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env(TEST_TMP_ENV, &work)
        .env("RUST_BACKTRACE", "1")
        .current_dir(&work)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("dup log fd"))
        .stderr(log)
        // Its own process group: whatever it leaves running can be found and stopped.
        .process_group(0);
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start setpriv/unshare for {name}: {e}"));
    let pgid = child.id() as i32;
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait().expect("wait for the inner test") {
            Some(s) => break Some(s),
            None if Instant::now() >= deadline => break None,
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    // A daemon the inner test could not stop would keep its mount namespace (and mounts) alive.
    // SAFETY: kill(2) of the process group this test created; ESRCH when it is already empty.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
    if status.is_none() {
        let _ = child.wait();
    }
    let output = std::fs::read_to_string(&log_path).unwrap_or_default();
    let ran_one = output.contains("test result: ok. 1 passed;");
    match status {
        Some(s) if s.success() && ran_one => {}
        Some(s) if s.success() => panic!(
            "{name} as {} in a user namespace: the test did not run (no such test?):\n{output}",
            user.name
        ),
        Some(s) => panic!(
            "{name} as {} in a user namespace failed ({s}):\n{output}",
            user.name
        ),
        None => panic!(
            "{name} as {} in a user namespace: no result after {timeout:?}, killed:\n{output}",
            user.name
        ),
    }
}
