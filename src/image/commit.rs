//! `stratafs commit`: a writable layer as an OCI layer tarball.
//!
//! The tar holds what a layer applied on top of the image must hold for the container's
//! tree to come out: every object of the upper dir, whiteouts as `.wh.NAME`, opaque
//! directories with a `.wh..wh..opq` entry, a renamed directory (redirect marker) as an
//! opaque directory with its whole content (what was moved from below included; the upper
//! dir already holds the whiteout of its old name), metacopy files with their data from the
//! layer below, hard links as tar links to the first name, xattrs as PAX `SCHILY.xattr.*`
//! records without the overlay's own (ovl.rs says which).
//!
//! The bytes depend on the upper dir only: names in byte order, depth first; GNU headers with
//! mode, owner, whole-second mtime and size and nothing else (no user or group names, no
//! access or change times), xattrs in name order; whiteouts and opaque markers with fixed
//! fields. Committing the same upper twice gives the same tar, so the same digests.

use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use tar::{Builder, EntryType, Header};

use super::error::{ImageError, Result};
use super::lower::{LowerDir, LowerStack};
use super::tree::{self, Source};
use super::upper_dir::{UpperDir, UpperEntry};
use crate::sys::c;
use crate::sys::{self, xattr};
use crate::tarball::error::ArchiveError;
use crate::tarball::pack::{append_file, header_for, special_header, write_error, HardLinks};
use crate::tarball::Progress;
use crate::union::ovl;
use crate::union::whiteout::{OPAQUE_MARKER, WH_PREFIX};

/// What a commit wrote.
#[derive(Debug, Default)]
pub struct Committed {
    pub entries: u64,
    pub warnings: Vec<String>,
}

/// Writes upper dir `upper`, made over `stack`, as a layer tar to `out`.
pub fn commit<W: Write>(
    upper: &Path,
    stack: &mut LowerStack,
    out: W,
    progress: &mut Progress,
) -> Result<(W, Committed)> {
    let root = super::open_upper_root(upper)?;
    let lower_root = stack.root();
    let mut c = Committer {
        builder: Builder::new(out),
        stack,
        links: HardLinks::default(),
        report: Committed::default(),
        progress,
    };
    if root.opaque {
        c.opaque_marker(
            b"",
            &sys::fstat(root.fd.as_fd()).map_err(|e| io_error(b".", e))?,
        )?;
    }
    c.dir(b"", Some(&root), Some(&lower_root), false)?;
    c.builder.finish().map_err(|e| write_error(b"", e))?;
    let report = std::mem::take(&mut c.report);
    let out = c.builder.into_inner().map_err(ArchiveError::Write)?;
    Ok((out, report))
}

struct Committer<'s, 'p, W: Write> {
    builder: Builder<W>,
    stack: &'s mut LowerStack,
    links: HardLinks,
    report: Committed,
    progress: &'p mut Progress,
}

