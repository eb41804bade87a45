//! Trees deeper than PATH_MAX (pjdfstest's */03.t): any filesystem works at any depth, since
//! each call names one entry of an open directory. Kernel overlayfs and stratafs, each on its
//! own copy of the same lower layer, take the same calls below a chain of 200-byte names much
//! longer than PATH_MAX, made and used only through directory fds; then the merged trees, the
//! upper dirs, stratafs remounted on its upper dir and the kernel mounted on it are compared.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::at::{outcome, show, Dir};
use super::deep_tree::{diff, dirs_of, snapshot, View};
use crate::common::rw::{require_root, KernelMount, StrataChild};
use crate::common::tmp::TempDir;
use crate::differential::{Format, Side};

/// The name of level `i` of a chain: 200 bytes, starting with its number.
fn level(i: usize) -> Vec<u8> {
    let mut name = format!("d{i:02}").into_bytes();
    name.resize(200, b'x');
    name
}

/// Levels 0..depth below `top`, made (mkdir) or only opened; every level's Dir, top first.
fn chain(top: &Dir, depth: usize, make: bool) -> Result<Vec<Dir>, String> {
    let mut levels: Vec<Dir> = Vec::new();
    for i in 0..depth {
        let at = levels.last().unwrap_or(top);
        let next = if make {
            at.mkdir_sub(&level(i))
        } else {
            at.sub(&level(i))
        };
        levels.push(next.map_err(|e| format!("level {i}: {}", crate::sysc::errno_name(e)))?);
    }
    Ok(levels)
}

/// Read data or a link target as text, or the errno.
fn text(r: crate::sysc::Sys<Vec<u8>>) -> String {
    outcome(r.map(|d| String::from_utf8_lossy(&d).into_owned()))
}

/// The entry names of `dir`, long ones shortened, or the errno.
fn names(dir: &Dir) -> String {
    outcome(
        dir.names()
            .map(|n| n.iter().map(|n| show(n)).collect::<Vec<_>>()),
    )
}

/// Bytes of the path of level `depth - 1` from the top of its chain.
fn chain_len(depth: usize) -> usize {
    depth * 201 - 1
}

/// Both implementations on copies of one lower layer, with an upper each.
struct DeepPair {
    scratch: TempDir,
    k: Side,
    s: Side,
    format: Format,
}

impl DeepPair {
    /// Builds the lower layer of each side with `build` (cp cannot copy a tree this deep).
    fn new(label: &str, format: Format, build: impl Fn(&Dir)) -> DeepPair {
        let scratch = TempDir::new(label);
        let side = |name: &str| {
            let layer = scratch.subdir(&format!("{name}/layers/l0"));
            build(&Dir::open(&layer));
            Side {
                layers: vec![layer],
                upper: scratch.subdir(&format!("{name}/upper")),
                work: scratch.subdir(&format!("{name}/work")),
                mnt: scratch.subdir(&format!("{name}/mnt")),
            }
        };
        let (k, s) = (side("kernel"), side("strata"));
        DeepPair {
            scratch,
            k,
            s,
            format,
        }
    }

