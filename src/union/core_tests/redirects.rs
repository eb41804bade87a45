//! Redirects (lowerwalk.rs): a directory or metacopy file renamed in a layer that was once an
//! upper dir names where its older copies lie, as an absolute path from the layer roots or a
//! name in the parent's copies; the walk follows chains of renames and stops at whiteouts,
//! objects of the wrong type and opaque directories.

use super::fixture::Stack;
use crate::union::ovl::Marker;

#[test]
fn a_relative_redirect_merges_the_old_name_of_the_parents_copies() {
    let s = Stack::new("redir-rel", 2);
    s.file(1, "p/new/added", "1")
        .mark(1, "p/new", Marker::Redirect, "old");
    s.file(0, "p/old/kept", "0").file(0, "p/new/other", "0");
    let new = s.resolve("p/new").unwrap();
    assert_eq!(new.layers(), [1, 0]);
    assert_eq!(new.lower.path_in(0), b"p/old");
    assert_eq!(s.list("p/new"), ["added", "kept"], "not L0's own p/new");
    assert_eq!(s.winner("p/new/kept"), Some((0, "0".into())));
}

#[test]
fn an_absolute_redirect_is_looked_up_from_the_layer_roots() {
    let s = Stack::new("redir-abs", 2);
    s.dir(1, "x/new")
        .mark(1, "x/new", Marker::Redirect, "/y/old");
    s.file(0, "y/old/f", "0");
    assert_eq!(s.list("x/new"), ["f"]);
    assert_eq!(s.winner("x/new/f"), Some((0, "0".into())));
}

/// L2: a -> "b" (relative), L1: b -> "/c/d" (absolute), L0: c/d.
#[test]
fn a_chain_of_renames_is_followed_down_every_layer() {
    let s = Stack::new("redir-chain", 3);
    s.file(2, "a/two", "2").mark(2, "a", Marker::Redirect, "b");
    s.file(1, "b/one", "1")
        .mark(1, "b", Marker::Redirect, "/c/d");
    s.file(0, "c/d/zero", "0");
    let a = s.resolve("a").unwrap();
    assert_eq!(a.layers(), [2, 1, 0]);
    assert_eq!(a.lower.path_in(1), b"b");
    assert_eq!(a.lower.path_in(0), b"c/d");
    assert_eq!(s.list("a"), ["one", "two", "zero"]);
}

/// L2: x -> "/a/b"; L1 renamed a (a -> "/c"), keeping a/b; L0: c/b.
#[test]
fn a_renamed_ancestor_on_the_way_renames_the_rest_of_the_path() {
    let s = Stack::new("redir-ancestor", 3);
    s.dir(2, "x").mark(2, "x", Marker::Redirect, "/a/b");
    s.file(1, "a/b/one", "1")
        .mark(1, "a", Marker::Redirect, "/c");
    s.file(0, "c/b/zero", "0").file(0, "a/b/stale", "0");
    assert_eq!(s.resolve("x").unwrap().lower.path_in(0), b"c/b");
    assert_eq!(s.list("x"), ["one", "zero"]);
}

#[test]
fn a_redirect_into_an_opaque_directory_stops_there() {
    for oci in [false, true] {
        let s = Stack::new("redir-into-opaque", 3);
        s.file(2, "new/top", "2")
            .mark(2, "new", Marker::Redirect, "/old");
        s.file(1, "old/mid", "1");
        if oci {
            s.opaque_marker(1, "old");
        } else {
            s.mark(1, "old", Marker::Opaque, "y");
        }
        s.file(0, "old/bottom", "0");
        assert_eq!(s.resolve("new").unwrap().layers(), [2, 1], "oci {oci}");
        assert_eq!(s.list("new"), ["mid", "top"], "oci {oci}");
    }
}

