//! The in-memory listing of one merged lower directory (named apart from the kernel's
//! hard-link `index` dir in the work dir): built once from one readdir per layer that holds
//! the directory (whiteouts and opaque markers applied), then immutable, because lower layers
//! never change while mounted.
//!
//! Layout: one sorted array of fixed-size entries plus one byte arena for all names, so a
//! lookup is a binary search and a readdir is a walk with stable offsets.

use crate::union::attr::Attr;

/// One name, laid out flat (80 bytes, no padding): the compact stat of `Attr`, then the
/// name and layer references.
#[derive(Clone, Copy, Debug)]
pub struct ListingEntry {
    host_ino: u64,
    size: u64,
    blocks: u64,
    atime: i64,
    mtime: i64,
    ctime: i64,
    mode: u32,
    uid: u32,
    gid: u32,
    nlink: u32,
    rdev: u32,
    /// Offset in the arena of the name's length byte, followed by the name.
    name_off: u32,
    /// For directories: the range in `dir_layers` of the layers merged under this name.
    layers_off: u32,
    layers_len: u16,
    /// Slot of the layer whose object wins.
    pub layer: u16,
}

impl ListingEntry {
    pub fn attr(&self) -> Attr {
        Attr {
            host_ino: self.host_ino,
            size: self.size,
            blocks: self.blocks,
            atime: self.atime,
            mtime: self.mtime,
            ctime: self.ctime,
            mode: self.mode,
            uid: self.uid,
            gid: self.gid,
            nlink: self.nlink,
            rdev: self.rdev,
        }
    }
}

#[derive(Default)]
pub struct DirListing {
    names: Box<[u8]>,
    entries: Box<[ListingEntry]>,
    dir_layers: Box<[u16]>,
}

/// One entry as produced by the merge, before packing.
pub struct PendingEntry {
    pub name: Vec<u8>,
    pub layer: u16,
    pub attr: Attr,
    /// Lower layers holding a directory of this name, top first (empty for non-dirs); a
    /// redirect on one of them, read when the directory is reached, may change the list.
    pub dir_layers: Vec<u16>,
}

impl DirListing {
    pub fn build(mut pending: Vec<PendingEntry>) -> DirListing {
        pending.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        let name_bytes: usize = pending.iter().map(|p| p.name.len() + 1).sum();
        let mut names = Vec::with_capacity(name_bytes);
        let mut dir_layers = Vec::new();
        let mut entries = Vec::with_capacity(pending.len());
        for p in pending {
            // Names longer than 255 bytes cannot exist on Linux filesystems.
            let name_len = p.name.len().min(255);
            let a = p.attr;
            entries.push(ListingEntry {
                host_ino: a.host_ino,
                size: a.size,
                blocks: a.blocks,
                atime: a.atime,
                mtime: a.mtime,
                ctime: a.ctime,
                mode: a.mode,
                uid: a.uid,
                gid: a.gid,
                nlink: a.nlink,
                rdev: a.rdev,
                name_off: names.len() as u32,
                layer: p.layer,
                layers_off: dir_layers.len() as u32,
                layers_len: p.dir_layers.len() as u16,
            });
            names.push(name_len as u8);
            names.extend_from_slice(&p.name[..name_len]);
            dir_layers.extend_from_slice(&p.dir_layers);
        }
        DirListing {
            names: names.into(),
            entries: entries.into(),
            dir_layers: dir_layers.into(),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn entry(&self, i: usize) -> &ListingEntry {
        &self.entries[i]
    }

    pub fn name(&self, e: &ListingEntry) -> &[u8] {
        let start = e.name_off as usize + 1;
        &self.names[start..start + self.names[e.name_off as usize] as usize]
    }

    pub fn dir_layers(&self, e: &ListingEntry) -> &[u16] {
        &self.dir_layers[e.layers_off as usize..e.layers_off as usize + e.layers_len as usize]
    }

    pub fn find(&self, name: &[u8]) -> Option<&ListingEntry> {
        self.position(name).ok().map(|i| &self.entries[i])
    }

    /// Binary search: Ok(index) when present, Err(insertion point) otherwise.
    pub fn position(&self, name: &[u8]) -> Result<usize, usize> {
        self.entries.binary_search_by(|e| self.name(e).cmp(name))
    }

    /// Heap bytes held by this index (for the memory-per-entry design figure).
    pub fn heap_bytes(&self) -> usize {
        self.names.len()
            + self.entries.len() * std::mem::size_of::<ListingEntry>()
            + self.dir_layers.len() * 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(name: &str, layer: u16) -> PendingEntry {
        PendingEntry {
            name: name.as_bytes().to_vec(),
            layer,
            attr: Attr::default(),
            dir_layers: vec![layer, 0],
        }
    }

    #[test]
    fn entries_are_sorted_and_found() {
        let idx = DirListing::build(vec![pending("b", 1), pending("a", 2), pending("c", 3)]);
        assert_eq!(idx.len(), 3);
        assert_eq!(idx.name(idx.entry(0)), b"a");
        assert_eq!(idx.find(b"c").unwrap().layer, 3);
        assert_eq!(idx.dir_layers(idx.find(b"b").unwrap()), &[1, 0]);
        assert!(idx.find(b"d").is_none());
    }

    /// The design figure: at most 100 bytes per indexed name, names included, for a
    /// directory of typical 15-byte file names.
    #[test]
    fn memory_per_entry_stays_under_100_bytes() {
        assert_eq!(std::mem::size_of::<ListingEntry>(), 80);
        let n = 10_000;
        let files: Vec<PendingEntry> = (0..n)
            .map(|i| PendingEntry {
                dir_layers: vec![],
                ..pending(&format!("file-{i:06}.txt"), 1)
            })
            .collect();
        let per_entry = DirListing::build(files).heap_bytes() as f64 / n as f64;
        assert!(per_entry <= 100.0, "{per_entry} bytes per entry");
    }
}
