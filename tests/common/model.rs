//! The expected union of a stack, computed straight from the layer directories: the oracle
//! both stratafs and kernel overlayfs are held to.
//!
//! Rules (layers bottom first, the later layer wins):
//! - a whiteout hides the name in the layers below its own; whiteouts are never shown.
//!   Whiteouts are: a char device 0:0; an entry `.wh.NAME`; a zero-size regular file with
//!   `trusted.overlay.whiteout` or `user.overlay.whiteout` inside a directory copy marked
//!   `*.overlay.opaque=x`.
//! - names starting with `.wh.` are never shown (`.wh..wh..opq` marks its directory opaque,
//!   other `.wh..wh.*` names are AUFS metadata and hide nothing).
//! - a directory copy with `.wh..wh..opq` or `*.overlay.opaque=y` hides the directory copies
//!   below it; opacity on a layer's root is not modelled (stacks here never set it).
//! - a non-directory hides everything below it; a directory over a non-directory starts a
//!   new merge.
//! - the attributes of a name are those of its topmost copy, minus the `trusted.overlay.*`
//!   and `user.overlay.*` xattrs.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::sys;
use super::walk::{record, Snapshot};

pub const OVERLAY_XATTR_PREFIXES: [&str; 2] = ["trusted.overlay.", "user.overlay."];

pub fn is_overlay_xattr(name: &str) -> bool {
    OVERLAY_XATTR_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// How a directory copy marks itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opacity {
    Transparent,
    /// `.wh..wh..opq` or opaque=y.
    Opaque,
    /// opaque=x: merges, and may hold xattr whiteouts.
    XattrWhiteouts,
}

/// How one directory entry in one layer is to be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    /// A real object; `true` for a directory.
    Object(bool),
    /// Hides NAME below: (format, target name).
    Whiteout(WhiteoutKind, OsString),
    /// `.wh..wh..opq`.
    OpaqueMarker,
    /// Other `.wh.` names: shown never, hide nothing.
    Hidden,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WhiteoutKind {
    CharDev,
    Aufs,
    Xattr,
}

/// One layer's copy of a directory, classified.
pub struct DirCopy {
    pub opacity: Opacity,
    /// Entry name to its meaning, in name order.
    pub items: BTreeMap<OsString, Item>,
}

impl DirCopy {
    pub fn objects(&self) -> impl Iterator<Item = (&OsString, bool)> {
        self.items.iter().filter_map(|(n, i)| match i {
            Item::Object(d) => Some((n, *d)),
            _ => None,
        })
    }

    pub fn whiteouts(&self) -> BTreeSet<&OsString> {
        self.items
            .values()
            .filter_map(|i| match i {
                Item::Whiteout(_, t) => Some(t),
                _ => None,
            })
            .collect()
    }

    pub fn object(&self, name: &OsString) -> Option<bool> {
        match self.items.get(name) {
            Some(Item::Object(d)) => Some(*d),
            _ => None,
        }
    }
}

pub fn dir_opacity(dir: &Path) -> Opacity {
    let mut result = Opacity::Transparent;
    for prefix in OVERLAY_XATTR_PREFIXES {
        match sys::get_xattr(dir, &format!("{prefix}opaque")) {
            Ok(Some(v)) if v == b"y" => return Opacity::Opaque,
            Ok(Some(v)) if v == b"x" => result = Opacity::XattrWhiteouts,
            _ => {}
        }
    }
    if dir.join(".wh..wh..opq").symlink_metadata().is_ok() {
        return Opacity::Opaque;
    }
    result
}

pub fn has_whiteout_xattr(path: &Path) -> bool {
    OVERLAY_XATTR_PREFIXES
        .iter()
        .any(|p| matches!(sys::get_xattr(path, &format!("{p}whiteout")), Ok(Some(_))))
}

pub fn read_dir_copy(dir: &Path) -> DirCopy {
    let opacity = dir_opacity(dir);
    let mut items = BTreeMap::new();
    let rd = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("readdir {}: {e}", dir.display()));
    for item in rd {
        let item = item.expect("readdir entry");
        let name = item.file_name();
        let b = name.as_bytes();
        let meaning = if b == b".wh..wh..opq" {
            Item::OpaqueMarker
        } else if b.starts_with(b".wh..wh.") {
            Item::Hidden
        } else if let Some(target) = b.strip_prefix(b".wh.") {
            if target.is_empty() || target == b"." || target == b".." {
                Item::Hidden
            } else {
                Item::Whiteout(
                    WhiteoutKind::Aufs,
                    OsString::from(std::ffi::OsStr::from_bytes(target)),
                )
            }
        } else {
            let md = item.path().symlink_metadata().expect("lstat");
            let ft = md.file_type();
            if ft.is_char_device() && md.rdev() == 0 {
                Item::Whiteout(WhiteoutKind::CharDev, name.clone())
            } else if ft.is_file()
                && md.len() == 0
                && opacity == Opacity::XattrWhiteouts
                && has_whiteout_xattr(&item.path())
            {
                Item::Whiteout(WhiteoutKind::Xattr, name.clone())
            } else {
                Item::Object(ft.is_dir())
            }
        };
        items.insert(name, meaning);
    }
    DirCopy { opacity, items }
}

