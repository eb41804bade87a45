//! What can go wrong with a volume, worded for the person at the command line.

use std::fmt;
use std::io;
use std::path::PathBuf;

use super::name::NAME_RULE;

#[derive(Debug)]
pub enum VolumeError {
    /// The name breaks the naming rule; `reason` says which part.
    InvalidName {
        name: String,
        reason: String,
    },
    NotFound(String),
    /// Live mounts use the volume (their mountpoints).
    InUse {
        name: String,
        mounts: Vec<PathBuf>,
    },
    /// The volume's directory is not something stratafs will touch (symlink, file, no `_data`).
    Damaged {
        name: String,
        problem: String,
    },
    /// A bad argument other than a name (filter, label, mountpoint).
    Invalid(String),
    Io {
        context: String,
        source: io::Error,
    },
}

pub type Result<T> = std::result::Result<T, VolumeError>;

impl VolumeError {
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        VolumeError::Io {
            context: context.into(),
            source,
        }
    }
}

/// Adds the path (or action) to an io::Error, so every message names what failed.
pub trait IoContext<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| VolumeError::io(what(), e))
    }
}

impl fmt::Display for VolumeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VolumeError::InvalidName { name, reason } => {
                write!(f, "invalid volume name {name:?}: {reason}; {NAME_RULE}")
            }
            VolumeError::NotFound(name) => write!(
                f,
                "no such volume: {name} (stratafs volume ls lists the volumes)"
            ),
            VolumeError::InUse { name, mounts } => {
                let list: Vec<String> = mounts.iter().map(|m| m.display().to_string()).collect();
                write!(
                    f,
                    "volume {name} is in use by the mount at {}: unmount it first (stratafs umount {})",
                    list.join(", "),
                    list.first().map(String::as_str).unwrap_or("MOUNTPOINT")
                )
            }
            VolumeError::Damaged { name, problem } => write!(f, "volume {name}: {problem}"),
            VolumeError::Invalid(msg) => f.write_str(msg),
            VolumeError::Io { context, source } => write!(f, "{context}: {source}"),
        }
    }
}

impl std::error::Error for VolumeError {}

impl From<VolumeError> for String {
    fn from(e: VolumeError) -> String {
        e.to_string()
    }
}
