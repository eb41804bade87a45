//! Writing a directory tree as a tar stream, in bounded memory.
//!
//! The archive is what `tar -C DIR -cf - .` and `podman volume export` write: a `./` entry
//! for the directory itself, then relative names in sorted order, with owners, modes, times
//! (PAX `mtime` when there are nanoseconds), xattrs as PAX `SCHILY.xattr.*` records (POSIX
//! ACLs included, as their `system.posix_acl_*` xattrs), hard links as link entries to the
//! first name, symlinks and device nodes. File data is streamed through a 1 MiB buffer;
//! holes are found with SEEK_DATA/SEEK_HOLE and written as zeros without being read (the
//! formats podman reads have no sparse entries, so holes are zeros in the archive and an
//! import makes them holes again).
//!
//! The tree is walked with fds relative to the root, never following a symlink. Objects that
//! vanish or change size while they are read (a live volume) are reported as warnings; the
//! archive stays well formed (a shrunk file is padded with zeros to its header size).

use std::collections::HashMap;
use std::ffi::{CStr, OsStr};
use std::io::{self, BufReader, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use tar::{Builder, EntryType, Header};

use super::error::{show, ArchiveError};
use super::extract::PAX_XATTR;
use super::progress::Progress;
use crate::sys::c;
use crate::sys::{self, ops, xattr};

type Result<T> = std::result::Result<T, ArchiveError>;

/// What an export wrote.
#[derive(Debug, Default)]
pub struct Packed {
    pub entries: u64,
    /// File data bytes written (holes included).
    pub bytes: u64,
    pub warnings: Vec<String>,
}

/// Writes the directory `root` (any fd of it, O_PATH is enough) as a tar stream to `out`,
/// returning `out` once the archive is complete.
pub fn pack<W: Write>(
    root: BorrowedFd<'_>,
    out: W,
    progress: &mut Progress,
) -> Result<(W, Packed)> {
    let mut p = Packer {
        builder: Builder::new(out),
        links: HardLinks::default(),
        report: Packed::default(),
        progress,
    };
    let st = sys::fstat(root).map_err(|e| ArchiveError::io(b"", "stat the directory", e))?;
    p.directory(root, b"", &st)?;
    p.walk(root, b"")?;
    p.builder.finish().map_err(ArchiveError::Write)?;
    let report = std::mem::take(&mut p.report);
    let out = p.builder.into_inner().map_err(ArchiveError::Write)?;
    Ok((out, report))
}

struct Packer<'p, W: Write> {
    builder: Builder<W>,
    links: HardLinks,
    report: Packed,
    progress: &'p mut Progress,
}

