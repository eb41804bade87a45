//! Images in and out of a container. In: OCI image layouts (`oci`) whose layers are unpacked
//! once into a content-addressed store (`store`, `lease`, `fetch`) and mounted (`stratafs
//! image`, whose command line is `crate::cli::image_store`). Out: the changes of a writable layer (`stratafs diff`) and the writable
//! layer as an OCI layer tarball (`stratafs commit`), read from an upper dir in the kernel
//! overlayfs format over the image's layers (commands in `crate::cli::image`). `unpack` writes
//! one layer tarball into a layer dir. Every failure is an [`ImageError`] (`error`), which
//! the command line reports as it is.

pub mod blob;
pub mod commit;
pub mod diff;
pub mod error;
pub mod fetch;
pub mod layout_write;
pub mod lease;
pub mod lower;
pub mod oci;
pub mod store;
pub mod tree;
pub mod unpack;
pub mod upper_dir;

use std::os::fd::AsFd;
use std::path::Path;

use crate::sys;
use crate::sys::c;
pub use error::ImageError;
use error::IoContext;
use upper_dir::UpperDir;

/// Reads the root of upper dir `upper`.
fn open_upper_root(upper: &Path) -> error::Result<UpperDir> {
    sys::open_dir_path(upper)
        .and_then(|fd| sys::open_beneath(fd.as_fd(), c".", c::O_RDONLY | c::O_DIRECTORY, 0))
        .and_then(UpperDir::read)
        .context("read the upper dir", upper)
}
