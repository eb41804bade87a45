#![allow(dead_code)] // shared by several test crates, each using part of it
//! Snapshots of a directory tree (a merged mount or a raw upper dir) and their comparison.
//!
//! What is compared, and what is skipped and why:
//! - every entry: name, type, permission bits, uid/gid, user.* xattrs;
//! - non-directories: size, link count, and which names share one inode (link groups);
//! - regular files: content (fingerprint); symlinks: target; devices: major:minor;
//! - mtimes only when one side is "old" (before `OLD_TIME_LIMIT`): those come from the lower
//!   layers or from explicit utimes calls and must be kept exactly; newer ones are wall-clock
//!   times of the two runs and cannot match;
//! - skipped everywhere: st_ino and st_dev (each filesystem numbers its own inodes; only the
//!   link structure is comparable), atime (the kernel mount updates it, stratafs is noatime),
//!   ctime (wall clock), directory sizes (they depend on the history of the backing fs) and
//!   directory link counts (overlayfs reports 1 for merged dirs, other values are allowed).
//!
//! Upper dirs ("raw" snapshots) are compared in the kernel's format: whiteouts are char 0:0
//! entries and the overlay xattrs (trusted.overlay.*, or user.overlay.* for `userxattr` mounts)
//! are compared too, except for bookkeeping the kernel keeps for itself and that stratafs does
//! not write (named here in the trusted namespace):
//! - trusted.overlay.origin: a file handle of the lower object; unique per filesystem instance;
//! - trusted.overlay.impure: marks dirs holding copied-up or moved entries, for d_ino fixups
//!   with xino/index; it changes no content;
//! - trusted.overlay.uuid: the kernel's per-overlay identity stored on the upper root;
//! - trusted.overlay.index / the index dir: only with index=on.
//!
//! Whiteout link counts are skipped too: the kernel hard-links whiteouts to one shared inode.
//! Opaque marks on directories with nothing below them are dropped before comparing: they hide
//! nothing, and the kernel sets them as a lookup shortcut where stratafs does not.
//! Redirects are normalized to absolute paths: the kernel writes a relative redirect (the old
//! name) for a rename inside one directory, which means the same lower dir as the absolute form.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::ops::{fnv, kind_name, OLD_TIME_LIMIT};
use super::sysc;
use crate::common::Ns;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    Small(Vec<u8>),
    Large { len: u64, fnv: u64 },
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub kind: &'static str,
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub nlink: u64,
    /// 512-byte blocks allocated (not compared: it depends on the backing fs).
    pub blocks: u64,
    pub mtime: i64,
    pub ino: (u64, u64),
    pub content: Option<Content>,
    pub target: Option<Vec<u8>>,
    pub rdev: Option<(u32, u32)>,
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// The first path (in name order) naming the same inode, for non-directories.
    pub link_group: Option<String>,
    /// Upper view, directories: the lower path this dir merges with (its redirect, or its
    /// parent's lower path plus its name).
    pub lower_path: Option<String>,
}

impl Entry {
    pub fn is_whiteout(&self) -> bool {
        self.kind == "chardev" && self.rdev == Some((0, 0))
    }
}

pub type Tree = BTreeMap<String, Entry>;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum View {
    /// A mounted union: user.* xattrs only.
    Merged,
    /// An upper dir read directly, in the kernel overlayfs format with markers in namespace
    /// `Ns` (trusted.overlay.*, or user.overlay.* as the kernel writes with `userxattr`).
    Upper(Ns),
}

/// Overlay xattrs (without their namespace prefix) the comparison skips; see the module doc.
const SKIPPED_OVERLAY_XATTRS: &[&str] = &["origin", "impure", "uuid", "index"];

/// Whether the comparison of a tree read in `view` keeps the xattr `name`.
pub fn keep_xattr(view: View, name: &str) -> bool {
    match view {
        // Merged views show no overlay marker of either namespace: one leaking shows up as
        // a difference (the kernel hides them).
        View::Merged => name.starts_with("user."),
        View::Upper(ns) => {
            let skipped = SKIPPED_OVERLAY_XATTRS.iter().any(|x| name == ns.name(x));
            !skipped && (name.starts_with("user.") || name.starts_with(&ns.name("")))
        }
    }
}

fn io_errno(e: std::io::Error) -> String {
    e.to_string()
}

/// Walks `root` (not following symlinks) and records every entry below it. The root itself is
/// recorded as "." without content.
pub fn snapshot(root: &Path, view: View) -> Result<Tree, String> {
    let mut tree = Tree::new();
    walk(root, root, view, &mut tree)?;
    // Link groups: the first path per inode among non-directories (whiteouts excluded).
    let mut first: BTreeMap<(u64, u64), String> = BTreeMap::new();
    for (path, e) in tree.iter() {
        if e.kind != "dir" && !e.is_whiteout() {
            first.entry(e.ino).or_insert_with(|| path.clone());
        }
    }
    for e in tree.values_mut() {
        if e.kind != "dir" && !e.is_whiteout() {
            e.link_group = first.get(&e.ino).cloned();
        }
    }
    if let View::Upper(ns) = view {
        normalize_redirects(&mut tree, ns);
    }
    Ok(tree)
}

