//! Command line: subcommands for people and scripts, plus the fuse-overlayfs
//! compatible form (`-o lowerdir=...,upperdir=...,workdir=... MOUNTPOINT`) for container engines.

pub(crate) mod compat;
mod demo;
pub(crate) mod image;
pub(crate) mod image_store;

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::daemon;
use crate::error::Error;
use crate::spec::submount;
use crate::spec::MountSpec;
use compat::CompatInvocation;

#[derive(Parser, Debug)]
#[command(
    name = "stratafs",
    version,
    about = "Union filesystem for container root filesystems"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Mount a stack of layers at MOUNTPOINT.
    Mount(MountArgs),
    /// Unmount a stratafs mount (its sub-mounts first).
    Umount {
        /// Unmount whatever filesystem is there, not only a stratafs mount.
        #[arg(long)]
        force: bool,
        mountpoint: PathBuf,
    },
    /// Mount an embedded three-layer demo image at MOUNTPOINT.
    Demo { mountpoint: PathBuf },
    /// Manage volumes: create, ls, inspect, rm, prune.
    Volume(crate::volume::cli::VolumeArgs),
    /// List the changes of a writable layer over its image (A added, C changed, D deleted).
    Diff(crate::cli::image::DiffArgs),
    /// Write a writable layer as an OCI layer tarball; prints its diff_id and digest.
    Commit(crate::cli::image::CommitArgs),
    /// Layer tarballs: unpack one into a layer directory.
    Layer(crate::image::unpack::LayerArgs),
    /// OCI images: mount one from an image layout; list, remove and prune stored layers.
    Image(crate::cli::image_store::ImageArgs),
}

#[derive(clap::Args, Debug)]
pub struct MountArgs {
    /// Read-only image layer; repeat, bottom layer first (Dockerfile order).
    #[arg(long = "layer", value_name = "DIR")]
    pub layers: Vec<PathBuf>,
    #[command(flatten)]
    pub options: MountOptions,
    pub mountpoint: PathBuf,
}

/// Everything of a mount but its layers and mountpoint (shared with `image mount`).
#[derive(clap::Args, Debug)]
pub struct MountOptions {
    /// Writable upper directory (kernel overlayfs format).
    #[arg(long, value_name = "DIR", requires = "work")]
    pub upper: Option<PathBuf>,
    /// Work directory on the same filesystem as --upper.
    #[arg(long, value_name = "DIR", requires = "upper")]
    pub work: Option<PathBuf>,
    /// Stay in the foreground (the default).
    #[arg(short, long, conflicts_with = "daemon")]
    pub foreground: bool,
    /// Debug output (every request and every failed operation); implies --foreground.
    #[arg(short, long, conflicts_with = "daemon")]
    pub debug: bool,
    /// Append log lines to FILE (default: stderr in the foreground, the system log with --daemon).
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
    /// Return once the mount is live and serve it from a background process.
    #[arg(long)]
    pub daemon: bool,
    /// Named or anonymous volume: NAME:/path[:ro|:nocopy] or /path; /host/dir:/path is a
    /// bind, as in Docker; repeatable.
    #[arg(long = "volume", value_name = "SPEC")]
    pub volumes: Vec<String>,
    /// Host directory or file shown at a path: HOSTPATH:/path[:ro]; repeatable. HOSTPATH may
    /// hold ':' (the target is the last part starting with '/').
    #[arg(long = "bind", value_name = "SPEC")]
    pub binds: Vec<String>,
    /// Memory-only directory: /path[:size=BYTES,mode=OCTAL]; repeatable.
    #[arg(long = "tmpfs", value_name = "SPEC")]
    pub tmpfs: Vec<String>,
    /// Refuse every write to the union (volumes, binds and tmpfs stay as asked).
    #[arg(long)]
    pub read_only: bool,
    /// Where volumes and stored image layers live (default: /var/lib/stratafs as root, else
    /// $XDG_DATA_HOME/stratafs).
    #[arg(long, value_name = "DIR", env = "STRATAFS_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Skip every fsync of the writable layer (faster; a crash may lose recent changes).
    #[arg(long)]
    pub volatile: bool,
    /// Write the rootless format: user.overlay.* markers, no metacopy, EXDEV for renaming a
    /// merged or lower directory (kernel overlayfs's userxattr). Chosen by itself where
    /// trusted.overlay.* cannot be written (a user namespace, an unprivileged user).
    #[arg(long)]
    pub userxattr: bool,
    /// Serve reads in the daemon instead of FUSE passthrough.
    #[arg(long)]
    pub no_passthrough: bool,
    /// Number of request threads (default: twice the CPUs, at least 4).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: Option<u16>,
}

