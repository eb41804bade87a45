//! The compact stat kept in the index for every lower entry, and its conversion to FUSE attrs.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{FileAttr, FileType, INodeNo};

/// What getattr needs, packed: 68 bytes instead of 144 for `struct stat`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Attr {
    pub host_ino: u64,
    pub size: u64,
    pub blocks: u64,
    /// Times as nanoseconds since the epoch (covers years 1678..2262).
    pub atime: i64,
    pub mtime: i64,
    pub ctime: i64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub rdev: u32,
}

fn nanos(sec: i64, nsec: i64) -> i64 {
    sec.saturating_mul(1_000_000_000).saturating_add(nsec)
}

fn to_system_time(ns: i64) -> SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs())
    }
}

impl Attr {
    pub fn from_stat(st: &libc::stat) -> Attr {
        Attr {
            host_ino: st.st_ino,
            size: st.st_size as u64,
            blocks: st.st_blocks as u64,
            atime: nanos(st.st_atime, st.st_atime_nsec),
            mtime: nanos(st.st_mtime, st.st_mtime_nsec),
            ctime: nanos(st.st_ctime, st.st_ctime_nsec),
            mode: st.st_mode,
            uid: st.st_uid,
            gid: st.st_gid,
            nlink: st.st_nlink as u32,
            rdev: st.st_rdev as u32,
        }
    }

    pub fn kind(&self) -> FileType {
        kind_of_mode(self.mode)
    }

    /// The attrs shown for inode `ino`, with owners as `ownership` shows them.
    pub fn to_file_attr(self, ino: u64, ownership: &crate::idmap::Ownership) -> FileAttr {
        let (uid, gid) = ownership.shown(self.uid, self.gid);
        FileAttr {
            ino: INodeNo(ino),
            size: self.size,
            blocks: self.blocks,
            atime: to_system_time(self.atime),
            mtime: to_system_time(self.mtime),
            ctime: to_system_time(self.ctime),
            crtime: to_system_time(self.ctime),
            kind: self.kind(),
            perm: (self.mode & 0o7777) as u16,
            nlink: self.nlink,
            uid,
            gid,
            rdev: self.rdev,
            blksize: 4096,
            flags: 0,
        }
    }
}

pub fn kind_of_mode(mode: u32) -> FileType {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFSOCK => FileType::Socket,
        _ => FileType::RegularFile,
    }
}
