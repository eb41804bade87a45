//! What to mount, and its validation: every error names the path and the fix.

pub(crate) mod overlap;
pub(crate) mod submount;
pub(crate) mod volattach;

use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext};
use crate::spec::overlap::{Place, Places, Relation};
use crate::spec::submount::Kind;
use crate::sys::c;
use crate::sys::mountinfo;
use crate::union::layer::Layer;
use crate::union::upper::Upper;

#[derive(Debug, Clone, Default)]
pub struct MountSpec {
    /// Bottom layer first.
    pub layers: Vec<PathBuf>,
    pub mountpoint: PathBuf,
    /// Writable layer: upper dir and work dir (both or neither).
    pub upper: Option<PathBuf>,
    pub work: Option<PathBuf>,
    /// Skip fsync (volatile / fsync=0): faster, and a crash may lose recent changes.
    pub volatile: bool,
    pub passthrough: bool,
    /// Do not enforce POSIX ACLs (fuse-overlayfs's noacl).
    pub noacl: bool,
    /// Volumes, binds and tmpfs paths inside the merged view.
    pub submounts: Vec<crate::spec::submount::SubMount>,
    /// Every write outside sub-mounts fails with EROFS.
    pub read_only_union: bool,
    pub nodev: bool,
    pub nosuid: bool,
    pub noexec: bool,
    /// Where volumes live (None: the default state dir).
    pub state_dir: Option<PathBuf>,
    pub threads: Option<usize>,
    pub fsname: Option<String>,
    /// Where log lines go once the daemon runs (None: stderr, or the system log if detached).
    pub log_file: Option<PathBuf>,
    /// A directory the daemon deletes when it exits (the demo's unpacked image).
    pub remove_on_exit: Option<PathBuf>,
    /// Write the rootless (`userxattr`) format even where the privileged one is possible.
    pub userxattr: bool,
    /// Owners as the mount shows and stores them (uidmapping=, gidmapping=, squash_to_*).
    pub ownership: crate::union::idmap::Ownership,
}

