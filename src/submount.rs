//! Volumes, bind overlays and tmpfs paths inside the merged view.
//!
//! They are real mounts placed by the daemon on top of its own FUSE mount, once that is live:
//! the kernel then serves them at native speed, changes on either side of a bind are seen at
//! once, rename/link across the boundary gives EXDEV, and a tmpfs size limit is the kernel's.
//! Every target is reached with openat2 (no symlink followed, never leaving the mount), and
//! mounted through the fd, so an image symlink cannot redirect a mount onto the host.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, IoContext};
use crate::sys;
use crate::sys::ops;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A named volume (None: anonymous), filled from the image unless `nocopy`.
    Volume {
        name: Option<String>,
        nocopy: bool,
    },
    Bind {
        host: PathBuf,
    },
    Tmpfs {
        size: Option<u64>,
        mode: u32,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubMount {
    /// Absolute, normalised path inside the merged view, never "/".
    pub target: PathBuf,
    pub kind: Kind,
    pub read_only: bool,
}

/// Checks a target path: absolute, no `.`/`..`/empty components, not the root.
pub fn check_target(target: &str) -> Result<PathBuf, Error> {
    let p = Path::new(target);
    let refuse = |problem: &str| {
        Err(Error::Target {
            target: target.to_string(),
            problem: problem.to_string(),
        })
    };
    if !p.is_absolute() {
        return refuse("must be an absolute path inside the mount, like /data");
    }
    if target
        .split('/')
        .skip(1)
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return refuse("must be normalised (no '.', '..', '//' or trailing '/')");
    }
    if p.components().all(|c| c == Component::RootDir) {
        return refuse("cannot cover the whole mount; pick a directory below /");
    }
    Ok(p.to_path_buf())
}

/// The error for a sub-mount spec given with `option` that does not parse.
fn bad_spec(option: &'static str, spec: &str, problem: String) -> Error {
    Error::SubMountSpec {
        option,
        spec: spec.to_string(),
        problem,
    }
}

/// Splits `SOURCE:/target[:OPTS]` where SOURCE may itself hold ':' (a host path): the
/// target is the last ':'-separated part starting with '/', the options (comma or ':'
/// separated, Docker accepts both) follow it, and everything before it is the source.
fn split_source_target(spec: &str) -> Option<(&str, &str, Vec<&str>)> {
    let parts: Vec<&str> = spec.split(':').collect();
    let at = (1..parts.len())
        .rev()
        .find(|&i| parts[i].starts_with('/'))?;
    let source_len = parts[..at].iter().map(|p| p.len() + 1).sum::<usize>() - 1;
    let options = parts[at + 1..]
        .iter()
        .flat_map(|o| o.split(','))
        .filter(|o| !o.is_empty())
        .collect();
    Some((&spec[..source_len], parts[at], options))
}

/// `NAME:/path[:ro|:rw|:nocopy]`, `/path` (anonymous), or, as Docker reads `-v`,
/// `/host/path:/path[:ro]` (a bind). Options may be joined with commas (`ro,nocopy`).
pub fn parse_volume(spec: &str) -> Result<SubMount, Error> {
    let usage = "expected NAME:/path[:ro|:nocopy], /path, or /host/dir:/path[:ro] (a bind)";
    let (name, target, opts) = match split_source_target(spec) {
        None if spec.starts_with('/') => {
            let (target, opts) = spec.split_once(':').unwrap_or((spec, ""));
            let opts = opts.split([':', ',']).filter(|o| !o.is_empty()).collect();
            (None, target, opts)
        }
        None => return Err(bad_spec("--volume", spec, usage.into())),
        Some((source, _, _)) if source.starts_with('/') => {
            // A bind written as --volume: its errors name --volume, as it was given.
            return parse_bind(spec).map_err(|e| match e {
                Error::SubMountSpec { spec, problem, .. } => Error::SubMountSpec {
                    option: "--volume",
                    spec,
                    problem,
                },
                other => other,
            });
        }
        Some((name, target, opts)) => (Some(name.to_string()), target, opts),
    };
    let mut read_only = false;
    let mut nocopy = false;
    for o in opts {
        match o {
            "ro" => read_only = true,
            "rw" => read_only = false,
            "nocopy" => nocopy = true,
            other => {
                return Err(bad_spec(
                    "--volume",
                    spec,
                    format!("unknown option {other:?} (use ro, rw or nocopy)"),
                ))
            }
        }
    }
    if let Some(n) = &name {
        crate::volume::check_name(n)?;
    }
    Ok(SubMount {
        target: check_target(target)?,
        kind: Kind::Volume { name, nocopy },
        read_only,
    })
}

