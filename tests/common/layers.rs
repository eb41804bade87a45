//! Building layer stacks on disk: plain objects plus every whiteout and opaque format.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use super::sys;
use super::tmp::TempDir;

/// Which xattr namespace an overlay marker uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ns {
    Trusted,
    User,
}

impl Ns {
    pub fn name(self, attr: &str) -> String {
        match self {
            Ns::Trusted => format!("trusted.overlay.{attr}"),
            Ns::User => format!("user.overlay.{attr}"),
        }
    }
}

/// An ACL in the kernel's xattr format: version 2, then (tag, perm, id) entries for
/// user::rw-, user:1000:rwx, group::---, mask::rwx, other::--- (only the owner and uid
/// 1000 get in).
pub const ACL_USER_1000: [u8; 44] = [
    2, 0, 0, 0, // version
    1, 0, 6, 0, 0xff, 0xff, 0xff, 0xff, // USER_OBJ rw-
    2, 0, 7, 0, 0xe8, 3, 0, 0, // USER 1000 rwx
    4, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, // GROUP_OBJ ---
    0x10, 0, 7, 0, 0xff, 0xff, 0xff, 0xff, // MASK rwx
    0x20, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, // OTHER ---
];

/// A scratch directory holding layers (bottom first) and mountpoints.
pub struct Stack {
    dir: TempDir,
    layers: Vec<PathBuf>,
}

impl Stack {
    pub fn new(label: &str) -> Stack {
        let dir = TempDir::new(label);
        fs::create_dir(dir.path().join("layers")).expect("mkdir layers");
        Stack {
            dir,
            layers: Vec::new(),
        }
    }

    /// A new empty layer on top of the others.
    pub fn add_layer(&mut self) -> Layer {
        let root = self
            .dir
            .path()
            .join("layers")
            .join(format!("L{:03}", self.layers.len()));
        fs::create_dir(&root).expect("mkdir layer");
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).expect("chmod layer");
        self.layers.push(root.clone());
        Layer { root }
    }

    /// Layer directories, bottom first.
    pub fn layers(&self) -> &[PathBuf] {
        &self.layers
    }

    /// The layer `index` (0 = bottom), to add more to it.
    pub fn layer(&self, index: usize) -> Layer {
        Layer {
            root: self.layers[index].clone(),
        }
    }

    /// A new empty directory to mount on.
    pub fn mountpoint(&self, name: &str) -> PathBuf {
        self.dir.subdir(&format!("mnt-{name}"))
    }

    pub fn scratch(&self) -> &TempDir {
        &self.dir
    }
}

/// One layer directory; every path argument is relative to its root and missing parent
/// directories are created (mode 0755).
pub struct Layer {
    root: PathBuf,
}

