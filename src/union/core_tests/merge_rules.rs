//! The merge of one directory across the lower layers (merge.rs): the top layer that has a
//! name wins it; a whiteout hides it below its own layer; directories merge until a layer
//! where the name is not a directory, is whited out, or the directory is opaque.

use super::fixture::Stack;

#[test]
fn the_topmost_layer_holding_a_name_wins_it() {
    let s = Stack::new("merge-wins", 3);
    s.file(0, "f", "0").file(1, "f", "1").file(2, "f", "2");
    s.file(0, "only0", "0").file(1, "only1", "1");
    s.file(0, "mid", "0").file(1, "mid", "1");
    assert_eq!(s.winner("f"), Some((2, "2".into())));
    assert_eq!(s.winner("mid"), Some((1, "1".into())));
    assert_eq!(s.winner("only0"), Some((0, "0".into())));
    assert_eq!(s.winner("only1"), Some((1, "1".into())));
    assert_eq!(s.list(""), ["f", "mid", "only0", "only1"], "each name once");
}

#[test]
fn same_named_directories_merge_across_all_layers() {
    let s = Stack::new("merge-dirs", 3);
    s.file(0, "d/a", "0")
        .file(1, "d/b", "1")
        .file(2, "d/c", "2");
    s.file(0, "d/shared", "0").file(2, "d/shared", "2");
    s.file(0, "d/sub/deep", "0").dir(2, "d/sub");
    let d = s.resolve("d").unwrap();
    assert!(d.is_dir());
    assert_eq!(d.lower.slot, 2, "the top copy is the directory's own");
    assert_eq!(d.layers(), [2, 1, 0], "top first");
    assert_eq!(s.list("d"), ["a", "b", "c", "shared", "sub"]);
    assert_eq!(s.winner("d/shared"), Some((2, "2".into())));
    assert_eq!(s.winner("d/a"), Some((0, "0".into())));
    assert_eq!(
        s.list("d/sub"),
        ["deep"],
        "the merge goes on in subdirectories"
    );
}

#[test]
fn a_whiteout_hides_the_name_in_the_layers_below() {
    let s = Stack::new("merge-wh", 3);
    s.file(0, "f", "0").whiteout(1, "f");
    s.file(0, "d/x", "0").whiteout(1, "d");
    assert!(s.resolve("f").is_none());
    assert!(s.resolve("d").is_none());
    assert!(
        s.resolve("d/x").is_none(),
        "nothing below a whited-out directory"
    );
    assert!(s.list("").is_empty(), "{:?}", s.list(""));
}

#[test]
fn a_whiteout_never_hides_its_own_layer_or_the_layers_above() {
    let s = Stack::new("merge-wh-own", 3);
    // The layer that whites a name out may hold the name itself (a tar layer recreating it).
    s.file(0, "f", "0").wh_file(1, "f").file(1, "f", "1");
    // A higher layer brings a whited-out name back.
    s.file(0, "g", "0").whiteout(1, "g").file(2, "g", "2");
    s.file(0, "d/old", "0")
        .whiteout(1, "d")
        .dir(2, "d")
        .file(2, "d/new", "2");
    assert_eq!(s.winner("f"), Some((1, "1".into())));
    assert_eq!(s.winner("g"), Some((2, "2".into())));
    assert_eq!(
        s.list("d"),
        ["new"],
        "the recreated dir does not merge the old one"
    );
    assert_eq!(s.resolve("d").unwrap().layers(), [2]);
}

#[test]
fn an_opaque_directory_stops_the_merge_below_it() {
    let s = Stack::new("merge-opaque", 4);
    s.file(0, "d/a", "0").file(1, "d/b", "1");
    s.opaque_marker(2, "d").file(2, "d/c", "2");
    s.file(3, "d/e", "3");
    // A layer above the opaque one still merges into it.
    assert_eq!(s.list("d"), ["c", "e"]);
    assert_eq!(s.resolve("d").unwrap().layers(), [3, 2]);
    assert!(s.resolve("d/a").is_none());
}

#[test]
fn an_opaque_directory_in_the_top_layer_shows_only_itself() {
    let s = Stack::new("merge-opaque-top", 2);
    s.file(0, "d/a", "0").dir(1, "d").file(1, "d/b", "1");
    s.mark(1, "d", crate::union::ovl::Marker::Opaque, "y");
    assert_eq!(s.list("d"), ["b"]);
    assert_eq!(s.resolve("d").unwrap().layers(), [1]);
    // Opacity hides the layers below, not siblings of the opaque directory.
    s.file(0, "sibling", "0");
    assert_eq!(s.list(""), ["d", "sibling"]);
}

