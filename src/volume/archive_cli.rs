//! `stratafs volume export | import | clone`: where the archive comes from and goes to.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, IsTerminal};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::archive::ImportMode;
use super::cli::warn_all;
use super::error::{IoContext, Result, VolumeError};
use super::store::VolumeStore;
use crate::tarball::Progress;

const IO_BUFFER: usize = 1 << 20;

pub fn export(
    store: &VolumeStore,
    name: &str,
    output: Option<&Path>,
    consistent: bool,
) -> Result<()> {
    let mut progress = Progress::on_terminal("exported");
    let Some(path) = output.filter(|p| p.as_os_str() != "-") else {
        let stdout = std::io::stdout();
        if stdout.is_terminal() {
            return Err(VolumeError::Invalid(format!(
                "refusing to write the archive of volume {name} to a terminal: pass -o FILE or pipe the output"
            )));
        }
        // A File on fd 1, not Stdout: Stdout flushes at every newline byte of the archive.
        let file = stdout
            .as_fd()
            .try_clone_to_owned()
            .map(File::from)
            .context(|| "cannot use stdout".into())?;
        let warnings = export_to(store, name, file, consistent, &mut progress, "stdout")?;
        drop(progress);
        warn_all(&warnings);
        return Ok(());
    };
    if !is_plain_file_or_missing(path) {
        // A device, FIFO or symlink (-o /dev/null, -o /dev/stdout): written through, as
        // tar -f does; a rename would replace the object itself.
        // O_TRUNC empties a regular file behind a symlink and is ignored by devices and FIFOs.
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .context(|| format!("cannot open {}", path.display()))?;
        let shown = path.display().to_string();
        let warnings = export_to(store, name, file, consistent, &mut progress, &shown)?;
        drop(progress);
        warn_all(&warnings);
        return Ok(());
    }
    // A regular file is written to a temp file next to it and renamed over it: a failed
    // export never leaves a truncated archive under the name.
    let partial = partial_name(path);
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&partial)
        .context(|| format!("cannot create {}", partial.display()))?;
    let written = (|| -> Result<Vec<String>> {
        let shown = partial.display().to_string();
        let warnings = export_to(
            store,
            name,
            file.try_clone()
                .context(|| format!("cannot write {}", partial.display()))?,
            consistent,
            &mut progress,
            &shown,
        )?;
        file.sync_all()
            .context(|| format!("cannot write {}", partial.display()))?;
        // The archive gets the mode a new file of the caller would have.
        let mode = 0o666 & !current_umask();
        std::fs::set_permissions(&partial, std::os::unix::fs::PermissionsExt::from_mode(mode))
            .and_then(|()| std::fs::rename(&partial, path))
            .context(|| format!("cannot move the archive to {}", path.display()))?;
        Ok(warnings)
    })();
    drop(progress);
    match written {
        Ok(warnings) => {
            warn_all(&warnings);
            Ok(())
        }
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            Err(e)
        }
    }
}

/// Exports through a 1 MiB buffer into `file`; returns the warnings.
fn export_to(
    store: &VolumeStore,
    name: &str,
    file: File,
    consistent: bool,
    progress: &mut Progress,
    shown: &str,
) -> Result<Vec<String>> {
    let out = BufWriter::with_capacity(IO_BUFFER, file);
    let (out, packed) = store.export(name, out, consistent, progress)?;
    out.into_inner().map_err(|e| {
        VolumeError::io(
            format!("cannot write the archive to {shown}"),
            e.into_error(),
        )
    })?;
    Ok(packed.warnings)
}

/// Whether `path` is a regular file (not a symlink to one) or nothing yet.
fn is_plain_file_or_missing(path: &Path) -> bool {
    match std::fs::symlink_metadata(path) {
        Ok(m) => m.file_type().is_file(),
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    }
}

pub fn import(
    store: &VolumeStore,
    name: &str,
    file: Option<&Path>,
    create: bool,
    replace: bool,
) -> Result<()> {
    let input = match file.filter(|p| p.as_os_str() != "-") {
        Some(path) => File::open(path).context(|| format!("cannot open {}", path.display()))?,
        None => {
            let stdin = std::io::stdin();
            if stdin.is_terminal() {
                return Err(VolumeError::Invalid(format!(
                    "no archive to import into volume {name}: pass FILE or pipe a tar stream in"
                )));
            }
            stdin
                .as_fd()
                .try_clone_to_owned()
                .map(File::from)
                .context(|| "cannot use stdin".into())?
        }
    };
    let mut progress = Progress::on_terminal("imported");
    let mode = ImportMode { create, replace };
    let extracted = store.import(
        name,
        BufReader::with_capacity(IO_BUFFER, input),
        mode,
        &mut progress,
    );
    drop(progress);
    warn_all(&extracted?.warnings);
    Ok(())
}

pub fn clone(
    store: &VolumeStore,
    src: &str,
    dst: &str,
    labels: BTreeMap<String, String>,
) -> Result<()> {
    let warnings = store.clone_volume(src, dst, labels)?;
    warn_all(&warnings);
    Ok(())
}

/// `DIR/.NAME.partial-<random>` next to `path`.
fn partial_name(path: &Path) -> PathBuf {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tag = super::name::random_hex(4).unwrap_or_else(|_| std::process::id().to_string());
    path.with_file_name(format!(".{name}.partial-{tag}"))
}

/// The process umask, read from /proc (setting it to read it would race other threads).
fn current_umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o022)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_names_sit_next_to_the_target() {
        let p = partial_name(Path::new("/backups/db.tar"));
        assert_eq!(p.parent(), Some(Path::new("/backups")));
        assert!(p
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(".db.tar.partial-"));
    }

    #[test]
    fn umask_is_read() {
        assert_eq!(current_umask() & !0o777, 0);
    }
}