fn rel_of(root: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(root).expect("walk stays under its root");
    if rel.as_os_str().is_empty() {
        ".".into()
    } else {
        String::from_utf8_lossy(rel.as_os_str().as_bytes()).into_owned()
    }
}

fn walk(root: &Path, path: &Path, view: View, tree: &mut Tree) -> Result<(), String> {
    let rel = rel_of(root, path);
    let st = sysc::lstat(path).map_err(|e| format!("lstat {rel}: {}", sysc::errno_name(e)))?;
    let kind = kind_name(st.st_mode);
    let mut xattrs = BTreeMap::new();
    let names =
        sysc::llistxattr(path).map_err(|e| format!("listxattr {rel}: {}", sysc::errno_name(e)))?;
    for name in names {
        let n = String::from_utf8_lossy(&name).into_owned();
        if !keep_xattr(view, &n) {
            continue;
        }
        let v = sysc::lgetxattr(path, &name)
            .map_err(|e| format!("getxattr {rel} {n}: {}", sysc::errno_name(e)))?;
        xattrs.insert(n, v);
    }
    let mut entry = Entry {
        kind,
        perm: st.st_mode & 0o7777,
        uid: st.st_uid,
        gid: st.st_gid,
        size: st.st_size as u64,
        nlink: st.st_nlink,
        blocks: st.st_blocks as u64,
        mtime: st.st_mtime,
        ino: (st.st_dev, st.st_ino),
        content: None,
        target: None,
        rdev: None,
        xattrs,
        link_group: None,
        lower_path: None,
    };
    match kind {
        "file" => entry.content = Some(read_content(path).map_err(|e| format!("read {rel}: {e}"))?),
        "symlink" => {
            entry.target = Some(
                std::fs::read_link(path)
                    .map_err(|e| format!("readlink {rel}: {}", io_errno(e)))?
                    .as_os_str()
                    .as_bytes()
                    .to_vec(),
            )
        }
        "chardev" | "blockdev" => {
            entry.rdev = Some((libc::major(st.st_rdev), libc::minor(st.st_rdev)))
        }
        _ => {}
    }
    tree.insert(rel.clone(), entry);
    if kind == "dir" {
        let mut names: Vec<_> = std::fs::read_dir(path)
            .map_err(|e| format!("readdir {rel}: {}", io_errno(e)))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(|e| format!("readdir {rel}: {}", io_errno(e)))?;
        names.sort();
        for name in names {
            walk(root, &path.join(name), view, tree)?;
        }
    }
    Ok(())
}

fn read_content(path: &Path) -> Result<Content, String> {
    let mut f = std::fs::File::open(path).map_err(io_errno)?;
    let mut data = Vec::new();
    f.read_to_end(&mut data).map_err(io_errno)?;
    if data.len() <= 64 {
        Ok(Content::Small(data))
    } else {
        Ok(Content::Large {
            len: data.len() as u64,
            fnv: fnv(&data),
        })
    }
}

/// Rewrites relative overlay redirect values as the absolute lower path they denote.
fn normalize_redirects(tree: &mut Tree, ns: Ns) {
    let redirect_name = ns.name("redirect");
    // The lower path each directory reads from: its redirect, or its parent's plus its name.
    let mut lower_path: BTreeMap<String, String> = BTreeMap::new();
    lower_path.insert(".".into(), String::new());
    let paths: Vec<String> = tree.keys().cloned().collect();
    for path in paths {
        if path == "." {
            continue;
        }
        let (parent, name) = match path.rsplit_once('/') {
            Some((p, n)) => (p.to_string(), n.to_string()),
            None => (".".to_string(), path.clone()),
        };
        let parent_lower = lower_path.get(&parent).cloned().unwrap_or_default();
        let entry = tree.get_mut(&path).expect("path from the key list");
        if entry.kind != "dir" {
            continue;
        }
        let redirect = entry.xattrs.get(&redirect_name).cloned();
        let lower = match redirect {
            Some(r) if r.starts_with(b"/") => String::from_utf8_lossy(&r).into_owned(),
            Some(r) => {
                let abs = format!("{parent_lower}/{}", String::from_utf8_lossy(&r));
                entry
                    .xattrs
                    .insert(redirect_name.clone(), abs.clone().into_bytes());
                abs
            }
            None => format!("{parent_lower}/{name}"),
        };
        entry.lower_path = Some(lower.clone());
        lower_path.insert(path, lower);
    }
}

