//! Every on-disk whiteout and opaque form the union reads (whiteout.rs, ovl.rs), each seen
//! through the merge: the kernel's char 0:0 device (also as a link of a shared one), OCI
//! `.wh.NAME` files and `.wh..wh..opq`, the opaque marker in every namespace it is read in,
//! and the kernel's xattr whiteouts inside an opaque="x" directory.

use std::ffi::CStr;
use std::os::fd::AsFd;

use super::fixture::{may_write_trusted, Stack};
use crate::union::ovl::{Marker, Namespace};
use crate::union::whiteout::{self, Opacity};

#[test]
fn char_device_whiteouts_hide_also_as_links_of_one_shared_inode() {
    let s = Stack::new("wh-device", 2);
    s.file(0, "a", "0").file(0, "b", "0").file(0, "c", "0");
    // The kernel (and the upper layer) links every whiteout to one shared inode.
    s.whiteout(1, "a");
    std::fs::hard_link(s.at(1, "a"), s.at(1, "b")).unwrap();
    assert_eq!(s.list(""), ["c"]);
}

#[test]
fn oci_whiteout_files_hide_files_and_whole_directories() {
    let s = Stack::new("wh-oci", 2);
    s.file(0, "f", "0")
        .file(0, "d/sub/x", "0")
        .file(0, "kept", "0");
    s.wh_file(1, "f").wh_file(1, "d");
    assert_eq!(s.list(""), ["kept"]);
    assert!(s.resolve("d/sub/x").is_none());
}

/// Each opaque form, alone on L1's copy of `d`, hides L0's copy.
#[test]
fn every_opaque_form_hides_the_layers_below() {
    type Make = fn(&Stack);
    let forms: [(&str, Make); 3] = [
        ("oci marker", |s| {
            s.opaque_marker(1, "d");
        }),
        ("user.overlay.opaque", |s| {
            s.xattr(1, "d", "user.overlay.opaque", "y");
        }),
        ("user.fuseoverlayfs.opaque", |s| {
            s.xattr(1, "d", "user.fuseoverlayfs.opaque", "y");
        }),
    ];
    for (form, make) in forms {
        let s = Stack::new("wh-opaque-forms", 2);
        s.file(0, "d/below", "0").file(1, "d/own", "1");
        assert_eq!(s.list("d"), ["below", "own"], "{form}: transparent before");
        make(&s);
        assert_eq!(s.list("d"), ["own"], "{form}");
        assert_eq!(s.resolve("d").unwrap().layers(), [1], "{form}");
    }
}

#[test]
fn opaque_values_other_than_y_do_not_hide() {
    for value in ["n", "", "yes", "x"] {
        let s = Stack::new("wh-opaque-values", 2);
        s.file(0, "d/below", "0").file(1, "d/own", "1");
        s.xattr(1, "d", "user.overlay.opaque", value);
        assert_eq!(s.list("d"), ["below", "own"], "opaque={value:?}");
    }
    // An escaped user attribute is the file's own, never the marker.
    let s = Stack::new("wh-opaque-escaped", 2);
    s.file(0, "d/below", "0").dir(1, "d");
    s.xattr(1, "d", "user.overlay.overlay.opaque", "y");
    assert_eq!(s.list("d"), ["below"]);
}

/// Linux 6.7+: in a directory marked opaque="x", a zero-size regular file carrying the
/// whiteout marker is a whiteout; anywhere else it is an ordinary file.
#[test]
fn xattr_whiteouts_count_only_inside_an_opaque_x_directory() {
    let s = Stack::new("wh-xattr", 2);
    for d in ["x", "plain"] {
        s.file(0, &format!("{d}/gone"), "0")
            .file(0, &format!("{d}/kept"), "0");
        s.file(0, &format!("{d}/big"), "0");
        s.file(1, &format!("{d}/gone"), "");
        s.mark(1, &format!("{d}/gone"), Marker::Whiteout, "");
        // Not zero-size: a file, whatever its xattrs.
        s.file(1, &format!("{d}/big"), "data");
        s.mark(1, &format!("{d}/big"), Marker::Whiteout, "");
    }
    s.mark(1, "x", Marker::Opaque, "x");
    assert_eq!(
        s.list("x"),
        ["big", "kept"],
        "x: not opaque, gone whited out"
    );
    assert_eq!(s.winner("x/big"), Some((1, "data".into())));
    assert_eq!(s.list("plain"), ["big", "gone", "kept"]);
    assert_eq!(s.winner("plain/gone"), Some((1, String::new())));
}

