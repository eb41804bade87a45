//! Extraction of a tar stream into a directory that a hostile archive cannot leave.
//!
//! Every object is created relative to an fd of its parent directory, and every parent is
//! reached from the destination's fd with openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS): a
//! name is checked before any system call (no absolute name, no `..`, nothing over
//! PATH_MAX), a symlink the archive made earlier is never walked through, and a hard link
//! can only name an object already extracted. The final component is created with calls that
//! never follow it (mkdirat, symlinkat, mknodat, linkat, openat O_CREAT|O_EXCL).
//!
//! Directory metadata (mode, owner, times, xattrs) is applied at the end, as tar does, so a
//! read-only directory or an inherited default ACL does not change what is extracted into it.
//! Runs of zero blocks in file data are left as holes, so sparse files stay sparse.

use std::collections::HashSet;
use std::ffi::{CStr, CString};
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::rc::Rc;

use tar::{Archive, Entry, EntryType};

use super::error::{show, ArchiveError};
use super::names;
use super::progress::Progress;
use crate::sys::c;
use crate::sys::{self, ops, xattr};
use crate::union::ovl::{self, Marker};
use crate::union::whiteout;

type Result<T> = std::result::Result<T, ArchiveError>;

/// PAX record prefix of extended attributes (GNU tar, bsdtar, Go and podman agree on it).
pub const PAX_XATTR: &str = "SCHILY.xattr.";

/// What an extraction did.
#[derive(Debug, Default)]
pub struct Extracted {
    pub entries: u64,
    /// File data bytes read from the archive.
    pub bytes: u64,
    /// Things skipped or not applied (devices without privilege, refused xattrs...).
    pub warnings: Vec<String>,
}

/// What an entry says about its object besides type and data.
struct Attrs {
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: (i64, i64),
    atime: Option<(i64, i64)>,
    xattrs: Vec<(CString, Vec<u8>)>,
}

/// How the `.wh.` entries of OCI/Docker layers are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Whiteouts {
    /// As the files they are (volume archives; `layer unpack --keep-wh`).
    #[default]
    AsFiles,
    /// As kernel overlayfs reads them: `.wh.NAME` becomes a char device 0:0 named NAME,
    /// `.wh..wh..opq` the opaque marker (in this namespace) on its directory, other
    /// `.wh..wh.` names (AUFS metadata) are dropped.
    Overlay(ovl::Namespace),
}

/// Extracts the tar stream `input` into the directory `root` (best an empty one; existing
/// names are replaced as tar replaces them).
pub fn extract<R: Read>(
    input: R,
    root: BorrowedFd<'_>,
    progress: &mut Progress,
) -> Result<Extracted> {
    extract_layer(input, root, Whiteouts::AsFiles, progress)
}

/// [`extract`] with the given treatment of whiteout entries.
pub fn extract_layer<R: Read>(
    input: R,
    root: BorrowedFd<'_>,
    whiteouts: Whiteouts,
    progress: &mut Progress,
) -> Result<Extracted> {
    let mut archive = Archive::new(input);
    let mut x = Extractor {
        root,
        whiteouts,
        cached_parent: None,
        dirs: Vec::new(),
        set_owners: true,
        report: Extracted::default(),
        progress,
    };
    for entry in archive.entries().map_err(ArchiveError::Read)? {
        let mut entry = entry.map_err(ArchiveError::Read)?;
        x.entry(&mut entry)?;
    }
    x.finish_dirs()?;
    Ok(x.report)
}

struct Extractor<'a, 'p> {
    root: BorrowedFd<'a>,
    whiteouts: Whiteouts,
    /// The last parent directory opened, by path: entries of one directory come together.
    cached_parent: Option<(Vec<u8>, Rc<OwnedFd>)>,
    /// Directories whose metadata is applied at the end, by path ("" is the root).
    dirs: Vec<(Vec<u8>, Attrs)>,
    /// Cleared after the first EPERM of a chown (not root): one warning, then none.
    set_owners: bool,
    report: Extracted,
    progress: &'p mut Progress,
}

