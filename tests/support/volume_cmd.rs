//! `stratafs volume ...` as the volume tests run it: the real binary on a private state dir,
//! with neither the caller's state dir nor its log level, and stdin closed.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// `stratafs volume --state-dir STATE`, ready for its arguments.
pub fn volume_command(state: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_stratafs"));
    cmd.arg("volume")
        .arg("--state-dir")
        .arg(state)
        .env_remove("STRATAFS_STATE_DIR")
        .env_remove("RUST_LOG");
    cmd
}

pub fn run<S: AsRef<OsStr>>(state: &Path, args: &[S]) -> Output {
    volume_command(state)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run stratafs")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs and expects success.
pub fn succeeds<S: AsRef<OsStr> + std::fmt::Debug>(state: &Path, args: &[S]) -> Output {
    let o = run(state, args);
    assert!(o.status.success(), "{args:?} failed: {}", stderr(&o));
    o
}

/// Runs and expects a failure with a one-line error; returns that line.
pub fn fails<S: AsRef<OsStr> + std::fmt::Debug>(state: &Path, args: &[S]) -> String {
    let o = run(state, args);
    assert!(!o.status.success(), "{args:?} should fail: {}", stdout(&o));
    let err = stderr(&o);
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "{args:?}: not one line: {err}"
    );
    assert!(err.starts_with("stratafs: "), "{err}");
    err.trim_end().to_string()
}
