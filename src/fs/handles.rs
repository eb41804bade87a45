//! The kernel's file handles: one typed table for open files and one for open directories,
//! and the passthrough backing ids of open files.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use fuser::{BackingId, Errno};
use parking_lot::Mutex;

use crate::union::sharded::ShardedMap;
use crate::union::{DirSnapshot, OpenFile};

/// Open handles of one kind by handle number.
pub struct HandleTable<T> {
    map: ShardedMap<Arc<T>>,
    next: AtomicU64,
}

impl<T> Default for HandleTable<T> {
    fn default() -> Self {
        HandleTable {
            map: ShardedMap::default(),
            next: AtomicU64::new(1),
        }
    }
}

impl<T> HandleTable<T> {
    /// Stores `value` under a new handle number.
    pub fn insert(&self, value: T) -> u64 {
        let fh = self.next.fetch_add(1, Ordering::Relaxed);
        self.map.insert(fh, Arc::new(value));
        fh
    }

    /// The handle `fh`; EBADF when there is no such open handle.
    pub fn get(&self, fh: u64) -> Result<Arc<T>, Errno> {
        self.map.get(fh).ok_or(Errno::EBADF)
    }

    /// Puts `value` in place of what handle `fh` held.
    pub fn replace(&self, fh: u64, value: T) -> Arc<T> {
        let value = Arc::new(value);
        self.map.insert(fh, value.clone());
        value
    }

    pub fn remove(&self, fh: u64) {
        self.map.remove(fh);
    }
}

/// An open file.
pub struct OpenFileHandle {
    pub file: OpenFile,
    /// Keeps the kernel's backing id alive until release.
    pub _backing: Option<Arc<BackingId>>,
}

/// An open directory. Reading from the start again (rewinddir) takes a new snapshot, as
/// POSIX requires.
pub struct OpenDirHandle {
    pub snapshot: DirSnapshot,
    /// A read has been served from it: a later read from offset 0 is a rewind.
    pub served: AtomicBool,
}

struct Backing {
    id: Weak<BackingId>,
    /// Registered from a lower-layer file (read-only data).
    lower: bool,
}

/// One backing id per inode at a time (the kernel refuses a second one for the same inode).
///
/// The kernel will happily write through a backing file that was registered read-only, so a
/// lower file's backing is never handed to a writer: the union moves a copied-up file with
/// live lower backing to a new inode instead (see `Union::open`).
#[derive(Default)]
pub struct BackingCache {
    by_ino: Mutex<HashMap<u64, Backing>>,
}

impl BackingCache {
    /// The kernel reads inode `ino`'s lower file through a backing id right now.
    pub fn live_lower(&self, ino: u64) -> bool {
        self.by_ino
            .lock()
            .get(&ino)
            .is_some_and(|b| b.lower && b.id.strong_count() > 0)
    }

    /// The kernel reads and writes inode `ino`'s upper file through a backing id right now:
    /// a shared mapping of it changes the file without a request reaching the daemon.
    pub fn live_upper(&self, ino: u64) -> bool {
        self.by_ino
            .lock()
            .get(&ino)
            .is_some_and(|b| !b.lower && b.id.strong_count() > 0)
    }

    /// The backing id of inode `ino`: the live one, or a new one from `register`. EBUSY when
    /// the live one is of the other kind (lower vs upper).
    pub fn get_or_register(
        &self,
        ino: u64,
        lower: bool,
        register: impl FnOnce() -> std::io::Result<BackingId>,
    ) -> std::io::Result<Arc<BackingId>> {
        let mut map = self.by_ino.lock();
        if let Some(b) = map.get(&ino) {
            if let Some(id) = b.id.upgrade() {
                if b.lower == lower {
                    return Ok(id);
                }
                return Err(std::io::Error::from_raw_os_error(Errno::EBUSY.code()));
            }
        }
        let id = Arc::new(register()?);
        map.insert(
            ino,
            Backing {
                id: Arc::downgrade(&id),
                lower,
            },
        );
        Ok(id)
    }
}
