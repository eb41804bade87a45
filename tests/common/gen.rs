//! Seeded random layer stacks: deep trees where later layers override, white out (in every
//! format), make opaque and replace what earlier layers made.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use super::layers::{Layer, Ns, Stack};

/// xorshift64*: small, fast, and the same sequence for the same seed everywhere.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in 0..n (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }
}

/// What the generator has put at a path in the layer being written.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Touch {
    /// A directory copy, with the namespace of its opaque=x marker if it has one.
    Dir {
        opaque: bool,
        x: Option<Ns>,
    },
    NonDir,
    Whiteout,
}

impl Touch {
    /// A directory copy that is neither opaque nor holds xattr whiteouts.
    const PLAIN_DIR: Touch = Touch::Dir {
        opaque: false,
        x: None,
    };
}

/// Name stems with the awkward bytes real images hold: spaces, newlines, UTF-8, dashes.
const STEMS: &[&str] = &[
    "a",
    "bin",
    "etc",
    "lib",
    "usr",
    "file",
    "data.txt",
    ".hidden",
    "with space",
    "new\nline",
    "tab\there",
    "ünïcödé",
    "日本語",
    "emoji😀",
    "-dash",
    "...",
    "back\\slash",
    "colon:name",
    "UPPER",
];

const FILE_MODES: &[u32] = &[
    0o644, 0o644, 0o600, 0o755, 0o444, 0o4755, 0o2755, 0o640, 0o1755, 0o000,
];
const DIR_MODES: &[u32] = &[0o755, 0o755, 0o700, 0o1777, 0o750, 0o2775];
const IDS: &[u32] = &[0, 0, 0, 1000, 65534, 12345];

/// Builds `count` layers in `stack` from `seed`.
pub fn generate(stack: &mut Stack, seed: u64, count: usize) {
    let mut g = Gen {
        rng: Rng::new(seed),
        view: BTreeMap::new(),
        serial: 0,
    };
    for _ in 0..count {
        let layer = stack.add_layer();
        g.layer(&layer);
    }
}

struct Gen {
    rng: Rng,
    /// Roughly what the union of the layers written so far shows: path -> is a directory.
    view: BTreeMap<PathBuf, bool>,
    serial: usize,
}

struct LayerState<'a> {
    layer: &'a Layer,
    touched: BTreeMap<PathBuf, Touch>,
}

impl Gen {
    fn layer(&mut self, layer: &Layer) {
        let mut st = LayerState {
            layer,
            touched: BTreeMap::new(),
        };
        let ops = 10 + self.rng.below(22);
        for _ in 0..ops {
            match self.rng.below(100) {
                0..=27 => self.new_file(&mut st),
                28..=37 => self.new_dir_chain(&mut st),
                38..=45 => self.overwrite(&mut st),
                46..=57 => self.whiteout(&mut st),
                58..=64 => self.opaque(&mut st),
                65..=69 => self.replace(&mut st),
                70..=74 => self.redeclare_dir(&mut st),
                75..=81 => self.new_symlink(&mut st),
                82..=86 => self.hard_links(&mut st),
                87..=92 => self.special(&mut st),
                93..=95 => self.sparse(&mut st),
                96..=97 => self.aufs_metadata(&mut st),
                _ => self.dangling_whiteout(&mut st),
            }
        }
    }

    fn fresh_name(&mut self) -> OsString {
        self.serial += 1;
        if self.rng.chance(2) {
            // A maximal name: 255 bytes, unique through its leading digits.
            let mut s = format!("{:06}", self.serial).into_bytes();
            while s.len() < 255 {
                s.push(b'a' + self.rng.below(26) as u8);
            }
            return OsString::from_vec(s);
        }
        let stem = *self.rng.pick(STEMS);
        OsString::from(format!("{stem}{}", self.serial))
    }

    fn dirs(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = self
            .view
            .iter()
            .filter(|(_, d)| **d)
            .map(|(p, _)| p.clone())
            .collect();
        v.push(PathBuf::new());
        v
    }

