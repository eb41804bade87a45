//! The in-memory listing of one merged lower directory (named apart from the kernel's
//! hard-link `index` dir in the work dir): built once from one readdir per layer that holds
//! the directory (whiteouts and opaque markers applied), then immutable, because lower layers
//! never change while mounted.
//!
//! Layout: one sorted array of fixed-size entries plus one byte arena for all names, so a
//! lookup is a binary search and a readdir is a walk with stable offsets.

use std::sync::Arc;

use crate::sys::c;
use crate::union::attr::Attr;

fn is_dir(a: &Attr) -> bool {
    a.mode & c::S_IFMT == c::S_IFDIR
}

/// One name, laid out flat (72 bytes, no padding): the compact stat of `Attr`, then the
/// name reference and the winning layer. A directory's merged layers are reached through
/// its name (see `DirListing`), so files, most of the entries, pay nothing for them.
#[derive(Clone, Copy, Debug)]
pub struct ListingEntry {
    host_ino: u64,
    size: u64,
    blocks: u64,
    atime: i64,
    mtime: i64,
    ctime: i64,
    uid: u32,
    gid: u32,
    nlink: u32,
    rdev: u32,
    /// Offset in the arena of the name's length byte, followed by the name.
    name_off: u32,
    /// st_mode: the file type and permission bits take 16 bits on Linux.
    mode: u16,
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
            mode: u32::from(self.mode),
            uid: self.uid,
            gid: self.gid,
            nlink: self.nlink,
            rdev: self.rdev,
        }
    }
}

/// The entries of one directory, sorted by name. `names` holds, for each entry, its name as a
/// length byte and the bytes; a directory's name is followed by a little-endian u32 offset
/// into `dir_layers`, where a count and then the layer slots lie.
#[derive(Default)]
pub struct DirListing {
    names: Box<[u8]>,
    entries: Box<[ListingEntry]>,
    dir_layers: Box<[u16]>,
}

/// Bytes after a directory's name: the offset of its layers in `dir_layers`.
const LAYERS_REF: usize = 4;

/// One entry of a shared listing, held beyond a borrow: a node reached through a lower
/// name points here for its name and attributes instead of copying them (the listing is
/// kept for the life of the mount anyway, and lower layers never change).
#[derive(Clone)]
pub struct ListedEntry {
    listing: Arc<DirListing>,
    index: u32,
}

impl ListedEntry {
    /// Entry `index` of `listing` (an index `position` returned).
    pub fn new(listing: &Arc<DirListing>, index: usize) -> ListedEntry {
        assert!(index < listing.len(), "entry {index} of {}", listing.len());
        ListedEntry {
            listing: listing.clone(),
            index: index as u32,
        }
    }

    pub fn entry(&self) -> &ListingEntry {
        self.listing.entry(self.index as usize)
    }

    pub fn name(&self) -> &[u8] {
        self.listing.name(self.entry())
    }

