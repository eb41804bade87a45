//! The `stratafs` command: parses the command line and runs it (see the library crate).

use std::process::ExitCode;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    match stratafs::cli::run(std::env::args_os().collect()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("stratafs: {err}");
            ExitCode::FAILURE
        }
    }
}
