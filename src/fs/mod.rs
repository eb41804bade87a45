//! The FUSE adapter: turns fuser's requests into calls of the union core (`crate::union`)
//! and its results into replies. Only this layer knows FUSE: entry and attribute TTLs, file
//! and directory handles, passthrough backing files, readdir offsets, and the errno of a
//! failed call (`reply`). It makes no system call of its own.

mod dir;
mod handles;
mod open;
mod reply;
mod splice;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, BsdFileFlags, CopyFileRangeFlags, Errno, FileHandle, Filesystem, FopenFlags,
    Generation, INodeNo, InitFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyLseek,
    ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use crate::union::attr::Attr;
use crate::union::{Caller, Change, Entry, NewObject, OpenFile, RenameMode, Union};
use handles::{BackingCache, HandleTable, OpenDirHandle, OpenFileHandle};
use reply::{reply_empty, set_time, ToErrno};
pub use splice::{ReadSplicer, Spliced};

/// Lower layers never change while mounted and every change goes through the daemon, so the
/// kernel may cache entries and attributes for as long as it likes.
const TTL: Duration = Duration::from_secs(1_000_000);

/// Offsets: 1 = after ".", 2 = after "..", 2 + i + 1 = after listing entry i.
const DOT_ENTRIES: u64 = 2;

