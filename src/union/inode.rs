//! Inode numbers and the table of inodes the kernel knows about.
//!
//! Numbering (FUSE uses the node id as st_ino, so it must be unique and is user-visible):
//! `ino = tag << 48 | host_ino`, where tag = layer slot + 1 for an object that comes from a lower
//! layer (slot 0 = bottom layer) and `UPPER_TAG` for an object created in the upper dir. A merged
//! directory takes the number of its topmost lower copy. The numbers therefore depend only on the
//! layer order and the layers' own inode numbers: stable across remounts, and readdir can
//! compute d_ino without a lookup. Inode 1 is the merged root.
//!
//! Host inode numbers of 2^48 and more do not fit (ext4 and xfs stay below; a layer on FUSE,
//! on overlayfs with xino, or on another stratafs does not): such an object gets a number
//! allocated once per (tag, host inode) from the range tag 0 leaves free, for the life of the
//! daemon, as the kernel's xino falls back to non-persistent numbers when its bits run out. So
//! two objects never share a number (folding the high bits into 48 once made stacked layers
//! read each other's files), at the price of numbers that change across remounts for those
//! objects only.

use std::collections::HashMap;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};

use parking_lot::{Mutex, RwLock};

use crate::sys::c;
use crate::union::attr::{Attr, Kind};
use crate::union::layer::{relpath, Layer};
use crate::union::listing::ListedEntry;
use crate::union::sharded::ShardedMap;

pub const ROOT_INO: u64 = 1;
pub const UPPER_TAG: u64 = 0xFFFF;
const HOST_BITS: u32 = 48;
const HOST_MASK: u64 = (1 << HOST_BITS) - 1;

/// Numbers handed out to objects whose host inode number does not fit in 48 bits.
struct Allocated {
    by_object: HashMap<(u64, u64), u64>,
    next: u64,
}

/// One table per daemon process: numbers are computed from free functions all over (the
/// immutable lower index, readdir's d_ino), and a daemon serves one mount.
static ALLOCATED: LazyLock<Mutex<Allocated>> = LazyLock::new(|| {
    Mutex::new(Allocated {
        by_object: HashMap::new(),
        // Tag 0 is never a layer's tag; 0 and 1 (the root) are taken.
        next: ROOT_INO + 1,
    })
});

fn number(tag: u64, host: u64) -> u64 {
    if host <= HOST_MASK {
        return (tag << HOST_BITS) | host;
    }
    let mut table = ALLOCATED.lock();
    if let Some(n) = table.by_object.get(&(tag, host)) {
        return *n;
    }
    let n = table.next;
    // 2^48 objects with huge numbers in one mount cannot happen: memory runs out long before.
    assert!(n <= HOST_MASK, "out of allocated inode numbers");
    table.next += 1;
    table.by_object.insert((tag, host), n);
    n
}

pub fn lower_ino(slot: u16, host_ino: u64) -> u64 {
    number(slot as u64 + 1, host_ino)
}

pub fn upper_ino(host_ino: u64) -> u64 {
    number(UPPER_TAG, host_ino)
}

/// Where a node's lower copy lives.
#[derive(Clone, Debug, Default)]
pub struct LowerRef {
    /// Layer of the winning object.
    pub slot: u16,
    /// Path in the merged lower layers (what a redirect names); also the path in each layer
    /// except those listed in `moved`.
    pub rel: Box<[u8]>,
    /// For directories: the lower layers merged under it, top first. Shared with the
    /// `siblings` of every file in it, so a file node costs no copy of the list.
    pub dir_layers: Arc<[u16]>,
    /// Layers where the object (or an ancestor) lies at another path: a directory renamed in
    /// a layer that was once an upper dir names its older copies by redirect. Nearly always
    /// empty.
    pub moved: Moved,
    /// For a regular file: the layers of its parent directory, top first (where the data of
    /// a metacopy lies).
    pub siblings: Arc<[u16]>,
    /// For a regular file: where its data lies, once looked at (None: not yet).
    pub data: Option<LowerData>,
}

/// The layers where an object lies at another path than its own (see `LowerRef::moved`):
/// nearly always none, so a thin pointer, empty without a block.
#[derive(Clone, Debug, Default)]
pub struct Moved(Option<Box<MovedPaths>>);

