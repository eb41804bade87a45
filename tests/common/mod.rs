//! Test harness shared by the integration tests: layer stacks in scratch dirs, stratafs and
//! kernel overlayfs mount guards, a tree recorder with a readable diff, the expected-union
//! model, and a seeded generator of random stacks.
#![allow(dead_code)]

pub mod convert;
pub mod gen;
mod guard;
pub mod layers;
pub mod model;
pub mod mount;
pub mod mountinfo;
pub mod rw;
pub mod sys;
pub mod tmp;
pub mod walk;

// Each test binary uses its own part of the harness.
#[allow(unused_imports)]
pub use layers::{Layer, Ns, Stack};
// Guards for stratafs, kernel overlayfs and tmpfs mounts used by the write, crash and
// sub-mount tests (the read tests use `mount::`).
#[allow(unused_imports)]
pub use guard::*;
#[allow(unused_imports)]
pub use rw::{copy_tree, mount_type, mounts_under, require_root, stratafs_bin, umount, Scratch};
#[allow(unused_imports)]
pub use walk::{assert_same, snapshot, Snapshot};