/// `HOSTPATH:/path[:ro]`; HOSTPATH may hold ':' (the target is the last part starting with '/').
pub fn parse_bind(spec: &str) -> Result<SubMount, Error> {
    let bad = |problem: String| bad_spec("--bind", spec, problem);
    let (host, target, opts) = split_source_target(spec).ok_or_else(|| {
        bad("expected HOSTPATH:/path[:ro] (the target inside the mount is absolute)".into())
    })?;
    let mut read_only = false;
    for o in opts {
        match o {
            "ro" => read_only = true,
            "rw" => read_only = false,
            other => return Err(bad(format!("unknown option {other:?} (use ro or rw)"))),
        }
    }
    let host = PathBuf::from(host);
    if !host.is_absolute() {
        return Err(bad("the host path must be absolute".into()));
    }
    if std::fs::symlink_metadata(&host).is_err() {
        return Err(bad(format!(
            "host path {} does not exist: create it first",
            host.display()
        )));
    }
    Ok(SubMount {
        target: check_target(target)?,
        kind: Kind::Bind { host },
        read_only,
    })
}

/// `/path[:size=BYTES,mode=OCTAL]`.
pub fn parse_tmpfs(spec: &str) -> Result<SubMount, Error> {
    let bad = |problem: String| bad_spec("--tmpfs", spec, problem);
    let (target, opts) = match spec.split_once(':') {
        Some((t, o)) => (t, o),
        None => (spec, ""),
    };
    let mut size = None;
    let mut mode = 0o1777;
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        match o.split_once('=') {
            Some(("size", v)) => {
                let bytes = parse_size(v)
                    .ok_or_else(|| bad(format!("bad size {v:?} (bytes, or with k/m/g)")))?;
                // The kernel reads size=0 as "no limit": almost never what was meant.
                if bytes == 0 {
                    return Err(bad("size=0 would mean no size limit: give a size, or leave size= out for no limit".into()));
                }
                size = Some(bytes)
            }
            Some(("mode", v)) => {
                mode = u32::from_str_radix(v, 8)
                    .ok()
                    .filter(|m| *m <= 0o7777)
                    .ok_or_else(|| bad(format!("bad mode {v:?} (octal, like 1777)")))?
            }
            _ => {
                return Err(bad(format!(
                    "unknown option {o:?} (use size=BYTES,mode=OCTAL)"
                )))
            }
        }
    }
    Ok(SubMount {
        target: check_target(target)?,
        kind: Kind::Tmpfs { size, mode },
        read_only: false,
    })
}