/// (layer, path in that layer) pairs.
type MovedPaths = Box<[(u16, Vec<u8>)]>;

impl std::ops::Deref for Moved {
    type Target = [(u16, Vec<u8>)];

    fn deref(&self) -> &[(u16, Vec<u8>)] {
        self.0.as_deref().map_or(&[], |v| &v[..])
    }
}

impl From<Vec<(u16, Vec<u8>)>> for Moved {
    fn from(paths: Vec<(u16, Vec<u8>)>) -> Moved {
        Moved((!paths.is_empty()).then(|| Box::new(paths.into_boxed_slice())))
    }
}

impl FromIterator<(u16, Vec<u8>)> for Moved {
    fn from_iter<I: IntoIterator<Item = (u16, Vec<u8>)>>(paths: I) -> Moved {
        paths.into_iter().collect::<Vec<_>>().into()
    }
}

/// Where the data of a lower regular file lies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LowerData {
    /// In the winning object itself.
    Own,
    /// The winning object is a metacopy (its layer was once an upper dir): the data is a
    /// regular file in layer `.0` at path `.1`.
    At(u16, Box<Box<[u8]>>),
    /// No layer below holds it: reads fail with EIO, as in the kernel.
    Missing,
}

impl LowerRef {
    /// The object's path in layer `slot`.
    pub fn path_in(&self, slot: u16) -> &[u8] {
        self.moved
            .iter()
            .find(|(s, _)| *s == slot)
            .map_or(&self.rel[..], |(_, p)| &p[..])
    }

    /// The path of the winning object in its layer.
    pub fn path(&self) -> &[u8] {
        self.path_in(self.slot)
    }

    /// Opens the winning object in its layer (`layers` bottom first, as the mount has them).
    pub fn open(&self, layers: &[Layer], flags: i32) -> io::Result<OwnedFd> {
        open_in(layers, self.slot, self.path(), flags)
    }

    /// Opens where the file's data lies: the object itself, or for a metacopy the file
    /// further down (see `data_source`).
    pub fn open_data(&self, layers: &[Layer], flags: i32) -> io::Result<OwnedFd> {
        let (slot, path) = self.data_source()?;
        open_in(layers, slot, path, flags)
    }

    /// Opens entry `name` of this directory as layer `slot` holds it.
    pub fn open_child(
        &self,
        layers: &[Layer],
        slot: u16,
        name: &[u8],
        flags: i32,
    ) -> io::Result<OwnedFd> {
        open_in(
            layers,
            slot,
            &relpath::join(self.path_in(slot), name),
            flags,
        )
    }

    /// Where the file's data lies: (layer, path); EIO for a metacopy whose data is gone.
    pub fn data_source(&self) -> std::io::Result<(u16, &[u8])> {
        match &self.data {
            None | Some(LowerData::Own) => Ok((self.slot, self.path())),
            Some(LowerData::At(slot, path)) => Ok((*slot, &path[..])),
            Some(LowerData::Missing) => Err(std::io::Error::from_raw_os_error(c::EIO)),
        }
    }

    /// The directory holding this object, as far as the lower layers tell: its path and
    /// layers (`siblings`), for the search of a metacopy's data.
    pub fn parent_dir(&self) -> LowerRef {
        let dirname = |p: &[u8]| match p.iter().rposition(|b| *b == b'/') {
            Some(i) => p[..i].to_vec(),
            None => b".".to_vec(),
        };
        LowerRef {
            slot: self.slot,
            rel: dirname(&self.rel).into(),
            dir_layers: self.siblings.clone(),
            moved: self.moved.iter().map(|(s, p)| (*s, dirname(p))).collect(),
            ..LowerRef::default()
        }
    }

