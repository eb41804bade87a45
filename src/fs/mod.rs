//! The FUSE filesystem: request handlers over the layer index.
//!
//! Handlers take `&self` and run on several session threads at once; shared state is in sharded
//! maps and per-node locks, never behind one global lock.

mod dir;
mod file;
mod lookup;
mod readonly;
mod xattr;

use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fuser::{
    Errno, FileHandle, Filesystem, INodeNo, InitFlags, KernelConfig, LockOwner, OpenFlags,
    ReplyAttr, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen,
    ReplyStatfs, ReplyXattr, Request,
};

use crate::attr::Attr;
use crate::index::DirIndex;
use crate::inode::{LowerRef, Node, NodeInner, NodeTable, ROOT_INO};
use crate::layer::Layer;
use crate::sharded::ShardedMap;
use crate::sys;

pub use file::Handle;

/// Lower layers never change while mounted and every change goes through the daemon, so the
/// kernel may cache entries and attributes for as long as it likes.
const TTL: Duration = Duration::from_secs(1_000_000);

pub struct Options {
    pub passthrough: bool,
}

pub struct StrataFs {
    layers: Vec<Layer>,
    nodes: NodeTable,
    /// Merged lower directories, by directory inode; kept for the life of the mount.
    dirs: ShardedMap<Arc<DirIndex>>,
    handles: ShardedMap<Arc<Handle>>,
    next_fh: AtomicU64,
    passthrough: AtomicBool,
    backing: file::BackingCache,
    want_passthrough: bool,
}

fn errno(e: &std::io::Error) -> Errno {
    Errno::from_i32(e.raw_os_error().unwrap_or(libc::EIO))
}

impl StrataFs {
    /// `layers` is bottom first; slot i is `layers[i]`.
    pub fn new(layers: Vec<Layer>, opts: Options) -> std::io::Result<StrataFs> {
        let top = layers
            .last()
            .ok_or_else(|| std::io::Error::other("no layers"))?;
        let root_stat = sys::fstat(top.root())?;
        let top_slot = top.slot;
        let fs = StrataFs {
            nodes: NodeTable::default(),
            dirs: ShardedMap::default(),
            handles: ShardedMap::default(),
            next_fh: AtomicU64::new(1),
            passthrough: AtomicBool::new(false),
            backing: file::BackingCache::default(),
            want_passthrough: opts.passthrough,
            layers,
        };
        let all_layers: Vec<u16> = (0..fs.layers.len() as u16).rev().collect();
        fs.nodes.insert_pinned(Node::new(
            ROOT_INO,
            fuser::FileType::Directory,
            NodeInner {
                parent: ROOT_INO,
                name: Vec::new(),
                lower: Some(LowerRef {
                    slot: top_slot,
                    rel: b".".to_vec(),
                    dir_layers: all_layers,
                }),
                attr: Attr::from_stat(&root_stat),
            },
        ));
        Ok(fs)
    }

    fn node(&self, ino: INodeNo) -> Result<Arc<Node>, Errno> {
        self.nodes.get(ino.0).ok_or(Errno::ENOENT)
    }

    fn alloc_fh(&self) -> u64 {
        self.next_fh.fetch_add(1, Ordering::Relaxed)
    }

    /// Stack depth for passthrough: 1 keeps this mount usable as an overlayfs lower; layers that
    /// themselves sit on a stacking filesystem (overlayfs, FUSE) need 2.
    fn passthrough_stack_depth(&self) -> u32 {
        const OVERLAYFS_MAGIC: i64 = 0x794c7630;
        const FUSE_MAGIC: i64 = 0x65735546;
        let stacked = self.layers.iter().any(|l| {
            matches!(sys::fstatfs_type(l.root().as_fd()), Ok(t) if t == OVERLAYFS_MAGIC || t == FUSE_MAGIC)
        });
        if stacked {
            2
        } else {
            1
        }
    }

    /// Design figure: bytes of index per indexed entry, over all loaded directories.
    pub fn index_stats(&self) -> (usize, usize) {
        self.dirs
            .values()
            .iter()
            .fold((0, 0), |(n, b), d| (n + d.len(), b + d.heap_bytes()))
    }
}

impl Filesystem for StrataFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let offered = config.capabilities();
        let wanted = InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_CACHE_SYMLINKS
            | InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_READDIRPLUS_AUTO
            | InitFlags::FUSE_EXPORT_SUPPORT;
        // add_capabilities is all-or-nothing: ask only for what the kernel offers.
        let _ = config.add_capabilities(wanted & offered);
        if self.want_passthrough && offered.contains(InitFlags::FUSE_PASSTHROUGH) {
            let depth = self.passthrough_stack_depth();
            if config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
                && config.set_max_stack_depth(depth).is_ok()
            {
                self.passthrough.store(true, Ordering::Relaxed);
            }
        }
        let _ = config.set_max_write(1 << 20);
        log::info!("passthrough: {}", self.passthrough.load(Ordering::Relaxed));
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
        match self.do_lookup(parent, name) {
            Ok((attr, _)) => reply.entry(&TTL, &attr, fuser::Generation(0)),
            Err(e) if e == Errno::ENOENT => {
                // A negative entry: the kernel caches the absence, lowers cannot change.
                let mut attr = Attr::default().to_file_attr(0);
                attr.ino = INodeNo(0);
                reply.entry(&TTL, &attr, fuser::Generation(0))
            }
            Err(e) => reply.error(e),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.nodes.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.do_getattr(ino) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.do_readlink(ino) {
            Ok(target) => reply.data(&target),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        self.do_open(ino, flags, reply)
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.do_read(fh, offset, size, reply)
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok()
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

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let top = self.layers.last().expect("at least one layer");
        match sys::fstatvfs(top.root()) {
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

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        self.do_getxattr(ino, name, size, reply)
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        self.do_listxattr(ino, size, reply)
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: fuser::AccessFlags, reply: ReplyEmpty) {
        match self.node(ino) {
            Ok(_) if mask.contains(fuser::AccessFlags::W_OK) => reply.error(Errno::EROFS),
            Ok(_) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    readonly::deny_writes!();
}