#[test]
fn opacity_is_read_from_the_directory_fd() {
    let s = Stack::new("wh-opacity-fd", 1);
    let open = |rel: &str| std::fs::File::open(s.at(0, rel)).unwrap();
    s.dir(0, "t").dir(0, "y").dir(0, "x").dir(0, "oci");
    s.mark(0, "y", Marker::Opaque, "y")
        .mark(0, "x", Marker::Opaque, "x");
    s.opaque_marker(0, "oci");
    assert_eq!(
        whiteout::dir_opacity(open("t").as_fd()),
        Opacity::Transparent
    );
    assert_eq!(whiteout::dir_opacity(open("y").as_fd()), Opacity::Opaque);
    assert_eq!(
        whiteout::dir_opacity(open("x").as_fd()),
        Opacity::HasXattrWhiteouts
    );
    // The OCI marker is an entry, not an xattr: only `is_opaque_dir` sees both forms.
    assert_eq!(
        whiteout::dir_opacity(open("oci").as_fd()),
        Opacity::Transparent
    );
    for (rel, opaque) in [("t", false), ("y", true), ("x", false), ("oci", true)] {
        assert_eq!(whiteout::is_opaque_dir(open(rel).as_fd()), opaque, "{rel}");
    }
}

/// The `trusted.` names are the ones kernel overlayfs writes as root; the merge reads them
/// first. A normal user cannot write them, so on disk this runs only as root.
#[test]
fn trusted_markers_are_read_like_user_ones() {
    let first = |m: Marker| -> &'static CStr { m.read_names().next().unwrap() };
    for m in [
        Marker::Opaque,
        Marker::Whiteout,
        Marker::Redirect,
        Marker::Metacopy,
    ] {
        assert_eq!(first(m), m.name(Namespace::Trusted));
        assert!(m.read_names().any(|n| n == m.name(Namespace::User)));
    }
    let s = Stack::new("wh-trusted", 2);
    if !may_write_trusted(s.base()) {
        eprintln!("not root: trusted.* markers checked through the table only");
        return;
    }
    s.file(0, "d/below", "0")
        .file(0, "x/gone", "0")
        .file(1, "d/own", "1");
    s.xattr(1, "d", "trusted.overlay.opaque", "y");
    s.file(1, "x/gone", "")
        .xattr(1, "x", "trusted.overlay.opaque", "x");
    s.xattr(1, "x/gone", "trusted.overlay.whiteout", "");
    assert_eq!(s.list("d"), ["own"]);
    assert!(s.list("x").is_empty());
}

/// What the upper layer writes, read back as a lower layer (a finished container's upper dir
/// becomes the next image layer): its whiteouts hide the names below.
#[test]
fn the_upper_layers_whiteouts_hide_when_it_becomes_a_layer() {
    let s = Stack::new("wh-upper", 2);
    s.file(0, "made", "0")
        .file(0, "replaced", "0")
        .file(0, "kept", "0");
    s.file(1, "replaced", "copied up");
    let work = s.base().join("work");
    std::fs::create_dir(&work).unwrap();
    let upper = crate::union::upper::Upper::open(&s.layer_dir(1), &work, false).unwrap();
    upper.make_whiteout(upper.root(), c"made").unwrap();
    upper
        .replace_with_whiteout(upper.root(), c"replaced")
        .unwrap();
    assert_eq!(s.list(""), ["kept"]);
}
