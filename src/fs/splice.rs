//! Read replies the daemon serves itself, spliced to the session's device by what the daemon
//! provides (the adapter sends nothing to the device on its own).

use fuser::{Errno, ReplyData};

use super::StrataFs;
use crate::union::OpenFile;

/// What became of a spliced read reply.
pub enum Spliced {
    /// The reply reached the device.
    Sent,
    /// Nothing reached the device (no pipes, a read too large for them, a splice failure):
    /// the reply is still to be sent the usual way.
    NotSent,
    /// The write to the device failed: the request may or may not have its reply.
    DeviceFailed(std::io::Error),
}

/// Sends a read reply by splicing a file's pages to the session's device.
pub trait ReadSplicer: Send + Sync {
    /// Replies to request `unique` with up to `size` bytes of `file` at `offset`.
    fn reply_read(&self, unique: u64, file: &std::fs::File, offset: u64, size: usize) -> Spliced;
}

impl StrataFs {
    /// Replies to a read by splicing the file's pages to the device, where the session
    /// allows it (see `ReadSplicer`); hands the reply back when it must be sent the
    /// usual way.
    pub(super) fn splice_read(
        &self,
        unique: u64,
        file: &OpenFile,
        offset: u64,
        size: usize,
        reply: ReplyData,
    ) -> Option<ReplyData> {
        let Some(splicer) = self.splice_device.get() else {
            return Some(reply);
        };
        let file = match file.as_file() {
            Ok(f) => f,
            Err(e) => {
                reply.error(Errno::from(e));
                return None;
            }
        };
        match splicer.reply_read(unique, file, offset, size) {
            Spliced::NotSent => Some(reply),
            Spliced::Sent => {
                // The reply went to the device directly; the ReplyData, unused, must not send
                // a second one (its drop would answer EIO to a request already answered).
                std::mem::forget(reply);
                None
            }
            Spliced::DeviceFailed(e) => {
                reply.error(Errno::from(e));
                None
            }
        }
    }
}