impl<W: Write> Packer<'_, W> {
    /// Archives the entries of directory `dir`, whose archive name is `prefix` ("" for the root).
    fn walk(&mut self, dir: BorrowedFd<'_>, prefix: &[u8]) -> Result<()> {
        let listing = sys::open_beneath(dir, c".", c::O_RDONLY | c::O_DIRECTORY, 0)
            .and_then(sys::dir::read_all);
        let mut entries = match listing {
            Ok(entries) => entries,
            Err(e) if e.raw_os_error() == Some(c::ENOENT) => {
                self.vanished(prefix);
                return Ok(());
            }
            Err(e) => return Err(ArchiveError::io(prefix, "read the directory", e)),
        };
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        for entry in entries {
            let mut path = prefix.to_vec();
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(&entry.name);
            let leaf =
                sys::cstr(&entry.name).map_err(|e| ArchiveError::io(&path, "use the name", e))?;
            let st = match sys::stat_at(dir, &leaf) {
                Ok(st) => st,
                Err(e) if e.raw_os_error() == Some(c::ENOENT) => {
                    self.vanished(&path);
                    continue;
                }
                Err(e) => return Err(ArchiveError::io(&path, "stat", e)),
            };
            match st.st_mode & c::S_IFMT {
                c::S_IFDIR => {
                    let sub = match sys::open_beneath(dir, &leaf, c::O_PATH | c::O_DIRECTORY, 0) {
                        Ok(fd) => fd,
                        Err(e)
                            if matches!(
                                e.raw_os_error(),
                                Some(c::ENOENT | c::ENOTDIR | c::ELOOP)
                            ) =>
                        {
                            self.vanished(&path);
                            continue;
                        }
                        Err(e) => return Err(ArchiveError::io(&path, "open the directory", e)),
                    };
                    self.directory(sub.as_fd(), &path, &st)?;
                    self.walk(sub.as_fd(), &path)?;
                }
                c::S_IFSOCK => self.report.warnings.push(format!(
                    "{}: a socket cannot be archived; skipped",
                    show(&path)
                )),
                _ => self.non_directory(dir, &leaf, &path, &st)?,
            }
        }
        Ok(())
    }

    fn vanished(&mut self, path: &[u8]) {
        self.report.warnings.push(format!(
            "{}: removed while being exported; not in the archive",
            show(path)
        ));
    }

    fn directory(&mut self, fd: BorrowedFd<'_>, path: &[u8], st: &c::stat) -> Result<()> {
        let mut name = if path.is_empty() {
            b".".to_vec()
        } else {
            path.to_vec()
        };
        name.push(b'/');
        let mut header = header_for(st, EntryType::Directory, 0);
        self.pax_records(fd, path, st)?;
        self.builder
            .append_data(&mut header, as_path(&name), io::empty())
            .map_err(|e| self.write_error(path, e))?;
        self.counted(0);
        Ok(())
    }

    fn non_directory(
        &mut self,
        dir: BorrowedFd<'_>,
        leaf: &CStr,
        path: &[u8],
        st: &c::stat,
    ) -> Result<()> {
        let kind = st.st_mode & c::S_IFMT;
        if self.links.append_if_seen(&mut self.builder, path, st)? {
            self.counted(0);
            return Ok(());
        }
        let flags = if kind == c::S_IFREG {
            // O_NONBLOCK: should the name have become a FIFO since the stat, do not hang on it.
            c::O_RDONLY | c::O_NOFOLLOW | c::O_NONBLOCK | c::O_NOCTTY
        } else {
            c::O_PATH | c::O_NOFOLLOW
        };
        let obj = match sys::open_beneath(dir, leaf, flags, 0) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(c::ENOENT) => {
                self.vanished(path);
                return Ok(());
            }
            Err(e) => return Err(ArchiveError::io(path, "open", e)),
        };
        self.pax_records(obj.as_fd(), path, st)?;
        match kind {
            c::S_IFREG => self.file(obj, path, st),
            c::S_IFLNK => {
                let target = sys::readlink_at(obj.as_fd(), c"")
                    .map_err(|e| ArchiveError::io(path, "read the symlink", e))?;
                let mut header = header_for(st, EntryType::Symlink, 0);
                self.builder
                    .append_link(&mut header, as_path(path), as_path(&target))
                    .map_err(|e| self.write_error(path, e))?;
                self.counted(0);
                Ok(())
            }
            _ => {
                let mut header = special_header(st)
                    .map_err(|e| ArchiveError::io(path, "record the device number", e))?;
                self.builder
                    .append_data(&mut header, as_path(path), io::empty())
                    .map_err(|e| self.write_error(path, e))?;
                self.counted(0);
                Ok(())
            }
        }
    }

    fn file(&mut self, fd: OwnedFd, path: &[u8], st: &c::stat) -> Result<()> {
        let size = st.st_size as u64;
        let mut header = header_for(st, EntryType::Regular, size);
        let changed = append_file(
            &mut self.builder,
            &mut header,
            path,
            fd.as_fd(),
            st,
            self.progress,
        )?;
        if changed {
            self.report.warnings.push(format!(
                "{}: changed while being exported; the archive holds a mix of old and new data",
                show(path)
            ));
        }
        self.counted(size);
        Ok(())
    }

    /// The PAX records of an object: xattrs, and times beyond what the header holds.
    fn pax_records(&mut self, fd: BorrowedFd<'_>, path: &[u8], st: &c::stat) -> Result<()> {
        let mut records: Vec<(String, Vec<u8>)> = Vec::new();
        if st.st_mtime_nsec != 0 || st.st_mtime < 0 {
            records.push((
                "mtime".into(),
                pax_time(st.st_mtime, st.st_mtime_nsec).into_bytes(),
            ));
        }
        let names = xattr::list(fd).map_err(|e| ArchiveError::io(path, "list xattrs", e))?;
        for name in names {
            let Ok(text) = std::str::from_utf8(&name) else {
                self.report.warnings.push(format!(
                    "{}: xattr {:?} has a name that is not UTF-8; not archived",
                    show(path),
                    String::from_utf8_lossy(&name)
                ));
                continue;
            };
            let key = sys::cstr(&name).map_err(|e| ArchiveError::io(path, "read xattrs", e))?;
            match xattr::get(fd, &key) {
                Ok(Some(value)) => records.push((format!("{PAX_XATTR}{text}"), value)),
                Ok(None) => {}
                Err(e) => return Err(ArchiveError::io(path, format!("read xattr {text}"), e)),
            }
        }
        if records.is_empty() {
            return Ok(());
        }
        let pairs = records.iter().map(|(k, v)| (k.as_str(), v.as_slice()));
        self.builder
            .append_pax_extensions(pairs)
            .map_err(|e| self.write_error(path, e))
    }

    fn counted(&mut self, bytes: u64) {
        self.report.entries += 1;
        self.report.bytes += bytes;
        self.progress.file();
    }

    fn write_error(&self, path: &[u8], e: io::Error) -> ArchiveError {
        write_error(path, e)
    }
}

