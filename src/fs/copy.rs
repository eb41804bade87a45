//! Copy-up: bringing a lower object (and its parent directories) into the upper layer before
//! it changes. The object is prepared in the work dir and renamed into place, so a crash
//! leaves either the lower object or the complete upper copy visible, never a partial one.
//! Only the node's own copy-up lock is held while data is copied: other requests go on.

use std::os::fd::AsFd;
use std::sync::Arc;

use fuser::{Errno, FileType};

use super::{errno, StrataFs};
use crate::copyup::{self, CopyOptions};
use crate::inode::Node;
use crate::layer::relpath;
use crate::sys;
use crate::sys::ops;

/// How much of a regular file's data a copy-up brings along.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Data {
    All,
    /// The caller truncates to zero right after (open O_TRUNC, truncate(0)).
    None,
    /// Only metadata changes (chmod, chown, utimes, xattrs): a metacopy is enough.
    Meta,
}

impl StrataFs {
    /// Makes sure `node` exists in the upper layer, copying it (and missing parents) up.
    pub(super) fn ensure_upper(&self, node: &Arc<Node>, data: Data) -> Result<(), Errno> {
        if node.inner.read().upper {
            return self.complete_metacopy(node, data);
        }
        let upper = self.writable_upper()?;
        let parent = node.inner.read().parent.clone().ok_or(Errno::EIO)?;
        self.ensure_upper(&parent, Data::All)?;

        let guard = node.copy_up.lock();
        if node.inner.read().upper {
            drop(guard);
            return self.complete_metacopy(node, data);
        }
        let lower = node.inner.read().lower.clone().ok_or(Errno::EIO)?;
        let layer = &self.layers[lower.slot as usize];
        let src_rel = relpath::to_cstring(&lower.rel).map_err(|e| errno(&e))?;
        let src = layer
            .open(&src_rel, libc::O_PATH | libc::O_NOFOLLOW)
            .map_err(|e| errno(&e))?;
        let parent_rel = self.upper_rel(&parent)?;
        let dest_dir = upper.open_dir(&parent_rel).map_err(|e| errno(&e))?;
        let name = node.inner.read().name.clone();
        let name_c = sys::cstr(&name).map_err(|e| errno(&e))?;
        // Like the kernel, a copy-up leaves the parent's times as they were: only the
        // user's own change may move them.
        let parent_times = sys::fstat(dest_dir.as_fd()).ok();
        let hard_linked = node.kind == FileType::RegularFile && node.inner.read().attr.nlink > 1;
        let index_entry = if hard_linked {
            crate::ovl::origin_value(src.as_fd())
                .ok()
                .and_then(|o| sys::cstr(crate::ovl::index_name(&o).as_bytes()).ok())
        } else {
            None
        };
        // Hard-linked files are copied whole: their copy is shared through the index.
        let as_metacopy = data == Data::Meta
            && node.kind == FileType::RegularFile
            && !hard_linked
            && self.format.metacopy;
        let indexed_copy = index_entry
            .as_ref()
            .filter(|idx| sys::stat_at(upper.index(), idx).is_ok());
        if let Some(idx) = indexed_copy {
            // Another name of this hard-linked file was copied up: this name joins that copy.
            ops::link_at(upper.index(), idx, dest_dir.as_fd(), &name_c).map_err(|e| errno(&e))?;
            // The index link stood for this lower name; now the name has its own link.
            crate::ovl::adjust_nlink(upper.index(), self.format.ns, idx, -1);
        } else {
            let opts = CopyOptions {
                with_data: data != Data::None,
                metacopy: as_metacopy,
                fsync: upper.fsync,
                ns: self.format.ns,
            };
            copyup::copy_up(src.as_fd(), upper.work(), dest_dir.as_fd(), &name_c, &opts).map_err(
                |e| {
                    log::warn!(
                        "copy-up of {:?} failed: {e}",
                        String::from_utf8_lossy(&lower.rel)
                    );
                    errno(&e)
                },
            )?;
            if let Some(idx) = &index_entry {
                // Later lookups of the other names (also after a remount) find the copy here.
                match ops::link_at(dest_dir.as_fd(), &name_c, upper.index(), idx) {
                    Ok(()) => upper.mark_index_used(),
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
        // Disk first, then memory: the parent now holds the name in its upper copy.
        {
            let mut inner = node.inner.write();
            inner.upper = true;
            inner.metacopy = indexed_copy.is_none() && as_metacopy;
        }
        if let Ok(state) = self.dir_state(&parent) {
            state.write().set_present(&name, node.ino, node.kind);
        }
        if node.kind == FileType::Directory {
            // The (empty) upper copy adds nothing to a loaded state: it stays valid.
        }
        Ok(())
    }

    /// Brings the data of a metacopy file up, in place (its metadata is already the upper
    /// inode's). The metacopy mark goes last, so a crash leaves a file that still reads the
    /// lower data, never a partial one.
    fn complete_metacopy(&self, node: &Arc<Node>, data: Data) -> Result<(), Errno> {
        if data == Data::Meta || !node.inner.read().metacopy {
            return Ok(());
        }
        let _guard = node.copy_up.lock();
        if !node.inner.read().metacopy {
            return Ok(());
        }
        let upper = self.writable_upper()?;
        let rel = self.upper_rel(node)?;
        let rel_c = sys::cstr(&rel).map_err(|e| errno(&e))?;
        let target = sys::open_beneath(upper.root(), &rel_c, libc::O_WRONLY | libc::O_NOFOLLOW, 0)
            .map_err(|e| errno(&e))?;
        if data == Data::All {
            let lower = node.inner.read().lower.clone().ok_or(Errno::EIO)?;
            let layer = &self.layers[lower.slot as usize];
            let src_rel = relpath::to_cstring(&lower.rel).map_err(|e| errno(&e))?;
            let src = layer
                .open(&src_rel, libc::O_RDONLY | libc::O_NOFOLLOW)
                .map_err(|e| errno(&e))?;
            let size = sys::fstat(target.as_fd()).map_err(|e| errno(&e))?.st_size as u64;
            copyup::copy_data(src.as_fd(), target.as_fd(), size).map_err(|e| errno(&e))?;
            if upper.fsync {
                ops::fsync(target.as_fd(), false).map_err(|e| errno(&e))?;
            }
        }
        let obj = upper.open_path(&rel).map_err(|e| errno(&e))?;
        crate::ovl::remove(obj.as_fd(), crate::ovl::Marker::Metacopy).map_err(|e| errno(&e))?;
        node.inner.write().metacopy = false;
        Ok(())
    }
}
