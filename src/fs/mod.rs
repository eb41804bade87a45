//! The FUSE filesystem: request handlers over the layer index and the upper layer.
//!
//! Handlers take `&self` and run on several session threads at once; shared state is in sharded
//! maps, per-directory locks and per-node locks, never behind one global lock. Every change is
//! applied to disk first, then to the in-memory state, then replied.

mod copy;
mod dir;
mod file;
mod lookup;
mod lowerdata;
mod setattr;
mod write;
mod xattr;

use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, BsdFileFlags, CopyFileRangeFlags, Errno, FileHandle, Filesystem, INodeNo,
    InitFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyLseek, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use parking_lot::RwLock;

use crate::attr::Attr;
use crate::dirstate::DirState;
use crate::inode::{LowerRef, Node, NodeInner, NodeTable, ROOT_INO};
use crate::layer::Layer;
use crate::sharded::ShardedMap;
use crate::sys;
use crate::upper::Upper;

pub use file::Handle;

/// Lower layers never change while mounted and every change goes through the daemon, so the
/// kernel may cache entries and attributes for as long as it likes.
const TTL: Duration = Duration::from_secs(1_000_000);

/// The longest name any layer's filesystem can hold (Linux NAME_MAX).
const NAME_MAX: usize = 255;

pub struct Options {
    pub passthrough: bool,
    /// Let the kernel enforce POSIX ACLs found in the layers (off with `noacl`).
    pub posix_acl: bool,
    /// What the writable layer writes: marker namespace, metacopy, directory redirects.
    pub format: crate::rootless::Format,
    /// Owners as shown and as stored (id maps, squashing).
    pub ownership: crate::idmap::Ownership,
}

pub struct StrataFs {
    layers: Vec<Layer>,
    upper: Option<Upper>,
    nodes: NodeTable,
    /// Merged directories by inode, loaded on first use and kept for the life of the mount.
    dirs: ShardedMap<Arc<RwLock<DirState>>>,
    handles: ShardedMap<Arc<Handle>>,
    next_fh: AtomicU64,
    passthrough: AtomicBool,
    backing: file::BackingCache,
    want_passthrough: bool,
    want_posix_acl: bool,
    format: crate::rootless::Format,
    ownership: crate::idmap::Ownership,
    /// Upper host inode -> inode number, for hard-linked upper files (see upper_entry_ino).
    upper_link_inos: parking_lot::Mutex<std::collections::HashMap<u64, u64>>,
    /// Set once sub-mounts are in place on a --read-only mount: the union refuses writes.
    deny_writes: Arc<AtomicBool>,
    /// The session's /dev/fuse fd, when reads served by the daemon are spliced to it (only
    /// on a session whose threads share that fd: a reply must go to the fd its request came
    /// from).
    splice_device: Arc<std::sync::OnceLock<std::os::fd::OwnedFd>>,
}

/// The one place a failed operation is logged: debug level, with its errno (`-d` shows them,
/// next to fuser's debug line for each request).
trait LogFailure {
    fn logged(self, op: &str) -> Self;
}

impl<T> LogFailure for Result<T, Errno> {
    fn logged(self, op: &str) -> Self {
        if let Err(e) = &self {
            log::debug!("{op} failed: errno {}", e.code());
        }
        self
    }
}

fn errno(e: &std::io::Error) -> Errno {
    Errno::from_i32(e.raw_os_error().unwrap_or(libc::EIO))
}

impl StrataFs {
    /// `layers` is bottom first; slot i is `layers[i]`.
    pub fn new(
        layers: Vec<Layer>,
        upper: Option<Upper>,
        opts: Options,
    ) -> std::io::Result<StrataFs> {
        let top = layers
            .last()
            .ok_or_else(|| std::io::Error::other("no layers"))?;
        let root_stat = match &upper {
            Some(u) => sys::fstat(u.root())?,
            None => sys::fstat(top.root())?,
        };
        let top_slot = top.slot;
        let all_layers: Vec<u16> = (0..layers.len() as u16).rev().collect();
        let fs = StrataFs {
            nodes: NodeTable::default(),
            dirs: ShardedMap::default(),
            handles: ShardedMap::default(),
            next_fh: AtomicU64::new(1),
            passthrough: AtomicBool::new(false),
            backing: file::BackingCache::default(),
            want_passthrough: opts.passthrough,
            want_posix_acl: opts.posix_acl,
            format: opts.format,
            ownership: opts.ownership,
            upper_link_inos: Default::default(),
            deny_writes: Arc::new(AtomicBool::new(false)),
            splice_device: Arc::default(),
            layers,
            upper,
        };
        let has_upper = fs.upper.is_some();
        fs.nodes.insert_pinned(Node::new(
            ROOT_INO,
            fuser::FileType::Directory,
            NodeInner {
                links: Vec::new(),
                lower: Some(LowerRef {
                    slot: top_slot,
                    rel: b".".to_vec(),
                    dir_layers: all_layers,
                    ..LowerRef::default()
                }),
                upper: has_upper,
                object: None,
                metacopy: false,
                index: None,
                attr: Attr::from_stat(&root_stat),
            },
        ));
        Ok(fs)
    }

