//! The operations a differential run applies to a mounted union, a seeded generator of random
//! sequences of them, and the executor that applies one to a mount and says what it observed.
//!
//! Operations print with `{:?}` as Rust expressions, so a failing list can be pasted into a test.

use std::path::Path;

use super::sysc::{self, Sys};

/// Times set by `Utimes` and given to the lower layers are all before this instant; the tree
/// comparison checks such "old" times exactly (newer ones are wall-clock times of the run).
pub const OLD_TIME_LIMIT: i64 = 1_100_000_000;

/// Permission bits; prints in octal so operation lists read like shell commands.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Mode(pub u32);

impl std::fmt::Debug for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Mode(0o{:o})", self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenameFlags {
    Plain,
    NoReplace,
    Exchange,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// open(O_CREAT|O_EXCL) and write `len` bytes of a pattern seeded by `byte`.
    Create {
        path: &'static str,
        mode: Mode,
        len: usize,
        byte: u8,
    },
    Append {
        path: &'static str,
        len: usize,
        byte: u8,
    },
    /// pwrite in place (no truncation).
    Overwrite {
        path: &'static str,
        off: u64,
        len: usize,
        byte: u8,
    },
    /// open(O_TRUNC) and write.
    WriteTrunc {
        path: &'static str,
        len: usize,
        byte: u8,
    },
    Truncate {
        path: &'static str,
        size: u64,
    },
    /// pwrite of 4 bytes `gap` bytes beyond the current end of file.
    SparseWrite {
        path: &'static str,
        gap: u64,
        byte: u8,
    },
    Chmod {
        path: &'static str,
        mode: Mode,
    },
    Chown {
        path: &'static str,
        uid: u32,
        gid: u32,
    },
    /// Sets atime = `secs`, mtime = `secs + 1` on the object itself.
    Utimes {
        path: &'static str,
        secs: i64,
    },
    Rename {
        from: &'static str,
        to: &'static str,
        flags: RenameFlags,
    },
    Unlink {
        path: &'static str,
    },
    Rmdir {
        path: &'static str,
    },
    /// Recursive removal, children in name order; reports the first failure.
    RmRf {
        path: &'static str,
    },
    Mkdir {
        path: &'static str,
        mode: Mode,
    },
    Link {
        from: &'static str,
        to: &'static str,
    },
    Symlink {
        target: &'static str,
        path: &'static str,
    },
    Mkfifo {
        path: &'static str,
        mode: Mode,
    },
    /// mknod of a char device `major:minor` (0:0 is what the upper dir reads as a whiteout).
    #[allow(dead_code)] // only some test crates use it
    MknodChar {
        path: &'static str,
        major: u32,
        minor: u32,
    },
    SetXattr {
        path: &'static str,
        name: &'static str,
        value: &'static str,
    },
    /// listxattr, then getxattr of each name: `name=value` pairs in name order, for the
    /// user.* and trusted.* names (security.* ones differ between filesystems).
    #[allow(dead_code)] // only some test crates use it
    Xattrs {
        path: &'static str,
    },
    RemoveXattr {
        path: &'static str,
        name: &'static str,
    },
    /// lstat: type, mode, owner, and for non-directories size and link count.
    Stat {
        path: &'static str,
    },
    Read {
        path: &'static str,
    },
    ListDir {
        path: &'static str,
    },
    /// Opens a file, unlinks it, then writes, stats and reads through the still-open fd.
    OpenUnlinkWrite {
        path: &'static str,
        len: usize,
        byte: u8,
    },
    /// Opens `path`, renames `from` over it, then writes and fstats through the open fd: the
    /// file renamed over keeps living through the fd, with no name left.
    #[allow(dead_code)] // only the write_union crate's identity tests use it
    OpenRenameOver {
        path: &'static str,
        from: &'static str,
    },
    /// Renames `from` over `to` and reports what `other` (another name of `to`'s inode) shows
    /// afterwards: its link count, and whether its ctime moved.
    #[allow(dead_code)] // only the write_union crate's identity tests use it
    RenameOverLink {
        from: &'static str,
        to: &'static str,
        other: &'static str,
    },
    /// Unmounts and mounts again on the same dirs (the runner does it; `apply` cannot).
    Remount,
}

