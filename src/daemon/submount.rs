//! Places the volumes, bind overlays and tmpfs paths of the mount spec (`spec::submount`) on
//! top of the daemon's own FUSE mount, once that is live, and takes them away at exit.
//! Every target is reached with openat2 (no symlink followed, never leaving the mount), and
//! mounted through the fd, so an image symlink cannot redirect a mount onto the host.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext};
use crate::spec::submount::{Kind, SubMount, VolumeProvider};
use crate::sys;
use crate::sys::c;
use crate::sys::ops;

/// Opens the target inside the mount without following symlinks, creating missing
/// directories (and, for a file bind, an empty file) through the mount itself; each object
/// created is added to `created` (as a path inside the mount), for removal if mounting fails.
fn open_target(
    mnt: &OwnedFd,
    target: &Path,
    file: bool,
    created: &mut Vec<PathBuf>,
) -> io::Result<OwnedFd> {
    let parts: Vec<&std::ffi::OsStr> = target.iter().skip(1).collect();
    let mut dir = sys::open_beneath(mnt.as_fd(), c".", c::O_PATH | c::O_DIRECTORY, 0)?;
    let mut here = PathBuf::from("/");
    for (i, part) in parts.iter().enumerate() {
        let name = sys::cstr(part.as_bytes())?;
        let last = i + 1 == parts.len();
        here.push(part);
        match sys::open_beneath(dir.as_fd(), &name, c::O_PATH | c::O_NOFOLLOW, 0) {
            Ok(fd) => dir = fd,
            Err(e) if e.raw_os_error() == Some(c::ENOENT) => {
                let parent = sys::open_beneath(dir.as_fd(), c".", c::O_RDONLY | c::O_DIRECTORY, 0)?;
                let made = if last && file {
                    sys::open_beneath(
                        parent.as_fd(),
                        &name,
                        c::O_WRONLY | c::O_CREAT | c::O_EXCL,
                        0o644,
                    )
                    .map(drop)
                } else {
                    ops::mkdir_at(parent.as_fd(), &name, 0o755)
                };
                made.map_err(|e| match e.raw_os_error() {
                    Some(c::EROFS) => io::Error::other(format!(
                        "{} does not exist in the image, and a read-only union cannot create it: \
                         create it in a layer, or pass --upper and --work",
                        here.display()
                    )),
                    _ => e,
                })?;
                created.push(here.clone());
                dir = sys::open_beneath(parent.as_fd(), &name, c::O_PATH | c::O_NOFOLLOW, 0)?;
            }
            Err(e) => return Err(e),
        }
        let st = sys::fstat(dir.as_fd())?;
        let is_dir = st.st_mode & c::S_IFMT == c::S_IFDIR;
        let is_link = st.st_mode & c::S_IFMT == c::S_IFLNK;
        if (!last || !file) && !is_dir {
            return Err(io::Error::other(format!(
                "{} is not a directory in the image (a {} is there): pick a target below a real directory",
                here.display(),
                if is_link { "symlink" } else { "non-directory" }
            )));
        }
        if is_link {
            return Err(io::Error::other(format!(
                "{} is a symlink in the image: a bind cannot replace it",
                here.display()
            )));
        }
        if last && file && is_dir {
            return Err(io::Error::other(format!(
                "{} is a directory in the image: a file cannot be bound there",
                here.display()
            )));
        }
    }
    Ok(dir)
}

/// Undoes a failed attach: unmounts what was mounted and removes, deepest first, what was
/// created for targets (through the mount, so the upper dir is left as it was).
fn undo_attach(mountpoint: &Path, created: &[PathBuf]) {
    detach_all(mountpoint);
    for rel in created.iter().rev() {
        let path = mountpoint.join(rel.strip_prefix("/").unwrap_or(rel));
        let removed = match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => std::fs::remove_dir(&path),
            Ok(_) => std::fs::remove_file(&path),
            Err(e) => Err(e),
        };
        if let Err(e) = removed {
            log::warn!(
                "cannot remove the target {} made for a sub-mount: {e}",
                path.display()
            );
        }
    }
}

/// Mounts every sub-mount under `mountpoint` (already serving), shallowest target first so
/// that nested targets land inside their parents. Returns the mounted paths.
pub fn attach_all(
    mountpoint: &Path,
    subs: &[SubMount],
    volumes: &mut dyn VolumeProvider,
) -> Result<Vec<PathBuf>, Error> {
    let mnt = sys::open_dir_path(mountpoint)
        .context(|| format!("mountpoint {}", mountpoint.display()))?;
    let mut created = Vec::new();
    let attached = attach_each(mountpoint, &mnt, subs, volumes, &mut created);
    if attached.is_err() {
        undo_attach(mountpoint, &created);
    }
    attached
}

