//! Snapshots of trees deeper than PATH_MAX, walked directory by directory through open fds,
//! and their comparison; the same rules as the write differential's snapshots (see
//! write_union/tree.rs), reduced to what the deep-path tests make: names, types, modes,
//! owners, sizes, link counts and link groups, contents, symlink targets, devices, user.*
//! xattrs, and in upper dirs the overlay markers of the mount's format (without the kernel's bookkeeping: origin,
//! impure, uuid, index; and without opaque marks on directories that have nothing below them,
//! which the kernel sets as a lookup shortcut).

use std::collections::{BTreeMap, BTreeSet};

use super::at::{show, Dir};
use crate::sysc::errno_name;
use crate::tree::keep_xattr;
pub use crate::tree::View;

struct Entry {
    kind: &'static str,
    line: String,
    ino: (u64, u64),
    xattrs: BTreeMap<String, Vec<u8>>,
}

/// Every entry below `root` by path ("a/b", names in full), without the root itself.
fn walk(root: &Dir, view: View) -> Result<BTreeMap<Vec<u8>, Entry>, String> {
    let mut out = BTreeMap::new();
    walk_into(root, Vec::new(), view, &mut out)?;
    Ok(out)
}

fn walk_into(
    dir: &Dir,
    rel: Vec<u8>,
    view: View,
    out: &mut BTreeMap<Vec<u8>, Entry>,
) -> Result<(), String> {
    let here = |name: &[u8]| {
        if rel.is_empty() {
            name.to_vec()
        } else {
            [&rel[..], b"/", name].concat()
        }
    };
    let fail = |what: &str, name: &[u8], e: i32| {
        format!("{what} {}: {}", display(&here(name)), errno_name(e))
    };
    let names = dir.names().map_err(|e| fail("readdir", b"", e))?;
    for name in names {
        let st = dir.stat(&name).map_err(|e| fail("stat", &name, e))?;
        let kind = crate::ops::kind_name(st.st_mode);
        let xattrs: BTreeMap<String, Vec<u8>> = dir
            .xattrs(&name)
            .map_err(|e| fail("listxattr", &name, e))?
            .into_iter()
            .filter(|(n, _)| keep_xattr(view, n))
            .collect();
        let mut line = format!(
            "{kind} {:o} {}:{}",
            st.st_mode & 0o7777,
            st.st_uid,
            st.st_gid
        );
        let whiteout = kind == "chardev" && st.st_rdev == 0;
        if kind != "dir" {
            line += &format!(" size {}", st.st_size);
        }
        if kind != "dir" && !whiteout {
            line += &format!(" nlink {}", st.st_nlink);
        }
        match kind {
            "file" => {
                let data = dir.read(&name).map_err(|e| fail("read", &name, e))?;
                line += &format!(" content {:?}", String::from_utf8_lossy(&data));
            }
            "symlink" => {
                let target = dir
                    .readlink(&name)
                    .map_err(|e| fail("readlink", &name, e))?;
                line += &format!(" -> {:?}", String::from_utf8_lossy(&target));
            }
            "chardev" | "blockdev" => {
                line += &format!(
                    " dev {}:{}",
                    libc::major(st.st_rdev),
                    libc::minor(st.st_rdev)
                )
            }
            _ => {}
        }
        let path = here(&name);
        if kind == "dir" {
            let sub = dir.sub(&name).map_err(|e| fail("open", &name, e))?;
            walk_into(&sub, path.clone(), view, out)?;
        }
        let ino = if kind == "dir" || whiteout {
            (0, 0)
        } else {
            (st.st_dev, st.st_ino)
        };
        out.insert(
            path,
            Entry {
                kind,
                line,
                ino,
                xattrs,
            },
        );
    }
    Ok(())
}

/// A path as reports show it: each long name shortened.
pub fn display(path: &[u8]) -> String {
    path.split(|b| *b == b'/')
        .map(show)
        .collect::<Vec<_>>()
        .join("/")
}

/// The directories of a layer, by path: where an upper dir's opaque mark hides something.
pub fn dirs_of(layer: &Dir) -> Result<BTreeSet<Vec<u8>>, String> {
    Ok(walk(layer, View::Merged)?
        .into_iter()
        .filter(|(_, e)| e.kind == "dir")
        .map(|(p, _)| p)
        .collect())
}

/// The tree below `root`: one line per entry, keyed by its displayed path. For an upper
/// view, `lower_dirs` are the directories of the (single) lower layer.
pub fn snapshot(
    root: &Dir,
    view: View,
    lower_dirs: &BTreeSet<Vec<u8>>,
) -> Result<BTreeMap<String, String>, String> {
    let entries = walk(root, view)?;
    // Link groups: the first path naming each non-directory inode.
    let mut first: BTreeMap<(u64, u64), Vec<u8>> = BTreeMap::new();
    for (path, e) in &entries {
        if e.ino != (0, 0) {
            first.entry(e.ino).or_insert_with(|| path.clone());
        }
    }
    // The lower path each upper directory merges with: its redirect, else its parent's
    // lower path and its name.
    let mut lower_path: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for (path, e) in &entries {
        let mut xattrs = e.xattrs.clone();
        if let (View::Upper(ns), "dir") = (view, e.kind) {
            let (parent, name) = match path.iter().rposition(|b| *b == b'/') {
                Some(i) => (&path[..i], &path[i + 1..]),
                None => (&b""[..], &path[..]),
            };
            let parent_lower = lower_path.get(parent).cloned().unwrap_or_default();
            let join = |n: &[u8]| {
                if parent_lower.is_empty() {
                    n.to_vec()
                } else {
                    [&parent_lower[..], b"/", n].concat()
                }
            };
            let lower = match xattrs.get(&ns.name("redirect")) {
                Some(r) if r.starts_with(b"/") => r[1..].to_vec(),
                Some(r) => join(r),
                None => join(name),
            };
            if !lower_dirs.contains(&lower) {
                xattrs.remove(&ns.name("opaque"));
            }
            lower_path.insert(path.clone(), lower);
        }
        let mut line = e.line.clone();
        if let Some(group) = first.get(&e.ino).filter(|_| e.ino != (0, 0)) {
            line += &format!(" links-with {}", display(group));
        }
        for (n, v) in &xattrs {
            let v = if v.len() > 40 {
                format!("{}…({} bytes)", String::from_utf8_lossy(&v[..12]), v.len())
            } else {
                format!("{:?}", String::from_utf8_lossy(v))
            };
            line += &format!(" {n}={v}");
        }
        out.insert(display(path), line);
    }
    Ok(out)
}

/// The differences between two snapshots, one line each (empty: the same).
pub fn diff(
    a_name: &str,
    a: &BTreeMap<String, String>,
    b_name: &str,
    b: &BTreeMap<String, String>,
) -> Vec<String> {
    let paths: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    paths
        .into_iter()
        .filter_map(|p| match (a.get(p), b.get(p)) {
            (Some(x), Some(y)) if x == y => None,
            (x, y) => Some(format!(
                "{p}:\n    {a_name}: {}\n    {b_name}: {}",
                x.map_or("(absent)", |s| s.as_str()),
                y.map_or("(absent)", |s| s.as_str())
            )),
        })
        .collect()
}