    fn node(&self, ino: INodeNo) -> Result<Arc<Node>, Errno> {
        self.nodes.get(ino.0).ok_or(Errno::ENOENT)
    }

    fn upper(&self) -> Result<&Upper, Errno> {
        self.upper.as_ref().ok_or(Errno::EROFS)
    }

    /// The upper layer for a change: EROFS on a read-only mount.
    fn writable_upper(&self) -> Result<&Upper, Errno> {
        if self.deny_writes.load(Ordering::Relaxed) {
            return Err(Errno::EROFS);
        }
        self.upper()
    }

    pub fn deny_writes_handle(&self) -> Arc<AtomicBool> {
        self.deny_writes.clone()
    }

    /// Where to put the session's /dev/fuse fd to have reads spliced to it.
    pub fn splice_device_handle(&self) -> Arc<std::sync::OnceLock<std::os::fd::OwnedFd>> {
        self.splice_device.clone()
    }

    fn alloc_fh(&self) -> u64 {
        self.next_fh.fetch_add(1, Ordering::Relaxed)
    }

    /// Stack depth for passthrough: 1 keeps this mount usable as an overlayfs lower; layers that
    /// themselves sit on a stacking filesystem (overlayfs, FUSE) need 2.
    fn passthrough_stack_depth(&self) -> u32 {
        const OVERLAYFS_MAGIC: i64 = 0x794c7630;
        const FUSE_MAGIC: i64 = 0x65735546;
        let stacked = |fd: std::os::fd::BorrowedFd<'_>| matches!(sys::fstatfs_type(fd), Ok(t) if t == OVERLAYFS_MAGIC || t == FUSE_MAGIC);
        let upper_stacked = self.upper.as_ref().is_some_and(|u| stacked(u.root()));
        if upper_stacked || self.layers.iter().any(|l| stacked(l.root().as_fd())) {
            2
        } else {
            1
        }
    }

    /// The generation of an entry's node, to reply with (see `NodeTable::lookup_or_insert`).
    fn generation(&self, attr: &fuser::FileAttr) -> fuser::Generation {
        fuser::Generation(self.nodes.generation(attr.ino.0))
    }

    /// Design figure: entries and heap bytes of the lower index over all loaded directories.
    pub fn index_stats(&self) -> (usize, usize) {
        self.dirs.values().iter().fold((0, 0), |(n, b), d| {
            let d = d.read();
            (n + d.lower.len(), b + d.lower.heap_bytes())
        })
    }
}

fn time_or_now(t: Option<TimeOrNow>) -> (i64, i64) {
    match t {
        None => (0, sys::ops::UTIME_OMIT),
        Some(TimeOrNow::Now) => (0, sys::ops::UTIME_NOW),
        Some(TimeOrNow::SpecificTime(st)) => match st.duration_since(SystemTime::UNIX_EPOCH) {
            Ok(d) => (d.as_secs() as i64, d.subsec_nanos() as i64),
            Err(e) => {
                let d = e.duration();
                let (s, n) = (d.as_secs() as i64, d.subsec_nanos() as i64);
                if n == 0 {
                    (-s, 0)
                } else {
                    (-s - 1, 1_000_000_000 - n)
                }
            }
        },
    }
}