impl Op {
    /// The same operation on other paths: `f` maps every path it names (not symlink targets).
    /// Used to move a generated sequence into a subtree of its own.
    #[allow(dead_code)] // only the stress test crate uses it
    pub fn map_paths(&self, f: impl Fn(&'static str) -> &'static str) -> Op {
        let mut op = self.clone();
        match &mut op {
            Op::Create { path, .. }
            | Op::Append { path, .. }
            | Op::Overwrite { path, .. }
            | Op::WriteTrunc { path, .. }
            | Op::Truncate { path, .. }
            | Op::SparseWrite { path, .. }
            | Op::Chmod { path, .. }
            | Op::Chown { path, .. }
            | Op::Utimes { path, .. }
            | Op::Unlink { path }
            | Op::Rmdir { path }
            | Op::RmRf { path }
            | Op::Mkdir { path, .. }
            | Op::Symlink { path, .. }
            | Op::Mkfifo { path, .. }
            | Op::MknodChar { path, .. }
            | Op::Xattrs { path }
            | Op::SetXattr { path, .. }
            | Op::RemoveXattr { path, .. }
            | Op::Stat { path }
            | Op::Read { path }
            | Op::ListDir { path }
            | Op::OpenUnlinkWrite { path, .. } => *path = f(path),
            Op::Rename { from, to, .. } | Op::Link { from, to } => {
                *from = f(from);
                *to = f(to);
            }
            Op::OpenRenameOver { path, from } => {
                *path = f(path);
                *from = f(from);
            }
            Op::RenameOverLink { from, to, other } => {
                *from = f(from);
                *to = f(to);
                *other = f(other);
            }
            Op::Remount => {}
        }
        op
    }
}

/// The data an operation writes: a simple pattern that differs by seed byte and position.
pub fn pattern(len: usize, byte: u8) -> Vec<u8> {
    (0..len)
        .map(|i| byte.wrapping_add((i % 251) as u8))
        .collect()
}

/// What an operation observed: a description of its result, or the errno it failed with.
pub type Outcome = Result<String, i32>;

pub fn describe(outcome: &Outcome) -> String {
    match outcome {
        Ok(s) if s.is_empty() => "ok".into(),
        Ok(s) => format!("ok: {s}"),
        Err(e) => sysc::errno_name(*e),
    }
}

fn done(r: Sys<()>) -> Outcome {
    r.map(|()| String::new())
}

pub fn kind_name(mode: u32) -> &'static str {
    match mode & libc::S_IFMT {
        libc::S_IFREG => "file",
        libc::S_IFDIR => "dir",
        libc::S_IFLNK => "symlink",
        libc::S_IFIFO => "fifo",
        libc::S_IFCHR => "chardev",
        libc::S_IFBLK => "blockdev",
        libc::S_IFSOCK => "socket",
        _ => "unknown",
    }
}

