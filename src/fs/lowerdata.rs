//! Where the data of a node's lower file lies, looked at on first need (open, copy-up) rather
//! than at lookup: only a file from a layer that was once an upper dir can be a metacopy, and
//! the check costs a getxattr that most lookups never need.

use fuser::{Errno, FileType};

use super::{errno, StrataFs};
use crate::inode::{LowerRef, Node};

impl StrataFs {
    /// The node's lower reference with its data location known (looked at once, then kept).
    pub(super) fn lower_with_data(&self, node: &Node) -> Result<LowerRef, Errno> {
        let lower = node.inner.read().lower.clone().ok_or(Errno::ENOENT)?;
        if node.kind != FileType::RegularFile || lower.data.is_some() {
            return Ok(lower);
        }
        let data = crate::lowerwalk::lower_data(&self.layers, &lower);
        if data == crate::inode::LowerData::Missing {
            log::warn!(
                "{:?}: metacopy file whose data no lower layer holds",
                String::from_utf8_lossy(&lower.rel)
            );
        }
        let mut inner = node.inner.write();
        if let Some(l) = inner.lower.as_mut().filter(|l| l.rel == lower.rel) {
            l.data = Some(data.clone());
        }
        Ok(LowerRef {
            data: Some(data),
            ..lower
        })
    }

    /// The data source of the node's lower file: (layer, path); EIO when it is gone.
    pub(super) fn lower_data_source(&self, node: &Node) -> Result<(u16, Vec<u8>), Errno> {
        let lower = self.lower_with_data(node)?;
        let (slot, path) = lower.data_source().map_err(|e| errno(&e))?;
        Ok((slot, path.to_vec()))
    }
}
