//! Loading the merged state of one directory: the upper copy's entries and whiteouts over the
//! lower listing, redirects of renamed directories, the index of copied-up hard links, and
//! the inode number of each upper entry (the lower object's when the upper one continues it).

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use parking_lot::RwLock;

use super::lowerpath::RedirectTarget;
use super::{errno, Union};
use crate::sys;
use crate::sys::c;
use crate::union::attr::{kind_of_mode, Kind};
use crate::union::dirstate::{DirState, UpperEntry};
use crate::union::inode::{lower_ino, upper_ino, LowerRef, Node};
use crate::union::layer::relpath;
use crate::union::listing::{DirListing, ListingEntry};
use crate::union::ovl::{self, Marker};
use crate::union::whiteout::{self, NameKind, Opacity};

impl Union {
    /// The merged state of directory `dir`, loaded on first use.
    pub(super) fn dir_state(&self, dir: &Node) -> io::Result<Arc<RwLock<DirState>>> {
        if let Some(st) = self.dirs.get(dir.ino) {
            return Ok(st);
        }
        if dir.kind != Kind::Dir {
            return Err(errno(c::ENOTDIR));
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
                if st.st_mode & c::S_IFMT == c::S_IFDIR {
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
            .open_child(&self.layers, e.layer, name, c::O_PATH | c::O_NOFOLLOW)
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
            let Ok(obj) = lower.open_child(&self.layers, e.layer, name, c::O_PATH | c::O_NOFOLLOW)
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

    fn lower_index(&self, lower: Option<&LowerRef>) -> io::Result<Arc<DirListing>> {
        match lower {
            Some(l) if !l.dir_layers.is_empty() => {
                crate::union::merge::merge_lower_dir(&self.layers, l).map(Arc::new)
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
            .and_then(|c| sys::open_beneath(dir.as_fd(), &c, c::O_PATH | c::O_NOFOLLOW, 0))
            .ok()?;
        let value = ovl::get(obj.as_fd(), Marker::Redirect)?;
        let path: Vec<u8> = match value.strip_prefix(b"/") {
            Some(abs) => abs.to_vec(),
            None => relpath::join(&parent_lower?.rel, &value),
        };
        self.resolve_lower_path(&path)
    }

    /// The inode number of an upper entry: the lower object's number when the upper object
    /// continues it (a merged directory, or a copied-up file carrying an origin), so numbers
    /// survive copy-up and remount; otherwise a number of the upper layer.
    fn upper_entry_ino(
        &self,
        dir: &OwnedFd,
        name: &[u8],
        st: &c::stat,
        lower: Option<(&ListingEntry, Option<&LowerRef>)>,
    ) -> u64 {
        let upper_is_dir = st.st_mode & c::S_IFMT == c::S_IFDIR;
        // Names of one hard-linked upper file must share one number, whichever is met first.
        let hard_linked = st.st_nlink > 1 && !upper_is_dir;
        if hard_linked {
            if let Some(ino) = self.upper_link_inos.lock().get(&st.st_ino) {
                return *ino;
            }
        }
        let ino = match lower {
            Some((lower, parent_lower))
                if self.continues_lower(dir, name, upper_is_dir, lower, parent_lower) =>
            {
                lower_ino(lower.layer, lower.attr().host_ino)
            }
            _ => upper_ino(st.st_ino),
        };
        if hard_linked {
            return *self.upper_link_inos.lock().entry(st.st_ino).or_insert(ino);
        }
        ino
    }

    /// Whether upper entry `name` of `dir` continues `lower`, the lower entry of that name
    /// (`parent_lower` its directory).
    fn continues_lower(
        &self,
        dir: &OwnedFd,
        name: &[u8],
        upper_is_dir: bool,
        lower: &ListingEntry,
        parent_lower: Option<&LowerRef>,
    ) -> bool {
        let lower_is_dir = lower.attr().kind() == Kind::Dir;
        let Ok(obj) = sys::cstr(name)
            .and_then(|c| sys::open_beneath(dir.as_fd(), &c, c::O_PATH | c::O_NOFOLLOW, 0))
        else {
            return false;
        };
        if upper_is_dir {
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
        }
    }

    /// The origin value of entry `name` of lower directory `dir` in layer `slot` (None when
    /// the layer's filesystem gives no file handles: nothing to compare with then).
    fn lower_origin(&self, dir: Option<&LowerRef>, slot: u16, name: &[u8]) -> Option<Vec<u8>> {
        let obj = dir?
            .open_child(&self.layers, slot, name, c::O_PATH | c::O_NOFOLLOW)
            .ok()?;
        ovl::origin_value(obj.as_fd()).ok()
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

fn is_opaque_dir(dir: &OwnedFd) -> bool {
    whiteout::dir_opacity(dir.as_fd()) == Opacity::Opaque
        || sys::stat_at(
            dir.as_fd(),
            &sys::cstr(whiteout::OPAQUE_MARKER).expect("no NUL"),
        )
        .is_ok()
}
