//! setattr: chmod, chown, truncate, utimens. A lower object is copied up first (truncate to
//! zero copies no data).

use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use super::copy_up::Data;
use super::real::Real;
use super::Union;
use crate::sys;
use crate::sys::c;
use crate::sys::ops;
use crate::union::attr::{Attr, Kind};

/// A time to set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetTime {
    Now,
    /// Seconds and nanoseconds since the epoch (nanoseconds in 0..1e9, also before 1970).
    At(i64, i64),
}

/// What a setattr changes (None: left as it is).
#[derive(Clone, Copy, Debug, Default)]
pub struct Change {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<SetTime>,
    pub mtime: Option<SetTime>,
}

/// A time as utimensat takes it: (sec, nsec) with UTIME_OMIT / UTIME_NOW in nsec.
fn timespec(t: Option<SetTime>) -> (i64, i64) {
    match t {
        None => (0, ops::UTIME_OMIT),
        Some(SetTime::Now) => (0, ops::UTIME_NOW),
        Some(SetTime::At(sec, nsec)) => (sec, nsec),
    }
}

impl Change {
    fn touches_times(&self) -> bool {
        self.atime.is_some() || self.mtime.is_some()
    }

    fn is_empty(&self) -> bool {
        self.mode.is_none()
            && self.uid.is_none()
            && self.gid.is_none()
            && self.size.is_none()
            && !self.touches_times()
    }
}

impl Union {
    /// Changes the attributes of `ino`; `open` is the file of the handle the call came with
    /// (the object itself even when its name is gone). Returns the new attributes.
    pub fn setattr(&self, ino: u64, open: Option<&File>, change: Change) -> io::Result<Attr> {
        let node = self.node(ino)?;
        if change.is_empty() {
            return self.getattr(ino, open);
        }
        self.writable_upper()?;
        let data = match change.size {
            Some(0) => Data::None,
            Some(_) => Data::All,
            None => Data::Meta,
        };
        self.ensure_upper(&node, data)?;
        // The object is reached once, and with no walk from the upper root: by its name in
        // its directory's held fd when a name identifies it, else through one fd (three
        // setattrs per file in an untar: each walk saved counts).
        let real = self.path_real(&node);
        let by_name = open.is_none() && matches!(real, Real::Upper);
        let held = matches!(real, Real::Held(_));
        let (dir, name, opened);
        let (at, at_name): (BorrowedFd<'_>, &CStr) = match open {
            Some(file) => (file.as_fd(), c""),
            None if by_name => {
                (dir, name) = self.upper_at(&node)?;
                (dir.as_fd(), &name)
            }
            None => {
                opened = self.open_at(&node, real, c::O_PATH)?;
                (opened.as_fd(), c"")
            }
        };
        if change.uid.is_some() || change.gid.is_some() {
            let (uid, gid) = self.ownership.stored(
                change.uid.unwrap_or(u32::MAX),
                change.gid.unwrap_or(u32::MAX),
            );
            ops::chown_at(at, at_name, uid, gid)?;
        }
        if let Some(mode) = change.mode {
            if node.kind != Kind::Symlink {
                ops::chmod_nofollow(at, at_name, mode & 0o7777)?;
            }
        }
        if let Some(size) = change.size {
            let truncated = open.is_some_and(|file| ops::ftruncate(file.as_fd(), size).is_ok());
            if !truncated {
                let f = if at_name.is_empty() {
                    ops::reopen(at, c::O_WRONLY)?
                } else {
                    sys::open_beneath(at, at_name, c::O_WRONLY | c::O_NOFOLLOW, 0)?
                };
                ops::ftruncate(f.as_fd(), size)?;
            }
        }
        if change.touches_times() {
            ops::utimens_at(at, at_name, timespec(change.atime), timespec(change.mtime))?;
        }
        match open {
            Some(file) if node.is_unlinked() => Ok(Attr::from_stat(&sys::fstat(file.as_fd())?)),
            None if by_name || held => self.upper_attr_through(&node, at, at_name),
            _ => self.node_attr(&node),
        }
    }
}