    /// The lower reference of entry `name` of this directory, won by layer `slot`, with the
    /// layers merged under it (`dir_layers`, for a directory) and the paths it has where they
    /// are not the parent's path joined with `name` (`moved_here`, from the merge).
    pub fn child(
        &self,
        name: &[u8],
        slot: u16,
        dir_layers: Arc<[u16]>,
        moved_here: &[(u16, Vec<u8>)],
    ) -> LowerRef {
        let join = relpath::join;
        let mut moved: Vec<(u16, Vec<u8>)> = self
            .moved
            .iter()
            .filter(|(s, _)| !moved_here.iter().any(|(m, _)| m == s))
            .map(|(s, p)| (*s, join(p, name)))
            .collect();
        moved.extend(moved_here.iter().cloned());
        let siblings = if dir_layers.is_empty() {
            self.dir_layers.clone()
        } else {
            Arc::default()
        };
        LowerRef {
            slot,
            rel: join(&self.rel, name).into(),
            dir_layers,
            moved: moved.into(),
            siblings,
            data: None,
        }
    }
}

fn open_in(layers: &[Layer], slot: u16, path: &[u8], flags: i32) -> io::Result<OwnedFd> {
    layers[slot as usize].open(&relpath::to_cstring(path)?, flags)
}

/// One name of a node: the directory that holds it and the name in that directory.
#[derive(Clone)]
pub struct Link {
    pub parent: Arc<Node>,
    pub name: LinkName,
}

impl Link {
    pub fn new(parent: &Arc<Node>, name: &[u8]) -> Link {
        Link {
            parent: parent.clone(),
            name: name.into(),
        }
    }

    fn is(&self, parent_ino: u64, name: &[u8]) -> bool {
        self.parent.ino == parent_ino && *self.name == *name
    }
}

/// The names of a node: nearly always one, kept inline rather than in a block of its own
/// (a hard link's several names in a boxed slice, which keeps the enum at 24 bytes). Reads
/// as a slice of links.
#[derive(Clone)]
pub enum Links {
    One(Link),
    Many(Box<[Link]>),
}

impl Default for Links {
    fn default() -> Links {
        Links::Many(Box::default())
    }
}

impl std::ops::Deref for Links {
    type Target = [Link];

    fn deref(&self) -> &[Link] {
        match self {
            Links::One(link) => std::slice::from_ref(link),
            Links::Many(links) => links,
        }
    }
}

impl std::ops::DerefMut for Links {
    fn deref_mut(&mut self) -> &mut [Link] {
        match self {
            Links::One(link) => std::slice::from_mut(link),
            Links::Many(links) => links,
        }
    }
}

impl Links {
    fn into_vec(self) -> Vec<Link> {
        match self {
            Links::One(link) => vec![link],
            Links::Many(links) => links.into_vec(),
        }
    }

    fn from_vec(mut links: Vec<Link>) -> Links {
        match links.len() {
            1 => Links::One(links.pop().expect("one link")),
            _ => Links::Many(links.into_boxed_slice()),
        }
    }

    pub fn push(&mut self, link: Link) {
        let mut links = std::mem::take(self).into_vec();
        links.push(link);
        *self = Links::from_vec(links);
    }

    pub fn retain(&mut self, keep: impl FnMut(&Link) -> bool) {
        let mut links = std::mem::take(self).into_vec();
        links.retain(keep);
        *self = Links::from_vec(links);
    }

    pub fn clear(&mut self) {
        *self = Links::default();
    }
}

/// The bytes of a link's name: those of the parent's lower listing when the name is one of
/// its entries (most nodes, after a walk of the lower layers), else a copy.
#[derive(Clone)]
pub enum LinkName {
    Listed(ListedEntry),
    Own(Box<Box<[u8]>>),
}

impl From<&[u8]> for LinkName {
    fn from(name: &[u8]) -> LinkName {
        LinkName::Own(Box::new(name.into()))
    }
}

impl std::ops::Deref for LinkName {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            LinkName::Listed(e) => e.name(),
            LinkName::Own(name) => &name[..],
        }
    }
}

/// Where a node's cached attributes lie: its entry in the parent's lower listing (a lower
/// object), or a copy (the root, a new object); none for an object found in the upper layer,
/// which is stat'ed on demand. (Two variants: the enum then takes 16 bytes, not 24.)
#[derive(Clone)]
pub enum NodeAttr {
    Listed(ListedEntry),
    Own(Option<Box<Attr>>),
}

