//! Unit tests of the union core on real directories as layers, without FUSE and without
//! root: the layers are plain temp dirs, whiteouts are written in the `.wh.` form and markers
//! in the `user.` namespace (the userxattr format), which a plain user may write.

use std::fs;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::{Caller, Change, NewObject, RenameMode, Union};
use crate::sys::c;
use crate::testutil::TempDir;
use crate::union::attr::Kind;
use crate::union::idmap::Ownership;
use crate::union::inode::{lower_ino, upper_ino, ROOT_INO};
use crate::union::layer::Layer;
use crate::union::ovl::{self, Marker, Namespace};
use crate::union::rootless::Format;
use crate::union::upper::Upper;

/// Lower layers `l0` (bottom), `l1`, ... and an upper dir with its work dir, under one temp dir.
struct Stack {
    dir: TempDir,
    lowers: usize,
}

impl Stack {
    fn new(tag: &str, lowers: usize) -> Stack {
        let dir = TempDir::new(&format!("union-{tag}"));
        for i in 0..lowers {
            fs::create_dir(dir.path().join(format!("l{i}"))).unwrap();
        }
        fs::create_dir(dir.path().join("upper")).unwrap();
        fs::create_dir(dir.path().join("work")).unwrap();
        Stack { dir, lowers }
    }

    fn lower(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("l{i}"))
    }

    fn upper(&self) -> PathBuf {
        self.dir.path().join("upper")
    }

    /// The union over the layers as they are now, as a mount would open it.
    fn union(&self) -> Union {
        let layers = (0..self.lowers)
            .map(|i| Layer::open_root(i as u16, &self.lower(i)).unwrap())
            .collect();
        let upper = Upper::open(&self.upper(), &self.dir.path().join("work"), false).unwrap();
        Union::new(layers, Some(upper), Format::USERXATTR, Ownership::default()).unwrap()
    }
}

