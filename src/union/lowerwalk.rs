//! Lookups through the lower layers the way kernel overlayfs's `ovl_lookup` makes them, for
//! layers that were once an upper dir (containers/storage stacks a finished container's upper
//! dir as the next image layer):
//! - a directory renamed there carries a redirect naming where its older copies lie in the
//!   layers below: an absolute path from the layer roots, or a name in the parent directory;
//! - a file whose metadata only changed there is a metacopy: its data is the same name (or its
//!   redirect) in the layers below.
//!
//! The walk goes down one layer at a time. A relative target is looked up in the parent's own
//! copies, an absolute one from the root of every layer below; a whiteout, an object of the
//! wrong type or an opaque directory ends it, and a redirect met on the way renames the target
//! for the layers further down.

use std::os::fd::AsFd;
use std::sync::Arc;

use crate::sys;
use crate::sys::c;
use crate::union::inode::{LowerData, LowerRef};
use crate::union::layer::{relpath, Layer};
use crate::union::ovl::{self, Marker};
use crate::union::whiteout;

/// What a redirect names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A name in the parent directory's copies.
    Relative(Vec<u8>),
    /// A path from the root of each layer (without the leading '/').
    Absolute(Vec<u8>),
}

impl Target {
    /// A redirect value as the kernel accepts it: "/path", or one name without '/'.
    pub fn parse(value: &[u8]) -> Option<Target> {
        match value.strip_prefix(b"/") {
            Some(abs) if !abs.is_empty() => Some(Target::Absolute(abs.to_vec())),
            Some(_) => None,
            None if value.is_empty() || value.contains(&b'/') => None,
            None => Some(Target::Relative(value.to_vec())),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Want {
    Dir,
    Data,
}

/// The copies of a directory in the layers below `from_slot`, where the copy in `from_slot`
/// carries a redirect to `target`; `parent` is the directory holding it. Top first.
pub fn redirected_dir(
    layers: &[Layer],
    parent: &LowerRef,
    from_slot: u16,
    target: Target,
) -> Vec<(u16, Vec<u8>)> {
    walk(layers, parent, from_slot, target, Want::Dir)
}

/// The lower reference of entry `name` of merged directory `parent`, won by layer `slot`.
/// For a directory, `dir_layers` are the layers holding a directory of that name, top
/// first, as the parent's merge found them, without reading the copies' markers. They are
/// read here, top down, when the directory is reached (as the kernel reads them at lookup,
/// rather than for every directory of every merged parent): an opaque copy hides the copies
/// below it, and a copy carrying a redirect replaces them by the copies where it points.
pub fn child(
    layers: &[Layer],
    parent: &LowerRef,
    name: &[u8],
    slot: u16,
    mut dir_layers: Vec<u16>,
) -> LowerRef {
    let mut moved = Vec::new();
    for i in 0..dir_layers.len() {
        let from = dir_layers[i];
        // Nothing lies below the bottom layer: its markers hide nothing and lead nowhere.
        if from == 0 {
            break;
        }
        match dir_marks(&layers[from as usize], parent, name) {
            DirMarks::Plain => continue,
            DirMarks::Opaque => dir_layers.truncate(i + 1),
            DirMarks::Redirect(target) => {
                dir_layers.truncate(i + 1);
                let below = redirected_dir(layers, parent, from, target);
                dir_layers.extend(below.iter().map(|(s, _)| *s));
                moved = below;
            }
        }
        break;
    }
    // A file has no layers of its own: the shared empty list costs it no block.
    let dir_layers: Arc<[u16]> = if dir_layers.is_empty() {
        Arc::default()
    } else {
        dir_layers.into()
    };
    parent.child(name, slot, dir_layers, &moved)
}

/// What one layer's copy of a directory says about the copies below it.
enum DirMarks {
    Plain,
    /// Hides every copy below (checked before the redirect, as the kernel does).
    Opaque,
    Redirect(Target),
}

/// The markers on the copy of directory `name` of `parent` in `layer`.
fn dir_marks(layer: &Layer, parent: &LowerRef, name: &[u8]) -> DirMarks {
    let path = relpath::join(parent.path_in(layer.slot), name);
    // Opened for reading, not O_PATH: the xattr reads then take the fd itself.
    let Ok(dir) = relpath::to_cstring(&path)
        .and_then(|p| layer.open(&p, c::O_RDONLY | c::O_DIRECTORY | c::O_NOFOLLOW))
    else {
        return DirMarks::Plain;
    };
    if whiteout::is_opaque_dir(dir.as_fd()) {
        return DirMarks::Opaque;
    }
    let Some(value) = ovl::get(dir.as_fd(), Marker::Redirect) else {
        return DirMarks::Plain;
    };
    match Target::parse(&value) {
        Some(target) => DirMarks::Redirect(target),
        None => {
            log::warn!(
                "layer {}: ignoring an invalid redirect {:?} on {:?}",
                layer.path.display(),
                String::from_utf8_lossy(&value),
                String::from_utf8_lossy(&path)
            );
            DirMarks::Plain
        }
    }
}

/// Where the data of the metacopy file `name` of `parent`, won by layer `from_slot`, lies:
/// the first regular file below that is not itself a metacopy, found by the file's redirect
/// if it has one, else by its name.
pub fn metacopy_data(
    layers: &[Layer],
    parent: &LowerRef,
    name: &[u8],
    from_slot: u16,
    redirect: Option<Target>,
) -> LowerData {
    let target = redirect.unwrap_or_else(|| Target::Relative(name.to_vec()));
    match walk(layers, parent, from_slot, target, Want::Data).pop() {
        Some((slot, path)) => LowerData::At(slot, Box::new(path.into())),
        None => LowerData::Missing,
    }
}

/// Where the data of lower regular file `file` lies: in the winning object, or (when that is
/// a metacopy) in the first full copy below it.
pub fn lower_data(layers: &[Layer], file: &LowerRef) -> LowerData {
    // Opened for reading where the daemon may (a regular file: no side effect), so the xattr
    // reads take the fd itself rather than a walk through /proc; O_PATH otherwise.
    let open = |flags| {
        relpath::to_cstring(file.path()).and_then(|p| layers[file.slot as usize].open(&p, flags))
    };
    let readable = c::O_RDONLY | c::O_NOFOLLOW | c::O_NONBLOCK | c::O_NOCTTY;
    let obj = open(readable).or_else(|_| open(c::O_PATH | c::O_NOFOLLOW));
    let Ok(obj) = obj else {
        return LowerData::Own;
    };
    if !ovl::is_metacopy(obj.as_fd()) {
        return LowerData::Own;
    }
    let redirect = ovl::get(obj.as_fd(), Marker::Redirect).and_then(|v| Target::parse(&v));
    let name = file
        .rel
        .rsplit(|b| *b == b'/')
        .next()
        .unwrap_or(&file.rel[..]);
    metacopy_data(layers, &file.parent_dir(), name, file.slot, redirect)
}

fn walk(
    layers: &[Layer],
    parent: &LowerRef,
    from_slot: u16,
    mut target: Target,
    want: Want,
) -> Vec<(u16, Vec<u8>)> {
    let mut found = Vec::new();
    let mut current = from_slot;
    loop {
        let next = match &target {
            // The parent's copies are listed top first.
            Target::Relative(_) => parent.dir_layers.iter().copied().find(|s| *s < current),
            Target::Absolute(_) => current.checked_sub(1),
        };
        let Some(slot) = next else { break };
        current = slot;
        let step = look_in_layer(&layers[slot as usize], parent.path_in(slot), &target, want);
        if let Some(path) = step.found {
            found.push((slot, path));
            if want == Want::Data && !step.metacopy {
                return found;
            }
        }
        if let Some(t) = step.retarget {
            target = t;
        }
        if step.stop {
            break;
        }
    }
    if want == Want::Data {
        // Only metacopies were found: no data.
        found.clear();
    }
    found
}

struct Step {
    /// The object's path in this layer, when it is of the wanted type.
    found: Option<Vec<u8>>,
    /// A metacopy file (the data search goes on).
    metacopy: bool,
    /// No layer further down takes part.
    stop: bool,
    /// A redirect met here: the target for the layers further down.
    retarget: Option<Target>,
}

fn look_in_layer(layer: &Layer, parent_path: &[u8], target: &Target, want: Want) -> Step {
    let mut step = Step {
        found: None,
        metacopy: false,
        stop: false,
        retarget: None,
    };
    let (base, parts): (Vec<u8>, Vec<&[u8]>) = match target {
        Target::Relative(name) => (parent_path.to_vec(), vec![&name[..]]),
        Target::Absolute(path) => (
            b".".to_vec(),
            path.split(|b| *b == b'/')
                .filter(|p| !p.is_empty() && *p != b".")
                .collect(),
        ),
    };
    if parts.is_empty() || parts.contains(&&b".."[..]) {
        step.stop = true;
        return step;
    }
    let mut path = base;
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        path = relpath::join(&path, part);
        let Some((obj, st)) = open_stat(layer, &path) else {
            // Not in this layer: the layers below may still have it.
            return step;
        };
        if whiteout::is_device_whiteout(&st) {
            step.stop = true;
            return step;
        }
        let kind = st.st_mode & c::S_IFMT;
        let is_dir = kind == c::S_IFDIR;
        if !last && !is_dir {
            step.stop = true;
            return step;
        }
        if last {
            match want {
                Want::Dir if !is_dir => {
                    step.stop = true;
                    return step;
                }
                Want::Data if kind != c::S_IFREG => {
                    step.stop = true;
                    return step;
                }
                Want::Data => {
                    step.found = Some(path.clone());
                    step.metacopy = ovl::is_metacopy(obj.as_fd());
                    if !step.metacopy {
                        return step;
                    }
                }
                Want::Dir => step.found = Some(path.clone()),
            }
        }
        if is_dir && whiteout::is_opaque_dir(obj.as_fd()) {
            step.stop = true;
            continue;
        }
        let Some(redirect) =
            ovl::get(obj.as_fd(), Marker::Redirect).and_then(|v| Target::parse(&v))
        else {
            continue;
        };
        // The rest of the path stays; what leads to it changes for the layers below.
        let rest: Vec<&[u8]> = parts[i + 1..].to_vec();
        let renamed = match (redirect, target) {
            (Target::Absolute(abs), _) => {
                // An absolute redirect restarts the search, even below an opaque ancestor.
                step.stop = false;
                join_all(abs, &rest)
            }
            (Target::Relative(name), Target::Relative(_)) => {
                step.retarget = Some(Target::Relative(name));
                continue;
            }
            (Target::Relative(name), Target::Absolute(_)) => {
                let mut p = parts[..i].join(&b'/');
                if !p.is_empty() {
                    p.push(b'/');
                }
                p.extend_from_slice(&name);
                join_all(p, &rest)
            }
        };
        step.retarget = Some(Target::Absolute(renamed));
    }
    step
}

fn join_all(mut path: Vec<u8>, rest: &[&[u8]]) -> Vec<u8> {
    for part in rest {
        path.push(b'/');
        path.extend_from_slice(part);
    }
    path
}

fn open_stat(layer: &Layer, path: &[u8]) -> Option<(std::os::fd::OwnedFd, c::stat)> {
    let obj = layer
        .open(&relpath::to_cstring(path).ok()?, c::O_PATH | c::O_NOFOLLOW)
        .ok()?;
    let st = sys::fstat(obj.as_fd()).ok()?;
    Some((obj, st))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_values_parse_as_the_kernel_accepts_them() {
        assert_eq!(
            Target::parse(b"/a/b"),
            Some(Target::Absolute(b"a/b".to_vec()))
        );
        assert_eq!(
            Target::parse(b"old"),
            Some(Target::Relative(b"old".to_vec()))
        );
        assert_eq!(Target::parse(b"a/b"), None);
        assert_eq!(Target::parse(b""), None);
        assert_eq!(Target::parse(b"/"), None);
    }

    fn layer_stack(tmp: &std::path::Path, n: u16) -> Vec<Layer> {
        (0..n)
            .map(|i| {
                let p = tmp.join(format!("L{i}"));
                std::fs::create_dir_all(&p).unwrap();
                Layer::open_root(i, &p).unwrap()
            })
            .collect()
    }

    fn set(path: &std::path::Path, marker: Marker, value: &[u8]) {
        let f = std::fs::File::open(path).unwrap();
        ovl::set(f.as_fd(), ovl::Namespace::User, marker, value).unwrap();
    }

    fn root(n: u16) -> LowerRef {
        LowerRef {
            rel: b".".to_vec().into(),
            dir_layers: (0..n).rev().collect(),
            ..LowerRef::default()
        }
    }

    /// L2: new (-> /old), L1: old (-> /older, a second rename), L0: older.
    #[test]
    fn absolute_redirects_are_followed_through_every_rename() {
        let tmp = crate::testutil::TempDir::new("lowerwalk-abs");
        let layers = layer_stack(tmp.path(), 3);
        let l = |i: usize, p: &str| tmp.path().join(format!("L{i}")).join(p);
        std::fs::create_dir_all(l(2, "new")).unwrap();
        set(&l(2, "new"), Marker::Redirect, b"/old");
        std::fs::create_dir_all(l(1, "old")).unwrap();
        set(&l(1, "old"), Marker::Redirect, b"/older");
        std::fs::create_dir_all(l(0, "older")).unwrap();
        let got = redirected_dir(&layers, &root(3), 2, Target::Absolute(b"old".to_vec()));
        assert_eq!(got, vec![(1, b"old".to_vec()), (0, b"older".to_vec())]);
    }

    /// A relative redirect is looked up in the parent's copies, which may lie elsewhere.
    #[test]
    fn relative_redirects_use_the_parents_paths() {
        let tmp = crate::testutil::TempDir::new("lowerwalk-rel");
        let layers = layer_stack(tmp.path(), 2);
        let l = |i: usize, p: &str| tmp.path().join(format!("L{i}")).join(p);
        std::fs::create_dir_all(l(1, "p/b")).unwrap();
        std::fs::create_dir_all(l(0, "q/a")).unwrap();
        let parent = LowerRef {
            slot: 1,
            rel: b"p".to_vec().into(),
            dir_layers: [1, 0].into(),
            moved: vec![(0, b"q".to_vec())].into(),
            ..LowerRef::default()
        };
        let got = redirected_dir(&layers, &parent, 1, Target::Relative(b"a".to_vec()));
        assert_eq!(got, vec![(0, b"q/a".to_vec())]);
    }

    /// The parent's merge lists every layer holding a directory of the name; reaching the
    /// directory reads its redirect, which replaces the copies below it by the redirect's.
    #[test]
    fn reaching_a_redirected_dir_replaces_the_copies_below_it() {
        let tmp = crate::testutil::TempDir::new("lowerwalk-child");
        let layers = layer_stack(tmp.path(), 3);
        let l = |i: usize, p: &str| tmp.path().join(format!("L{i}")).join(p);
        std::fs::create_dir_all(l(2, "new")).unwrap();
        set(&l(2, "new"), Marker::Redirect, b"/old");
        std::fs::create_dir_all(l(1, "new")).unwrap();
        std::fs::create_dir_all(l(1, "old")).unwrap();
        std::fs::create_dir_all(l(0, "old")).unwrap();
        let root = root(3);
        let listing = crate::union::merge::merge_lower_dir(&layers, &root).unwrap();
        let e = listing.find(b"new").unwrap();
        assert_eq!(
            listing.dir_layers(e),
            &[2, 1],
            "the merge reads no redirect"
        );
        let dir = child(
            &layers,
            &root,
            b"new",
            e.layer,
            listing.dir_layers(e).to_vec(),
        );
        assert_eq!(*dir.dir_layers, [2, 1, 0]);
        assert_eq!(dir.path_in(2), b"new");
        assert_eq!(dir.path_in(1), b"old", "L1's own \"new\" is not merged");
        assert_eq!(dir.path_in(0), b"old");
        // Without a redirect the directory keeps the merge's layers and paths.
        let e = listing.find(b"old").unwrap();
        let dir = child(
            &layers,
            &root,
            b"old",
            e.layer,
            listing.dir_layers(e).to_vec(),
        );
        assert_eq!(*dir.dir_layers, [1, 0]);
        assert_eq!(dir.path_in(0), b"old");
    }

    #[test]
    fn a_whiteout_or_an_opaque_dir_ends_the_walk() {
        let tmp = crate::testutil::TempDir::new("lowerwalk-stop");
        let layers = layer_stack(tmp.path(), 3);
        let l = |i: usize, p: &str| tmp.path().join(format!("L{i}")).join(p);
        std::fs::create_dir_all(l(1, "old")).unwrap();
        set(&l(1, "old"), Marker::Opaque, b"y");
        std::fs::create_dir_all(l(0, "old")).unwrap();
        let got = redirected_dir(&layers, &root(3), 2, Target::Absolute(b"old".to_vec()));
        assert_eq!(got, vec![(1, b"old".to_vec())], "opaque: nothing below");
        std::fs::create_dir_all(l(2, "x")).unwrap();
        let got = redirected_dir(&layers, &root(3), 2, Target::Absolute(b"gone".to_vec()));
        assert!(got.is_empty());
    }

    #[test]
    fn metacopy_data_is_the_first_full_file_below() {
        let tmp = crate::testutil::TempDir::new("lowerwalk-meta");
        let layers = layer_stack(tmp.path(), 3);
        let l = |i: usize, p: &str| tmp.path().join(format!("L{i}")).join(p);
        for i in [1, 2] {
            let f = std::fs::File::create(l(i, "f")).unwrap();
            f.set_len(4).unwrap();
            set(&l(i, "f"), Marker::Metacopy, b"");
        }
        assert_eq!(
            metacopy_data(&layers, &root(3), b"f", 2, None),
            LowerData::Missing,
            "metacopies all the way down: no data"
        );
        std::fs::write(l(0, "f"), b"data").unwrap();
        assert_eq!(
            metacopy_data(&layers, &root(3), b"f", 2, None),
            LowerData::At(0, Box::new(b"f".to_vec().into()))
        );
    }
}
