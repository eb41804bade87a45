//! Mounting and serving: the FUSE session, detaching into the background, sub-mounts, and
//! shutdown.
//!
//! Contract for callers (people, scripts, container engines): with `detach`, the command exits
//! 0 only once the mount is live with every sub-mount in place, and the background daemon
//! keeps none of the caller's stdio open (a caller may read our stderr until EOF). The daemon
//! exits when its mount goes away (umount, fusermount3 -u) and on SIGTERM/SIGINT/SIGHUP, which
//! unmount first.

pub(crate) mod fusemount;
pub(crate) mod fusesplice;
pub(crate) mod logging;
pub(crate) mod submount;

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::Ordering;

use fuser::{Config, MountOption, Session, SessionACL};

use crate::error::{Error, IoContext};
use crate::fs::{Options, StrataFs};
use crate::spec::MountSpec;
use crate::sys::c;
use crate::sys::process;

/// Which process returns from [`mount`] with `detach`: the command the caller ran (once the
/// mount is live) or the daemon (once it has stopped serving).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Launcher,
    Daemon,
}

/// Mounts `spec` and serves it; with `detach`, from a background process.
pub fn mount(spec: &MountSpec, detach: bool) -> Result<Role, Error> {
    let result = mount_and_serve(spec, detach);
    if !matches!(result, Ok(Role::Launcher)) {
        if let Some(dir) = &spec.remove_on_exit {
            if let Err(e) = std::fs::remove_dir_all(dir) {
                log::warn!("cannot remove {}: {e}", dir.display());
            }
        }
    }
    result
}

fn mount_and_serve(spec: &MountSpec, detach: bool) -> Result<Role, Error> {
    crate::spec::submount::check_distinct_targets(&spec.submounts)?;
    spec.check_all_exist()?;
    if let Some(file) = &spec.log_file {
        crate::daemon::logging::to_file(file)?;
    }
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
    let (format, why) = crate::union::rootless::choose(upper.as_ref(), spec.userxattr);
    if upper.is_some() {
        let name = if format == crate::union::rootless::Format::PRIVILEGED {
            "privileged (trusted.overlay.* markers, metacopy, directory redirects)"
        } else {
            "rootless (user.overlay.* markers as kernel overlayfs writes with userxattr; no \
             metacopy; renaming a merged or lower directory gives EXDEV)"
        };
        log::info!("upper format: {name}: {why}");
    }
    process::raise_nofile_limit();
    process::use_one_malloc_arena();
    process::map_large_blocks();
    let mut volumes = spec.volume_provider()?;
    let fs = StrataFs::new(
        layers,
        upper,
        Options {
            passthrough: spec.passthrough,
            posix_acl: !spec.noacl,
            format,
            ownership: spec.ownership.clone(),
        },
    )
    .context(|| "cannot read the top layer".into())?;
    let deny_writes = fs.deny_writes_handle();
    let splice_device = fs.splice_device_handle();
    let notifier = fs.notifier_handle();

    let mut config = Config::default();
    config.acl = SessionACL::All;
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    // Handlers block in I/O (a large copy-up, fsync): keep threads free for other requests.
    config.n_threads = Some(spec.threads.unwrap_or((cores * 2).max(4)));
    // Without passthrough (not asked for, or refused to a daemon without CAP_SYS_ADMIN in the
    // initial user namespace) the daemon serves reads itself and splices them to the device;
    // that needs one /dev/fuse fd shared by all threads, so the reply goes where the request
    // came from. Otherwise each thread reads its own clone of the fd.
    let splice_reads = !spec.passthrough || !crate::union::rootless::sys_admin_in_initial_userns();
    config.clone_fd = !splice_reads;

    let flags = fusemount::Flags {
        read_only,
        nodev: spec.nodev,
        nosuid: spec.nosuid,
        noexec: spec.noexec,
    };
    let fsname = spec.fsname.clone().unwrap_or_else(|| "stratafs".into());
    let mount_failed = |e: std::io::Error| {
        Error::io(
            format!("mountpoint {}: mount failed", spec.mountpoint.display()),
            e,
        )
    };
    // Blocked before the mount exists: a SIGTERM the moment it appears must unmount it, not
    // kill the process and leave a dead mount behind. The signal thread waits for them.
    let signals =
        process::block_termination_signals().context(|| "cannot set up signals".into())?;
    let (session, own) = match fusemount::mount(&spec.mountpoint, &fsname, flags) {
        Ok((fd, own)) => {
            let session = Session::from_fd(fs, fd, config.acl, config).map_err(|e| {
                let _ = process::umount(&own.path, true);
                mount_failed(e)
            })?;
            (session, own)
        }
        Err(e) if e.raw_os_error() == Some(c::EPERM) => {
            // Not allowed to mount (no CAP_SYS_ADMIN here): fusermount3 mounts for us.
            let privileged = process::ids().0 == 0;
            config.mount_options = fuser_options(&fsname, flags, privileged);
            if !privileged && !crate::union::rootless::fuse_conf_allows_other() {
                // fusermount3 refuses allow_other to a plain user unless fuse.conf says so.
                config.acl = SessionACL::Owner;
                log::warn!(
                    "only this user can use the mount: /etc/fuse.conf does not permit \
                     allow_other (add a line user_allow_other to let other users and \
                     containers running as other uids in)"
                );
            }
            let session = Session::new(fs, &spec.mountpoint, &config).map_err(mount_failed)?;
            let own = fusemount::OwnMount::find(&spec.mountpoint, flags)
                .ok_or_else(|| mount_failed(std::io::Error::other("not in the mount table")))?;
            (session, own)
        }
        Err(e) => return Err(mount_failed(e)),
    };
    let _ = notifier.set(session.notifier());
    if splice_reads {
        match session.as_fd().try_clone_to_owned() {
            Ok(fd) => {
                let _ = splice_device.set(Box::new(fusesplice::DeviceSplicer(fd)));
            }
            Err(e) => log::info!("reads are copied, not spliced: cannot dup /dev/fuse: {e}"),
        }
    }

    // With detach, the parent waits on this socket for the child's verdict.
    let mut verdict: Option<UnixStream> = None;
    if detach {
        let (parent_end, child_end) =
            UnixStream::pair().context(|| "cannot start the daemon".into())?;
        match process::fork().context(|| "cannot start the daemon".into())? {
            process::Forked::Parent => {
                // The child owns the session now; this process must not unmount on exit.
                std::mem::forget(session);
                drop(child_end);
                // The launcher stays interruptible while it waits; the daemon is on its own.
                process::unblock_signals(&signals).context(|| "cannot set up signals".into())?;
                return wait_for_child(parent_end).map(|()| Role::Launcher);
            }
            process::Forked::Child => {
                drop(parent_end);
                process::detach_stdio().context(|| "cannot detach".into())?;
                if spec.log_file.is_none() {
                    crate::daemon::logging::to_syslog();
                }
                verdict = Some(child_end);
            }
        }
    }

    let background = session.spawn().context(|| "cannot start serving".into())?;

    let attached =
        submount::attach_all(&own.path, &spec.submounts, volumes.as_mut()).and_then(|_| {
            if spec.read_only_union && !read_only {
                own.make_read_only().context(|| {
                    format!(
                        "mountpoint {}: cannot make the union read-only",
                        own.path.display()
                    )
                })?;
            }
            Ok(())
        });
    if let Err(e) = attached {
        own.unmount();
        let _ = background.join();
        tell(verdict.as_mut(), &format!("error: {e}"));
        return Err(e);
    }
    if spec.read_only_union {
        deny_writes.store(true, Ordering::Relaxed);
    }
    tell(verdict.as_mut(), "ok");
    drop(verdict);

    let signalled = own.clone();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let sig = process::wait_for_signal(&signals);
            log::info!("signal {sig}: unmounting {}", signalled.path.display());
            signalled.unmount();
        })
        .context(|| "cannot start the signal thread".into())?;

    // The session ends when the kernel ends it (the mount went away): nothing is left to
    // unmount then, and the path may already hold someone else's new mount.
    let result = background
        .join()
        .context(|| "session ended with an error".into());
    drop(volumes);
    result.map(|()| Role::Daemon)
}