fn write(path: &Path, content: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

fn mkdir(path: &Path) {
    fs::create_dir_all(path).unwrap();
}

fn set_marker(path: &Path, marker: Marker, value: &[u8]) {
    let f = fs::File::open(path).unwrap();
    ovl::set(f.as_fd(), Namespace::User, marker, value)
        .expect("the temp dir's filesystem must support user.* xattrs");
}

fn host_ino(path: &Path) -> u64 {
    fs::symlink_metadata(path).unwrap().ino()
}

fn errno_of<T>(r: io::Result<T>) -> i32 {
    match r {
        Ok(_) => panic!("the call must fail"),
        Err(e) => e.raw_os_error().expect("an errno"),
    }
}

/// Resolves a path of names from the root, as the kernel would look it up name by name.
fn resolve(union: &Union, path: &str) -> io::Result<u64> {
    let mut ino = ROOT_INO;
    for name in path.split('/').filter(|n| !n.is_empty()) {
        ino = union.lookup(ino, name.as_bytes())?.ino;
    }
    Ok(ino)
}

fn names(union: &Union, path: &str) -> Vec<String> {
    let snapshot = union.list_dir(resolve(union, path).unwrap()).unwrap();
    (0..snapshot.len())
        .map(|i| String::from_utf8_lossy(snapshot.get(i).0).into_owned())
        .collect()
}

fn read_all(union: &Union, path: &str) -> String {
    let opened = union
        .open(resolve(union, path).unwrap(), c::O_RDONLY, |_| false)
        .unwrap();
    let mut buf = vec![0; 4096];
    let n = opened.file.read_at(&mut buf, 0).unwrap();
    String::from_utf8(buf[..n].to_vec()).unwrap()
}

fn me() -> Caller {
    Caller {
        uid: crate::sys::process::ids().0,
        gid: crate::sys::process::ids().1,
    }
}

#[test]
fn the_top_layer_wins_a_name_and_directories_merge() {
    let s = Stack::new("merge", 2);
    write(&s.lower(0).join("a/x"), "from l0");
    write(&s.lower(0).join("f"), "old");
    write(&s.lower(1).join("a/y"), "from l1");
    write(&s.lower(1).join("f"), "new!");
    // A file over a directory of the same name: the file wins, nothing merges under it.
    write(&s.lower(0).join("g/hidden"), "");
    write(&s.lower(1).join("g"), "file");
    let u = s.union();

    assert_eq!(names(&u, ""), ["a", "f", "g"]);
    assert_eq!(names(&u, "a"), ["x", "y"]);
    assert_eq!(read_all(&u, "f"), "new!");
    assert_eq!(read_all(&u, "a/x"), "from l0");
    let g = u.lookup(ROOT_INO, b"g").unwrap();
    assert_eq!(g.attr.kind(), Kind::File);
    assert_eq!(errno_of(u.list_dir(g.ino)), c::ENOTDIR);
    // A merged directory reports one link, like the kernel's.
    assert_eq!(u.lookup(ROOT_INO, b"a").unwrap().attr.nlink, 1);
}

#[test]
fn whiteouts_and_opaque_directories_hide_what_lies_below() {
    let s = Stack::new("whiteout", 2);
    write(&s.lower(0).join("gone"), "");
    write(&s.lower(0).join("d/old"), "");
    write(&s.lower(0).join("e/old"), "");
    write(&s.lower(0).join("kept"), "");
    write(&s.lower(1).join(".wh.gone"), "");
    // Opaque by marker file (OCI layers) and by xattr (kernel overlayfs).
    write(&s.lower(1).join("d/.wh..wh..opq"), "");
    write(&s.lower(1).join("d/new"), "");
    write(&s.lower(1).join("e/new"), "");
    set_marker(&s.lower(1).join("e"), Marker::Opaque, b"y");
    // The upper dir in the rootless fuse-overlayfs form: `.wh.NAME` files.
    write(&s.upper().join(".wh.kept"), "");
    let u = s.union();

    assert_eq!(errno_of(u.lookup(ROOT_INO, b"gone")), c::ENOENT);
    assert_eq!(errno_of(u.lookup(ROOT_INO, b"kept")), c::ENOENT);
    assert_eq!(errno_of(u.lookup(ROOT_INO, b".wh.gone")), c::ENOENT);
    assert_eq!(names(&u, ""), ["d", "e"]);
    assert_eq!(names(&u, "d"), ["new"]);
    assert_eq!(names(&u, "e"), ["new"]);
}

#[test]
fn an_upper_directory_with_a_redirect_shows_the_lower_directory_it_names() {
    let s = Stack::new("redirect", 1);
    write(&s.lower(0).join("orig/file"), "lower data");
    // A directory renamed by kernel overlayfs: the old name whited out (here in the `.wh.`
    // form), the new one carrying a redirect to where its lower content lies.
    write(&s.upper().join(".wh.orig"), "");
    mkdir(&s.upper().join("moved"));
    set_marker(&s.upper().join("moved"), Marker::Redirect, b"/orig");
    let u = s.union();

    assert_eq!(names(&u, ""), ["moved"]);
    assert_eq!(names(&u, "moved"), ["file"]);
    assert_eq!(read_all(&u, "moved/file"), "lower data");
    // The directory keeps the number of the lower directory it continues.
    let moved = u.lookup(ROOT_INO, b"moved").unwrap();
    assert_eq!(moved.ino, lower_ino(0, host_ino(&s.lower(0).join("orig"))));
}

#[test]
fn inode_numbers_come_from_the_layer_and_survive_copy_up_and_remount() {
    let s = Stack::new("ino", 2);
    write(&s.lower(0).join("dir/a"), "a");
    mkdir(&s.lower(1).join("dir"));
    write(&s.lower(1).join("f"), "f");
    let u = s.union();

    assert_eq!(
        u.lookup(ROOT_INO, b"f").unwrap().ino,
        lower_ino(1, host_ino(&s.lower(1).join("f")))
    );
    // A merged directory takes the number of its topmost lower copy.
    let dir = u.lookup(ROOT_INO, b"dir").unwrap();
    assert_eq!(dir.ino, lower_ino(1, host_ino(&s.lower(1).join("dir"))));
    // The same object in different layers, and the upper layer, never share a number.
    assert_ne!(lower_ino(0, 5), lower_ino(1, 5));
    assert_ne!(lower_ino(0, 5), upper_ino(5));

    // A file made in the union is numbered from the upper layer.
    let (made, _) = u
        .create(
            dir.ino,
            b"new",
            NewObject::Dir {
                mode: 0o755,
                umask: 0o022,
            },
            me(),
        )
        .unwrap();
    assert_eq!(made.ino, upper_ino(host_ino(&s.upper().join("dir/new"))));

    // A copy-up keeps the lower number (the copy records its origin), also after a remount.
    let f = u.lookup(ROOT_INO, b"f").unwrap().ino;
    let change = Change {
        mode: Some(0o600),
        ..Change::default()
    };
    u.setattr(f, None, change).unwrap();
    assert!(s.upper().join("f").exists(), "chmod copies the file up");
    assert_eq!(u.lookup(ROOT_INO, b"f").unwrap().ino, f);
    drop(u);
    let again = s.union();
    assert_eq!(again.lookup(ROOT_INO, b"f").unwrap().ino, f);
    assert_eq!(resolve(&again, "dir/new").unwrap(), made.ino);
}

#[test]
fn copy_up_brings_the_parents_and_leaves_the_lower_layer_alone() {
    let s = Stack::new("copyup", 1);
    let lower_file = s.lower(0).join("a/b/f");
    write(&lower_file, "lower data");
    fs::set_permissions(&lower_file, fs::Permissions::from_mode(0o644)).unwrap();
    write(&s.lower(0).join("a/b/t"), "to be truncated");
    let u = s.union();

    // chmod: in the userxattr format no metacopy, so the data comes along.
    let f = resolve(&u, "a/b/f").unwrap();
    let change = Change {
        mode: Some(0o600),
        ..Change::default()
    };
    assert_eq!(u.setattr(f, None, change).unwrap().mode & 0o7777, 0o600);
    let copy = s.upper().join("a/b/f");
    assert!(
        s.upper().join("a/b").is_dir(),
        "the parents are copied up first"
    );
    assert_eq!(fs::read_to_string(&copy).unwrap(), "lower data");
    assert_eq!(fs::metadata(&copy).unwrap().mode() & 0o7777, 0o600);
    assert_eq!(fs::metadata(&lower_file).unwrap().mode() & 0o7777, 0o644);
    // The copy carries its origin, the mark that it continues the lower file.
    let copy_fd = fs::File::open(&copy).unwrap();
    assert!(ovl::get(copy_fd.as_fd(), Marker::Origin).is_some());

    // An open with O_TRUNC copies no data up; writes go to the copy only.
    let t = resolve(&u, "a/b/t").unwrap();
    let opened = u.open(t, c::O_WRONLY | c::O_TRUNC, |_| false).unwrap();
    assert!(!opened.lower);
    assert_eq!(fs::metadata(s.upper().join("a/b/t")).unwrap().len(), 0);
    opened.file.write_at(b"upper", 0).unwrap();
    assert_eq!(read_all(&u, "a/b/t"), "upper");
    assert_eq!(
        fs::read_to_string(s.lower(0).join("a/b/t")).unwrap(),
        "to be truncated"
    );

    // A read-only open leaves a lower file where it is.
    write(&s.lower(0).join("r"), "read");
    let u = s.union();
    let r = resolve(&u, "r").unwrap();
    assert!(u.open(r, c::O_RDONLY, |_| false).unwrap().lower);
    assert!(!s.upper().join("r").exists());
}

#[test]
fn names_made_and_removed_in_the_upper_layer() {
    let s = Stack::new("names", 1);
    write(&s.lower(0).join("d/lower"), "");
    let u = s.union();
    let d = resolve(&u, "d").unwrap();

    let spec = NewObject::Symlink { target: b"lower" };
    u.create(d, b"link", spec, me()).unwrap();
    assert_eq!(names(&u, "d"), ["link", "lower"]);
    assert_eq!(
        u.readlink(resolve(&u, "d/link").unwrap()).unwrap(),
        b"lower"
    );
    let spec = NewObject::Dir {
        mode: 0o755,
        umask: 0,
    };
    assert_eq!(errno_of(u.create(d, b"link", spec, me())), c::EEXIST);
    // `.wh.` names are whiteouts in every format: refused as new names.
    let spec = NewObject::Dir {
        mode: 0o755,
        umask: 0,
    };
    assert_eq!(errno_of(u.create(d, b".wh.x", spec, me())), c::EINVAL);
    // A char device 0:0 would be a whiteout after a remount: refused too.
    let spec = NewObject::Node {
        mode: c::S_IFCHR | 0o644,
        umask: 0,
        rdev: 0,
    };
    assert_eq!(errno_of(u.create(d, b"wh", spec, me())), c::EPERM);

    u.rename(d, b"link", d, b"renamed", RenameMode::default())
        .unwrap();
    assert_eq!(names(&u, "d"), ["lower", "renamed"]);
    let noreplace = RenameMode {
        noreplace: true,
        ..RenameMode::default()
    };
    assert_eq!(
        errno_of(u.rename(d, b"renamed", d, b"lower", noreplace)),
        c::EEXIST
    );
    // Without directory redirects (userxattr) a directory with lower content cannot move.
    assert_eq!(
        errno_of(u.rename(ROOT_INO, b"d", ROOT_INO, b"e", RenameMode::default())),
        c::EXDEV
    );

    u.remove(d, b"renamed", false).unwrap();
    assert_eq!(names(&u, "d"), ["lower"]);
    assert!(!s.upper().join("d/renamed").exists());
    assert_eq!(errno_of(u.remove(ROOT_INO, b"d", true)), c::ENOTEMPTY);
    assert_eq!(errno_of(u.remove(d, b"lower", true)), c::ENOTDIR);
}

#[test]
fn xattrs_of_the_file_hide_the_union_markers() {
    let s = Stack::new("xattr", 1);
    write(&s.lower(0).join("f"), "");
    let u = s.union();
    let f = resolve(&u, "f").unwrap();

    u.setxattr(f, b"user.mine", Some((b"v", 0))).unwrap();
    assert_eq!(u.getxattr(f, b"user.mine").unwrap(), b"v");
    let copy = fs::File::open(s.upper().join("f")).unwrap();
    assert!(ovl::get(copy.as_fd(), Marker::Origin).is_some());
    // The origin marker the copy-up wrote is the union's, not the file's.
    let listed = u.listxattr(f).unwrap();
    let listed: Vec<&[u8]> = listed
        .split(|b| *b == 0)
        .filter(|n| !n.is_empty())
        .collect();
    assert_eq!(listed, [&b"user.mine"[..]]);
    assert_eq!(errno_of(u.getxattr(f, b"user.overlay.origin")), c::ENODATA);
    // A user attribute under the marker prefix is escaped, never taken for the marker.
    let origin = ovl::get(copy.as_fd(), Marker::Origin).unwrap();
    u.setxattr(f, b"user.overlay.origin", Some((b"x", 0)))
        .unwrap();
    assert_eq!(u.getxattr(f, b"user.overlay.origin").unwrap(), b"x");
    assert_eq!(ovl::get(copy.as_fd(), Marker::Origin).unwrap(), origin);
    // fuse-overlayfs's own namespace is refused outright.
    assert_eq!(
        errno_of(u.setxattr(f, b"user.fuseoverlayfs.x", Some((b"x", 0)))),
        c::EPERM
    );
}

/// The upper dir is the daemon's while mounted (as with kernel overlayfs, a change made behind
/// its back is undefined): the xattrs of an object the daemon made itself are answered from
/// what it knows, with no call on disk (the kernel asks for security.capability before every
/// write and chown), until an xattr is set through the union.
#[test]
fn a_new_object_answers_xattr_calls_without_reading_the_disk() {
    let s = Stack::new("bare", 1);
    let u = s.union();
    let file = NewObject::File {
        mode: 0o644,
        umask: 0,
        flags: c::O_WRONLY,
    };
    let f = u.create(ROOT_INO, b"f", file, me()).unwrap().0.ino;
    // Set on disk behind the union's back: not read, so not seen.
    let behind = fs::File::open(s.upper().join("f")).unwrap();
    crate::sys::xattr::set(behind.as_fd(), c"user.behind", b"1", 0).unwrap();
    assert_eq!(errno_of(u.getxattr(f, b"user.behind")), c::ENODATA);
    assert!(u.listxattr(f).unwrap().is_empty());
    // Once one is set through the union, the object's own xattrs are read again.
    u.setxattr(f, b"user.mine", Some((b"v", 0))).unwrap();
    assert_eq!(u.getxattr(f, b"user.mine").unwrap(), b"v");
    assert_eq!(u.getxattr(f, b"user.behind").unwrap(), b"1");
    assert_eq!(u.listxattr(f).unwrap(), b"user.behind\0user.mine\0");
}

/// What the daemon keeps per name after a walk: the node of each looked-up lower file, with
/// its name, path and attributes (the listing of the directory is counted apart). Over a
/// directory merged from two layers, as most are in an image.
#[test]
fn a_looked_up_lower_file_keeps_few_heap_bytes() {
    const FILES: usize = 2000;
    let s = Stack::new("node-bytes", 2);
    for i in 0..FILES {
        write(&s.lower(i % 2).join(format!("share/file-{i:06}.txt")), "");
    }
    let u = s.union();
    let dir = u.lookup(ROOT_INO, b"share").unwrap().ino;
    // Loads the listing (partly on helper threads, whose blocks this count cannot follow).
    u.lookup(dir, b"file-000000.txt").unwrap();
    let before = crate::sys::heapcount::live_bytes();
    for i in 1..FILES {
        u.lookup(dir, format!("file-{i:06}.txt").as_bytes())
            .unwrap();
    }
    let per_node = (crate::sys::heapcount::live_bytes() - before) / (FILES as isize - 1);
    // 414 when each node copied its attributes and name and had a block for its one link;
    // 251 with the node at 184 bytes.
    assert!(per_node <= 260, "{per_node} heap bytes per looked-up file");
}
