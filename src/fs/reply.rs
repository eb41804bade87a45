//! What the union returns, as FUSE replies it: attributes, file kinds, and errors (the one
//! place an `io::Error` becomes an errno).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{Errno, FileAttr, FileType, INodeNo, ReplyEmpty, TimeOrNow};

use crate::union::attr::{Attr, Kind};
use crate::union::idmap::Ownership;
use crate::union::SetTime;

/// Turns a union error into the errno to reply with (its OS error code; EIO for an error
/// without one), logging the failure: the one place a failed operation is logged, at debug
/// level (`-d` shows them, next to fuser's debug line for each request).
pub trait ToErrno<T> {
    fn or_errno(self, op: &str) -> Result<T, Errno>;
}

impl<T> ToErrno<T> for std::io::Result<T> {
    fn or_errno(self, op: &str) -> Result<T, Errno> {
        self.map_err(|e| {
            let errno = Errno::from(e);
            log::debug!("{op} failed: errno {}", errno.code());
            errno
        })
    }
}

/// Replies to a request whose only answer is success or an errno.
pub fn reply_empty(reply: ReplyEmpty, result: Result<(), Errno>) {
    match result {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

pub fn file_type(kind: Kind) -> FileType {
    match kind {
        Kind::File => FileType::RegularFile,
        Kind::Dir => FileType::Directory,
        Kind::Symlink => FileType::Symlink,
        Kind::CharDevice => FileType::CharDevice,
        Kind::BlockDevice => FileType::BlockDevice,
        Kind::Fifo => FileType::NamedPipe,
        Kind::Socket => FileType::Socket,
    }
}

fn to_system_time(ns: i64) -> SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs())
    }
}

/// The attributes of node `ino` as FUSE replies them, with owners as `ownership` shows them.
pub fn file_attr(ino: u64, attr: &Attr, ownership: &Ownership) -> FileAttr {
    let (uid, gid) = ownership.shown(attr.uid, attr.gid);
    FileAttr {
        ino: INodeNo(ino),
        size: attr.size,
        blocks: attr.blocks,
        atime: to_system_time(attr.atime),
        mtime: to_system_time(attr.mtime),
        ctime: to_system_time(attr.ctime),
        crtime: to_system_time(attr.ctime),
        kind: file_type(attr.kind()),
        perm: (attr.mode & 0o7777) as u16,
        nlink: attr.nlink,
        uid,
        gid,
        rdev: attr.rdev,
        blksize: 4096,
        flags: 0,
    }
}

/// A time of a setattr request as the union takes it.
pub fn set_time(t: Option<TimeOrNow>) -> Option<SetTime> {
    match t? {
        TimeOrNow::Now => Some(SetTime::Now),
        TimeOrNow::SpecificTime(st) => Some(match st.duration_since(UNIX_EPOCH) {
            Ok(d) => SetTime::At(d.as_secs() as i64, d.subsec_nanos() as i64),
            Err(e) => {
                let d = e.duration();
                let (s, n) = (d.as_secs() as i64, d.subsec_nanos() as i64);
                if n == 0 {
                    SetTime::At(-s, 0)
                } else {
                    SetTime::At(-s - 1, 1_000_000_000 - n)
                }
            }
        }),
    }
}
