//! Mounting and serving: the FUSE session, detaching into the background, and shutdown.
//!
//! Contract for callers (people, scripts, container engines): with `detach`, the command exits
//! 0 only once the mount is live (fuser mounts and completes the INIT handshake synchronously
//! before we fork), and the background daemon keeps none of the caller's stdio open. The
//! daemon exits when its mount goes away (umount, fusermount3 -u) and on SIGTERM/SIGINT/SIGHUP,
//! which unmount first.

use std::path::PathBuf;

use fuser::{Config, MountOption, Session, SessionACL};

use crate::fs::{Options, StrataFs};
use crate::spec::MountSpec;
use crate::sys::process;

pub fn mount(spec: &MountSpec, detach: bool) -> Result<(), String> {
    let layers = spec.open_layers()?;
    spec.check_mountpoint()?;
    // Objects are created with exactly the mode the caller asked for.
    crate::sys::ops::set_umask(0);
    let upper = spec.open_upper()?;
    let read_only = upper.is_none();
    process::raise_nofile_limit();
    let fs = StrataFs::new(
        layers,
        upper,
        Options {
            passthrough: spec.passthrough,
        },
    )
    .map_err(|e| format!("cannot read the top layer: {e}"))?;

    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName(spec.fsname.clone().unwrap_or_else(|| "stratafs".into())),
        MountOption::Subtype("stratafs".into()),
        MountOption::DefaultPermissions,
        MountOption::Dev,
        MountOption::Suid,
        MountOption::NoAtime,
    ];
    if read_only {
        config.mount_options.push(MountOption::RO);
    }
    config.acl = SessionACL::All;
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    config.n_threads = Some(spec.threads.unwrap_or(cores.max(2)));
    config.clone_fd = true;

    let mut session = Session::new(fs, &spec.mountpoint, &config).map_err(|e| {
        format!(
            "mountpoint {}: mount failed: {e}",
            spec.mountpoint.display()
        )
    })?;

    if detach {
        match process::fork().map_err(|e| format!("cannot start the daemon: {e}"))? {
            process::Forked::Parent => {
                // The child owns the session now; this process must not unmount on exit.
                std::mem::forget(session);
                return Ok(());
            }
            process::Forked::Child => {
                process::detach_stdio().map_err(|e| format!("cannot detach: {e}"))?;
            }
        }
    }

    let signals =
        process::block_termination_signals().map_err(|e| format!("cannot set up signals: {e}"))?;
    let mut unmounter = session.unmount_callable();
    let mountpoint: PathBuf = spec.mountpoint.clone();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let sig = process::wait_for_signal(&signals);
            log::info!("signal {sig}: unmounting {}", mountpoint.display());
            if let Err(e) = unmounter.unmount() {
                log::warn!(
                    "unmount of {} failed ({e}); detaching it",
                    mountpoint.display()
                );
                let _ = process::umount(&mountpoint, true);
            }
        })
        .map_err(|e| format!("cannot start the signal thread: {e}"))?;

    session
        .run()
        .map_err(|e| format!("session ended with an error: {e}"))
}

/// `stratafs umount MOUNTPOINT`: unmount, waiting for nothing (the daemon exits by itself).
pub fn umount(mountpoint: &std::path::Path) -> Result<(), String> {
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
    process::umount(mountpoint, false).map_err(|e| {
        format!(
            "{}: unmount failed: {e}: close files and leave the directory, or use umount -l",
            mountpoint.display()
        )
    })
}
