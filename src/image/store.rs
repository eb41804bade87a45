//! The layer store: image layers unpacked once, by content, and shared by every image and
//! mount that has them.
//!
//! ```text
//! STATE_DIR/
//!   layers.lock                 flock: shared to take a lease, exclusive to remove layers
//!   layers/sha256/<hex>/        a layer unpacked (hex of its diffID), read-only from then on
//!   layers/sha256/.<hex>.lock   flock held while that layer is being unpacked
//!   layers/sha256/.<hex>.unpack-<random>/   an unpack in progress (flock-held)
//!   layers/sha256/.trash-<random>/          a layer being removed
//!   images/<manifest hex>.json  an image used from a layout: its name and layers
//!   image-leases/<id>.json      one per mount, diff or commit using layers (see `lease`)
//! ```
//!
//! A layer appears under its diffID only by the rename that ends a complete, verified,
//! synced unpack, so a layer dir that exists is whole, whatever was killed when. Two
//! unpacks of one layer serialise on its lock file and the second finds the layer done. A
//! user takes its lease (under the shared store lock) before it looks for its layers, and
//! removal scans the leases under the exclusive lock, so no layer in use or about to be used
//! is ever removed. Everything is made 0700: layers hold other users' files as the image has
//! them (setuid programs included) and are reached only through a mount.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, BufReader, Read};
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::blob::sha256_id;
use super::error::{ImageError, IoContext, Result};
use super::lease::{self, Lease, LeaseRecord};
use super::oci::{digest_hex, Image, ImageLayer, Layout};
use super::unpack::{decompressed, sweep_abandoned, TempDir};
use crate::sys::c;
use crate::sys::{self, lockfile, ops};
use crate::tarball::{self, Progress, Whiteouts};
use crate::union::ovl::Namespace;

const LAYERS_DIR: &str = "layers/sha256";
const IMAGES_DIR: &str = "images";
const LEASES_DIR: &str = "image-leases";
const LOCK_FILE: &str = "layers.lock";
const TRASH_PREFIX: &str = ".trash-";

/// An image as recorded in `images/`: where it was read from and its layers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// As named by the user: `DIR:TAG`, DIR absolute.
    pub reference: String,
    /// `sha256:...` of the manifest.
    pub manifest: String,
    /// Bottom layer first.
    pub diff_ids: Vec<String>,
}

/// What getting one layer into the store took.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Fetched {
    /// It was in the store already.
    Reused,
    /// Unpacked now: compressed bytes read, and how long it took.
    Unpacked { blob_bytes: u64, took: Duration },
}

/// What `prune` did.
#[derive(Debug, Default)]
pub struct PruneReport {
    /// Image records dropped.
    pub images: Vec<String>,
    /// Layers removed and the bytes each took.
    pub removed: Vec<(String, u64)>,
    /// Layers kept, and who uses each.
    pub kept: Vec<(String, Vec<String>)>,
}

pub struct LayerStore {
    root: PathBuf,
}