/// FNV-1a: a stable content fingerprint without extra crates.
pub fn fnv(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in data {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// Opens never wait for the other end of a FIFO (no effect on regular files).
const NB: i32 = libc::O_NONBLOCK;

/// Applies `op` to the union mounted at `root`.
pub fn apply(root: &Path, op: &Op) -> Outcome {
    let p = |rel: &str| root.join(rel);
    match op {
        Op::Create {
            path,
            mode,
            len,
            byte,
        } => {
            let fd = sysc::open(
                &p(path),
                libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY,
                mode.0,
            )?;
            sysc::write_all_at(&fd, None, &pattern(*len, *byte))?;
            done(fd.close())
        }
        Op::Append { path, len, byte } => {
            let fd = sysc::open(&p(path), libc::O_WRONLY | libc::O_APPEND | NB, 0)?;
            sysc::write_all_at(&fd, None, &pattern(*len, *byte))?;
            done(fd.close())
        }
        Op::Overwrite {
            path,
            off,
            len,
            byte,
        } => {
            let fd = sysc::open(&p(path), libc::O_WRONLY | NB, 0)?;
            sysc::write_all_at(&fd, Some(*off), &pattern(*len, *byte))?;
            done(fd.close())
        }
        Op::WriteTrunc { path, len, byte } => {
            let fd = sysc::open(&p(path), libc::O_WRONLY | libc::O_TRUNC | NB, 0)?;
            sysc::write_all_at(&fd, None, &pattern(*len, *byte))?;
            done(fd.close())
        }
        Op::Truncate { path, size } => done(sysc::truncate(&p(path), *size)),
        Op::SparseWrite { path, gap, byte } => {
            let fd = sysc::open(&p(path), libc::O_WRONLY | NB, 0)?;
            let size = sysc::fstat(&fd)?.st_size as u64;
            sysc::write_all_at(&fd, Some(size + gap), &pattern(4, *byte))?;
            let new_size = sysc::fstat(&fd)?.st_size;
            fd.close()?;
            Ok(format!("size {new_size}"))
        }
        Op::Chmod { path, mode } => done(sysc::chmod(&p(path), mode.0)),
        Op::Chown { path, uid, gid } => done(sysc::lchown(&p(path), *uid, *gid)),
        Op::Utimes { path, secs } => done(sysc::lutimes(&p(path), *secs, secs + 1)),
        Op::Rename { from, to, flags } => {
            let f = match flags {
                RenameFlags::Plain => 0,
                RenameFlags::NoReplace => sysc::RENAME_NOREPLACE,
                RenameFlags::Exchange => sysc::RENAME_EXCHANGE,
            };
            done(sysc::rename2(&p(from), &p(to), f))
        }
        Op::Unlink { path } => done(sysc::unlink(&p(path))),
        Op::Rmdir { path } => done(sysc::rmdir(&p(path))),
        Op::RmRf { path } => done(rm_rf(&p(path))),
        Op::Mkdir { path, mode } => done(sysc::mkdir(&p(path), mode.0)),
        Op::Link { from, to } => done(sysc::link(&p(from), &p(to))),
        Op::Symlink { target, path } => done(sysc::symlink(target, &p(path))),
        Op::Mkfifo { path, mode } => done(sysc::mknod(&p(path), libc::S_IFIFO | mode.0, 0)),
        Op::MknodChar { path, major, minor } => done(sysc::mknod(
            &p(path),
            libc::S_IFCHR | 0o644,
            libc::makedev(*major, *minor),
        )),
        Op::Xattrs { path } => {
            let mut names = sysc::llistxattr(&p(path))?;
            names.retain(|n| n.starts_with(b"user.") || n.starts_with(b"trusted."));
            names.sort();
            let mut pairs = Vec::new();
            for n in names {
                let v = sysc::lgetxattr(&p(path), &n)?;
                pairs.push(format!(
                    "{}={}",
                    String::from_utf8_lossy(&n),
                    String::from_utf8_lossy(&v)
                ));
            }
            Ok(pairs.join(" "))
        }
        Op::SetXattr { path, name, value } => {
            done(sysc::lsetxattr(&p(path), name, value.as_bytes()))
        }
        Op::RemoveXattr { path, name } => done(sysc::lremovexattr(&p(path), name)),
        Op::Stat { path } => {
            let st = sysc::lstat(&p(path))?;
            let mut s = format!(
                "{} {:o} {}:{}",
                kind_name(st.st_mode),
                st.st_mode & 0o7777,
                st.st_uid,
                st.st_gid
            );
            if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
                s += &format!(" size {} nlink {}", st.st_size, st.st_nlink);
            }
            Ok(s)
        }
        Op::Read { path } => {
            let fd = sysc::open(&p(path), libc::O_RDONLY | NB, 0)?;
            let data = sysc::read_all(&fd)?;
            Ok(format!("{} bytes fnv {:016x}", data.len(), fnv(&data)))
        }
        Op::ListDir { path } => {
            let names = list_dir(&p(path))?;
            Ok(names.join(" "))
        }
        Op::OpenUnlinkWrite { path, len, byte } => {
            let fd = sysc::open(&p(path), libc::O_RDWR | NB, 0)?;
            sysc::unlink(&p(path))?;
            sysc::write_all_at(&fd, Some(1), &pattern(*len, *byte))?;
            let st = sysc::fstat(&fd)?;
            let data = sysc::pread_all(&fd)?;
            let gone = sysc::lstat(&p(path)).err();
            fd.close()?;
            Ok(format!(
                "size {} nlink {} fnv {:016x} name {}",
                st.st_size,
                st.st_nlink,
                fnv(&data),
                gone.map_or("still there".into(), sysc::errno_name)
            ))
        }
        Op::OpenRenameOver { path, from } => {
            let fd = sysc::open(&p(path), libc::O_RDWR | NB, 0)?;
            sysc::rename2(&p(from), &p(path), 0)?;
            sysc::write_all_at(&fd, Some(0), b"through the fd")?;
            let st = sysc::fstat(&fd)?;
            let data = sysc::pread_all(&fd)?;
            fd.close()?;
            let now = sysc::lstat(&p(path))?;
            Ok(format!(
                "fd: size {} nlink {} fnv {:016x}; name: size {} nlink {}",
                st.st_size,
                st.st_nlink,
                fnv(&data),
                now.st_size,
                now.st_nlink
            ))
        }
        Op::RenameOverLink { from, to, other } => {
            let before = sysc::lstat(&p(other))?;
            // Past the timestamp granularity of the host filesystem.
            std::thread::sleep(std::time::Duration::from_millis(30));
            sysc::rename2(&p(from), &p(to), 0)?;
            let after = sysc::lstat(&p(other))?;
            let moved =
                (after.st_ctime, after.st_ctime_nsec) > (before.st_ctime, before.st_ctime_nsec);
            Ok(format!(
                "{other}: nlink {} -> {}, ctime moved: {moved}",
                before.st_nlink, after.st_nlink
            ))
        }
        Op::Remount => unreachable!("the runner remounts"),
    }
}

/// Sorted entry names of a directory (without . and ..).
pub fn list_dir(path: &Path) -> Sys<Vec<String>> {
    let rd = std::fs::read_dir(path).map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
    let mut names = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}

fn rm_rf(path: &Path) -> Sys<()> {
    let st = sysc::lstat(path)?;
    if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
        return sysc::unlink(path);
    }
    for name in list_dir(path)? {
        rm_rf(&path.join(name))?;
    }
    sysc::rmdir(path)
}

