//! A directory read then stat'ed entry by entry (find, ls -l, du, tar) costs the daemon one
//! request per chunk of the listing, not one per name: every chunk comes with the entries'
//! attributes (readdirplus), also the chunks after the first one, so the stats that follow
//! are answered from the kernel's cache. With the kernel's adaptive readdirplus only the
//! first chunk had attributes, and each name after it cost a LOOKUP round trip; on a cold
//! walk of a large tree those were the biggest share of the requests.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::mount::{run_bounded, stderr_path, StrataMount, STRATAFS};
use common::require_root;
use common::tmp::TempDir;

/// More names than any kernel's readdir chunk holds (at most 128 KiB, ~800 entries with
/// attributes), so the listing takes several chunks.
const NAMES: usize = 2000;

fn name(i: usize) -> String {
    format!("entry-{i:05}")
}

/// Mounts `layer` with the FUSE library's per-request log lines going to `log`.
fn mount_logging_requests(layer: &Path, mnt: &Path, log: &Path) -> StrataMount {
    let status = run_bounded(
        Command::new(STRATAFS)
            .env("RUST_LOG", "fuser=debug,warn")
            .arg("mount")
            .arg("--daemon")
            .arg("--log-file")
            .arg(log)
            .arg("--layer")
            .arg(layer)
            .arg(mnt),
        &stderr_path(mnt),
        Duration::from_secs(20),
    );
    let m = StrataMount::adopt(mnt);
    assert!(
        status.is_some_and(|s| s.success()),
        "stratafs mount --daemon {}: {status:?}; stderr:\n{}",
        mnt.display(),
        m.stderr()
    );
    m
}

#[test]
fn stat_after_readdir_of_a_large_directory_sends_no_lookups() {
    require_root();
    let t = TempDir::new("listing-requests");
    let layer = t.subdir("layer");
    let big = layer.join("big");
    std::fs::create_dir(&big).unwrap();
    for i in 0..NAMES {
        std::fs::write(big.join(name(i)), vec![b'x'; i % 97]).unwrap();
    }
    let mnt = t.subdir("mnt");
    let log = t.path().join("requests.log");
    let m = mount_logging_requests(&layer, &mnt, &log);

    // As find -printf %s does: the whole listing first, then a stat of each name.
    let listed: Vec<_> = std::fs::read_dir(mnt.join("big"))
        .expect("read the merged dir")
        .map(|e| e.expect("dir entry").file_name())
        .collect();
    assert_eq!(listed.len(), NAMES, "names listed in the merged dir");
    for n in &listed {
        let merged = std::fs::symlink_metadata(mnt.join("big").join(n)).expect("stat merged");
        let lower = std::fs::symlink_metadata(big.join(n)).expect("stat lower");
        assert_eq!(
            (merged.len(), merged.mode(), merged.mtime()),
            (lower.len(), lower.mode(), lower.mtime()),
            "attributes of {n:?}"
        );
    }
    m.unmount().expect("unmount");

    let requests = std::fs::read_to_string(&log).expect("read the request log");
    assert!(
        requests.contains("READDIRPLUS"),
        "the request log shows no READDIRPLUS: is the FUSE library's debug log still on?\n{}",
        &requests[..requests.len().min(2000)]
    );
    let lookups = requests
        .lines()
        .filter(|l| l.contains("LOOKUP name \"entry-"))
        .count();
    assert_eq!(
        lookups, 0,
        "stat of names already listed went to the daemon as LOOKUPs"
    );
}
