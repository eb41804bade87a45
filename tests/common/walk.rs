//! Recording a whole tree (never following symlinks) and diffing two recordings.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirEntryExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::sys;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
    Symlink,
    Fifo,
    CharDev,
    BlockDev,
    Socket,
}

/// What one path looks like. Fields that do not apply to the object's kind are None.
#[derive(Clone, Debug)]
pub struct Entry {
    pub kind: Kind,
    /// Permission bits with setuid/setgid/sticky (no file type).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Non-directories only (a directory's size is filesystem-specific).
    pub size: Option<u64>,
    /// Hash of the whole content, regular files only.
    pub content: Option<u64>,
    pub target: Option<OsString>,
    /// (major, minor) of device nodes.
    pub rdev: Option<(u32, u32)>,
    /// Every xattr, sorted by name.
    pub xattrs: Vec<(OsString, Vec<u8>)>,
    /// Non-directories only (a merged directory may report 1).
    pub nlink: Option<u64>,
    pub mtime: (i64, i64),
    pub ino: u64,
    /// The inode number the parent's readdir gave; None for the root.
    pub d_ino: Option<u64>,
    /// Change time; only recorded by [`snapshot_raw`], to prove a tree was left untouched.
    pub ctime: Option<(i64, i64)>,
}

/// A tree: relative path (empty for the root) to entry.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub entries: BTreeMap<PathBuf, Entry>,
}

/// FNV-1a, 64 bits: enough to tell contents apart in a test.
pub fn hash_bytes(mut h: u64, data: &[u8]) -> u64 {
    for b in data {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

fn hash_file(path: &Path) -> std::io::Result<u64> {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    let mut h = FNV_OFFSET;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(h);
        }
        h = hash_bytes(h, &buf[..n]);
    }
}

fn kind_of(ft: std::fs::FileType) -> Kind {
    if ft.is_dir() {
        Kind::Dir
    } else if ft.is_file() {
        Kind::File
    } else if ft.is_symlink() {
        Kind::Symlink
    } else if ft.is_fifo() {
        Kind::Fifo
    } else if ft.is_char_device() {
        Kind::CharDev
    } else if ft.is_block_device() {
        Kind::BlockDev
    } else {
        Kind::Socket
    }
}

/// Records the object at `path` (not following a symlink).
pub fn record(path: &Path) -> std::io::Result<Entry> {
    let md = std::fs::symlink_metadata(path)?;
    let kind = kind_of(md.file_type());
    let mut xattrs = Vec::new();
    for name in sys::list_xattrs(path)? {
        let value = sys::get_xattr(path, name.to_str().expect("UTF-8 xattr name"))?;
        xattrs.push((name, value.unwrap_or_default()));
    }
    xattrs.sort();
    let is_dir = kind == Kind::Dir;
    Ok(Entry {
        kind,
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        size: (!is_dir).then(|| md.size()),
        content: if kind == Kind::File {
            Some(hash_file(path)?)
        } else {
            None
        },
        target: if kind == Kind::Symlink {
            Some(std::fs::read_link(path)?.into_os_string())
        } else {
            None
        },
        rdev: matches!(kind, Kind::CharDev | Kind::BlockDev)
            .then(|| (libc::major(md.rdev()), libc::minor(md.rdev()))),
        xattrs,
        nlink: (!is_dir).then(|| md.nlink()),
        mtime: (md.mtime(), md.mtime_nsec()),
        ino: md.ino(),
        d_ino: None,
        ctime: None,
    })
}

fn walk_into(root: &Path, rel: &Path, out: &mut Snapshot) -> std::io::Result<()> {
    let dir = root.join(rel);
    for item in std::fs::read_dir(&dir)? {
        let item = item?;
        let child_rel = rel.join(item.file_name());
        let mut entry = record(&item.path()).map_err(|e| {
            std::io::Error::new(e.kind(), format!("{}: {e}", item.path().display()))
        })?;
        entry.d_ino = Some(item.ino());
        let is_dir = entry.kind == Kind::Dir;
        out.entries.insert(child_rel.clone(), entry);
        if is_dir {
            walk_into(root, &child_rel, out)?;
        }
    }
    Ok(())
}

/// Records every path under `root` (the root itself has the empty path).
pub fn snapshot(root: &Path) -> Snapshot {
    let mut out = Snapshot::default();
    let top = record(root).unwrap_or_else(|e| panic!("stat {}: {e}", root.display()));
    out.entries.insert(PathBuf::new(), top);
    walk_into(root, Path::new(""), &mut out)
        .unwrap_or_else(|e| panic!("walking {}: {e}", root.display()));
    out
}

/// Like [`snapshot`], plus change times: two equal raw snapshots mean nothing was modified.
pub fn snapshot_raw(root: &Path) -> Snapshot {
    let mut snap = snapshot(root);
    for (rel, e) in snap.entries.iter_mut() {
        let md = std::fs::symlink_metadata(root.join(rel)).expect("lstat");
        e.ctime = Some((md.ctime(), md.ctime_nsec()));
    }
    snap
}

