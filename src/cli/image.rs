//! `stratafs diff` and `stratafs commit`: arguments, and where the output goes.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext};
use crate::image::blob::{BlobWriter, Compression, Digests};
use crate::image::layout_write::{
    self, creation_time, Base, LayerBlob, Provenance, TargetLayout, TargetRef,
};
use crate::image::lease::Lease;
use crate::image::lower::LowerStack;
use crate::image::ImageError;
use crate::tarball::Progress;

const IO_BUFFER: usize = 1 << 20;

/// The image and writable layer both commands read.
#[derive(clap::Args, Debug)]
pub struct ContainerArgs {
    /// The writable layer: an upper dir in the kernel overlayfs format.
    #[arg(long, value_name = "DIR")]
    pub upper: PathBuf,
    /// The image's layers, bottom layer first, as given to `stratafs mount`.
    #[arg(long = "layer", value_name = "DIR", required_unless_present = "image")]
    pub layers: Vec<PathBuf>,
    /// The image as an OCI layout, instead of --layer: OCI_LAYOUT[:TAG], as given to
    /// `stratafs image mount` (its layers come from the store, unpacked there if needed).
    #[arg(long, value_name = "OCI_LAYOUT[:TAG]", conflicts_with = "layers")]
    pub image: Option<String>,
    /// The store --image uses [default: /var/lib/stratafs as root, else $XDG_DATA_HOME/stratafs].
    #[arg(long, value_name = "DIR", env = crate::volume::STATE_DIR_ENV)]
    pub state_dir: Option<PathBuf>,
}

impl ContainerArgs {
    /// The image's layers merged; with --image, also the lease that keeps its stored layers
    /// from removal while they are read (release it when done).
    fn open_stack(&self, command: &str) -> Result<(LowerStack, Option<Lease>), ImageError> {
        match &self.image {
            None => Ok((LowerStack::open(&self.layers)?, None)),
            Some(image) => {
                let holder = format!("stratafs {command} (pid {})", std::process::id());
                let stored =
                    crate::image::fetch::stored_image(image, self.state_dir.as_deref(), &holder)?;
                match LowerStack::open(&stored.layers) {
                    Ok(stack) => Ok((stack, Some(stored.lease))),
                    Err(e) => {
                        stored.lease.release();
                        Err(e)
                    }
                }
            }
        }
    }
}

/// Ends the lease of `--image`, if any, and passes `result` on.
fn released<T>(lease: Option<Lease>, result: T) -> T {
    if let Some(lease) = lease {
        lease.release();
    }
    result
}

#[derive(clap::Args, Debug)]
pub struct DiffArgs {
    #[command(flatten)]
    pub container: ContainerArgs,
    /// `json` for podman's JSON report (default: `A|C|D PATH` lines).
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct CommitArgs {
    #[command(flatten)]
    pub container: ContainerArgs,
    /// The layer tarball to write: LAYER.tar, LAYER.tar.gz or LAYER.tar.zst (the extension
    /// picks the compression). Optional with --to-layout (then gzip, in the layout only).
    #[arg(
        short,
        long,
        value_name = "FILE",
        required_unless_present = "to_layout"
    )]
    pub output: Option<PathBuf>,
    /// Also add the image FROM + this layer to the OCI layout DIR (made if missing) as TAG;
    /// the layout's other tags stay as they are.
    #[arg(long, value_name = "DIR:TAG", requires = "from")]
    pub to_layout: Option<String>,
    /// The image the layer goes on: LAYOUT[:TAG] (another OCI layout), or a TAG of the
    /// --to-layout layout.
    #[arg(long, value_name = "IMAGE", requires = "to_layout")]
    pub from: Option<String>,
    /// The `created_by` of the new image's history entry.
    #[arg(long, value_name = "TEXT", default_value = "stratafs commit")]
    pub created_by: String,
}

