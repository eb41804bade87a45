//! Unit tests of the union core that need neither FUSE, nor a mount, nor root: small layer
//! trees are built in unique temp dirs and read through the same functions the mount uses
//! (merge, lower walk, whiteout and marker reading, inode numbering, copy-up). Markers are
//! written in the `user.` namespace, which a normal user may set; the `trusted.` names are
//! checked through the format table, and on disk only where the test runs as root.
//!
//! The mount tests under tests/ stay the end-to-end proof; these pin each rule down alone.

mod copy_up;
mod fixture;
mod inodes;
mod merge_rules;
mod redirects;
mod whiteout_forms;
