//! Read replies spliced from a file into /dev/fuse, for reads served by the daemon (no
//! passthrough: rootless mounts, where the kernel refuses backing files).
//!
//! A pread into a buffer and a write of that buffer copy the data twice; splicing moves the
//! file's page-cache pages into a pipe by reference, and the kernel copies them once, into
//! the FUSE reply (what libfuse calls splice read). The reply's header must come first and
//! give the length, which is only known once the data is read (a short read at end of file),
//! so the data goes into one pipe, and the header then the data into a second pipe that is
//! spliced to the device in one piece.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::{check, check_size};

/// The size of `struct fuse_out_header`: len (u32), error (i32), unique (u64).
const OUT_HEADER_LEN: usize = 16;
/// Asked pipe size: the largest an unprivileged process may set by default
/// (/proc/sys/fs/pipe-max-size), and the largest FUSE read (max_pages 256).
const PIPE_SIZE: libc::c_int = 1 << 20;
const PAGE: usize = 4096;

/// How a spliced reply failed.
#[derive(Debug)]
pub enum SpliceError {
    /// Nothing reached the device: the reply can still be sent another way.
    NotSent(io::Error),
    /// The write to the device failed: the request may or may not have its reply.
    Device(io::Error),
}

/// The two pipes of one serving thread. After any error they may hold stray bytes: drop
/// them and make new ones.
pub struct SplicePipes {
    data: (OwnedFd, OwnedFd),
    reply: (OwnedFd, OwnedFd),
    /// The most data bytes one reply may carry with these pipes.
    max_data: usize,
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: fds is a valid out-array of two ints.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: pipe2 succeeded: both fds are fresh and owned here.
    let ends = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: plain fcntl on an fd we own; a refusal leaves the default size.
    let size = unsafe { libc::fcntl(ends.1.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE) };
    if size < 0 {
        // SAFETY: plain fcntl on an fd we own.
        check(unsafe { libc::fcntl(ends.1.as_raw_fd(), libc::F_GETPIPE_SZ) })?;
    }
    Ok(ends)
}

fn pipe_size(fd: BorrowedFd<'_>) -> io::Result<usize> {
    // SAFETY: plain fcntl on a valid fd.
    Ok(check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETPIPE_SZ) })? as usize)
}

/// splice(2) of up to `len` bytes; `offset` is the file position for a non-pipe input.
fn splice(
    from: BorrowedFd<'_>,
    offset: Option<&mut i64>,
    to: BorrowedFd<'_>,
    len: usize,
) -> io::Result<usize> {
    let off = offset.map_or(std::ptr::null_mut(), |o| o as *mut i64);
    // No SPLICE_F_MOVE: /dev/fuse would then steal whole pages from the pipe, taking them
    // out of the layer file's page cache. Non-blocking pipe ends: a full pipe is an error
    // (EAGAIN), never a hang of the serving thread.
    // SAFETY: valid fds; `off` is null or points to a live i64.
    check_size(unsafe {
        libc::splice(
            from.as_raw_fd(),
            off,
            to.as_raw_fd(),
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_NONBLOCK,
        )
    } as libc::ssize_t)
}

/// Moves exactly `len` bytes from pipe `from` to `to` (another pipe).
fn splice_all(from: BorrowedFd<'_>, to: BorrowedFd<'_>, len: usize) -> io::Result<()> {
    let mut moved = 0;
    while moved < len {
        match splice(from, None, to, len - moved) {
            Ok(0) => return Err(io::Error::from_raw_os_error(libc::EIO)),
            Ok(n) => moved += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl SplicePipes {
    pub fn new() -> io::Result<SplicePipes> {
        let data = pipe()?;
        let reply = pipe()?;
        let size = pipe_size(data.1.as_fd())?.min(pipe_size(reply.1.as_fd())?);
        // Data from an unaligned offset spans one page more than its length; the header
        // takes a slot of its own.
        let max_data = size.saturating_sub(2 * PAGE);
        Ok(SplicePipes {
            data,
            reply,
            max_data,
        })
    }

    /// Whether a read of `size` bytes fits these pipes.
    pub fn fits(&self, size: usize) -> bool {
        size <= self.max_data
    }

    /// Replies to FUSE request `unique` on `device` with up to `size` bytes of `file` from
    /// `offset` (fewer at end of file); returns the bytes sent.
    pub fn reply_read(
        &mut self,
        device: BorrowedFd<'_>,
        unique: u64,
        file: BorrowedFd<'_>,
        offset: u64,
        size: usize,
    ) -> Result<usize, SpliceError> {
        let not_sent = SpliceError::NotSent;
        let mut pos = i64::try_from(offset)
            .map_err(|_| not_sent(io::Error::from_raw_os_error(libc::EINVAL)))?;
        let limit = size.min(self.max_data);
        let mut n = 0;
        while n < limit {
            match splice(file, Some(&mut pos), self.data.1.as_fd(), limit - n) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(not_sent(e)),
            }
        }
        let mut header = [0u8; OUT_HEADER_LEN];
        header[..4].copy_from_slice(&((OUT_HEADER_LEN + n) as u32).to_ne_bytes());
        header[8..].copy_from_slice(&unique.to_ne_bytes());
        // SAFETY: header is a live buffer of its length; the fd is our pipe's write end.
        let wrote = check_size(unsafe {
            libc::write(
                self.reply.1.as_raw_fd(),
                header.as_ptr().cast(),
                header.len(),
            )
        })
        .map_err(not_sent)?;
        if wrote != header.len() {
            return Err(not_sent(io::Error::from_raw_os_error(libc::EIO)));
        }
        splice_all(self.data.0.as_fd(), self.reply.1.as_fd(), n).map_err(not_sent)?;
        // The device takes one whole reply per write.
        match splice(self.reply.0.as_fd(), None, device, OUT_HEADER_LEN + n) {
            Ok(k) if k == OUT_HEADER_LEN + n => Ok(n),
            Ok(_) => Err(SpliceError::Device(io::Error::from_raw_os_error(libc::EIO))),
            Err(e) => Err(SpliceError::Device(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// What reaches the device end is one whole FUSE reply: the header with the length and
    /// the request's unique id, then the file's bytes from the offset (short at end of file).
    #[test]
    fn a_spliced_reply_is_header_then_the_file_bytes() {
        let dir = crate::testutil::TempDir::new("sys-splice");
        let path = dir.path().join("f");
        let content: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &content).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let mut pipes = SplicePipes::new().unwrap();
        assert!(pipes.fits(128 * 1024));
        // A pipe stands in for /dev/fuse.
        let (dev_r, dev_w) = pipe().unwrap();
        for (offset, size, want) in [(100u64, 8192usize, 8192usize), (15_000, 8192, 5_000)] {
            let sent = pipes
                .reply_read(dev_w.as_fd(), 0xabcdef, file.as_fd(), offset, size)
                .unwrap();
            assert_eq!(sent, want);
            let mut got = vec![0u8; OUT_HEADER_LEN + want];
            std::fs::File::from(dev_r.try_clone().unwrap())
                .read_exact(&mut got)
                .unwrap();
            assert_eq!(got[..4], ((OUT_HEADER_LEN + want) as u32).to_ne_bytes());
            assert_eq!(got[4..8], [0; 4], "no error");
            assert_eq!(got[8..16], 0xabcdefu64.to_ne_bytes());
            let start = offset as usize;
            assert_eq!(&got[OUT_HEADER_LEN..], &content[start..start + want]);
        }
    }
}
