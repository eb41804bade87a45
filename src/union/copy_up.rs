//! Copy-up: bringing a lower object (and its parent directories) into the upper layer before
//! it changes. The object is prepared in the work dir and renamed into place, so a crash
//! leaves either the lower object or the complete upper copy visible, never a partial one.
//! Only the node's own copy-up lock is held while data is copied: other requests go on.

use std::io;
use std::os::fd::AsFd;
use std::sync::Arc;

use super::{errno, Union};
use crate::sys;
use crate::sys::c;
use crate::sys::ops;
use crate::union::attr::Kind;
use crate::union::copy_object::{self, CopyOptions};
use crate::union::inode::{Link, Node};

/// How much of a regular file's data a copy-up brings along.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Data {
    All,
    /// The caller truncates to zero right after (open O_TRUNC, truncate(0)).
    None,
    /// Only metadata changes (chmod, chown, utimes, xattrs): a metacopy is enough.
    Meta,
}

impl Union {
    /// Makes sure `node` exists in the upper layer, copying it (and missing parents) up.
    pub(super) fn ensure_upper(&self, node: &Arc<Node>, data: Data) -> io::Result<()> {
        self.ensure_upper_as(node, data, None)
    }

    /// `ensure_upper`, the copy going to `at` (one of the node's names) rather than to any
    /// live name: a hard-linked lower file about to lose the name `at` is copied up there,
    /// as the kernel does, so the index keeps its link count.
    pub(super) fn ensure_upper_as(
        &self,
        node: &Arc<Node>,
        data: Data,
        at: Option<Link>,
    ) -> io::Result<()> {
        if node.inner.read().upper {
            return self.complete_metacopy(node, data);
        }
        let upper = self.writable_upper()?;
        // The copy goes where a live name of the node is.
        let link = match at {
            Some(l) => l,
            None => node
                .inner
                .read()
                .any_link()
                .cloned()
                .ok_or(errno(c::ENOENT))?,
        };
        let parent = link.parent;
        self.ensure_upper(&parent, Data::All)?;

        let guard = node.copy_up.lock();
        if node.inner.read().upper {
            drop(guard);
            return self.complete_metacopy(node, data);
        }
        let lower = node.inner.read().lower.clone().ok_or(errno(c::EIO))?;
        let src = lower.open(&self.layers, c::O_PATH | c::O_NOFOLLOW)?;
        let parent_rel = self.upper_rel(&parent)?;
        let dest_dir = upper.open_dir(&parent_rel)?;
        let name = link.name;
        let name_c = sys::cstr(&name)?;
        // Like the kernel, a copy-up leaves the parent's times as they were: only the
        // user's own change may move them.
        let parent_times = sys::fstat(dest_dir.as_fd()).ok();
        let hard_linked = node.kind == Kind::File && node.inner.read().attr().nlink > 1;
        let index_entry = if hard_linked {
            crate::union::ovl::origin_value(src.as_fd())
                .ok()
                .and_then(|o| sys::cstr(crate::union::ovl::index_name(&o).as_bytes()).ok())
        } else {
            None
        };
        // Hard-linked files are copied whole: their copy is shared through the index.
        let as_metacopy =
            data == Data::Meta && node.kind == Kind::File && !hard_linked && self.format.metacopy;
        let indexed_copy = index_entry
            .as_ref()
            .filter(|idx| sys::stat_at(upper.index(), idx).is_ok());
        if let Some(idx) = indexed_copy {
            // Another name of this hard-linked file was copied up: this name joins that copy.
            ops::link_at(upper.index(), idx, dest_dir.as_fd(), &name_c)?;
            // The index link stood for this lower name; now the name has its own link.
            crate::union::ovl::adjust_nlink(upper.index(), self.format.ns, idx, -1);
        } else {
            // A lower metacopy file: its metadata is copied from it, its data from below.
            let data_src = match (node.kind, data) {
                (Kind::File, Data::All) => Some(
                    self.lower_with_data(node)?
                        .open_data(&self.layers, c::O_PATH | c::O_NOFOLLOW)?,
                ),
                _ => None,
            };
            let opts = CopyOptions {
                with_data: data != Data::None,
                metacopy: as_metacopy,
                fsync: upper.fsync,
                ns: self.format.ns,
                data_from: data_src.as_ref().map(|fd| fd.as_fd()),
            };
            copy_object::copy_up(src.as_fd(), upper.work(), dest_dir.as_fd(), &name_c, &opts)
                .map_err(|e| {
                    log::warn!(
                        "copy-up of {:?} failed: {e}",
                        String::from_utf8_lossy(&lower.rel)
                    );
                    e
                })?;
            if let Some(idx) = &index_entry {
                // Later lookups of the other names (also after a remount) find the copy here.
                match ops::link_at(dest_dir.as_fd(), &name_c, upper.index(), idx) {
                    Ok(()) => {
                        upper.mark_index_used();
                        self.record_merged_nlink(idx, node.inner.read().attr().nlink);
                    }
                    Err(e) => log::warn!("copy-up: cannot record the hard link in the index: {e}"),
                }
            }
        }

        if let Some(st) = parent_times {
            let _ = ops::utimens_at(
                dest_dir.as_fd(),
                c"",
                (st.st_atime, st.st_atime_nsec),
                (st.st_mtime, st.st_mtime_nsec),
            );
        }
        // A hard-linked copy is held open: its names may go independently from now on.
        let object = if hard_linked {
            let obj = sys::open_beneath(dest_dir.as_fd(), &name_c, c::O_PATH | c::O_NOFOLLOW, 0)?;
            Some(Arc::new(obj))
        } else {
            None
        };
        // Disk first, then memory: the parent now holds the name in its upper copy.
        {
            let mut inner = node.inner.write();
            inner.upper = true;
            inner.metacopy = indexed_copy.is_none() && as_metacopy;
            inner.object = object;
        }
        if let Ok(state) = self.dir_state(&parent) {
            state.write().set_present(&name, node.ino, node.kind);
        }
        // A directory's (empty) upper copy adds nothing to a loaded state: it stays valid.
        Ok(())
    }