fn attach_each(
    mountpoint: &Path,
    mnt: &OwnedFd,
    subs: &[SubMount],
    volumes: &mut dyn VolumeProvider,
    created: &mut Vec<PathBuf>,
) -> Result<Vec<PathBuf>, Error> {
    let mut order: Vec<&SubMount> = subs.iter().collect();
    order.sort_by_key(|s| s.target.components().count());
    let mut done = Vec::new();
    for sub in order {
        let what = sub.target.display().to_string();
        let is_file_bind = matches!(&sub.kind, Kind::Bind { host } if !host.is_dir());
        let target = open_target(mnt, &sub.target, is_file_bind, created)
            .context(|| format!("target {what}"))?;
        match &sub.kind {
            Kind::Volume { name, nocopy } => {
                let (data, empty) = volumes.attach(name.as_deref())?;
                let data_fd = sys::open_dir_path(&data)
                    .context(|| format!("volume data {}", data.display()))?;
                if empty && !nocopy {
                    // Docker's rule: an empty volume takes the image content at its target.
                    let src =
                        sys::open_beneath(target.as_fd(), c".", c::O_RDONLY | c::O_DIRECTORY, 0)
                            .and_then(|src| {
                                let dst = sys::open_beneath(
                                    data_fd.as_fd(),
                                    c".",
                                    c::O_RDONLY | c::O_DIRECTORY,
                                    0,
                                )?;
                                crate::union::treecopy::copy_tree(src.as_fd(), dst.as_fd())
                            });
                    src.context(|| format!("volume at {what}: cannot copy the image content in"))?;
                }
                bind(&data_fd, &target).context(|| format!("volume at {what}: mount failed"))?;
            }
            Kind::Bind { host } => {
                let src = std::fs::File::open(host)
                    .map(OwnedFd::from)
                    .or_else(|_| sys::open_dir_path(host));
                let src = src.context(|| format!("bind source {}", host.display()))?;
                bind(&src, &target).context(|| format!("bind at {what}: mount failed"))?;
            }
            Kind::Tmpfs { size, mode } => {
                let mut data = format!("mode={mode:o}");
                if let Some(s) = size {
                    data.push_str(&format!(",size={s}"));
                }
                let data = sys::cstr(data.as_bytes()).expect("no NUL");
                let flags = c::MS_NOSUID | c::MS_NODEV;
                ops::mount_on(
                    Some(c"tmpfs"),
                    target.as_fd(),
                    Some(c"tmpfs"),
                    flags,
                    Some(&data),
                )
                .context(|| format!("tmpfs at {what}: mount failed"))?;
            }
        }
        let path = mountpoint.join(sub.target.strip_prefix("/").unwrap_or(&sub.target));
        if sub.read_only {
            let fd = sys::open_dir_path(&path)
                .or_else(|_| std::fs::File::open(&path).map(OwnedFd::from))
                .context(|| format!("target {what}"))?;
            ops::mount_on(
                None,
                fd.as_fd(),
                None,
                c::MS_BIND | c::MS_REMOUNT | c::MS_RDONLY,
                None,
            )
            .context(|| format!("target {what}: cannot make read-only"))?;
        }
        done.push(path);
    }
    Ok(done)
}

fn bind(src: &OwnedFd, target: &OwnedFd) -> io::Result<()> {
    let src_path =
        sys::cstr(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(src)).as_bytes())?;
    ops::mount_on(Some(&src_path), target.as_fd(), None, c::MS_BIND, None)
}

/// Unmounts every mount below `mountpoint`, deepest first (used before unmounting the union).
pub fn detach_all(mountpoint: &Path) {
    let Ok(root) = mountpoint.canonicalize() else {
        return;
    };
    let mut below: Vec<PathBuf> = crate::sys::mountinfo::mounts()
        .into_iter()
        .map(|m| m.mount_point)
        .filter(|p| p != &root && p.starts_with(&root))
        .collect();
    below.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for p in below {
        if let Err(e) = sys::process::umount(&p, false).or_else(|_| sys::process::umount(&p, true))
        {
            log::warn!("cannot unmount {}: {e}", p.display());
        }
    }
}
