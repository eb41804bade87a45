//! The listing of an open directory: a snapshot, sorted by name, so offsets stay stable for
//! the life of the handle (telldir/seekdir work).

use std::io;
use std::sync::Arc;

use super::Union;
use crate::union::attr::Kind;
use crate::union::dirstate::{DirState, ListEntry};
use crate::union::inode::lower_ino;
use crate::union::listing::DirListing;

/// What an open directory lists: the lower index itself when the upper layer adds nothing
/// (no copy), else a merged listing.
pub struct DirSnapshot {
    lower: Arc<DirListing>,
    merged: Option<Vec<ListEntry>>,
}

impl DirSnapshot {
    fn of(state: &DirState) -> DirSnapshot {
        DirSnapshot {
            lower: state.lower.clone(),
            merged: state.listing(),
        }
    }

    pub fn len(&self) -> usize {
        self.merged.as_ref().map_or(self.lower.len(), Vec::len)
    }

    /// (name, ino, kind) of entry i.
    pub fn get(&self, i: usize) -> (&[u8], u64, Kind) {
        let lower_entry = |j: usize| {
            let e = self.lower.entry(j);
            (
                self.lower.name(e),
                lower_ino(e.layer, e.attr().host_ino),
                e.attr().kind(),
            )
        };
        match &self.merged {
            None => lower_entry(i),
            Some(list) => match &list[i] {
                ListEntry::Lower(j) => lower_entry(*j),
                ListEntry::Upper { name, ino, kind } => (name, *ino, *kind),
            },
        }
    }
}

impl Union {
    /// The names directory `ino` holds now (without "." and "..").
    pub fn list_dir(&self, ino: u64) -> io::Result<DirSnapshot> {
        let node = self.node(ino)?;
        let state = self.dir_state(&node)?;
        let snapshot = DirSnapshot::of(&state.read());
        Ok(snapshot)
    }
}
