//! The command line as a user and an operator meet it: remounting at the same path, what
//! the mount table shows, clean exits, stale mounts, usage errors, debug and log output,
//! and the demo. Every case runs the real binary.

mod common;

use std::ffi::OsString;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::mount::{daemons_serving, layer_args, wait_until, StrataMount, STRATAFS};
use common::mount::{one_layer_scratch, writable_options};
use common::mountinfo::types_at;
use common::tmp::TempDir;

const WAIT: Duration = Duration::from_secs(20);

/// A scratch dir with one layer holding `file` and an empty mountpoint.
fn setup(label: &str) -> (TempDir, PathBuf, PathBuf) {
    common::require_root();
    one_layer_scratch(label)
}

/// Mounts with the fuse-overlayfs form `-o OPTS MNT` (detached) and expects success.
fn mount_compat(opts: &str, mnt: &Path) -> StrataMount {
    let out = stratafs(&["-o".as_ref(), opts.as_ref(), mnt.as_os_str()]);
    let m = StrataMount::adopt(mnt);
    assert!(out.status.success(), "-o {opts}: {}", text(&out.stderr));
    m
}

fn stratafs(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(STRATAFS)
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("run stratafs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn is_stratafs_mount(mnt: &Path) -> bool {
    types_at(mnt).last().is_some_and(|t| t == "fuse.stratafs")
}

/// The per-mount options (`rw`/`ro`, ...) of the topmost mount at `path`.
fn mount_options(path: &Path) -> Vec<String> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    table
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (Path::new(f[4]) == path).then(|| f[5].split(',').map(str::to_string).collect())
        })
        .next_back()
        .unwrap_or_default()
}

fn signal(pid: u32, sig: &str) {
    let st = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(st.success(), "kill -{sig} {pid}");
}

/// A foreground `stratafs mount ARGS MNT` with stderr in a file; waits until it is mounted.
struct Foreground {
    child: Child,
    stderr: PathBuf,
    mnt: PathBuf,
}