impl Extractor<'_, '_> {
    fn entry<R: Read>(&mut self, entry: &mut Entry<'_, R>) -> Result<()> {
        let kind = entry.header().entry_type();
        if kind == EntryType::XGlobalHeader {
            return Ok(());
        }
        let name = entry.path_bytes().into_owned();
        let parts = names::components(&name).map_err(|r| ArchiveError::refused(&name, r))?;
        let attrs = read_attrs(entry, &name)?;
        self.report.entries += 1;
        self.progress.file();
        let Some((leaf, parent_parts)) = parts.split_last() else {
            if kind != EntryType::Directory {
                return Err(ArchiveError::refused(
                    &name,
                    "the archive root (.) can only be a directory",
                ));
            }
            self.dirs.push((Vec::new(), attrs));
            return Ok(());
        };
        let leaf_bytes = *leaf;
        let leaf = sys::cstr(leaf).map_err(|e| ArchiveError::io(&name, "use the name", e))?;
        let parent = self.parent(&name, &names::join(parent_parts))?;
        let parent = parent.as_fd();
        if let Whiteouts::Overlay(ns) = self.whiteouts {
            if leaf_bytes.starts_with(whiteout::WH_PREFIX) {
                return self.whiteout(&name, parent, leaf_bytes, ns);
            }
        }
        match kind {
            EntryType::Directory => {
                match ops::mkdir_at(parent, &leaf, 0o700) {
                    Err(e) if errno(&e) == c::EEXIST => {
                        if !self.clear(&name, parent, &leaf, true)? {
                            ops::mkdir_at(parent, &leaf, 0o700)
                                .map_err(|e| ArchiveError::io(&name, "create the directory", e))?;
                        }
                    }
                    r => r.map_err(|e| ArchiveError::io(&name, "create the directory", e))?,
                }
                self.dirs.push((names::join(&parts), attrs));
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                let flags = c::O_WRONLY | c::O_CREAT | c::O_EXCL | c::O_NOFOLLOW;
                let file = self.create(&name, parent, &leaf, "create the file", || {
                    sys::open_beneath(parent, &leaf, flags, 0o600)
                })?;
                let bytes = write_data(entry, file.as_fd(), &name, self.progress)?;
                self.report.bytes += bytes;
                self.apply(&name, file.as_fd(), &attrs, true)?;
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| ArchiveError::refused(&name, "a symlink without a target"))?
                    .into_owned();
                names::check_symlink_target(&target)
                    .map_err(|r| ArchiveError::refused(&name, r))?;
                let target =
                    sys::cstr(&target).map_err(|e| ArchiveError::io(&name, "use the target", e))?;
                self.create(&name, parent, &leaf, "create the symlink", || {
                    ops::symlink_at(&target, parent, &leaf)
                })?;
                let link = open_object(parent, &leaf, &name)?;
                self.apply(&name, link.as_fd(), &attrs, false)?;
            }
            EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| ArchiveError::refused(&name, "a hard link without a target"))?
                    .into_owned();
                self.hard_link(&name, &parts, parent, &leaf, &target)?;
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                self.make_node(entry, &name, parent, &leaf, &attrs)?;
            }
            other => {
                return Err(ArchiveError::refused(
                    &name,
                    format!(
                        "entry type {:?} ({}) is not supported",
                        other,
                        other.as_byte() as char
                    ),
                ))
            }
        }
        Ok(())
    }

    /// A `.wh.` entry of a layer written the way kernel overlayfs reads it.
    fn whiteout(
        &mut self,
        name: &[u8],
        parent: BorrowedFd<'_>,
        leaf: &[u8],
        ns: ovl::Namespace,
    ) -> Result<()> {
        match whiteout::classify_name(leaf) {
            whiteout::NameKind::OpaqueMarker => ovl::set(parent, ns, Marker::Opaque, b"y")
                .map_err(|e| ArchiveError::io(name, "mark the directory opaque", e)),
            whiteout::NameKind::Whiteout(hidden) => {
                let hidden =
                    sys::cstr(hidden).map_err(|e| ArchiveError::io(name, "use the name", e))?;
                self.clear(name, parent, &hidden, false)?;
                ops::mknod_at(parent, &hidden, c::S_IFCHR, ops::makedev(0, 0)).map_err(|e| {
                    if errno(&e) == c::EPERM {
                        ArchiveError::refused(
                            name,
                            format!("creating the whiteout device needs CAP_MKNOD ({e}); unpack with --keep-wh to keep .wh. files instead"),
                        )
                    } else {
                        ArchiveError::io(name, "create the whiteout device", e)
                    }
                })
            }
            // AUFS metadata (.wh..wh.plnk, ...): no meaning for overlayfs.
            _ => Ok(()),
        }
    }

    /// The parent directory `path` (components joined by `/`), created as tar does when the
    /// archive does not list it, and never reached through a symlink.
    fn parent(&mut self, entry: &[u8], path: &[u8]) -> Result<Rc<OwnedFd>> {
        if let Some((cached, fd)) = &self.cached_parent {
            if cached == path {
                return Ok(fd.clone());
            }
        }
        let fd = Rc::new(self.open_dir(entry, path, true)?);
        self.cached_parent = Some((path.to_vec(), fd.clone()));
        Ok(fd)
    }

    /// Opens directory `path` under the root without following any symlink; with `create`,
    /// missing directories on the way are made. Errors say which component is in the way.
    fn open_dir(&self, entry: &[u8], path: &[u8], create: bool) -> Result<OwnedFd> {
        const DIR: i32 = c::O_PATH | c::O_DIRECTORY;
        let whole = sys::cstr(if path.is_empty() { b"." } else { path })
            .map_err(|e| ArchiveError::io(entry, "use the name", e))?;
        match sys::open_beneath(self.root, &whole, DIR, 0) {
            Ok(fd) => return Ok(fd),
            Err(e) if !matches!(errno(&e), c::ENOENT | c::ELOOP | c::ENOTDIR) => {
                return Err(ArchiveError::io(
                    entry,
                    format!("open the directory {}", show(path)),
                    e,
                ))
            }
            Err(_) => {}
        }
        // One component at a time, to create what is missing and name what is in the way.
        let mut dir = sys::open_beneath(self.root, c".", DIR, 0)
            .map_err(|e| ArchiveError::io(entry, "open the destination", e))?;
        let mut walked = Vec::new();
        for comp in path.split(|b| *b == b'/') {
            if !walked.is_empty() {
                walked.push(b'/');
            }
            walked.extend_from_slice(comp);
            let c = sys::cstr(comp).map_err(|e| ArchiveError::io(entry, "use the name", e))?;
            let mut opened = sys::open_beneath(dir.as_fd(), &c, DIR, 0);
            if create && opened.as_ref().is_err_and(|e| errno(e) == c::ENOENT) {
                match ops::mkdir_at(dir.as_fd(), &c, 0o755) {
                    Err(e) if errno(&e) != c::EEXIST => {
                        return Err(ArchiveError::io(
                            entry,
                            format!("create the directory {}", show(&walked)),
                            e,
                        ))
                    }
                    _ => opened = sys::open_beneath(dir.as_fd(), &c, DIR, 0),
                }
            }
            dir = opened.map_err(|e| match errno(&e) {
                c::ELOOP => ArchiveError::refused(
                    entry,
                    format!(
                        "{} is a symlink, and extraction never writes through a symlink",
                        show(&walked)
                    ),
                ),
                c::ENOTDIR => {
                    ArchiveError::refused(entry, format!("{} is not a directory", show(&walked)))
                }
                _ => ArchiveError::io(entry, format!("open the directory {}", show(&walked)), e),
            })?;
        }
        Ok(dir)
    }

    /// Runs `create` for the new object `leaf`; when the name is taken, makes room as tar
    /// does (see `clear`) and tries once more. Trying first saves a stat per entry.
    fn create<T>(
        &mut self,
        entry: &[u8],
        parent: BorrowedFd<'_>,
        leaf: &CStr,
        what: &str,
        mut create: impl FnMut() -> io::Result<T>,
    ) -> Result<T> {
        match create() {
            Err(e) if errno(&e) == c::EEXIST => {
                self.clear(entry, parent, leaf, false)?;
                create().map_err(|e| ArchiveError::io(entry, what, e))
            }
            r => r.map_err(|e| ArchiveError::io(entry, what, e)),
        }
    }

    /// Makes room for a new object `leaf` as tar does: an existing non-directory is removed,
    /// an existing directory is kept when a directory is wanted (Ok(true)) and removed when
    /// empty otherwise.
    fn clear(
        &mut self,
        entry: &[u8],
        parent: BorrowedFd<'_>,
        leaf: &CStr,
        dir: bool,
    ) -> Result<bool> {
        let st = match sys::stat_at(parent, leaf) {
            Ok(st) => st,
            Err(e) if errno(&e) == c::ENOENT => return Ok(false),
            Err(e) => return Err(ArchiveError::io(entry, "inspect the existing entry", e)),
        };
        let is_dir = st.st_mode & c::S_IFMT == c::S_IFDIR;
        if is_dir && dir {
            return Ok(true);
        }
        match ops::unlink_at(parent, leaf, is_dir) {
            Ok(()) => {}
            Err(e) if is_dir && matches!(errno(&e), c::ENOTEMPTY | c::EEXIST) => {
                return Err(ArchiveError::refused(
                    entry,
                    "it would replace a non-empty directory of the same name",
                ))
            }
            Err(e) => return Err(ArchiveError::io(entry, "replace the existing entry", e)),
        }
        if is_dir {
            // The removed directory may be the cached parent of later entries.
            self.cached_parent = None;
        }
        Ok(false)
    }

    /// A hard link to an object extracted earlier, named relative to the destination.
    fn hard_link(
        &mut self,
        entry: &[u8],
        parts: &[&[u8]],
        parent: BorrowedFd<'_>,
        leaf: &CStr,
        target: &[u8],
    ) -> Result<()> {
        let tparts = names::components(target)
            .map_err(|r| ArchiveError::refused(entry, format!("hard link target: {r}")))?;
        let Some((tleaf, tparent_parts)) = tparts.split_last() else {
            return Err(ArchiveError::refused(
                entry,
                "a hard link to the destination directory itself",
            ));
        };
        if tparts == parts {
            return Ok(());
        }
        let tparent = self
            .open_dir(entry, &names::join(tparent_parts), false)
            .map_err(|e| match e {
                ArchiveError::Io { source, .. } if errno(&source) == c::ENOENT => {
                    not_extracted(entry, target)
                }
                ArchiveError::Refused { reason, .. } => {
                    ArchiveError::refused(entry, format!("hard link target: {reason}"))
                }
                e => e,
            })?;
        let tleaf = sys::cstr(tleaf).map_err(|e| ArchiveError::io(entry, "use the target", e))?;
        match sys::stat_at(tparent.as_fd(), &tleaf) {
            Ok(st) if st.st_mode & c::S_IFMT == c::S_IFDIR => {
                return Err(ArchiveError::refused(entry, "a hard link to a directory"))
            }
            Ok(_) => {}
            Err(e) if errno(&e) == c::ENOENT => return Err(not_extracted(entry, target)),
            Err(e) => return Err(ArchiveError::io(entry, "inspect the hard link target", e)),
        }
        self.clear(entry, parent, leaf, false)?;
        ops::link_at(tparent.as_fd(), &tleaf, parent, leaf)
            .map_err(|e| ArchiveError::io(entry, format!("link to {}", show(target)), e))
    }

    fn make_node<R: Read>(
        &mut self,
        entry: &Entry<'_, R>,
        name: &[u8],
        parent: BorrowedFd<'_>,
        leaf: &CStr,
        attrs: &Attrs,
    ) -> Result<()> {
        let h = entry.header();
        let (kind, rdev) = match h.entry_type() {
            EntryType::Fifo => (c::S_IFIFO, 0),
            t => {
                let major = h.device_major().ok().flatten().unwrap_or(0);
                let minor = h.device_minor().ok().flatten().unwrap_or(0);
                let kind = if t == EntryType::Char {
                    c::S_IFCHR
                } else {
                    c::S_IFBLK
                };
                (kind, ops::makedev(major, minor))
            }
        };
        self.clear(name, parent, leaf, false)?;
        match ops::mknod_at(parent, leaf, kind | 0o600, rdev) {
            Ok(()) => {}
            Err(e) if errno(&e) == c::EPERM => {
                self.report.warnings.push(format!(
                    "{}: device node skipped: creating devices is not permitted here ({e})",
                    show(name)
                ));
                return Ok(());
            }
            Err(e) => return Err(ArchiveError::io(name, "create the node", e)),
        }
        let node = open_object(parent, leaf, name)?;
        self.apply(name, node.as_fd(), attrs, true)
    }

    /// Owner, xattrs, mode and times, in that order (chown clears setuid bits; an ACL xattr
    /// sets the group bits that the mode then sets again to the same value).
    fn apply(&mut self, name: &[u8], fd: BorrowedFd<'_>, a: &Attrs, chmod: bool) -> Result<()> {
        if self.set_owners {
            let (Ok(uid), Ok(gid)) = (u32::try_from(a.uid), u32::try_from(a.gid)) else {
                return Err(ArchiveError::refused(name, "owner id out of range"));
            };
            match ops::chown_at(fd, c"", uid, gid) {
                Ok(()) => {}
                Err(e) if errno(&e) == c::EPERM => {
                    self.set_owners = false;
                    self.report.warnings.push(format!(
                        "cannot set owners ({e}): extracted files keep the owner of this process"
                    ));
                }
                Err(e) => return Err(ArchiveError::io(name, "set the owner", e)),
            }
        }
        for (key, value) in &a.xattrs {
            if let Err(e) = xattr::set(fd, key, value, 0) {
                if !matches!(errno(&e), c::EPERM | c::ENOTSUP | c::EACCES) {
                    return Err(ArchiveError::io(
                        name,
                        format!("set xattr {}", key.to_string_lossy()),
                        e,
                    ));
                }
                self.report.warnings.push(format!(
                    "{}: xattr {} not set: {e}",
                    show(name),
                    key.to_string_lossy()
                ));
            }
        }
        if chmod {
            // fchmod on a file opened for writing; O_PATH fds (EBADF) through /proc.
            let mode = a.mode & 0o7777;
            match ops::fchmod(fd, mode) {
                Err(e) if errno(&e) == c::EBADF => ops::chmod_fd(fd, mode),
                r => r,
            }
            .map_err(|e| ArchiveError::io(name, "set the mode", e))?;
        }
        let atime = a.atime.unwrap_or((0, ops::UTIME_OMIT));
        ops::utimens_at(fd, c"", atime, a.mtime)
            .map_err(|e| ArchiveError::io(name, "set the times", e))
    }

    /// Applies directory metadata, the last entry for a path winning; deepest paths are
    /// reached before a parent is made read-only.
    fn finish_dirs(&mut self) -> Result<()> {
        let dirs = std::mem::take(&mut self.dirs);
        let mut done = HashSet::new();
        for (path, attrs) in dirs.iter().rev() {
            if !done.insert(path.as_slice()) {
                continue;
            }
            let fd = match self.open_dir(path, path, false) {
                Ok(fd) => fd,
                Err(ArchiveError::Io { source, .. }) if errno(&source) != c::ENOENT => {
                    return Err(ArchiveError::io(path, "open the directory", source))
                }
                Err(_) => {
                    self.report.warnings.push(format!(
                        "{}: a later entry replaced this directory; its metadata is not applied",
                        show(path)
                    ));
                    continue;
                }
            };
            self.apply(path, fd.as_fd(), attrs, true)?;
        }
        Ok(())
    }
}

