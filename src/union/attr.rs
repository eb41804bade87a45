//! The compact stat kept in the index for every lower entry, and the file kinds of the union.

use crate::sys::c;

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

impl Attr {
    pub fn from_stat(st: &c::stat) -> Attr {
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

    pub fn kind(&self) -> Kind {
        kind_of_mode(self.mode)
    }
}

/// The kind of an object, as the file type bits of its mode tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    CharDevice,
    BlockDevice,
    Fifo,
    Socket,
}

pub fn kind_of_mode(mode: u32) -> Kind {
    match mode & c::S_IFMT {
        c::S_IFDIR => Kind::Dir,
        c::S_IFLNK => Kind::Symlink,
        c::S_IFCHR => Kind::CharDevice,
        c::S_IFBLK => Kind::BlockDevice,
        c::S_IFIFO => Kind::Fifo,
        c::S_IFSOCK => Kind::Socket,
        _ => Kind::File,
    }
}