impl<W: Write> Committer<'_, '_, W> {
    /// Archives the new tree's directory `prefix` ("" for the root): its upper dir (if any)
    /// and, when `moved`, everything of the lower directory `source` that it shows.
    fn dir(
        &mut self,
        prefix: &[u8],
        upper: Option<&UpperDir>,
        source: Option<&LowerDir>,
        moved: bool,
    ) -> Result<()> {
        let names =
            tree::names(self.stack, upper, source, moved).map_err(|e| io_error(prefix, e))?;
        // Inside an opaque or moved directory the archive's directory is opaque: a whiteout
        // would hide nothing.
        let whiteouts_matter = !moved && !upper.is_some_and(|u| u.opaque);
        for (name, src) in names {
            let path = join(prefix, &name);
            match src {
                Source::Upper(UpperEntry::Whiteout) => {
                    if whiteouts_matter {
                        self.whiteout(prefix, &name)?;
                    }
                }
                Source::Upper(UpperEntry::Object(st)) if tree::is_dir(st.st_mode) => {
                    let upper = upper.expect("an upper entry comes from an upper dir");
                    let sub = tree::child_dir(self.stack, upper, &name, source)
                        .map_err(|e| io_error(&path, e))?;
                    self.directory(sub.upper.fd.as_fd(), &path, st)?;
                    if sub.replaces() {
                        self.opaque_marker(&path, st)?;
                    }
                    let moved = moved || sub.redirect.is_some();
                    self.dir(&path, Some(&sub.upper), sub.source.as_ref(), moved)?;
                }
                Source::Upper(UpperEntry::Object(st)) => {
                    let upper = upper.expect("an upper entry comes from an upper dir");
                    let data = tree::metacopy_data(self.stack, upper, &name, source)
                        .map_err(|e| io_error(&path, e))?;
                    let kind = st.st_mode & c::S_IFMT;
                    let flags = if kind == c::S_IFREG && data.is_none() {
                        c::O_RDONLY | c::O_NONBLOCK | c::O_NOCTTY
                    } else {
                        c::O_PATH
                    };
                    let obj = upper.open(&name, flags).map_err(|e| io_error(&path, e))?;
                    let data_fd = match &data {
                        Some(found) => Some(
                            self.stack
                                .open_data(&found.obj)
                                .map_err(|e| io_error(&path, e))?,
                        ),
                        None => None,
                    };
                    self.non_directory(obj.as_fd(), data_fd, &path, st)?;
                }
                Source::Moved(moved) => {
                    let obj = self
                        .stack
                        .open_object(&moved.obj, c::O_PATH)
                        .map_err(|e| io_error(&path, e))?;
                    let st = sys::fstat(obj.as_fd()).map_err(|e| io_error(&path, e))?;
                    if moved.is_dir() {
                        self.directory(obj.as_fd(), &path, &st)?;
                        self.dir(&path, None, Some(&moved.obj), true)?;
                    } else {
                        let data = if st.st_mode & c::S_IFMT == c::S_IFREG {
                            Some(
                                self.stack
                                    .open_data(&moved.obj)
                                    .map_err(|e| io_error(&path, e))?,
                            )
                        } else {
                            None
                        };
                        self.non_directory(obj.as_fd(), data, &path, &st)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn directory(&mut self, fd: BorrowedFd<'_>, path: &[u8], st: &c::stat) -> Result<()> {
        let mut header = header_for(st, EntryType::Directory, 0);
        self.pax_xattrs(fd, path)?;
        let mut name = path.to_vec();
        name.push(b'/');
        self.append(&mut header, &name, io::empty())
    }

    /// `obj` is the object (open for reading when a regular file holding its data);
    /// `data`, for a metacopy file, the lower file holding its data.
    fn non_directory(
        &mut self,
        obj: BorrowedFd<'_>,
        data: Option<OwnedFd>,
        path: &[u8],
        st: &c::stat,
    ) -> Result<()> {
        let kind = st.st_mode & c::S_IFMT;
        if kind == c::S_IFSOCK {
            self.report.warnings.push(format!(
                "{}: a socket cannot be stored in a layer; left out",
                show(path)
            ));
            return Ok(());
        }
        if self.links.append_if_seen(&mut self.builder, path, st)? {
            self.counted();
            return Ok(());
        }
        self.pax_xattrs(obj, path)?;
        match kind {
            c::S_IFREG => {
                let data_fd = data.as_ref().map_or(obj, |d| d.as_fd());
                let data_st = sys::fstat(data_fd).map_err(|e| io_error(path, e))?;
                let mut header = header_for(st, EntryType::Regular, data_st.st_size as u64);
                let changed = append_file(
                    &mut self.builder,
                    &mut header,
                    path,
                    data_fd,
                    &data_st,
                    self.progress,
                )?;
                if changed {
                    self.report.warnings.push(format!(
                        "{}: changed while being committed; the layer holds a mix of old and new data",
                        show(path)
                    ));
                }
                self.counted();
                Ok(())
            }
            c::S_IFLNK => {
                let target = sys::readlink_at(obj, c"").map_err(|e| io_error(path, e))?;
                let mut header = header_for(st, EntryType::Symlink, 0);
                self.builder
                    .append_link(&mut header, as_path(path), as_path(&target))
                    .map_err(|e| write_error(path, e))?;
                self.counted();
                Ok(())
            }
            _ => {
                let mut header = special_header(st).map_err(|e| io_error(path, e))?;
                self.append(&mut header, path, io::empty())
            }
        }
    }

    /// `.wh.NAME` in directory `prefix`: an empty file with fixed fields.
    fn whiteout(&mut self, prefix: &[u8], name: &[u8]) -> Result<()> {
        let mut marker = WH_PREFIX.to_vec();
        marker.extend_from_slice(name);
        let mut header = fixed_header(0o600, 0, 0);
        self.append(&mut header, &join(prefix, &marker), io::empty())
    }

    /// `DIR/.wh..wh..opq`: an empty file with the directory's permissions and owner.
    fn opaque_marker(&mut self, dir: &[u8], st: &c::stat) -> Result<()> {
        let mut header = fixed_header(st.st_mode & 0o777, st.st_uid, st.st_gid);
        self.append(&mut header, &join(dir, OPAQUE_MARKER), io::empty())
    }

    fn append(&mut self, header: &mut Header, path: &[u8], data: impl io::Read) -> Result<()> {
        self.builder
            .append_data(header, as_path(path), data)
            .map_err(|e| write_error(path, e))?;
        self.counted();
        Ok(())
    }

    /// The object's xattrs as PAX records, in name order, without the overlay's markers
    /// (escaped user attributes get their own names back).
    fn pax_xattrs(&mut self, fd: BorrowedFd<'_>, path: &[u8]) -> Result<()> {
        let mut records: Vec<(String, Vec<u8>)> = Vec::new();
        let names = xattr::list(fd).map_err(|e| io_error(path, e))?;
        for stored in names {
            let Some(visible) = ovl::visible_name(&stored) else {
                continue;
            };
            let Ok(text) = std::str::from_utf8(&visible) else {
                return Err(ImageError::XattrName {
                    path: show(path),
                    name: String::from_utf8_lossy(&visible).into_owned(),
                });
            };
            let key = sys::cstr(&stored).map_err(|e| io_error(path, e))?;
            if let Some(value) = xattr::get(fd, &key).map_err(|e| io_error(path, e))? {
                records.push((
                    format!("{}{text}", crate::tarball::extract::PAX_XATTR),
                    value,
                ));
            }
        }
        if records.is_empty() {
            return Ok(());
        }
        records.sort();
        let pairs = records.iter().map(|(k, v)| (k.as_str(), v.as_slice()));
        self.builder
            .append_pax_extensions(pairs)
            .map_err(|e| write_error(path, e))?;
        Ok(())
    }

    fn counted(&mut self) {
        self.report.entries += 1;
        self.progress.file();
    }
}

/// A header for the entries made up by the commit (whiteouts, opaque markers): a regular
/// empty file, time 0.
fn fixed_header(mode: u32, uid: u32, gid: u32) -> Header {
    let mut h = Header::new_gnu();
    h.set_entry_type(EntryType::Regular);
    h.set_mode(mode);
    h.set_uid(u64::from(uid));
    h.set_gid(u64::from(gid));
    h.set_mtime(0);
    h.set_size(0);
    h
}

fn join(prefix: &[u8], name: &[u8]) -> Vec<u8> {
    if prefix.is_empty() {
        return name.to_vec();
    }
    let mut p = prefix.to_vec();
    p.push(b'/');
    p.extend_from_slice(name);
    p
}

fn as_path(bytes: &[u8]) -> &Path {
    use std::os::unix::ffi::OsStrExt;
    Path::new(std::ffi::OsStr::from_bytes(bytes))
}

fn show(path: &[u8]) -> String {
    crate::tarball::error::show(path)
}

fn io_error(path: &[u8], source: io::Error) -> ImageError {
    ImageError::Entry {
        path: show(path),
        source,
    }
}