fn not_extracted(entry: &[u8], target: &[u8]) -> ArchiveError {
    ArchiveError::refused(
        entry,
        format!(
            "hard link to {}, which is not extracted yet (a hard link must follow its target)",
            show(target)
        ),
    )
}

/// An O_PATH fd of the object just created as `leaf` (a symlink itself, not its target).
fn open_object(parent: BorrowedFd<'_>, leaf: &CStr, name: &[u8]) -> Result<OwnedFd> {
    sys::open_beneath(parent, leaf, c::O_PATH | c::O_NOFOLLOW, 0)
        .map_err(|e| ArchiveError::io(name, "open the new entry", e))
}

fn errno(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

/// Mode, owner, times (PAX `mtime`/`atime` with their fractions when present) and the PAX
/// `SCHILY.xattr.*` records of an entry.
fn read_attrs<R: Read>(entry: &mut Entry<'_, R>, name: &[u8]) -> Result<Attrs> {
    let bad = |what: &str, e: io::Error| {
        ArchiveError::Read(io::Error::new(
            e.kind(),
            format!("entry {:?}: bad {what} field: {e}", show(name)),
        ))
    };
    let h = entry.header();
    let mut a = Attrs {
        mode: h.mode().map_err(|e| bad("mode", e))?,
        uid: h.uid().map_err(|e| bad("uid", e))?,
        gid: h.gid().map_err(|e| bad("gid", e))?,
        mtime: (h.mtime().map_err(|e| bad("mtime", e))? as i64, 0),
        atime: None,
        xattrs: Vec::new(),
    };
    let Some(records) = entry.pax_extensions().map_err(ArchiveError::Read)? else {
        return Ok(a);
    };
    for record in records {
        let record = record.map_err(ArchiveError::Read)?;
        let key = record.key_bytes();
        let value = record.value_bytes();
        let text = std::str::from_utf8(value).unwrap_or("");
        match key {
            b"mtime" => a.mtime = parse_time(text).unwrap_or(a.mtime),
            b"atime" => a.atime = parse_time(text),
            b"uid" => a.uid = text.parse().unwrap_or(a.uid),
            b"gid" => a.gid = text.parse().unwrap_or(a.gid),
            k if k.starts_with(PAX_XATTR.as_bytes()) => {
                let xname = sys::cstr(&k[PAX_XATTR.len()..])
                    .map_err(|e| ArchiveError::io(name, "read an xattr name", e))?;
                a.xattrs.push((xname, value.to_vec()));
            }
            _ => {}
        }
    }
    Ok(a)
}

/// A PAX time (`1700000000.5`, `-12.25`) as (seconds, nanoseconds) for utimensat.
pub(super) fn parse_time(text: &str) -> Option<(i64, i64)> {
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    let secs: i64 = int.parse().ok()?;
    if frac.is_empty() {
        return Some((secs, 0));
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
    let nanos: i64 = digits.parse().ok()?;
    if int.starts_with('-') && nanos > 0 {
        Some((secs - 1, 1_000_000_000 - nanos))
    } else {
        Some((secs, nanos))
    }
}

/// Block size for hole detection: runs of zero blocks are skipped, not written.
const BLOCK: usize = 4096;

/// Copies the entry's data into `file`, leaving zero blocks as holes; returns the size.
fn write_data(
    data: &mut impl Read,
    file: BorrowedFd<'_>,
    name: &[u8],
    progress: &Progress,
) -> Result<u64> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut offset = 0u64;
    loop {
        let n = read_full(data, &mut buf).map_err(ArchiveError::Read)?;
        if n == 0 {
            break;
        }
        write_non_zero(file, &buf[..n], offset)
            .map_err(|e| ArchiveError::io(name, "write the data", e))?;
        offset += n as u64;
        progress.bytes(n as u64);
        if n < buf.len() {
            break;
        }
    }
    ops::ftruncate(file, offset).map_err(|e| ArchiveError::io(name, "set the size", e))?;
    Ok(offset)
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match r.read(&mut buf[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Writes the runs of blocks of `data` holding a non-zero byte at `offset`.
fn write_non_zero(file: BorrowedFd<'_>, data: &[u8], offset: u64) -> io::Result<()> {
    static ZEROS: [u8; BLOCK] = [0; BLOCK];
    let is_zero = |b: &[u8]| b == &ZEROS[..b.len()];
    let mut start = 0;
    while start < data.len() {
        let mut end = (start + BLOCK).min(data.len());
        if is_zero(&data[start..end]) {
            start = end;
            continue;
        }
        while end < data.len() {
            let next = (end + BLOCK).min(data.len());
            if is_zero(&data[end..next]) {
                break;
            }
            end = next;
        }
        let mut done = start;
        while done < end {
            done += ops::pwrite(file, &data[done..end], offset + done as u64)?;
        }
        start = end;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_times_parse_with_fractions() {
        assert_eq!(parse_time("1700000000"), Some((1_700_000_000, 0)));
        assert_eq!(
            parse_time("1700000000.5"),
            Some((1_700_000_000, 500_000_000))
        );
        assert_eq!(parse_time("1.000000001"), Some((1, 1)));
        assert_eq!(parse_time("-1.25"), Some((-2, 750_000_000)));
        assert_eq!(parse_time("x"), None);
        assert_eq!(parse_time("1.2e3"), None);
    }
}
