//! The scripted operation list every differential run of the writable layer goes through: each
//! kind of change on lower, merged, moved and new objects, with the lookups that tell whether
//! the change was recorded right.

use super::ops::{Mode, Op, RenameFlags::*};

#[rustfmt::skip]
pub fn scripted_ops() -> Vec<Op> {
    vec![
        // Writes: new files, appends and overwrites of lower files (copy-up with data).
        Op::Create { path: "new", mode: Mode(0o644), len: 100, byte: 1 },
        Op::Append { path: "f", len: 10, byte: 2 },
        Op::Append { path: "d/g", len: 5000, byte: 3 },
        Op::Overwrite { path: "sub/d/g", off: 4090, len: 20, byte: 4 },
        Op::WriteTrunc { path: "d/f", len: 7, byte: 5 },
        // Metadata of lower objects (copy-up keeping data, owner, xattrs and times).
        Op::Chmod { path: "g", mode: Mode(0o4755) },
        Op::Chown { path: "d/sub/f", uid: 1000, gid: 1000 },
        Op::Chown { path: "g", uid: 0, gid: 0 },
        Op::Utimes { path: "sub/f", secs: 600_000_000 },
        Op::Utimes { path: "d/sub", secs: 610_000_000 },
        Op::Chmod { path: "d/sub/e", mode: Mode(0o711) },
        Op::Chmod { path: "x", mode: Mode(0o600) },
        Op::Chown { path: "h", uid: 65534, gid: 65534 },
        // Truncation: to zero (no data copied), shorter, longer.
        Op::Truncate { path: "sub/f", size: 0 },
        Op::Truncate { path: "g", size: 50 },
        Op::Truncate { path: "sub/d/f", size: 300_000 },
        // Sparse writes far beyond the end of a lower and of an upper file.
        Op::SparseWrite { path: "f", gap: 64 << 20, byte: 6 },
        Op::SparseWrite { path: "sparse", gap: 1 << 20, byte: 7 },
        Op::SparseWrite { path: "new", gap: 5 << 20, byte: 8 },
        // File renames, RENAME_NOREPLACE, RENAME_EXCHANGE.
        Op::Rename { from: "new", to: "d/new", flags: Plain },
        Op::Rename { from: "f", to: "g", flags: NoReplace },
        Op::Rename { from: "f", to: "f3", flags: NoReplace },
        Op::Rename { from: "d/h", to: "f3", flags: Exchange },
        Op::Rename { from: "x", to: "nothere", flags: Exchange },
        Op::Rename { from: "sub/d/f", to: "d/f", flags: Plain },
        // Directory renames (redirects): a lower dir, a merged dir, and a redirected dir again.
        Op::Rename { from: "sub/d", to: "moved", flags: Plain },
        Op::Stat { path: "moved/n/f" },
        Op::Read { path: "moved/g" },
        Op::ListDir { path: "moved" },
        Op::Rename { from: "d/sub", to: "d/sub2", flags: Plain },
        Op::ListDir { path: "d/sub2" },
        Op::Stat { path: "d/sub" },
        Op::Rename { from: "moved", to: "d/sub2/moved", flags: Plain },
        Op::ListDir { path: "d/sub2/moved/n" },
        Op::Rename { from: "e", to: "n", flags: Exchange },
        Op::ListDir { path: "n" },
        Op::ListDir { path: "e" },
        Op::Rename { from: "d/sub2/e", to: "sub/e2", flags: NoReplace },
        // rm -rf of lower trees, a new dir of the same name, and the old names must stay gone
        // (fuse-overlayfs bug #324 showed them again).
        Op::RmRf { path: "sub" },
        Op::Mkdir { path: "sub", mode: Mode(0o755) },
        Op::Stat { path: "sub/f" },
        Op::Stat { path: "sub/d" },
        Op::ListDir { path: "sub" },
        Op::RmRf { path: "d" },
        Op::Mkdir { path: "d", mode: Mode(0o700) },
        Op::Stat { path: "d/f" },
        Op::Stat { path: "d/sub2" },
        Op::Stat { path: "d/d" },
        Op::ListDir { path: "d" },
        Op::Mkdir { path: "d/d", mode: Mode(0o755) },
        Op::Stat { path: "d/d/f" },
        // Hard links: of a lower file (copy-up first) and of a new file.
        Op::Link { from: "g", to: "g-link" },
        Op::Link { from: "f3", to: "sub/f3-link" },
        Op::Append { path: "g-link", len: 3, byte: 9 },
        Op::Stat { path: "g" },
        // Symlinks.
        Op::Symlink { target: "g", path: "s1" },
        Op::Symlink { target: "../nowhere", path: "d/s2" },
        Op::Read { path: "s1" },
        // user.* xattrs: set on lower and new objects, remove a lower one, refuse on symlinks.
        Op::SetXattr { path: "f3", name: "user.a", value: "1" },
        Op::SetXattr { path: "n/g", name: "user.b", value: "red" },
        Op::RemoveXattr { path: "g", name: "user.color" },
        Op::SetXattr { path: "e", name: "user.dir", value: "on a moved dir" },
        Op::SetXattr { path: "h", name: "user.a", value: "1" },
        // FIFOs and removals of lower objects.
        Op::Mkfifo { path: "fifo1", mode: Mode(0o640) },
        Op::Mkfifo { path: "g", mode: Mode(0o644) },
        Op::Unlink { path: "h" },
        Op::Unlink { path: "nothere" },
        Op::OpenUnlinkWrite { path: "g-link", len: 5000, byte: 10 },
        Op::OpenUnlinkWrite { path: "fifo1", len: 1, byte: 11 },
        Op::Rmdir { path: "n" },
        Op::Rmdir { path: "sub" },
        // A redirected dir that stays: its upper copy must carry the redirect.
        Op::Rename { from: "n", to: "n-moved", flags: Plain },
        Op::ListDir { path: "n-moved" },
        Op::ListDir { path: "" },
    ]
}