/// A directory of the mount: what it is (for messages), its path as given, its identity.
type Named = (&'static str, PathBuf, Place);

/// Err when `a` stands to `b` in one of the `refused` relations (None: any overlap).
fn refuse_overlap(
    a: &Named,
    b: &Named,
    refused: Option<&[Relation]>,
    fix: &str,
) -> Result<(), Error> {
    match a.2.relation(&b.2) {
        Some(rel) if refused.is_none_or(|r| r.contains(&rel)) => Err(overlap_error(a, rel, b, fix)),
        _ => Ok(()),
    }
}

fn overlap_error(a: &Named, rel: Relation, b: &Named, fix: &str) -> Error {
    Error::Overlap {
        what: a.0,
        path: a.1.clone(),
        relation: rel,
        other: b.0,
        other_path: b.1.clone(),
        alias: a.2.hidden_from_paths(&b.2),
        fix: fix.to_string(),
    }
}

fn describe(path: &Path) -> String {
    format!("{}", path.display())
}

/// Checks `path` is an existing directory; `what` says which argument it came from.
fn require_dir(path: &Path, what: &'static str, fix: &'static str) -> Result<(), Error> {
    let path_buf = || path.to_path_buf();
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(Error::NotADirectory {
            what,
            path: path_buf(),
            fix,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::Missing {
            what,
            path: path_buf(),
            fix,
        }),
        // A FUSE mount whose daemon is gone: every access fails with ENOTCONN.
        Err(e) if e.raw_os_error() == Some(c::ENOTCONN) => Err(Error::StaleMount(path_buf())),
        Err(e) => Err(Error::io_with_fix(
            format!("{what} {}", describe(path)),
            e,
            fix,
        )),
    }
}

impl MountSpec {
    /// Every directory the union is made of, named for messages: layers, upper, work,
    /// mountpoint.
    fn union_dirs(&self) -> impl Iterator<Item = (&'static str, &PathBuf)> {
        self.layers
            .iter()
            .map(|p| ("layer", p))
            .chain(self.upper.iter().map(|p| ("upper dir", p)))
            .chain(self.work.iter().map(|p| ("work dir", p)))
            .chain(std::iter::once(("mountpoint", &self.mountpoint)))
    }

    /// Reports every missing directory at once (layers, upper, work, mountpoint), so that a
    /// first try does not fail once per path. One missing path is left to the checks that
    /// follow, whose message is specific to it.
    pub fn check_all_exist(&self) -> Result<(), Error> {
        let wanted = self.union_dirs();
        let missing: Vec<(&'static str, PathBuf)> = wanted
            .filter(|(_, p)| {
                std::fs::symlink_metadata(p)
                    .is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound)
            })
            .map(|(what, p)| (what, p.clone()))
            .collect();
        if missing.len() < 2 {
            return Ok(());
        }
        Err(Error::MissingDirs(missing))
    }

    /// Validates paths and opens the layers (bottom first).
    pub fn open_layers(&self) -> Result<Vec<Layer>, Error> {
        if self.layers.is_empty() {
            return Err(Error::usage(
                "no layers given: pass at least one --layer DIR (bottom layer first)",
            ));
        }
        if self.layers.len() > u16::MAX as usize - 2 {
            return Err(Error::Usage(format!(
                "{} layers given: at most {} are supported",
                self.layers.len(),
                u16::MAX - 2
            )));
        }
        let mut layers = Vec::with_capacity(self.layers.len());
        for (slot, path) in self.layers.iter().enumerate() {
            require_dir(
                path,
                "layer",
                "pass an existing directory (--layer, or lowerdir= in the -o form)",
            )?;
            let layer = Layer::open_root(slot as u16, path)
                .context(|| format!("layer {}: cannot open", describe(path)))?;
            layers.push(layer);
        }
        Ok(layers)
    }

    /// Validates and opens the writable layer, if any.
    pub fn open_upper(&self) -> Result<Option<Upper>, Error> {
        let (upper, work) = match (&self.upper, &self.work) {
            (None, None) => return Ok(None),
            (Some(_), None) => {
                return Err(Error::usage(
                    "--upper needs --work: pass an empty directory on the same filesystem",
                ))
            }
            (None, Some(_)) => {
                return Err(Error::usage(
                    "--work needs --upper: pass the writable layer's directory",
                ))
            }
            (Some(u), Some(w)) => (u, w),
        };
        require_dir(upper, "upper dir", "create it first with mkdir")?;
        require_dir(work, "work dir", "create it first with mkdir")?;
        let dev = |what: &str, p: &Path| {
            std::fs::metadata(p)
                .map(|m| std::os::unix::fs::MetadataExt::dev(&m))
                .context(|| format!("{what} {}", describe(p)))
        };
        if dev("upper dir", upper)? != dev("work dir", work)? {
            return Err(Error::WorkNotBesideUpper {
                work: work.clone(),
                upper: upper.clone(),
            });
        }
        Upper::open(upper, work, !self.volatile)
            .map(Some)
            .context(|| {
                format!(
                    "upper dir {}: cannot open the writable layer",
                    describe(upper)
                )
            })
    }

    /// The volume store, opened only when a volume is asked for.
    pub fn volume_provider(&self) -> Result<Box<dyn crate::spec::submount::VolumeProvider>, Error> {
        let wants_volumes = self
            .submounts
            .iter()
            .any(|s| matches!(s.kind, crate::spec::submount::Kind::Volume { .. }));
        if !wants_volumes {
            return Ok(Box::new(NoVolumes));
        }
        crate::spec::volattach::provider(self.state_dir.as_deref(), &self.mountpoint, &|volumes| {
            self.check_volume_store(volumes)
        })
    }

    /// The directories of the mount must not overlap where one would change another behind
    /// the union's back, or where the daemon would walk into its own mount; judged by
    /// identity, so a bind-mount alias counts (see `overlap`). Directories that do not exist
    /// are left to the checks that say so.
    pub fn check_layout(&self) -> Result<(), Error> {
        let mut places = Places::default();
        let mut named =
            |what: &'static str, p: &PathBuf| places.of(p).ok().map(|pl| (what, p.clone(), pl));
        let layers: Vec<Named> = self
            .layers
            .iter()
            .filter_map(|p| named("layer", p))
            .collect();
        let upper = self.upper.as_ref().and_then(|p| named("upper dir", p));
        let work = self.work.as_ref().and_then(|p| named("work dir", p));
        let mountpoint = named("mountpoint", &self.mountpoint);
        if let (Some(u), Some(w)) = (&upper, &work) {
            refuse_overlap(
                u,
                w,
                Some(&[Relation::Same, Relation::Inside, Relation::Contains]),
                "use two separate directories side by side",
            )?;
        }
        for writable in upper.iter().chain(&work) {
            for layer in &layers {
                refuse_overlap(
                    writable,
                    layer,
                    None,
                    "keep the writable layer outside every image layer",
                )?;
            }
            if let Some(m) = &mountpoint {
                refuse_overlap(
                    writable,
                    m,
                    None,
                    "keep the mountpoint and the writable layer apart",
                )?;
            }
        }
        // A mountpoint inside a layer would make the daemon read its own mount while it
        // indexes that layer.
        if let Some(m) = &mountpoint {
            for layer in &layers {
                refuse_overlap(
                    m,
                    layer,
                    Some(&[Relation::Same, Relation::Inside]),
                    "use a mountpoint outside every layer",
                )?;
            }
        }
        for sub in &self.submounts {
            let Kind::Bind { host } = &sub.kind else {
                continue;
            };
            if sub.read_only {
                continue;
            }
            // A file is checked by the directory holding it.
            let (dir, inside_only) = if host.is_dir() {
                (host.clone(), false)
            } else {
                (host.parent().unwrap_or(Path::new("/")).to_path_buf(), true)
            };
            let Some(bind) = named("bind source", &dir) else {
                continue;
            };
            let bind = (bind.0, host.clone(), bind.2);
            for union_dir in layers.iter().chain(&upper).chain(&work) {
                let rel = bind.2.relation(&union_dir.2);
                let rel = if inside_only && rel == Some(Relation::Same) {
                    Some(Relation::Inside)
                } else {
                    rel
                };
                if matches!(rel, Some(Relation::Same | Relation::Inside)) {
                    return Err(overlap_error(&bind, rel.unwrap_or(Relation::Inside), union_dir, &format!(
                        "writes through the bind would change the {} behind the union; add :ro or bind another directory",
                        union_dir.0
                    )));
                }
            }
        }
        Ok(())
    }

    /// The volume store (where every volume's data lives) must be apart from every directory
    /// of the union: writes to a volume would otherwise change a layer or the upper dir
    /// behind the union's back.
    fn check_volume_store(&self, volumes: &Path) -> Result<(), Error> {
        let mut places = Places::default();
        let Ok(place) = places.of(volumes) else {
            return Ok(());
        };
        let store: Named = ("volume store", volumes.to_path_buf(), place);
        let dirs = self.union_dirs();
        for (what, p) in dirs {
            if let Ok(pl) = places.of(p) {
                refuse_overlap(
                    &store,
                    &(what, p.clone(), pl),
                    None,
                    "use a state dir (--state-dir) apart from the mount's directories",
                )?;
            }
        }
        Ok(())
    }

    pub fn check_mountpoint(&self) -> Result<(), Error> {
        require_dir(
            &self.mountpoint,
            "mountpoint",
            "pass an existing directory (mkdir it first)",
        )?;
        if let Some(m) = mountinfo::mount_at(&self.mountpoint) {
            if m.mount_point != Path::new("/") {
                return Err(Error::AlreadyMounted {
                    mountpoint: self.mountpoint.clone(),
                    fs_type: m.fs_type,
                    source: m.source,
                });
            }
        }
        Ok(())
    }
}

struct NoVolumes;

impl crate::spec::submount::VolumeProvider for NoVolumes {
    fn attach(&mut self, _name: Option<&str>) -> Result<(PathBuf, bool), Error> {
        Err(Error::usage("no volume was asked for"))
    }
}
