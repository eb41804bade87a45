//! Every modifying request on a mount without a writable layer fails with EROFS.

macro_rules! deny_writes {
    () => {
        fn setattr(
            &self,
            _req: &fuser::Request,
            _ino: fuser::INodeNo,
            _mode: Option<u32>,
            _uid: Option<u32>,
            _gid: Option<u32>,
            _size: Option<u64>,
            _atime: Option<fuser::TimeOrNow>,
            _mtime: Option<fuser::TimeOrNow>,
            _ctime: Option<std::time::SystemTime>,
            _fh: Option<fuser::FileHandle>,
            _crtime: Option<std::time::SystemTime>,
            _chgtime: Option<std::time::SystemTime>,
            _bkuptime: Option<std::time::SystemTime>,
            _flags: Option<fuser::BsdFileFlags>,
            reply: fuser::ReplyAttr,
        ) {
            reply.error(fuser::Errno::EROFS)
        }
        fn mknod(
            &self,
            _r: &fuser::Request,
            _p: fuser::INodeNo,
            _n: &std::ffi::OsStr,
            _m: u32,
            _u: u32,
            _d: u32,
            reply: fuser::ReplyEntry,
        ) {
            reply.error(fuser::Errno::EROFS)
        }
        fn mkdir(
            &self,
            _r: &fuser::Request,
            _p: fuser::INodeNo,
            _n: &std::ffi::OsStr,
            _m: u32,
            _u: u32,
            reply: fuser::ReplyEntry,
        ) {
            reply.error(fuser::Errno::EROFS)
        }
        fn unlink(
            &self,
            _r: &fuser::Request,
            _p: fuser::INodeNo,
            _n: &std::ffi::OsStr,
            reply: fuser::ReplyEmpty,
        ) {
            reply.error(fuser::Errno::EROFS)
        }
        fn rmdir(
            &self,
            _r: &fuser::Request,
            _p: fuser::INodeNo,
            _n: &std::ffi::OsStr,
            reply: fuser::ReplyEmpty,
        ) {
            reply.error(fuser::Errno::EROFS)
        }
        fn symlink(
            &self,
            _r: &fuser::Request,
            _p: fuser::INodeNo,
            _n: &std::ffi::OsStr,
            _t: &std::path::Path,
            reply: fuser::ReplyEntry,
        ) {
            reply.error(fuser::Errno::EROFS)
        }
        fn rename(
            &self,
            _r: &fuser::Request,
            _p: fuser::INodeNo,
            _n: &std::ffi::OsStr,
            _np: fuser::INodeNo,
            _nn: &std::ffi::OsStr,
            _f: fuser::RenameFlags,
            reply: fuser::ReplyEmpty,
        ) {
            reply.error(fuser::Errno::EROFS)
        }
        fn link(
            &self,
            _r: &fuser::Request,
            _i: fuser::INodeNo,
            _np: fuser::INodeNo,
            _nn: &std::ffi::OsStr,
            reply: fuser::ReplyEntry,
        ) {
            reply.error(fuser::Errno::EROFS)
        }
        fn create(
            &self,
            _r: &fuser::Request,
            _p: fuser::INodeNo,
            _n: &std::ffi::OsStr,
            _m: u32,
            _u: u32,
            _f: i32,
            reply: fuser::ReplyCreate,
        ) {
            reply.error(fuser::Errno::EROFS)
        }
        fn setxattr(
            &self,
            _r: &fuser::Request,
            _i: fuser::INodeNo,
            _n: &std::ffi::OsStr,
            _v: &[u8],
            _f: i32,
            _p: u32,
            reply: fuser::ReplyEmpty,
        ) {
            reply.error(fuser::Errno::EROFS)
        }
        fn removexattr(
            &self,
            _r: &fuser::Request,
            _i: fuser::INodeNo,
            _n: &std::ffi::OsStr,
            reply: fuser::ReplyEmpty,
        ) {
            reply.error(fuser::Errno::EROFS)
        }
    };
}
pub(crate) use deny_writes;
