//! The files a process (a daemon under test) holds open, as /proc shows them: for tests that
//! check when a daemon lets go of a file (FUSE sends the release after close returns).

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// The fds of process `pid` open on the file at `path` for I/O (O_PATH fds do not count).
/// Matched by device and inode: the daemon reaches layers through detached mounts, whose
/// paths /proc does not show as the test knows them.
pub fn io_fds_on(pid: u32, path: &Path) -> usize {
    const O_PATH: u32 = 0o10000000;
    let st = std::fs::metadata(path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display()));
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    fds.flatten()
        .filter(|fd| {
            std::fs::metadata(fd.path()).is_ok_and(|m| m.dev() == st.dev() && m.ino() == st.ino())
        })
        .filter(|fd| {
            let info = std::fs::read_to_string(format!(
                "/proc/{pid}/fdinfo/{}",
                fd.file_name().to_string_lossy()
            ))
            .unwrap_or_default();
            let flags = info
                .lines()
                .find_map(|l| l.strip_prefix("flags:"))
                .and_then(|f| u32::from_str_radix(f.trim(), 8).ok())
                .unwrap_or(0);
            flags & O_PATH == 0
        })
        .count()
}

/// Waits until the daemon `pid` has no fd on `path`: FUSE sends a release after close
/// returns. Panics after 10 s.
pub fn wait_closed_by(pid: u32, path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while io_fds_on(pid, path) > 0 {
        assert!(
            Instant::now() < deadline,
            "the daemon still has {} open 10 s after its close",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}