impl Layer {
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The absolute path of `rel`, with its parent directories created.
    fn at(&self, rel: impl AsRef<Path>) -> PathBuf {
        let p = self.root.join(rel.as_ref());
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).unwrap_or_else(|e| panic!("mkdir {parent:?}: {e}"));
        }
        p
    }

    pub fn dir(&self, rel: impl AsRef<Path>) -> &Self {
        let p = self.root.join(rel.as_ref());
        fs::create_dir_all(&p).unwrap_or_else(|e| panic!("mkdir {p:?}: {e}"));
        self
    }

    pub fn file(&self, rel: impl AsRef<Path>, content: &[u8]) -> &Self {
        let p = self.at(rel);
        fs::write(&p, content).unwrap_or_else(|e| panic!("write {p:?}: {e}"));
        self
    }

    /// A file of `len` bytes holding only `chunks` (offset, data); the rest are holes.
    pub fn sparse(&self, rel: impl AsRef<Path>, len: u64, chunks: &[(u64, &[u8])]) -> &Self {
        use std::os::unix::fs::FileExt;
        let p = self.at(rel);
        let f = fs::File::create(&p).unwrap_or_else(|e| panic!("create {p:?}: {e}"));
        f.set_len(len).expect("set_len");
        for (off, data) in chunks {
            f.write_all_at(data, *off).expect("write_at");
        }
        self
    }

    pub fn symlink(&self, rel: impl AsRef<Path>, target: impl AsRef<Path>) -> &Self {
        let p = self.at(rel);
        symlink(target.as_ref(), &p).unwrap_or_else(|e| panic!("symlink {p:?}: {e}"));
        self
    }

    pub fn hardlink(&self, existing: impl AsRef<Path>, rel: impl AsRef<Path>) -> &Self {
        let p = self.at(rel);
        let src = self.root.join(existing.as_ref());
        fs::hard_link(&src, &p).unwrap_or_else(|e| panic!("link {src:?} {p:?}: {e}"));
        self
    }

    pub fn fifo(&self, rel: impl AsRef<Path>) -> &Self {
        let p = self.at(rel);
        sys::mknod(&p, libc::S_IFIFO, 0o644, 0, 0).unwrap_or_else(|e| panic!("mkfifo {p:?}: {e}"));
        self
    }

    pub fn char_dev(&self, rel: impl AsRef<Path>, major: u32, minor: u32) -> &Self {
        let p = self.at(rel);
        sys::mknod(&p, libc::S_IFCHR, 0o644, major, minor)
            .unwrap_or_else(|e| panic!("mknod {p:?}: {e}"));
        self
    }

    pub fn block_dev(&self, rel: impl AsRef<Path>, major: u32, minor: u32) -> &Self {
        let p = self.at(rel);
        sys::mknod(&p, libc::S_IFBLK, 0o640, major, minor)
            .unwrap_or_else(|e| panic!("mknod {p:?}: {e}"));
        self
    }

    /// Kernel whiteout: a char device 0:0 named like the hidden object.
    pub fn whiteout_dev(&self, rel: impl AsRef<Path>) -> &Self {
        self.char_dev(rel, 0, 0)
    }

    /// OCI/AUFS whiteout: an empty file `.wh.NAME` next to where NAME was.
    pub fn whiteout_aufs(&self, rel: impl AsRef<Path>) -> &Self {
        let rel = rel.as_ref();
        let name = rel.file_name().expect("whiteout of a named path");
        let mut wh = std::ffi::OsString::from(".wh.");
        wh.push(name);
        self.file(rel.with_file_name(wh), b"")
    }

    /// OCI/AUFS opaque directory: `.wh..wh..opq` inside it.
    pub fn opaque_marker(&self, dir: impl AsRef<Path>) -> &Self {
        self.dir(dir.as_ref());
        self.file(dir.as_ref().join(".wh..wh..opq"), b"")
    }

    /// Kernel opaque directory: `*.overlay.opaque=y`.
    pub fn opaque_xattr(&self, dir: impl AsRef<Path>, ns: Ns) -> &Self {
        self.dir(dir.as_ref());
        self.xattr(dir, &ns.name("opaque"), b"y")
    }

    /// Kernel xattr whiteout: a zero-size file with `*.overlay.whiteout` inside a directory
    /// marked `*.overlay.opaque=x`.
    pub fn xattr_whiteout(&self, rel: impl AsRef<Path>, ns: Ns) -> &Self {
        let rel = rel.as_ref();
        let parent = rel.parent().expect("xattr whiteout parent");
        self.dir(parent);
        self.xattr(parent, &ns.name("opaque"), b"x");
        self.file(rel, b"");
        self.xattr(rel, &ns.name("whiteout"), b"")
    }

    pub fn xattr(&self, rel: impl AsRef<Path>, name: &str, value: &[u8]) -> &Self {
        let p = self.root.join(rel.as_ref());
        sys::set_xattr(&p, name, value).unwrap_or_else(|e| panic!("setxattr {name} {p:?}: {e}"));
        self
    }

    /// A POSIX ACL granting uid 1000 rwx: `system.posix_acl_access` (or `_default` on a
    /// directory when `default` is set).
    pub fn acl(&self, rel: impl AsRef<Path>, default: bool) -> &Self {
        let name = if default {
            "system.posix_acl_default"
        } else {
            "system.posix_acl_access"
        };
        self.xattr(rel, name, &ACL_USER_1000)
    }

    pub fn chmod(&self, rel: impl AsRef<Path>, mode: u32) -> &Self {
        let p = self.root.join(rel.as_ref());
        fs::set_permissions(&p, fs::Permissions::from_mode(mode))
            .unwrap_or_else(|e| panic!("chmod {p:?}: {e}"));
        self
    }

    pub fn chown(&self, rel: impl AsRef<Path>, uid: u32, gid: u32) -> &Self {
        let p = self.root.join(rel.as_ref());
        std::os::unix::fs::lchown(&p, Some(uid), Some(gid))
            .unwrap_or_else(|e| panic!("chown {p:?}: {e}"));
        self
    }

    pub fn mtime(&self, rel: impl AsRef<Path>, secs: i64, nsecs: i64) -> &Self {
        let p = self.root.join(rel.as_ref());
        sys::set_times(&p, (secs, nsecs), (secs, nsecs))
            .unwrap_or_else(|e| panic!("utimensat {p:?}: {e}"));
        self
    }
}
