//! Name resolution through the merged directory state (whiteouts, opaque directories,
//! redirects, the index of copied-up hard links), inode numbers, paths, and attributes.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use parking_lot::RwLock;

use super::real::Real;
use super::{errno, Entry, Union};
use crate::attr::{kind_of_mode, Attr, Kind};
use crate::dirstate::{DirState, Resolved, UpperEntry};
use crate::index::DirIndex;
use crate::inode::{lower_ino, upper_ino, LowerRef, Node, NodeInner, ROOT_INO};
use crate::layer::relpath;
use crate::ovl::{self, Marker};
use crate::sys;
use crate::whiteout::{self, NameKind, Opacity};

impl Union {
    /// The merged state of directory `dir`, loaded on first use.
    pub(super) fn dir_state(&self, dir: &Node) -> io::Result<Arc<RwLock<DirState>>> {
        if let Some(st) = self.dirs.get(dir.ino) {
            return Ok(st);
        }
        if dir.kind != Kind::Dir {
            return Err(errno(libc::ENOTDIR));
        }
        let state = self.load_dir_state(dir)?;
        // Two threads may race to load it; both results are equal, keep the first.
        Ok(self
            .dirs
            .get_or_insert(dir.ino, Arc::new(RwLock::new(state))))
    }

    fn load_dir_state(&self, dir: &Node) -> io::Result<DirState> {
        let (lower, has_upper) = {
            let inner = dir.inner.read();
            (inner.lower.clone(), inner.upper)
        };
        let mut state = DirState::default();
        let mut upper_entries = Vec::new();
        if has_upper {
            let rel = self.upper_rel(dir)?;
            let upper = self.upper()?;
            let fd = upper.open_dir(&rel)?;
            let opacity = whiteout::dir_opacity(fd.as_fd());
            state.opaque = opacity == Opacity::Opaque;
            for raw in sys::dir::read_all(fd.try_clone()?)? {
                match whiteout::classify_name(&raw.name) {
                    NameKind::OpaqueMarker => state.opaque = true,
                    NameKind::Hidden => {}
                    // The rootless fuse-overlayfs format: `.wh.NAME` files in the upper dir.
                    NameKind::Whiteout(target) => {
                        state.upper.insert(target.to_vec(), UpperEntry::Whiteout);
                    }
                    NameKind::Plain => upper_entries.push(raw.name),
                }
            }
            if !state.opaque {
                state.lower = self.lower_index(lower.as_ref())?;
            }
            for name in upper_entries {
                let Ok(st) = sys::cstr(&name).and_then(|c| sys::stat_at(fd.as_fd(), &c)) else {
                    continue;
                };
                if whiteout::is_device_whiteout(&st) {
                    state.upper.insert(name, UpperEntry::Whiteout);
                    continue;
                }
                if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
                    if let Some(target) = self.redirect_target(&fd, &name, lower.as_ref()) {
                        let ino = lower_ino(target.slot, target.host_ino);
                        state.redirects.insert(name.clone(), target.lower);
                        state.upper.insert(
                            name,
                            UpperEntry::Present {
                                ino,
                                kind: Kind::Dir,
                            },
                        );
                        continue;
                    }
                }
                let lower_here = state.lower.find(&name).map(|e| (e, lower.as_ref()));
                let ino = self.upper_entry_ino(&fd, &name, &st, lower_here);
                state.upper.entry(name).or_insert(UpperEntry::Present {
                    ino,
                    kind: kind_of_mode(st.st_mode),
                });
            }
        } else {
            state.lower = self.lower_index(lower.as_ref())?;
        }
        self.find_indexed(&mut state, lower.as_ref());
        Ok(state)
    }

    /// The index entry of the lower file `name` in `dir`, if another of its names was copied up.
    pub(super) fn indexed_lower_name(
        &self,
        dir: &Node,
        state: &DirState,
        name: &[u8],
    ) -> Option<std::ffi::CString> {
        let upper = self.upper.as_ref().filter(|u| u.index_in_use())?;
        let e = state.lower_entry(name)?;
        if e.attr().nlink < 2 || e.attr().kind() != Kind::File {
            return None;
        }
        let obj = dir
            .inner
            .read()
            .lower
            .as_ref()?
            .open_child(&self.layers, e.layer, name, libc::O_PATH | libc::O_NOFOLLOW)
            .ok()?;
        let origin = ovl::origin_value(obj.as_fd()).ok()?;
        let idx = sys::cstr(ovl::index_name(&origin).as_bytes()).ok()?;
        sys::stat_at(upper.index(), &idx).ok().map(|_| idx)
    }

    /// Hard-linked lower files copied up under another name have an index entry: record it so
    /// this name shows (and later links) that copy.
    fn find_indexed(&self, state: &mut DirState, lower: Option<&LowerRef>) {
        let (Some(upper), Some(lower)) = (self.upper.as_ref(), lower) else {
            return;
        };
        if !upper.index_in_use() {
            return;
        }
        for i in 0..state.lower.len() {
            let e = state.lower.entry(i);
            let name = state.lower.name(e);
            if e.attr().nlink < 2 || e.attr().kind() != Kind::File || state.upper.contains_key(name)
            {
                continue;
            }
            let Ok(obj) =
                lower.open_child(&self.layers, e.layer, name, libc::O_PATH | libc::O_NOFOLLOW)
            else {
                continue;
            };
            let Ok(origin) = ovl::origin_value(obj.as_fd()) else {
                continue;
            };
            let Ok(idx) = sys::cstr(ovl::index_name(&origin).as_bytes()) else {
                continue;
            };
            if let Ok(st) = sys::stat_at(upper.index(), &idx) {
                // Upper names of the same copy (e.g. one that took another lower name's place
                // by a rename) share this lower name's number.
                self.upper_link_inos
                    .lock()
                    .entry(st.st_ino)
                    .or_insert(lower_ino(e.layer, e.attr().host_ino));
                state.indexed.insert(name.to_vec(), idx);
            }
        }
    }

    fn lower_index(&self, lower: Option<&LowerRef>) -> io::Result<Arc<DirIndex>> {
        match lower {
            Some(l) if !l.dir_layers.is_empty() => {
                crate::merge::merge_lower_dir(&self.layers, l).map(Arc::new)
            }
            _ => Ok(Arc::default()),
        }
    }

    /// Follows the redirect marker on upper directory `name`: an absolute path from
    /// the root of the lower layers, or a name relative to the parent's lower path.
    fn redirect_target(
        &self,
        dir: &OwnedFd,
        name: &[u8],
        parent_lower: Option<&LowerRef>,
    ) -> Option<RedirectTarget> {
        let obj = sys::cstr(name)
            .and_then(|c| sys::open_beneath(dir.as_fd(), &c, libc::O_PATH | libc::O_NOFOLLOW, 0))
            .ok()?;
        let value = ovl::get(obj.as_fd(), Marker::Redirect)?;
        let path: Vec<u8> = match value.strip_prefix(b"/") {
            Some(abs) => abs.to_vec(),
            None => relpath::join(&parent_lower?.rel, &value),
        };
        self.resolve_lower_path(&path)
    }

    /// The merged lower layers' root directory.
    fn lower_root(&self) -> LowerRef {
        LowerRef {
            slot: self.layers.len().saturating_sub(1) as u16,
            rel: b".".to_vec(),
            dir_layers: (0..self.layers.len() as u16).rev().collect(),
            ..LowerRef::default()
        }
    }

    /// Walks the lower layers (never the upper) from the root along `path`.
    fn resolve_lower_path(&self, path: &[u8]) -> Option<RedirectTarget> {
        let mut dir = self.lower_root();
        let mut found = None;
        for part in path
            .split(|b| *b == b'/')
            .filter(|p| !p.is_empty() && *p != b".")
        {
            if part == b".." {
                return None;
            }
            let idx = crate::merge::merge_lower_dir(&self.layers, &dir).ok()?;
            let e = idx.find(part)?;
            if e.attr().kind() != Kind::Dir {
                return None;
            }
            dir = self.lower_child(&dir, part, &idx, e);
            found = Some(RedirectTarget {
                slot: e.layer,
                host_ino: e.attr().host_ino,
                lower: dir.clone(),
            });
        }
        found
    }

    /// The inode number of an upper entry: the lower object's number when the upper object
    /// continues it (a merged directory, or a copied-up file carrying an origin), so numbers
    /// survive copy-up and remount; otherwise a number of the upper layer.
    fn upper_entry_ino(
        &self,
        dir: &OwnedFd,
        name: &[u8],
        st: &libc::stat,
        lower: Option<(&crate::index::IndexEntry, Option<&LowerRef>)>,
    ) -> u64 {
        // Names of one hard-linked upper file must share one number, whichever is met first.
        if st.st_nlink > 1 && st.st_mode & libc::S_IFMT != libc::S_IFDIR {
            if let Some(ino) = self.upper_link_inos.lock().get(&st.st_ino) {
                return *ino;
            }
            let ino = self.upper_entry_ino_by_name(dir, name, st, lower);
            return *self.upper_link_inos.lock().entry(st.st_ino).or_insert(ino);
        }
        self.upper_entry_ino_by_name(dir, name, st, lower)
    }

    fn upper_entry_ino_by_name(
        &self,
        dir: &OwnedFd,
        name: &[u8],
        st: &libc::stat,
        lower: Option<(&crate::index::IndexEntry, Option<&LowerRef>)>,
    ) -> u64 {
        let own = upper_ino(st.st_ino);
        let Some((lower, parent_lower)) = lower else {
            return own;
        };
        let lower_is_dir = lower.attr().kind() == Kind::Dir;
        let upper_is_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
        let Ok(obj) = sys::cstr(name)
            .and_then(|c| sys::open_beneath(dir.as_fd(), &c, libc::O_PATH | libc::O_NOFOLLOW, 0))
        else {
            return own;
        };
        let continues = if upper_is_dir {
            lower_is_dir && !is_opaque_dir(&obj)
        } else {
            // A file renamed over a lower name carries the origin of another lower file: only
            // a copy of this very lower file continues its number.
            !lower_is_dir
                && match ovl::get(obj.as_fd(), Marker::Origin) {
                    None => false,
                    Some(stored) => self
                        .lower_origin(parent_lower, lower.layer, name)
                        .is_none_or(|value| same_origin(&stored, &value)),
                }
        };
        if continues {
            lower_ino(lower.layer, lower.attr().host_ino)
        } else {
            own
        }
    }

    /// The origin value of entry `name` of lower directory `dir` in layer `slot` (None when
    /// the layer's filesystem gives no file handles: nothing to compare with then).
    fn lower_origin(&self, dir: Option<&LowerRef>, slot: u16, name: &[u8]) -> Option<Vec<u8>> {
        let obj = dir?
            .open_child(&self.layers, slot, name, libc::O_PATH | libc::O_NOFOLLOW)
            .ok()?;
        ovl::origin_value(obj.as_fd()).ok()
    }

    /// Resolves `name` in `parent` and counts a reference on the result.
    pub fn lookup(&self, parent: u64, name: &[u8]) -> io::Result<Entry> {
        // Like the kernel's ovl_lookup: such a name is refused, not merely absent, so every
        // call on it (chmod, unlink, rename, ...) fails with ENAMETOOLONG.
        if name.len() > super::NAME_MAX {
            return Err(errno(libc::ENAMETOOLONG));
        }
        let parent_node = self.node(parent)?;
        let state = self.dir_state(&parent_node)?;
        let state = state.read();
        let resolved = state.resolve(name).ok_or(errno(libc::ENOENT))?;
        let node = self.node_for(&parent_node, &state, name, resolved)?;
        self.entry(&node)
    }

    /// A node as an entry to return: its number, generation and attributes.
    pub(super) fn entry(&self, node: &Node) -> io::Result<Entry> {
        Ok(Entry {
            ino: node.ino,
            generation: node.generation,
            attr: self.node_attr(node)?,
        })
    }

    /// An entry of a directory listing with its attributes, as a lookup (readdirplus): None
    /// when the name is gone since the listing was taken. The caller holds one reference.
    pub fn lookup_listed(&self, dir: u64, name: &[u8]) -> Option<Entry> {
        let dir = self.node(dir).ok()?;
        let state = self.dir_state(&dir).ok()?;
        let node = {
            let state = state.read();
            let resolved = state.resolve(name)?;
            self.node_for(&dir, &state, name, resolved).ok()?
        };
        match self.entry(&node) {
            Ok(e) => Some(e),
            Err(_) => {
                self.nodes.forget(node.ino, 1);
                None
            }
        }
    }

    /// The number of the directory holding `ino` (`ino` itself for the root).
    pub fn parent_ino(&self, ino: u64) -> u64 {
        self.nodes
            .get(ino)
            .and_then(|n| n.inner.read().parent().map(|p| p.ino))
            .unwrap_or(ino)
    }

    /// The node for a resolved name (created if the kernel did not know it), with one more
    /// kernel reference.
    pub(super) fn node_for(
        &self,
        parent: &Arc<Node>,
        state: &DirState,
        name: &[u8],
        resolved: Resolved<'_>,
    ) -> io::Result<Arc<Node>> {
        let ino = resolved.ino();
        let parent_lower = parent.inner.read().lower.clone();
        let lower_entry = state
            .lower_entry(name)
            .filter(|e| lower_ino(e.layer, e.attr().host_ino) == ino);
        let lower = match (parent_lower, lower_entry) {
            _ if state.redirects.contains_key(name) => state.redirects.get(name).cloned(),
            (Some(pl), Some(e)) => Some(self.lower_child(&pl, name, &state.lower, e)),
            _ => None,
        };
        let is_upper = matches!(resolved, Resolved::Upper { .. });
        let index = if is_upper {
            None
        } else {
            state.indexed.get(name).cloned()
        };
        // A copied-up file may hold metadata only: its data is then the lower file's.
        let mut lower = lower;
        let mut metacopy = false;
        if is_upper && resolved.kind() == Kind::File && self.nodes.get(ino).is_none() {
            if let Some(redirected) = self.metacopy_data(parent, name) {
                metacopy = true;
                // A metacopy file renamed by kernel overlayfs names its data by redirect.
                if let Some(r) = redirected {
                    lower = Some(r);
                }
                metacopy &= lower.is_some();
            }
        }
        let attr = match resolved {
            Resolved::Lower(e) => e.attr(),
            Resolved::Upper { .. } => Attr::default(),
        };
        let node = self.nodes.lookup_or_insert(ino, || {
            Node::new(
                ino,
                resolved.kind(),
                NodeInner {
                    links: Vec::new(),
                    lower,
                    upper: is_upper,
                    object: None,
                    metacopy,
                    index,
                    attr,
                },
            )
        });
        // One more name of a hard link, or the first name of a new node.
        let mut inner = node.inner.write();
        if inner.links.is_empty() && node.ino != crate::inode::ROOT_INO {
            // A node whose known names were all removed is reached by a name that exists: a
            // hard link the daemon had not seen. What the name shows is the node now.
            inner.upper |= is_upper;
            if !inner.upper {
                // What was held for open files was the lower object: never an upper identity.
                inner.object = None;
            }
        }
        inner.add_link(parent, name);
        drop(inner);
        Ok(node)
    }

    /// The link count of a hard-linked upper file as the kernel's nlink marker
    /// records it ("U+n"/"U-n" relative to the upper count, "L+n"/"L-n" to the lower one),
    /// so an upper dir written by kernel overlayfs with index=on shows the same counts.
    fn merged_nlink(&self, fd: &OwnedFd, upper_nlink: u32, lower_nlink: u32) -> u32 {
        let (base, delta) = match ovl::get(fd.as_fd(), Marker::Nlink)
            .as_deref()
            .and_then(ovl::parse_nlink)
        {
            Some(ovl::NlinkBase::Upper(d)) => (upper_nlink, d),
            Some(ovl::NlinkBase::Lower(d)) => (lower_nlink, d),
            None => return upper_nlink,
        };
        u32::try_from(base as i64 + delta)
            .ok()
            .filter(|n| *n > 0)
            .unwrap_or(upper_nlink)
    }

    /// For a metacopy upper file: Some(where its data lives if a redirect says so, else None
    /// for the lower file of the same path). None when the file holds its own data.
    fn metacopy_data(&self, parent: &Node, name: &[u8]) -> Option<Option<LowerRef>> {
        let rel = self.upper_rel(parent).ok()?;
        let fd = self
            .upper()
            .ok()?
            .open_path(&relpath::join(&rel, name))
            .ok()?;
        if !ovl::is_metacopy(fd.as_fd()) {
            return None;
        }
        let redirect = ovl::get(fd.as_fd(), Marker::Redirect);
        let Some(target) = redirect else {
            return Some(None);
        };
        let path = match target.strip_prefix(b"/") {
            Some(abs) => abs.to_vec(),
            None => relpath::join(&parent.inner.read().lower.as_ref()?.rel, &target),
        };
        Some(self.resolve_lower_file(&path))
    }

    /// The lower file at `path` (walking the lower layers only).
    fn resolve_lower_file(&self, path: &[u8]) -> Option<LowerRef> {
        let (dir, file) = match path.iter().rposition(|b| *b == b'/') {
            Some(i) => (&path[..i], &path[i + 1..]),
            None => (&b""[..], path),
        };
        let dir = if dir.is_empty() {
            self.lower_root()
        } else {
            self.resolve_lower_path(dir)?.lower
        };
        let idx = crate::merge::merge_lower_dir(&self.layers, &dir).ok()?;
        let e = idx.find(file)?;
        Some(self.lower_child(&dir, file, &idx, e))
    }

    /// The lower reference of entry `e` (named `name`) of the merged lower directory `dir`.
    fn lower_child(
        &self,
        dir: &LowerRef,
        name: &[u8],
        idx: &DirIndex,
        e: &crate::index::IndexEntry,
    ) -> LowerRef {
        crate::lowerwalk::child(&self.layers, dir, name, e.layer, idx.dir_layers(e).to_vec())
    }

    /// The path of `node`'s upper object relative to the upper root ("." for the root),
    /// through one of its live names. Only for objects one name identifies (directories, and
    /// files without other links); hard-linked and unlinked files are reached through
    /// `upper_object`.
    pub(super) fn upper_rel(&self, node: &Node) -> io::Result<Vec<u8>> {
        if node.ino == ROOT_INO {
            return Ok(b".".to_vec());
        }
        let mut parts: Vec<Vec<u8>> = Vec::new();
        let mut cur = {
            let inner = node.inner.read();
            let link = inner.any_link().ok_or(errno(libc::ENOENT))?;
            parts.push(link.name.clone());
            link.parent.clone()
        };
        while cur.ino != ROOT_INO {
            let next = {
                let inner = cur.inner.read();
                let link = inner.any_link().ok_or(errno(libc::ENOENT))?;
                parts.push(link.name.clone());
                link.parent.clone()
            };
            cur = next;
        }
        parts.reverse();
        Ok(parts.join(&b'/'))
    }

    /// An O_PATH fd of the node's upper object: the one held for hard-linked and unlinked
    /// files, else opened through the node's name.
    pub(super) fn upper_object(&self, node: &Node) -> io::Result<Arc<OwnedFd>> {
        if let Some(obj) = node.inner.read().object.clone() {
            return Ok(obj);
        }
        let rel = self.upper_rel(node)?;
        let fd = self.upper()?.open_path(&rel)?;
        Ok(Arc::new(fd))
    }

    /// Keeps the upper object of a hard-linked file open, so that it stays reachable whichever
    /// of its names goes. `fd` is an O_PATH fd of the object just reached through a live name.
    pub(super) fn hold_if_linked(&self, node: &Node, fd: &Arc<OwnedFd>, nlink: u64) {
        if node.kind == Kind::Dir || nlink < 2 {
            return;
        }
        let mut inner = node.inner.write();
        if inner.object.is_none() {
            inner.object = Some(fd.clone());
        }
    }

    /// Attributes of a node: the upper object is stat'ed (its size and times move with
    /// writes, and other names change its link count and ctime); a lower object's come from
    /// the index.
    pub(super) fn node_attr(&self, node: &Node) -> io::Result<Attr> {
        let (is_upper, cached, lower_dirs) = {
            let inner = node.inner.read();
            (
                inner.upper,
                inner.attr,
                inner.lower.as_ref().map_or(0, |l| l.dir_layers.len()),
            )
        };
        let mut attr = match self.path_real(node) {
            Real::Held(obj) => self.object_attr(&obj, cached.nlink)?,
            Real::Upper => {
                let obj = self.upper_object(node)?;
                let attr = self.object_attr(&obj, cached.nlink)?;
                self.hold_if_linked(node, &obj, attr.nlink as u64);
                attr
            }
            Real::Index(idx) => Attr::from_stat(&sys::stat_at(self.upper()?.index(), &idx)?),
            Real::Lower(_) | Real::Gone => cached,
        };
        if node.kind == Kind::Dir {
            // Like the kernel: a directory merged from several layers reports one link, since
            // counting its subdirectories would mean reading every layer.
            let opaque = self.dirs.get(node.ino).is_some_and(|s| s.read().opaque);
            let sources = usize::from(is_upper) + if opaque { 0 } else { lower_dirs };
            if sources >= 2 {
                attr.nlink = 1;
            }
        }
        Ok(attr)
    }

    /// Attributes of an upper object, with the link count the kernel's nlink xattr records
    /// for hard-linked copies of lower files.
    fn object_attr(&self, obj: &OwnedFd, lower_nlink: u32) -> io::Result<Attr> {
        let mut attr = Attr::from_stat(&sys::fstat(obj.as_fd())?);
        let is_file = attr.mode & libc::S_IFMT == libc::S_IFREG;
        if is_file && attr.nlink > 1 {
            attr.nlink = self.merged_nlink(obj, attr.nlink, lower_nlink);
        }
        Ok(attr)
    }

    /// Attributes of `ino`; `open` is the file of the handle the call came with, if any.
    pub fn getattr(&self, ino: u64, open: Option<&File>) -> io::Result<Attr> {
        let node = self.node(ino)?;
        // An unlinked file that is still open: stat it through its handle.
        if let Some(file) = open.filter(|_| node.is_unlinked()) {
            return Ok(Attr::from_stat(&sys::fstat(file.as_fd())?));
        }
        self.node_attr(&node)
    }

    pub fn readlink(&self, ino: u64) -> io::Result<Vec<u8>> {
        let node = self.node(ino)?;
        let fd = self.open_node_path(&node)?;
        sys::readlink_at(fd.as_fd(), c"")
    }

    /// An O_PATH fd of the node's current object (upper copy if any, else lower), never
    /// following a symlink.
    pub(super) fn open_node_path(&self, node: &Node) -> io::Result<OwnedFd> {
        self.open_real(node, libc::O_PATH)
    }
}

/// Whether two origin values name the same object: the handle type and the handle itself
/// (the kernel fills in the filesystem uuid where stratafs leaves it null).
fn same_origin(a: &[u8], b: &[u8]) -> bool {
    const HANDLE_TYPE: usize = 4;
    const HANDLE: usize = 21;
    match (a.get(HANDLE..), b.get(HANDLE..)) {
        (Some(ha), Some(hb)) => a[HANDLE_TYPE] == b[HANDLE_TYPE] && ha == hb,
        _ => a == b,
    }
}

struct RedirectTarget {
    slot: u16,
    host_ino: u64,
    lower: LowerRef,
}

fn is_opaque_dir(dir: &OwnedFd) -> bool {
    whiteout::dir_opacity(dir.as_fd()) == Opacity::Opaque
        || sys::stat_at(
            dir.as_fd(),
            &sys::cstr(whiteout::OPAQUE_MARKER).expect("no NUL"),
        )
        .is_ok()
}
