//! Bad command lines: each must fail with a non-zero exit and one line on stderr naming the
//! offending path and the fix, never panic, and leave nothing mounted or running. Each
//! case runs in the foreground and with --daemon.

mod common;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::mount::{daemons_serving, run_bounded, stderr_path, wait_until, STRATAFS};
use common::mount::{layer_args, one_layer_scratch, writable_options};
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

#[test]
fn missing_layer_dir() {
    let (t, good, mnt) = one_layer_scratch("bad-missing-layer");
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
    let (t, good, mnt) = one_layer_scratch("bad-file-layer");
    let file = t.path().join("a-file");
    std::fs::write(&file, b"not a directory\n").unwrap();
    expect_refusal(&layer_args(&[&file, &good]), &mnt, Some(&file), "director");
}

#[test]
fn mountpoint_missing() {
    let (t, good, _) = one_layer_scratch("bad-missing-mnt");
    let mnt = t.path().join("no-such-mountpoint");
    expect_refusal(&layer_args(&[&good]), &mnt, Some(&mnt), "mkdir");
    assert!(!mnt.exists(), "the missing mountpoint was created");
}

#[test]
fn mountpoint_is_not_a_directory() {
    let (t, good, _) = one_layer_scratch("bad-file-mnt");
    let mnt = t.path().join("a-file");
    std::fs::write(&mnt, b"not a directory\n").unwrap();
    expect_refusal(&layer_args(&[&good]), &mnt, Some(&mnt), "director");
}

#[test]
fn no_layers() {
    let (_t, _, mnt) = one_layer_scratch("bad-no-layers");
    expect_refusal(&[], &mnt, None, "--layer");
}

#[test]
fn mountpoint_already_mounted_by_stratafs() {
    let (_t, good, mnt) = one_layer_scratch("bad-mounted-strata");
    let first = StrataMount::foreground(std::slice::from_ref(&good), &mnt);
    expect_refusal(&layer_args(&[&good]), &mnt, Some(&mnt), "umount");
    // The first mount is still there and still serves.
    assert_eq!(types_at(&mnt).len(), 1);
    assert_eq!(std::fs::read(mnt.join("file")).unwrap(), b"x\n");
    first.unmount().expect("first mount unmounts cleanly");
}

#[test]
fn mountpoint_already_mounted_by_kernel_overlay() {
    let (t, good, mnt) = one_layer_scratch("bad-mounted-kernel");
    let _k = KernelOverlay::mount(&[good.clone(), t.subdir("empty")], &mnt);
    expect_refusal(&layer_args(&[&good]), &mnt, Some(&mnt), "umount");
    assert_eq!(types_at(&mnt), ["overlay"]);
}

