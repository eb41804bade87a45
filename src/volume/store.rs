//! The volume store: directories under the state dir, one lock, and the operations on them.

use std::collections::{BTreeMap, HashSet};
use std::fs::{DirBuilder, File};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::error::{IoContext, Result, VolumeError};
use super::filter::Filters;
use super::meta::{self, Meta};
use super::name;
use super::usage::{self, Liveness, UsageRecord};

use crate::sys::lockfile;

const VOLUMES_DIR: &str = "volumes";
const LEASES_DIR: &str = "leases";
const LOCK_FILE: &str = "volumes.lock";
pub const DATA_DIR: &str = "_data";
/// Prefixes of the store's own entries under `volumes/`; no volume name starts with a dot.
const TMP_PREFIX: &str = ".tmp-";
const TRASH_PREFIX: &str = ".trash-";

pub struct VolumeStore {
    /// The state dir, absolute and symlink-free.
    root: PathBuf,
}

/// What `ls` and `inspect` show about one volume.
#[derive(Debug, Clone)]
pub struct VolumeInfo {
    pub name: String,
    pub data_dir: PathBuf,
    /// The metadata, or what is wrong with meta.json.
    pub meta: std::result::Result<Meta, String>,
    /// Damage other than the metadata (e.g. `_data` missing).
    pub problem: Option<String>,
    /// Mountpoints of the live mounts using the volume.
    pub used_by: Vec<PathBuf>,
}

impl VolumeInfo {
    pub fn labels(&self) -> BTreeMap<String, String> {
        self.meta
            .as_ref()
            .map(|m| m.labels.clone())
            .unwrap_or_default()
    }

    pub fn is_anonymous(&self) -> bool {
        self.meta.as_ref().is_ok_and(|m| m.anonymous)
    }

    /// Everything wrong with the volume, as one line; None when it is healthy.
    pub fn damage(&self) -> Option<String> {
        let parts: Vec<&str> = [self.meta.as_ref().err(), self.problem.as_ref()]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .collect();
        (!parts.is_empty()).then(|| parts.join("; "))
    }
}

/// A volume given to a mount; see the module documentation of `volume`.
#[derive(Debug)]
pub struct VolumeLease {
    name: String,
    data_dir: PathBuf,
    was_empty: bool,
    created: bool,
    record: Option<PathBuf>,
}

impl VolumeLease {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The directory to mount (`volumes/NAME/_data`).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Whether `_data` was empty when acquired, i.e. the volume may be filled from the image.
    pub fn was_empty(&self) -> bool {
        self.was_empty
    }

    /// Whether this acquire created the volume.
    pub fn created(&self) -> bool {
        self.created
    }

    /// Ends the lease now, reporting a failure to delete the usage record (Drop only logs it).
    #[allow(dead_code)]
    pub fn release(mut self) -> Result<()> {
        match self.record.take() {
            Some(path) => remove_record(&path),
            None => Ok(()),
        }
    }
}

impl Drop for VolumeLease {
    fn drop(&mut self) {
        if let Some(path) = self.record.take() {
            if let Err(e) = remove_record(&path) {
                log::warn!("{e}");
            }
        }
    }
}

fn remove_record(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(VolumeError::io(
            format!("cannot delete the usage record {}", path.display()),
            e,
        )),
        _ => Ok(()),
    }
}

/// What a `volumes/NAME` entry is.
pub(super) enum Entry {
    Missing,
    Dir,
    /// A symlink, file or other thing stratafs refuses to use.
    Refused(String),
}

/// Result of `prune`.
#[derive(Debug, Default)]
pub struct PruneReport {
    /// Removed volumes and the bytes each took on disk.
    pub removed: Vec<(String, u64)>,
    /// One line per damaged volume left alone.
    pub skipped: Vec<String>,
}