fn tell(to: Option<&mut UnixStream>, message: &str) {
    if let Some(s) = to {
        let _ = writeln!(s, "{message}");
    }
}

/// The parent side of `--daemon`: success only once the child says the mount is complete.
fn wait_for_child(from: UnixStream) -> Result<(), Error> {
    let mut line = String::new();
    match BufReader::new(from).read_line(&mut line) {
        Ok(_) if line.trim_end() == "ok" => Ok(()),
        Ok(_) if !line.is_empty() => Err(Error::Daemon(
            line.trim_end().trim_start_matches("error: ").to_string(),
        )),
        _ => Err(Error::DaemonGone),
    }
}

/// fuser's options for the fusermount3 fallback, matching what [`fusemount::mount`] sets.
/// For a plain user fusermount3 always mounts nodev,nosuid (and complains about dev/suid).
fn fuser_options(fsname: &str, flags: fusemount::Flags, privileged: bool) -> Vec<MountOption> {
    let mut options = vec![
        MountOption::FSName(fsname.into()),
        MountOption::Subtype("stratafs".into()),
        MountOption::DefaultPermissions,
        if flags.nodev || !privileged {
            MountOption::NoDev
        } else {
            MountOption::Dev
        },
        if flags.nosuid || !privileged {
            MountOption::NoSuid
        } else {
            MountOption::Suid
        },
        MountOption::NoAtime,
    ];
    if flags.noexec {
        options.push(MountOption::NoExec);
    }
    if flags.read_only {
        options.push(MountOption::RO);
    }
    options
}

/// `stratafs umount [--force] MOUNTPOINT`: unmount sub-mounts and the union; the daemon exits
/// by itself. Another filesystem at MOUNTPOINT (fuse-overlayfs, a kernel overlay) is left
/// alone unless `force`.
pub fn umount(mountpoint: &Path, force: bool) -> Result<(), Error> {
    match crate::sys::mountinfo::mount_at(mountpoint) {
        Some(m) if crate::sys::mountinfo::is_stratafs(&m) || force => {}
        // A volume, bind or tmpfs of a union: the union is what to unmount.
        Some(m) if crate::sys::mountinfo::union_above(&m.mount_point) != m.mount_point => {
            return Err(Error::SubMountOfUnion {
                path: mountpoint.to_path_buf(),
                union: crate::sys::mountinfo::union_above(&m.mount_point),
            });
        }
        Some(m) => {
            return Err(Error::NotStratafs {
                path: mountpoint.to_path_buf(),
                fs_type: m.fs_type,
                source: m.source,
            })
        }
        None => return Err(Error::NotMounted(mountpoint.to_path_buf())),
    }
    submount::detach_all(mountpoint);
    process::umount(mountpoint, false).map_err(|e| {
        Error::io_with_fix(
            format!("{}: unmount failed", mountpoint.display()),
            e,
            "close files and leave the directory, or use umount -l",
        )
    })
}
