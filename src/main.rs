//! The `stratafs` command: parses the command line and runs it (see the library crate).

use std::process::ExitCode;

fn main() -> ExitCode {
    match stratafs::cli::run(std::env::args_os().collect()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("stratafs: {err}");
            ExitCode::FAILURE
        }
    }
}