/// xorshift64*: small, seedable, and the same on every machine.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        // Mix the seed so that small consecutive seeds give unrelated streams; never zero.
        let mut s = seed.wrapping_mul(0x9E3779B97F4A7C15) ^ 0xD1B54A32D192ED03;
        if s == 0 {
            s = 1;
        }
        let mut r = Rng(s);
        r.next();
        r
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545F4914F6CDD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// Directories operations work in: lower dirs of the fixture, nested ones, and names that
/// only exist once an operation creates them.
const PARENTS: &[&str] = &[
    "", "", "d", "d", "d/sub", "d/sub/e", "e", "e", "sub", "sub/d", "d/d", "n", "n/sub",
];
/// Entry names: most exist somewhere in the lower layers, so operations hit lower objects.
const NAMES: &[&str] = &["f", "f", "g", "h", "d", "e", "sub", "n", "x"];

/// Every path the generator can produce (parent/name), built once with 'static lifetime.
fn all_paths() -> &'static Vec<(&'static str, &'static str)> {
    use std::sync::OnceLock;
    static PATHS: OnceLock<Vec<(&'static str, &'static str)>> = OnceLock::new();
    PATHS.get_or_init(|| {
        let mut v = Vec::new();
        for parent in PARENTS {
            for name in NAMES {
                let full: &'static str = if parent.is_empty() {
                    name
                } else {
                    Box::leak(format!("{parent}/{name}").into_boxed_str())
                };
                v.push((full, *name));
            }
        }
        v
    })
}

fn path(rng: &mut Rng) -> &'static str {
    let all = all_paths();
    all[rng.below(all.len() as u64) as usize].0
}

/// A random directory path (the parent list itself, as a target for dir operations).
fn dir_path(rng: &mut Rng) -> &'static str {
    if rng.chance(50) {
        let p = rng.pick(PARENTS);
        if !p.is_empty() {
            return p;
        }
    }
    path(rng)
}

const FILE_MODES: &[u32] = &[0o644, 0o600, 0o755, 0o4755, 0o2711, 0o000, 0o1777];
const NEW_FILE_MODES: &[u32] = &[0o644, 0o600, 0o755];
const DIR_MODES: &[u32] = &[0o755, 0o700, 0o1777];
const XATTR_NAMES: &[&str] = &["user.a", "user.b", "user.color"];
const XATTR_VALUES: &[&str] = &["1", "red", "a longer value with spaces"];
const TARGETS: &[&str] = &["f", "../f", "d/sub", "/etc/hostname", "nowhere", "sub/d/f"];

