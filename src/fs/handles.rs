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

/// How many lower backing files are kept with no file open on them, at most. The kernel
/// holds an open file for each (a few hundred bytes, no fd of the daemon's); the kernel's
/// FORGET of the inode drops one sooner.
pub const KEPT_LOWER_MAX: usize = 65_536;

enum Backing<Id> {
    /// A lower file's backing id, kept across opens: lower data never changes, so the next
    /// read-only open of the inode reuses it with no system call. The entry holds one
    /// reference; every open handle holds another.
    Kept { id: Arc<Id>, last_use: u64 },
    /// An upper file's backing id, alive only while a handle holds it: a backing file kept
    /// past the last close would hold the space of an unlinked file.
    Live(Weak<Id>),
}

impl<Id> Backing<Id> {
    /// Some handle holds it (the kernel may be reading or writing through it).
    fn in_use(&self) -> bool {
        match self {
            Backing::Kept { id, .. } => Arc::strong_count(id) > 1,
            Backing::Live(id) => id.strong_count() > 0,
        }
    }
}

struct Backings<Id> {
    by_ino: HashMap<u64, Backing<Id>>,
    /// Lower entries in `by_ino`.
    kept: usize,
    /// Ticks of use, for dropping the least recently used kept entries first.
    clock: u64,
}

/// One backing id per inode at a time (the kernel refuses a second one for the same inode
/// while a file is open on it).
///
/// The kernel will happily write through a backing file that was registered read-only, so a
/// lower file's backing is never handed to a writer: the union moves a copied-up file with
/// live lower backing to a new inode instead (see `Union::open`). A kept lower backing that
/// no handle uses gives way to the upper one at once.
///
/// Generic over the id only so that its bookkeeping can be tested without a FUSE session.
pub struct BackingCache<Id = BackingId> {
    inner: Mutex<Backings<Id>>,
    kept_max: usize,
}

impl<Id> Default for BackingCache<Id> {
    fn default() -> Self {
        BackingCache::with_limit(KEPT_LOWER_MAX)
    }
}

impl<Id> BackingCache<Id> {
    /// A cache keeping at most `kept_max` lower backings no handle uses.
    pub fn with_limit(kept_max: usize) -> BackingCache<Id> {
        BackingCache {
            inner: Mutex::new(Backings {
                by_ino: HashMap::new(),
                kept: 0,
                clock: 0,
            }),
            kept_max,
        }
    }

    /// The kernel reads inode `ino`'s lower file through a backing id right now.
    pub fn live_lower(&self, ino: u64) -> bool {
        self.inner
            .lock()
            .by_ino
            .get(&ino)
            .is_some_and(|b| matches!(b, Backing::Kept { .. }) && b.in_use())
    }

    /// The kernel reads and writes inode `ino`'s upper file through a backing id right now:
    /// a shared mapping of it changes the file without a request reaching the daemon.
    pub fn live_upper(&self, ino: u64) -> bool {
        self.inner
            .lock()
            .by_ino
            .get(&ino)
            .is_some_and(|b| matches!(b, Backing::Live(_)) && b.in_use())
    }

    /// The kept lower backing id of `ino`, for a read-only open (None if there is none).
    pub fn kept_lower(&self, ino: u64) -> Option<Arc<Id>> {
        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        inner.clock += 1;
        match inner.by_ino.get_mut(&ino) {
            Some(Backing::Kept { id, last_use }) => {
                *last_use = inner.clock;
                Some(id.clone())
            }
            _ => None,
        }
    }

    /// The backing id of inode `ino`: the live or kept one, or a new one from `register`.
    /// EBUSY when one of the other kind (lower vs upper) is in use.
    pub fn get_or_register(
        &self,
        ino: u64,
        lower: bool,
        register: impl FnOnce() -> std::io::Result<Id>,
    ) -> std::io::Result<Arc<Id>> {
        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        inner.clock += 1;
        match inner.by_ino.get_mut(&ino) {
            Some(Backing::Kept { id, last_use }) if lower => {
                *last_use = inner.clock;
                return Ok(id.clone());
            }
            Some(Backing::Live(id)) if !lower => {
                if let Some(id) = id.upgrade() {
                    return Ok(id);
                }
            }
            Some(b) if b.in_use() => {
                return Err(std::io::Error::from_raw_os_error(Errno::EBUSY.code()));
            }
            _ => {}
        }
        // Nothing usable: a kept lower backing no handle uses goes (its object was copied
        // up), as does a dead upper one.
        if let Some(Backing::Kept { .. }) = inner.by_ino.remove(&ino) {
            inner.kept -= 1;
        }
        let id = Arc::new(register()?);
        let entry = if lower {
            inner.kept += 1;
            Backing::Kept {
                id: id.clone(),
                last_use: inner.clock,
            }
        } else {
            Backing::Live(Arc::downgrade(&id))
        };
        inner.by_ino.insert(ino, entry);
        if inner.kept > self.kept_max {
            inner.evict(self.kept_max);
        }
        Ok(id)
    }

