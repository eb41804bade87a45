//! Mount guards: a stratafs daemon and a kernel overlayfs mount, both unmounted on drop
//! (also when the test panics), leaving no daemon behind.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::mountinfo;
use super::tmp::TempDir;

pub const STRATAFS: &str = env!("CARGO_BIN_EXE_stratafs");
const MOUNT_TIMEOUT: Duration = Duration::from_secs(30);
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

/// `--layer L` for each layer, bottom first.
pub fn layer_args<P: AsRef<Path>>(layers: &[P]) -> Vec<OsString> {
    let mut args = Vec::new();
    for l in layers {
        args.push("--layer".into());
        args.push(l.as_ref().as_os_str().to_owned());
    }
    args
}

/// The `-o` string of a writable mount in the fuse-overlayfs (and kernel overlayfs) form.
pub fn writable_options(lower: &Path, upper: &Path, work: &Path) -> String {
    format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    )
}

/// A scratch dir with one layer (`layer`, holding `file`) and an empty mountpoint (`mnt`).
pub fn one_layer_scratch(label: &str) -> (TempDir, PathBuf, PathBuf) {
    let t = TempDir::new(label);
    let layer = t.subdir("layer");
    std::fs::write(layer.join("file"), b"x\n").unwrap();
    let mnt = t.subdir("mnt");
    (t, layer, mnt)
}

/// Polls `cond` every 5 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn is_fuse_mount(mnt: &Path) -> bool {
    mountinfo::types_at(mnt)
        .iter()
        .any(|t| t == "fuse" || t.starts_with("fuse."))
}

/// Runs a command to completion, its stderr going to `stderr_file`; kills it after
/// `timeout` (returning None).
pub fn run_bounded(cmd: &mut Command, stderr_file: &Path, timeout: Duration) -> Option<ExitStatus> {
    let err = File::create(stderr_file).expect("create stderr file");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err)
        .spawn()
        .expect("spawn");
    let mut status = None;
    wait_until(timeout, || {
        status = child.try_wait().expect("try_wait");
        status.is_some()
    });
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    status
}

/// Processes (other than this one) running the stratafs binary with `mnt` as an argument.
pub fn daemons_serving(mnt: &Path) -> Vec<i32> {
    let me = std::process::id() as i32;
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let is_ours = args.first().is_some_and(|a0| a0.ends_with(b"stratafs"));
        if is_ours && args.contains(&mnt.as_os_str().as_bytes()) {
            out.push(pid);
        }
    }
    out
}

fn pid_alive(pid: i32) -> bool {
    // A zombie has no cmdline left: count it as gone.
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| !c.is_empty())
}