/// The archive name of the first link of each multiply linked inode, by (dev, ino): its
/// other names go in as hard links to it.
#[derive(Default)]
pub(crate) struct HardLinks(HashMap<(u64, u64), Vec<u8>>);

impl HardLinks {
    /// Appends `path` (stat'ed as `st`) as a hard link when another name of its inode is in
    /// the archive already (true); otherwise remembers `path` as that inode's first name
    /// when it has other links (false: the caller appends the object itself).
    pub(crate) fn append_if_seen<W: Write>(
        &mut self,
        builder: &mut Builder<W>,
        path: &[u8],
        st: &c::stat,
    ) -> Result<bool> {
        if st.st_nlink <= 1 {
            return Ok(false);
        }
        let inode = (st.st_dev, st.st_ino);
        let Some(first) = self.0.get(&inode) else {
            self.0.insert(inode, path.to_vec());
            return Ok(false);
        };
        let mut header = header_for(st, EntryType::Link, 0);
        builder
            .append_link(&mut header, as_path(path), as_path(first))
            .map_err(|e| write_error(path, e))?;
        Ok(true)
    }
}

/// A failure of the builder: a bad name or field is the entry's, anything else the output's.
pub(crate) fn write_error(path: &[u8], e: io::Error) -> ArchiveError {
    if e.kind() == io::ErrorKind::Other && e.raw_os_error().is_none() {
        ArchiveError::refused(path, format!("it cannot be written in a tar header: {e}"))
    } else {
        ArchiveError::Write(e)
    }
}

/// Appends regular file `fd` (stat'ed as `st`) as entry `path` under `header`, whose size
/// says how many bytes to write: holes come out as zeros without being read, a file that
/// shrank is padded. Returns whether the file changed while it was read.
pub(crate) fn append_file<W: Write>(
    builder: &mut Builder<W>,
    header: &mut Header,
    path: &[u8],
    fd: BorrowedFd<'_>,
    st: &c::stat,
    progress: &Progress,
) -> Result<bool> {
    let size = header.size().unwrap_or(0);
    let mut stream = FileStream::new(fd, size, progress);
    if (st.st_blocks as u64) * 512 >= size {
        // Fully allocated: no holes to look for.
        stream.data_until = size;
    }
    let result = builder.append_data(
        header,
        as_path(path),
        BufReader::with_capacity(read_buffer_size(size), &mut stream),
    );
    let failed = stream.read_error.take();
    let shrank = stream.shrank;
    match (result, failed) {
        (_, Some(e)) => return Err(ArchiveError::io(path, "read the file", e)),
        (Err(e), None) => return Err(write_error(path, e)),
        (Ok(()), None) => {}
    }
    let after = sys::fstat(fd).ok();
    let changed = after.is_some_and(|a| {
        a.st_size != st.st_size || (a.st_mtime, a.st_mtime_nsec) != (st.st_mtime, st.st_mtime_nsec)
    });
    Ok(shrank || changed)
}

/// Read buffer for a file: its size (a small file gets a small allocation, which malloc
/// serves from its arena), up to 1 MiB for large ones.
fn read_buffer_size(size: u64) -> usize {
    size.clamp(512, 1 << 20) as usize
}

fn as_path(bytes: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(bytes))
}

/// The header of a device node or fifo (any type but directory, file and symlink), with the
/// device number for devices.
pub(crate) fn special_header(st: &c::stat) -> io::Result<Header> {
    let kind = st.st_mode & c::S_IFMT;
    let entry_type = match kind {
        c::S_IFCHR => EntryType::Char,
        c::S_IFBLK => EntryType::Block,
        _ => EntryType::Fifo,
    };
    let mut header = header_for(st, entry_type, 0);
    if kind != c::S_IFIFO {
        let (major, minor) = ops::dev_parts(st.st_rdev);
        header.set_device_major(major)?;
        header.set_device_minor(minor)?;
    }
    Ok(header)
}

