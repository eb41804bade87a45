//! Command line: subcommands for people and scripts, plus the fuse-overlayfs
//! compatible form (`-o lowerdir=...,upperdir=...,workdir=... MOUNTPOINT`) for container engines.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "stratafs", version, about = "Union filesystem for container root filesystems")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Mount a stack of layers at MOUNTPOINT.
    Mount(MountArgs),
    /// Unmount a stratafs mount.
    Umount { mountpoint: PathBuf },
    /// Mount an embedded three-layer demo image at MOUNTPOINT.
    Demo { mountpoint: PathBuf },
}

#[derive(clap::Args, Debug)]
pub struct MountArgs {
    /// Read-only image layer; repeat, bottom layer first (Dockerfile order).
    #[arg(long = "layer", value_name = "DIR")]
    pub layers: Vec<PathBuf>,
    /// Writable upper directory (kernel overlayfs format).
    #[arg(long, value_name = "DIR", requires = "work")]
    pub upper: Option<PathBuf>,
    /// Work directory on the same filesystem as --upper.
    #[arg(long, value_name = "DIR", requires = "upper")]
    pub work: Option<PathBuf>,
    /// Stay in the foreground (the default).
    #[arg(short, long, conflicts_with = "daemon")]
    pub foreground: bool,
    /// Return once the mount is live and serve it from a background process.
    #[arg(long)]
    pub daemon: bool,
    pub mountpoint: PathBuf,
}

pub fn run(args: Vec<OsString>) -> Result<(), String> {
    let cli = Cli::try_parse_from(args).map_err(|e| e.to_string())?;
    match cli.command {
        Command::Mount(_) | Command::Umount { .. } | Command::Demo { .. } => {
            Err("not implemented yet".into())
        }
    }
}