pub fn diff(args: DiffArgs) -> Result<(), Error> {
    let json = match args.format.as_deref() {
        None => false,
        Some("json") => true,
        Some(other) => {
            return Err(Error::usage(format!(
                "unknown --format {other:?}: the only format is json (default: A/C/D lines)"
            )))
        }
    };
    let (mut stack, lease) = args.container.open_stack("diff")?;
    let changes = released(
        lease,
        crate::image::diff::changes(&args.container.upper, &mut stack),
    )?;
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let written = if json {
        crate::image::diff::write_json(&mut out, &changes)
    } else {
        crate::image::diff::write_text(&mut out, &changes)
    };
    written
        .and_then(|()| out.flush())
        .context(|| "cannot write the changes to stdout".into())
}

pub fn commit(args: CommitArgs) -> Result<(), Error> {
    let compression = match &args.output {
        Some(path) => Compression::from_name(path)?,
        None => Compression::Gzip,
    };
    // Everything about the target and the base is checked before the layer is written.
    let target = match &args.to_layout {
        Some(spec) => {
            let target = TargetRef::parse(spec)?;
            let from = args.from.as_deref().expect("clap requires --from");
            let base = Base::resolve(from, &target)?;
            let layout = TargetLayout::open_or_create(&target.dir)?;
            Some((target, base, layout))
        }
        None => None,
    };
    let provenance = Provenance {
        created: creation_time()?,
        created_by: args.created_by.clone(),
    };
    let (mut stack, lease) = args.container.open_stack("commit")?;
    let layer_path = match (&args.output, &target) {
        (Some(path), _) => path.clone(),
        (None, Some((_, _, layout))) => layout.temp_path("layer.tar.gz"),
        (None, None) => unreachable!("clap requires --output or --to-layout"),
    };
    let digests = released(
        lease,
        write_layer(&args.container.upper, &mut stack, &layer_path, compression),
    )?;
    println!("diff_id: {}", digests.diff_id);
    println!("digest: {}", digests.digest);
    println!("size: {}", digests.size);
    println!("media_type: {}", compression.media_type());
    if let Some((target, base, layout)) = target {
        let layer = LayerBlob {
            path: &layer_path,
            digests: &digests,
            compression,
        };
        let added = layout_write::append(&layout, &target.tag, &base, layer, &provenance)
            .inspect_err(|_| {
                if args.output.is_none() {
                    let _ = std::fs::remove_file(&layer_path);
                }
            })?;
        println!("image: {}:{}", target.dir.display(), target.tag);
        println!("manifest: {}", added.manifest.digest);
        println!("config: {}", added.config_digest);
    }
    Ok(())
}

/// Writes the layer to a temp file next to `path` and renames it into place, so a failed
/// commit never leaves a truncated layer under the name.
fn write_layer(
    upper: &Path,
    stack: &mut LowerStack,
    path: &Path,
    compression: Compression,
) -> Result<Digests, Error> {
    let partial = partial_name(path);
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&partial)
        .context(|| format!("cannot create {}", partial.display()))?;
    let written = (|| -> Result<Digests, Error> {
        let out = BlobWriter::new(BufWriter::with_capacity(IO_BUFFER, file), compression)
            .context(|| "cannot start the compressor".into())?;
        let mut progress = Progress::on_terminal("committed");
        let (out, report) = crate::image::commit::commit(upper, stack, out, &mut progress)?;
        drop(progress);
        for w in &report.warnings {
            eprintln!("stratafs: warning: {w}");
        }
        let cannot_write = || format!("cannot write {}", partial.display());
        let (digests, buffered) = out.finish().context(cannot_write)?;
        let file: File = buffered
            .into_inner()
            .map_err(|e| e.into_error())
            .context(cannot_write)?;
        file.sync_all().context(cannot_write)?;
        std::fs::rename(&partial, path)
            .context(|| format!("cannot move the layer to {}", path.display()))?;
        Ok(digests)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    written
}

/// `DIR/.NAME.partial-PID`: hidden, unique to this process, on the output's filesystem.
fn partial_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "layer".into());
    path.with_file_name(format!(".{name}.partial-{}", std::process::id()))
}
