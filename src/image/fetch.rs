//! An image of an OCI layout brought into the layer store: each layer unpacked once (or found
//! there), all of them held by a lease while a mount or a diff reads them.

use std::path::{Path, PathBuf};

use super::error::Result;
use super::lease::Lease;
use super::oci::{Image, ImageRef, Layout};
use super::store::{Fetched, LayerStore};
use crate::volume::cli::human_size;
use crate::volume::resolve_state_dir;

/// An image of a layout, with its layers in the store, held by a lease.
pub struct StoredImage {
    /// Layer dirs, bottom first.
    pub layers: Vec<PathBuf>,
    pub lease: Lease,
}

/// Resolves `image` (`DIR[:TAG]`), takes a lease for `holder` on its layers and gets each
/// into the store, saying on stderr which were unpacked and which were there already.
pub fn stored_image(image: &str, state_dir: Option<&Path>, holder: &str) -> Result<StoredImage> {
    let image_ref = ImageRef::parse(image);
    let layout = Layout::open(&image_ref.dir)?;
    let image = layout.resolve(image_ref.tag.as_deref())?;
    let store = LayerStore::open(&resolve_state_dir(state_dir)?)?;
    let lease = store.lease(&recorded_name(&image_ref), &image, holder)?;
    let layers = fetch_layers(&store, &layout, &image)?;
    Ok(StoredImage { layers, lease })
}

/// The name an image is recorded by: its layout dir made absolute, and the tag.
pub fn recorded_name(image_ref: &ImageRef) -> String {
    let dir = std::fs::canonicalize(&image_ref.dir).unwrap_or_else(|_| image_ref.dir.clone());
    ImageRef {
        dir,
        tag: image_ref.tag.clone(),
    }
    .to_string()
}

fn fetch_layers(store: &LayerStore, layout: &Layout, image: &Image) -> Result<Vec<PathBuf>> {
    let count = image.layers.len();
    let mut paths = Vec::with_capacity(count);
    let mut batch = store.batch();
    for (i, layer) in image.layers.iter().enumerate() {
        let what = format!("layer {}/{count} ({})", i + 1, layer.descriptor.digest);
        let (path, fetched) = match batch.fetch(layout, layer, &what) {
            Ok(got) => got,
            Err(e) => {
                // The layers unpacked before this one are whole: keep them for next time.
                let _ = batch.publish();
                return Err(e);
            }
        };
        match fetched {
            Fetched::Reused => eprintln!("{what}: in the store"),
            Fetched::Unpacked { blob_bytes, took } => eprintln!(
                "{what}: unpacked {} in {:.2}s",
                human_size(blob_bytes),
                took.as_secs_f64()
            ),
        }
        paths.push(path);
    }
    batch.publish()?;
    Ok(paths)
}
