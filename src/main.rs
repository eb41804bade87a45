//! stratafs: a union filesystem for container root filesystems, served over FUSE.

mod attr;
mod cli;
// The fuse-overlayfs command line; the CLI dispatch to it comes next.
mod compat;
mod copyup;
mod daemon;
mod demo;
mod dirstate;
mod fs;
mod idmap;
mod index;
mod inode;
mod layer;
mod merge;
mod mountinfo;
mod ovl;
mod sharded;
mod spec;
mod submount;
mod sys;
mod treecopy;
mod upper;
mod volattach;
mod volume;
mod whiteout;

use std::process::ExitCode;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    match cli::run(std::env::args_os().collect()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("stratafs: {err}");
            ExitCode::FAILURE
        }
    }
}
