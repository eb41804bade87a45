//! The in-memory index of one merged lower directory: built once from one readdir per layer
//! that holds the directory (whiteouts and opaque markers applied), then immutable, because
//! lower layers never change while mounted.
//!
//! Layout: one sorted array of fixed-size entries plus one byte arena for all names, so a
//! lookup is a binary search and a readdir is a walk with stable offsets.

use crate::attr::Attr;

#[derive(Clone, Copy, Debug)]
pub struct IndexEntry {
    name_off: u32,
    name_len: u8,
    /// Slot of the layer whose object wins.
    pub layer: u16,
    /// For directories: the range in `dir_layers` of the layers merged under this name.
    layers_off: u32,
    layers_len: u16,
    pub attr: Attr,
}

#[derive(Default)]
pub struct DirIndex {
    names: Box<[u8]>,
    entries: Box<[IndexEntry]>,
    dir_layers: Box<[u16]>,
}

/// One entry as produced by the merge, before packing.
pub struct PendingEntry {
    pub name: Vec<u8>,
    pub layer: u16,
    pub attr: Attr,
    /// Lower layers merged under this directory name, top first (empty for non-dirs).
    pub dir_layers: Vec<u16>,
}

impl DirIndex {
    pub fn build(mut pending: Vec<PendingEntry>) -> DirIndex {
        pending.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        let name_bytes: usize = pending.iter().map(|p| p.name.len()).sum();
        let mut names = Vec::with_capacity(name_bytes);
        let mut dir_layers = Vec::new();
        let mut entries = Vec::with_capacity(pending.len());
        for p in pending {
            // Names longer than 255 bytes cannot exist on Linux filesystems.
            let name_len = p.name.len().min(255);
            entries.push(IndexEntry {
                name_off: names.len() as u32,
                name_len: name_len as u8,
                layer: p.layer,
                layers_off: dir_layers.len() as u32,
                layers_len: p.dir_layers.len() as u16,
                attr: p.attr,
            });
            names.extend_from_slice(&p.name[..name_len]);
            dir_layers.extend_from_slice(&p.dir_layers);
        }
        DirIndex {
            names: names.into(),
            entries: entries.into(),
            dir_layers: dir_layers.into(),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn entry(&self, i: usize) -> &IndexEntry {
        &self.entries[i]
    }

    pub fn name(&self, e: &IndexEntry) -> &[u8] {
        &self.names[e.name_off as usize..e.name_off as usize + e.name_len as usize]
    }

    pub fn dir_layers(&self, e: &IndexEntry) -> &[u16] {
        &self.dir_layers[e.layers_off as usize..e.layers_off as usize + e.layers_len as usize]
    }

    pub fn find(&self, name: &[u8]) -> Option<&IndexEntry> {
        self.position(name).ok().map(|i| &self.entries[i])
    }

    /// Binary search: Ok(index) when present, Err(insertion point) otherwise.
    pub fn position(&self, name: &[u8]) -> Result<usize, usize> {
        self.entries.binary_search_by(|e| self.name(e).cmp(name))
    }

    /// Heap bytes held by this index (for the memory-per-entry design figure).
    pub fn heap_bytes(&self) -> usize {
        self.names.len()
            + self.entries.len() * std::mem::size_of::<IndexEntry>()
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
        let idx = DirIndex::build(vec![pending("b", 1), pending("a", 2), pending("c", 3)]);
        assert_eq!(idx.len(), 3);
        assert_eq!(idx.name(idx.entry(0)), b"a");
        assert_eq!(idx.find(b"c").unwrap().layer, 3);
        assert_eq!(idx.dir_layers(idx.find(b"b").unwrap()), &[1, 0]);
        assert!(idx.find(b"d").is_none());
    }

    #[test]
    fn entry_stays_small() {
        assert!(
            std::mem::size_of::<IndexEntry>() <= 88,
            "{}",
            std::mem::size_of::<IndexEntry>()
        );
    }
}