impl VolumeStore {
    /// Opens (creating as needed) the store in `state_dir`.
    pub fn open(state_dir: &Path) -> Result<VolumeStore> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(state_dir)
            .context(|| format!("cannot create the state dir {}", state_dir.display()))?;
        let root = state_dir
            .canonicalize()
            .context(|| format!("state dir {}", state_dir.display()))?;
        let store = VolumeStore { root };
        store.ensure_dir(&store.volumes_dir())?;
        store.ensure_dir(&store.leases_dir())?;
        Ok(store)
    }

    pub(crate) fn volumes_dir(&self) -> PathBuf {
        self.root.join(VOLUMES_DIR)
    }

    fn leases_dir(&self) -> PathBuf {
        self.root.join(LEASES_DIR)
    }

    pub(super) fn volume_dir(&self, name: &str) -> PathBuf {
        self.volumes_dir().join(name)
    }

    /// Makes sure `path` is a real directory (never a symlink), creating it if missing.
    fn ensure_dir(&self, path: &Path) -> Result<()> {
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(m) => Err(VolumeError::Invalid(format!(
                "{} is {}, not a directory: stratafs never follows symlinks in its state dir; move it away",
                path.display(),
                describe_type(&m)
            ))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                match DirBuilder::new().mode(0o700).create(path) {
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => self.ensure_dir(path),
                    r => r.context(|| format!("cannot create {}", path.display())),
                }
            }
            Err(e) => Err(VolumeError::io(path.display().to_string(), e)),
        }
    }

    /// The store-wide lock: exclusive for changes, shared for reading.
    pub(super) fn lock(&self, exclusive: bool) -> Result<File> {
        let path = self.root.join(LOCK_FILE);
        let file = lockfile::open(&path)
            .or_else(|e| {
                // A reader without write access to the state dir may still read it.
                if exclusive || e.kind() != io::ErrorKind::PermissionDenied {
                    return Err(e);
                }
                lockfile::open_read_only(&path)
            })
            .context(|| format!("cannot open the lock file {}", path.display()))?;
        lockfile::lock(&file, exclusive).context(|| format!("cannot lock {}", path.display()))?;
        Ok(file)
    }

    pub(super) fn entry(&self, name: &str) -> Result<Entry> {
        let path = self.volume_dir(name);
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => Ok(Entry::Dir),
            Ok(m) => Ok(Entry::Refused(format!(
                "{} is {}, not a directory: stratafs does not follow or use it; remove it by hand",
                path.display(),
                describe_type(&m)
            ))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Entry::Missing),
            Err(e) => Err(VolumeError::io(path.display().to_string(), e)),
        }
    }

    pub(super) fn existing_dir(&self, name: &str) -> Result<()> {
        match self.entry(name)? {
            Entry::Dir => Ok(()),
            Entry::Missing => Err(VolumeError::NotFound(name.to_string())),
            Entry::Refused(problem) => Err(VolumeError::Damaged {
                name: name.to_string(),
                problem,
            }),
        }
    }

    /// Creates `volumes/NAME` complete (meta.json and `_data`) in a temp dir and renames it
    /// into place, so a crash never leaves a half-made volume under its name.
    fn create_new(&self, name: &str, meta: &Meta) -> Result<()> {
        let tmp = self
            .volumes_dir()
            .join(format!("{TMP_PREFIX}{}", name::random_hex(8)?));
        let built = (|| -> io::Result<()> {
            make_dir(&tmp, 0o700)?;
            make_dir(&tmp.join(DATA_DIR), 0o755)?;
            meta::write(&tmp, meta)?;
            std::fs::rename(&tmp, self.volume_dir(name))?;
            meta::sync_dir(&self.volumes_dir())
        })();
        if built.is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        built.context(|| format!("cannot create volume {name}"))
    }

    /// Removes what a crash left in `volumes/` mid-create. Caller holds the exclusive lock.
    pub(super) fn clean_leftovers(&self) {
        super::workdir::sweep(&self.volumes_dir());
        let Ok(entries) = std::fs::read_dir(self.volumes_dir()) else {
            return;
        };
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
                if let Err(e) = std::fs::remove_dir_all(entry.path()) {
                    log::warn!("cannot remove {}: {e}", entry.path().display());
                }
            }
        }
    }

    /// `volume create`: returns the name and whether the volume is new. An existing name is
    /// reused as it is (its labels are not changed).
    pub fn create(
        &self,
        name: Option<&str>,
        labels: BTreeMap<String, String>,
    ) -> Result<(String, bool)> {
        if let Some(n) = name {
            name::check(n)?;
        }
        let _lock = self.lock(true)?;
        self.clean_leftovers();
        self.create_locked(name, labels)
    }

    fn create_locked(
        &self,
        name: Option<&str>,
        labels: BTreeMap<String, String>,
    ) -> Result<(String, bool)> {
        let Some(name) = name else {
            let id = loop {
                let id = name::anonymous_id()?;
                if matches!(self.entry(&id)?, Entry::Missing) {
                    break id;
                }
            };
            self.create_new(&id, &Meta::new(labels, true))?;
            return Ok((id, true));
        };
        match self.entry(name)? {
            Entry::Dir => Ok((name.to_string(), false)),
            Entry::Missing => {
                self.create_new(name, &Meta::new(labels, false))?;
                Ok((name.to_string(), true))
            }
            Entry::Refused(problem) => Err(VolumeError::Damaged {
                name: name.to_string(),
                problem,
            }),
        }
    }

    pub(super) fn info(&self, name: &str, users: &BTreeMap<String, Vec<PathBuf>>) -> VolumeInfo {
        let dir = self.volume_dir(name);
        let data_dir = dir.join(DATA_DIR);
        let problem = match std::fs::symlink_metadata(&data_dir) {
            Ok(m) if m.is_dir() => None,
            Ok(m) => Some(format!(
                "{DATA_DIR} is {}, not a directory",
                describe_type(&m)
            )),
            Err(e) => Some(format!("{DATA_DIR}: {e}")),
        };
        VolumeInfo {
            name: name.to_string(),
            data_dir,
            meta: meta::read(&dir),
            problem,
            used_by: self.holders(name, users),
        }
    }

    /// The mounts using volume `name`: those its leases name, plus any union still holding it
    /// although no live daemon claims it (the daemon was killed), named by the union's
    /// mountpoint (what `stratafs umount` takes).
    fn holders(&self, name: &str, users: &BTreeMap<String, Vec<PathBuf>>) -> Vec<PathBuf> {
        let mut holders = users.get(name).cloned().unwrap_or_default();
        for bind in crate::sys::mountinfo::binds_of(&self.volume_dir(name)) {
            let union = crate::sys::mountinfo::union_above(&bind);
            if !holders.contains(&union) {
                holders.push(union);
            }
        }
        holders
    }

    pub(super) fn users(&self) -> Result<BTreeMap<String, Vec<PathBuf>>> {
        let dir = self.leases_dir();
        usage::live_users(&dir, &Liveness::now())
            .context(|| format!("cannot read the usage records in {}", dir.display()))
    }

    /// `volume inspect NAME`.
    pub fn inspect(&self, name: &str) -> Result<VolumeInfo> {
        name::check(name)?;
        let _lock = self.lock(false)?;
        self.existing_dir(name)?;
        Ok(self.info(name, &self.users()?))
    }

    /// `volume ls`: every volume sorted by name, plus one warning per entry of `volumes/`
    /// that is not a usable volume directory (left alone, never deleted).
    pub fn list(&self) -> Result<(Vec<VolumeInfo>, Vec<String>)> {
        let _lock = self.lock(false)?;
        self.list_locked()
    }

    fn list_locked(&self) -> Result<(Vec<VolumeInfo>, Vec<String>)> {
        let users = self.users()?;
        let dir = self.volumes_dir();
        let mut infos = Vec::new();
        let mut warnings = Vec::new();
        for entry in std::fs::read_dir(&dir).context(|| dir.display().to_string())? {
            let entry = entry.context(|| dir.display().to_string())?;
            let raw = entry.file_name();
            let Some(name) = raw.to_str() else {
                warnings.push(format!(
                    "{}: not a valid volume name, ignored",
                    entry.path().display()
                ));
                continue;
            };
            if name.starts_with(TMP_PREFIX)
                || name.starts_with(TRASH_PREFIX)
                || name.starts_with(super::workdir::WORK_PREFIX)
            {
                continue;
            }
            if let Err(e) = name::check(name) {
                warnings.push(format!("{}: ignored: {e}", entry.path().display()));
                continue;
            }
            match self.entry(name)? {
                Entry::Dir => infos.push(self.info(name, &users)),
                Entry::Missing => {}
                Entry::Refused(problem) => warnings.push(format!("volume {name}: {problem}")),
            }
        }
        infos.sort_by(|a, b| a.name.cmp(&b.name));
        for v in &infos {
            if let Some(d) = v.damage() {
                warnings.push(format!(
                    "volume {}: damaged ({d}); its data is kept at {}",
                    v.name,
                    v.data_dir.display()
                ));
            }
        }
        Ok((infos, warnings))
    }

    /// Refuses to delete a volume in use, or one with a filesystem mounted inside it.
    pub(super) fn check_unused(
        &self,
        name: &str,
        users: &BTreeMap<String, Vec<PathBuf>>,
    ) -> Result<()> {
        let holders = self.holders(name, users);
        if !holders.is_empty() {
            return Err(VolumeError::InUse {
                name: name.to_string(),
                mounts: holders,
            });
        }
        let inside = Liveness::now().mounts_under(&self.volume_dir(name));
        if !inside.is_empty() {
            return Err(VolumeError::InUse {
                name: name.to_string(),
                mounts: inside,
            });
        }
        Ok(())
    }

    /// Takes `volumes/NAME` out of the store (one rename, so it vanishes whole) and returns
    /// its size and the trash path to delete once the lock is released.
    fn detach(&self, name: &str) -> Result<(u64, PathBuf)> {
        let dir = self.volume_dir(name);
        let size = disk_usage(&dir);
        let trash = self
            .volumes_dir()
            .join(format!("{TRASH_PREFIX}{}", name::random_hex(8)?));
        std::fs::rename(&dir, &trash)
            .and_then(|()| meta::sync_dir(&self.volumes_dir()))
            .context(|| format!("cannot remove volume {name}"))?;
        Ok((size, trash))
    }

    /// `volume rm`: Ok(None) when the volume does not exist and `force` is set. A volume used
    /// by a live mount is never removed, whatever `force` says.
    pub fn remove(&self, name: &str, force: bool) -> Result<Option<u64>> {
        name::check(name)?;
        let lock = self.lock(true)?;
        match self.existing_dir(name) {
            Err(VolumeError::NotFound(_)) if force => return Ok(None),
            r => r?,
        }
        self.check_unused(name, &self.users()?)?;
        let (size, trash) = self.detach(name)?;
        drop(lock);
        delete_trash(&trash)
            .context(|| format!("volume {name} is removed, but deleting its data failed"))?;
        Ok(Some(size))
    }

    /// `volume prune`: removes unused anonymous volumes (every unused one with `all`) that
    /// match `filters`. Damaged volumes are left for an explicit `volume rm`.
    pub fn prune(&self, all: bool, filters: &Filters) -> Result<PruneReport> {
        let lock = self.lock(true)?;
        self.clean_leftovers();
        let (infos, _) = self.list_locked()?;
        let users: BTreeMap<String, Vec<PathBuf>> = infos
            .iter()
            .map(|v| (v.name.clone(), v.used_by.clone()))
            .collect();
        let mut report = PruneReport::default();
        let mut trash = Vec::new();
        for v in &infos {
            if !v.used_by.is_empty() || !filters.matches(v) {
                continue;
            }
            if let Some(d) = v.damage() {
                report.skipped.push(format!(
                    "volume {}: not pruned, it is damaged ({d}): check it, then stratafs volume rm {}",
                    v.name, v.name
                ));
                continue;
            }
            if !(all || v.is_anonymous()) || self.check_unused(&v.name, &users).is_err() {
                continue;
            }
            let (size, t) = self.detach(&v.name)?;
            report.removed.push((v.name.clone(), size));
            trash.push(t);
        }
        let leftovers = self.trash_leftovers();
        drop(lock);
        for t in trash.iter().chain(&leftovers) {
            if let Err(e) = delete_trash(t) {
                log::warn!("cannot delete {}: {e}", t.display());
            }
        }
        Ok(report)
    }

    /// Trash a crashed `rm` or `prune` left behind.
    fn trash_leftovers(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.volumes_dir())
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(TRASH_PREFIX))
            .map(|e| e.path())
            .collect()
    }

    /// For the mount daemon: the volume `name` (a new anonymous one for None, created on first
    /// use), recorded as used by `mountpoint` until the lease is dropped. Call it from the
    /// process that serves the mount, once `mountpoint` is mounted: the record is live only
    /// while both hold.
    pub fn acquire(&self, name: Option<&str>, mountpoint: &Path) -> Result<VolumeLease> {
        if let Some(n) = name {
            name::check(n)?;
        }
        let mountpoint = absolute_mountpoint(mountpoint)?;
        let _lock = self.lock(true)?;
        self.clean_leftovers();
        let (name, created) = self.create_locked(name, BTreeMap::new())?;
        let info = self.info(&name, &BTreeMap::new());
        if let Some(problem) = info.problem {
            return Err(VolumeError::Damaged { name, problem });
        }
        if let Err(problem) = &info.meta {
            log::warn!(
                "volume {name}: {problem}; using its data as it is (stratafs volume inspect {name})"
            );
        }
        let was_empty = std::fs::read_dir(&info.data_dir)
            .map(|mut d| d.next().is_none())
            .context(|| format!("volume {name}: {}", info.data_dir.display()))?;
        let record = UsageRecord::for_this_process(&name, &mountpoint);
        let bytes = serde_json::to_vec(&record).map_err(|e| {
            VolumeError::Invalid(format!(
                "mountpoint {}: cannot record it ({e})",
                mountpoint.display()
            ))
        })?;
        let file = usage::record_file_name(&name::random_hex(16)?);
        meta::write_atomic(&self.leases_dir(), &file, &bytes)
            .context(|| format!("cannot write a usage record for volume {name}"))?;
        Ok(VolumeLease {
            name,
            data_dir: info.data_dir,
            was_empty,
            created,
            record: Some(self.leases_dir().join(file)),
        })
    }
}

