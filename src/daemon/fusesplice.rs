//! Read replies spliced from a file straight into /dev/fuse (see `sys::splice`), for reads
//! the daemon serves itself: each session thread keeps its own pair of pipes. The FUSE
//! adapter decides when to use it (through `fs::ReadSplicer`) and what to do with the reply it
//! did not send.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};

use crate::fs::{ReadSplicer, Spliced};
use crate::sys::splice::{SpliceError, SplicePipes};

thread_local! {
    /// The splice pipes of a session thread (reads without passthrough, when splicing).
    static SPLICE_PIPES: std::cell::RefCell<Option<SplicePipes>> =
        const { std::cell::RefCell::new(None) };
}

/// Splices read replies to the session's device (a dup of its /dev/fuse fd).
pub struct DeviceSplicer(pub std::os::fd::OwnedFd);

impl ReadSplicer for DeviceSplicer {
    fn reply_read(&self, unique: u64, file: &File, offset: u64, size: usize) -> Spliced {
        reply_read(self.0.as_fd(), unique, file, offset, size)
    }
}

/// Replies to request `unique` with up to `size` bytes of `file` at `offset`, spliced to
/// `device`.
fn reply_read(
    device: BorrowedFd<'_>,
    unique: u64,
    file: &File,
    offset: u64,
    size: usize,
) -> Spliced {
    let sent = SPLICE_PIPES.with_borrow_mut(|slot| {
        if slot.is_none() {
            *slot = SplicePipes::new()
                .map_err(|e| log::debug!("no splice pipes: {e}"))
                .ok();
        }
        let pipes = slot.as_mut().filter(|p| p.fits(size))?;
        let sent = pipes.reply_read(device, unique, file.as_fd(), offset, size);
        if sent.is_err() {
            // The pipes may hold part of the reply: start afresh next time.
            *slot = None;
        }
        Some(sent)
    });
    match sent {
        None => Spliced::NotSent,
        Some(Err(SpliceError::NotSent(e))) => {
            log::debug!("read not spliced, copied: {e}");
            Spliced::NotSent
        }
        Some(Ok(_)) => Spliced::Sent,
        Some(Err(SpliceError::Device(e))) => {
            log::debug!("spliced read reply failed: {e}");
            Spliced::DeviceFailed(e)
        }
    }
}