pub struct NodeInner {
    /// The live names the daemon knows this node by (every name the kernel reached it
    /// through, kept up to date by link, unlink, rename and exchange). A node is its backing
    /// object, not one of these: any of them may go while the others stay. Directories have
    /// one; the root has none; empty for any other node means every name is gone.
    pub links: Links,
    pub lower: Option<LowerRef>,
    /// The object exists in the upper layer.
    pub upper: bool,
    /// A hard-linked lower file whose copy lives in the index (by this entry name): reads go
    /// there, and a change links it in place instead of copying.
    pub index: Option<Box<std::ffi::CString>>,
    /// The upper copy holds metadata only; data is read from `lower` until the first write.
    pub metacopy: bool,
    /// The object itself, held open (O_PATH) where no single name identifies it: a
    /// hard-linked upper file (its names come and go independently), and a node whose names
    /// are all gone but which lives on through open files (fstat reaches the daemon as a
    /// getattr).
    pub object: Option<Arc<std::os::fd::OwnedFd>>,
    /// Attributes of the lower object (upper objects are stat'ed on demand).
    pub attr: NodeAttr,
}

impl NodeInner {
    /// The cached attributes (all zero where there are none).
    pub fn attr(&self) -> Attr {
        match &self.attr {
            NodeAttr::Listed(e) => e.attr(),
            NodeAttr::Own(a) => a.as_deref().copied().unwrap_or_default(),
        }
    }

    /// A live name of the node, if any is left.
    pub fn any_link(&self) -> Option<&Link> {
        self.links.first()
    }

    /// The directory holding the node (for directories, which have exactly one name).
    pub fn parent(&self) -> Option<&Arc<Node>> {
        self.any_link().map(|l| &l.parent)
    }

    /// Records that the node is reachable as `name` in `parent`.
    pub fn add_link(&mut self, parent: &Arc<Node>, name: &[u8]) {
        self.add_link_named(parent, name, || name.into());
    }

    /// `add_link` for a name that is entry `listed` of the parent's lower listing: the link
    /// shares the listing's bytes.
    pub fn add_listed_link(&mut self, parent: &Arc<Node>, listed: &ListedEntry) {
        self.add_link_named(parent, listed.name(), || LinkName::Listed(listed.clone()));
    }

    fn add_link_named(
        &mut self,
        parent: &Arc<Node>,
        name: &[u8],
        owned: impl FnOnce() -> LinkName,
    ) {
        match self.links.iter_mut().find(|l| l.is(parent.ino, name)) {
            // The directory's node may have been forgotten and made again: keep the live one.
            Some(l) => l.parent = parent.clone(),
            None => self.links.push(Link {
                parent: parent.clone(),
                name: owned(),
            }),
        }
    }

    /// Forgets the name `name` in directory `parent_ino`; true if the node had it.
    pub fn remove_link(&mut self, parent_ino: u64, name: &[u8]) -> bool {
        let before = self.links.len();
        self.links.retain(|l| !l.is(parent_ino, name));
        self.links.len() != before
    }

    /// The name `from` (directory ino, name) became `to_parent`/`to_name` (rename, exchange).
    pub fn move_link(&mut self, from: (u64, &[u8]), to_parent: &Arc<Node>, to_name: &[u8]) {
        self.remove_link(from.0, from.1);
        self.add_link(to_parent, to_name);
    }
}

pub struct Node {
    pub ino: u64,
    pub kind: Kind,
    /// Told to the kernel with the node id: a new node under the number of a stale one gets
    /// the next generation, and the kernel then drops the inode it held for the old one.
    pub generation: u64,
    /// A directory whose name was removed: its number is free for the host to reuse.
    pub removed: AtomicBool,
    /// The object of a node with no name and no open file was let go (see `settle_unlinked`).
    released: AtomicBool,
    lookups: AtomicU64,
    /// File handles open on the node (see `OpenCount`).
    open_files: AtomicU32,
    /// The object has no xattr to show: the daemon made it with none (no inherited ACL, no
    /// label from the host) and none was set since. Its getxattr and listxattr (the kernel
    /// asks for security.capability before each write and chown) then need no system call.
    pub bare: AtomicBool,
    pub inner: RwLock<NodeInner>,
    /// Serialises copy-up of this node; held only by the copy-up itself.
    pub copy_up: parking_lot::Mutex<()>,
}