    /// Writes the kernel's nlink marker on a new index entry: the union's link count (the
    /// lower file's) relative to the upper inode's, so that the kernel, reading this upper
    /// dir, neither counts the index link as a name nor takes the entry for an orphan once
    /// the copied name goes.
    fn record_merged_nlink(&self, idx: &std::ffi::CStr, lower_nlink: u32) {
        let Ok(upper) = self.upper() else { return };
        let Ok(st) = sys::stat_at(upper.index(), idx) else {
            return;
        };
        let delta = lower_nlink as i64 - st.st_nlink as i64;
        crate::union::ovl::adjust_nlink(upper.index(), self.format.ns, idx, delta);
    }

    /// Brings the data of a metacopy file up, in place (its metadata is already the upper
    /// inode's). The metacopy mark goes last, so a crash leaves a file that still reads the
    /// lower data, never a partial one.
    fn complete_metacopy(&self, node: &Arc<Node>, data: Data) -> io::Result<()> {
        if data == Data::Meta || !node.inner.read().metacopy {
            return Ok(());
        }
        let _guard = node.copy_up.lock();
        if !node.inner.read().metacopy {
            return Ok(());
        }
        let upper = self.writable_upper()?;
        let obj = self.upper_object(node)?;
        let target = ops::reopen(obj.as_fd(), c::O_WRONLY)?;
        if data == Data::All {
            let src = self
                .lower_with_data(node)?
                .open_data(&self.layers, c::O_RDONLY | c::O_NOFOLLOW)?;
            let size = sys::fstat(target.as_fd())?.st_size as u64;
            copy_object::copy_data(src.as_fd(), target.as_fd(), size)?;
            if upper.fsync {
                ops::fsync(target.as_fd(), false)?;
            }
        }
        crate::union::ovl::remove(obj.as_fd(), crate::union::ovl::Marker::Metacopy)?;
        node.inner.write().metacopy = false;
        Ok(())
    }
}