impl MountOptions {
    /// The mount of `layers` (bottom first) at `mountpoint` with these options.
    pub fn spec(self, layers: Vec<PathBuf>, mountpoint: PathBuf) -> Result<MountSpec, Error> {
        let mut submounts = Vec::new();
        for v in &self.volumes {
            submounts.push(submount::parse_volume(v)?);
        }
        for b in &self.binds {
            submounts.push(submount::parse_bind(b)?);
        }
        for t in &self.tmpfs {
            submounts.push(submount::parse_tmpfs(t)?);
        }
        Ok(MountSpec {
            submounts,
            read_only_union: self.read_only,
            state_dir: self.state_dir,
            layers,
            mountpoint,
            upper: self.upper,
            work: self.work,
            volatile: self.volatile,
            passthrough: !self.no_passthrough,
            userxattr: self.userxattr,
            threads: self.threads.map(usize::from),
            log_file: self.log_file,
            fsname: None,
            ..Default::default()
        })
    }

    /// Whether the mount is served from a background process.
    pub fn detach(&self) -> bool {
        self.daemon && !self.debug
    }
}

pub fn run(args: Vec<OsString>) -> Result<(), Error> {
    if compat::is_compat_invocation(&args) {
        return run_compat(&args);
    }
    // Usage errors, --help and --version: clap prints them in its own layout and exits
    // (status 2 for a usage error, 0 for help).
    let cli = Cli::try_parse_from(args).unwrap_or_else(|e| e.exit());
    match &cli.command {
        Command::Mount(args) => {
            crate::daemon::logging::init(args.options.debug, Some(&args.mountpoint))
        }
        Command::Image(args) => crate::cli::image_store::init_logging(args),
        _ => crate::daemon::logging::init(false, None),
    }
    match cli.command {
        Command::Mount(args) => {
            let detach = args.options.detach();
            let spec = args.options.spec(args.layers, args.mountpoint)?;
            daemon::mount(&spec, detach).map(drop)
        }
        Command::Umount { force, mountpoint } => daemon::umount(&mountpoint, force),
        Command::Demo { mountpoint } => demo::run(&mountpoint),
        Command::Volume(args) => Ok(crate::volume::cli::run(args)?),
        Command::Diff(args) => crate::cli::image::diff(args),
        Command::Commit(args) => crate::cli::image::commit(args),
        Command::Layer(args) => Ok(crate::image::unpack::run(args)?),
        Command::Image(args) => crate::cli::image_store::run(args),
    }
}

/// The fuse-overlayfs command line: what podman, buildah and dockerd run as a mount program.
fn run_compat(args: &[OsString]) -> Result<(), Error> {
    let m = match compat::parse_compat_args(args)? {
        CompatInvocation::Help => {
            println!("{}", compat::USAGE);
            return Ok(());
        }
        CompatInvocation::Version => {
            println!(
                "stratafs {} (fuse-overlayfs compatible)",
                env!("CARGO_PKG_VERSION")
            );
            return Ok(());
        }
        CompatInvocation::Mount(m) => m,
    };
    crate::daemon::logging::init(m.debug, Some(&m.mountpoint));
    for w in m.warnings.iter().chain(&unsupported_options(&m)) {
        eprintln!("stratafs: warning: {w}");
    }
    let spec = MountSpec {
        layers: m.lowers.clone(),
        mountpoint: m.mountpoint.clone(),
        upper: m.upper.clone(),
        work: m.work.clone(),
        volatile: m.volatile || !m.fsync,
        passthrough: std::env::var_os("STRATAFS_NO_PASSTHROUGH").is_none(),
        read_only_union: m.read_only,
        noacl: !m.acl,
        userxattr: m.userxattr,
        nodev: m.flags.nodev,
        nosuid: m.flags.nosuid,
        noexec: m.flags.noexec,
        log_file: m.log_file.clone(),
        ownership: crate::union::idmap::Ownership {
            uids: m.uid_map.clone(),
            gids: m.gid_map.clone(),
            squash: m.squash,
        },
        ..Default::default()
    };
    daemon::mount(&spec, !(m.foreground || m.debug)).map(drop)
}

/// Options fuse-overlayfs accepts that stratafs parses but does not act on, each with why.
fn unsupported_options(m: &compat::CompatMount) -> Vec<String> {
    let mut out = Vec::new();
    if m.xattr_permissions != compat::XattrPermissions::Off {
        out.push(
            "xattr_permissions: ownership is stored on disk as is (run as root); option ignored"
                .into(),
        );
    }
    if m.context.is_some() {
        out.push("context: SELinux labels are not applied by stratafs; option ignored".into());
    }
    if !m.xattrs {
        out.push("noxattrs: extended attributes stay available; option ignored".into());
    }
    if m.timeout.is_some() {
        out.push("timeout: every change goes through the daemon, which keeps the kernel cache exact; option ignored".into());
    }
    out
}
