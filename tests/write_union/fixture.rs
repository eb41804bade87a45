//! The lower layers every differential run starts from: two layers with merged, opaque and
//! whited-out directories, files of several sizes and owners, symlinks, a fifo, user xattrs and
//! a sparse file. All times are "old" (see `OLD_TIME_LIMIT`), so they are compared exactly.

use std::path::{Path, PathBuf};

use super::ops::pattern;
use super::sysc;
use crate::common::Ns;

/// Layer dirs of a template, bottom first.
pub struct Template {
    pub layers: Vec<PathBuf>,
}

/// Optional extras, kept out of the common fixture because they change what is comparable.
#[derive(Clone, Copy)]
pub struct Extras {
    /// Two hard-linked files `hl1`, `hl2` in the bottom layer.
    pub lower_hardlinks: bool,
    /// The namespace of the opaque marker in the top layer: the one the mounts under test read
    /// (a user namespace can write only user.overlay.*).
    pub ns: Ns,
}

impl Default for Extras {
    fn default() -> Extras {
        Extras {
            lower_hardlinks: false,
            ns: Ns::Trusted,
        }
    }
}

enum Item<'a> {
    File(&'a str, u32, &'a [u8]),
    Big(&'a str, usize, u8),
    Dir(&'a str, u32),
    Symlink(&'a str, &'a str),
    Fifo(&'a str),
    Whiteout(&'a str),
    Owner(&'a str, u32, u32),
    Xattr(&'a str, &'a str, &'a str),
    /// An overlay marker (name without namespace) in the namespace the template is built for.
    Marker(&'a str, &'a str, &'a str),
    Sparse(&'a str, u64, u64),
}

const BOTTOM: &[Item<'static>] = &[
    Item::File("f", 0o644, b"bottom f\n"),
    Item::Big("g", 100, 7),
    Item::Owner("g", 1000, 100),
    Item::Xattr("g", "user.color", "blue"),
    Item::Symlink("h", "f"),
    Item::Fifo("x"),
    Item::Dir("d", 0o755),
    Item::File("d/f", 0o644, b"d/f bottom\n"),
    Item::Big("d/g", 200_000, 3),
    Item::File("d/e", 0o644, b"d/e, whited out above\n"),
    Item::Dir("d/d", 0o755),
    Item::File("d/d/f", 0o644, b"d/d/f, under a whiteout\n"),
    Item::Dir("d/sub", 0o755),
    Item::File("d/sub/f", 0o644, b"deep\n"),
    Item::Dir("d/sub/e", 0o700),
    Item::Symlink("d/sub/h", "../f"),
    Item::Xattr("d/sub", "user.dir", "sub of d"),
    Item::Dir("e", 0o755),
    Item::File("e/f", 0o644, b"e/f, hidden by an opaque dir\n"),
    Item::File("e/h", 0o644, b"e/h, hidden too\n"),
    Item::Dir("sub", 0o755),
    Item::Owner("sub", 1000, 1000),
    Item::File("sub/f", 0o664, b"sub/f\n"),
    Item::Dir("sub/d", 0o755),
    Item::File("sub/d/f", 0o644, b"sub/d/f\n"),
    Item::Big("sub/d/g", 70_000, 11),
    Item::Dir("sub/d/n", 0o755),
    Item::File("sub/d/n/f", 0o600, b"three levels down\n"),
    Item::Sparse("sparse", 4 << 20, 8 << 20),
];

const TOP: &[Item<'static>] = &[
    Item::File("f", 0o640, b"top f\n"),
    Item::Dir("d", 0o750),
    Item::File("d/h", 0o644, b"d/h top\n"),
    Item::Whiteout("d/e"),
    Item::Whiteout("d/d"),
    Item::Dir("d/sub", 0o755),
    Item::File("d/sub/g", 0o644, b"top sub g\n"),
    Item::Xattr("d/sub", "user.dir", "sub of d, top"),
    Item::Dir("e", 0o755),
    Item::Marker("e", "opaque", "y"),
    Item::File("e/g", 0o644, b"opaque g\n"),
    Item::Dir("n", 0o711),
    Item::File("n/f", 0o644, b"n/f top only\n"),
];

fn build(root: &Path, items: &[Item<'_>], ns: Ns) {
    std::fs::create_dir_all(root).expect("create layer dir");
    for item in items {
        match item {
            Item::File(p, mode, data) => {
                std::fs::write(root.join(p), data).expect("write fixture file");
                sysc::chmod(&root.join(p), *mode).expect("chmod fixture file");
            }
            Item::Big(p, len, byte) => {
                std::fs::write(root.join(p), pattern(*len, *byte)).expect("write fixture file")
            }
            Item::Dir(p, mode) => {
                let _ = std::fs::create_dir(root.join(p));
                sysc::chmod(&root.join(p), *mode).expect("chmod fixture dir");
            }
            Item::Symlink(p, t) => sysc::symlink(t, &root.join(p)).expect("fixture symlink"),
            Item::Fifo(p) => {
                sysc::mknod(&root.join(p), libc::S_IFIFO | 0o644, 0).expect("fixture fifo")
            }
            Item::Whiteout(p) => {
                sysc::mknod(&root.join(p), libc::S_IFCHR, 0).expect("fixture whiteout")
            }
            Item::Owner(p, u, g) => sysc::lchown(&root.join(p), *u, *g).expect("fixture chown"),
            Item::Marker(p, n, v) => sysc::lsetxattr(&root.join(p), &ns.name(n), v.as_bytes())
                .expect("fixture overlay marker"),
            Item::Xattr(p, n, v) => {
                sysc::lsetxattr(&root.join(p), n, v.as_bytes()).expect("fixture xattr")
            }
            Item::Sparse(p, data_at, size) => {
                let fd = sysc::open(&root.join(p), libc::O_CREAT | libc::O_WRONLY, 0o644)
                    .expect("fixture sparse file");
                sysc::write_all_at(&fd, Some(*data_at), b"data").expect("write sparse data");
                drop(fd);
                sysc::truncate(&root.join(p), *size).expect("size sparse file");
            }
        }
    }
}

/// Gives every entry below `root` an old, distinct mtime (children before their directory).
fn age(root: &Path) {
    fn visit(path: &Path, n: &mut i64) {
        if let Ok(st) = sysc::lstat(path) {
            if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
                let mut names: Vec<_> = std::fs::read_dir(path)
                    .expect("read fixture dir")
                    .map(|e| e.expect("fixture entry").file_name())
                    .collect();
                names.sort();
                for name in names {
                    visit(&path.join(name), n);
                }
            }
        }
        *n += 1;
        sysc::lutimes(path, 900_000_000 + *n, 1_000_000_000 + *n).expect("age fixture entry");
    }
    let mut n = 0;
    visit(root, &mut n);
}

/// Builds the two-layer fixture under `dir`.
pub fn build_template(dir: &Path, extras: Extras) -> Template {
    let bottom = dir.join("l0");
    let top = dir.join("l1");
    build(&bottom, BOTTOM, extras.ns);
    if extras.lower_hardlinks {
        std::fs::write(bottom.join("hl1"), b"linked lower file\n").expect("write hl1");
        std::fs::hard_link(bottom.join("hl1"), bottom.join("hl2")).expect("link hl2");
    }
    build(&top, TOP, extras.ns);
    age(&bottom);
    age(&top);
    Template {
        layers: vec![bottom, top],
    }
}
