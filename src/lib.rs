//! stratafs: a union filesystem for container root filesystems, served over FUSE.
//!
//! The crate is a library with a thin binary (`main.rs`) on top. Each folder is one layer of
//! the data flow and uses only the layers below it (`tests/architecture.rs` checks it):
//!
//! ```text
//! cli/      command line: subcommands, the fuse-overlayfs syntax podman uses (`compat`),
//!    │      the demo, the image commands
//!    ▼
//! spec/     what to mount, checked: layers, upper, work, overlaps by (st_dev, st_ino)
//!    │      (`overlap`), volumes, binds and tmpfs paths (`submount`, `volattach`)
//!    ▼
//! daemon/   mounts and serves: the FUSE session and its own mount (`fusemount`), detach,
//!    │      sub-mounts placed on top, read replies spliced to /dev/fuse, logging
//!    ▼
//! fs/       the FUSE adapter: requests into union calls, results into replies (handles,
//!    │      TTLs, passthrough, readdir offsets, errnos); no system call of its own
//!    ▼
//! union/    the union core, FUSE-free, in bytes and integers returning io::Result:
//!    │      resolve, attributes, open, copy-up, create/link/remove/rename, xattrs, readdir
//!    │      snapshots (`Union`), over nodes (`inode`, `dirstate`), the in-memory listing of
//!    │      the lower layers (`listing`, `merge`, `lowerwalk`), the upper (`upper`,
//!    │      `copy_object`, `whiteout`), owner mapping (`idmap`), the mount's format
//!    │      (`rootless`) and `ovl`, the one table of the overlay on-disk format
//!    ▼
//! sys/      system calls: the only place with `unsafe` or `libc` (`sys::c` re-exports the
//!           constants the rest names)
//! ```
//!
//! Beside the mount path, called by the command line and the daemon: `volume` (the volume
//! store, backups), `tarball` (tar streams in and out, safe against hostile archives) and
//! `image` (OCI layouts unpacked into a layer store and mounted; diff and commit of a
//! writable layer). `error` is what the command line and the mount path report, one type
//! with a clear message per case.

pub mod cli;
mod daemon;
pub mod error;
mod fs;
pub mod image;
mod spec;
mod sys;
mod tarball;
#[cfg(test)]
mod testutil;
mod union;
mod volume;
