//! Shared test support: unique scratch dirs, and guards for stratafs, kernel overlayfs and tmpfs
//! mounts that unmount on drop (also when a test panics) and never leave a daemon behind.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The stratafs binary built for this test run.
pub fn stratafs_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_stratafs"))
}

/// Mount tests need root (mount -t overlay, /dev/fuse for allow_other and passthrough).
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "this test mounts filesystems and must run as root");
}

/// A unique directory under the system temp dir, removed (with everything below) on drop.
/// Mount guards living in it must be dropped first; anything still mounted below is detached.
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
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Mount points (from /proc/self/mountinfo) at or below `dir`, in mount order.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(unescape_mountinfo(m)))
        .filter(|m| m.starts_with(dir))
        .collect()
}

/// The fs type of what is mounted at `path` ("fuse.stratafs", "overlay", ...), if anything.
pub fn mount_type(path: &Path) -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mut found = None;
    for line in info.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        if fields.len() < 5 || Path::new(&unescape_mountinfo(fields[4])) != path {
            continue;
        }
        let sep = fields.iter().position(|f| *f == "-")?;
        found = fields.get(sep + 1).map(|s| s.to_string());
    }
    found
}

fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| c.is_ascii_digit()) {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("no NUL in a test path")
}

/// umount2(2): `lazy` detaches a busy or dead mount.
pub fn umount(path: &Path, lazy: bool) -> std::io::Result<()> {
    let p = cpath(path);
    let flags = if lazy { libc::MNT_DETACH } else { 0 };
    // SAFETY: NUL-terminated path.
    if unsafe { libc::umount2(p.as_ptr(), flags) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// mount(2) with a data string, for overlay and tmpfs.
pub fn mount_fs(fstype: &str, source: &str, target: &Path, data: &str) -> std::io::Result<()> {
    let (src, fs, dat) = (
        CString::new(source).expect("no NUL"),
        CString::new(fstype).expect("no NUL"),
        CString::new(data).expect("no NUL"),
    );
    let tgt = cpath(target);
    // SAFETY: NUL-terminated strings; data is a string as overlay and tmpfs expect.
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

/// Unmounts `path` if it is still mounted: normally first, detached if busy.
fn unmount_quietly(path: &Path) {
    if mount_type(path).is_some() && umount(path, false).is_err() {
        let _ = umount(path, true);
    }
}

/// Arguments of one stratafs mount.
#[derive(Clone, Debug)]
pub struct StrataSpec {
    /// Bottom layer first.
    pub layers: Vec<PathBuf>,
    /// (upper, work)
    pub upper: Option<(PathBuf, PathBuf)>,
    pub mountpoint: PathBuf,
    /// Where the daemon's stderr goes (read on failure).
    pub log: PathBuf,
}

/// A stratafs daemon serving a mount, run in the foreground as our child so its pid is known.
/// Drop unmounts (lazily if busy or dead) and reaps the daemon, killing it if it lingers.
pub struct StrataMount {
    pub spec: StrataSpec,
    child: Option<Child>,
}

impl StrataMount {
    pub fn start(spec: &StrataSpec) -> Result<StrataMount, String> {
        let mut cmd = Command::new(stratafs_bin());
        cmd.arg("mount");
        for l in &spec.layers {
            cmd.arg("--layer").arg(l);
        }
        if let Some((u, w)) = &spec.upper {
            cmd.arg("--upper").arg(u).arg("--work").arg(w);
        }
        cmd.arg(&spec.mountpoint);
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
            .map_err(|e| format!("cannot start {}: {e}", stratafs_bin().display()))?;
        let mut m = StrataMount {
            spec: spec.clone(),
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if mount_type(&spec.mountpoint).is_some_and(|t| t.starts_with("fuse")) {
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

    /// A clean unmount; fails if the mount is busy or the daemon does not exit.
    pub fn unmount(mut self) -> Result<(), String> {
        umount(&self.spec.mountpoint, false)
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
                Ok(Some(_)) => return Ok(()),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                _ => {
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

impl Drop for StrataMount {
    fn drop(&mut self) {
        unmount_quietly(&self.spec.mountpoint);
        let _ = self.reap(Duration::from_secs(5));
    }
}

/// A kernel overlayfs mount (the reference implementation), unmounted on drop.
pub struct KernelOverlay {
    pub mountpoint: PathBuf,
}

impl KernelOverlay {
    /// `layers` bottom first, like stratafs; extra options (e.g. "redirect_dir=on") appended.
    pub fn mount(
        layers: &[PathBuf],
        upper: Option<(&Path, &Path)>,
        mountpoint: &Path,
        extra: &str,
    ) -> Result<KernelOverlay, String> {
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
        mount_fs("overlay", "overlay", mountpoint, &data)
            .map_err(|e| format!("mount -t overlay -o {data} {}: {e}", mountpoint.display()))?;
        Ok(KernelOverlay {
            mountpoint: mountpoint.to_path_buf(),
        })
    }

    /// A clean unmount (on failure, drop detaches the mount).
    pub fn unmount(self) -> Result<(), String> {
        umount(&self.mountpoint, false)
            .map_err(|e| format!("umount {}: {e}", self.mountpoint.display()))
    }
}

impl Drop for KernelOverlay {
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
        mount_fs(
            "tmpfs",
            "tmpfs",
            mountpoint,
            &format!("size={size},mode=0755"),
        )
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