impl Foreground {
    fn start(args: Vec<OsString>, mnt: &Path, envs: &[(&str, &str)]) -> Foreground {
        let stderr = common::mount::stderr_path(mnt);
        let child = Command::new(STRATAFS)
            .args(&args)
            .env_remove("RUST_LOG")
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let mut f = Foreground {
            child,
            stderr,
            mnt: mnt.to_path_buf(),
        };
        let live = wait_until(WAIT, || {
            is_stratafs_mount(mnt) || f.child.try_wait().unwrap().is_some()
        });
        assert!(
            live && is_stratafs_mount(mnt),
            "{args:?} did not mount: {}",
            f.stderr()
        );
        f
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits for the process to exit by itself; its exit status.
    fn wait(&mut self) -> std::process::ExitStatus {
        let mut status = None;
        wait_until(WAIT, || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        status.unwrap_or_else(|| panic!("still running after {WAIT:?}: {}", self.stderr()))
    }
}

impl Drop for Foreground {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            drop(StrataMount::adopt(&self.mnt));
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// After `umount MNT; stratafs mount ... MNT`, the old daemon exits without touching the new
/// mount (it used to unmount whatever was at its path on the way out).
#[test]
fn quick_remount_at_the_same_path_keeps_the_new_mount() {
    let (_t, layer, mnt) = setup("remount");
    let layers = vec![layer];
    let mut current = StrataMount::daemon(&layers, &mnt);
    for round in 0..20 {
        let old = daemons_serving(&mnt);
        let st = Command::new("umount").arg(&mnt).status().unwrap();
        assert!(st.success(), "round {round}: umount failed");
        let next = stratafs(&[
            "mount".as_ref(),
            "--daemon".as_ref(),
            "--layer".as_ref(),
            layers[0].as_os_str(),
            mnt.as_os_str(),
        ]);
        assert!(
            next.status.success(),
            "round {round}: {}",
            text(&next.stderr)
        );
        // The old daemon is gone; the new mount must still be there and serve.
        assert!(
            wait_until(WAIT, || daemons_serving(&mnt)
                .iter()
                .all(|p| !old.contains(p))),
            "round {round}: the old daemon did not exit"
        );
        std::thread::sleep(Duration::from_millis(20));
        assert!(
            is_stratafs_mount(&mnt),
            "round {round}: the old daemon took the new mount down: {:?}",
            types_at(&mnt)
        );
        assert_eq!(std::fs::read(mnt.join("file")).unwrap(), b"x\n");
        // The previous guard's mount is gone: let the new one take over the cleanup.
        std::mem::forget(current);
        current = StrataMount::adopt(&mnt);
    }
    current.unmount().expect("final unmount");
}

#[test]
fn the_mount_shows_type_fuse_stratafs() {
    let (_t, layer, mnt) = setup("fstype");
    let m = StrataMount::daemon(&[layer], &mnt);
    assert_eq!(types_at(&mnt), ["fuse.stratafs"]);
    let found = Command::new("findmnt")
        .args(["-n", "-o", "SOURCE", "-t", "fuse.stratafs"])
        .arg(&mnt)
        .output()
        .unwrap();
    assert!(
        found.status.success(),
        "findmnt -t fuse.stratafs finds nothing"
    );
    assert_eq!(text(&found.stdout).trim(), "stratafs");
    m.unmount().unwrap();
}

/// SIGTERM, SIGINT, umount and fusermount3 -u: the daemon exits 0 and prints nothing.
#[test]
fn clean_exits_print_nothing() {
    let (_t, layer, mnt) = setup("quiet");
    for how in ["TERM", "INT", "umount", "fusermount3"] {
        let mut args: Vec<OsString> = vec!["mount".into()];
        args.extend(layer_args(std::slice::from_ref(&layer)));
        args.push(mnt.clone().into());
        let mut f = Foreground::start(args, &mnt, &[]);
        match how {
            "umount" => assert!(Command::new("umount").arg(&mnt).status().unwrap().success()),
            "fusermount3" => assert!(Command::new("fusermount3")
                .arg("-u")
                .arg(&mnt)
                .status()
                .unwrap()
                .success()),
            sig => signal(f.child.id(), sig),
        }
        let status = f.wait();
        assert!(status.success(), "{how}: exit {status}: {}", f.stderr());
        assert_eq!(f.stderr(), "", "{how}: a clean exit printed something");
        assert!(types_at(&mnt).is_empty(), "{how}: still mounted");
    }
}

#[test]
fn read_only_unions_are_marked_ro() {
    let (t, layer, mnt) = setup("ro");
    // --read-only with a sub-mount: the union is ro, the tmpfs stays rw.
    std::fs::create_dir(layer.join("run")).unwrap();
    let mut args = vec!["--read-only".into(), "--tmpfs".into(), "/run".into()];
    args.extend(layer_args(std::slice::from_ref(&layer)));
    args.insert(0, "--daemon".into());
    let out = Command::new(STRATAFS)
        .arg("mount")
        .args(&args)
        .arg(&mnt)
        .output()
        .unwrap();
    let m = StrataMount::adopt(&mnt);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        mount_options(&mnt).contains(&"ro".to_string()),
        "{:?}",
        mount_options(&mnt)
    );
    assert!(mount_options(&mnt.join("run")).contains(&"rw".to_string()));
    std::fs::write(mnt.join("run/ok"), b"x").unwrap();
    let e = std::fs::write(mnt.join("new"), b"x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS));
    drop(m);
    assert!(wait_until(WAIT, || types_at(&mnt).is_empty()));

    // The fuse-overlayfs form with an upper dir and `ro`.
    let (upper, work) = (t.subdir("upper"), t.subdir("work"));
    let opts = format!("{},ro", writable_options(&layer, &upper, &work));
    let m = mount_compat(&opts, &mnt);
    assert!(
        mount_options(&mnt).contains(&"ro".to_string()),
        "{:?}",
        mount_options(&mnt)
    );
    m.unmount().unwrap();
}

#[test]
fn umount_refuses_other_filesystems_unless_forced() {
    let (t, _layer, _mnt) = setup("foreign");
    let other = t.subdir("tmpfs");
    common::rw::mount_fs("tmpfs", &other, "size=1m").unwrap();
    let out = stratafs(&["umount".as_ref(), other.as_os_str()]);
    let err = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("not a stratafs mount (type tmpfs") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(types_at(&other), ["tmpfs"], "refused, yet unmounted");
    let out = stratafs(&["umount".as_ref(), "--force".as_ref(), other.as_os_str()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(types_at(&other).is_empty());
}

#[test]
fn a_stale_mount_is_named_with_its_fix() {
    let (_t, layer, mnt) = setup("stale");
    let mut args: Vec<OsString> = vec!["mount".into()];
    args.extend(layer_args(std::slice::from_ref(&layer)));
    args.push(mnt.clone().into());
    let mut f = Foreground::start(args.clone(), &mnt, &[]);
    f.child.kill().unwrap();
    f.child.wait().unwrap();
    let out = Command::new(STRATAFS).args(&args).output().unwrap();
    let err = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!("the mount at {} is stale", mnt.display()))
            && err.contains(&format!("stratafs umount {}", mnt.display())),
        "{err}"
    );
    // The advice works.
    let out = stratafs(&["umount".as_ref(), mnt.as_os_str()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(types_at(&mnt).is_empty());
}

#[test]
fn zero_threads_are_refused() {
    let (_t, layer, mnt) = setup("threads");
    for daemon in [false, true] {
        let mut cmd = Command::new(STRATAFS);
        cmd.arg("mount");
        if daemon {
            cmd.arg("--daemon");
        }
        let out = cmd
            .args(["--threads", "0", "--layer"])
            .arg(&layer)
            .arg(&mnt)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "daemon={daemon}");
        assert!(
            text(&out.stderr).contains("'--threads <N>'"),
            "{}",
            text(&out.stderr)
        );
        assert!(types_at(&mnt).is_empty(), "daemon={daemon}: mounted");
    }
}

/// clap's own layout: one item per line, a Usage line, exit status 2.
#[test]
fn usage_errors_keep_their_layout() {
    let out = stratafs(&["mount".as_ref()]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines[0],
        "error: the following required arguments were not provided:"
    );
    assert!(lines.contains(&"  <MOUNTPOINT>"), "{err}");
    assert!(
        lines.iter().any(|l| l.starts_with("Usage: stratafs mount")),
        "{err}"
    );

    let out = stratafs(&[]);
    let help = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(help.lines().any(|l| l == "Commands:"), "{help}");
    assert!(
        help.lines().any(|l| l.trim_start().starts_with("mount ")),
        "{help}"
    );
}

/// `-d`: debug output, in the foreground (as fuse-overlayfs users expect).
#[test]
fn dash_d_is_debug_in_the_foreground() {
    let (t, layer, mnt) = setup("debug");
    let mut args: Vec<OsString> = vec!["mount".into(), "-d".into()];
    args.extend(layer_args(std::slice::from_ref(&layer)));
    args.extend(["--upper".into(), t.subdir("upper").into()]);
    args.extend(["--work".into(), t.subdir("work").into()]);
    args.push(mnt.clone().into());
    let mut f = Foreground::start(args, &mnt, &[]);
    assert!(
        f.child.try_wait().unwrap().is_none(),
        "-d did not stay in the foreground"
    );
    std::fs::read(mnt.join("file")).unwrap();
    // A failed operation is logged with its errno.
    std::fs::create_dir_all(mnt.join("full/sub")).unwrap();
    let e = std::fs::remove_dir(mnt.join("full")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOTEMPTY));
    assert!(Command::new("umount").arg(&mnt).status().unwrap().success());
    assert!(f.wait().success());
    let err = f.stderr();
    assert!(err.contains(" DEBUG "), "no debug lines: {err}");
    let failure = format!("rmdir failed: errno {}", libc::ENOTEMPTY);
    assert!(err.contains(&failure), "no {failure:?} line: {err}");
    let out = Command::new(STRATAFS)
        .args(["mount", "-d", "--daemon", "--layer"])
        .arg(&layer)
        .arg(&mnt)
        .output()
        .unwrap();
    assert!(!out.status.success(), "-d with --daemon was accepted");
    assert!(types_at(&mnt).is_empty());
    // The fuse-overlayfs form: -d is debug output in the foreground too.
    let opts = format!("lowerdir={}", layer.display());
    let args: Vec<OsString> = vec!["-d".into(), "-o".into(), opts.into(), mnt.clone().into()];
    let mut f = Foreground::start(args, &mnt, &[]);
    assert!(
        f.child.try_wait().unwrap().is_none(),
        "-d did not stay in the foreground"
    );
    assert!(Command::new("umount").arg(&mnt).status().unwrap().success());
    assert!(f.wait().success());
    assert!(
        f.stderr().contains(" DEBUG "),
        "no debug lines: {}",
        f.stderr()
    );
}

/// Lines go to --log-file (and `-o log_file=`), or to the system log when detached, each
/// naming the mountpoint; RUST_LOG sets the level.
#[test]
fn log_lines_reach_the_log_file_or_syslog_and_name_the_mountpoint() {
    let (t, layer, mnt) = setup("logs");
    let log = t.path().join("stratafs.log");
    let expect_in = |what: &str, body: &str| {
        assert!(
            body.contains(&format!("{}: signal 15: unmounting", mnt.display())),
            "{what}: {body:?}"
        );
    };
    let stop = |mnt: &Path| {
        let pids = daemons_serving(mnt);
        assert_eq!(pids.len(), 1, "{pids:?}");
        signal(pids[0] as u32, "TERM");
        assert!(wait_until(WAIT, || daemons_serving(mnt).is_empty()));
        assert!(types_at(mnt).is_empty());
    };
    let syslog = t.path().join("syslog.sock");
    let receiver = UnixDatagram::bind(&syslog).unwrap();
    receiver.set_read_timeout(Some(WAIT)).unwrap();
    let lower = format!("lowerdir={}", layer.display());
    let with_log = format!("{lower},log_file={}", log.display());
    let forms: [Vec<&std::ffi::OsStr>; 3] = [
        vec![
            "mount".as_ref(),
            "--daemon".as_ref(),
            "--log-file".as_ref(),
            log.as_os_str(),
            "--layer".as_ref(),
            layer.as_os_str(),
            mnt.as_os_str(),
        ],
        vec!["-o".as_ref(), with_log.as_ref(), mnt.as_os_str()],
        vec![
            "mount".as_ref(),
            "--daemon".as_ref(),
            "--layer".as_ref(),
            layer.as_os_str(),
            mnt.as_os_str(),
        ],
    ];
    for (i, args) in forms.iter().enumerate() {
        let _ = std::fs::remove_file(&log);
        let out = Command::new(STRATAFS)
            .args(args)
            .env("RUST_LOG", "info")
            .env("STRATAFS_SYSLOG_SOCKET", &syslog)
            .output()
            .unwrap();
        let guard = StrataMount::adopt(&mnt);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        stop(&mnt);
        drop(guard);
        if i < 2 {
            expect_in(
                "log file",
                &std::fs::read_to_string(&log).unwrap_or_default(),
            );
        } else {
            // No log file: the detached daemon writes to the system log.
            let mut got = String::new();
            let mut buf = [0u8; 4096];
            while !got.contains("signal 15") {
                let n = receiver.recv(&mut buf).expect("no syslog datagram");
                got.push_str(&String::from_utf8_lossy(&buf[..n]));
                got.push('\n');
            }
            assert!(got.contains("stratafs["), "not a syslog line: {got:?}");
            expect_in("syslog", &got);
        }
    }
}

/// The demo's unpacked image lives as long as its daemon, also when the mount fails.
#[test]
fn the_demo_removes_its_image_when_the_daemon_exits() {
    let (t, _layer, mnt) = setup("demo");
    let tmp = t.subdir("tmpdir");
    let images = || {
        std::fs::read_dir(&tmp)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
    };
    let out = Command::new(STRATAFS)
        .arg("demo")
        .arg(&mnt)
        .env("TMPDIR", &tmp)
        .output()
        .unwrap();
    let m = StrataMount::adopt(&mnt);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(
        shown.contains(&format!("when done: {STRATAFS} umount")),
        "{shown}"
    );
    assert_eq!(images().len(), 1, "the image is not under TMPDIR");
    m.unmount().unwrap();
    assert!(
        wait_until(WAIT, || images().is_empty()),
        "left: {:?}",
        images()
    );
    // A demo that cannot mount (the mountpoint is a file) leaves nothing either.
    let file = t.path().join("file");
    std::fs::write(&file, b"").unwrap();
    let out = Command::new(STRATAFS)
        .arg("demo")
        .arg(&file)
        .env("TMPDIR", &tmp)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        images().is_empty(),
        "left after a failed demo: {:?}",
        images()
    );
}

/// The fuse-overlayfs form mounts nodev (its default, and podman's), setuid stays allowed;
/// `dev` turns device nodes back on. `stratafs mount` keeps dev and suid.
#[test]
fn device_and_setuid_defaults() {
    let (_t, layer, mnt) = setup("nodev");
    for (extra, nodev) in [("", true), (",dev", false)] {
        let opts = format!("lowerdir={}{extra}", layer.display());
        let m = mount_compat(&opts, &mnt);
        let o = mount_options(&mnt);
        assert_eq!(o.contains(&"nodev".to_string()), nodev, "-o {opts}: {o:?}");
        assert!(!o.contains(&"nosuid".to_string()), "-o {opts}: {o:?}");
        m.unmount().unwrap();
    }
    let m = StrataMount::daemon(&[layer], &mnt);
    let o = mount_options(&mnt);
    assert!(
        !o.contains(&"nodev".to_string()) && !o.contains(&"nosuid".to_string()),
        "{o:?}"
    );
    m.unmount().unwrap();
}

/// uidmapping=/gidmapping= and squash_to_uid= of the fuse-overlayfs form reach the union:
/// owners are shown mapped (or squashed), and a chown through the mount stores the ids the
/// layers use.
#[test]
fn ownership_options_map_and_squash_owners() {
    use std::os::unix::fs::MetadataExt;
    let (t, layer, mnt) = setup("owners");
    std::os::unix::fs::chown(layer.join("file"), Some(7), Some(8)).unwrap();
    let (upper, work) = (t.subdir("upper"), t.subdir("work"));
    let owner = |p: &Path| {
        let m = std::fs::metadata(p).unwrap();
        (m.uid(), m.gid())
    };

    let opts = format!(
        "{},uidmapping=0:100000:65536,gidmapping=0:200000:65536",
        writable_options(&layer, &upper, &work)
    );
    let m = mount_compat(&opts, &mnt);
    assert_eq!(owner(&mnt.join("file")), (100007, 200008));
    std::os::unix::fs::chown(mnt.join("file"), Some(100005), Some(200006)).unwrap();
    assert_eq!(owner(&mnt.join("file")), (100005, 200006));
    m.unmount().unwrap();
    assert_eq!(
        owner(&upper.join("file")),
        (5, 6),
        "stored in the layer's ids"
    );

    let m = mount_compat(
        &format!("lowerdir={},squash_to_uid=4242", layer.display()),
        &mnt,
    );
    assert_eq!(owner(&mnt.join("file")), (4242, 8));
    m.unmount().unwrap();
}

/// A termination signal that arrives the moment the mount appears (the window between the
/// mount and the daemon's signal handling) still ends the daemon cleanly: exit 0, nothing
/// printed, nothing left mounted.
#[test]
fn signals_right_after_the_mount_appears_exit_cleanly() {
    let (_t, layer, mnt) = setup("early-signal");
    for round in 0..20 {
        let sig = if round % 2 == 0 {
            libc::SIGTERM
        } else {
            libc::SIGINT
        };
        let mut args: Vec<OsString> = vec!["mount".into()];
        args.extend(layer_args(std::slice::from_ref(&layer)));
        args.push(mnt.clone().into());
        let err_file = common::mount::stderr_path(&mnt);
        let mut child = Command::new(STRATAFS)
            .args(&args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&err_file).unwrap())
            .spawn()
            .unwrap();
        // Poll without sleeping, so the signal follows the mount as closely as possible.
        let deadline = std::time::Instant::now() + WAIT;
        while !is_stratafs_mount(&mnt) && std::time::Instant::now() < deadline {
            if child.try_wait().unwrap().is_some() {
                break;
            }
        }
        common::sys::send_signal(child.id(), sig).unwrap();
        let mut status = None;
        wait_until(WAIT, || {
            status = child.try_wait().unwrap();
            status.is_some()
        });
        let stderr = std::fs::read_to_string(&err_file).unwrap_or_default();
        if !types_at(&mnt).is_empty() {
            drop(StrataMount::adopt(&mnt));
        }
        let Some(status) = status else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("round {round}: still running after the signal: {stderr}");
        };
        assert!(status.success(), "round {round}: exit {status}: {stderr}");
        assert_eq!(stderr, "", "round {round}: a clean exit printed something");
        assert!(types_at(&mnt).is_empty(), "round {round}: left mounted");
    }
}