impl LayerStore {
    /// Opens (creating as needed, mode 0700) the store in `state_dir`.
    pub fn open(state_dir: &Path) -> Result<LayerStore> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(state_dir)
            .context("create the state dir", state_dir)?;
        let root = state_dir
            .canonicalize()
            .context("resolve the state dir", state_dir)?;
        let store = LayerStore { root };
        for dir in ["layers", LAYERS_DIR, IMAGES_DIR, LEASES_DIR] {
            ensure_private_dir(&store.root.join(dir))?;
        }
        Ok(store)
    }

    /// A store that may not exist: None when `state_dir` has no layer store (for listing).
    pub fn open_existing(state_dir: &Path) -> Result<Option<LayerStore>> {
        if !state_dir.join(LAYERS_DIR).is_dir() {
            return Ok(None);
        }
        LayerStore::open(state_dir).map(Some)
    }

    fn layers_dir(&self) -> PathBuf {
        self.root.join(LAYERS_DIR)
    }

    fn leases_dir(&self) -> PathBuf {
        self.root.join(LEASES_DIR)
    }

    fn images_dir(&self) -> PathBuf {
        self.root.join(IMAGES_DIR)
    }

    /// Where the layer with `diff_id` lives (whether or not it is there yet).
    pub fn layer_path(&self, diff_id: &str) -> Result<PathBuf> {
        let hex = digest_hex(diff_id).ok_or_else(|| ImageError::BadDigest {
            what: "diffID",
            digest: diff_id.to_string(),
        })?;
        Ok(self.layers_dir().join(hex))
    }

    /// The store-wide lock: shared to take a lease, exclusive to remove.
    fn lock(&self, exclusive: bool) -> Result<File> {
        let path = self.root.join(LOCK_FILE);
        let file = lockfile::open(&path).context("open", &path)?;
        lockfile::lock(&file, exclusive).context("lock", &path)?;
        Ok(file)
    }

    /// Records that `holder` uses `image`'s layers, for as long as the returned lease (or a
    /// process it is inherited by) lives. Taken before the layers are looked for, so a
    /// removal running meanwhile leaves them alone.
    pub fn lease(&self, reference: &str, image: &Image, holder: &str) -> Result<Lease> {
        let _shared = self.lock(false)?;
        let record = LeaseRecord {
            image: reference.to_string(),
            manifest: image.manifest_descriptor.digest.clone(),
            diff_ids: image.layers.iter().map(|l| l.diff_id.clone()).collect(),
            holder: holder.to_string(),
            pid: std::process::id(),
        };
        let lease = Lease::take(&self.leases_dir(), &record)?;
        self.record_image(&ImageRecord {
            reference: reference.to_string(),
            manifest: image.manifest_descriptor.digest.clone(),
            diff_ids: record.diff_ids,
        })?;
        Ok(lease)
    }

    fn record_image(&self, record: &ImageRecord) -> Result<()> {
        let hex = digest_hex(&record.manifest).ok_or_else(|| ImageError::BadDigest {
            what: "manifest digest",
            digest: record.manifest.clone(),
        })?;
        let path = self.images_dir().join(format!("{hex}.json"));
        let temp = self
            .images_dir()
            .join(format!(".{hex}.{}.tmp", std::process::id()));
        let bytes = serde_json::to_vec_pretty(record).map_err(|source| ImageError::Serialize {
            what: "image record",
            source,
        })?;
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(c::O_NOFOLLOW)
            .open(&temp)
            .and_then(|mut f| io::Write::write_all(&mut f, &bytes))
            .and_then(|()| std::fs::rename(&temp, &path))
            .map_err(|e| {
                let _ = std::fs::remove_file(&temp);
                ImageError::io("write", &path, e)
            })
    }

    /// Every image recorded, by manifest digest.
    pub fn images(&self) -> Result<Vec<ImageRecord>> {
        let mut out = Vec::new();
        let dir = self.images_dir();
        for entry in read_dir(&dir)? {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || !name.ends_with(".json") {
                continue;
            }
            let path = entry.path();
            match std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
            {
                Ok(rec) => out.push(rec),
                Err(e) => log::warn!("unreadable image record {}: {e}", path.display()),
            }
        }
        out.sort_by(|a: &ImageRecord, b| a.reference.cmp(&b.reference));
        Ok(out)
    }

    /// Diff IDs of every layer in the store.
    pub fn layers(&self) -> Result<Vec<String>> {
        let mut out: Vec<String> = read_dir(&self.layers_dir())?
            .into_iter()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let diff_id = format!("sha256:{name}");
                (digest_hex(&diff_id).is_some() && e.file_type().is_ok_and(|t| t.is_dir()))
                    .then_some(diff_id)
            })
            .collect();
        out.sort();
        Ok(out)
    }

    /// Live leases (who uses which layers); stale ones are dropped on the way.
    pub fn leases(&self) -> Result<Vec<LeaseRecord>> {
        let dir = self.leases_dir();
        lease::live(&dir).context("read", &dir)
    }

    /// A batch of layers to get into the store; see [`Batch`].
    pub fn batch(&self) -> Batch<'_> {
        Batch {
            store: self,
            pending: Vec::new(),
        }
    }

    /// The per-layer unpack lock: Some(held), or None when another process holds it.
    fn try_layer_lock(&self, hex: &str) -> Result<Option<File>> {
        let path = self.layer_lock_path(hex);
        let file = lockfile::open(&path).context("open", &path)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(file)),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(ImageError::io("lock", &path, e)),
        }
    }

    /// The per-layer unpack lock, waited for.
    fn layer_lock(&self, hex: &str) -> Result<File> {
        let path = self.layer_lock_path(hex);
        lockfile::open(&path)
            .and_then(|f| lockfile::lock(&f, true).map(|()| f))
            .context("lock", &path)
    }

    fn layer_lock_path(&self, hex: &str) -> PathBuf {
        self.layers_dir().join(format!(".{hex}.lock"))
    }

    /// `image rm`: drops the record of `image` and deletes its layers that no other image
    /// lists. Refused, with nothing removed, when a live lease uses one of its layers; the
    /// error names who holds it. Returns each removed layer with the bytes it took.
    pub fn remove_image(&self, image: &ImageRecord) -> Result<Vec<(String, u64)>> {
        let _exclusive = self.lock(true)?;
        let leases = self.leases()?;
        let in_use = in_use_by(&leases);
        let listed_by_others: BTreeSet<String> = self
            .images()?
            .into_iter()
            .filter(|r| r.manifest != image.manifest)
            .flat_map(|r| r.diff_ids)
            .collect();
        let doomed: Vec<&String> = image
            .diff_ids
            .iter()
            .filter(|d| !listed_by_others.contains(*d))
            .collect();
        let holders: Vec<String> = leases
            .iter()
            .filter(|l| l.manifest == image.manifest)
            .map(|l| l.holder.clone())
            .collect();
        let busy_layers: Vec<(String, Vec<String>)> = doomed
            .iter()
            .filter_map(|d| in_use.get(*d).map(|h| ((*d).clone(), h.clone())))
            .collect();
        if !holders.is_empty() || !busy_layers.is_empty() {
            return Err(ImageError::InUse {
                image: image.reference.clone(),
                holders,
                layers: busy_layers,
            });
        }
        self.drop_record(&image.manifest)?;
        let mut removed = Vec::new();
        for diff_id in doomed {
            if let Some(size) = self.delete_layer(diff_id)? {
                removed.push((diff_id.clone(), size));
            }
        }
        Ok(removed)
    }

    /// `image prune`: removes every image no live lease uses and every layer no live lease
    /// uses (the store is a cache of the layouts: a later mount unpacks again what it
    /// needs). What is kept is reported with who holds it.
    pub fn prune(&self) -> Result<PruneReport> {
        let _exclusive = self.lock(true)?;
        let leases = self.leases()?;
        let in_use = in_use_by(&leases);
        let mut report = PruneReport::default();
        for image in self.images()? {
            if leases.iter().any(|l| l.manifest == image.manifest) {
                continue;
            }
            self.drop_record(&image.manifest)?;
            report.images.push(image.reference);
        }
        for diff_id in self.layers()? {
            if let Some(holders) = in_use.get(&diff_id) {
                report.kept.push((diff_id, holders.clone()));
            } else if let Some(size) = self.delete_layer(&diff_id)? {
                report.removed.push((diff_id, size));
            }
        }
        drop(_exclusive);
        self.sweep();
        Ok(report)
    }

    fn drop_record(&self, manifest: &str) -> Result<()> {
        let hex = digest_hex(manifest).ok_or_else(|| ImageError::BadDigest {
            what: "manifest digest",
            digest: manifest.to_string(),
        })?;
        let path = self.images_dir().join(format!("{hex}.json"));
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(ImageError::io("remove", &path, e))
            }
            _ => Ok(()),
        }
    }

    /// Deletes a layer (renamed out of its name first, so it is never seen half deleted)
    /// and its lock file; Some(bytes it took), or None when it was not there.
    fn delete_layer(&self, diff_id: &str) -> Result<Option<u64>> {
        let path = self.layer_path(diff_id)?;
        if !path.is_dir() {
            return Ok(None);
        }
        let size = crate::volume::disk_usage(&path);
        let mut random = [0u8; 8];
        sys::random_bytes(&mut random).map_err(ImageError::Random)?;
        let tag: String = random.iter().map(|b| format!("{b:02x}")).collect();
        let trash = self.layers_dir().join(format!("{TRASH_PREFIX}{tag}"));
        std::fs::rename(&path, &trash).context("remove", &path)?;
        std::fs::remove_dir_all(&trash).context("delete", &trash)?;
        let _ = std::fs::remove_file(self.layer_lock_path(digest_hex(diff_id).unwrap_or_default()));
        Ok(Some(size))
    }

    /// Removes what crashes left: unpack temp dirs no live unpack holds, trash of
    /// interrupted removals. Called under no lock: each is checked on its own.
    pub fn sweep(&self) {
        let dir = self.layers_dir();
        let Ok(entries) = read_dir(&dir) else {
            return;
        };
        for entry in entries {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(TRASH_PREFIX) {
                let _ = std::fs::remove_dir_all(entry.path());
            } else if let Some(hex) = name
                .strip_prefix('.')
                .and_then(|n| n.split_once(".unpack-"))
                .map(|(hex, _)| hex)
            {
                sweep_abandoned(&dir, hex);
            }
        }
    }
}

