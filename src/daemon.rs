//! Mounting and serving: the FUSE session, detaching into the background, sub-mounts, and
//! shutdown.
//!
//! Contract for callers (people, scripts, container engines): with `detach`, the command exits
//! 0 only once the mount is live with every sub-mount in place, and the background daemon
//! keeps none of the caller's stdio open (a caller may read our stderr until EOF). The daemon
//! exits when its mount goes away (umount, fusermount3 -u) and on SIGTERM/SIGINT/SIGHUP, which
//! unmount first.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use fuser::{Config, MountOption, Session, SessionACL};

use crate::fs::{Options, StrataFs};
use crate::spec::MountSpec;
use crate::submount;
use crate::sys::process;

pub fn mount(spec: &MountSpec, detach: bool) -> Result<(), String> {
    let layers = spec.open_layers()?;
    spec.check_mountpoint()?;
    spec.check_layout()?;
    // Objects are created with exactly the mode the caller asked for.
    crate::sys::ops::set_umask(0);
    let upper = spec.open_upper()?;
    if spec.read_only_union && upper.is_none() && !spec.submounts.is_empty() {
        log::info!(
            "read-only union without an upper dir: sub-mount targets must exist in the image"
        );
    }
    let read_only = upper.is_none() && spec.submounts.is_empty();
    process::raise_nofile_limit();
    let mut volumes = spec.volume_provider()?;
    let fs = StrataFs::new(
        layers,
        upper,
        Options {
            passthrough: spec.passthrough,
            posix_acl: !spec.noacl,
            marker_ns: spec.marker_ns,
        },
    )
    .map_err(|e| format!("cannot read the top layer: {e}"))?;
    let deny_writes = fs.deny_writes_handle();

    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName(spec.fsname.clone().unwrap_or_else(|| "stratafs".into())),
        MountOption::Subtype("stratafs".into()),
        MountOption::DefaultPermissions,
        if spec.nodev {
            MountOption::NoDev
        } else {
            MountOption::Dev
        },
        if spec.nosuid {
            MountOption::NoSuid
        } else {
            MountOption::Suid
        },
        MountOption::NoAtime,
    ];
    if spec.noexec {
        config.mount_options.push(MountOption::NoExec);
    }
    if read_only {
        config.mount_options.push(MountOption::RO);
    }
    config.acl = SessionACL::All;
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    // Handlers block in I/O (a large copy-up, fsync): keep threads free for other requests.
    config.n_threads = Some(spec.threads.unwrap_or((cores * 2).max(4)));
    config.clone_fd = true;

    let session = Session::new(fs, &spec.mountpoint, &config).map_err(|e| {
        format!(
            "mountpoint {}: mount failed: {e}",
            spec.mountpoint.display()
        )
    })?;

    // With detach, the parent waits on this socket for the child's verdict.
    let mut verdict: Option<UnixStream> = None;
    if detach {
        let (parent_end, child_end) =
            UnixStream::pair().map_err(|e| format!("cannot start the daemon: {e}"))?;
        match process::fork().map_err(|e| format!("cannot start the daemon: {e}"))? {
            process::Forked::Parent => {
                // The child owns the session now; this process must not unmount on exit.
                std::mem::forget(session);
                drop(child_end);
                return wait_for_child(parent_end);
            }
            process::Forked::Child => {
                drop(parent_end);
                process::detach_stdio().map_err(|e| format!("cannot detach: {e}"))?;
                verdict = Some(child_end);
            }
        }
    }

    let signals =
        process::block_termination_signals().map_err(|e| format!("cannot set up signals: {e}"))?;
    let background = session
        .spawn()
        .map_err(|e| format!("cannot start serving: {e}"))?;

    let attached = submount::attach_all(&spec.mountpoint, &spec.submounts, volumes.as_mut());
    if let Err(e) = attached {
        submount::detach_all(&spec.mountpoint);
        let _ = process::umount(&spec.mountpoint, true);
        let _ = background.join();
        tell(verdict.as_mut(), &format!("error: {e}"));
        return Err(e);
    }
    if spec.read_only_union {
        deny_writes.store(true, Ordering::Relaxed);
    }
    tell(verdict.as_mut(), "ok");
    drop(verdict);

    let mountpoint: PathBuf = spec.mountpoint.clone();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let sig = process::wait_for_signal(&signals);
            log::info!("signal {sig}: unmounting {}", mountpoint.display());
            unmount_tree(&mountpoint);
        })
        .map_err(|e| format!("cannot start the signal thread: {e}"))?;

    let result = background
        .join()
        .map_err(|e| format!("session ended with an error: {e}"));
    drop(volumes);
    result
}

fn tell(to: Option<&mut UnixStream>, message: &str) {
    if let Some(s) = to {
        let _ = writeln!(s, "{message}");
    }
}

/// The parent side of `--daemon`: success only once the child says the mount is complete.
fn wait_for_child(from: UnixStream) -> Result<(), String> {
    let mut line = String::new();
    match BufReader::new(from).read_line(&mut line) {
        Ok(_) if line.trim_end() == "ok" => Ok(()),
        Ok(_) if !line.is_empty() => Err(line.trim_end().trim_start_matches("error: ").to_string()),
        _ => Err("the daemon exited before the mount was ready".into()),
    }
}

/// Unmounts the sub-mounts, then the union (lazily if still busy).
fn unmount_tree(mountpoint: &Path) {
    submount::detach_all(mountpoint);
    if let Err(e) = process::umount(mountpoint, false) {
        log::warn!(
            "unmount of {} failed ({e}); detaching it",
            mountpoint.display()
        );
        let _ = process::umount(mountpoint, true);
    }
}

/// `stratafs umount MOUNTPOINT`: unmount sub-mounts and the union; the daemon exits by itself.
pub fn umount(mountpoint: &Path) -> Result<(), String> {
    match crate::mountinfo::mount_at(mountpoint) {
        Some(m) if m.fs_type == "fuse" || m.fs_type.starts_with("fuse.") => {}
        Some(m) => {
            return Err(format!(
                "{}: not a stratafs mount (type {}): use umount",
                mountpoint.display(),
                m.fs_type
            ))
        }
        None => {
            return Err(format!(
                "{}: not mounted: nothing to do",
                mountpoint.display()
            ))
        }
    }
    submount::detach_all(mountpoint);
    process::umount(mountpoint, false).map_err(|e| {
        format!(
            "{}: unmount failed: {e}: close files and leave the directory, or use umount -l",
            mountpoint.display()
        )
    })
}
