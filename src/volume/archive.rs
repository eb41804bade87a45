//! Backups of volumes: export as a tar stream, import from one, and clone.
//!
//! - **export** walks `_data` and writes the tar stream `podman volume export` writes. A
//!   volume in use by a mount is exported live with a warning, or refused with
//!   `consistent`: the store cannot snapshot a volume (that would need reflinks of the whole
//!   tree at one instant, which neither ext4 nor a file-by-file reflink gives).
//! - **import** extracts into a work dir of the store (see `workdir`), then publishes it with
//!   one rename under the lock: onto the empty `_data` (a plain import), exchanged with it
//!   (`replace`), or as a whole new volume (`create`). An import killed at any point leaves
//!   the volume as it was; the work dir is swept later.
//! - **clone** copies `_data` into a work dir (reflinks where the filesystem has them,
//!   holes kept otherwise) and renames it into place as a new volume with the labels.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use super::error::{IoContext, Result, VolumeError};
use super::meta::{self, Meta};
use super::name;
use super::store::{make_dir, Entry, VolumeStore, DATA_DIR};
use super::workdir::WorkDir;
use crate::sys::c;
use crate::sys::{self, ops};
use crate::tarball::{self, Extracted, Packed, Progress};

/// How `import` treats the volume it fills.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportMode {
    /// Create the volume when it does not exist.
    pub create: bool,
    /// Replace the content of a non-empty volume (atomically) instead of refusing.
    pub replace: bool,
}

impl VolumeStore {
    /// `volume export NAME`: writes the volume's content to `out` as a tar stream. Returns
    /// `out`, what was written, and warnings (a live volume, files changed meanwhile).
    pub fn export<W: Write>(
        &self,
        name: &str,
        out: W,
        consistent: bool,
        progress: &mut Progress,
    ) -> Result<(W, Packed)> {
        name::check(name)?;
        let (data, live) = {
            let _lock = self.lock(false)?;
            let data = self.open_data(name)?;
            (data, self.live_mounts(name)?)
        };
        let mut warnings = Vec::new();
        if !live.is_empty() {
            let mounts = join_paths(&live);
            if consistent {
                return Err(VolumeError::Invalid(format!(
                    "volume {name} is in use by the mount at {mounts}: --consistent refuses to export a volume in use, because stratafs cannot snapshot it; unmount it first (stratafs umount {}), or export it live without --consistent",
                    live[0].display()
                )));
            }
            warnings.push(format!(
                "volume {name} is in use by the mount at {mounts}: exporting it live; files written during the export may be inconsistent in the archive (--consistent refuses instead)"
            ));
        }
        let (out, mut packed) = tarball::pack(data.as_fd(), out, progress)
            .map_err(|e| VolumeError::Invalid(format!("export of volume {name}: {e}")))?;
        warnings.append(&mut packed.warnings);
        packed.warnings = warnings;
        Ok((out, packed))
    }