    pub fn attr(&self) -> Attr {
        self.entry().attr()
    }
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
        let name_bytes: usize = pending
            .iter()
            .map(|p| p.name.len() + 1 + if is_dir(&p.attr) { LAYERS_REF } else { 0 })
            .sum();
        let mut names = Vec::with_capacity(name_bytes);
        let mut dir_layers = Vec::new();
        let mut entries = Vec::with_capacity(pending.len());
        for p in pending {
            // Names longer than 255 bytes cannot exist on Linux filesystems.
            let name_len = p.name.len().min(255);
            let a = p.attr;
            debug_assert!(a.mode <= u32::from(u16::MAX), "st_mode {:o}", a.mode);
            debug_assert!(is_dir(&a) || p.dir_layers.is_empty());
            entries.push(ListingEntry {
                host_ino: a.host_ino,
                size: a.size,
                blocks: a.blocks,
                atime: a.atime,
                mtime: a.mtime,
                ctime: a.ctime,
                mode: a.mode as u16,
                uid: a.uid,
                gid: a.gid,
                nlink: a.nlink,
                rdev: a.rdev,
                name_off: names.len() as u32,
                layer: p.layer,
            });
            names.push(name_len as u8);
            names.extend_from_slice(&p.name[..name_len]);
            if is_dir(&a) {
                names.extend_from_slice(&(dir_layers.len() as u32).to_le_bytes());
                dir_layers.push(p.dir_layers.len() as u16);
                dir_layers.extend_from_slice(&p.dir_layers);
            }
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

    /// The lower layers merged under directory entry `e`, top first (empty for others).
    pub fn dir_layers(&self, e: &ListingEntry) -> &[u16] {
        if u32::from(e.mode) & c::S_IFMT != c::S_IFDIR {
            return &[];
        }
        let at = e.name_off as usize + 1 + self.names[e.name_off as usize] as usize;
        let off = u32::from_le_bytes(self.names[at..at + LAYERS_REF].try_into().expect("4 bytes"))
            as usize;
        let len = self.dir_layers[off] as usize;
        &self.dir_layers[off + 1..off + 1 + len]
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

    fn pending_dir(name: &str, layers: &[u16]) -> PendingEntry {
        PendingEntry {
            name: name.as_bytes().to_vec(),
            layer: layers[0],
            attr: Attr {
                mode: c::S_IFDIR | 0o755,
                ..Attr::default()
            },
            dir_layers: layers.to_vec(),
        }
    }

    fn pending_file(name: &str, layer: u16) -> PendingEntry {
        PendingEntry {
            name: name.as_bytes().to_vec(),
            layer,
            attr: Attr {
                mode: c::S_IFREG | 0o644,
                size: 7,
                host_ino: 42,
                ..Attr::default()
            },
            dir_layers: vec![],
        }
    }

    #[test]
    fn entries_are_sorted_and_found() {
        let idx = DirListing::build(vec![
            pending_dir("b", &[1, 0]),
            pending_file("a", 2),
            pending_dir("c", &[3, 2, 1]),
            pending_file("d", 4),
        ]);
        assert_eq!(idx.len(), 4);
        assert_eq!(idx.name(idx.entry(0)), b"a");
        assert_eq!(idx.find(b"c").unwrap().layer, 3);
        assert_eq!(idx.dir_layers(idx.find(b"b").unwrap()), &[1, 0]);
        assert_eq!(idx.dir_layers(idx.find(b"c").unwrap()), &[3, 2, 1]);
        assert!(idx.dir_layers(idx.find(b"a").unwrap()).is_empty());
        assert_eq!(idx.name(idx.find(b"d").unwrap()), b"d");
        assert!(idx.find(b"e").is_none());
    }

    /// What the packing keeps: every field of the stat, the name and the layers.
    #[test]
    fn entries_keep_the_whole_attr() {
        let attr = Attr {
            host_ino: u64::MAX - 1,
            size: 1 << 40,
            blocks: 1 << 33,
            atime: -5,
            mtime: i64::MAX,
            ctime: i64::MIN,
            mode: c::S_IFCHR | 0o7777,
            uid: u32::MAX,
            gid: 7,
            nlink: 3,
            rdev: 0x0501,
        };
        let idx = DirListing::build(vec![PendingEntry {
            name: vec![b'x'; 255],
            layer: 9,
            attr,
            dir_layers: vec![],
        }]);
        let e = idx.entry(0);
        assert_eq!(e.attr(), attr);
        assert_eq!(idx.name(e), &[b'x'; 255][..]);
        assert_eq!(e.layer, 9);
    }

    /// The design figure: at most 100 bytes per indexed name, names included, for a
    /// directory of typical 15-byte file names with a few subdirectories.
    #[test]
    fn memory_per_entry_stays_under_100_bytes() {
        assert!(std::mem::size_of::<ListingEntry>() <= 72);
        let n = 10_000;
        let entries: Vec<PendingEntry> = (0..n)
            .map(|i| match i % 10 {
                0 => pending_dir(&format!("dir-{i:06}.d"), &[2, 1]),
                _ => pending_file(&format!("file-{i:06}.txt"), 1),
            })
            .collect();
        let per_entry = DirListing::build(entries).heap_bytes() as f64 / n as f64;
        assert!(per_entry <= 100.0, "{per_entry} bytes per entry");
    }
}
