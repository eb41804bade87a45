//! What can go wrong on the command line and on the way to a live mount, worded for the
//! person who ran the command: each message names the thing (argument, path, mount) and,
//! where there is one, the fix. `main` prints it after `stratafs: `.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use crate::image::ImageError;
use crate::spec::overlap::Relation;
use crate::volume::VolumeError;

#[derive(Debug)]
pub enum Error {
    /// An argument or option, or a combination of them, that cannot work as written; the
    /// text names it and says what to write instead.
    Usage(String),
    /// A sub-mount spec (`--volume`, `--bind`, `--tmpfs`) that does not parse.
    SubMountSpec {
        option: &'static str,
        spec: String,
        problem: String,
    },
    /// A sub-mount target that is not a normalised absolute path below `/`.
    Target {
        target: String,
        problem: String,
    },
    /// Two sub-mounts asked for on one target.
    TargetTwice(PathBuf),
    /// A path the mount needs (`what`: layer, upper dir, mountpoint...) does not exist.
    Missing {
        what: &'static str,
        path: PathBuf,
        fix: &'static str,
    },
    /// Several of the mount's directories do not exist (all reported at once).
    MissingDirs(Vec<(&'static str, PathBuf)>),
    /// A path the mount needs as a directory is something else.
    NotADirectory {
        what: &'static str,
        path: PathBuf,
        fix: &'static str,
    },
    /// A FUSE mount whose daemon is gone: every access fails with ENOTCONN.
    StaleMount(PathBuf),
    /// Two directories of the mount overlap where one would change the other behind the
    /// union's back; `alias` when only identity (not the paths) shows it.
    Overlap {
        what: &'static str,
        path: PathBuf,
        relation: Relation,
        other: &'static str,
        other_path: PathBuf,
        alias: bool,
        fix: String,
    },
    /// The work dir is on another filesystem than the upper dir.
    WorkNotBesideUpper {
        work: PathBuf,
        upper: PathBuf,
    },
    /// Something is already mounted at the mountpoint.
    AlreadyMounted {
        mountpoint: PathBuf,
        fs_type: String,
        source: String,
    },
    /// `umount` of a path where nothing is mounted.
    NotMounted(PathBuf),
    /// `umount` of another filesystem than stratafs (without --force).
    NotStratafs {
        path: PathBuf,
        fs_type: String,
        source: String,
    },
    /// `umount` of a volume, bind or tmpfs inside a union: the union is what to unmount.
    SubMountOfUnion {
        path: PathBuf,
        union: PathBuf,
    },
    /// The background daemon failed before the mount was ready; its own message, passed
    /// over the socket to the command that started it.
    Daemon(String),
    /// The background daemon exited without saying whether the mount is ready.
    DaemonGone,
    Volume(VolumeError),
    /// `diff`, `commit`, `layer` and `image` failures, worded by the image module.
    Image(ImageError),
    /// A system call or file operation failed: `context` says on what and doing what, `fix`
    /// (if any) what to do about it.
    Io {
        context: String,
        source: io::Error,
        fix: Option<&'static str>,
    },
}

impl Error {
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
            fix: None,
        }
    }

    pub fn io_with_fix(context: impl Into<String>, source: io::Error, fix: &'static str) -> Self {
        Error::Io {
            context: context.into(),
            source,
            fix: Some(fix),
        }
    }

    pub fn usage(text: impl Into<String>) -> Self {
        Error::Usage(text.into())
    }
}

/// Adds the path (or action) to an io::Error, so every message names what failed.
pub trait IoContext<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, Error>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, Error> {
        self.map_err(|e| Error::io(what(), e))
    }
}

