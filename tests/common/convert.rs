//! A copy of a stack that kernel overlayfs (trusted.* xattrs, no `userxattr`) merges the way
//! the model says. Kernel quirks this works around, all seen on this machine:
//!
//! - `.wh.NAME` files and `.wh..wh..opq` mean nothing to the kernel: they show up as regular
//!   files. They become a char device 0:0 `NAME` and `trusted.overlay.opaque=y`.
//! - without the `userxattr` mount option the kernel reads only `trusted.overlay.*` and shows
//!   `user.overlay.*` as ordinary xattrs: `user.overlay.opaque` / `user.overlay.whiteout`
//!   become their `trusted.` twins and other `user.overlay.*` xattrs are dropped.
//! - a whiteout the kernel finds in a directory it does not merge (an opaque directory, a
//!   directory with no copy below, or anything in the bottom layer) is listed by readdir
//!   (as `c?????????`) although lookup says ENOENT. Such a whiteout hides nothing, so the
//!   copy leaves out every whiteout that hides nothing.
//! - a zero-size file with `trusted.overlay.whiteout` outside an opaque=`x` directory is
//!   listed by readdir but lookup says ENOENT. The model treats it as a plain empty file
//!   (xattr whiteouts count only inside opaque=`x` directories), so the copy drops the xattr.
//! - the opaque xattr on a layer's root directory is ignored (not modelled; never set here).

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::model::{self, is_overlay_xattr, Item, Opacity, WhiteoutKind};
use super::sys;

/// Copies `layers` (bottom first) into `dest`/K000.. in the kernel's formats; returns the
/// new layer paths, bottom first.
pub fn kernel_copy(layers: &[PathBuf], dest: &Path) -> Vec<PathBuf> {
    fs::create_dir_all(dest).expect("mkdir kernel copy");
    let mut out = Vec::new();
    for (k, src) in layers.iter().enumerate() {
        let dst = dest.join(format!("K{k:03}"));
        fs::create_dir(&dst).expect("mkdir kernel layer");
        let mut copier = Copier {
            below: &layers[..k],
            links: HashMap::new(),
        };
        copier.copy_dir(src, &dst, Path::new(""), true);
        out.push(dst);
    }
    out
}

struct Copier<'a> {
    /// The layers below the one being copied.
    below: &'a [PathBuf],
    /// Source inode to the first copy made of it, to keep hard links.
    links: HashMap<u64, PathBuf>,
}

impl Copier<'_> {
    /// Copies directory `src` (at `rel` in its layer) into the existing `dst`. `merging`:
    /// whether this directory copy merges with the ones below.
    fn copy_dir(&mut self, src: &Path, dst: &Path, rel: &Path, merging: bool) {
        let copy = model::read_dir_copy(src);
        let is_root = rel.as_os_str().is_empty();
        for (name, item) in &copy.items {
            let (s, d) = (src.join(name), dst.join(name));
            match item {
                Item::OpaqueMarker | Item::Hidden => {}
                Item::Whiteout(kind, target) => {
                    // An object of the same name in this layer wins over the whiteout.
                    let hides_something = merging
                        && copy.object(target).is_none()
                        && model::resolves(self.below, &rel.join(target));
                    if !hides_something {
                        continue;
                    }
                    let d = dst.join(target);
                    if *kind == WhiteoutKind::Xattr {
                        fs::write(&d, b"").expect("xattr whiteout");
                        sys::set_xattr(&d, "trusted.overlay.whiteout", b"").expect("setxattr");
                    } else {
                        sys::mknod(&d, libc::S_IFCHR, 0o600, 0, 0).expect("mknod whiteout");
                    }
                }
                Item::Object(true) => {
                    fs::create_dir(&d).expect("mkdir");
                    let child_opaque = model::dir_opacity(&s) == Opacity::Opaque;
                    self.copy_dir(&s, &d, &rel.join(name), merging && !child_opaque);
                }
                Item::Object(false) => self.copy_object(&s, &d),
            }
        }
        match copy.opacity {
            Opacity::Opaque if !is_root => {
                sys::set_xattr(dst, "trusted.overlay.opaque", b"y").expect("setxattr")
            }
            Opacity::XattrWhiteouts => {
                sys::set_xattr(dst, "trusted.overlay.opaque", b"x").expect("setxattr")
            }
            _ => {}
        }
        copy_meta(src, dst);
    }

    fn copy_object(&mut self, src: &Path, dst: &Path) {
        let md = src.symlink_metadata().expect("lstat");
        if md.nlink() > 1 {
            if let Some(first) = self.links.get(&md.ino()) {
                fs::hard_link(first, dst).expect("hard link");
                return;
            }
            self.links.insert(md.ino(), dst.to_path_buf());
        }
        let ft = md.file_type();
        if ft.is_symlink() {
            symlink(fs::read_link(src).expect("readlink"), dst).expect("symlink");
        } else if ft.is_file() {
            copy_sparse(src, dst);
        } else {
            let kind = md.mode() & libc::S_IFMT;
            let rdev = md.rdev();
            sys::mknod(dst, kind, 0o600, libc::major(rdev), libc::minor(rdev)).expect("mknod");
        }
        copy_meta(src, dst);
    }
}

/// Copies file data, leaving all-zero blocks as holes.
fn copy_sparse(src: &Path, dst: &Path) {
    let mut r = fs::File::open(src).expect("open source");
    let mut w = fs::File::create(dst).expect("create copy");
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = r.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        if buf[..n].iter().all(|b| *b == 0) {
            w.seek(SeekFrom::Current(n as i64)).expect("seek");
        } else {
            w.write_all(&buf[..n]).expect("write");
        }
    }
    w.set_len(src.metadata().expect("stat").len())
        .expect("set_len");
}

/// Owner, mode, xattrs (without overlay markers, which the caller sets) and times.
fn copy_meta(src: &Path, dst: &Path) {
    let md = src.symlink_metadata().expect("lstat");
    std::os::unix::fs::lchown(dst, Some(md.uid()), Some(md.gid())).expect("lchown");
    if !md.file_type().is_symlink() {
        fs::set_permissions(dst, fs::Permissions::from_mode(md.mode() & 0o7777)).expect("chmod");
    }
    for name in sys::list_xattrs(src).expect("listxattr") {
        let name: OsString = name;
        let n = name.to_str().expect("UTF-8 xattr name");
        if is_overlay_xattr(n) {
            continue;
        }
        let v = sys::get_xattr(src, n)
            .expect("getxattr")
            .unwrap_or_default();
        sys::set_xattr(dst, n, &v).expect("setxattr");
    }
    sys::set_times(
        dst,
        (md.atime(), md.atime_nsec()),
        (md.mtime(), md.mtime_nsec()),
    )
    .expect("utimensat");
}