/// clap's usage errors keep clap's layout (the option on the first line, a Usage line) and
/// exit with status 2; nothing is mounted.
#[test]
fn unknown_option_names_the_option_in_clap_layout() {
    let (_t, good, mnt) = one_layer_scratch("bad-option");
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
    let (t, good, _) = one_layer_scratch("bad-missing-all");
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

// ---------------------------------------------------------------------------------------------
// Overlapping directories, also through bind-mount aliases: judged by identity, not by path.

/// `mount --bind SRC ALIAS`, undone on drop (also when the test fails).
struct BindMount(PathBuf);

impl BindMount {
    /// `SRC` seen again at `DIR/alias`; returns that path and the guard.
    fn alias_in(dir: &TempDir, src: &Path) -> (PathBuf, BindMount) {
        let alias = dir.path().join("alias");
        let guard = BindMount::new(src, &alias);
        (alias, guard)
    }

    fn new(src: &Path, alias: &Path) -> BindMount {
        std::fs::create_dir_all(alias).unwrap();
        let st = Command::new("mount")
            .arg("--bind")
            .arg(src)
            .arg(alias)
            .status()
            .expect("run mount --bind");
        assert!(st.success(), "mount --bind {src:?} {alias:?}");
        BindMount(alias.to_path_buf())
    }
}

impl Drop for BindMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn writable_args(layers: &[&Path], upper: &Path, work: &Path) -> Vec<OsString> {
    let mut args = layer_args(layers);
    args.extend(["--upper".into(), upper.into(), "--work".into(), work.into()]);
    args
}

/// Kernel overlayfs on the same directories: Err with its message if it refuses.
fn kernel_accepts(layer: &Path, upper: &Path, work: &Path, mnt: &Path) -> Result<(), String> {
    let out = Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o"])
        .arg(writable_options(layer, upper, work))
        .arg(mnt)
        .output()
        .expect("run mount -t overlay");
    if out.status.success() {
        let _ = Command::new("umount").arg(mnt).status();
        return Ok(());
    }
    Err(String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn upper_is_a_bind_alias_of_a_layer() {
    let (t, good, mnt) = one_layer_scratch("bad-upper-alias");
    // Upper and work must share a mount for the kernel: alias the whole scratch dir.
    let view = t.path().join("view");
    let _alias = BindMount::new(t.path(), &view);
    t.subdir("work");
    let (upper, work) = (view.join(good.file_name().unwrap()), view.join("work"));
    assert!(
        kernel_accepts(&good, &upper, &work, &mnt).is_err(),
        "kernel overlayfs accepts an upper dir that is its lower dir"
    );
    expect_refusal(
        &writable_args(&[&good], &upper, &work),
        &mnt,
        Some(&upper),
        "outside every image layer",
    );
    // The -o form container engines use goes through the same check.
    let opts = writable_options(&good, &upper, &work);
    let err_file = stderr_path(&mnt);
    let status = run_bounded(
        Command::new(STRATAFS).arg("-o").arg(&opts).arg(&mnt),
        &err_file,
        TIMEOUT,
    );
    let stderr = std::fs::read_to_string(&err_file).unwrap_or_default();
    if types_at(&mnt).iter().any(|t| t.starts_with("fuse")) {
        drop(StrataMount::adopt(&mnt));
        panic!("-o {opts}: mounted");
    }
    assert!(status.is_some_and(|s| !s.success()), "-o {opts}: {stderr}");
    assert!(stderr.contains("outside every image layer"), "{stderr}");
    assert!(
        wait_until(Duration::from_secs(5), || daemons_serving(&mnt).is_empty()),
        "a daemon is left running"
    );
}

#[test]
fn upper_inside_a_bind_alias_of_a_layer_subdir() {
    let (t, good, mnt) = one_layer_scratch("bad-upper-sub-alias");
    std::fs::create_dir_all(good.join("sub/u")).unwrap();
    let (alias, _b) = BindMount::alias_in(&t, &good.join("sub"));
    let work = t.subdir("work");
    let upper = alias.join("u");
    expect_refusal(
        &writable_args(&[&good], &upper, &work),
        &mnt,
        Some(&upper),
        "outside every image layer",
    );
}

#[test]
fn work_dir_is_a_bind_alias_inside_a_layer() {
    let (t, good, mnt) = one_layer_scratch("bad-work-alias");
    std::fs::create_dir_all(good.join("sub/w")).unwrap();
    let (alias, _b) = BindMount::alias_in(&t, &good.join("sub"));
    let upper = t.subdir("upper");
    let work = alias.join("w");
    expect_refusal(
        &writable_args(&[&good], &upper, &work),
        &mnt,
        Some(&work),
        "outside every image layer",
    );
}

#[test]
fn layer_inside_the_upper_through_an_alias() {
    let (t, good, mnt) = one_layer_scratch("bad-layer-in-upper");
    let upper = t.subdir("upper");
    std::fs::create_dir_all(upper.join("l")).unwrap();
    let (alias, _b) = BindMount::alias_in(&t, &upper);
    let work = t.subdir("work");
    let layer = alias.join("l");
    expect_refusal(
        &writable_args(&[&good, &layer], &upper, &work),
        &mnt,
        Some(&upper),
        "outside every image layer",
    );
}

#[test]
fn upper_and_work_are_one_dir_through_an_alias() {
    let (t, good, mnt) = one_layer_scratch("bad-upper-is-work");
    let upper = t.subdir("upper");
    let (alias, _b) = BindMount::alias_in(&t, &upper);
    expect_refusal(
        &writable_args(&[&good], &upper, &alias),
        &mnt,
        Some(&alias),
        "separate directories",
    );
}

#[test]
fn mountpoint_inside_a_layer_through_an_alias() {
    let (t, good, _) = one_layer_scratch("bad-mnt-layer-alias");
    std::fs::create_dir_all(good.join("m")).unwrap();
    let (alias, _b) = BindMount::alias_in(&t, &good);
    let mnt = alias.join("m");
    expect_refusal(
        &layer_args(&[&good]),
        &mnt,
        Some(&mnt),
        "outside every layer",
    );
}

/// The daemon would walk into its own mount when it looks up that directory in the upper.
#[test]
fn mountpoint_inside_the_upper() {
    let (t, good, _) = one_layer_scratch("bad-mnt-in-upper");
    let upper = t.subdir("upper");
    let work = t.subdir("work");
    let mnt = t.subdir("upper/mnt");
    expect_refusal(
        &writable_args(&[&good], &upper, &work),
        &mnt,
        Some(&mnt),
        "apart",
    );
}

#[test]
fn writable_bind_of_a_layer_is_refused_read_only_accepted() {
    let (t, good, mnt) = one_layer_scratch("bad-bind-layer");
    std::fs::create_dir_all(good.join("sub")).unwrap();
    let (alias, _b) = BindMount::alias_in(&t, &good);
    for source in [good.join("sub"), alias.join("sub"), alias.join("file")] {
        let mut args = layer_args(&[&good]);
        args.extend(["--bind".into(), format!("{}:/sub", source.display()).into()]);
        if source.ends_with("file") {
            args.pop();
            args.push(format!("{}:/sub/file", source.display()).into());
        }
        expect_refusal(&args, &mnt, Some(&source), ":ro");
    }
    // Read-only, the same bind is fine: nothing can be written through it.
    let mut args = layer_args(&[&good]);
    args.extend([
        "--bind".into(),
        format!("{}:/sub:ro", alias.join("sub").display()).into(),
    ]);
    let m = StrataMount::foreground_args(args, &mnt);
    assert!(mnt.join("sub").is_dir());
    drop(m);
}

#[test]
fn volume_store_inside_the_upper_is_refused() {
    let (t, good, mnt) = one_layer_scratch("bad-volume-in-upper");
    let upper = t.subdir("upper");
    let work = t.subdir("work");
    let mut args = writable_args(&[&good], &upper, &work);
    args.extend([
        "--state-dir".into(),
        upper.join("state").into(),
        "--volume".into(),
        "v:/data".into(),
    ]);
    expect_refusal(&args, &mnt, Some(&upper), "--state-dir");
}
