//! Test harness shared by the integration tests: layer stacks in scratch dirs, stratafs and
//! kernel overlayfs mount guards, a tree recorder with a readable diff, the expected-union
//! model, and a seeded generator of random stacks.
#![allow(dead_code)]

pub mod convert;
pub mod gen;
pub mod layers;
pub mod model;
pub mod mount;
pub mod mountinfo;
pub mod procfds;
pub mod rw;
pub mod sys;
pub mod tmp;
pub mod userns;
pub mod walk;
pub mod workers;

// Each test binary uses its own part of the harness.
#[allow(unused_imports)]
pub use layers::{Layer, Ns, Stack};
#[allow(unused_imports)]
pub use rw::{copy_tree, mount_type, mounts_under, require_root, stratafs_bin, umount, Scratch};
#[allow(unused_imports)]
pub use walk::{assert_same, snapshot, Snapshot};