/// Runs a helper command (umount, mount...) and says whether it succeeded in time. One stuck
/// on a hung FUSE mount is left to finish once the connection is aborted.
fn run_ok(args: &[&OsStr]) -> bool {
    let Ok(mut child) = Command::new(args[0])
        .args(&args[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    else {
        return false;
    };
    let mut status = None;
    wait_until(EXIT_TIMEOUT, || {
        status = child.try_wait().ok().flatten();
        status.is_some()
    });
    status.is_some_and(|s| s.success())
}

/// Last resort for a daemon stuck on requests to its own mount: aborts FUSE connection
/// `conn` through fusectl (mounting fusectl for the moment if it is not mounted).
pub fn abort_fuse_connection(conn: u32) {
    let dir = Path::new("/sys/fs/fuse/connections");
    let mounted_here = !dir.join(conn.to_string()).exists()
        && run_ok(&[
            OsStr::new("mount"),
            OsStr::new("-t"),
            OsStr::new("fusectl"),
            OsStr::new("none"),
            dir.as_os_str(),
        ]);
    let _ = std::fs::write(dir.join(conn.to_string()).join("abort"), b"1");
    if mounted_here {
        let _ = run_ok(&[OsStr::new("umount"), dir.as_os_str()]);
    }
}

/// A running stratafs mount.
pub struct StrataMount {
    mnt: PathBuf,
    /// FUSE connection number, to abort a stuck daemon.
    conn: Option<u32>,
    stderr_file: PathBuf,
    /// The foreground process, if mounted that way.
    child: Option<Child>,
    /// The background daemon, if mounted with --daemon.
    daemon_pid: Option<i32>,
}

impl StrataMount {
    /// `stratafs mount --layer ... MNT` in the foreground; returns once the mount is live.
    pub fn foreground(layers: &[PathBuf], mnt: &Path) -> StrataMount {
        Self::foreground_args(layer_args(layers), mnt)
    }

    /// `stratafs mount ARGS MNT` in the foreground; returns once the mount is live.
    pub fn foreground_args(args: Vec<OsString>, mnt: &Path) -> StrataMount {
        let stderr_file = stderr_path(mnt);
        let err = File::create(&stderr_file).expect("create stderr file");
        let child = Command::new(STRATAFS)
            .arg("mount")
            .args(&args)
            .arg(mnt)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("spawn stratafs");
        let mut m = StrataMount {
            mnt: mnt.to_path_buf(),
            conn: None,
            stderr_file,
            child: Some(child),
            daemon_pid: None,
        };
        let mut exited = None;
        let live = wait_until(MOUNT_TIMEOUT, || {
            if is_fuse_mount(mnt) {
                return true;
            }
            exited = m.child.as_mut().unwrap().try_wait().expect("try_wait");
            exited.is_some()
        });
        if !live || exited.is_some() {
            let why = match exited {
                Some(st) => format!("stratafs exited ({st})"),
                None => format!("not mounted after {MOUNT_TIMEOUT:?}"),
            };
            panic!(
                "mounting {} failed: {why}; stderr:\n{}",
                mnt.display(),
                m.stderr()
            );
        }
        m.conn = mountinfo::fuse_connection(mnt);
        m
    }

    /// `stratafs mount --daemon --layer ... MNT`: the command must return 0 with the mount
    /// already live.
    pub fn daemon(layers: &[PathBuf], mnt: &Path) -> StrataMount {
        let stderr_file = stderr_path(mnt);
        let status = run_bounded(
            Command::new(STRATAFS)
                .arg("mount")
                .arg("--daemon")
                .args(layer_args(layers))
                .arg(mnt),
            &stderr_file,
            MOUNT_TIMEOUT,
        );
        let m = StrataMount::adopt(mnt);
        match status {
            Some(s) if s.success() => {}
            other => panic!(
                "stratafs mount --daemon {}: {other:?}; stderr:\n{}",
                mnt.display(),
                m.stderr()
            ),
        }
        assert!(
            is_fuse_mount(mnt),
            "stratafs mount --daemon returned 0 but {} is not mounted yet",
            mnt.display()
        );
        assert!(
            m.daemon_pid.is_some(),
            "no stratafs daemon process found for {}",
            mnt.display()
        );
        m
    }

    /// Takes charge of whatever stratafs daemon serves `mnt` (started some other way), so
    /// that it gets unmounted and stopped on drop.
    pub fn adopt(mnt: &Path) -> StrataMount {
        StrataMount {
            mnt: mnt.to_path_buf(),
            conn: mountinfo::fuse_connection(mnt),
            stderr_file: stderr_path(mnt),
            child: None,
            daemon_pid: daemons_serving(mnt).first().copied(),
        }
    }

    /// The FUSE connection number of this mount.
    pub fn connection(&self) -> Option<u32> {
        self.conn
    }

    pub fn path(&self) -> &Path {
        &self.mnt
    }

    /// What the daemon wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_file).unwrap_or_default()
    }

    /// Unmounts with `umount` and checks the daemon then exits by itself, with status 0.
    pub fn unmount(mut self) -> Result<(), String> {
        // Another process on the machine (one walking /tmp, say) can hold the mount for a
        // moment: a failed unmount is tried again for a while before it counts.
        let mut tries = 0;
        while !run_ok(&[OsStr::new("umount"), self.mnt.as_os_str()]) {
            tries += 1;
            if tries == 10 {
                return Err(format!(
                    "umount {} failed {tries} times",
                    self.mnt.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let result = self.wait_exit();
        self.cleanup();
        result
    }

    /// Waits for the serving process to exit on its own.
    fn wait_exit(&mut self) -> Result<(), String> {
        if let Some(child) = self.child.as_mut() {
            let mut status = None;
            wait_until(EXIT_TIMEOUT, || {
                status = child.try_wait().expect("try_wait");
                status.is_some()
            });
            return match status {
                Some(s) if s.success() => Ok(()),
                Some(s) => Err(format!(
                    "stratafs exited with {s}; stderr:\n{}",
                    self.stderr()
                )),
                None => Err(format!(
                    "stratafs still running {EXIT_TIMEOUT:?} after its mount went away"
                )),
            };
        }
        if let Some(pid) = self.daemon_pid {
            if !wait_until(EXIT_TIMEOUT, || !pid_alive(pid)) {
                return Err(format!(
                    "stratafs daemon {pid} still running {EXIT_TIMEOUT:?} after its mount went away"
                ));
            }
        }
        Ok(())
    }

    /// Unmounts by any means and makes sure no process is left.
    fn cleanup(&mut self) {
        if is_fuse_mount(&self.mnt) {
            let m = self.mnt.as_os_str();
            let done = run_ok(&[OsStr::new("umount"), m])
                || run_ok(&[OsStr::new("fusermount3"), OsStr::new("-u"), m]);
            if !done {
                // A daemon that cannot answer keeps even the unmount waiting.
                if let Some(conn) = self.conn {
                    abort_fuse_connection(conn);
                }
                let _ = run_ok(&[OsStr::new("umount"), OsStr::new("-l"), m]);
            }
        }
        if let Some(mut child) = self.child.take() {
            let exited = wait_until(EXIT_TIMEOUT, || child.try_wait().ok().flatten().is_some());
            if !exited {
                if let Some(conn) = self.conn {
                    abort_fuse_connection(conn);
                }
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if let Some(pid) = self.daemon_pid.take() {
            if !wait_until(EXIT_TIMEOUT, || !pid_alive(pid)) {
                if let Some(conn) = self.conn {
                    abort_fuse_connection(conn);
                }
                // Only the daemon found serving this mountpoint.
                let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            }
        }
    }
}

impl Drop for StrataMount {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// Where the harness sends the stderr of the stratafs process mounting `mnt`.
pub fn stderr_path(mnt: &Path) -> PathBuf {
    let mut s = mnt.as_os_str().to_owned();
    s.push(".stderr");
    PathBuf::from(s)
}

/// A read-only kernel overlayfs mount of `layers` (bottom first).
pub struct KernelOverlay {
    mnt: PathBuf,
}

impl KernelOverlay {
    pub fn mount(layers: &[PathBuf], mnt: &Path) -> KernelOverlay {
        let mut lower: Vec<PathBuf> = layers.iter().rev().cloned().collect();
        // Without an upper dir the kernel wants at least two lower dirs.
        if lower.len() == 1 {
            let mut empty = mnt.as_os_str().to_owned();
            empty.push(".empty-lower");
            let empty = PathBuf::from(empty);
            std::fs::create_dir_all(&empty).expect("mkdir empty lower");
            lower.push(empty);
        }
        // The mount options must fit in one page: with many layers in one directory, name
        // them relative to it (the kernel resolves lowerdir against the caller's cwd).
        let parent = lower[0].parent().map(Path::to_path_buf);
        let cwd = parent
            .filter(|p| lower.iter().all(|l| l.parent() == Some(p.as_path())))
            .unwrap_or_else(|| PathBuf::from("/"));
        let joined: Vec<&str> = lower
            .iter()
            .map(|p| {
                let rel = p.strip_prefix(&cwd).expect("layer under cwd");
                rel.to_str().expect("layer path is UTF-8")
            })
            .collect();
        for p in &joined {
            assert!(!p.contains([':', ',']), "layer path {p} has a ':' or ','");
        }
        let out = Command::new("mount")
            .current_dir(&cwd)
            .args(["-t", "overlay", "overlay", "-o"])
            .arg(format!("lowerdir={}", joined.join(":")))
            .arg(mnt)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mount -t overlay at {} failed: {}",
            mnt.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        KernelOverlay {
            mnt: mnt.to_path_buf(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.mnt
    }
}

impl Drop for KernelOverlay {
    fn drop(&mut self) {
        let m = self.mnt.as_os_str();
        if !run_ok(&[OsStr::new("umount"), m]) {
            let _ = run_ok(&[OsStr::new("umount"), OsStr::new("-l"), m]);
        }
    }
}