    fn strata(&self) -> StrataChild {
        let args: &[&str] = match self.format {
            Format::Privileged => &[],
            Format::Userxattr => &["--userxattr"],
        };
        self.s
            .mount_strata(&self.scratch, args)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn kernel_on(&self, side: &Side) -> KernelMount {
        side.mount_kernel(self.format.kernel_opts())
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Runs `ops` on each mount (they return one line per call), then compares everything.
    fn run(self, ops: impl Fn(&Dir) -> Vec<String>) {
        let kernel = self.kernel_on(&self.k);
        let strata = self.strata();
        let seen_k = ops(&Dir::open(&self.k.mnt));
        let seen_s = ops(&Dir::open(&self.s.mnt));
        let mut found = Vec::new();
        if seen_k != seen_s {
            found.push(format!(
                "outcomes differ:\n{}",
                seen_k
                    .iter()
                    .zip(
                        seen_s
                            .iter()
                            .chain(std::iter::repeat(&"(none)".to_string()))
                    )
                    .map(|(k, s)| if k == s {
                        format!("    same: {k}")
                    } else {
                        format!("    kernel: {k}\n    strata: {s}")
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            ));
        }
        let none = Default::default();
        let merged = |mnt: &PathBuf| snapshot(&Dir::open(mnt), View::Merged, &none);
        let kernel_tree = merged(&self.k.mnt).expect("walk the kernel mount");
        let strata_tree = merged(&self.s.mnt);
        differences(
            &mut found,
            "merged trees differ",
            &kernel_tree,
            "stratafs",
            &strata_tree,
        );
        kernel.unmount().expect("unmount kernel overlayfs");
        strata.unmount().expect("unmount stratafs");

        let upper = |side: &Side| {
            let lower = dirs_of(&Dir::open(&side.layers[0]))?;
            snapshot(
                &Dir::open(&side.upper),
                View::Upper(self.format.ns()),
                &lower,
            )
        };
        let kernel_upper = upper(&self.k).expect("walk the kernel's upper dir");
        differences(
            &mut found,
            "upper dirs differ",
            &kernel_upper,
            "stratafs",
            &upper(&self.s),
        );

        // Nothing lives only in the daemon's memory: remounted, stratafs shows the same tree.
        let again = self.strata();
        let remounted = merged(&self.s.mnt);
        again.unmount().expect("unmount stratafs");
        differences(
            &mut found,
            "stratafs remounted differs",
            &kernel_tree,
            "stratafs-remounted",
            &remounted,
        );
        // And the kernel reads the upper dir stratafs wrote as its own.
        let kernel_on_s = self.kernel_on(&self.s);
        let cross = merged(&self.s.mnt);
        kernel_on_s.unmount().expect("unmount kernel overlayfs");
        differences(
            &mut found,
            "the kernel on stratafs's upper dir differs",
            &kernel_tree,
            "kernel-on-stratafs-upper",
            &cross,
        );
        assert!(found.is_empty(), "{}", found.join("\n"));
    }
}

/// A tree as `snapshot` reads it, or why it could not be read.
type Snapshot = Result<BTreeMap<String, String>, String>;

/// Adds to `found` how `b` (named `b_name`) differs from the kernel's tree `kernel`, under
/// the heading `stage`; or why it could not be read.
fn differences(
    found: &mut Vec<String>,
    stage: &str,
    kernel: &BTreeMap<String, String>,
    b_name: &str,
    b: &Snapshot,
) {
    match b {
        Ok(b) => {
            let d = diff("kernel", kernel, b_name, b);
            if !d.is_empty() {
                found.push(format!("{stage}:\n  {}", d.join("\n  ")));
            }
        }
        Err(e) => found.push(format!("{stage}: {e}")),
    }
}

/// Levels of the chain made through the mount: 9 KiB of path, cut in three pieces.
const MADE_DEPTH: usize = 45;

/// pjdfstest */03.t through the mount: a chain of 45 levels (9 KiB of path) made with mkdir
/// relative to each level, then create, write and read, stat, chmod, rename inside a deep dir
/// and across two deep dirs (a file and a directory), link, symlink, unlink, mkdir, rmdir,
/// readdir, setxattr, truncate, and a deep directory renamed while its subtree stays in use.
#[test]
fn a_chain_deeper_than_path_max_made_through_the_mount() {
    require_root();
    DeepPair::new("deep-made", Format::Privileged, build_small_lower).run(made_chain_ops);
}

/// The same in the rootless format (`--userxattr`, against the kernel's `userxattr`).
#[test]
fn a_chain_deeper_than_path_max_made_through_the_mount_userxattr() {
    require_root();
    DeepPair::new("deep-made-ux", Format::Userxattr, build_small_lower).run(made_chain_ops);
}

fn build_small_lower(l: &Dir) {
    l.mkdir(b"lower-dir", 0o755).expect("mkdir");
}

fn made_chain_ops(mnt: &Dir) -> Vec<String> {
    let levels = match chain(mnt, MADE_DEPTH, true) {
        Ok(l) => l,
        Err(e) => return vec![format!("mkdir chain: {e}")],
    };
    assert!(chain_len(MADE_DEPTH) > 2 * libc::PATH_MAX as usize);
    let (mid, deep) = (&levels[25], &levels[MADE_DEPTH - 1]);
    let mut out = vec!["mkdir chain: ok".to_string()];
    let mut log = |what: &str, r: String| out.push(format!("{what}: {r}"));
    log("create f", outcome(deep.create(b"f", b"deep data\n")));
    log("read f", text(deep.read(b"f")));
    log("stat f", outcome(deep.describe(b"f")));
    log("chmod f", outcome(deep.chmod(b"f", 0o600)));
    log("stat f", outcome(deep.describe(b"f")));
    log("append f", outcome(deep.append(b"f", b"more\n")));
    log("rename f g", outcome(deep.rename(b"f", deep, b"g")));
    log("rename g to mid", outcome(deep.rename(b"g", mid, b"moved")));
    log("read moved", text(mid.read(b"moved")));
    log(
        "setxattr moved",
        outcome(mid.set_xattr(b"moved", "user.deep", b"value")),
    );
    log("truncate moved", outcome(mid.truncate(b"moved", 4)));
    log("link moved", outcome(mid.link(b"moved", deep, b"hard")));
    log("stat hard", outcome(deep.describe(b"hard")));
    log("symlink", outcome(deep.symlink(b"../target", b"sym")));
    log("readlink", text(deep.readlink(b"sym")));
    log("mkdir sub", outcome(deep.mkdir(b"sub", 0o750)));
    let sub = deep.sub(b"sub");
    log(
        "create sub/inner",
        outcome(sub.and_then(|s| s.create(b"inner", b"inner\n"))),
    );
    log(
        "rename sub to mid",
        outcome(deep.rename(b"sub", mid, b"subdir")),
    );
    log(
        "read subdir/inner",
        text(mid.sub(b"subdir").and_then(|s| s.read(b"inner"))),
    );
    log("mkdir empty", outcome(deep.mkdir(b"empty", 0o755)));
    log("rmdir empty", outcome(deep.rmdir(b"empty")));
    log("unlink hard", outcome(deep.unlink(b"hard")));
    log("stat moved", outcome(mid.describe(b"moved")));
    log("unlink sym", outcome(deep.unlink(b"sym")));
    log("readdir deep", names(deep));
    log("readdir mid", names(mid));
    // A deep directory renamed in place: what lies below it is reached by its new name.
    log(
        "rename level 30",
        outcome(levels[29].rename(&level(30), &levels[29], b"renamed")),
    );
    log("create after", outcome(deep.create(b"after", b"after\n")));
    log("stat after", outcome(deep.describe(b"after")));
    out
}

/// Lower layer holding a tree deeper than PATH_MAX (30 levels, 6 KiB of path).
const LOWER_DEPTH: usize = 30;
/// A level deeper than PATH_MAX too, for moves between deep dirs.
const LOWER_MID: usize = 24;

fn build_deep_lower(l: &Dir) {
    let levels = chain(l, LOWER_DEPTH, true).expect("make the lower chain");
    let deep = &levels[LOWER_DEPTH - 1];
    for (name, data) in [
        (&b"file"[..], &b"lower data\n"[..]),
        (b"app", b"lower app\n"),
        (b"meta", b"lower meta\n"),
        (b"victim", b"gone soon\n"),
    ] {
        deep.create(name, data).expect("create a lower file");
    }
    for d in [&b"movable"[..], b"crossing", b"emptydir"] {
        let sub = deep.mkdir_sub(d).expect("mkdir");
        if d != b"emptydir" {
            sub.create(b"child", b"child\n").expect("create");
        }
    }
}

/// A lower layer that already holds a tree deeper than PATH_MAX: read through the mount,
/// lower files copied up (append, truncate; chmod and setxattr, metadata-only copy-ups) and
/// removed (whiteout), a lower directory removed, a file and a directory made in the deep merged directory (every
/// directory above copied up), deep lower directories renamed in place and across (where
/// the kernel writes no absolute redirect that long: EXDEV, and `mv` copies), links made.
#[test]
fn a_lower_tree_deeper_than_path_max() {
    require_root();
    DeepPair::new("deep-lower", Format::Privileged, build_deep_lower).run(lower_tree_ops);
}

/// The same in the rootless format, where nothing is copied up metadata-only and no lower
/// directory moves (EXDEV, as the kernel answers without redirects).
#[test]
fn a_lower_tree_deeper_than_path_max_userxattr() {
    require_root();
    DeepPair::new("deep-lower-ux", Format::Userxattr, build_deep_lower).run(lower_tree_ops);
}

fn lower_tree_ops(mnt: &Dir) -> Vec<String> {
    let levels = match chain(mnt, LOWER_DEPTH, false) {
        Ok(l) => l,
        Err(e) => return vec![format!("open the chain: {e}")],
    };
    let (mid, deep) = (&levels[LOWER_MID], &levels[LOWER_DEPTH - 1]);
    let mut out = vec!["open the chain: ok".to_string()];
    let mut log = |what: &str, r: String| out.push(format!("{what}: {r}"));
    log("readdir", names(deep));
    log("read file", text(deep.read(b"file")));
    log("stat file", outcome(deep.describe(b"file")));
    log(
        "setxattr file",
        outcome(deep.set_xattr(b"file", "user.deep", b"value")),
    );
    log("truncate victim", outcome(deep.truncate(b"victim", 3)));
    log("append app", outcome(deep.append(b"app", b"appended\n")));
    log("read app", text(deep.read(b"app")));
    log("chmod meta", outcome(deep.chmod(b"meta", 0o600)));
    log("stat meta", outcome(deep.describe(b"meta")));
    log("read meta", text(deep.read(b"meta")));
    log("unlink victim", outcome(deep.unlink(b"victim")));
    log("stat victim", outcome(deep.describe(b"victim")));
    log("rmdir emptydir", outcome(deep.rmdir(b"emptydir")));
    log("create new", outcome(deep.create(b"new", b"new\n")));
    log("mkdir newdir", outcome(deep.mkdir(b"newdir", 0o755)));
    log(
        "rename movable",
        outcome(deep.rename(b"movable", deep, b"moved")),
    );
    log(
        "read moved/child",
        text(deep.sub(b"moved").and_then(|d| d.read(b"child"))),
    );
    log(
        "rename crossing",
        outcome(deep.rename(b"crossing", mid, b"crossed")),
    );
    log("stat crossing", outcome(deep.describe(b"crossing")));
    // A lower file is linked as a metadata-only copy that names its data by an absolute
    // redirect, which the kernel does not write this long: EXDEV, as for a directory.
    log("link file", outcome(deep.link(b"file", mid, b"file-link")));
    log("stat file-link", outcome(mid.describe(b"file-link")));
    log("link meta", outcome(deep.link(b"meta", deep, b"meta-link")));
    // A file whose data is already copied up links anywhere.
    log("link app", outcome(deep.link(b"app", mid, b"app-link")));
    log("stat app-link", outcome(mid.describe(b"app-link")));
    log("readdir after", names(deep));
    out
}

/// The kernel writes an absolute redirect of at most 256 bytes ('/' included) and answers
/// EXDEV beyond (`mv` then copies): lower directories whose moved path is one byte under,
/// at and over the limit, moved to another directory; a move inside the directory names the
/// old name only, at any length.
#[test]
fn lower_dirs_moved_at_the_redirect_length_limit() {
    require_root();
    let top = vec![b'a'; 200];
    // Paths of 254, 255 and 256 bytes: redirects of 255, 256 and 257.
    let moved_names: Vec<Vec<u8>> = [53, 54, 55]
        .iter()
        .map(|n| vec![b'b' + (*n - 53) as u8; *n])
        .collect();
    let build = |l: &Dir| {
        let dir = l.mkdir_sub(&top).expect("mkdir");
        for n in &moved_names {
            dir.mkdir_sub(n)
                .expect("mkdir")
                .create(b"f", b"lower\n")
                .expect("create");
        }
        dir.mkdir_sub(b"in-place").expect("mkdir");
    };
    DeepPair::new("redirect-limit", Format::Privileged, build).run(|mnt| {
        let dir = mnt.sub(&top).expect("open");
        mnt.mkdir(b"dst", 0o755).expect("mkdir");
        let dst = mnt.sub(b"dst").expect("open");
        let mut out = Vec::new();
        for n in &moved_names {
            let moved = dir.rename(n, &dst, n);
            out.push(format!("move {} bytes: {}", n.len(), outcome(moved)));
        }
        let renamed = dir.rename(b"in-place", &dir, &[b'z'; 255]);
        out.push(format!("rename in place: {}", outcome(renamed)));
        out.push(format!("dst: {}", names(&dst)));
        out
    });
}
