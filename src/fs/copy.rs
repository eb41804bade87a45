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

/// How much of a regular file's data a copy-up brings along.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Data {
    All,
    /// The caller truncates to zero right after (open O_TRUNC, truncate(0)).
    None,
}

impl StrataFs {
    /// Makes sure `node` exists in the upper layer, copying it (and missing parents) up.
    pub(super) fn ensure_upper(&self, node: &Arc<Node>, data: Data) -> Result<(), Errno> {
        if node.inner.read().upper {
            return Ok(());
        }
        let upper = self.writable_upper()?;
        let parent = node.inner.read().parent.clone().ok_or(Errno::EIO)?;
        self.ensure_upper(&parent, Data::All)?;

        let _guard = node.copy_up.lock();
        if node.inner.read().upper {
            return Ok(());
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
        let opts = CopyOptions {
            with_data: data == Data::All,
            fsync: upper.fsync,
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
        upper.sync_dir(dest_dir.as_fd());

        // Disk first, then memory: the parent now holds the name in its upper copy.
        node.inner.write().upper = true;
        if let Ok(state) = self.dir_state(&parent) {
            state.write().set_present(&name, node.ino, node.kind);
        }
        if node.kind == FileType::Directory {
            // The (empty) upper copy adds nothing to a loaded state: it stays valid.
        }
        Ok(())
    }
}