/// How a path is shown in messages: absolute within the tree, escapes visible.
pub fn show(rel: &Path) -> String {
    let s = format!("{:?}", Path::new("/").join(rel));
    s.trim_matches('"').to_string()
}

fn show_xattrs(x: &[(OsString, Vec<u8>)]) -> String {
    let parts: Vec<String> = x
        .iter()
        .map(|(n, v)| format!("{}=\"{}\"", n.to_string_lossy(), v.escape_ascii()))
        .collect();
    format!("[{}]", parts.join(", "))
}

/// For each path, the other paths that share its inode number.
fn ino_peers(s: &Snapshot) -> BTreeMap<&Path, BTreeSet<&Path>> {
    let mut by_ino: BTreeMap<u64, BTreeSet<&Path>> = BTreeMap::new();
    for (p, e) in &s.entries {
        by_ino.entry(e.ino).or_default().insert(p.as_path());
    }
    s.entries
        .iter()
        .map(|(p, e)| {
            let mut peers = by_ino[&e.ino].clone();
            peers.remove(p.as_path());
            (p.as_path(), peers)
        })
        .collect()
}

fn show_set(set: &BTreeSet<&Path>) -> String {
    let v: Vec<String> = set.iter().map(|p| show(p)).collect();
    format!("{{{}}}", v.join(", "))
}

/// Every difference between two trees, one readable line each. Raw inode numbers are not
/// compared (filesystems number differently); which paths share an inode number is.
pub fn diff(a_name: &str, a: &Snapshot, b_name: &str, b: &Snapshot) -> Vec<String> {
    let mut out = Vec::new();
    for (name, here, other) in [(a_name, a, b), (b_name, b, a)] {
        for (p, e) in &here.entries {
            if !other.entries.contains_key(p) {
                out.push(format!("{}: only in {name} ({:?})", show(p), e.kind));
            }
        }
    }
    let a_peers = ino_peers(a);
    let b_peers = ino_peers(b);
    for (p, x) in &a.entries {
        let Some(y) = b.entries.get(p) else { continue };
        let mut field = |name: &str, l: String, r: String| {
            if l != r {
                out.push(format!("{}: {name}: {a_name} {l} vs {b_name} {r}", show(p)));
            }
        };
        field("type", format!("{:?}", x.kind), format!("{:?}", y.kind));
        if x.kind != y.kind {
            continue;
        }
        field("mode", format!("{:o}", x.mode), format!("{:o}", y.mode));
        field("uid", x.uid.to_string(), y.uid.to_string());
        field("gid", x.gid.to_string(), y.gid.to_string());
        field("size", format!("{:?}", x.size), format!("{:?}", y.size));
        field(
            "content hash",
            format!("{:?}", x.content),
            format!("{:?}", y.content),
        );
        field(
            "symlink target",
            format!("{:?}", x.target),
            format!("{:?}", y.target),
        );
        field("rdev", format!("{:?}", x.rdev), format!("{:?}", y.rdev));
        field("xattrs", show_xattrs(&x.xattrs), show_xattrs(&y.xattrs));
        field("nlink", format!("{:?}", x.nlink), format!("{:?}", y.nlink));
        field("mtime", format!("{:?}", x.mtime), format!("{:?}", y.mtime));
        if x.ctime.is_some() && y.ctime.is_some() {
            field("ctime", format!("{:?}", x.ctime), format!("{:?}", y.ctime));
            field("ino", x.ino.to_string(), y.ino.to_string());
        }
        let (pa, pb) = (&a_peers[p.as_path()], &b_peers[p.as_path()]);
        if pa != pb {
            out.push(format!(
                "{}: paths sharing its inode: {a_name} {} vs {b_name} {}",
                show(p),
                show_set(pa),
                show_set(pb)
            ));
        }
    }
    out
}

/// Panics with every difference (capped) if the trees differ.
pub fn assert_same(context: &str, a_name: &str, a: &Snapshot, b_name: &str, b: &Snapshot) {
    let d = diff(a_name, a, b_name, b);
    if d.is_empty() {
        return;
    }
    let mut msg = format!(
        "{context}: {} differences between {a_name} and {b_name}:\n",
        d.len()
    );
    for line in d.iter().take(60) {
        let _ = writeln!(msg, "  {line}");
    }
    if d.len() > 60 {
        let _ = writeln!(msg, "  ... and {} more", d.len() - 60);
    }
    panic!("{msg}");
}

/// Entries whose readdir d_ino differs from their st_ino, one line each.
pub fn d_ino_mismatches(s: &Snapshot) -> Vec<String> {
    s.entries
        .iter()
        .filter_map(|(p, e)| match e.d_ino {
            Some(d) if d != e.ino => Some(format!(
                "{}: readdir d_ino {d} but st_ino {}",
                show(p),
                e.ino
            )),
            _ => None,
        })
        .collect()
}

/// Paths of `s` whose final name starts with `prefix`.
pub fn names_starting_with(s: &Snapshot, prefix: &[u8]) -> Vec<String> {
    s.entries
        .keys()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.as_bytes().starts_with(prefix))
        })
        .map(|p| show(p))
        .collect()
}
