//! Guards for tests of the writable layer: a stratafs daemon with an upper dir that the test
//! can crash (kill -9) and whose mount errors come back as values (so a failing run can be
//! retried while shrinking it), a kernel overlayfs mount with an upper dir, a size-limited
//! tmpfs, and a watchdog that turns a hung daemon into a test failure. All unmount on drop,
//! also when the test panics, and leave no daemon behind.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::mount::{abort_fuse_connection, STRATAFS};
use super::mountinfo;

/// Mount tests need root (mount -t overlay, tmpfs, /dev/fuse with allow_other).
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "this test mounts filesystems and must run as root");
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("no NUL in a test path")
}

/// umount2(2); `lazy` detaches a busy or dead mount (umount -l).
pub fn umount(path: &Path, lazy: bool) -> std::io::Result<()> {
    let p = cpath(path);
    let flags = if lazy { libc::MNT_DETACH } else { 0 };
    // SAFETY: NUL-terminated path.
    if unsafe { libc::umount2(p.as_ptr(), flags) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// A clean unmount that waits out a short EBUSY: a test thread forking a child holds copies
/// of another thread's fds (on this mount too) until the child's exec closes them.
pub fn umount_when_idle(path: &Path) -> std::io::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match umount(path, false) {
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            r => return r,
        }
    }
}

