//! Bad command lines: each must fail with a non-zero exit and one line on stderr naming the
//! offending path and the fix, never panic, and leave nothing mounted or running. Each
//! case runs in the foreground and with --daemon.

mod common;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::mount::{daemons_serving, run_bounded, stderr_path, wait_until, STRATAFS};
use common::mount::{KernelOverlay, StrataMount};
use common::mountinfo::types_at;
use common::tmp::TempDir;

const TIMEOUT: Duration = Duration::from_secs(20);

/// Runs `stratafs mount [--daemon] ARGS MNT` and checks it is refused properly. `names` is
/// what the error must mention (the offending path), `fix` a word of the advice.
fn expect_refusal(args: &[OsString], mnt: &Path, names: Option<&Path>, fix: &str) {
    for daemon in [false, true] {
        let how = if daemon { "--daemon" } else { "foreground" };
        let before = types_at(mnt);
        let daemons_before = daemons_serving(mnt);
        let mut cmd = Command::new(STRATAFS);
        cmd.arg("mount");
        if daemon {
            cmd.arg("--daemon");
        }
        cmd.args(args).arg(mnt);
        let err_file = stderr_path(mnt);
        let status = run_bounded(&mut cmd, &err_file, TIMEOUT);
        let stderr = std::fs::read_to_string(&err_file).unwrap_or_default();
        let after = types_at(mnt);
        if after.len() > before.len() {
            // Take charge of the unwanted mount so it is undone, then fail.
            drop(StrataMount::adopt(mnt));
            panic!("{how}: {args:?} {mnt:?} got mounted ({after:?}); stderr: {stderr}");
        }
        let status =
            status.unwrap_or_else(|| panic!("{how}: {args:?} still running after {TIMEOUT:?}"));
        assert!(
            !status.success(),
            "{how}: {args:?} exited 0; stderr: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{how}: panic: {stderr}");
        let text = stderr.trim_end();
        assert_eq!(
            text.lines().count(),
            1,
            "{how}: stderr must be one line, got: {stderr:?}"
        );
        if let Some(p) = names {
            assert!(
                text.contains(&*p.to_string_lossy()),
                "{how}: error does not name {p:?}: {text}"
            );
        }
        assert!(
            text.contains(fix),
            "{how}: error does not say what to do ({fix:?}): {text}"
        );
        assert!(
            wait_until(Duration::from_secs(5), || daemons_serving(mnt)
                == daemons_before),
            "{how}: a new stratafs process for {mnt:?} is still running"
        );
    }
}

fn layer_args(layers: &[&Path]) -> Vec<OsString> {
    let mut v = Vec::new();
    for l in layers {
        v.push("--layer".into());
        v.push(l.as_os_str().to_owned());
    }
    v
}

/// A scratch dir with one good layer (holding a file) and an empty mountpoint.
fn setup(label: &str) -> (TempDir, PathBuf, PathBuf) {
    let t = TempDir::new(label);
    let good = t.subdir("good");
    std::fs::write(good.join("file"), b"x\n").unwrap();
    let mnt = t.subdir("mnt");
    (t, good, mnt)
}

#[test]
fn missing_layer_dir() {
    let (t, good, mnt) = setup("bad-missing-layer");
    let missing = t.path().join("no-such-layer");
    expect_refusal(
        &layer_args(&[&good, &missing]),
        &mnt,
        Some(&missing),
        "director",
    );
}

#[test]
fn layer_is_a_regular_file() {
    let (t, good, mnt) = setup("bad-file-layer");
    let file = t.path().join("a-file");
    std::fs::write(&file, b"not a directory\n").unwrap();
    expect_refusal(&layer_args(&[&file, &good]), &mnt, Some(&file), "director");
}

#[test]
fn mountpoint_missing() {
    let (t, good, _) = setup("bad-missing-mnt");
    let mnt = t.path().join("no-such-mountpoint");
    expect_refusal(&layer_args(&[&good]), &mnt, Some(&mnt), "mkdir");
    assert!(!mnt.exists(), "the missing mountpoint was created");
}

#[test]
fn mountpoint_is_not_a_directory() {
    let (t, good, _) = setup("bad-file-mnt");
    let mnt = t.path().join("a-file");
    std::fs::write(&mnt, b"not a directory\n").unwrap();
    expect_refusal(&layer_args(&[&good]), &mnt, Some(&mnt), "director");
}

#[test]
fn no_layers() {
    let (_t, _, mnt) = setup("bad-no-layers");
    expect_refusal(&[], &mnt, None, "--layer");
}

