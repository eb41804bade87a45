//! `stratafs mount` run by an unprivileged user, without a user namespace: the mount goes
//! through fusermount3, the upper dir gets the rootless (userxattr) format, allow_other is
//! asked for only when /etc/fuse.conf permits it, and a clear message says so otherwise.
//! Runs as root and acts as the user `.ci/rootless-user` creates.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::mount::{run_bounded, StrataMount, STRATAFS};
use common::tmp::TempDir;
use common::userns::{rootless_user, RootlessUser};
use common::{require_root, sys};

/// `setpriv` to the rootless user, then `args`.
fn as_user(user: &RootlessUser, args: &[&std::ffi::OsStr]) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={}", user.uid))
        .arg(format!("--regid={}", user.gid))
        .args(["--init-groups", "--"])
        .args(args);
    cmd
}

/// Options of the mount at `mnt`, from /proc/self/mountinfo (mount and super options).
fn mount_options(mnt: &Path) -> String {
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
    let target = mnt.to_str().expect("UTF-8 path");
    info.lines()
        .rev()
        .find(|l| l.split(' ').nth(4) == Some(target))
        .map(|l| l.to_string())
        .unwrap_or_default()
}

fn fuse_conf_allows_other() -> bool {
    std::fs::read_to_string("/etc/fuse.conf").is_ok_and(|c| {
        c.lines()
            .any(|l| l.split('#').next().unwrap_or("").trim() == "user_allow_other")
    })
}

#[test]
fn plain_user_mounts_through_fusermount3() {
    require_root();
    let user = rootless_user();
    let dir = TempDir::new("plain-user");
    let [lower, upper, work, mnt] = ["l", "u", "w", "m"].map(|d| dir.subdir(d));
    std::fs::write(lower.join("f"), b"lower file\n").expect("write lower file");
    std::fs::create_dir(lower.join("d")).expect("mkdir lower dir");
    std::fs::write(lower.join("d/x"), b"x\n").expect("write lower file");
    for p in [
        dir.path(),
        &lower,
        &lower.join("f"),
        &lower.join("d"),
        &lower.join("d/x"),
    ] {
        std::os::unix::fs::chown(p, Some(user.uid), Some(user.gid)).expect("chown");
    }
    for p in [&upper, &work, &mnt] {
        std::os::unix::fs::chown(p, Some(user.uid), Some(user.gid)).expect("chown");
    }
    let stderr = dir.path().join("mount.stderr");
    let mut mount = as_user(
        &user,
        &[
            STRATAFS.as_ref(),
            "mount".as_ref(),
            "--daemon".as_ref(),
            "--layer".as_ref(),
            lower.as_os_str(),
            "--upper".as_ref(),
            upper.as_os_str(),
            "--work".as_ref(),
            work.as_os_str(),
            mnt.as_os_str(),
        ],
    );
    let status = run_bounded(&mut mount, &stderr, Duration::from_secs(30));
    let guard = StrataMount::adopt(&mnt);
    let messages = std::fs::read_to_string(&stderr).unwrap_or_default();
    assert!(
        status.is_some_and(|s| s.success()),
        "stratafs mount as {}: {status:?}\n{messages}",
        user.name
    );

    let options = mount_options(&mnt);
    assert!(
        options.contains(&format!("user_id={}", user.uid)),
        "not mounted by {} through fusermount3: {options}",
        user.name
    );
    if fuse_conf_allows_other() {
        assert!(options.contains("allow_other"), "{options}");
    } else {
        assert!(!options.contains("allow_other"), "{options}");
        assert!(
            messages.contains("/etc/fuse.conf does not permit allow_other")
                && messages.contains("user_allow_other"),
            "no message about allow_other:\n{messages}"
        );
        // Without allow_other even root is kept out of the user's mount.
        let err = std::fs::metadata(mnt.join("f")).expect_err("root got into the mount");
        assert_eq!(err.raw_os_error(), Some(libc::EACCES), "{err}");
    }

    // The changes that need overlay markers work for the user.
    let script = "set -e; cd \"$1\"; chmod 600 f; cat f >/dev/null; rm -rf d; mkdir d; \
                  echo new > d/n; mkdir e; mv e e2; ln f f-link";
    let out = as_user(
        &user,
        &[
            "sh".as_ref(),
            "-c".as_ref(),
            script.as_ref(),
            "sh".as_ref(),
            mnt.as_os_str(),
        ],
    )
    .output()
    .expect("run the user's changes");
    assert!(
        out.status.success(),
        "changes as {} failed: {}",
        user.name,
        String::from_utf8_lossy(&out.stderr)
    );
    guard.unmount().expect("unmount");

    // The upper dir is in the userxattr format.
    assert_eq!(
        std::fs::metadata(upper.join("f"))
            .expect("upper copy")
            .mode()
            & 0o7777,
        0o600
    );
    let opaque = sys::get_xattr(&upper.join("d"), "user.overlay.opaque").expect("getxattr");
    assert_eq!(
        opaque.as_deref(),
        Some(&b"y"[..]),
        "re-created dir not opaque"
    );
    for name in ["f", "d", "d/n", "e2", "f-link"] {
        let names = sys::list_xattrs(&upper.join(name)).expect("listxattr");
        assert!(
            names
                .iter()
                .all(|n| !n.to_string_lossy().starts_with("trusted.")),
            "{name}: {names:?}"
        );
    }
}