#[test]
fn a_whited_out_or_non_directory_target_leads_nowhere() {
    let s = Stack::new("redir-nowhere", 3);
    s.file(2, "a/own", "2")
        .mark(2, "a", Marker::Redirect, "/old");
    s.whiteout(1, "old").file(0, "old/hidden", "0");
    s.dir(2, "b").mark(2, "b", Marker::Redirect, "/file");
    s.file(0, "file", "not a dir");
    assert_eq!(s.resolve("a").unwrap().layers(), [2]);
    assert_eq!(s.list("a"), ["own"]);
    assert_eq!(s.resolve("b").unwrap().layers(), [2]);
}

#[test]
fn an_invalid_redirect_is_ignored_and_never_leaves_the_layers() {
    let s = Stack::new("redir-invalid", 2);
    // Not a redirect the kernel accepts: the directory merges by its own name.
    s.dir(1, "d").mark(1, "d", Marker::Redirect, "a/b");
    s.file(0, "d/own", "0").file(0, "a/b/elsewhere", "0");
    assert_eq!(s.list("d"), ["own"]);
    // A path climbing out of the layer root names nothing.
    s.dir(1, "e").mark(1, "e", Marker::Redirect, "/../L0/a");
    assert_eq!(s.resolve("e").unwrap().layers(), [1]);
}

/// The parent's merge lists every layer holding the name; an opaque copy met when the
/// directory is reached hides the ones below, for the walks that start from it too.
#[test]
fn a_relative_redirect_never_looks_below_an_opaque_parent() {
    let s = Stack::new("redir-opaque-parent", 3);
    s.dir(2, "d/new").mark(2, "d/new", Marker::Redirect, "old");
    s.dir(1, "d").mark(1, "d", Marker::Opaque, "y");
    s.file(0, "d/old/hidden", "0");
    assert_eq!(s.resolve("d").unwrap().layers(), [2, 1]);
    assert_eq!(s.resolve("d/new").unwrap().layers(), [2]);
    assert!(s.list("d/new").is_empty());
}

#[test]
fn a_metacopy_finds_its_data_by_name_or_by_redirect() {
    let s = Stack::new("redir-metacopy", 3);
    let metacopy = |layer: u16, rel: &str| {
        s.file(layer, rel, "");
        std::fs::File::options()
            .write(true)
            .open(s.at(layer, rel))
            .unwrap()
            .set_len(4)
            .unwrap();
        s.mark(layer, rel, Marker::Metacopy, "");
    };
    // By name.
    metacopy(1, "same");
    s.file(0, "same", "data");
    // By an absolute redirect, the old name below holding something else.
    metacopy(1, "moved");
    s.mark(1, "moved", Marker::Redirect, "/orig");
    s.file(0, "orig", "data").file(0, "moved", "wrong");
    // By a relative redirect in a subdirectory.
    metacopy(1, "d/f");
    s.mark(1, "d/f", Marker::Redirect, "g");
    s.file(0, "d/g", "data");
    // Through a metacopy in the middle that was itself renamed.
    metacopy(2, "chain");
    metacopy(1, "chain");
    s.mark(1, "chain", Marker::Redirect, "/first");
    s.file(0, "first", "data").file(0, "chain", "wrong");
    // Inside a directory renamed in a layer above the data.
    s.dir(2, "newdir")
        .mark(2, "newdir", Marker::Redirect, "/olddir");
    metacopy(2, "newdir/f");
    s.file(0, "olddir/f", "data");
    for path in ["same", "moved", "d/f", "chain", "newdir/f"] {
        assert_eq!(s.data_of(path), Some((0, "data".into())), "{path}");
    }
}

#[test]
fn a_metacopy_in_an_opaque_directory_has_no_data_below_it() {
    let s = Stack::new("redir-metacopy-opaque", 2);
    s.opaque_marker(1, "d").file(1, "d/f", "");
    s.mark(1, "d/f", Marker::Metacopy, "");
    s.file(0, "d/f", "hidden by the opaque directory");
    assert_eq!(s.resolve("d").unwrap().layers(), [1]);
    assert_eq!(
        s.data_of("d/f"),
        None,
        "the data is missing (EIO), not read from below"
    );
}