/// mount(2) with a data string, for overlay and tmpfs.
pub fn mount_fs(fstype: &str, target: &Path, data: &str) -> std::io::Result<()> {
    let (src, fs, dat) = (
        CString::new(fstype).expect("no NUL"),
        CString::new(fstype).expect("no NUL"),
        CString::new(data).expect("no NUL"),
    );
    let tgt = cpath(target);
    // SAFETY: NUL-terminated strings; overlay and tmpfs take their data as a string.
    let r = unsafe {
        libc::mount(
            src.as_ptr(),
            tgt.as_ptr(),
            fs.as_ptr(),
            0,
            dat.as_ptr().cast(),
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Unmounts `path` if something is mounted there: normally first, detached if busy.
fn unmount_quietly(path: &Path) {
    if mountinfo::is_mounted(path) && umount(path, false).is_err() {
        let _ = umount(path, true);
    }
}

/// `cp -a SRC DST` (keeps owners, modes, times, xattrs including trusted.*, devices, links).
pub fn copy_tree(src: &Path, dst: &Path) {
    let status = Command::new("cp")
        .arg("-a")
        .arg(src)
        .arg(dst)
        .status()
        .expect("cannot run cp");
    assert!(
        status.success(),
        "cp -a {} {} failed",
        src.display(),
        dst.display()
    );
}

/// Arguments of one stratafs mount.
#[derive(Clone, Debug)]
pub struct StrataSpec {
    /// Bottom layer first.
    pub layers: Vec<PathBuf>,
    /// (upper, work)
    pub upper: Option<(PathBuf, PathBuf)>,
    pub mountpoint: PathBuf,
    /// Where the daemon's stderr goes (appended; shown when mounting fails).
    pub log: PathBuf,
    /// More `stratafs mount` options (e.g. --userxattr).
    pub extra_args: Vec<String>,
}

/// A stratafs daemon run in the foreground as our child, so the test knows its pid and can
/// crash it. Drop unmounts (detaching if busy or dead) and reaps the daemon, killing it (and
/// aborting its FUSE connection) if it lingers.
pub struct StrataChild {
    pub spec: StrataSpec,
    child: Option<Child>,
    connection: Option<u32>,
}

impl StrataChild {
    pub fn start(spec: &StrataSpec) -> Result<StrataChild, String> {
        let mut cmd = Command::new(STRATAFS);
        cmd.arg("mount");
        for l in &spec.layers {
            cmd.arg("--layer").arg(l);
        }
        if let Some((u, w)) = &spec.upper {
            cmd.arg("--upper").arg(u).arg("--work").arg(w);
        }
        cmd.args(&spec.extra_args).arg(&spec.mountpoint);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&spec.log)
            .map_err(|e| format!("cannot open log {}: {e}", spec.log.display()))?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .env("RUST_LOG", "warn");
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {STRATAFS}: {e}"))?;
        let mut m = StrataChild {
            spec: spec.clone(),
            child: Some(child),
            connection: None,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(conn) = mountinfo::fuse_connection(&spec.mountpoint) {
                m.connection = Some(conn);
                return Ok(m);
            }
            if let Some(status) = m.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                m.child = None;
                return Err(format!(
                    "stratafs exited ({status}) before mounting {}: {}",
                    spec.mountpoint.display(),
                    std::fs::read_to_string(&spec.log).unwrap_or_default()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "stratafs did not mount {} within 10 s",
                    spec.mountpoint.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn path(&self) -> &Path {
        &self.spec.mountpoint
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// kill -9 of the daemon (a crash): the mount stays, dead, until detached.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// A clean unmount; fails if the mount stays busy or the daemon does not exit by itself.
    pub fn unmount(mut self) -> Result<(), String> {
        umount_when_idle(&self.spec.mountpoint)
            .map_err(|e| format!("umount {}: {e}", self.spec.mountpoint.display()))?;
        self.reap(Duration::from_secs(10))
    }

    fn reap(&mut self, wait: Duration) -> Result<(), String> {
        let Some(mut c) = self.child.take() else {
            return Ok(());
        };
        let deadline = Instant::now() + wait;
        loop {
            match c.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => {
                    return Err(format!(
                        "stratafs for {} exited with {status} after unmount",
                        self.spec.mountpoint.display()
                    ))
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                _ => {
                    if let Some(conn) = self.connection {
                        abort_fuse_connection(conn);
                    }
                    let _ = c.kill();
                    let _ = c.wait();
                    return Err(format!(
                        "stratafs for {} did not exit after unmount; killed",
                        self.spec.mountpoint.display()
                    ));
                }
            }
        }
    }
}

impl Drop for StrataChild {
    fn drop(&mut self) {
        unmount_quietly(&self.spec.mountpoint);
        let _ = self.reap(Duration::from_secs(5));
    }
}

/// A kernel overlayfs mount with an optional upper dir (the reference implementation),
/// unmounted on drop.
pub struct KernelMount {
    pub mountpoint: PathBuf,
}

impl KernelMount {
    /// `layers` bottom first, like stratafs; `extra` options (e.g. "redirect_dir=on") appended.
    pub fn mount(
        layers: &[PathBuf],
        upper: Option<(&Path, &Path)>,
        mountpoint: &Path,
        extra: &str,
    ) -> Result<KernelMount, String> {
        let lower: Vec<String> = layers
            .iter()
            .rev()
            .map(|p| p.display().to_string())
            .collect();
        let mut data = format!("lowerdir={}", lower.join(":"));
        if let Some((u, w)) = upper {
            data += &format!(",upperdir={},workdir={}", u.display(), w.display());
        }
        if !extra.is_empty() {
            data += ",";
            data += extra;
        }
        mount_fs("overlay", mountpoint, &data)
            .map_err(|e| format!("mount -t overlay -o {data} {}: {e}", mountpoint.display()))?;
        Ok(KernelMount {
            mountpoint: mountpoint.to_path_buf(),
        })
    }

    /// A clean unmount (on failure, drop detaches the mount).
    pub fn unmount(self) -> Result<(), String> {
        umount_when_idle(&self.mountpoint)
            .map_err(|e| format!("umount {}: {e}", self.mountpoint.display()))
    }
}

impl Drop for KernelMount {
    fn drop(&mut self) {
        unmount_quietly(&self.mountpoint);
    }
}

/// A size-limited tmpfs, unmounted on drop.
pub struct Tmpfs {
    pub mountpoint: PathBuf,
}

impl Tmpfs {
    pub fn mount(mountpoint: &Path, size: &str) -> Result<Tmpfs, String> {
        mount_fs("tmpfs", mountpoint, &format!("size={size},mode=0755"))
            .map_err(|e| format!("mount tmpfs at {}: {e}", mountpoint.display()))?;
        Ok(Tmpfs {
            mountpoint: mountpoint.to_path_buf(),
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        unmount_quietly(&self.mountpoint);
    }
}

/// Kills a stratafs daemon (our child) that stops making progress, so a deadlock fails the
/// test with a message instead of hanging it: blocked calls on the mount then return ENOTCONN.
pub struct Watchdog {
    state: Arc<WatchdogState>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct WatchdogState {
    progress: AtomicU64,
    stop: AtomicBool,
    fired: AtomicBool,
}

impl Watchdog {
    /// Watches daemon `pid`; fires after `stall` without a `tick`.
    pub fn new(pid: Option<u32>, stall: Duration) -> Watchdog {
        let state = Arc::new(WatchdogState {
            progress: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            fired: AtomicBool::new(false),
        });
        let st = state.clone();
        let thread = std::thread::spawn(move || {
            let mut last = 0;
            let mut since = Instant::now();
            while !st.stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
                let now = st.progress.load(Ordering::Relaxed);
                if now != last {
                    last = now;
                    since = Instant::now();
                } else if since.elapsed() > stall {
                    st.fired.store(true, Ordering::Relaxed);
                    if let Some(pid) = pid {
                        // SAFETY: plain kill(2) of our own child process.
                        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                    }
                    return;
                }
            }
        });
        Watchdog {
            state,
            thread: Some(thread),
        }
    }

    pub fn tick(&self) {
        self.state.progress.fetch_add(1, Ordering::Relaxed);
    }

    pub fn fired(&self) -> bool {
        self.state.fired.load(Ordering::Relaxed)
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The stratafs binary built for this test run.
pub fn stratafs_bin() -> PathBuf {
    PathBuf::from(STRATAFS)
}

/// Mount points at or below `dir`, in mount order.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    mountinfo::mount_points()
        .into_iter()
        .filter(|m| m.starts_with(dir))
        .collect()
}

/// The type of the topmost filesystem mounted at `path` ("fuse", "overlay", ...), if any.
pub fn mount_type(path: &Path) -> Option<String> {
    mountinfo::types_at(path).pop()
}

/// A unique directory under the temp dir with a public `path`, removed on drop after anything
/// still mounted below it is detached.
pub struct Scratch {
    pub path: PathBuf,
}

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("stratafs-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("cannot create a scratch dir under the temp dir");
        Scratch { path }
    }

    /// Creates (and returns) a subdirectory.
    pub fn dir(&self, rel: &str) -> PathBuf {
        let p = self.path.join(rel);
        std::fs::create_dir_all(&p).expect("cannot create a dir in the scratch dir");
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for m in mounts_under(&self.path).into_iter().rev() {
            let _ = umount(&m, true);
        }
        if mounts_under(&self.path).is_empty() {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}