impl Node {
    pub fn new(ino: u64, kind: Kind, inner: NodeInner) -> Node {
        Node {
            ino,
            kind,
            generation: 0,
            removed: AtomicBool::new(false),
            released: AtomicBool::new(false),
            lookups: AtomicU64::new(0),
            open_files: AtomicU32::new(0),
            bare: AtomicBool::new(false),
            inner: RwLock::new(inner),
            copy_up: parking_lot::Mutex::new(()),
        }
    }

    /// Every name of the node is gone (it lives on only through open files).
    pub fn is_unlinked(&self) -> bool {
        self.ino != ROOT_INO && self.inner.read().links.is_empty()
    }

    /// Counts a file handle about to be opened on the node, until the returned guard drops.
    /// Taken before the object is opened, so that a name removed meanwhile keeps the object.
    pub fn opened(self: &Arc<Node>) -> OpenCount {
        self.open_files.fetch_add(1, Ordering::SeqCst);
        OpenCount { node: self.clone() }
    }

    /// After the node's last name went: the held object stays only while a file is open on
    /// it (fstat of an unlinked open file still reaches the daemon). Without open files it is
    /// closed at once, so that the space of an unlinked file comes back at the unlink, as on
    /// any filesystem, not whenever the kernel forgets the inode. Call with `inner` locked.
    pub fn settle_unlinked(&self, inner: &mut NodeInner, held: Option<Arc<OwnedFd>>) {
        if self.ino == ROOT_INO || !inner.links.is_empty() {
            return;
        }
        if self.open_files.load(Ordering::SeqCst) == 0 {
            inner.object = None;
            self.released.store(true, Ordering::Relaxed);
        } else if inner.object.is_none() {
            inner.object = held;
        }
    }
}

/// One open file handle on a node: while any is alive, an unlinked node keeps its object.
pub struct OpenCount {
    node: Arc<Node>,
}

impl Drop for OpenCount {
    fn drop(&mut self) {
        if self.node.open_files.fetch_sub(1, Ordering::SeqCst) == 1 {
            // The last close of an unlinked file frees it (under the lock: a concurrent
            // unlink or open sees either the count or the dropped object).
            let mut inner = self.node.inner.write();
            self.node.settle_unlinked(&mut inner, None);
        }
    }
}

/// Inodes by number, sharded so that lookups in different directories rarely contend.
#[derive(Default)]
pub struct NodeTable {
    map: ShardedMap<Arc<Node>>,
}

impl NodeTable {
    pub fn get(&self, ino: u64) -> Option<Arc<Node>> {
        self.map.get(ino)
    }

    /// Inserts a pinned node that is never forgotten (the root).
    pub fn insert_pinned(&self, node: Node) {
        node.lookups.store(1 << 62, Ordering::Relaxed);
        self.map.insert(node.ino, Arc::new(node));
    }

    /// Returns the node for `ino`, creating it with `make` if absent, and counts one kernel
    /// lookup reference on it.
    ///
    /// Node ids are host inode numbers: once a directory is removed, the host may give its
    /// number to a new object while the kernel still holds the old inode (an open file below
    /// it pins it). Such a stale node is replaced by a new one of the next generation, which
    /// keeps the old one's kernel references (the kernel forgets both under the same id).
    pub fn lookup_or_insert(&self, ino: u64, make: impl FnOnce() -> Node) -> Arc<Node> {
        let node = self.map.update(ino, |shard| {
            let (generation, lookups) = match shard.get(&ino) {
                Some(old) if old.removed.load(Ordering::Relaxed) => {
                    (old.generation + 1, old.lookups.load(Ordering::Relaxed))
                }
                // A file whose last name went with no file open on it: nothing holds its
                // object, so the host may have given its number to a new object, which gets a
                // fresh node under the same id and generation (the kernel drops its inode if
                // the type differs; a new generation would make the kernel fail every open
                // file of the old inode).
                Some(old) if old.released.load(Ordering::Relaxed) => {
                    (old.generation, old.lookups.load(Ordering::Relaxed))
                }
                Some(node) => return node.clone(),
                None => {
                    let node = Arc::new(make());
                    shard.insert(ino, node.clone());
                    return node;
                }
            };
            // The stale node is replaced: the fresh one keeps its kernel references.
            let mut fresh = make();
            fresh.generation = generation;
            fresh.lookups.store(lookups, Ordering::Relaxed);
            let fresh = Arc::new(fresh);
            shard.insert(ino, fresh.clone());
            fresh
        });
        node.lookups.fetch_add(1, Ordering::Relaxed);
        node
    }