fn parse_size(v: &str) -> Option<u64> {
    let (num, mult) = match v.chars().last()? {
        'k' | 'K' => (&v[..v.len() - 1], 1u64 << 10),
        'm' | 'M' => (&v[..v.len() - 1], 1 << 20),
        'g' | 'G' => (&v[..v.len() - 1], 1 << 30),
        _ => (v, 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mult)
}

/// Refuses two sub-mounts on one target (Docker does too): the later would hide the earlier.
pub fn check_distinct_targets(subs: &[SubMount]) -> Result<(), Error> {
    for (i, a) in subs.iter().enumerate() {
        if subs[..i].iter().any(|b| b.target == a.target) {
            return Err(Error::TargetTwice(a.target.clone()));
        }
    }
    Ok(())
}

/// Where volume data lives; the store behind it records which mount uses which volume.
pub trait VolumeProvider {
    /// Returns the data directory of the volume (creating it on first use) and whether it
    /// is empty. The volume stays marked as used by this mount until the daemon exits.
    fn attach(&mut self, name: Option<&str>) -> Result<(PathBuf, bool), Error>;
}

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
    let mut dir = sys::open_beneath(mnt.as_fd(), c".", libc::O_PATH | libc::O_DIRECTORY, 0)?;
    let mut here = PathBuf::from("/");
    for (i, part) in parts.iter().enumerate() {
        let name = sys::cstr(part.as_bytes())?;
        let last = i + 1 == parts.len();
        here.push(part);
        match sys::open_beneath(dir.as_fd(), &name, libc::O_PATH | libc::O_NOFOLLOW, 0) {
            Ok(fd) => dir = fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                let parent =
                    sys::open_beneath(dir.as_fd(), c".", libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
                let made = if last && file {
                    sys::open_beneath(
                        parent.as_fd(),
                        &name,
                        libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
                        0o644,
                    )
                    .map(drop)
                } else {
                    ops::mkdir_at(parent.as_fd(), &name, 0o755)
                };
                made.map_err(|e| match e.raw_os_error() {
                    Some(libc::EROFS) => io::Error::other(format!(
                        "{} does not exist in the image, and a read-only union cannot create it: \
                         create it in a layer, or pass --upper and --work",
                        here.display()
                    )),
                    _ => e,
                })?;
                created.push(here.clone());
                dir = sys::open_beneath(parent.as_fd(), &name, libc::O_PATH | libc::O_NOFOLLOW, 0)?;
            }
            Err(e) => return Err(e),
        }
        let st = sys::fstat(dir.as_fd())?;
        let is_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
        let is_link = st.st_mode & libc::S_IFMT == libc::S_IFLNK;
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
                    let src = sys::open_beneath(
                        target.as_fd(),
                        c".",
                        libc::O_RDONLY | libc::O_DIRECTORY,
                        0,
                    )
                    .and_then(|src| {
                        let dst = sys::open_beneath(
                            data_fd.as_fd(),
                            c".",
                            libc::O_RDONLY | libc::O_DIRECTORY,
                            0,
                        )?;
                        crate::treecopy::copy_tree(src.as_fd(), dst.as_fd())
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
                let flags = libc::MS_NOSUID | libc::MS_NODEV;
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
                libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
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
    ops::mount_on(Some(&src_path), target.as_fd(), None, libc::MS_BIND, None)
}

/// Unmounts every mount below `mountpoint`, deepest first (used before unmounting the union).
pub fn detach_all(mountpoint: &Path) {
    let Ok(root) = mountpoint.canonicalize() else {
        return;
    };
    let mut below: Vec<PathBuf> = crate::mountinfo::mounts()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_checked() {
        assert!(check_target("/data").is_ok());
        assert!(check_target("/a/b").is_ok());
        for bad in ["data", "/", "/a/../b", "/a/./b", "/a//b", "/a/", ""] {
            assert!(check_target(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn volume_specs_parse() {
        let v = parse_volume("db:/var/lib/db:nocopy").unwrap();
        assert_eq!(
            v.kind,
            Kind::Volume {
                name: Some("db".into()),
                nocopy: true
            }
        );
        assert_eq!(v.target, PathBuf::from("/var/lib/db"));
        let a = parse_volume("/cache").unwrap();
        assert_eq!(
            a.kind,
            Kind::Volume {
                name: None,
                nocopy: false
            }
        );
        assert!(parse_volume("../x:/data").is_err());
        assert!(parse_volume("a/b:/data").is_err());
        assert!(parse_volume("db:/data:bogus").is_err());
        assert!(parse_volume("db:relative").is_err());
    }

    #[test]
    fn docker_volume_forms_parse() {
        // A path source is a bind, as `docker run -v /host:/data` reads it.
        let b = parse_volume("/tmp:/data:ro").unwrap();
        assert_eq!(
            b.kind,
            Kind::Bind {
                host: PathBuf::from("/tmp")
            }
        );
        assert!(b.read_only);
        let v = parse_volume("db:/data:ro,nocopy").unwrap();
        assert!(v.read_only);
        assert_eq!(
            v.kind,
            Kind::Volume {
                name: Some("db".into()),
                nocopy: true
            }
        );
        let a = parse_volume("/cache:ro").unwrap();
        assert!(a.read_only && a.target == Path::new("/cache"));
    }

    #[test]
    fn bind_sources_may_hold_colons() {
        assert_eq!(
            split_source_target("/a:b/c:/data:ro"),
            Some(("/a:b/c", "/data", vec!["ro"]))
        );
        assert_eq!(
            split_source_target("/a:/b:/c"),
            Some(("/a:/b", "/c", vec![]))
        );
        assert_eq!(split_source_target("/only"), None);
        assert_eq!(split_source_target("/host:relative"), None);
    }

    #[test]
    fn tmpfs_size_zero_and_duplicate_targets_are_refused() {
        assert!(parse_tmpfs("/t:size=0")
            .unwrap_err()
            .to_string()
            .contains("no size limit"));
        let subs = [parse_tmpfs("/t").unwrap(), parse_volume("v:/t").unwrap()];
        assert!(check_distinct_targets(&subs)
            .unwrap_err()
            .to_string()
            .contains("given twice"));
        assert!(check_distinct_targets(&subs[..1]).is_ok());
    }

    #[test]
    fn tmpfs_specs_parse() {
        let t = parse_tmpfs("/tmp:size=1m,mode=700").unwrap();
        assert_eq!(
            t.kind,
            Kind::Tmpfs {
                size: Some(1 << 20),
                mode: 0o700
            }
        );
        assert_eq!(
            parse_tmpfs("/run").unwrap().kind,
            Kind::Tmpfs {
                size: None,
                mode: 0o1777
            }
        );
        assert!(parse_tmpfs("/tmp:size=lots").is_err());
        assert!(parse_tmpfs("/tmp:mode=9").is_err());
    }

    #[test]
    fn volume_names_follow_the_store_rule() {
        assert!(parse_volume("db-1_x.y:/data").is_ok());
        for bad in ["", "..", ".hidden", "-x", "a/b", "a b", &"x".repeat(129)] {
            let e = parse_volume(&format!("{bad}:/data")).unwrap_err();
            assert!(
                matches!(
                    e,
                    Error::Volume(crate::volume::VolumeError::InvalidName { .. })
                ),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn a_bind_given_as_volume_is_reported_as_volume() {
        let e = parse_volume("/no/such/host/dir:/data")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("--volume \"/no/such/host/dir:/data\": host path"),
            "{e}"
        );
    }
}
