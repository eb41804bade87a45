//! `stratafs layer unpack TAR DIR`: an OCI/Docker layer tarball (plain, gzip or zstd,
//! told apart by their magic bytes) unpacked into a layer directory that stratafs and kernel
//! overlayfs both read.
//!
//! The tarball is extracted by `tarball::extract_layer` (nothing written outside, whatever it
//! holds) into `PARENT/.DIR.unpack-<random>`, held with an flock while in use, then renamed
//! to DIR once complete and synced: DIR never exists half written. Temp dirs of killed
//! unpacks are removed by the next unpack into the same parent.

use std::fs::File;
use std::io::{BufRead, BufReader, IsTerminal, Read};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::error::{ImageError, IoContext, Result};
use crate::sys::{self, ops};
use crate::tarball::{self, Progress, Whiteouts};
use crate::union::ovl::Namespace;

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];
const TEMP_TAG: &str = ".unpack-";

#[derive(clap::Args, Debug)]
pub struct LayerArgs {
    #[command(subcommand)]
    pub command: LayerCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum LayerCommand {
    /// Unpack a layer tarball (plain, gzip or zstd; `-` for stdin) into a new directory DIR.
    Unpack {
        #[arg(value_name = "TAR|-")]
        tar: PathBuf,
        dir: PathBuf,
        /// Keep `.wh.` whiteout files as they are (needs no privilege; stratafs reads them)
        /// instead of writing char 0:0 devices and opaque xattrs, as kernel overlayfs reads.
        #[arg(long)]
        keep_wh: bool,
    },
}

pub fn run(args: LayerArgs) -> Result<()> {
    match args.command {
        LayerCommand::Unpack { tar, dir, keep_wh } => unpack(&tar, &dir, keep_wh),
    }
}

fn unpack(tar: &Path, dir: &Path, keep_wh: bool) -> Result<()> {
    let input: Box<dyn Read> = if tar.as_os_str() == "-" {
        if std::io::stdin().is_terminal() {
            return Err(ImageError::NoLayerOnStdin);
        }
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(File::open(tar).context("open", tar)?)
    };
    let input = decompressed(BufReader::with_capacity(1 << 20, input)).context("read", tar)?;
    let name = dir
        .file_name()
        .filter(|n| !n.as_bytes().starts_with(b"."))
        .ok_or_else(|| ImageError::UnpackDirName(dir.to_path_buf()))?;
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if std::fs::symlink_metadata(dir).is_ok() {
        return Err(ImageError::UnpackDirExists(dir.to_path_buf()));
    }
    sweep_abandoned(&parent, &name.to_string_lossy());
    let temp = TempDir::new(&parent, &name.to_string_lossy())?;
    let root = sys::open_dir_path(temp.path()).context("open", temp.path())?;
    let whiteouts = if keep_wh {
        Whiteouts::AsFiles
    } else if writes_trusted_xattrs() {
        Whiteouts::Overlay(Namespace::Trusted)
    } else {
        Whiteouts::Overlay(Namespace::User)
    };
    let mut progress = Progress::on_terminal("unpacked");
    let extracted = tarball::extract_layer(input, root.as_fd(), whiteouts, &mut progress).map_err(
        |source| ImageError::Unpack {
            tar: tar.to_path_buf(),
            dir: dir.to_path_buf(),
            source,
        },
    )?;
    drop(progress);
    for w in &extracted.warnings {
        eprintln!("stratafs: warning: {w}");
    }
    // Complete on disk before the rename makes it visible under DIR.
    File::open(temp.path())
        .and_then(|f| ops::syncfs(f.as_fd()))
        .context("sync", temp.path())?;
    temp.publish(dir)
}

/// `input`, decompressed according to its first bytes.
pub(crate) fn decompressed<'a, R: BufRead + 'a>(
    mut input: R,
) -> std::io::Result<Box<dyn Read + 'a>> {
    let head = input.fill_buf()?;
    Ok(if head.starts_with(GZIP_MAGIC) {
        Box::new(flate2::bufread::MultiGzDecoder::new(input))
    } else if head.starts_with(ZSTD_MAGIC) {
        Box::new(zstd::stream::read::Decoder::with_buffer(input)?)
    } else {
        Box::new(input)
    })
}

/// Whether the overlay markers can go in the trusted namespace: CAP_SYS_ADMIN in the initial
/// user namespace. uid 0 is not enough: root in a user namespace (rootless podman's) cannot
/// write trusted.* xattrs and uses user.overlay.*, as kernel overlayfs with userxattr reads.
pub(crate) fn writes_trusted_xattrs() -> bool {
    crate::union::rootless::sys_admin_in_initial_userns()
}

/// `PARENT/.NAME.unpack-<random>`, flock-held while this process lives.
pub(crate) struct TempDir {
    path: PathBuf,
    _lock: File,
    published: bool,
}

impl TempDir {
    pub(crate) fn new(parent: &Path, name: &str) -> Result<TempDir> {
        let mut random = [0u8; 8];
        sys::random_bytes(&mut random).map_err(ImageError::Random)?;
        let tag: String = random.iter().map(|b| format!("{b:02x}")).collect();
        let path = parent.join(format!(".{name}{TEMP_TAG}{tag}"));
        std::fs::create_dir(&path).context("create", &path)?;
        let lock = File::open(&path)
            .and_then(|f| f.try_lock().map(|()| f).map_err(std::io::Error::other))
            .context("lock", &path);
        match lock {
            Ok(lock) => Ok(TempDir {
                path,
                _lock: lock,
                published: false,
            }),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&path);
                Err(e)
            }
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Renames the finished tree to `dir` (never over an existing one).
    pub(crate) fn publish(mut self, dir: &Path) -> Result<()> {
        let parent = sys::open_dir_path(self.path.parent().unwrap_or(Path::new(".")))
            .context("open the parent of", dir)?;
        let renamed = (|| {
            let from = sys::cstr(self.path.file_name().unwrap_or_default().as_bytes())?;
            let to = sys::cstr(dir.file_name().unwrap_or_default().as_bytes())?;
            ops::rename_at(
                parent.as_fd(),
                &from,
                parent.as_fd(),
                &to,
                ops::RENAME_NOREPLACE,
            )
        })();
        renamed.map_err(|source| ImageError::Rename {
            from: self.path.clone(),
            to: dir.to_path_buf(),
            source,
        })?;
        self.published = true;
        let _ = File::open(self.path.parent().unwrap_or(Path::new("."))).and_then(|f| f.sync_all());
        Ok(())
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !self.published {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Removes `PARENT/.NAME.unpack-*` dirs that no live unpack holds.
pub(crate) fn sweep_abandoned(parent: &Path, name: &str) {
    let prefix = format!(".{name}{TEMP_TAG}");
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if !is_dir || !entry.file_name().to_string_lossy().starts_with(&prefix) {
            continue;
        }
        if File::open(entry.path()).is_ok_and(|f| f.try_lock().is_ok()) {
            if let Err(e) = std::fs::remove_dir_all(entry.path()) {
                log::warn!("cannot remove {}: {e}", entry.path().display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn read_all(r: &mut dyn Read) -> Vec<u8> {
        let mut v = Vec::new();
        r.read_to_end(&mut v).unwrap();
        v
    }

    #[test]
    fn compression_is_told_by_magic() {
        let data = b"plain tar bytes, or anything".to_vec();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&data).unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::encode_all(&data[..], 3).unwrap();
        for input in [data.clone(), gz, zst] {
            let mut r = decompressed(std::io::Cursor::new(input)).unwrap();
            assert_eq!(read_all(&mut r), data);
        }
    }
}