    /// `volume import NAME`: fills the volume from the tar stream `input`; see the module
    /// documentation for how an interrupted import leaves the volume untouched.
    pub fn import<R: Read>(
        &self,
        name: &str,
        input: R,
        mode: ImportMode,
        progress: &mut Progress,
    ) -> Result<Extracted> {
        name::check(name)?;
        let work = {
            let _lock = self.lock(true)?;
            self.clean_leftovers();
            if !(mode.create && matches!(self.entry(name)?, Entry::Missing)) {
                self.check_import_target(name, mode.replace)?;
            }
            WorkDir::new(&self.volumes_dir())?
        };
        let staged = work.path().join("volume");
        let staged_data = staged.join(DATA_DIR);
        make_dir(&staged, 0o700)
            .and_then(|()| make_dir(&staged_data, 0o755))
            .context(|| format!("cannot create {}", staged_data.display()))?;
        let data_fd = sys::open_dir_path(&staged_data)
            .context(|| format!("cannot open {}", staged_data.display()))?;
        let extracted = tarball::extract(input, data_fd.as_fd(), progress).map_err(|e| {
            VolumeError::Invalid(format!(
                "import into volume {name}: {e}; the volume is unchanged"
            ))
        })?;
        // Data durable before the rename that publishes it.
        sync_fs(&staged_data)?;
        let _lock = self.lock(true)?;
        match self.entry(name)? {
            Entry::Missing if mode.create => {
                meta::write(&staged, &Meta::new(BTreeMap::new(), false))
                    .context(|| format!("cannot write the metadata of volume {name}"))?;
                rename_noreplace(&staged, &self.volume_dir(name)).map_err(|e| {
                    if e.raw_os_error() == Some(c::EEXIST) {
                        VolumeError::Invalid(format!(
                            "volume {name} was created by someone else during the import; nothing was imported"
                        ))
                    } else {
                        VolumeError::io(format!("cannot create volume {name}"), e)
                    }
                })?;
            }
            _ => {
                self.check_import_target(name, mode.replace)?;
                let target = self.volume_dir(name).join(DATA_DIR);
                publish(&staged_data, &target, mode.replace).context(|| {
                    format!(
                        "cannot put the imported data in place at {}",
                        target.display()
                    )
                })?;
            }
        }
        meta::sync_dir(&self.volumes_dir())
            .and_then(|()| meta::sync_dir(&self.volume_dir(name)))
            .context(|| format!("cannot sync volume {name}"))?;
        Ok(extracted)
    }

    /// `volume clone SRC DST`: a new volume DST with SRC's content and labels (plus
    /// `extra_labels`). Returns warnings (SRC in use).
    pub fn clone_volume(
        &self,
        src: &str,
        dst: &str,
        extra_labels: BTreeMap<String, String>,
    ) -> Result<Vec<String>> {
        name::check(src)?;
        name::check(dst)?;
        let (data, labels, live, work) = {
            let _lock = self.lock(true)?;
            self.clean_leftovers();
            let data = self.open_data(src)?;
            let labels = self
                .info(src, &BTreeMap::new())
                .meta
                .map_err(|problem| VolumeError::Damaged {
                    name: src.to_string(),
                    problem: format!("{problem}: its labels cannot be cloned"),
                })?
                .labels;
            self.check_free(dst)?;
            (
                data,
                labels,
                self.live_mounts(src)?,
                WorkDir::new(&self.volumes_dir())?,
            )
        };
        let mut warnings = Vec::new();
        if !live.is_empty() {
            warnings.push(format!(
                "volume {src} is in use by the mount at {}: cloning it live; files written meanwhile may be inconsistent in {dst}",
                join_paths(&live)
            ));
        }
        let staged = work.path().join("volume");
        let staged_data = staged.join(DATA_DIR);
        let copied = (|| {
            make_dir(&staged, 0o700)?;
            make_dir(&staged_data, 0o700)?;
            let dst_fd = sys::open_dir_path(&staged_data)?;
            let mut progress = Progress::on_terminal("cloned");
            crate::union::treecopy::copy_tree_reporting(
                data.as_fd(),
                dst_fd.as_fd(),
                &mut |bytes| {
                    progress.bytes(bytes);
                    progress.file();
                },
            )
        })();
        copied.context(|| format!("cannot copy volume {src} to {dst}"))?;
        sync_fs(&staged_data)?;
        let mut labels = labels;
        labels.extend(extra_labels);
        meta::write(&staged, &Meta::new(labels, false))
            .context(|| format!("cannot write the metadata of volume {dst}"))?;
        let _lock = self.lock(true)?;
        self.check_free(dst)?;
        rename_noreplace(&staged, &self.volume_dir(dst))
            .and_then(|()| meta::sync_dir(&self.volumes_dir()))
            .context(|| format!("cannot create volume {dst}"))?;
        Ok(warnings)
    }

