//! A stack of lower layers in a temp dir, with builders for every on-disk form the union
//! reads, and a resolver that walks merged paths the way a lookup does.

use std::ffi::CString;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use crate::sys;
use crate::sys::c;
use crate::testutil::TempDir;
use crate::union::attr::Attr;
use crate::union::inode::{lower_ino, LowerRef};
use crate::union::layer::Layer;
use crate::union::ovl::{self, Marker, Namespace};

/// Layers `L0` (bottom) .. `L{n-1}` (top), as the mount stacks them.
pub struct Stack {
    tmp: TempDir,
    count: u16,
    pub layers: Vec<Layer>,
}

/// One name of the merged lower view, as a lookup finds it.
pub struct Found {
    /// Where the object and (for a directory) its merged copies lie.
    pub lower: LowerRef,
    /// The winning object's attributes.
    pub attr: Attr,
}

impl Found {
    pub fn is_dir(&self) -> bool {
        self.attr.mode & c::S_IFMT == c::S_IFDIR
    }

    /// The layers merged under a directory, top first.
    pub fn layers(&self) -> Vec<u16> {
        self.lower.dir_layers.to_vec()
    }

    /// The number the union shows for it.
    pub fn ino(&self) -> u64 {
        lower_ino(self.lower.slot, self.attr.host_ino)
    }
}

impl Stack {
    pub fn new(tag: &str, n: u16) -> Stack {
        let tmp = TempDir::new(tag);
        for i in 0..n {
            std::fs::create_dir_all(tmp.path().join(format!("L{i}"))).unwrap();
        }
        let mut stack = Stack {
            tmp,
            count: n,
            layers: Vec::new(),
        };
        stack.reopen();
        stack
    }

    /// Opens the layers afresh, as a new mount of the same stack would.
    pub fn reopen(&mut self) {
        self.layers = (0..self.count)
            .map(|i| Layer::open_root(i, &self.layer_dir(i)).unwrap())
            .collect();
    }

    pub fn base(&self) -> &Path {
        self.tmp.path()
    }

    pub fn layer_dir(&self, layer: u16) -> PathBuf {
        self.tmp.path().join(format!("L{layer}"))
    }

    /// The host path of `rel` in layer `layer`.
    pub fn at(&self, layer: u16, rel: &str) -> PathBuf {
        self.layer_dir(layer).join(rel)
    }

