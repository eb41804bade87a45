//! stratafs: a union filesystem for container root filesystems, served over FUSE.

mod cli;

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
