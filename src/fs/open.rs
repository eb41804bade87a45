//! Open files: their handles, passthrough backing files, and how long the kernel may keep the
//! attributes of a file open for writing.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use fuser::{BackingId, Errno, FileHandle, INodeNo};

use super::handles::OpenFileHandle;
use super::{StrataFs, TTL};
use crate::union::{read_only_open, OpenFile};

impl StrataFs {
    /// How long the kernel may keep the attributes of `ino`. Not at all while a passthrough
    /// file of its upper object is open: a write through a shared mapping changes the upper
    /// file's times and size with no request to the daemon (kernel overlayfs stats the real
    /// file every time), so each stat must ask.
    pub(super) fn attr_ttl(&self, ino: u64) -> Duration {
        if self.backing.live_upper(ino) {
            Duration::ZERO
        } else {
            TTL
        }
    }

    /// After a passthrough open of `ino`'s upper file for writing: the attributes the kernel
    /// cached before (with the long TTL) must not answer the next stat.
    pub(super) fn forget_cached_attr(&self, ino: u64) {
        if let Some(n) = self.notifier.get() {
            // Offset -1: attributes only, the page cache stays.
            if let Err(e) = n.inval_inode(INodeNo(ino), -1, 0) {
                log::debug!("inode {ino}: cannot drop the kernel's cached attributes: {e}");
            }
        }
    }

    /// Stores an open file under a new handle, with a passthrough backing id when the kernel
    /// offers passthrough; returns the handle and the backing id to reply with.
    pub(super) fn register_open_file(
        &self,
        ino: u64,
        file: OpenFile,
        lower: bool,
        register: impl FnOnce(&std::fs::File) -> std::io::Result<BackingId>,
    ) -> (u64, Option<Arc<BackingId>>) {
        let backing = if self.passthrough.load(Ordering::Relaxed) {
            match self
                .backing
                .get_or_register(ino, lower, || register(file.as_file()?))
            {
                Ok(b) => Some(b),
                // The kernel wants CAP_SYS_ADMIN in the initial user namespace for a backing
                // file: without it (a user namespace, a plain user) every open would fail the
                // same way, so the mount stops asking.
                Err(e) if Errno::from_i32(e.raw_os_error().unwrap_or(0)) == Errno::EPERM => {
                    if self.passthrough.swap(false, Ordering::Relaxed) {
                        log::info!(
                            "passthrough unavailable: the kernel refused a backing file ({e}; it \
                             needs CAP_SYS_ADMIN in the initial user namespace): reads and \
                             writes go through the daemon"
                        );
                    }
                    None
                }
                Err(e) => {
                    log::debug!("passthrough unavailable for inode {ino}: {e}");
                    None
                }
            }
        } else {
            None
        };
        if backing.is_none() {
            if let Err(e) = file.for_daemon_io() {
                log::warn!("inode {ino}: cannot turn O_DIRECT off for daemon I/O: {e}");
            }
        }
        let fh = self.files.insert(OpenFileHandle {
            file,
            _backing: backing.clone(),
        });
        (fh, backing)
    }

    /// A read-only open of `ino` served from its kept lower backing, with no system call:
    /// the handle and the backing id to reply with. None when there is nothing kept or the
    /// inode's data is no longer that lower file (then the kept backing goes).
    ///
    /// The OPEN request itself stays: the backing id reaches the kernel only in an open
    /// reply (FUSE_NO_OPEN_SUPPORT would send every read through the daemon), and the
    /// kernel fails a passthrough open that also asks for FOPEN_KEEP_CACHE (EIO).
    pub(super) fn open_kept(
        &self,
        ino: u64,
        flags: i32,
    ) -> std::io::Result<Option<(u64, Arc<BackingId>)>> {
        if !read_only_open(flags) || !self.passthrough.load(Ordering::Relaxed) {
            return Ok(None);
        }
        // Taken before the union looks at the node: a writer copying the file up meanwhile
        // sees the backing in use and moves the name to a new inode (see `Union::open`).
        let Some(backing) = self.backing.kept_lower(ino) else {
            return Ok(None);
        };
        let Some(file) = self.union.open_lower_deferred(ino, flags)? else {
            drop(backing);
            self.backing.drop_kept(ino);
            return Ok(None);
        };
        let fh = self.files.insert(OpenFileHandle {
            file,
            _backing: Some(backing.clone()),
        });
        Ok(Some((fh, backing)))
    }

    /// The open file of handle `fh`, for calls that may come with one (getattr, setattr).
    pub(super) fn open_file(&self, fh: Option<FileHandle>) -> Option<Arc<OpenFileHandle>> {
        fh.and_then(|fh| self.files.get(fh.0).ok())
    }
}
