//! Connects the mount daemon to the volume store.

use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext};
use crate::spec::submount::VolumeProvider;
use crate::volume::{resolve_state_dir, VolumeLease, VolumeStore};

/// The store behind `--volume`; each attached volume stays leased (so `volume rm` refuses
/// it) until the provider is dropped when the daemon exits.
struct StoreProvider {
    store: VolumeStore,
    mountpoint: PathBuf,
    leases: Vec<VolumeLease>,
}

impl VolumeProvider for StoreProvider {
    fn attach(&mut self, name: Option<&str>) -> Result<(PathBuf, bool), Error> {
        let lease = self.store.acquire(name, &self.mountpoint)?;
        log::info!(
            "volume {} ({}) attached to {}",
            lease.name(),
            if lease.created() { "new" } else { "existing" },
            self.mountpoint.display()
        );
        let attached = (lease.data_dir().to_path_buf(), lease.was_empty());
        self.leases.push(lease);
        Ok(attached)
    }
}

/// The volume provider of a mount; `check_store` vets the directory holding the volumes
/// before any is used.
pub fn provider(
    state_dir: Option<&Path>,
    mountpoint: &Path,
    check_store: &dyn Fn(&Path) -> Result<(), Error>,
) -> Result<Box<dyn VolumeProvider>, Error> {
    let store = VolumeStore::open(&resolve_state_dir(state_dir)?)?;
    check_store(&store.volumes_dir())?;
    // Resolved now, before the FUSE mount covers it, so the usage records name the path
    // mountinfo will show even when MOUNTPOINT is given through a symlink.
    let mountpoint = mountpoint
        .canonicalize()
        .context(|| format!("mountpoint {}", mountpoint.display()))?;
    Ok(Box::new(StoreProvider {
        store,
        mountpoint,
        leases: Vec::new(),
    }))
}
