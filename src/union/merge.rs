//! Builds the merged view of one directory from the lower layers that hold it.
//!
//! Rules (kernel overlayfs and OCI, see whiteout.rs for the formats):
//! - layers are visited top first; the first layer that has a name wins it;
//! - a whiteout in layer k hides the name in layers below k, never in layer k itself;
//! - a directory name keeps merging the same-named directories of lower layers until a layer
//!   where the name is a non-directory or whited out, or the directory is opaque there;
//! - an opaque directory (xattr or `.wh..wh..opq`) hides every layer below it;
//! - a directory carrying a redirect (renamed in a layer that was once an upper dir) continues
//!   where the redirect points instead of at its own name (lowerwalk.rs, read when the
//!   directory is reached).

use std::collections::HashMap;
use std::io;
use std::os::fd::AsFd;
use std::sync::Arc;

use crate::sys;
use crate::sys::c;
use crate::union::attr::Attr;
use crate::union::inode::LowerRef;
use crate::union::layer::{relpath, Layer};
use crate::union::listing::{DirListing, PendingEntry};
use crate::union::statpool;
use crate::union::whiteout::{self, NameKind, Opacity};

enum Decision {
    /// Index into the pending list; `open` while lower dirs may still merge into it.
    Present {
        idx: usize,
        open: bool,
    },
    Hidden,
}

/// Merges the lower copies of directory `lower` (its `dir_layers`, top first). `layers` is
/// indexed by slot. A layer whose copy of the directory cannot be read is logged and skipped:
/// the merged view shows what can be read rather than failing the whole directory. Redirects
/// on the subdirectories are not read here but when one is reached (`lowerwalk::child`).
pub fn merge_lower_dir(layers: &[Layer], lower: &LowerRef) -> io::Result<DirListing> {
    let rel = &lower.rel[..];
    let sources = &lower.dir_layers[..];
    let mut pending: Vec<PendingEntry> = Vec::new();
    let mut decided: HashMap<Vec<u8>, Decision> = HashMap::new();

    for &slot in sources {
        let layer = &layers[slot as usize];
        let rel_c = relpath::to_cstring(lower.path_in(slot))?;
        let dir = match layer.open(&rel_c, c::O_RDONLY | c::O_DIRECTORY) {
            Ok(fd) => fd,
            Err(e) => {
                log::warn!(
                    "layer {}: cannot open {:?}: {e}",
                    layer.path.display(),
                    String::from_utf8_lossy(rel)
                );
                continue;
            }
        };
        let opacity = whiteout::dir_opacity(dir.as_fd());
        let raw_entries = sys::dir::read_all(dir.try_clone()?)?;
        let dir = Arc::new(dir);
        let mut whiteouts: Vec<Vec<u8>> = Vec::new();
        let mut opaque_marker = false;

        // The names this layer wins need a stat each: issued in parallel (statpool.rs).
        let to_stat: Vec<&[u8]> = raw_entries
            .iter()
            .filter(|r| {
                whiteout::classify_name(&r.name) == NameKind::Plain
                    && !decided.contains_key(&r.name)
            })
            .map(|r| r.name.as_slice())
            .collect();
        let stats = statpool::stat_many(&dir, &to_stat);
        let mut stats: HashMap<&[u8], io::Result<c::stat>> =
            to_stat.into_iter().zip(stats).collect();
        for raw in &raw_entries {
            match whiteout::classify_name(&raw.name) {
                NameKind::OpaqueMarker => opaque_marker = true,
                NameKind::Hidden => {}
                NameKind::Whiteout(target) => whiteouts.push(target.to_vec()),
                NameKind::Plain => {
                    let st = stats.remove(raw.name.as_slice());
                    merge_entry(&mut pending, &mut decided, &dir, slot, opacity, raw, st);
                }
            }
        }
        // A whiteout hides the name below this layer; an entry of this same layer stays.
        for name in whiteouts {
            match decided.get_mut(&name) {
                None => {
                    decided.insert(name, Decision::Hidden);
                }
                Some(Decision::Present { open, .. }) => *open = false,
                Some(Decision::Hidden) => {}
            }
        }
        if opacity == Opacity::Opaque || opaque_marker {
            break;
        }
    }
    Ok(DirListing::build(pending))
}

fn merge_entry(
    pending: &mut Vec<PendingEntry>,
    decided: &mut HashMap<Vec<u8>, Decision>,
    dir: &std::os::fd::OwnedFd,
    slot: u16,
    opacity: Opacity,
    raw: &sys::dir::RawEntry,
    prefetched: Option<io::Result<c::stat>>,
) {
    match decided.get_mut(&raw.name) {
        Some(Decision::Hidden) => {}
        Some(Decision::Present { idx, open }) => {
            if !*open {
                return;
            }
            // The name is a directory from a higher layer: merge this layer's directory into
            // it, or end the merge at the first non-directory.
            let is_dir = match raw.d_type {
                c::DT_DIR => true,
                c::DT_UNKNOWN => stat_entry(dir, &raw.name)
                    .map(|st| st.st_mode & c::S_IFMT == c::S_IFDIR)
                    .unwrap_or(false),
                _ => false,
            };
            if is_dir {
                pending[*idx].dir_layers.push(slot);
            } else {
                *open = false;
            }
        }
        None => {
            let st = match prefetched.unwrap_or_else(|| stat_entry(dir, &raw.name)) {
                Ok(st) => st,
                Err(e) => {
                    log::warn!("cannot stat {:?}: {e}", String::from_utf8_lossy(&raw.name));
                    return;
                }
            };
            if whiteout::is_device_whiteout(&st)
                || (opacity == Opacity::HasXattrWhiteouts && is_xattr_whiteout(dir, &raw.name, &st))
            {
                decided.insert(raw.name.clone(), Decision::Hidden);
                return;
            }
            let is_dir = st.st_mode & c::S_IFMT == c::S_IFDIR;
            pending.push(PendingEntry {
                name: raw.name.clone(),
                layer: slot,
                attr: Attr::from_stat(&st),
                dir_layers: if is_dir { vec![slot] } else { Vec::new() },
            });
            decided.insert(
                raw.name.clone(),
                Decision::Present {
                    idx: pending.len() - 1,
                    open: is_dir,
                },
            );
        }
    }
}

fn stat_entry(dir: &std::os::fd::OwnedFd, name: &[u8]) -> io::Result<c::stat> {
    sys::stat_at(dir.as_fd(), &sys::cstr(name)?)
}

fn is_xattr_whiteout(dir: &std::os::fd::OwnedFd, name: &[u8], st: &c::stat) -> bool {
    if st.st_size != 0 || st.st_mode & c::S_IFMT != c::S_IFREG {
        return false;
    }
    match sys::cstr(name)
        .and_then(|c| sys::open_beneath(dir.as_fd(), &c, c::O_PATH | c::O_NOFOLLOW, 0))
    {
        Ok(fd) => whiteout::is_xattr_whiteout(fd.as_fd(), st),
        Err(_) => false,
    }
}