pub(crate) fn header_for(st: &c::stat, kind: EntryType, size: u64) -> Header {
    let mut h = Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(st.st_mode & 0o7777);
    h.set_uid(u64::from(st.st_uid));
    h.set_gid(u64::from(st.st_gid));
    h.set_mtime(st.st_mtime.max(0) as u64);
    h.set_size(size);
    h
}

/// A PAX time value: seconds and the nanoseconds as a fraction (`-1.25` for 1.25 s before 1970).
fn pax_time(secs: i64, nanos: i64) -> String {
    if nanos == 0 {
        return secs.to_string();
    }
    // (secs, nanos) means secs + nanos/1e9; a negative time is written as -(whole.fraction).
    let (sign, whole, frac) = if secs < 0 {
        ("-", -(secs + 1), 1_000_000_000 - nanos)
    } else {
        ("", secs, nanos)
    };
    let frac = format!("{frac:09}");
    format!("{sign}{whole}.{}", frac.trim_end_matches('0'))
}

/// Exactly `size` bytes of a file: holes come out as zeros without being read, and a file
/// that shrank while read is padded with zeros (and flagged) so the header stays true.
struct FileStream<'a, 'p> {
    fd: BorrowedFd<'a>,
    pos: u64,
    size: u64,
    /// Zeros up to here (a hole).
    zeros_until: u64,
    /// Data up to here (the current data extent).
    data_until: u64,
    shrank: bool,
    read_error: Option<io::Error>,
    progress: &'p Progress,
}

impl<'a, 'p> FileStream<'a, 'p> {
    fn new(fd: BorrowedFd<'a>, size: u64, progress: &'p Progress) -> Self {
        FileStream {
            fd,
            pos: 0,
            size,
            zeros_until: 0,
            data_until: 0,
            shrank: false,
            read_error: None,
            progress,
        }
    }

    /// Finds whether `pos` lies in a hole or in data, and where that run ends.
    fn locate(&mut self) {
        let pos = self.pos as i64;
        match ops::lseek(self.fd, pos, c::SEEK_DATA) {
            Ok(data) if data as u64 > self.pos => self.zeros_until = (data as u64).min(self.size),
            // No data after pos: the rest is a hole (or the file shrank).
            Err(e) if e.raw_os_error() == Some(c::ENXIO) => self.zeros_until = self.size,
            _ => {
                let hole = ops::lseek(self.fd, pos, c::SEEK_HOLE).map_or(self.size, |h| h as u64);
                self.data_until = hole.clamp(self.pos + 1, self.size);
            }
        }
    }
}

impl Read for FileStream<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.size || buf.is_empty() {
            return Ok(0);
        }
        if self.pos >= self.zeros_until && self.pos >= self.data_until {
            self.locate();
        }
        let left = (self.size - self.pos).min(buf.len() as u64);
        let n = if self.pos < self.zeros_until {
            let n = (self.zeros_until - self.pos).min(left) as usize;
            buf[..n].fill(0);
            n
        } else {
            let want = (self.data_until - self.pos).min(left) as usize;
            match sys::pread(self.fd, &mut buf[..want], self.pos) {
                Ok(0) => {
                    self.shrank = true;
                    self.zeros_until = self.size;
                    return self.read(buf);
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => return self.read(buf),
                Err(e) => {
                    // Kept apart so the error names the file, not the output.
                    let msg = e.to_string();
                    self.read_error = Some(e);
                    return Err(io::Error::other(msg));
                }
            }
        };
        self.pos += n as u64;
        self.progress.bytes(n as u64);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_times_round_trip() {
        assert_eq!(pax_time(1_700_000_000, 0), "1700000000");
        assert_eq!(pax_time(1_700_000_000, 500_000_000), "1700000000.5");
        assert_eq!(pax_time(1, 1), "1.000000001");
        assert_eq!(pax_time(-2, 750_000_000), "-1.25");
        assert_eq!(pax_time(-1, 500_000_000), "-0.5");
        for (secs, nanos) in [(-2, 750_000_000), (-1, 500_000_000), (5, 1)] {
            let text = pax_time(secs, nanos);
            assert_eq!(
                super::super::extract::parse_time(&text),
                Some((secs, nanos)),
                "{text}"
            );
        }
    }
}
