//! One directory of a writable layer read as the union sees it, in every on-disk format an
//! upper dir holds: whiteouts as char 0:0 devices (often hard links of one shared whiteout),
//! as zero-size files with the whiteout marker in an opaque=x directory, or as `.wh.NAME`
//! files (rootless fuse-overlayfs); opaque directories by marker or `.wh..wh..opq`;
//! redirects of renamed directories and metacopy files (marker names: ovl.rs).

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use crate::sys;
use crate::sys::c;
use crate::union::ovl::{self, Marker};
use crate::union::whiteout::{self, NameKind, Opacity};

/// What a name of the upper directory stands for.
pub enum UpperEntry {
    /// The name is deleted: it hides whatever the layers below have under it.
    Whiteout,
    /// An object of the writable layer.
    Object(c::stat),
}

pub struct UpperDir {
    pub fd: OwnedFd,
    /// The directory hides everything the layers below have under its path.
    pub opaque: bool,
    /// Sorted by name.
    pub entries: Vec<(Vec<u8>, UpperEntry)>,
}

impl UpperDir {
    /// Reads the directory open at `fd` (O_RDONLY | O_DIRECTORY).
    pub fn read(fd: OwnedFd) -> io::Result<UpperDir> {
        let opacity = whiteout::dir_opacity(fd.as_fd());
        let mut opaque = opacity == Opacity::Opaque;
        let mut whiteouts = Vec::new();
        let mut objects = Vec::new();
        for raw in sys::dir::read_all(fd.try_clone()?)? {
            match whiteout::classify_name(&raw.name) {
                NameKind::OpaqueMarker => opaque = true,
                NameKind::Hidden => {}
                NameKind::Whiteout(target) => whiteouts.push(target.to_vec()),
                NameKind::Plain => {
                    let st = sys::stat_at(fd.as_fd(), &sys::cstr(&raw.name)?)?;
                    let is_whiteout = whiteout::is_device_whiteout(&st)
                        || (opacity == Opacity::HasXattrWhiteouts
                            && open_path(fd.as_fd(), &raw.name)
                                .is_ok_and(|o| whiteout::is_xattr_whiteout(o.as_fd(), &st)));
                    if is_whiteout {
                        whiteouts.push(raw.name);
                    } else {
                        objects.push((raw.name, st));
                    }
                }
            }
        }
        let mut entries: Vec<(Vec<u8>, UpperEntry)> = Vec::new();
        // A `.wh.NAME` file and an object NAME side by side: the whiteout wins, as in lookups.
        objects.retain(|(name, _)| !whiteouts.contains(name));
        entries.extend(whiteouts.into_iter().map(|n| (n, UpperEntry::Whiteout)));
        entries.extend(
            objects
                .into_iter()
                .map(|(n, st)| (n, UpperEntry::Object(st))),
        );
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        entries.dedup_by(|a, b| a.0 == b.0);
        Ok(UpperDir {
            fd,
            opaque,
            entries,
        })
    }

    /// Opens the subdirectory `name`.
    pub fn subdir(&self, name: &[u8]) -> io::Result<UpperDir> {
        let fd = sys::open_beneath(
            self.fd.as_fd(),
            &sys::cstr(name)?,
            c::O_RDONLY | c::O_DIRECTORY | c::O_NOFOLLOW,
            0,
        )?;
        UpperDir::read(fd)
    }

    /// Opens object `name` with `flags`, never following a symlink.
    pub fn open(&self, name: &[u8], flags: i32) -> io::Result<OwnedFd> {
        sys::open_beneath(self.fd.as_fd(), &sys::cstr(name)?, flags | c::O_NOFOLLOW, 0)
    }

    /// The redirect marker of object `name` (a renamed directory or metacopy file).
    pub fn redirect(&self, name: &[u8]) -> io::Result<Option<Vec<u8>>> {
        Ok(ovl::get(
            open_path(self.fd.as_fd(), name)?.as_fd(),
            Marker::Redirect,
        ))
    }

    /// Object `name` holds metadata only; its data is the lower file's.
    pub fn is_metacopy(&self, name: &[u8]) -> io::Result<bool> {
        Ok(ovl::is_metacopy(open_path(self.fd.as_fd(), name)?.as_fd()))
    }
}

fn open_path(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<OwnedFd> {
    sys::open_beneath(dir, &sys::cstr(name)?, c::O_PATH | c::O_NOFOLLOW, 0)
}
