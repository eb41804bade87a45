//! stratafs: a union filesystem for container root filesystems, served over FUSE.
//!
//! The crate is a library with a thin binary (`main.rs`) on top. Data flows in layers, each
//! using only the ones below it:
//!
//! 1. command line: `cli`, `compat` (the podman/fuse-overlayfs option syntax);
//! 2. mount spec: `spec`, `overlap`, `idmap` (owner mapping);
//! 3. daemon: `daemon` (mounts and runs the FUSE session), `fusemount`, `fusesplice` (read
//!    replies spliced to /dev/fuse), `submount`, `logging`;
//! 4. FUSE adapter: `fs`, which turns requests into union calls and results into replies
//!    (handles, TTLs, passthrough, errnos), and makes no system call of its own;
//! 5. union core: `union` (lookup, attributes, open, copy-up, create/link/remove/rename,
//!    xattrs, readdir snapshots, in bytes and integers, returning `io::Result`) over
//!    `dirstate`, `inode`, the lower listing (`listing`, `merge`, `lowerwalk`), `upper`,
//!    `copy_object` (the copy of one object), `whiteout`, `rootless` (the mount's format) and
//!    `ovl`, the one table of the overlay on-disk format; none of it knows FUSE;
//! 6. system calls: `sys`, the only place with `unsafe`.
//!
//! `tests/architecture.rs` checks the boundaries of the adapter. Beside the mount path:
//! `volume` (the volume store, backups), `tarball` (tar streams in and out, safe against
//! hostile archives), `unpack` (OCI layer tarballs into layer dirs) and `image` (OCI image
//! layouts mounted through a store of unpacked layers; diff and commit of a writable layer).
//! `error` is what the command line and the mount path report, one type with a clear
//! message per case.

mod acl;
mod attr;
pub mod cli;
mod compat;
mod copy_object;
#[cfg(test)]
mod core_tests;
mod daemon;
mod demo;
mod dirstate;
pub mod error;
mod fs;
mod fusemount;
mod fusesplice;
mod idmap;
pub mod image;
mod inode;
mod layer;
mod listing;
mod logging;
mod lowerwalk;
mod merge;
mod mountinfo;
mod overlap;
pub mod ovl;
mod private_dir;
mod rootless;
mod sharded;
mod spec;
mod submount;
mod sys;
mod tarball;
mod tempname;
mod treecopy;
mod union;
mod unpack;
mod upper;
mod volattach;
mod volume;
mod whiteout;