/// Layers got into the store together. Each missing layer is unpacked (verified) into a
/// temp dir of the store under its per-layer lock; [`Batch::publish`] then syncs them all
/// with one syncfs (one flush of the filesystem instead of one per layer) and renames each
/// into place. A batch dropped unpublished removes its temp dirs. To wait for a lock another
/// process holds, the batch first publishes what it has, so it never waits holding a lock
/// (two mounts taking the same layers in different orders cannot deadlock).
pub struct Batch<'s> {
    store: &'s LayerStore,
    pending: Vec<Pending>,
}

struct Pending {
    temp: TempDir,
    dest: PathBuf,
    _lock: File,
}

impl Batch<'_> {
    /// Gets `layer` of the image in `layout` into the batch: Reused when the store has it,
    /// else unpacked, verifying the blob's digest and the tar's diffID. The path returned is
    /// the layer's once the batch is published.
    pub fn fetch(
        &mut self,
        layout: &Layout,
        layer: &ImageLayer,
        what: &str,
    ) -> Result<(PathBuf, Fetched)> {
        let store = self.store;
        let dest = store.layer_path(&layer.diff_id)?;
        // An image may list one layer twice (empty layers often are).
        if dest.is_dir() || self.pending.iter().any(|p| p.dest == dest) {
            return Ok((dest, Fetched::Reused));
        }
        let hex = digest_hex(&layer.diff_id).unwrap_or_default();
        let lock = match store.try_layer_lock(hex)? {
            Some(lock) => lock,
            None => {
                self.publish()?;
                eprintln!("stratafs: waiting for another process unpacking layer sha256:{hex}");
                store.layer_lock(hex)?
            }
        };
        // Another process may have finished it while this one waited.
        if dest.is_dir() {
            return Ok((dest, Fetched::Reused));
        }
        sweep_abandoned(&store.layers_dir(), hex);
        let start = Instant::now();
        let temp = TempDir::new(&store.layers_dir(), hex)?;
        let blob_bytes = unpack_verified(layout, layer, what, temp.path())?;
        self.pending.push(Pending {
            temp,
            dest: dest.clone(),
            _lock: lock,
        });
        Ok((
            dest,
            Fetched::Unpacked {
                blob_bytes,
                took: start.elapsed(),
            },
        ))
    }

    /// Makes every layer unpacked so far durable, then visible under its diffID.
    pub fn publish(&mut self) -> Result<()> {
        let Some(first) = self.pending.first() else {
            return Ok(());
        };
        File::open(first.temp.path())
            .and_then(|f| ops::syncfs(f.as_fd()))
            .context("sync", first.temp.path())?;
        for p in self.pending.drain(..) {
            // The layer root keeps the mode the tar gave it (or 0755); the store is 0700.
            p.temp.publish(&p.dest)?;
        }
        Ok(())
    }
}