/// True if the lower layers show nothing at `lower_path`, so an opaque mark there hides
/// nothing. (The kernel marks every directory it creates in a merged dir opaque, as a lookup
/// shortcut, and pure-upper dirs moved into a merged dir; stratafs marks them only where
/// something lower exists. Both are the same union.) Looks the path up top layer first, the way
/// overlayfs does: a whiteout or non-directory on the way, or an opaque dir, ends the search.
fn nothing_below(lower_layers: &[PathBuf], lower_path: &str, ns: Ns) -> bool {
    let opaque = ns.name("opaque");
    let parts: Vec<&str> = lower_path.split('/').filter(|p| !p.is_empty()).collect();
    if parts.is_empty() {
        return false; // the root always merges with the lower roots
    }
    for layer in lower_layers.iter().rev() {
        let mut at = layer.clone();
        let mut opaque_ancestor = false;
        for (i, part) in parts.iter().enumerate() {
            at.push(part);
            match sysc::lstat(&at) {
                // Absent here: the next layer down decides, unless an opaque dir hides it.
                Err(_) if opaque_ancestor => return true,
                Err(_) => break,
                // A whiteout or a non-directory hides everything below.
                Ok(st) if st.st_mode & libc::S_IFMT != libc::S_IFDIR => return true,
                // A lower directory: the mark matters.
                Ok(_) if i + 1 == parts.len() => return false,
                Ok(_) => {
                    opaque_ancestor |=
                        sysc::lgetxattr(&at, opaque.as_bytes()).is_ok_and(|v| v == b"y")
                }
            }
        }
    }
    true
}

fn without_noop_opaque(e: &Entry, lower_layers: &[PathBuf], ns: Ns) -> BTreeMap<String, Vec<u8>> {
    let mut x = e.xattrs.clone();
    if let Some(lp) = &e.lower_path {
        if nothing_below(lower_layers, lp, ns) {
            x.remove(&ns.name("opaque"));
        }
    }
    x
}

/// Lists every difference between two snapshots (empty: they match). For upper views,
/// `lower_layers` are the layers below them (to tell a meaningful opaque mark from a no-op).
pub fn diff(
    a_name: &str,
    a: &Tree,
    b_name: &str,
    b: &Tree,
    view: View,
    lower_layers: &[PathBuf],
) -> Vec<String> {
    let mut out = Vec::new();
    for (path, ea) in a {
        let Some(eb) = b.get(path) else {
            out.push(format!("{path}: only in {a_name} ({})", ea.kind));
            continue;
        };
        let mut field = |what: &str, va: String, vb: String| {
            if va != vb {
                out.push(format!("{path}: {what}: {a_name} {va}, {b_name} {vb}"));
            }
        };
        field("type", ea.kind.into(), eb.kind.into());
        if ea.kind != eb.kind {
            continue;
        }
        if path != "." {
            field("mode", format!("{:o}", ea.perm), format!("{:o}", eb.perm));
            field(
                "owner",
                format!("{}:{}", ea.uid, ea.gid),
                format!("{}:{}", eb.uid, eb.gid),
            );
        }
        // A metacopy file keeps its data in a lower layer: the kernel keeps it metacopy through
        // a rename (with a redirect), stratafs brings the data up on rename. Both are valid
        // upper formats; the merged views and the cross-mount stages compare the content.
        let ns = match view {
            View::Upper(ns) => ns,
            View::Merged => Ns::Trusted,
        };
        let metacopy_name = ns.name("metacopy");
        let metacopy = matches!(view, View::Upper(_))
            && ea.kind == "file"
            && (ea.xattrs.contains_key(&metacopy_name) || eb.xattrs.contains_key(&metacopy_name));
        let data_xattrs = |e: &Entry| {
            let mut x = without_noop_opaque(e, lower_layers, ns);
            if metacopy {
                x.remove(&metacopy_name);
                x.remove(&ns.name("redirect"));
            }
            x
        };
        field(
            "xattrs",
            fmt_xattrs(&data_xattrs(ea)),
            fmt_xattrs(&data_xattrs(eb)),
        );
        if ea.kind != "dir" {
            field("size", ea.size.to_string(), eb.size.to_string());
            let whiteouts = matches!(view, View::Upper(_)) && ea.is_whiteout();
            if !whiteouts {
                field("nlink", ea.nlink.to_string(), eb.nlink.to_string());
                field(
                    "hard links",
                    format!("{:?}", ea.link_group),
                    format!("{:?}", eb.link_group),
                );
            }
        }
        if !metacopy {
            field(
                "content",
                format!("{:?}", ea.content),
                format!("{:?}", eb.content),
            );
        }
        field(
            "symlink target",
            format!(
                "{:?}",
                ea.target.as_ref().map(|t| String::from_utf8_lossy(t))
            ),
            format!(
                "{:?}",
                eb.target.as_ref().map(|t| String::from_utf8_lossy(t))
            ),
        );
        field("rdev", format!("{:?}", ea.rdev), format!("{:?}", eb.rdev));
        let old = ea.mtime < OLD_TIME_LIMIT || eb.mtime < OLD_TIME_LIMIT;
        if view == View::Merged && old && path != "." {
            field("mtime", ea.mtime.to_string(), eb.mtime.to_string());
        }
    }
    for (path, eb) in b {
        if !a.contains_key(path) {
            out.push(format!("{path}: only in {b_name} ({})", eb.kind));
        }
    }
    out
}

fn fmt_xattrs(x: &BTreeMap<String, Vec<u8>>) -> String {
    let parts: Vec<String> = x
        .iter()
        .map(|(k, v)| format!("{k}={:?}", String::from_utf8_lossy(v)))
        .collect();
    format!("{{{}}}", parts.join(", "))
}
