//! Stacks on stacks: a layer that is itself a stratafs mount reports inode numbers of 2^48 and
//! more (its own layer tags). Each object must still get its own FUSE node id and st_ino, so
//! every file reads its own data and readdir's d_ino equals st_ino.

mod common;

use std::collections::HashMap;
use std::os::unix::fs::{DirEntryExt, MetadataExt};
use std::path::{Path, PathBuf};

use common::rw::{require_root, StrataChild, StrataSpec, Tmpfs};
use common::tmp::TempDir;

const FILES_PER_LAYER: usize = 32;

/// Two layers, each on a tmpfs of its own and filled in the same order, so the host inode
/// numbers of both are the same small numbers (what made folded numbers of the two layers
/// meet once a stack above saw them with their layer tags).
fn layers(dir: &Path) -> (Vec<Tmpfs>, Vec<PathBuf>, HashMap<String, Vec<u8>>) {
    let (l0, l1) = (dir.join("l0"), dir.join("l1"));
    let mut guards = Vec::new();
    for l in [&l0, &l1] {
        std::fs::create_dir_all(l).expect("create a layer dir");
        guards.push(Tmpfs::mount(l, "16m").unwrap_or_else(|e| panic!("{e}")));
        std::fs::create_dir(l.join("sub")).expect("create a layer subdir");
    }
    let mut expected = HashMap::new();
    for (l, prefix) in [(&l0, "a"), (&l1, "b")] {
        for i in 0..FILES_PER_LAYER {
            let name = format!("{prefix}{i}");
            let rel = if i % 2 == 0 {
                name
            } else {
                format!("sub/{name}")
            };
            let data = format!("{rel} in {}\n", l.display()).into_bytes();
            std::fs::write(l.join(&rel), &data).expect("write a layer file");
            expected.insert(rel, data);
        }
    }
    (guards, vec![l0, l1], expected)
}

fn mount(dir: &TempDir, name: &str, layers: Vec<PathBuf>, upper: bool) -> StrataChild {
    let upper = upper.then(|| {
        (
            dir.subdir(&format!("{name}/upper")),
            dir.subdir(&format!("{name}/work")),
        )
    });
    StrataChild::start(&StrataSpec {
        layers,
        upper,
        mountpoint: dir.subdir(&format!("{name}/mnt")),
        log: dir.path().join(format!("{name}.log")),
        extra_args: Vec::new(),
    })
    .unwrap_or_else(|e| panic!("mount {name}: {e}"))
}

/// Every file of `expected` reads its own data under `root`; d_ino == st_ino for every entry;
/// no two files share an inode number.
fn check(root: &Path, expected: &HashMap<String, Vec<u8>>, what: &str) {
    let mut wrong = Vec::new();
    for (rel, data) in expected {
        match std::fs::read(root.join(rel)) {
            Ok(got) if got == *data => {}
            Ok(got) => wrong.push(format!("{rel}: read {:?}", String::from_utf8_lossy(&got))),
            Err(e) => wrong.push(format!("{rel}: {e}")),
        }
    }
    assert!(
        wrong.is_empty(),
        "{what}: {} of {} files read wrong data:\n{}",
        wrong.len(),
        expected.len(),
        wrong.join("\n")
    );
    let mut owners: HashMap<u64, String> = HashMap::new();
    for dir in ["", "sub"] {
        for entry in std::fs::read_dir(root.join(dir)).expect("readdir") {
            let entry = entry.expect("readdir entry");
            let path = entry.path();
            let st = std::fs::symlink_metadata(&path).expect("lstat");
            assert_eq!(
                entry.ino(),
                st.ino(),
                "{what}: d_ino of {} is not its st_ino",
                path.display()
            );
            if let Some(other) = owners.insert(st.ino(), path.display().to_string()) {
                panic!(
                    "{what}: {} and {other} share inode number {:#x}",
                    path.display(),
                    st.ino()
                );
            }
        }
    }
}

#[test]
fn stratafs_over_stratafs_reads_every_file_right() {
    require_root();
    let dir = TempDir::new("nested");
    let (_tmpfs, lower, mut expected) = layers(&dir.subdir("layers"));
    let inner = mount(&dir, "inner", lower, false);
    check(inner.path(), &expected, "the inner mount");

    // The outer stack: the inner mount as its only layer, and an upper with files of its own.
    let outer = mount(&dir, "outer", vec![inner.path().to_path_buf()], true);
    for i in 0..4 {
        let rel = format!("sub/new{i}");
        let data = format!("{rel} made in the outer upper\n").into_bytes();
        std::fs::write(outer.path().join(&rel), &data).expect("write through the outer mount");
        expected.insert(rel, data);
    }
    check(outer.path(), &expected, "stratafs over stratafs");
    // And a third level over the outer mount's view.
    let third = mount(&dir, "third", vec![outer.path().to_path_buf()], false);
    check(
        third.path(),
        &expected,
        "stratafs over stratafs over stratafs",
    );
    third.unmount().unwrap_or_else(|e| panic!("{e}"));
    outer.unmount().unwrap_or_else(|e| panic!("{e}"));
    inner.unmount().unwrap_or_else(|e| panic!("{e}"));
}
