//! Images in and out of a container. In: OCI image layouts (`oci`) whose layers are unpacked
//! once into a content-addressed store (`store`, `lease`) and mounted (`stratafs image`,
//! `store_cli`). Out: the changes of a writable layer (`stratafs diff`) and the writable
//! layer as an OCI layer tarball (`stratafs commit`), read from an upper dir in the kernel
//! overlayfs format over the image's layers.

pub mod blob;
pub mod cli;
pub mod commit;
pub mod diff;
pub mod layout_write;
pub mod lease;
pub mod lower;
pub mod oci;
pub mod store;
pub mod store_cli;
pub mod tree;
pub mod upper_dir;

use std::os::fd::AsFd;
use std::path::Path;

use crate::sys;
use upper_dir::UpperDir;

/// Reads the root of upper dir `upper`.
fn open_upper_root(upper: &Path) -> Result<UpperDir, String> {
    sys::open_dir_path(upper)
        .and_then(|fd| sys::open_beneath(fd.as_fd(), c".", libc::O_RDONLY | libc::O_DIRECTORY, 0))
        .and_then(UpperDir::read)
        .map_err(|e| format!("cannot read the upper dir {}: {e}", upper.display()))
}