    fn parent_made(&self, layer: u16, rel: &str) -> PathBuf {
        let p = self.at(layer, rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        p
    }

    pub fn dir(&self, layer: u16, rel: &str) -> &Self {
        std::fs::create_dir_all(self.at(layer, rel)).unwrap();
        self
    }

    pub fn file(&self, layer: u16, rel: &str, content: &str) -> &Self {
        std::fs::write(self.parent_made(layer, rel), content).unwrap();
        self
    }

    /// The kernel's whiteout: a char device 0:0 (a normal user may make one since Linux 5.8).
    pub fn whiteout(&self, layer: u16, rel: &str) -> &Self {
        let p = self.parent_made(layer, rel);
        let dir = std::fs::File::open(p.parent().unwrap()).unwrap();
        let name = CString::new(p.file_name().unwrap().as_encoded_bytes()).unwrap();
        sys::ops::mknod_at(dir.as_fd(), &name, c::S_IFCHR, 0)
            .expect("a char 0:0 whiteout can be made without privilege");
        self
    }

    /// The OCI/AUFS whiteout of `rel`: an empty `.wh.NAME` beside it.
    pub fn wh_file(&self, layer: u16, rel: &str) -> &Self {
        let p = self.parent_made(layer, rel);
        let name = p.file_name().unwrap().to_str().unwrap().to_owned();
        std::fs::write(p.with_file_name(format!(".wh.{name}")), "").unwrap();
        self
    }

    /// The OCI/AUFS opaque marker inside directory `rel`.
    pub fn opaque_marker(&self, layer: u16, rel: &str) -> &Self {
        self.dir(layer, rel);
        std::fs::write(self.at(layer, rel).join(".wh..wh..opq"), "").unwrap();
        self
    }

    /// Writes `marker` in the `user.` namespace on `rel`.
    pub fn mark(&self, layer: u16, rel: &str, marker: Marker, value: &str) -> &Self {
        self.xattr(
            layer,
            rel,
            marker.name(Namespace::User).to_str().unwrap(),
            value,
        )
    }

    pub fn xattr(&self, layer: u16, rel: &str, name: &str, value: &str) -> &Self {
        let f = std::fs::File::open(self.at(layer, rel)).unwrap();
        sys::xattr::set(f.as_fd(), &CString::new(name).unwrap(), value.as_bytes(), 0)
            .expect("the temp dir's filesystem must support user.* xattrs");
        self
    }

    /// The merged lower root.
    pub fn root(&self) -> LowerRef {
        LowerRef {
            slot: self.layers.len() as u16 - 1,
            rel: b".".to_vec().into(),
            dir_layers: (0..self.layers.len() as u16).rev().collect(),
            ..LowerRef::default()
        }
    }

    /// Looks `path` up name by name from the merged root: each directory merged, each
    /// child reached through `lowerwalk::child` (which follows redirects).
    pub fn resolve(&self, path: &str) -> Option<Found> {
        let mut dir = self.root();
        let mut found: Option<Found> = None;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            if found.as_ref().is_some_and(|f| !f.is_dir()) {
                return None;
            }
            let index = crate::union::merge::merge_lower_dir(&self.layers, &dir).unwrap();
            let e = index.find(part.as_bytes())?;
            let child = crate::union::lowerwalk::child(
                &self.layers,
                &dir,
                part.as_bytes(),
                e.layer,
                index.dir_layers(e).to_vec(),
            );
            dir = child.clone();
            found = Some(Found {
                lower: child,
                attr: e.attr(),
            });
        }
        found
    }

    /// The names of merged directory `path` ("" for the root), sorted.
    pub fn list(&self, path: &str) -> Vec<String> {
        let dir = if path.is_empty() {
            self.root()
        } else {
            let found = self
                .resolve(path)
                .unwrap_or_else(|| panic!("{path} not found"));
            assert!(found.is_dir(), "{path} is not a directory");
            found.lower
        };
        let index = crate::union::merge::merge_lower_dir(&self.layers, &dir).unwrap();
        (0..index.len())
            .map(|i| String::from_utf8(index.name(index.entry(i)).to_vec()).unwrap())
            .collect()
    }

    /// The layer that wins `path` and the content of the object there.
    pub fn winner(&self, path: &str) -> Option<(u16, String)> {
        let found = self.resolve(path)?;
        let slot = found.lower.slot;
        let host = self.at(slot, std::str::from_utf8(found.lower.path()).unwrap());
        Some((slot, std::fs::read_to_string(host).unwrap_or_default()))
    }

    /// Where the data of regular file `path` lies (a metacopy's data lies further down).
    pub fn data_of(&self, path: &str) -> Option<(u16, String)> {
        let found = self.resolve(path)?;
        let lower = LowerRef {
            data: Some(crate::union::lowerwalk::lower_data(
                &self.layers,
                &found.lower,
            )),
            ..found.lower
        };
        let (slot, rel) = lower.data_source().ok()?;
        let host = self.at(slot, std::str::from_utf8(rel).unwrap());
        Some((slot, std::fs::read_to_string(host).unwrap()))
    }
}

/// Whether this process may write `trusted.*` xattrs (root with CAP_SYS_ADMIN).
pub fn may_write_trusted(dir: &Path) -> bool {
    let probe = dir.join(".trusted-probe");
    std::fs::write(&probe, "").unwrap();
    let f = std::fs::File::open(&probe).unwrap();
    let ok = ovl::set(f.as_fd(), Namespace::Trusted, Marker::Impure, b"y").is_ok();
    std::fs::remove_file(&probe).unwrap();
    ok
}