impl Filesystem for StrataFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let offered = config.capabilities();
        let wanted = InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_CACHE_SYMLINKS
            | InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_READDIRPLUS_AUTO
            | InitFlags::FUSE_HANDLE_KILLPRIV_V2
            // The daemon applies the umask: not where the parent has a default ACL (POSIX).
            | InitFlags::FUSE_DONT_MASK
            // Node ids do not outlive the kernel's references, so a file handle could not be
            // opened later: refuse name_to_handle_at, as kernel overlayfs does without
            // nfs_export, instead of handing out handles that end in ESTALE.
            | InitFlags::FUSE_NO_EXPORT_SUPPORT;
        // add_capabilities is all-or-nothing: ask only for what the kernel offers.
        let _ = config.add_capabilities(wanted & offered);
        // The kernel checks permissions itself (default_permissions); with POSIX_ACL it also
        // reads the ACL xattrs of each inode, as kernel overlayfs honours them.
        if self.want_posix_acl && offered.contains(InitFlags::FUSE_POSIX_ACL) {
            let _ = config.add_capabilities(InitFlags::FUSE_POSIX_ACL);
        }
        if self.want_passthrough && offered.contains(InitFlags::FUSE_PASSTHROUGH) {
            let depth = self.passthrough_stack_depth();
            if config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
                && config.set_max_stack_depth(depth).is_ok()
            {
                self.passthrough.store(true, Ordering::Relaxed);
            }
        }
        let _ = config.set_max_write(1 << 20);
        if self.passthrough.load(Ordering::Relaxed) {
            log::info!("passthrough: negotiated with the kernel");
        } else {
            log::info!("passthrough: off (not asked for, or not offered by the kernel)");
        }
        Ok(())
    }

    fn destroy(&mut self) {
        let (entries, bytes) = self.index_stats();
        log::info!(
            "index: {entries} entries, {bytes} bytes, {} inodes",
            self.nodes.len()
        );
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.do_lookup(parent, name).logged("lookup") {
            Ok((attr, _)) => reply.entry(&TTL, &attr, self.generation(&attr)),
            Err(e) if e == Errno::ENOENT => {
                // A negative entry the kernel may cache: a later create goes through the daemon
                // and replaces it.
                let attr = Attr::default().to_file_attr(0, &self.ownership);
                reply.entry(&TTL, &attr, fuser::Generation(0))
            }
            Err(e) => reply.error(e),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.nodes.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.do_getattr(ino, fh).logged("getattr") {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let change = setattr::Change {
            mode,
            uid,
            gid,
            size,
            atime: time_or_now(atime),
            mtime: time_or_now(mtime),
        };
        match self.do_setattr(req, ino, fh, change).logged("setattr") {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.do_readlink(ino).logged("readlink") {
            Ok(target) => reply.data(&target),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        // A char device 0:0 is a whiteout in the upper dir: it would hide its name after a
        // remount. Kernel overlayfs refuses to create one the same way.
        if mode & libc::S_IFMT == libc::S_IFCHR && rdev == 0 {
            reply.error(Errno::EPERM);
            return;
        }
        let spec = write::NewObject::Node { mode, umask, rdev };
        match self
            .do_create_object(req, parent, name, spec)
            .logged("mknod")
        {
            Ok(attr) => reply.entry(&TTL, &attr, self.generation(&attr)),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let spec = write::NewObject::Dir { mode, umask };
        match self
            .do_create_object(req, parent, name, spec)
            .logged("mkdir")
        {
            Ok(attr) => reply.entry(&TTL, &attr, self.generation(&attr)),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.do_remove(parent, name, false).logged("unlink") {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.do_remove(parent, name, true).logged("rmdir") {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let spec = write::NewObject::Symlink {
            target: target.as_os_str(),
        };
        match self
            .do_create_object(req, parent, link_name, spec)
            .logged("symlink")
        {
            Ok(attr) => reply.entry(&TTL, &attr, self.generation(&attr)),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        match self
            .do_rename(parent, name, newparent, newname, flags)
            .logged("rename")
        {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        match self.do_link(ino, newparent, newname).logged("link") {
            Ok(attr) => reply.entry(&TTL, &attr, self.generation(&attr)),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        self.do_open(ino, flags, reply)
    }

    fn read(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.do_read(req.unique().0, fh, offset, size, reply)
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.do_write(fh, offset, data).logged("write") {
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Nothing to flush: writes reach the host file before they are answered, and locks
        // are the kernel's own (no getlk/setlk here). ENOSYS tells the kernel to stop sending
        // FLUSH at all, which saves a round trip on every close(2); close still returns 0.
        reply.error(Errno::ENOSYS)
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.handles.remove(fh.0);
        reply.ok()
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.do_fsync(fh, datasync).logged("fsync") {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.do_opendir(ino, reply)
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        reply: ReplyDirectory,
    ) {
        self.do_readdir(ino, fh, offset, reply)
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        reply: ReplyDirectoryPlus,
    ) {
        self.do_readdirplus(ino, fh, offset, reply)
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.handles.remove(fh.0);
        reply.ok()
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.do_fsyncdir(ino, datasync).logged("fsyncdir") {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let fd = match &self.upper {
            Some(u) => u.root(),
            None => self.layers.last().expect("at least one layer").root(),
        };
        match sys::fstatvfs(fd) {
            Ok(s) => reply.statfs(
                s.f_blocks,
                s.f_bfree,
                s.f_bavail,
                s.f_files,
                s.f_ffree,
                s.f_bsize as u32,
                s.f_namemax as u32,
                s.f_frsize as u32,
            ),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        match self
            .do_setxattr(ino, name, Some((value, flags)))
            .logged("setxattr")
        {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        self.do_getxattr(ino, name, size, reply)
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        self.do_listxattr(ino, size, reply)
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.do_setxattr(ino, name, None).logged("removexattr") {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        match self.node(ino) {
            Ok(_) if mask.contains(AccessFlags::W_OK) && self.writable_upper().is_err() => {
                reply.error(Errno::EROFS)
            }
            Ok(_) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        self.do_create(req, parent, name, (mode, umask), flags, reply)
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        match self
            .do_fallocate(fh, offset, length, mode)
            .logged("fallocate")
        {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        match self.do_lseek(fh, offset, whence).logged("lseek") {
            Ok(off) => reply.offset(off),
            Err(e) => reply.error(e),
        }
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        _ino_in: INodeNo,
        fh_in: FileHandle,
        offset_in: u64,
        _ino_out: INodeNo,
        fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        match self
            .do_copy_file_range(fh_in, offset_in, fh_out, offset_out, len)
            .logged("copy_file_range")
        {
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(e),
        }
    }
}
