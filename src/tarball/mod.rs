//! Tar archives in and out of directories: the format of `podman volume export`, of
//! `tar -C DIR -cf - .` and of OCI layers.
//!
//! [`extract::extract`] unpacks a stream into a directory without ever writing outside it,
//! whatever the archive holds (see that module for how); [`pack::pack`] writes a directory
//! as a stream in bounded memory. Both name the entry in every error.

pub mod error;
pub mod extract;
mod names;
pub mod pack;
pub mod progress;

pub use extract::{extract, extract_layer, Extracted, Whiteouts};
pub use pack::{pack, Packed};
pub use progress::Progress;