    /// Drops the kept lower backing of `ino` (the kernel forgot the inode, or its data is no
    /// longer that lower file) unless a handle uses it: while one does, the entry must stay
    /// to tell a writer that the kernel reads the lower file (see `live_lower`); the next
    /// open or registration after the last release drops it.
    pub fn drop_kept(&self, ino: u64) {
        let mut inner = self.inner.lock();
        if let Some(b @ Backing::Kept { .. }) = inner.by_ino.get(&ino) {
            if !b.in_use() {
                inner.by_ino.remove(&ino);
                inner.kept -= 1;
            }
        }
    }

    /// How many lower backings are kept (in use or not).
    pub fn kept_count(&self) -> usize {
        self.inner.lock().kept
    }
}

impl<Id> Backings<Id> {
    /// Drops the least recently used kept entries no handle uses, down to 7/8 of `max`, so
    /// that eviction runs once per many registrations. Dead upper entries go too.
    fn evict(&mut self, max: usize) {
        self.by_ino
            .retain(|_, b| !matches!(b, Backing::Live(_)) || b.in_use());
        let target = max - max / 8;
        if self.kept <= target {
            return;
        }
        let mut idle: Vec<(u64, u64)> = self
            .by_ino
            .iter()
            .filter_map(|(ino, b)| match b {
                Backing::Kept { last_use, .. } if !b.in_use() => Some((*last_use, *ino)),
                _ => None,
            })
            .collect();
        let excess = (self.kept - target).min(idle.len());
        if excess < idle.len() {
            idle.select_nth_unstable(excess);
        }
        for (_, ino) in &idle[..excess] {
            self.by_ino.remove(ino);
        }
        self.kept -= excess;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn register(cache: &BackingCache<u32>, ino: u64, lower: bool) -> std::io::Result<Arc<u32>> {
        cache.get_or_register(ino, lower, || Ok(ino as u32))
    }

    #[test]
    fn lower_backing_is_kept_after_the_last_handle_goes() {
        let cache = BackingCache::<u32>::default();
        let id = register(&cache, 7, true).unwrap();
        assert!(cache.live_lower(7));
        drop(id);
        // Kept, but no longer live: a copy-up need not move the name to a new inode.
        assert!(!cache.live_lower(7));
        assert_eq!(cache.kept_lower(7).as_deref(), Some(&7));
        let again = cache.get_or_register(7, true, || panic!("registered twice"));
        assert_eq!(*again.unwrap(), 7);
    }

    #[test]
    fn upper_backing_dies_with_its_last_handle() {
        let cache = BackingCache::<u32>::default();
        let id = register(&cache, 7, false).unwrap();
        assert!(cache.live_upper(7));
        assert!(cache.kept_lower(7).is_none());
        drop(id);
        assert!(!cache.live_upper(7));
    }

    #[test]
    fn idle_kept_lower_gives_way_to_the_upper_object() {
        let cache = BackingCache::<u32>::default();
        drop(register(&cache, 7, true).unwrap());
        let upper = cache.get_or_register(7, false, || Ok(70)).unwrap();
        assert_eq!(*upper, 70);
        assert!(cache.kept_lower(7).is_none());
        assert_eq!(cache.kept_count(), 0);
    }

    #[test]
    fn kept_lower_in_use_refuses_the_upper_object() {
        let cache = BackingCache::<u32>::default();
        let reader = register(&cache, 7, true).unwrap();
        let err = cache.get_or_register(7, false, || Ok(70)).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(Errno::EBUSY.code()));
        drop(reader);
    }

    #[test]
    fn drop_kept_forgets_the_inode() {
        let cache = BackingCache::<u32>::default();
        drop(register(&cache, 7, true).unwrap());
        cache.drop_kept(7);
        assert!(cache.kept_lower(7).is_none());
        assert_eq!(cache.kept_count(), 0);
    }

    #[test]
    fn drop_kept_leaves_a_backing_in_use_live() {
        let cache = BackingCache::<u32>::default();
        let reader = register(&cache, 7, true).unwrap();
        cache.drop_kept(7);
        // A writer must still learn that the kernel reads the lower file.
        assert!(cache.live_lower(7));
        drop(reader);
        cache.drop_kept(7);
        assert!(!cache.live_lower(7));
        assert_eq!(cache.kept_count(), 0);
    }

    #[test]
    fn idle_kept_entries_are_bounded_least_recently_used_first() {
        let cache = BackingCache::<u32>::with_limit(16);
        let busy = register(&cache, 0, true).unwrap();
        for ino in 1..=15 {
            drop(register(&cache, ino, true).unwrap());
        }
        assert_eq!(cache.kept_count(), 16);
        // Used again: among the most recent.
        drop(cache.kept_lower(1));
        // One over the limit: down to 7/8 of it, the oldest idle ones first.
        drop(register(&cache, 16, true).unwrap());
        assert_eq!(cache.kept_count(), 14);
        for gone in 2..=4 {
            assert!(cache.kept_lower(gone).is_none(), "inode {gone} kept");
        }
        for kept in [0, 1, 5, 15, 16] {
            assert!(cache.kept_lower(kept).is_some(), "inode {kept} dropped");
        }
        drop(busy);
    }
}
