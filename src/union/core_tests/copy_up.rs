//! Copy-up: what the union decides when a lower object changes (union/copy_up.rs: full copy,
//! metadata-only copy, the hard-link index, parents first), and what the copy of one object
//! holds (copy_object.rs: data, metadata, the file's own xattrs but no marker, the origin). Driven
//! through the union core's own operations, without FUSE, on a `user.` marker format.

use std::ffi::CString;
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;

use super::fixture::Stack;
use crate::sys;
use crate::sys::c;
use crate::union::copy_object::{self, CopyOptions};
use crate::union::inode::ROOT_INO;
use crate::union::lowerwalk::Target;
use crate::union::ovl::{self, Marker, Namespace};
use crate::union::rootless::Format;
use crate::union::{Change, RenameMode, Union};

/// A union of the stack's layers under a writable upper layer, as the mount makes it.
struct Mounted {
    union: Union,
    upper: PathBuf,
    work: PathBuf,
}

/// Mounts the stack; again over the same upper and work dirs when they exist.
fn mount(s: &Stack, metacopy: bool) -> Mounted {
    let upper = s.base().join("upper");
    let work = s.base().join("work");
    std::fs::create_dir_all(&upper).unwrap();
    std::fs::create_dir_all(&work).unwrap();
    let mut s_layers = Vec::new();
    for (i, _) in s.layers.iter().enumerate() {
        s_layers
            .push(crate::union::layer::Layer::open_root(i as u16, &s.layer_dir(i as u16)).unwrap());
    }
    let format = Format {
        ns: Namespace::User,
        metacopy,
        redirect_dir: true,
    };
    let upper_layer = crate::union::upper::Upper::open(&upper, &work, false).unwrap();
    let union = Union::new(s_layers, Some(upper_layer), format, Default::default()).unwrap();
    Mounted { union, upper, work }
}

impl Mounted {
    fn ino(&self, path: &str) -> u64 {
        path.split('/').fold(ROOT_INO, |dir, name| {
            self.union.lookup(dir, name.as_bytes()).unwrap().ino
        })
    }