fn show(path: &Path) -> std::path::Display<'_> {
    path.display()
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(text) | Error::Daemon(text) => f.write_str(text),
            Error::SubMountSpec {
                option,
                spec,
                problem,
            } => write!(f, "{option} {spec:?}: {problem}"),
            Error::Target { target, problem } => write!(f, "target {target:?}: {problem}"),
            Error::TargetTwice(target) => write!(
                f,
                "target {}: given twice (--volume, --bind or --tmpfs): one sub-mount per path",
                show(target)
            ),
            Error::Missing { what, path, fix } => {
                write!(f, "{what} {}: does not exist: {fix}", show(path))
            }
            Error::MissingDirs(missing) => {
                let list: Vec<String> = missing
                    .iter()
                    .map(|(what, p)| format!("{what} {}", show(p)))
                    .collect();
                let paths: Vec<String> = missing.iter().map(|(_, p)| show(p).to_string()).collect();
                write!(
                    f,
                    "{} directories do not exist: {}: create them first (mkdir -p {})",
                    missing.len(),
                    list.join(", "),
                    paths.join(" ")
                )
            }
            Error::NotADirectory { what, path, fix } => {
                write!(f, "{what} {}: is not a directory: {fix}", show(path))
            }
            Error::StaleMount(path) => write!(
                f,
                "the mount at {} is stale (its daemon is gone): run `stratafs umount {}` (or umount -l), then mount again",
                show(path),
                show(path)
            ),
            Error::Overlap {
                what,
                path,
                relation,
                other,
                other_path,
                alias,
                fix,
            } => {
                let alias = if *alias {
                    " (through another path, such as a bind mount)"
                } else {
                    ""
                };
                write!(
                    f,
                    "{what} {} {} {other} {}{alias}: {fix}",
                    show(path),
                    relation.words(),
                    show(other_path)
                )
            }
            Error::WorkNotBesideUpper { work, upper } => write!(
                f,
                "work dir {} is not on the same filesystem as upper dir {}: the atomic rename needs one filesystem",
                show(work),
                show(upper)
            ),
            Error::AlreadyMounted {
                mountpoint,
                fs_type,
                source,
            } => write!(
                f,
                "mountpoint {}: already mounted ({fs_type} from {source}): unmount it first (umount {})",
                show(mountpoint),
                show(mountpoint)
            ),
            Error::NotMounted(path) => write!(f, "{}: not mounted: nothing to do", show(path)),
            Error::NotStratafs {
                path,
                fs_type,
                source,
            } => write!(
                f,
                "{}: not a stratafs mount (type {fs_type}, source {source}): unmount it with umount, or pass --force",
                show(path)
            ),
            Error::SubMountOfUnion { path, union } => write!(
                f,
                "{}: a sub-mount of the stratafs mount at {}: run stratafs umount {}",
                show(path),
                show(union),
                show(union)
            ),
            Error::DaemonGone => f.write_str("the daemon exited before the mount was ready"),
            Error::Volume(e) => e.fmt(f),
            Error::Image(e) => e.fmt(f),
            Error::Io {
                context,
                source,
                fix,
            } => {
                write!(f, "{context}: {source}")?;
                match fix {
                    Some(fix) => write!(f, ": {fix}"),
                    None => Ok(()),
                }
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            Error::Volume(e) => Some(e),
            Error::Image(e) => Some(e),
            _ => None,
        }
    }
}

impl From<VolumeError> for Error {
    fn from(e: VolumeError) -> Error {
        Error::Volume(e)
    }
}

impl From<ImageError> for Error {
    fn from(e: ImageError) -> Error {
        Error::Image(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::c;

    #[test]
    fn io_errors_name_the_context_and_the_fix() {
        let e = Error::io_with_fix(
            "--log-file /x: cannot open",
            io::Error::from_raw_os_error(c::EACCES),
            "give a writable file path",
        );
        assert_eq!(
            e.to_string(),
            "--log-file /x: cannot open: Permission denied (os error 13): give a writable file path"
        );
        let e = Error::io("bind source /h", io::Error::from_raw_os_error(c::ENOENT));
        assert_eq!(
            e.to_string(),
            "bind source /h: No such file or directory (os error 2)"
        );
    }

    #[test]
    fn overlaps_say_both_directories_and_the_fix() {
        let e = Error::Overlap {
            what: "upper dir",
            path: "/u".into(),
            relation: Relation::Inside,
            other: "layer",
            other_path: "/l".into(),
            alias: true,
            fix: "keep the writable layer outside every image layer".into(),
        };
        assert_eq!(
            e.to_string(),
            "upper dir /u is inside layer /l (through another path, such as a bind mount): \
             keep the writable layer outside every image layer"
        );
    }

    #[test]
    fn missing_dirs_are_listed_with_one_mkdir() {
        let e = Error::MissingDirs(vec![("layer", "/a".into()), ("mountpoint", "/m".into())]);
        assert_eq!(
            e.to_string(),
            "2 directories do not exist: layer /a, mountpoint /m: create them first (mkdir -p /a /m)"
        );
    }
}
