//! setattr: chmod, chown, truncate, utimens. A lower object is copied up first (truncate to
//! zero copies no data).

use std::fs::File;
use std::io;
use std::os::fd::AsFd;

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
        // The object is opened once: the change and the attributes returned both go through
        // this fd (three setattrs per file in an untar: each walk saved counts).
        let real = self.path_real(&node);
        let upper_object = matches!(real, Real::Upper | Real::Held(_));
        let opened;
        let obj = match open {
            Some(file) => file.as_fd(),
            None => {
                opened = self.open_at(&node, real, c::O_PATH)?;
                opened.as_fd()
            }
        };
        if change.uid.is_some() || change.gid.is_some() {
            let (uid, gid) = self.ownership.stored(
                change.uid.unwrap_or(u32::MAX),
                change.gid.unwrap_or(u32::MAX),
            );
            ops::chown_at(obj, c"", uid, gid)?;
        }
        if let Some(mode) = change.mode {
            if node.kind != Kind::Symlink {
                // fchmod does not work on O_PATH fds: go through the magic link.
                let path = sys::cstr(
                    format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&obj)).as_bytes(),
                )?;
                ops::chmod_at(obj, &path, mode & 0o7777)?;
            }
        }
        if let Some(size) = change.size {
            let truncated = open.is_some_and(|file| ops::ftruncate(file.as_fd(), size).is_ok());
            if !truncated {
                let f = ops::reopen(obj, c::O_WRONLY)?;
                ops::ftruncate(f.as_fd(), size)?;
            }
        }
        if change.touches_times() {
            ops::utimens_at(obj, c"", timespec(change.atime), timespec(change.mtime))?;
        }
        match open {
            Some(file) if node.is_unlinked() => Ok(Attr::from_stat(&sys::fstat(file.as_fd())?)),
            None if upper_object => self.upper_attr_through(&node, obj),
            _ => self.node_attr(&node),
        }
    }
}
