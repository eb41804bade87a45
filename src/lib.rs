//! stratafs: a union filesystem for container root filesystems, served over FUSE.
//!
//! The crate is a library with a thin binary (`main.rs`) on top. Data flows in layers:
//! command line (`cli`, `compat`) -> mount spec (`spec`, `overlap`) -> daemon (`daemon`,
//! `fusemount`, `submount`, `logging`) -> FUSE adapter (`fs`) -> union (`index`, `merge`,
//! `lowerwalk`, `dirstate`, `inode`, `upper`, `copyup`, `whiteout`, `rootless`, and `ovl`, the
//! one table of the overlay on-disk format) -> system calls (`sys`, the only place with
//! `unsafe`). Beside the mount path: `volume` (the volume store, backups), `tarball` (tar
//! streams in and out, safe against hostile archives), `unpack` (OCI layer tarballs into layer
//! dirs) and `image` (diff and commit of a writable layer).

mod acl;
mod attr;
pub mod cli;
mod compat;
mod copyup;
mod daemon;
mod demo;
mod dirstate;
mod fs;
mod fusemount;
mod idmap;
mod image;
mod index;
mod inode;
mod layer;
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
