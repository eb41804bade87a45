//! What can go wrong reading or writing an archive, always naming the entry concerned.

use std::fmt;
use std::io;

#[derive(Debug)]
pub enum ArchiveError {
    /// The archive asks for something an extraction never does (a name outside the
    /// destination, a write through a symlink, a hard link to an outside name...).
    Refused { entry: String, reason: String },
    /// A system call failed on one entry (`action` says what was being done).
    Io {
        entry: String,
        action: String,
        source: io::Error,
    },
    /// The input is not a readable tar stream (truncated, corrupt, or a read error).
    Read(io::Error),
    /// The output could not be written (full disk, closed pipe).
    Write(io::Error),
}

impl ArchiveError {
    pub fn refused(entry: &[u8], reason: impl Into<String>) -> Self {
        ArchiveError::Refused {
            entry: show(entry),
            reason: reason.into(),
        }
    }

    pub fn io(entry: &[u8], action: impl Into<String>, source: io::Error) -> Self {
        ArchiveError::Io {
            entry: show(entry),
            action: action.into(),
            source,
        }
    }
}

/// An entry name for a message (names are bytes; invalid UTF-8 is shown replaced).
pub fn show(name: &[u8]) -> String {
    if name.is_empty() {
        ".".into()
    } else {
        String::from_utf8_lossy(name).into_owned()
    }
}

impl fmt::Display for ArchiveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArchiveError::Refused { entry, reason } => {
                write!(f, "archive entry {entry:?} refused: {reason}")
            }
            ArchiveError::Io {
                entry,
                action,
                source,
            } => write!(f, "{entry:?}: cannot {action}: {source}"),
            ArchiveError::Read(e) => write!(
                f,
                "cannot read the archive: {e} (it must be an uncompressed tar stream)"
            ),
            ArchiveError::Write(e) => write!(f, "cannot write the archive: {e}"),
        }
    }
}

impl std::error::Error for ArchiveError {}