/// The mountpoint as mountinfo shows it: the parent resolved, the last component kept (so a
/// live FUSE mount there is not asked to resolve its own root).
fn absolute_mountpoint(mountpoint: &Path) -> Result<PathBuf> {
    if !mountpoint.is_absolute() {
        let cwd = std::env::current_dir().context(|| "current directory".into())?;
        return absolute_mountpoint(&cwd.join(mountpoint));
    }
    match (mountpoint.parent(), mountpoint.file_name()) {
        (Some(parent), Some(last)) => Ok(parent
            .canonicalize()
            .context(|| format!("mountpoint {}", mountpoint.display()))?
            .join(last)),
        _ => mountpoint
            .canonicalize()
            .context(|| format!("mountpoint {}", mountpoint.display())),
    }
}

pub(super) fn make_dir(path: &Path, mode: u32) -> io::Result<()> {
    DirBuilder::new().mode(mode).create(path)?;
    // The umask may have narrowed the mode; volumes get the same mode whoever creates them.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

pub(super) fn delete_trash(path: &Path) -> io::Result<()> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn describe_type(m: &std::fs::Metadata) -> &'static str {
    let t = m.file_type();
    if t.is_symlink() {
        "a symlink"
    } else if t.is_file() {
        "a regular file"
    } else {
        "a special file"
    }
}

