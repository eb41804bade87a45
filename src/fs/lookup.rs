//! Name resolution against the index, and attributes.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use fuser::{Errno, FileAttr, INodeNo};

use super::{errno, StrataFs};
use crate::index::DirIndex;
use crate::inode::{lower_ino, LowerRef, Node, NodeInner};
use crate::layer::relpath;
use crate::merge;
use crate::sys;

impl StrataFs {
    /// The merged lower index of directory `dir`, built on first use.
    pub(super) fn dir_index(&self, dir: &Node) -> Result<Arc<DirIndex>, Errno> {
        if let Some(idx) = self.dirs.get(dir.ino) {
            return Ok(idx);
        }
        if dir.kind != fuser::FileType::Directory {
            return Err(Errno::ENOTDIR);
        }
        let lower = dir.inner.read().lower.clone();
        let idx = match lower {
            Some(l) => merge::merge_lower_dir(&self.layers, &l.rel, &l.dir_layers)
                .map_err(|e| errno(&e))?,
            None => DirIndex::default(),
        };
        // Two threads may race to build it; both results are equal, keep the first.
        Ok(self.dirs.get_or_insert(dir.ino, Arc::new(idx)))
    }

    /// Resolves `name` in `parent` and counts a kernel reference on the result.
    pub(super) fn do_lookup(
        &self,
        parent: INodeNo,
        name: &OsStr,
    ) -> Result<(FileAttr, Arc<Node>), Errno> {
        let parent_node = self.node(parent)?;
        let idx = self.dir_index(&parent_node)?;
        let name = name.as_bytes();
        let entry = idx.find(name).ok_or(Errno::ENOENT)?;
        let node = self.node_for_entry(&parent_node, &idx, entry, name);
        let attr = node.inner.read().attr.to_file_attr(node.ino);
        Ok((attr, node))
    }

    /// The node for an index entry (created if the kernel did not know it), with one more
    /// kernel reference.
    pub(super) fn node_for_entry(
        &self,
        parent: &Node,
        idx: &DirIndex,
        entry: &crate::index::IndexEntry,
        name: &[u8],
    ) -> Arc<Node> {
        let ino = lower_ino(entry.layer, entry.attr.host_ino);
        self.nodes.lookup_or_insert(ino, || {
            let parent_rel = parent
                .inner
                .read()
                .lower
                .as_ref()
                .map(|l| l.rel.clone())
                .unwrap_or_else(|| b".".to_vec());
            Node::new(
                ino,
                entry.attr.kind(),
                NodeInner {
                    parent: parent.ino,
                    name: name.to_vec(),
                    lower: Some(LowerRef {
                        slot: entry.layer,
                        rel: relpath::join(&parent_rel, name),
                        dir_layers: idx.dir_layers(entry).to_vec(),
                    }),
                    attr: entry.attr,
                },
            )
        })
    }

    pub(super) fn do_getattr(&self, ino: INodeNo) -> Result<FileAttr, Errno> {
        let node = self.node(ino)?;
        let inner = node.inner.read();
        Ok(inner.attr.to_file_attr(node.ino))
    }

    pub(super) fn do_readlink(&self, ino: INodeNo) -> Result<Vec<u8>, Errno> {
        let node = self.node(ino)?;
        let lower = node.inner.read().lower.clone().ok_or(Errno::EINVAL)?;
        let layer = &self.layers[lower.slot as usize];
        let rel = relpath::to_cstring(&lower.rel).map_err(|e| errno(&e))?;
        let fd = layer
            .open(&rel, libc::O_PATH | libc::O_NOFOLLOW)
            .map_err(|e| errno(&e))?;
        sys::readlink_at(std::os::fd::AsFd::as_fd(&fd), c"").map_err(|e| errno(&e))
    }

    /// An O_PATH fd of the node's object in its layer (never following a symlink).
    pub(super) fn open_lower_path(&self, node: &Node) -> Result<std::os::fd::OwnedFd, Errno> {
        let lower = node.inner.read().lower.clone().ok_or(Errno::ENOENT)?;
        let layer = &self.layers[lower.slot as usize];
        let rel = relpath::to_cstring(&lower.rel).map_err(|e| errno(&e))?;
        layer
            .open(&rel, libc::O_PATH | libc::O_NOFOLLOW)
            .map_err(|e| errno(&e))
    }
}