/// A random sequence of `len` operations, fully determined by `seed`.
pub fn generate(seed: u64, len: usize) -> Vec<Op> {
    let mut rng = Rng::new(seed);
    let mut ops = Vec::with_capacity(len);
    while ops.len() < len {
        let byte = rng.below(256) as u8;
        let op = match rng.below(100) {
            0..=6 => Op::Create {
                path: path(&mut rng),
                mode: Mode(rng.pick(NEW_FILE_MODES)),
                len: rng.pick(&[0, 1, 100, 5000, 70000]),
                byte,
            },
            7..=12 => Op::Append {
                path: path(&mut rng),
                len: rng.pick(&[1, 10, 4096, 9000]),
                byte,
            },
            13..=17 => Op::Overwrite {
                path: path(&mut rng),
                off: rng.pick(&[0, 1, 3, 4095, 5000]),
                len: rng.pick(&[1, 7, 4096, 10000]),
                byte,
            },
            18..=20 => Op::WriteTrunc {
                path: path(&mut rng),
                len: rng.pick(&[0, 5, 3000]),
                byte,
            },
            21..=24 => Op::Truncate {
                path: path(&mut rng),
                size: rng.pick(&[0, 0, 3, 5000, 70000, 1 << 20]),
            },
            25..=26 => Op::SparseWrite {
                path: path(&mut rng),
                gap: rng.pick(&[4096, 1 << 20, 3 << 20]),
                byte,
            },
            27..=30 => Op::Chmod {
                path: path(&mut rng),
                mode: Mode(rng.pick(FILE_MODES)),
            },
            31..=33 => Op::Chown {
                path: path(&mut rng),
                uid: rng.pick(&[0, 1000, 65534]),
                gid: rng.pick(&[0, 100, 65534]),
            },
            34..=36 => Op::Utimes {
                path: path(&mut rng),
                secs: 500_000_000 + rng.below(1_000_000) as i64,
            },
            37..=46 => Op::Rename {
                from: if rng.chance(50) {
                    dir_path(&mut rng)
                } else {
                    path(&mut rng)
                },
                to: path(&mut rng),
                flags: match rng.below(10) {
                    0..=5 => RenameFlags::Plain,
                    6..=7 => RenameFlags::NoReplace,
                    _ => RenameFlags::Exchange,
                },
            },
            47..=51 => Op::Unlink {
                path: path(&mut rng),
            },
            52..=54 => Op::Rmdir {
                path: dir_path(&mut rng),
            },
            55..=58 => {
                // rm -rf of a (lower) tree, often followed by a new directory of the same name
                // and a look at what the old one held: none of it may show through again.
                let dir = dir_path(&mut rng);
                ops.push(Op::RmRf { path: dir });
                if rng.chance(60) {
                    ops.push(Op::Mkdir {
                        path: dir,
                        mode: Mode(0o755),
                    });
                    ops.push(Op::ListDir { path: dir });
                    let inner = rng.pick(NAMES);
                    Op::Stat {
                        path: Box::leak(format!("{dir}/{inner}").into_boxed_str()),
                    }
                } else {
                    continue;
                }
            }
            59..=63 => Op::Mkdir {
                path: dir_path(&mut rng),
                mode: Mode(rng.pick(DIR_MODES)),
            },
            64..=67 => Op::Link {
                from: path(&mut rng),
                to: path(&mut rng),
            },
            68..=70 => Op::Symlink {
                target: rng.pick(TARGETS),
                path: path(&mut rng),
            },
            71..=72 => Op::Mkfifo {
                path: path(&mut rng),
                mode: Mode(0o644),
            },
            73..=76 => Op::SetXattr {
                path: path(&mut rng),
                name: rng.pick(XATTR_NAMES),
                value: rng.pick(XATTR_VALUES),
            },
            77..=78 => Op::RemoveXattr {
                path: path(&mut rng),
                name: rng.pick(XATTR_NAMES),
            },
            79..=87 => Op::Stat {
                path: path(&mut rng),
            },
            88..=89 => Op::OpenUnlinkWrite {
                path: path(&mut rng),
                len: rng.pick(&[1, 5000]),
                byte,
            },
            90..=93 => Op::Read {
                path: path(&mut rng),
            },
            _ => Op::ListDir {
                path: dir_path(&mut rng),
            },
        };
        ops.push(op);
    }
    ops.truncate(len);
    ops
}