    /// An fd of `volumes/NAME/_data`, reached without following any symlink.
    fn open_data(&self, name: &str) -> Result<OwnedFd> {
        self.existing_dir(name)?;
        let dir = self.volume_dir(name);
        let vol = sys::open_dir_path(&dir).context(|| dir.display().to_string())?;
        sys::open_beneath(vol.as_fd(), c"_data", c::O_PATH | c::O_DIRECTORY, 0).map_err(|e| {
            VolumeError::Damaged {
                name: name.to_string(),
                problem: format!("{DATA_DIR} cannot be opened as a directory ({e})"),
            }
        })
    }

    /// Mountpoints using the volume: live usage records and mounts still on its directory.
    fn live_mounts(&self, name: &str) -> Result<Vec<PathBuf>> {
        match self.check_unused(name, &self.users()?) {
            Ok(()) => Ok(Vec::new()),
            Err(VolumeError::InUse { mounts, .. }) => Ok(mounts),
            Err(e) => Err(e),
        }
    }

    /// An import may fill NAME: it exists, no mount uses it (the data dir is about to be
    /// swapped under it), and it is empty unless `replace`.
    fn check_import_target(&self, name: &str, replace: bool) -> Result<()> {
        match self.entry(name)? {
            Entry::Dir => {}
            Entry::Missing => {
                return Err(VolumeError::Invalid(format!(
                    "no such volume: {name}; create it first (stratafs volume create {name}) or pass --create"
                )))
            }
            Entry::Refused(problem) => {
                return Err(VolumeError::Damaged {
                    name: name.to_string(),
                    problem,
                })
            }
        }
        self.check_unused(name, &self.users()?)?;
        let data = self.volume_dir(name).join(DATA_DIR);
        let empty = std::fs::read_dir(&data)
            .map(|mut d| d.next().is_none())
            .map_err(|e| VolumeError::Damaged {
                name: name.to_string(),
                problem: format!("{}: {e}", data.display()),
            })?;
        if !empty && !replace {
            return Err(VolumeError::Invalid(format!(
                "volume {name} is not empty: import fills an empty volume; pass --replace to replace its content, or import into a new volume with --create"
            )));
        }
        Ok(())
    }

    /// DST must be a free name for a new volume.
    fn check_free(&self, dst: &str) -> Result<()> {
        match self.entry(dst)? {
            Entry::Missing => Ok(()),
            _ => Err(VolumeError::Invalid(format!(
                "volume {dst} already exists: clone makes a new volume; pick another name or remove it (stratafs volume rm {dst})"
            ))),
        }
    }
}

/// Puts `staged` in place of the data dir `target`: over it when it is empty (rename
/// replaces an empty directory), or exchanged with it when replacing (the old content then
/// sits in the work dir, deleted with it).
fn publish(staged: &Path, target: &Path, replace: bool) -> std::io::Result<()> {
    let flags = if replace { ops::RENAME_EXCHANGE } else { 0 };
    rename(staged, target, flags)
}

fn rename_noreplace(from: &Path, to: &Path) -> std::io::Result<()> {
    rename(from, to, ops::RENAME_NOREPLACE)
}

fn rename(from: &Path, to: &Path, flags: u32) -> std::io::Result<()> {
    let parent_fd = |p: &Path| sys::open_dir_path(p.parent().unwrap_or(Path::new("/")));
    let leaf = |p: &Path| {
        use std::os::unix::ffi::OsStrExt;
        sys::cstr(p.file_name().unwrap_or_default().as_bytes())
    };
    let (from_dir, to_dir) = (parent_fd(from)?, parent_fd(to)?);
    ops::rename_at(
        from_dir.as_fd(),
        &leaf(from)?,
        to_dir.as_fd(),
        &leaf(to)?,
        flags,
    )
}

/// Flushes the filesystem holding `dir` (syncfs needs a real fd, not an O_PATH one).
fn sync_fs(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|f| ops::syncfs(f.as_fd()))
        .context(|| format!("cannot sync {}", dir.display()))
}

fn join_paths(paths: &[PathBuf]) -> String {
    let list: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    list.join(", ")
}