/// Every visible path of the union of `layers` (bottom first), mapped to the index of the
/// layer its attributes come from. The root is the empty path.
pub fn visible(layers: &[PathBuf]) -> BTreeMap<PathBuf, usize> {
    let mut out = BTreeMap::new();
    if layers.is_empty() {
        return out;
    }
    out.insert(PathBuf::new(), layers.len() - 1);
    let stack: Vec<usize> = (0..layers.len()).rev().collect();
    merge(layers, Path::new(""), &stack, &mut out);
    out
}

/// Merges directory `rel` whose copies are in `stack` (layer indexes, top first).
fn merge(layers: &[PathBuf], rel: &Path, stack: &[usize], out: &mut BTreeMap<PathBuf, usize>) {
    let mut copies: Vec<(usize, DirCopy)> = Vec::new();
    for &l in stack {
        let copy = read_dir_copy(&layers[l].join(rel));
        let opaque = copy.opacity == Opacity::Opaque && !rel.as_os_str().is_empty();
        copies.push((l, copy));
        if opaque {
            break;
        }
    }
    // name -> Some((position in copies, is_dir)) if shown, None if whited out.
    let mut decided: BTreeMap<OsString, Option<(usize, bool)>> = BTreeMap::new();
    for (pos, (_, copy)) in copies.iter().enumerate() {
        // A layer's own objects win over its whiteouts, which apply to the layers below.
        for (name, is_dir) in copy.objects() {
            decided.entry(name.clone()).or_insert(Some((pos, is_dir)));
        }
        for name in copy.whiteouts() {
            decided.entry(name.clone()).or_insert(None);
        }
    }
    for (name, d) in decided {
        let Some((pos, is_dir)) = d else { continue };
        let child = rel.join(&name);
        out.insert(child.clone(), copies[pos].0);
        if !is_dir {
            continue;
        }
        let mut chain = vec![copies[pos].0];
        if !copies[pos].1.whiteouts().contains(&name) {
            for (l, copy) in &copies[pos + 1..] {
                match copy.object(&name) {
                    Some(true) => chain.push(*l),
                    Some(false) => break,
                    None => {}
                }
                if copy.whiteouts().contains(&name) {
                    break;
                }
            }
        }
        merge(layers, &child, &chain, out);
    }
}

/// How one name reads in one layer's copy of a directory.
enum NameIn {
    Absent,
    /// A whiteout, or an entry shadowed by one in the same copy.
    WhitedOut,
    /// An object (true: a directory); `also_whiteout` if the same copy whites out the name
    /// for the layers below.
    Object {
        is_dir: bool,
        also_whiteout: bool,
    },
}

fn name_in(dir: &Path, name: &std::ffi::OsStr) -> NameIn {
    let mut wh = OsString::from(".wh.");
    wh.push(name);
    let aufs = dir.join(&wh).symlink_metadata().is_ok();
    let p = dir.join(name);
    let Ok(md) = p.symlink_metadata() else {
        return if aufs {
            NameIn::WhitedOut
        } else {
            NameIn::Absent
        };
    };
    let ft = md.file_type();
    let whiteout = (ft.is_char_device() && md.rdev() == 0)
        || (ft.is_file()
            && md.len() == 0
            && dir_opacity(dir) == Opacity::XattrWhiteouts
            && has_whiteout_xattr(&p));
    if whiteout {
        NameIn::WhitedOut
    } else {
        NameIn::Object {
            is_dir: ft.is_dir(),
            also_whiteout: aufs,
        }
    }
}

/// Whether `rel` is visible in the union of `layers` (bottom first): the rules of
/// [`visible`] applied along one path only.
pub fn resolves(layers: &[PathBuf], rel: &Path) -> bool {
    let mut stack: Vec<usize> = (0..layers.len()).rev().collect();
    let mut parent = PathBuf::new();
    let components: Vec<_> = rel.iter().collect();
    for (i, name) in components.iter().enumerate() {
        if !parent.as_os_str().is_empty() {
            if let Some(pos) = stack
                .iter()
                .position(|&l| dir_opacity(&layers[l].join(&parent)) == Opacity::Opaque)
            {
                stack.truncate(pos + 1);
            }
        }
        let mut top_is_dir = None;
        let mut chain = Vec::new();
        for &l in &stack {
            match name_in(&layers[l].join(&parent), name) {
                NameIn::Absent => continue,
                NameIn::WhitedOut => break,
                NameIn::Object {
                    is_dir,
                    also_whiteout,
                } => {
                    if top_is_dir.is_none() {
                        top_is_dir = Some(is_dir);
                    } else if !is_dir {
                        break;
                    }
                    if !is_dir {
                        break;
                    }
                    chain.push(l);
                    if also_whiteout {
                        break;
                    }
                }
            }
        }
        match top_is_dir {
            None => return false,
            Some(_) if i + 1 == components.len() => return true,
            Some(false) => return false,
            Some(true) => {}
        }
        stack = chain;
        parent.push(name);
    }
    true
}

/// The tree a correct union of `layers` shows, as [`super::walk::snapshot`] would record it.
/// Inode numbers are those of the layer objects, so hard links show up as shared numbers.
pub fn expected(layers: &[PathBuf]) -> Snapshot {
    let mut snap = Snapshot::default();
    for (rel, l) in visible(layers) {
        let real = layers[l].join(&rel);
        let mut e = record(&real).unwrap_or_else(|err| panic!("{}: {err}", real.display()));
        e.xattrs
            .retain(|(n, _)| !is_overlay_xattr(&n.to_string_lossy()));
        if !rel.as_os_str().is_empty() {
            e.d_ino = Some(e.ino);
        }
        snap.entries.insert(rel, e);
    }
    snap
}