/// Bytes allocated on disk under `dir` (hard links counted once), staying on its filesystem
/// and never following a symlink. Unreadable parts count as zero.
pub fn disk_usage(dir: &Path) -> u64 {
    let Ok(top) = std::fs::symlink_metadata(dir) else {
        return 0;
    };
    let mut total = 0;
    let mut seen = HashSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let Ok(m) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if m.dev() != top.dev() || (m.nlink() > 1 && !m.is_dir() && !seen.insert(m.ino())) {
            continue;
        }
        total += m.blocks() * 512;
        if m.is_dir() {
            if let Ok(entries) = std::fs::read_dir(&path) {
                stack.extend(entries.flatten().map(|e| e.path()));
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    fn store(dir: &TempDir) -> VolumeStore {
        VolumeStore::open(&dir.path().join("state")).unwrap()
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn create_is_idempotent_and_keeps_first_labels() {
        let tmp = TempDir::new("store-create");
        let s = store(&tmp);
        assert_eq!(
            s.create(Some("db"), labels(&[("a", "1")])).unwrap(),
            ("db".to_string(), true)
        );
        std::fs::write(s.volume_dir("db").join("_data/file"), b"x").unwrap();
        assert_eq!(
            s.create(Some("db"), labels(&[("a", "2")])).unwrap(),
            ("db".to_string(), false)
        );
        let info = s.inspect("db").unwrap();
        assert_eq!(info.labels(), labels(&[("a", "1")]));
        assert!(info.data_dir.join("file").exists());
        let m = std::fs::metadata(&info.data_dir).unwrap();
        assert_eq!(m.permissions().mode() & 0o7777, 0o755);
    }

    #[test]
    fn anonymous_volumes_get_ids_and_the_label() {
        let tmp = TempDir::new("store-anon");
        let s = store(&tmp);
        let (id, created) = s.create(None, BTreeMap::new()).unwrap();
        assert!(created);
        assert_eq!(id.len(), 64);
        let info = s.inspect(&id).unwrap();
        assert!(info.is_anonymous());
        assert!(info.labels().contains_key(meta::ANONYMOUS_LABEL));
    }

    #[test]
    fn damaged_volumes_are_listed_and_removable() {
        let tmp = TempDir::new("store-damaged");
        let s = store(&tmp);
        s.create(Some("nometa"), BTreeMap::new()).unwrap();
        s.create(Some("badmeta"), BTreeMap::new()).unwrap();
        std::fs::remove_file(s.volume_dir("nometa").join("meta.json")).unwrap();
        std::fs::write(s.volume_dir("badmeta").join("meta.json"), b"{{").unwrap();
        std::fs::write(s.volume_dir("badmeta").join("_data/keep"), b"data").unwrap();
        // A hand-made dir with no _data at all.
        std::fs::create_dir(s.volume_dir("bare")).unwrap();
        std::os::unix::fs::symlink("/etc", s.volume_dir("link")).unwrap();
        std::fs::create_dir(s.volume_dir("bad name")).unwrap();

        let (infos, warnings) = s.list().unwrap();
        let names: Vec<&str> = infos.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["badmeta", "bare", "nometa"]);
        let all = warnings.join("\n");
        assert!(
            all.contains("volume badmeta: damaged (meta.json is corrupt"),
            "{all}"
        );
        assert!(
            all.contains("volume nometa: damaged (meta.json is missing"),
            "{all}"
        );
        assert!(
            all.contains("volume bare: damaged (meta.json is missing; _data"),
            "{all}"
        );
        assert!(all.contains("link is a symlink"), "{all}");
        assert!(all.contains("bad name"), "{all}");

        // prune -a leaves damaged volumes to an explicit rm.
        let report = s.prune(true, &Filters::default()).unwrap();
        assert!(report.removed.is_empty());
        assert_eq!(report.skipped.len(), 3);
        assert!(s.volume_dir("badmeta").join("_data/keep").exists());

        for n in ["nometa", "badmeta", "bare"] {
            assert!(s.remove(n, false).unwrap().is_some());
        }
        assert!(matches!(
            s.remove("link", false),
            Err(VolumeError::Damaged { .. })
        ));
        assert!(std::path::Path::new("/etc").is_dir());
        assert!(matches!(
            s.inspect("link"),
            Err(VolumeError::Damaged { .. })
        ));
    }

    #[test]
    fn state_dir_symlinks_are_refused() {
        let tmp = TempDir::new("store-symlink");
        let state = tmp.path().join("state");
        std::fs::create_dir(&state).unwrap();
        std::fs::create_dir(tmp.path().join("elsewhere")).unwrap();
        std::os::unix::fs::symlink(tmp.path().join("elsewhere"), state.join("volumes")).unwrap();
        let err = VolumeStore::open(&state).err().unwrap().to_string();
        assert!(err.contains("is a symlink"), "{err}");
    }

    #[test]
    fn remove_and_force() {
        let tmp = TempDir::new("store-rm");
        let s = store(&tmp);
        assert!(matches!(
            s.remove("ghost", false),
            Err(VolumeError::NotFound(_))
        ));
        assert_eq!(s.remove("ghost", true).unwrap(), None);
        s.create(Some("v"), BTreeMap::new()).unwrap();
        std::fs::write(s.volume_dir("v").join("_data/f"), vec![1u8; 100_000]).unwrap();
        let size = s.remove("v", false).unwrap().unwrap();
        assert!(size >= 100_000, "{size}");
        assert!(!s.volume_dir("v").exists());
        let left: Vec<_> = std::fs::read_dir(s.volumes_dir()).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn lease_blocks_removal_until_dropped() {
        let tmp = TempDir::new("store-lease");
        let s = store(&tmp);
        // "/" is always a mountpoint, and this process is alive: a live user.
        let lease = s.acquire(Some("db"), Path::new("/")).unwrap();
        assert!(lease.created() && lease.was_empty());
        assert_eq!(lease.data_dir(), s.volume_dir("db").join("_data"));
        assert_eq!(s.inspect("db").unwrap().used_by, vec![PathBuf::from("/")]);
        let err = s.remove("db", true).unwrap_err().to_string();
        assert!(err.contains("in use by the mount at /"), "{err}");
        assert_eq!(s.prune(true, &Filters::default()).unwrap().removed, vec![]);

        std::fs::write(lease.data_dir().join("f"), b"x").unwrap();
        let again = s.acquire(Some("db"), Path::new("/")).unwrap();
        assert!(!again.created() && !again.was_empty());
        again.release().unwrap();
        drop(lease);
        assert!(s.inspect("db").unwrap().used_by.is_empty());
        assert!(s.remove("db", false).unwrap().is_some());
    }

    #[test]
    fn stale_lease_does_not_block() {
        let tmp = TempDir::new("store-stale");
        let s = store(&tmp);
        let lease = s.acquire(Some("db"), Path::new("/")).unwrap();
        // Pretend the daemon was killed: rewrite the record with a pid that is gone.
        let path = lease.record.clone().unwrap();
        let mut rec: UsageRecord = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        rec.pid = u32::MAX;
        std::fs::write(&path, serde_json::to_vec(&rec).unwrap()).unwrap();
        assert!(s.inspect("db").unwrap().used_by.is_empty());
        assert!(!path.exists(), "stale record is cleaned");
        assert!(s.remove("db", false).unwrap().is_some());
    }

    #[test]
    fn prune_takes_anonymous_unless_all_and_honours_filters() {
        let tmp = TempDir::new("store-prune");
        let s = store(&tmp);
        let (anon, _) = s.create(None, BTreeMap::new()).unwrap();
        let (anon_kept, _) = s.create(None, labels(&[("keep", "yes")])).unwrap();
        s.create(Some("named"), BTreeMap::new()).unwrap();
        let lease = s.acquire(None, Path::new("/")).unwrap();

        let only_unkept = Filters::parse(&["label=keep=no".into()]).unwrap();
        assert!(s.prune(false, &only_unkept).unwrap().removed.is_empty());

        let report = s.prune(false, &Filters::default()).unwrap();
        let mut removed: Vec<String> = report.removed.into_iter().map(|r| r.0).collect();
        removed.sort();
        let mut expected = vec![anon, anon_kept];
        expected.sort();
        assert_eq!(removed, expected);
        let report = s.prune(true, &Filters::default()).unwrap();
        assert_eq!(report.removed.len(), 1);
        assert_eq!(report.removed[0].0, "named");
        let (left, _) = s.list().unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].name, lease.name());
    }

    #[test]
    fn crash_leftovers_are_cleaned_and_hidden() {
        let tmp = TempDir::new("store-leftover");
        let s = store(&tmp);
        std::fs::create_dir_all(s.volumes_dir().join(".tmp-dead/_data")).unwrap();
        std::fs::create_dir_all(s.volumes_dir().join(".trash-dead/_data")).unwrap();
        let (infos, warnings) = s.list().unwrap();
        assert!(infos.is_empty() && warnings.is_empty(), "{warnings:?}");
        s.prune(false, &Filters::default()).unwrap();
        let left: Vec<_> = std::fs::read_dir(s.volumes_dir()).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn disk_usage_counts_hard_links_once() {
        let tmp = TempDir::new("store-du");
        std::fs::write(tmp.path().join("a"), vec![7u8; 64 * 1024]).unwrap();
        let one = disk_usage(tmp.path());
        std::fs::hard_link(tmp.path().join("a"), tmp.path().join("b")).unwrap();
        assert_eq!(disk_usage(tmp.path()), one);
        assert!(one >= 64 * 1024);
    }
}