    /// The generation of node `ino` (0 if unknown).
    pub fn generation(&self, ino: u64) -> u64 {
        self.get(ino).map_or(0, |n| n.generation)
    }

    /// Drops `n` kernel references; the node goes when none is left.
    pub fn forget(&self, ino: u64, n: u64) {
        if ino == ROOT_INO {
            return;
        }
        self.map.update(ino, |shard| {
            if let Some(node) = shard.get(&ino) {
                let prev = node.lookups.fetch_sub(
                    n.min(node.lookups.load(Ordering::Relaxed)),
                    Ordering::Relaxed,
                );
                if prev <= n {
                    shard.remove(&ino);
                }
            }
        })
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inode_numbers_separate_layers_and_upper() {
        assert_ne!(lower_ino(0, 5), lower_ino(1, 5));
        assert_ne!(lower_ino(0, 5), upper_ino(5));
        assert_eq!(lower_ino(0, 5) & HOST_MASK, 5);
        assert!(lower_ino(0, 1) > ROOT_INO);
    }

    fn root_node() -> Arc<Node> {
        Arc::new(Node::new(
            ROOT_INO,
            Kind::Dir,
            NodeInner {
                links: Links::default(),
                lower: None,
                upper: false,
                index: None,
                metacopy: false,
                object: None,
                attr: NodeAttr::Own(None),
            },
        ))
    }

    /// One name inline, more in a list, back to one inline when the others go.
    #[test]
    fn links_grow_and_shrink_in_order() {
        let dir = root_node();
        let mut links = Links::default();
        assert!(links.is_empty());
        links.push(Link::new(&dir, b"a"));
        assert!(matches!(links, Links::One(_)));
        links.push(Link::new(&dir, b"b"));
        links.push(Link::new(&dir, b"c"));
        let names = |l: &Links| l.iter().map(|l| l.name.to_vec()).collect::<Vec<_>>();
        assert_eq!(names(&links), [b"a", b"b", b"c"]);
        links.retain(|l| *l.name != *b"a");
        assert_eq!(names(&links), [b"b", b"c"]);
        links.retain(|l| *l.name != *b"c");
        assert!(matches!(links, Links::One(_)));
        assert_eq!(links.first().map(|l| l.name.to_vec()), Some(b"b".to_vec()));
        links.retain(|_| false);
        assert!(links.is_empty());
        links.push(Link::new(&dir, b"d"));
        links.clear();
        assert!(links.is_empty());
    }

    #[test]
    fn huge_host_numbers_never_share_a_number() {
        // What folding the high bits once mapped to one number: 2^48 + 5 of layer 0 and
        // 2^49 + 6 of layer 1 (both 4 after the fold), and an upper object of 2^48 + 5.
        let a = lower_ino(0, (1 << 48) + 5);
        let b = lower_ino(0, (2 << 48) + 6);
        let c = lower_ino(1, (2 << 48) + 6);
        let d = upper_ino((1 << 48) + 5);
        let all = [a, b, c, d, lower_ino(0, 4), lower_ino(1, 4), ROOT_INO];
        let unique: std::collections::HashSet<_> = all.iter().collect();
        assert_eq!(unique.len(), all.len(), "{all:x?}");
        // Stable within the daemon: the same object gets the same number again.
        assert_eq!(lower_ino(0, (1 << 48) + 5), a);
        assert_eq!(upper_ino((1 << 48) + 5), d);
        // Allocated numbers are in the range no layer tag uses.
        assert_eq!(a >> HOST_BITS, 0);
    }
}