#[test]
fn mountpoint_already_mounted_by_stratafs() {
    let (_t, good, mnt) = setup("bad-mounted-strata");
    let first = StrataMount::foreground(std::slice::from_ref(&good), &mnt);
    expect_refusal(&layer_args(&[&good]), &mnt, Some(&mnt), "umount");
    // The first mount is still there and still serves.
    assert_eq!(types_at(&mnt).len(), 1);
    assert_eq!(std::fs::read(mnt.join("file")).unwrap(), b"x\n");
    first.unmount().expect("first mount unmounts cleanly");
}

#[test]
fn mountpoint_already_mounted_by_kernel_overlay() {
    let (t, good, mnt) = setup("bad-mounted-kernel");
    let _k = KernelOverlay::mount(&[good.clone(), t.subdir("empty")], &mnt);
    expect_refusal(&layer_args(&[&good]), &mnt, Some(&mnt), "umount");
    assert_eq!(types_at(&mnt), ["overlay"]);
}

/// clap's usage errors keep clap's layout (the option on the first line, a Usage line) and
/// exit with status 2; nothing is mounted.
#[test]
fn unknown_option_names_the_option_in_clap_layout() {
    let (_t, good, mnt) = setup("bad-option");
    let out = Command::new(STRATAFS)
        .arg("mount")
        .args(layer_args(&[&good]))
        .arg("--no-such-option")
        .arg(&mnt)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(
        err.lines().next(),
        Some("error: unexpected argument '--no-such-option' found"),
        "{err}"
    );
    assert!(
        err.lines().any(|l| l.starts_with("Usage: stratafs mount")),
        "{err}"
    );
    assert!(types_at(&mnt).is_empty());
}

#[test]
fn every_missing_directory_is_named_in_one_message() {
    let (t, good, _) = setup("bad-missing-all");
    let upper = t.path().join("no-upper");
    let work = t.path().join("no-work");
    let mnt = t.path().join("no-mnt");
    let mut args = layer_args(&[&good]);
    args.extend(["--upper".into(), upper.clone().into()]);
    args.extend(["--work".into(), work.clone().into()]);
    let fix = format!(
        "mkdir -p {} {} {}",
        upper.display(),
        work.display(),
        mnt.display()
    );
    expect_refusal(&args, &mnt, Some(&upper), &fix);
    assert!(!upper.exists() && !work.exists() && !mnt.exists());
}

/// A mountpoint inside a layer: the layer then contains the mount, and a daemon that walks
/// into it ends up waiting on itself. stratafs must either refuse (one-line error naming the
/// mountpoint) or serve the mountpoint's directory without entering its own mount, as
/// kernel overlayfs does.
#[test]
fn mountpoint_inside_a_layer() {
    let t = TempDir::new("bad-mnt-in-layer");
    let layer = t.subdir("layer");
    std::fs::write(layer.join("file"), b"x\n").unwrap();
    let mnt = t.subdir("layer/sub/mnt");
    let err_file = stderr_path(&mnt);
    let status = run_bounded(
        Command::new(STRATAFS)
            .arg("mount")
            .arg("--daemon")
            .args(layer_args(&[&layer]))
            .arg(&mnt),
        &err_file,
        TIMEOUT,
    );
    let stderr = std::fs::read_to_string(&err_file).unwrap_or_default();
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    if !types_at(&mnt).iter().any(|t| t.starts_with("fuse")) {
        assert!(
            status.is_some_and(|s| !s.success()),
            "not mounted, yet not refused: {status:?} {stderr}"
        );
        let text = stderr.trim_end();
        assert_eq!(text.lines().count(), 1, "one line expected: {stderr:?}");
        assert!(text.contains(&*mnt.to_string_lossy()), "{text}");
        return;
    }
    let guard = StrataMount::adopt(&mnt);
    // Walk the whole mount from a child process that may get stuck: then the connection is
    // aborted to free it.
    let inner = mnt.join("sub/mnt");
    let mut ls = Command::new("find")
        .arg(&mnt)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut done = None;
    wait_until(Duration::from_secs(5), || {
        done = ls.try_wait().unwrap();
        done.is_some()
    });
    if done.is_none() {
        if let Some(conn) = guard.connection() {
            common::mount::abort_fuse_connection(conn);
        }
        let _ = ls.kill();
        let _ = ls.wait();
        drop(guard);
        panic!(
            "mountpoint inside a layer: `find {}` hangs (the daemon waits on its own mount); \
             refuse this mountpoint or do not cross mounts inside layers",
            mnt.display()
        );
    }
    let entries: Vec<_> = std::fs::read_dir(&inner).unwrap().collect();
    assert!(
        entries.is_empty(),
        "mountpoint inside a layer: {inner:?} shows the mount inside itself ({} entries): \
         the daemon crossed into its own mount; refuse this mountpoint or do not cross \
         mounts inside layers",
        entries.len()
    );
    guard.unmount().expect("unmount");
}