#[test]
fn a_file_over_a_directory_hides_the_directory() {
    let s = Stack::new("merge-file-over-dir", 2);
    s.file(0, "x/inside", "0").file(1, "x", "file");
    let x = s.resolve("x").unwrap();
    assert!(!x.is_dir());
    assert_eq!(x.lower.slot, 1);
    assert!(x.lower.dir_layers.is_empty());
    assert!(s.resolve("x/inside").is_none());
    assert_eq!(s.list(""), ["x"]);
}

#[test]
fn a_directory_over_a_file_hides_the_file() {
    let s = Stack::new("merge-dir-over-file", 2);
    s.file(0, "x", "file").file(1, "x/inside", "1");
    let x = s.resolve("x").unwrap();
    assert!(x.is_dir());
    assert_eq!(x.layers(), [1], "the file below takes no part");
    assert_eq!(s.list("x"), ["inside"]);
}

#[test]
fn a_non_directory_between_directories_ends_the_merge() {
    let s = Stack::new("merge-dir-file-dir", 3);
    s.file(0, "d/bottom", "0")
        .file(1, "d", "file")
        .file(2, "d/top", "2");
    // A symlink ends it too, even one pointing at a directory.
    s.file(0, "e/bottom", "0").dir(2, "e").file(2, "e/top", "2");
    std::os::unix::fs::symlink("d", s.at(1, "e")).unwrap();
    assert_eq!(s.list("d"), ["top"]);
    assert_eq!(s.resolve("d").unwrap().layers(), [2]);
    assert_eq!(s.list("e"), ["top"]);
}

#[test]
fn format_entries_are_never_listed() {
    let s = Stack::new("merge-hidden-names", 2);
    s.file(0, "a", "0").wh_file(1, "a").wh_file(1, "gone");
    s.opaque_marker(1, "d");
    s.file(1, ".wh..wh.plnk/link", "aufs")
        .file(1, ".wh..wh.aufs", "");
    s.file(1, ".whole", "plain");
    assert_eq!(s.list(""), [".whole", "d"]);
    assert!(s.list("d").is_empty());
}

#[test]
fn a_whiteout_in_a_subdirectory_hides_only_there() {
    let s = Stack::new("merge-wh-sub", 2);
    s.file(0, "d/f", "0").file(0, "f", "0").file(0, "e/f", "0");
    s.wh_file(1, "d/f").dir(1, "e");
    assert!(s.resolve("d/f").is_none());
    assert_eq!(s.winner("f"), Some((0, "0".into())));
    assert_eq!(s.winner("e/f"), Some((0, "0".into())));
}

#[test]
fn attributes_come_from_the_winning_object() {
    use std::os::unix::fs::MetadataExt;
    let s = Stack::new("merge-attr", 2);
    s.file(0, "f", "a longer lower file").file(1, "f", "top");
    s.dir(0, "d").dir(1, "d");
    let f = s.resolve("f").unwrap();
    let top = std::fs::metadata(s.at(1, "f")).unwrap();
    assert_eq!(f.attr.size, 3);
    assert_eq!(f.attr.host_ino, top.ino());
    let d = s.resolve("d").unwrap();
    assert_eq!(
        d.attr.host_ino,
        std::fs::metadata(s.at(1, "d")).unwrap().ino()
    );
}

/// The merge itself stops at an opaque copy, whatever layers it is handed (the root's are
/// all of them; a parent's merge lists every layer holding a directory of the name).
#[test]
fn the_merge_stops_at_an_opaque_copy_of_the_layers_it_is_given() {
    for oci in [false, true] {
        let s = Stack::new("merge-opaque-direct", 3);
        s.file(0, "below", "0")
            .file(1, "mid", "1")
            .file(2, "top", "2");
        s.file(0, "d/below", "0")
            .file(1, "d/mid", "1")
            .file(2, "d/top", "2");
        for rel in [".", "d"] {
            if oci {
                s.opaque_marker(1, rel);
            } else {
                s.mark(1, rel, crate::union::ovl::Marker::Opaque, "y");
            }
        }
        assert_eq!(s.list(""), ["d", "mid", "top"], "root, oci {oci}");
        let d = s.root().child(b"d", 2, vec![2, 1, 0].into(), &[]);
        let index = crate::union::merge::merge_lower_dir(&s.layers, &d).unwrap();
        let names: Vec<&[u8]> = (0..index.len())
            .map(|i| index.name(index.entry(i)))
            .collect();
        assert_eq!(names, [&b"mid"[..], b"top"], "d, oci {oci}");
    }
}
