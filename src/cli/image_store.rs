//! `stratafs image mount|ls|rm|prune`: images from OCI layouts through the layer store.

use std::path::PathBuf;

use crate::cli::MountOptions;
use crate::daemon::{self, Role};
use crate::error::Error;
use crate::image::error::Result;
use crate::image::fetch::{recorded_name, stored_image};
use crate::image::oci::ImageRef;
use crate::image::store::{in_use_by, ImageRecord, LayerStore};
use crate::image::ImageError;
use crate::volume::cli::human_size;
use crate::volume::resolve_state_dir;

#[derive(clap::Args, Debug)]
pub struct ImageArgs {
    #[command(subcommand)]
    pub command: ImageCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum ImageCommand {
    /// Mount an image of an OCI layout (podman save --format oci-dir, skopeo, buildah push
    /// oci:DIR): its layers are unpacked once into the store and mounted in order.
    Mount(ImageMountArgs),
    /// List the images and layers in the store, their sizes and the mounts using them.
    Ls {
        /// List layers instead of images.
        #[arg(long)]
        layers: bool,
        #[command(flatten)]
        state: StateDirArg,
    },
    /// Remove images from the store, with their layers no other image has (refused while
    /// a mount uses them).
    Rm {
        /// As `image ls` shows it (DIR:TAG), or its manifest digest (or a prefix of it).
        #[arg(required = true, value_name = "IMAGE")]
        images: Vec<String>,
        #[command(flatten)]
        state: StateDirArg,
    },
    /// Remove every image and layer of the store that no live mount uses.
    Prune {
        #[command(flatten)]
        state: StateDirArg,
    },
}

#[derive(clap::Args, Debug)]
pub struct ImageMountArgs {
    /// OCI_LAYOUT[:TAG]: an OCI image layout directory; TAG (its
    /// org.opencontainers.image.ref.name) may be left out when it holds one image.
    #[arg(value_name = "OCI_LAYOUT[:TAG]")]
    pub image: String,
    #[command(flatten)]
    pub options: MountOptions,
    pub mountpoint: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct StateDirArg {
    /// Where the store is [default: /var/lib/stratafs as root, else $XDG_DATA_HOME/stratafs].
    #[arg(long, value_name = "DIR", env = crate::volume::STATE_DIR_ENV)]
    pub state_dir: Option<PathBuf>,
}

pub fn init_logging(args: &ImageArgs) {
    match &args.command {
        ImageCommand::Mount(m) => {
            crate::daemon::logging::init(m.options.debug, Some(&m.mountpoint))
        }
        _ => crate::daemon::logging::init(false, None),
    }
}

pub fn run(args: ImageArgs) -> std::result::Result<(), Error> {
    let managed = match args.command {
        ImageCommand::Mount(m) => return mount(m),
        ImageCommand::Ls { layers, state } => existing_store(&state).and_then(|s| match s {
            Some(s) => list(&s, layers),
            // Nothing stored yet: an empty list, and no state dir made for it.
            None => {
                print_table(vec![header(layers)]);
                Ok(())
            }
        }),
        ImageCommand::Rm { images, state } => open_store(&state).and_then(|s| remove(&s, &images)),
        ImageCommand::Prune { state } => open_store(&state).and_then(|s| prune(&s)),
    };
    Ok(managed?)
}

fn open_store(state: &StateDirArg) -> Result<LayerStore> {
    LayerStore::open(&resolve_state_dir(state.state_dir.as_deref())?)
}

fn existing_store(state: &StateDirArg) -> Result<Option<LayerStore>> {
    LayerStore::open_existing(&resolve_state_dir(state.state_dir.as_deref())?)
}

fn mount(args: ImageMountArgs) -> std::result::Result<(), Error> {
    let mountpoint = std::path::absolute(&args.mountpoint)
        .map_err(|e| Error::io(format!("mountpoint {}", args.mountpoint.display()), e))?;
    let stored = stored_image(
        &args.image,
        args.options.state_dir.as_deref(),
        &format!("mount {}", mountpoint.display()),
    )?;
    let detach = args.options.detach();
    let spec = match args.options.spec(stored.layers, args.mountpoint) {
        Ok(spec) => spec,
        Err(e) => {
            stored.lease.release();
            return Err(e);
        }
    };
    let served = daemon::mount(&spec, detach);
    match served {
        // The background daemon holds the lease (its lock came with the fork) and ends it.
        Ok(Role::Launcher) => drop(stored.lease),
        _ => stored.lease.release(),
    }
    served.map(drop)
}

fn list(store: &LayerStore, layers: bool) -> Result<()> {
    let leases = store.leases()?;
    let users = in_use_by(&leases);
    let records = store.images()?;
    let mut rows = Vec::new();
    if layers {
        rows.push([
            "LAYER".to_string(),
            "SIZE".into(),
            "IMAGES".into(),
            "USED BY".into(),
        ]);
        for diff_id in store.layers()? {
            let size = crate::volume::disk_usage(&store.layer_path(&diff_id)?);
            let images = records
                .iter()
                .filter(|r| r.diff_ids.contains(&diff_id))
                .count();
            rows.push([
                diff_id.clone(),
                human_size(size),
                images.to_string(),
                users.get(&diff_id).map_or("-".into(), |h| h.join(", ")),
            ]);
        }
    } else {
        rows.push([
            "IMAGE".to_string(),
            "LAYERS".into(),
            "SIZE".into(),
            "USED BY".into(),
        ]);
        for r in &records {
            let size: u64 = r
                .diff_ids
                .iter()
                .filter_map(|d| store.layer_path(d).ok())
                .map(|p| crate::volume::disk_usage(&p))
                .sum();
            let holders: Vec<&str> = leases
                .iter()
                .filter(|l| l.manifest == r.manifest)
                .map(|l| l.holder.as_str())
                .collect();
            rows.push([
                r.reference.clone(),
                r.diff_ids.len().to_string(),
                human_size(size),
                if holders.is_empty() {
                    "-".into()
                } else {
                    holders.join(", ")
                },
            ]);
        }
    }
    print_table(rows);
    Ok(())
}

fn header(layers: bool) -> [String; 4] {
    if layers {
        [
            "LAYER".into(),
            "SIZE".into(),
            "IMAGES".into(),
            "USED BY".into(),
        ]
    } else {
        [
            "IMAGE".into(),
            "LAYERS".into(),
            "SIZE".into(),
            "USED BY".into(),
        ]
    }
}

fn print_table(rows: Vec<[String; 4]>) {
    let widths: Vec<usize> = (0..3)
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    for r in rows {
        println!(
            "{:w0$}  {:w1$}  {:w2$}  {}",
            r[0],
            r[1],
            r[2],
            r[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        );
    }
}

/// The record `name` designates: its reference as listed, the same layout and tag given
/// another way (a relative path), or its manifest digest or a prefix of its hex.
fn find_record<'a>(records: &'a [ImageRecord], name: &str) -> Result<&'a ImageRecord> {
    let as_recorded = recorded_name(&ImageRef::parse(name));
    let hex = name.strip_prefix("sha256:").unwrap_or(name);
    let matches: Vec<&ImageRecord> = records
        .iter()
        .filter(|r| {
            r.reference == name
                || r.reference == as_recorded
                || (hex.len() >= 6 && r.manifest["sha256:".len()..].starts_with(hex))
        })
        .collect();
    match matches.as_slice() {
        [one] => Ok(one),
        [] => Err(ImageError::NoSuchImage(name.to_string())),
        many => Err(ImageError::AmbiguousImage {
            name: name.to_string(),
            matches: many.iter().map(|r| r.reference.clone()).collect(),
        }),
    }
}

fn remove(store: &LayerStore, names: &[String]) -> Result<()> {
    let records = store.images()?;
    // Every name must resolve before anything is removed.
    let chosen = names
        .iter()
        .map(|n| find_record(&records, n).cloned())
        .collect::<Result<Vec<_>>>()?;
    let mut failed = Vec::new();
    for record in chosen {
        match store.remove_image(&record) {
            Ok(removed) => {
                for (diff_id, size) in removed {
                    println!("removed layer {diff_id} ({})", human_size(size));
                }
                println!("removed image {}", record.reference);
            }
            Err(e) => failed.push(e),
        }
    }
    match failed.len() {
        0 => Ok(()),
        1 => Err(failed.remove(0)),
        _ => Err(ImageError::Several(failed)),
    }
}

fn prune(store: &LayerStore) -> Result<()> {
    let report = store.prune()?;
    for image in &report.images {
        println!("removed image {image}");
    }
    for (diff_id, size) in &report.removed {
        println!("removed layer {diff_id} ({})", human_size(*size));
    }
    for (diff_id, holders) in &report.kept {
        println!("kept layer {diff_id}: in use by {}", holders.join(", "));
    }
    let total: u64 = report.removed.iter().map(|(_, s)| s).sum();
    println!("Total reclaimed space: {}", human_size(total));
    Ok(())
}