thread_local! {
    /// The read buffer of a session thread (reads without passthrough).
    static READ_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

pub struct Options {
    pub passthrough: bool,
    /// Let the kernel enforce POSIX ACLs found in the layers (off with `noacl`).
    pub posix_acl: bool,
    /// What the writable layer writes: marker namespace, metacopy, directory redirects.
    pub format: crate::union::rootless::Format,
    /// Owners as shown and as stored (id maps, squashing).
    pub ownership: crate::union::idmap::Ownership,
}

pub struct StrataFs {
    union: Union,
    files: HandleTable<OpenFileHandle>,
    dirs: HandleTable<OpenDirHandle>,
    passthrough: AtomicBool,
    backing: BackingCache,
    want_passthrough: bool,
    want_posix_acl: bool,
    /// Owners as shown (the union stores them with the same mapping).
    ownership: crate::union::idmap::Ownership,
    /// What splices read replies to the session's /dev/fuse fd, when reads served by the
    /// daemon are spliced (only on a session whose threads share that fd: a reply must go to
    /// the fd its request came from). The daemon provides it: the adapter sends nothing to
    /// the device itself.
    splice_device: Arc<std::sync::OnceLock<Box<dyn ReadSplicer>>>,
    /// The session's notifier, to drop attributes the kernel caches (set once serving).
    notifier: Arc<std::sync::OnceLock<fuser::Notifier>>,
}

impl StrataFs {
    /// `layers` is bottom first; slot i is `layers[i]`.
    pub fn new(
        layers: Vec<crate::union::layer::Layer>,
        upper: Option<crate::union::upper::Upper>,
        opts: Options,
    ) -> std::io::Result<StrataFs> {
        Ok(StrataFs {
            union: Union::new(layers, upper, opts.format, opts.ownership.clone())?,
            files: HandleTable::default(),
            dirs: HandleTable::default(),
            passthrough: AtomicBool::new(false),
            backing: BackingCache::default(),
            want_passthrough: opts.passthrough,
            want_posix_acl: opts.posix_acl,
            ownership: opts.ownership,
            splice_device: Arc::default(),
            notifier: Arc::default(),
        })
    }

    pub fn deny_writes_handle(&self) -> Arc<AtomicBool> {
        self.union.deny_writes_handle()
    }

    /// Where to put the splicer of the session's device to have reads spliced to it.
    pub fn splice_device_handle(&self) -> Arc<std::sync::OnceLock<Box<dyn ReadSplicer>>> {
        self.splice_device.clone()
    }

    /// Where to put the session's notifier.
    pub fn notifier_handle(&self) -> Arc<std::sync::OnceLock<fuser::Notifier>> {
        self.notifier.clone()
    }

    /// The attributes of node `ino` as FUSE replies them, with owners as the mount shows them.
    fn file_attr(&self, ino: u64, attr: &Attr) -> fuser::FileAttr {
        reply::file_attr(ino, attr, &self.ownership)
    }

    fn reply_entry(&self, reply: ReplyEntry, entry: &Entry) {
        reply.entry(
            &self.attr_ttl(entry.ino),
            &self.file_attr(entry.ino, &entry.attr),
            Generation(entry.generation),
        )
    }

    /// Runs `call` on the file open under handle `fh` (EBADF when there is none), its error
    /// turned into the errno of `op`.
    fn on_open_file<T>(
        &self,
        fh: FileHandle,
        op: &str,
        call: impl FnOnce(&OpenFile) -> std::io::Result<T>,
    ) -> Result<T, Errno> {
        self.files
            .get(fh.0)
            .and_then(|h| call(&h.file).or_errno(op))
    }

    fn create_reply(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        spec: NewObject<'_>,
        op: &str,
        reply: ReplyEntry,
    ) {
        let caller = Caller {
            uid: req.uid(),
            gid: req.gid(),
        };
        match self
            .union
            .create(parent.0, name.as_bytes(), spec, caller)
            .or_errno(op)
        {
            Ok((entry, _)) => self.reply_entry(reply, &entry),
            Err(e) => reply.error(e),
        }
    }
}

impl Filesystem for StrataFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let offered = config.capabilities();
        let wanted = InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_CACHE_SYMLINKS
            // Every readdir chunk carries attributes, not only the first one (no
            // READDIRPLUS_AUTO): a walk that stats what it listed (find, ls -l, du, tar)
            // then sends no LOOKUP per name (the attributes come from the in-memory listing).
            | InitFlags::FUSE_DO_READDIRPLUS
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
            let depth = self.union.passthrough_stack_depth();
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
        let (entries, bytes) = self.union.index_stats();
        log::info!(
            "index: {entries} entries, {bytes} bytes, {} inodes, {} lower backing files kept",
            self.union.node_count(),
            self.backing.kept_count()
        );
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self
            .union
            .lookup(parent.0, name.as_bytes())
            .or_errno("lookup")
        {
            Ok(entry) => self.reply_entry(reply, &entry),
            Err(e) if e == Errno::ENOENT => {
                // A negative entry the kernel may cache: a later create goes through the daemon
                // and replaces it.
                reply.entry(&TTL, &self.file_attr(0, &Attr::default()), Generation(0))
            }
            Err(e) => reply.error(e),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        if self.union.forget(ino.0, nlookup) {
            // The kernel no longer holds the inode: nothing opens it again without a lookup.
            self.backing.drop_kept(ino.0);
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        let open = self.open_file(fh);
        let file = open.as_ref().and_then(|h| h.file.opened_file());
        match self.union.getattr(ino.0, file).or_errno("getattr") {
            Ok(attr) => reply.attr(&self.attr_ttl(ino.0), &self.file_attr(ino.0, &attr)),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
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
        let change = Change {
            mode,
            uid,
            gid,
            size,
            atime: set_time(atime),
            mtime: set_time(mtime),
        };
        let open = self.open_file(fh);
        let file = open.as_ref().and_then(|h| h.file.opened_file());
        match self.union.setattr(ino.0, file, change).or_errno("setattr") {
            Ok(attr) => reply.attr(&self.attr_ttl(ino.0), &self.file_attr(ino.0, &attr)),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.union.readlink(ino.0).or_errno("readlink") {
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
        let spec = NewObject::Node { mode, umask, rdev };
        self.create_reply(req, parent, name, spec, "mknod", reply)
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
        let spec = NewObject::Dir { mode, umask };
        self.create_reply(req, parent, name, spec, "mkdir", reply)
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let removed = self
            .union
            .remove(parent.0, name.as_bytes(), false)
            .or_errno("unlink");
        reply_empty(reply, removed)
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let removed = self
            .union
            .remove(parent.0, name.as_bytes(), true)
            .or_errno("rmdir");
        reply_empty(reply, removed)
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let spec = NewObject::Symlink {
            target: target.as_os_str().as_bytes(),
        };
        self.create_reply(req, parent, link_name, spec, "symlink", reply)
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
        let mode = RenameMode {
            exchange: flags.contains(RenameFlags::RENAME_EXCHANGE),
            noreplace: flags.contains(RenameFlags::RENAME_NOREPLACE),
            whiteout: flags.contains(RenameFlags::RENAME_WHITEOUT),
        };
        let renamed = self
            .union
            .rename(
                parent.0,
                name.as_bytes(),
                newparent.0,
                newname.as_bytes(),
                mode,
            )
            .or_errno("rename");
        reply_empty(reply, renamed)
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        match self
            .union
            .link(ino.0, newparent.0, newname.as_bytes())
            .or_errno("link")
        {
            Ok(entry) => self.reply_entry(reply, &entry),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self.open_kept(ino.0, flags.0).or_errno("open") {
            Ok(Some((fh, backing))) => {
                return reply.opened_passthrough(FileHandle(fh), FopenFlags::empty(), &backing)
            }
            Ok(None) => {}
            Err(e) => return reply.error(e),
        }
        let opened = self
            .union
            .open(ino.0, flags.0, |ino| self.backing.live_lower(ino))
            .or_errno("open");
        let opened = match opened {
            Ok(o) => o,
            Err(e) => return reply.error(e),
        };
        let lower = opened.lower;
        let (fh, backing) =
            self.register_open_file(ino.0, opened.file, lower, |f| reply.open_backing(f));
        if backing.is_some() && !lower && flags.acc_mode() != fuser::OpenAccMode::O_RDONLY {
            self.forget_cached_attr(ino.0);
        }
        match backing {
            Some(b) => reply.opened_passthrough(FileHandle(fh), FopenFlags::empty(), &b),
            // Lower content never changes: keep the page cache across opens of lower files.
            None if lower => reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE),
            None => reply.opened(FileHandle(fh), FopenFlags::empty()),
        }
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
        let handle = match self.files.get(fh.0) {
            Ok(h) => h,
            Err(e) => return reply.error(e),
        };
        let Some(reply) =
            self.splice_read(req.unique().0, &handle.file, offset, size as usize, reply)
        else {
            return;
        };
        READ_BUF.with_borrow_mut(|buf| {
            // One buffer per session thread, grown once: a read costs no allocation.
            if buf.len() < size as usize {
                buf.resize(size as usize, 0);
            }
            let buf = &mut buf[..size as usize];
            match handle.file.read_at(buf, offset).or_errno("read") {
                Ok(n) => reply.data(&buf[..n]),
                Err(e) => reply.error(e),
            }
        })
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
        let written = self.on_open_file(fh, "write", |f| f.write_at(data, offset));
        match written {
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
        self.files.remove(fh.0);
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
        let synced = self.on_open_file(fh, "fsync", |f| self.union.fsync(f, datasync));
        reply_empty(reply, synced)
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.union.list_dir(ino.0).or_errno("opendir") {
            Ok(snapshot) => {
                let fh = self.dirs.insert(OpenDirHandle {
                    snapshot,
                    served: AtomicBool::new(false),
                });
                // Every change to a directory goes through the daemon, which keeps the
                // kernel's cached listing valid (the kernel drops it on create/unlink/rename).
                reply.opened(
                    FileHandle(fh),
                    FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_CACHE_DIR,
                )
            }
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        reply: ReplyDirectory,
    ) {
        self.fill_dir(ino, fh, offset, reply)
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        reply: ReplyDirectoryPlus,
    ) {
        self.fill_dir_plus(ino, fh, offset, reply)
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.dirs.remove(fh.0);
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
        let synced = self.union.fsyncdir(ino.0, datasync).or_errno("fsyncdir");
        reply_empty(reply, synced)
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match self.union.statfs().or_errno("statfs") {
            Ok(s) => reply.statfs(
                s.blocks,
                s.blocks_free,
                s.blocks_available,
                s.files,
                s.files_free,
                s.block_size,
                s.name_max,
                s.fragment_size,
            ),
            Err(e) => reply.error(e),
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
        let set = self
            .union
            .setxattr(ino.0, name.as_bytes(), Some((value, flags)))
            .or_errno("setxattr");
        reply_empty(reply, set)
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        match self
            .union
            .getxattr(ino.0, name.as_bytes())
            .or_errno("getxattr")
        {
            Ok(value) => reply_sized(&value, size, reply),
            Err(e) => reply.error(e),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        match self.union.listxattr(ino.0).or_errno("listxattr") {
            Ok(names) => reply_sized(&names, size, reply),
            Err(e) => reply.error(e),
        }
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let removed = self
            .union
            .setxattr(ino.0, name.as_bytes(), None)
            .or_errno("removexattr");
        reply_empty(reply, removed)
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        let write = mask.contains(AccessFlags::W_OK);
        reply_empty(reply, self.union.access(ino.0, write).or_errno("access"))
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
        let spec = NewObject::File { mode, umask, flags };
        let caller = Caller {
            uid: req.uid(),
            gid: req.gid(),
        };
        let created = self
            .union
            .create(parent.0, name.as_bytes(), spec, caller)
            .or_errno("create");
        let (entry, file) = match created {
            Ok((entry, file)) => (entry, file.expect("a file was created")),
            Err(e) => return reply.error(e),
        };
        let (fh, backing) =
            self.register_open_file(entry.ino, file, false, |f| reply.open_backing(f));
        let attr = self.file_attr(entry.ino, &entry.attr);
        let generation = Generation(entry.generation);
        match backing {
            Some(b) => reply.created_passthrough(
                &self.attr_ttl(entry.ino),
                &attr,
                generation,
                FileHandle(fh),
                FopenFlags::empty(),
                &b,
            ),
            None => reply.created(&TTL, &attr, generation, FileHandle(fh), FopenFlags::empty()),
        }
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
        let done = self.on_open_file(fh, "fallocate", |f| f.fallocate(offset, length, mode));
        reply_empty(reply, done)
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
        let sought = self.on_open_file(fh, "lseek", |f| f.lseek(offset, whence));
        match sought {
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
        let copied = self.files.get(fh_in.0).and_then(|fin| {
            let fout = self.files.get(fh_out.0)?;
            fin.file
                .copy_range_to(offset_in, &fout.file, offset_out, len)
                .or_errno("copy_file_range")
        });
        match copied {
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(e),
        }
    }
}

/// An xattr reply: the size asked for with `size` 0, ERANGE when the value does not fit.
fn reply_sized(data: &[u8], size: u32, reply: ReplyXattr) {
    if size == 0 {
        reply.size(data.len() as u32)
    } else if data.len() > size as usize {
        reply.error(Errno::ERANGE)
    } else {
        reply.data(data)
    }
}