    fn read(&self, path: &str) -> String {
        let opened = self
            .union
            .open(self.ino(path), c::O_RDONLY, |_| false)
            .unwrap();
        let mut buf = vec![0; 4096];
        let n = opened.file.read_at(&mut buf, 0).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    fn chmod(&self, path: &str, mode: u32) {
        let change = Change {
            mode: Some(mode),
            ..Change::default()
        };
        self.union.setattr(self.ino(path), None, change).unwrap();
    }

    fn open_for_write(&self, path: &str, flags: i32) {
        self.union.open(self.ino(path), flags, |_| false).unwrap();
    }

    fn upper_marker(&self, path: &str, marker: Marker) -> Option<Vec<u8>> {
        ovl::get(
            std::fs::File::open(self.upper.join(path)).unwrap().as_fd(),
            marker,
        )
    }

    /// The work dir's scratch space is left empty after every copy.
    fn assert_work_clean(&self) {
        let left: Vec<_> = std::fs::read_dir(self.work.join("work")).unwrap().collect();
        assert!(left.is_empty(), "left in the work dir: {left:?}");
    }
}

fn index_entries(m: &Mounted) -> Vec<std::fs::DirEntry> {
    std::fs::read_dir(m.work.join("index"))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[test]
fn a_write_copies_a_lower_file_whole() {
    let s = Stack::new("copyup-whole", 1);
    s.file(0, "d/f", "lower data");
    let m = mount(&s, true);
    m.open_for_write("d/f", c::O_WRONLY);
    assert_eq!(
        std::fs::read_to_string(m.upper.join("d/f")).unwrap(),
        "lower data"
    );
    assert!(m.upper.join("d").is_dir(), "the parent comes first");
    assert_eq!(m.upper_marker("d/f", Marker::Metacopy), None);
    assert!(m.upper_marker("d/f", Marker::Origin).is_some());
    m.assert_work_clean();
}

#[test]
fn a_truncating_open_copies_no_data() {
    let s = Stack::new("copyup-trunc", 1);
    s.file(0, "f", "lower data");
    let m = mount(&s, true);
    m.open_for_write("f", c::O_WRONLY | c::O_TRUNC);
    assert_eq!(std::fs::metadata(m.upper.join("f")).unwrap().len(), 0);
}

#[test]
fn a_metadata_change_makes_a_metacopy_where_the_format_allows() {
    for metacopy in [true, false] {
        let s = Stack::new("copyup-meta", 1);
        // Large enough that the blocks of the copy tell data from xattr blocks.
        let data = "lower data".repeat(10_000);
        s.file(0, "f", &data);
        let m = mount(&s, metacopy);
        m.chmod("f", 0o600);
        let up = std::fs::metadata(m.upper.join("f")).unwrap();
        assert_eq!(up.permissions().mode() & 0o7777, 0o600);
        assert_eq!(
            up.len(),
            data.len() as u64,
            "metacopy {metacopy}: the file's size"
        );
        assert_eq!(m.upper_marker("f", Marker::Metacopy).is_some(), metacopy);
        let holds_data = up.blocks() * 512 >= data.len() as u64;
        assert_eq!(
            holds_data,
            !metacopy,
            "metacopy {metacopy}: {} blocks",
            up.blocks()
        );
        assert!(data.starts_with(&m.read("f")));
        if metacopy {
            // The first write brings the data up, in place, and drops the mark.
            m.open_for_write("f", c::O_WRONLY);
            assert_eq!(std::fs::read_to_string(m.upper.join("f")).unwrap(), data);
            assert_eq!(m.upper_marker("f", Marker::Metacopy), None);
        }
    }
}

/// A lower metacopy file (its layer was once an upper dir): the copy takes the metadata
/// from it and the data from the full file below.
#[test]
fn a_lower_metacopy_is_copied_with_the_data_from_below() {
    let s = Stack::new("copyup-lower-metacopy", 2);
    s.file(0, "f", "data below");
    s.file(1, "f", "");
    std::fs::File::options()
        .write(true)
        .open(s.at(1, "f"))
        .unwrap()
        .set_len(10)
        .unwrap();
    std::fs::set_permissions(s.at(1, "f"), std::fs::Permissions::from_mode(0o604)).unwrap();
    s.mark(1, "f", Marker::Metacopy, "");
    s.file(0, "g", "data below").file(1, "g", "");
    std::fs::File::options()
        .write(true)
        .open(s.at(1, "g"))
        .unwrap()
        .set_len(10)
        .unwrap();
    s.mark(1, "g", Marker::Metacopy, "");
    let m = mount(&s, true);
    assert_eq!(m.read("f"), "data below");
    m.open_for_write("f", c::O_WRONLY);
    assert_eq!(
        std::fs::read_to_string(m.upper.join("f")).unwrap(),
        "data below"
    );
    let mode = std::fs::metadata(m.upper.join("f"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o604, "metadata from the metacopy");
    assert_eq!(m.upper_marker("f", Marker::Metacopy), None, "a full copy");
    // A metadata change keeps it a metacopy whose data is still read from below.
    m.chmod("g", 0o640);
    assert!(m.upper_marker("g", Marker::Metacopy).is_some());
    assert_eq!(m.read("g"), "data below");
}

/// A hard-linked lower file is copied whole once, into the index, and every other name
/// that changes joins that copy (the kernel's index=on), so the names stay one file.
#[test]
fn a_hard_linked_lower_file_is_copied_once_through_the_index() {
    let s = Stack::new("copyup-hardlink", 1);
    s.file(0, "a", "shared");
    std::fs::hard_link(s.at(0, "a"), s.at(0, "b")).unwrap();
    let m = mount(&s, true);
    let (a, b) = (m.ino("a"), m.ino("b"));
    assert_eq!(a, b, "one lower file, one number");
    m.chmod("a", 0o600);
    assert_eq!(
        m.upper_marker("a", Marker::Metacopy),
        None,
        "never a metacopy"
    );
    let entries = index_entries(&m);
    assert_eq!(entries.len(), 1);
    let origin = ovl::origin_value(std::fs::File::open(s.at(0, "a")).unwrap().as_fd()).unwrap();
    assert_eq!(
        entries[0].file_name().to_str().unwrap(),
        ovl::index_name(&origin)
    );
    // Through the same node, the other name changes the same copy.
    m.chmod("b", 0o640);
    assert_eq!(m.read("b"), "shared");
    assert_eq!(
        std::fs::metadata(m.upper.join("a"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o640
    );
    // After a remount the other name, still lower (and met first), finds the copy through
    // the index and links it up.
    drop(m);
    let m = mount(&s, true);
    assert!(!m.upper.join("b").exists());
    m.chmod("b", 0o604);
    assert_eq!(m.ino("a"), m.ino("b"));
    let ua = std::fs::metadata(m.upper.join("a")).unwrap();
    let ub = std::fs::metadata(m.upper.join("b")).unwrap();
    assert_eq!(ua.ino(), ub.ino(), "the second name links the first copy");
    assert_eq!(ua.permissions().mode() & 0o7777, 0o604);
    assert_eq!(index_entries(&m).len(), 1);
    assert_eq!(
        std::fs::metadata(s.at(0, "a")).unwrap().nlink(),
        2,
        "lower untouched"
    );
}

/// A lower directory renamed in its layer (a redirect) is copied up as an empty directory
/// without the marker: the copy is found by its name, the layer's redirect below still leads
/// to the older copies.
#[test]
fn a_redirected_lower_directory_is_copied_up_without_its_markers() {
    let s = Stack::new("copyup-redirect-dir", 2);
    s.file(0, "old/f", "0");
    s.file(1, "new/g", "1")
        .mark(1, "new", Marker::Redirect, "/old");
    s.xattr(1, "new", "user.keep", "mine");
    let m = mount(&s, true);
    m.chmod("new", 0o750);
    let up = m.upper.join("new");
    assert!(up.is_dir());
    assert_eq!(
        std::fs::read_dir(&up).unwrap().count(),
        0,
        "no child copied"
    );
    assert_eq!(m.upper_marker("new", Marker::Redirect), None);
    assert!(m.upper_marker("new", Marker::Origin).is_some());
    let dir = std::fs::File::open(&up).unwrap();
    assert_eq!(
        sys::xattr::get(dir.as_fd(), c"user.keep")
            .unwrap()
            .as_deref(),
        Some(&b"mine"[..])
    );
    let names = m.union.list_dir(m.ino("new")).unwrap();
    let names: Vec<&[u8]> = (0..names.len()).map(|i| names.get(i).0).collect();
    assert!(
        names.contains(&&b"f"[..]) && names.contains(&&b"g"[..]),
        "{names:?}"
    );
    m.assert_work_clean();
}

/// Renaming a lower directory copies it up and records where its lower copies are.
#[test]
fn a_renamed_lower_directory_records_a_redirect_to_its_lower_path() {
    let s = Stack::new("copyup-rename-dir", 1);
    s.file(0, "a/d/f", "0").dir(0, "b");
    let m = mount(&s, true);
    let mode = RenameMode {
        noreplace: true,
        ..RenameMode::default()
    };
    m.union
        .rename(m.ino("a"), b"d", m.ino("b"), b"e", mode)
        .unwrap();
    let value = m.upper_marker("b/e", Marker::Redirect).expect("a redirect");
    assert_eq!(
        Target::parse(&value),
        Some(Target::Absolute(b"a/d".to_vec()))
    );
    assert_eq!(m.read("b/e/f"), "0");
    assert!(
        m.union.lookup(m.ino("a"), b"d").is_err(),
        "the old name is gone"
    );
}

/// The copy of one object (copy_object.rs): the file's own xattrs come along, the union's
/// markers never do, and the origin names the lower object.
#[test]
fn a_copy_keeps_the_files_xattrs_but_no_marker() {
    let s = Stack::new("copyup-xattrs", 1);
    s.file(0, "f", "data");
    s.xattr(0, "f", "user.mime", "text/plain");
    s.xattr(0, "f", "user.overlay.redirect", "/elsewhere");
    s.xattr(0, "f", "user.overlay.metacopy", "");
    s.xattr(0, "f", "user.fuseoverlayfs.origin", "x");
    s.xattr(0, "f", "user.overlay.overlay.mine", "escaped");
    let work = s.base().join("w");
    let dest = s.base().join("dest");
    std::fs::create_dir(&work).unwrap();
    std::fs::create_dir(&dest).unwrap();
    let open = |p: &PathBuf| std::fs::File::open(p).unwrap();
    let src = open(&s.at(0, "f"));
    let opts = CopyOptions {
        with_data: true,
        metacopy: false,
        fsync: false,
        ns: Namespace::User,
        data_from: None,
    };
    let name = CString::new("f").unwrap();
    copy_object::copy_up(
        src.as_fd(),
        open(&work).as_fd(),
        open(&dest).as_fd(),
        &name,
        &opts,
    )
    .unwrap();
    let copy = open(&dest.join("f"));
    let mut names: Vec<String> = sys::xattr::list(copy.as_fd())
        .unwrap()
        .into_iter()
        .map(|n| String::from_utf8(n).unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "user.mime",
            "user.overlay.origin",
            "user.overlay.overlay.mine"
        ]
    );
    let origin = ovl::get(copy.as_fd(), Marker::Origin).unwrap();
    assert_eq!(origin, ovl::origin_value(src.as_fd()).unwrap());
    assert_eq!(std::fs::read_to_string(dest.join("f")).unwrap(), "data");
    // A copy never replaces what is at its name, and leaves nothing behind when it fails.
    let err = copy_object::copy_up(
        src.as_fd(),
        open(&work).as_fd(),
        open(&dest).as_fd(),
        &name,
        &opts,
    )
    .unwrap_err();
    assert_eq!(err.raw_os_error(), Some(c::EEXIST));
    assert_eq!(std::fs::read_dir(&work).unwrap().count(), 0);
}