/// For each diffID, who uses it (`mount /mnt/x`, ...).
pub fn in_use_by(leases: &[LeaseRecord]) -> BTreeMap<String, Vec<String>> {
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for l in leases {
        for d in &l.diff_ids {
            let holders = map.entry(d.clone()).or_default();
            if !holders.contains(&l.holder) {
                holders.push(l.holder.clone());
            }
        }
    }
    map
}

/// Reads the layer blob through the digest check, decompresses it (told by its magic) and
/// extracts it into `dest`; fails unless both the blob's sha256 and the tar's (the diffID)
/// are the ones the image names. Returns the blob bytes read.
fn unpack_verified(layout: &Layout, layer: &ImageLayer, what: &str, dest: &Path) -> Result<u64> {
    let root = sys::open_dir_path(dest).context("open", dest)?;
    // trusted.* needs CAP_SYS_ADMIN in the initial user namespace: root in a user namespace
    // (rootless podman) writes the user.overlay.* markers, as kernel overlayfs reads them
    // with userxattr.
    let whiteouts = Whiteouts::Overlay(if crate::union::rootless::sys_admin_in_initial_userns() {
        Namespace::Trusted
    } else {
        Namespace::User
    });
    let mut blob = layout.open_blob(&layer.descriptor, what)?;
    let mut warnings = Vec::new();
    let read_error = |source| ImageError::LayerRead {
        layer: what.to_string(),
        source,
    };
    let extracted = (|| -> Result<String> {
        let input =
            decompressed(BufReader::with_capacity(1 << 20, &mut blob)).map_err(read_error)?;
        let mut tar = HashingReader::new(input);
        let mut progress = Progress::on_terminal("unpacked");
        let report = tarball::extract_layer(&mut tar, root.as_fd(), whiteouts, &mut progress)
            .map_err(|source| ImageError::LayerArchive {
                layer: what.to_string(),
                source,
            })?;
        warnings = report.warnings;
        // The tar's end-of-archive blocks and padding count in the diffID too.
        io::copy(&mut tar, &mut io::sink()).map_err(read_error)?;
        Ok(tar.digest())
    })();
    let blob_bytes = blob.bytes_read();
    let not_stored = |e: ImageError| ImageError::NothingStored(Box::new(e));
    // A corrupt blob explains any failure above better than what the tar reader made of it.
    blob.finish().map_err(|e| not_stored(e.into()))?;
    let diff_id = extracted.map_err(not_stored)?;
    if diff_id != layer.diff_id {
        return Err(ImageError::DiffIdMismatch {
            layer: what.to_string(),
            found: diff_id,
            expected: layer.diff_id.clone(),
        });
    }
    for w in warnings {
        eprintln!("stratafs: warning: {what}: {w}");
    }
    Ok(blob_bytes)
}

/// A reader that hashes what goes through it.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> HashingReader<R> {
    fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
        }
    }

    fn digest(self) -> String {
        sha256_id(self.hasher.finalize().as_slice())
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

fn read_dir(dir: &Path) -> Result<Vec<std::fs::DirEntry>> {
    std::fs::read_dir(dir)
        .and_then(|it| it.collect::<io::Result<Vec<_>>>())
        .context("read", dir)
}

/// Makes sure `path` is a real directory (never a symlink) not open to others, creating it.
fn ensure_private_dir(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            if m.permissions().mode() & 0o022 != 0 {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
                    .context("set mode 0700 on", path)?;
            }
            Ok(())
        }
        Ok(_) => Err(ImageError::NotADirectory(path.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            match DirBuilder::new().mode(0o700).create(path) {
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => ensure_private_dir(path),
                r => r.context("create", path),
            }
        }
        Err(e) => Err(ImageError::io("look up", path, e)),
    }
}