    fn random_path(&mut self, want_dir: Option<bool>) -> Option<PathBuf> {
        let candidates: Vec<&PathBuf> = self
            .view
            .iter()
            .filter(|(_, d)| want_dir.is_none_or(|w| w == **d))
            .map(|(p, _)| p)
            .collect();
        if candidates.is_empty() {
            return None;
        }
        Some(candidates[self.rng.below(candidates.len())].clone())
    }

    /// A path of the view (a directory, a non-directory, or either) that this layer has not
    /// touched yet, its parents made in the layer; None when the draw gives none.
    fn untouched_path(&mut self, st: &mut LayerState, want_dir: Option<bool>) -> Option<PathBuf> {
        let p = self.random_path(want_dir)?;
        if st.touched.contains_key(&p) || !self.ensure_parents(st, &p) {
            return None;
        }
        Some(p)
    }

    /// Makes every ancestor of `rel` a directory copy in this layer (merging with the view's
    /// directory below). False if that clashes with what this layer already holds there.
    fn ensure_parents(&mut self, st: &mut LayerState, rel: &Path) -> bool {
        let ancestors: Vec<PathBuf> = rel
            .ancestors()
            .skip(1)
            .filter(|a| !a.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .collect();
        for a in ancestors.iter().rev() {
            match st.touched.get(a) {
                Some(Touch::Dir { .. }) => {}
                Some(_) => return false,
                None => {
                    if self.view.get(a) != Some(&true) {
                        return false;
                    }
                    st.layer.dir(a);
                    st.touched.insert(a.clone(), Touch::PLAIN_DIR);
                }
            }
        }
        true
    }

    /// A path for a new object: a fresh name in a directory of the view or of this layer.
    fn new_path(&mut self, st: &mut LayerState) -> Option<PathBuf> {
        let mut dirs = self.dirs();
        dirs.extend(
            st.touched
                .iter()
                .filter(|(_, t)| matches!(t, Touch::Dir { .. }))
                .map(|(p, _)| p.clone()),
        );
        let mut parent = dirs[self.rng.below(dirs.len())].clone();
        // Keep paths well inside PATH_MAX however deep earlier layers went.
        if parent.as_os_str().len() > 2000 || parent.components().count() > 14 {
            parent = PathBuf::new();
        }
        let p = parent.join(self.fresh_name());
        (self.ensure_parents(st, &p) && !st.touched.contains_key(&p)).then_some(p)
    }

    fn decorate(&mut self, st: &LayerState, rel: &Path, is_dir: bool) {
        let l = st.layer;
        let mode = if is_dir {
            *self.rng.pick(DIR_MODES)
        } else {
            *self.rng.pick(FILE_MODES)
        };
        if self.rng.chance(30) {
            l.chown(rel, *self.rng.pick(IDS), *self.rng.pick(IDS));
        }
        l.chmod(rel, mode);
        if self.rng.chance(15) {
            // user.* xattrs exist only on regular files and directories.
            let plain = st
                .layer
                .root()
                .join(rel)
                .symlink_metadata()
                .is_ok_and(|m| m.is_file() || m.is_dir());
            let names: &[&str] = if plain {
                &["user.mime", "user.comment", "trusted.app", "security.label"]
            } else {
                &["trusted.app", "security.label"]
            };
            let name = *self.rng.pick(names);
            let len = self.rng.below(40);
            let value = self.rng.bytes(len);
            l.xattr(rel, name, &value);
        }
        let plain = l
            .root()
            .join(rel)
            .symlink_metadata()
            .is_ok_and(|m| m.is_file() || m.is_dir());
        if plain && self.rng.chance(4) {
            l.acl(rel, false);
            if is_dir && self.rng.chance(50) {
                l.acl(rel, true);
            }
        }
        if !is_dir {
            let secs = 1_000_000_000 + self.rng.below(700_000_000) as i64;
            let nsecs = self.rng.below(1_000_000_000) as i64;
            l.mtime(rel, secs, nsecs);
        }
    }

    fn content(&mut self) -> Vec<u8> {
        let len = match self.rng.below(10) {
            0 => 0,
            1..=6 => self.rng.below(200),
            7 | 8 => self.rng.below(8192),
            // Past one 64 KiB read, to cover reads in several requests.
            _ => 65536 + self.rng.below(20_000),
        };
        self.rng.bytes(len)
    }

    /// Writes a file of random content and attributes at `p` in this layer, shown by the view.
    fn add_file(&mut self, st: &mut LayerState, p: &Path) {
        let data = self.content();
        st.layer.file(p, &data);
        self.decorate(st, p, false);
        st.touched.insert(p.to_path_buf(), Touch::NonDir);
        self.view.insert(p.to_path_buf(), false);
    }

    /// Writes a directory copy of random attributes at `p` in this layer, shown by the view.
    fn add_dir(&mut self, st: &mut LayerState, p: &Path) {
        st.layer.dir(p);
        self.decorate(st, p, true);
        st.touched.insert(p.to_path_buf(), Touch::PLAIN_DIR);
        self.view.insert(p.to_path_buf(), true);
    }

    fn new_file(&mut self, st: &mut LayerState) {
        let Some(p) = self.new_path(st) else { return };
        self.add_file(st, &p);
    }

    fn new_dir_chain(&mut self, st: &mut LayerState) {
        let Some(mut p) = self.new_path(st) else {
            return;
        };
        let depth = 1 + self.rng.below(8);
        for i in 0..depth {
            if i > 0 {
                p = p.join(self.fresh_name());
            }
            self.add_dir(st, &p);
            if self.rng.chance(60) {
                let f = p.join(self.fresh_name());
                self.add_file(st, &f);
            }
        }
    }

    /// Replaces a non-directory of the view with new content or another kind of object.
    fn overwrite(&mut self, st: &mut LayerState) {
        let Some(p) = self.untouched_path(st, Some(false)) else {
            return;
        };
        if self.rng.chance(70) {
            let data = self.content();
            st.layer.file(&p, &data);
            self.decorate(st, &p, false);
        } else {
            st.layer.symlink(&p, "replaced/by/a/symlink");
        }
        st.touched.insert(p, Touch::NonDir);
    }

    fn remove_from_view(&mut self, p: &Path, keep_self: bool) {
        let doomed: Vec<PathBuf> = self
            .view
            .keys()
            .filter(|k| k.starts_with(p) && (!keep_self || k.as_path() != p))
            .cloned()
            .collect();
        for k in doomed {
            self.view.remove(&k);
        }
    }

    fn whiteout(&mut self, st: &mut LayerState) {
        let Some(p) = self.untouched_path(st, None) else {
            return;
        };
        let parent = p.parent().unwrap_or(Path::new("")).to_path_buf();
        let parent_state = st.touched.get(&parent).copied();
        // `.wh.` + a 255-byte name would be too long: such names get a device whiteout.
        let long = p.file_name().is_some_and(|n| n.len() > 251);
        match self.rng.below(3) {
            0 => {
                st.layer.whiteout_dev(&p);
            }
            1 if !long => {
                st.layer.whiteout_aufs(&p);
            }
            1 => {
                st.layer.whiteout_dev(&p);
            }
            _ => match parent_state {
                // xattr whiteouts need a non-root, non-opaque parent copy marked opaque=x,
                // with one namespace per directory.
                Some(Touch::Dir { opaque: false, x }) if !parent.as_os_str().is_empty() => {
                    let ns = x.unwrap_or(if self.rng.chance(50) {
                        Ns::Trusted
                    } else {
                        Ns::User
                    });
                    st.layer.xattr_whiteout(&p, ns);
                    st.touched.insert(
                        parent.clone(),
                        Touch::Dir {
                            opaque: false,
                            x: Some(ns),
                        },
                    );
                }
                _ => {
                    st.layer.whiteout_dev(&p);
                }
            },
        }
        st.touched.insert(p.clone(), Touch::Whiteout);
        self.remove_from_view(&p, false);
    }

    /// A whiteout of a name nothing below holds: it must hide nothing and show nothing.
    fn dangling_whiteout(&mut self, st: &mut LayerState) {
        let Some(p) = self.new_path(st) else { return };
        if self.rng.chance(50) || p.file_name().is_some_and(|n| n.len() > 251) {
            st.layer.whiteout_dev(&p);
        } else {
            st.layer.whiteout_aufs(&p);
        }
        st.touched.insert(p, Touch::Whiteout);
    }

    /// Makes a directory of the view opaque in this layer and puts a few new things in it.
    fn opaque(&mut self, st: &mut LayerState) {
        let Some(d) = self.random_path(Some(true)) else {
            return;
        };
        if !self.ensure_parents(st, &d) {
            return;
        }
        match st.touched.get(&d) {
            None | Some(Touch::Dir { x: None, .. }) => {}
            Some(_) => return,
        }
        // Children this layer already put there stay; everything below goes.
        let own: Vec<PathBuf> = st
            .touched
            .keys()
            .filter(|k| k.starts_with(&d) && k.as_path() != d)
            .cloned()
            .collect();
        let own_visible: Vec<(PathBuf, bool)> = own
            .iter()
            .filter_map(|k| self.view.get(k).map(|v| (k.clone(), *v)))
            .collect();
        match self.rng.below(3) {
            0 => {
                st.layer.opaque_marker(&d);
            }
            1 => {
                st.layer.opaque_xattr(&d, Ns::Trusted);
            }
            _ => {
                st.layer.opaque_xattr(&d, Ns::User);
            }
        }
        if !st.touched.contains_key(&d) {
            self.decorate(st, &d, true);
        }
        st.touched.insert(
            d.clone(),
            Touch::Dir {
                opaque: true,
                x: None,
            },
        );
        self.remove_from_view(&d, true);
        for (k, v) in own_visible {
            self.view.insert(k, v);
        }
        for _ in 0..self.rng.below(4) {
            let f = d.join(self.fresh_name());
            self.add_file(st, &f);
        }
    }

    /// A file becomes a directory, or a directory a file.
    fn replace(&mut self, st: &mut LayerState) {
        let Some(p) = self.untouched_path(st, None) else {
            return;
        };
        if self.view[&p] {
            // What was below the directory goes from the view with it.
            self.remove_from_view(&p, false);
            self.add_file(st, &p);
        } else {
            self.add_dir(st, &p);
            let f = p.join(self.fresh_name());
            st.layer
                .file(&f, b"inside a directory that replaced a file\n");
            st.touched.insert(f.clone(), Touch::NonDir);
            self.view.insert(f, false);
        }
    }

    /// A directory of the view gets a new top copy with other attributes.
    fn redeclare_dir(&mut self, st: &mut LayerState) {
        let Some(d) = self.untouched_path(st, Some(true)) else {
            return;
        };
        // Already a directory of the view: the view does not change.
        self.add_dir(st, &d);
    }

    fn new_symlink(&mut self, st: &mut LayerState) {
        let Some(p) = self.new_path(st) else { return };
        let target = match self.rng.below(7) {
            0 => PathBuf::from("/etc/passwd"),
            1 => PathBuf::from("../../../../../../../../etc/shadow"),
            2 => PathBuf::from("/nonexistent/dangling"),
            3 => PathBuf::from("dangling-relative"),
            4 => PathBuf::from("target with space\nand newline"),
            5 => PathBuf::from("x/".repeat(300)),
            _ => match self.random_path(None) {
                Some(t) => Path::new("/").join(t),
                None => PathBuf::from("/"),
            },
        };
        st.layer.symlink(&p, &target);
        if self.rng.chance(20) {
            st.layer.chown(&p, *self.rng.pick(IDS), *self.rng.pick(IDS));
        }
        st.touched.insert(p.clone(), Touch::NonDir);
        self.view.insert(p, false);
    }

    fn hard_links(&mut self, st: &mut LayerState) {
        let Some(first) = self.new_path(st) else {
            return;
        };
        self.add_file(st, &first);
        for _ in 0..1 + self.rng.below(3) {
            let Some(other) = self.new_path(st) else {
                continue;
            };
            st.layer.hardlink(&first, &other);
            st.touched.insert(other.clone(), Touch::NonDir);
            self.view.insert(other, false);
        }
    }

    fn special(&mut self, st: &mut LayerState) {
        let Some(p) = self.new_path(st) else { return };
        match self.rng.below(3) {
            0 => {
                st.layer.fifo(&p);
            }
            1 => {
                let (ma, mi) = *self.rng.pick(&[(1, 3), (5, 1), (4, 64), (136, 2)]);
                st.layer.char_dev(&p, ma, mi);
            }
            _ => {
                let (ma, mi) = *self.rng.pick(&[(8, 0), (259, 7), (7, 1)]);
                st.layer.block_dev(&p, ma, mi);
            }
        }
        self.decorate(st, &p, false);
        st.touched.insert(p.clone(), Touch::NonDir);
        self.view.insert(p, false);
    }

    fn sparse(&mut self, st: &mut LayerState) {
        let Some(p) = self.new_path(st) else { return };
        let len = 1 + self.rng.below(4 << 20) as u64;
        let mut chunks = Vec::new();
        for _ in 0..self.rng.below(4) {
            let off = self.rng.below(len as usize) as u64;
            let n = 1 + self.rng.below(5000);
            let data = self.rng.bytes(n);
            chunks.push((off, data));
        }
        let refs: Vec<(u64, &[u8])> = chunks.iter().map(|(o, d)| (*o, d.as_slice())).collect();
        st.layer.sparse(&p, len, &refs);
        self.decorate(st, &p, false);
        st.touched.insert(p.clone(), Touch::NonDir);
        self.view.insert(p, false);
    }

    /// AUFS bookkeeping (`.wh..wh.plnk`) that must never show and hides nothing.
    fn aufs_metadata(&mut self, st: &mut LayerState) {
        let name = format!(".wh..wh.plnk/{}.{}", self.serial, self.rng.below(1000));
        self.serial += 1;
        st.layer.file(&name, b"aufs hard link store\n");
    }
}

/// What a stack holds, to prove a generated stack exercises every format.
#[derive(Debug, Default)]
pub struct Coverage {
    pub char_whiteouts: usize,
    pub aufs_whiteouts: usize,
    pub xattr_whiteouts: usize,
    pub opaque_markers: usize,
    pub opaque_trusted: usize,
    pub opaque_user: usize,
    pub symlinks: usize,
    pub hard_linked: usize,
    pub fifos: usize,
    pub devices: usize,
    pub max_depth: usize,
    pub long_names: usize,
}

pub fn coverage(layers: &[PathBuf]) -> Coverage {
    let mut c = Coverage::default();
    for l in layers {
        count_dir(l, 0, &mut c);
    }
    c
}

fn count_dir(dir: &Path, depth: usize, c: &mut Coverage) {
    use super::model::{read_dir_copy, Item, WhiteoutKind};
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    c.max_depth = c.max_depth.max(depth);
    let copy = read_dir_copy(dir);
    if depth > 0 {
        for (prefix, counter) in [
            ("trusted", &mut c.opaque_trusted),
            ("user", &mut c.opaque_user),
        ] {
            let v = super::sys::get_xattr(dir, &format!("{prefix}.overlay.opaque"));
            if matches!(v, Ok(Some(v)) if v == b"y") {
                *counter += 1;
            }
        }
    }
    for (name, item) in &copy.items {
        let p = dir.join(name);
        if name.len() == 255 {
            c.long_names += 1;
        }
        match item {
            Item::OpaqueMarker => c.opaque_markers += 1,
            Item::Whiteout(WhiteoutKind::CharDev, _) => c.char_whiteouts += 1,
            Item::Whiteout(WhiteoutKind::Aufs, _) => c.aufs_whiteouts += 1,
            Item::Whiteout(WhiteoutKind::Xattr, _) => c.xattr_whiteouts += 1,
            Item::Hidden => {}
            Item::Object(true) => count_dir(&p, depth + 1, c),
            Item::Object(false) => {
                let md = p.symlink_metadata().expect("lstat");
                let ft = md.file_type();
                if ft.is_symlink() {
                    c.symlinks += 1;
                } else if ft.is_fifo() {
                    c.fifos += 1;
                } else if ft.is_char_device() || ft.is_block_device() {
                    c.devices += 1;
                } else if md.nlink() > 1 {
                    c.hard_linked += 1;
                }
            }
        }
    }
}
