//! Inode numbering (inode.rs): `tag << 48 | host inode`, the tag naming the layer (slot + 1)
//! or the upper layer; numbers that do not fit are allocated once per object. And the node
//! table that holds the nodes the kernel knows under those numbers.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;

use super::fixture::Stack;
use crate::sys::c;
use crate::union::inode::{lower_ino, upper_ino, Node, NodeInner, NodeTable, ROOT_INO, UPPER_TAG};

const HOST_BITS: u32 = 48;
const HOST_MASK: u64 = (1 << HOST_BITS) - 1;

#[test]
fn numbers_are_the_same_after_the_layers_are_opened_again() {
    let mut s = Stack::new("ino-stable", 3);
    s.file(0, "f", "0")
        .file(1, "f", "1")
        .file(0, "d/a", "0")
        .file(2, "d/b", "2");
    s.file(1, "e/deep/x", "1").dir(0, "e");
    let paths = ["f", "d", "d/a", "d/b", "e", "e/deep", "e/deep/x"];
    let first: Vec<u64> = paths.iter().map(|p| s.resolve(p).unwrap().ino()).collect();
    s.reopen();
    let again: Vec<u64> = paths.iter().map(|p| s.resolve(p).unwrap().ino()).collect();
    assert_eq!(first, again);
    let unique: HashSet<&u64> = first.iter().collect();
    assert_eq!(unique.len(), paths.len(), "{first:x?}");
    // Each is the winning object's own host number under its layer's tag.
    for (path, ino) in paths.iter().zip(&first) {
        let found = s.resolve(path).unwrap();
        let host = std::fs::symlink_metadata(s.at(
            found.lower.slot,
            std::str::from_utf8(found.lower.path()).unwrap(),
        ))
        .unwrap()
        .ino();
        assert_eq!(*ino, lower_ino(found.lower.slot, host), "{path}");
    }
}

#[test]
fn a_merged_directory_has_the_number_of_its_topmost_copy() {
    let s = Stack::new("ino-merged-dir", 3);
    s.dir(0, "d").dir(1, "d");
    s.dir(2, "r")
        .mark(2, "r", crate::union::ovl::Marker::Redirect, "/d");
    let top = std::fs::metadata(s.at(1, "d")).unwrap().ino();
    assert_eq!(s.resolve("d").unwrap().ino(), lower_ino(1, top));
    let r = std::fs::metadata(s.at(2, "r")).unwrap().ino();
    assert_eq!(
        s.resolve("r").unwrap().ino(),
        lower_ino(2, r),
        "a renamed dir keeps its own"
    );
}

#[test]
fn the_tag_names_the_layer_and_the_low_bits_the_host_object() {
    // The spec allows at most u16::MAX - 2 layers: the top slot's tag stays below UPPER_TAG.
    for slot in [0u16, 1, 7, u16::MAX - 3] {
        for host in [0, 1, 4096, HOST_MASK] {
            let ino = lower_ino(slot, host);
            assert_eq!(ino >> HOST_BITS, slot as u64 + 1, "slot {slot}");
            assert_eq!(ino & HOST_MASK, host);
            assert_ne!(ino, upper_ino(host));
        }
    }
    assert_eq!(upper_ino(77) >> HOST_BITS, UPPER_TAG);
    assert_eq!(upper_ino(77) & HOST_MASK, 77);
}

#[test]
fn distinct_objects_never_share_a_number() {
    let hosts = [
        0,
        1,
        2,
        HOST_MASK - 1,
        HOST_MASK,
        HOST_MASK + 1,
        (1 << 49) + 1,
        u64::MAX - 1,
        u64::MAX,
    ];
    let mut seen: HashMap<u64, (Option<u16>, u64)> = HashMap::new();
    seen.insert(ROOT_INO, (None, 0));
    for host in hosts {
        let objects = [0u16, 1, 2, u16::MAX - 3]
            .iter()
            .map(|&s| (Some(s), lower_ino(s, host)))
            .chain([(None, upper_ino(host))]);
        for (slot, ino) in objects {
            if let Some(other) = seen.insert(ino, (slot, host)) {
                panic!("{ino:#x}: ({slot:?}, {host:#x}) and {other:?}");
            }
            let again = slot.map_or_else(|| upper_ino(host), |s| lower_ino(s, host));
            assert_eq!(again, ino, "the same object gets the same number");
        }
    }
}

/// Host numbers of 2^48 and more get numbers from one table, under concurrent lookups.
#[test]
fn allocated_numbers_are_unique_under_concurrent_allocation() {
    const THREADS: u64 = 4;
    const PER_THREAD: u64 = 300;
    let base = 7u64 << 50;
    let results: Vec<Vec<((u16, u64), u64)>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                scope.spawn(move || {
                    (0..PER_THREAD)
                        .flat_map(|i| {
                            // Half of the objects are asked for by every thread.
                            let host = if i % 2 == 0 {
                                base + i
                            } else {
                                base + i + t * 1000
                            };
                            [
                                ((0, host), lower_ino(0, host)),
                                ((1, host), lower_ino(1, host)),
                            ]
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let mut by_object: HashMap<(u16, u64), u64> = HashMap::new();
    for (object, ino) in results.into_iter().flatten() {
        assert_eq!(
            ino >> HOST_BITS,
            0,
            "allocated numbers use the untagged range"
        );
        assert!(ino > ROOT_INO);
        let first = *by_object.entry(object).or_insert(ino);
        assert_eq!(first, ino, "{object:?} got two numbers");
    }
    let numbers: HashSet<u64> = by_object.values().copied().collect();
    assert_eq!(numbers.len(), by_object.len(), "two objects got one number");
}

fn node(ino: u64) -> Node {
    Node::new(
        ino,
        crate::union::attr::kind_of_mode(c::S_IFREG),
        NodeInner {
            links: Default::default(),
            lower: None,
            upper: false,
            index: None,
            metacopy: false,
            object: None,
            attr: crate::union::inode::NodeAttr::Own(None),
        },
    )
}

#[test]
fn the_node_table_keeps_one_node_per_number_until_forgotten() {
    let table = NodeTable::default();
    let ino = lower_ino(0, 42);
    let a = table.lookup_or_insert(ino, || node(ino));
    let b = table.lookup_or_insert(ino, || panic!("made twice"));
    assert!(Arc::ptr_eq(&a, &b));
    table.forget(ino, 1);
    assert!(table.get(ino).is_some(), "one lookup is left");
    table.forget(ino, 1);
    assert!(table.get(ino).is_none());
    table.insert_pinned(node(ROOT_INO));
    table.forget(ROOT_INO, u64::MAX);
    assert!(table.get(ROOT_INO).is_some(), "the root is never forgotten");
}

/// A removed directory's host number may come back for a new object while the kernel holds
/// the old inode: the new node gets the next generation and the old node's references.
#[test]
fn a_reused_number_gets_a_new_generation() {
    let table = NodeTable::default();
    let ino = upper_ino(9);
    let old = table.lookup_or_insert(ino, || node(ino));
    table.lookup_or_insert(ino, || node(ino));
    old.removed
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let fresh = table.lookup_or_insert(ino, || node(ino));
    assert!(!Arc::ptr_eq(&old, &fresh));
    assert_eq!(fresh.generation, old.generation + 1);
    assert_eq!(table.generation(ino), 1);
    // Two lookups of the old node and one of the new: three to forget.
    table.forget(ino, 2);
    assert!(table.get(ino).is_some());
    table.forget(ino, 1);
    assert!(table.get(ino).is_none());
}

/// A file node replaced because its object was released keeps the generation of the node it
/// replaces, also when that one was itself a replacement of a removed directory's node: the
/// kernel holds its inode under that generation.
#[test]
fn a_released_node_is_replaced_under_its_own_generation() {
    let table = NodeTable::default();
    let ino = upper_ino(11);
    let dir = table.lookup_or_insert(ino, || node(ino));
    dir.removed
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let file = table.lookup_or_insert(ino, || node(ino));
    assert_eq!(file.generation, 1);
    // Its last name goes with no file open: its object is released.
    file.settle_unlinked(&mut file.inner.write(), None);
    let fresh = table.lookup_or_insert(ino, || node(ino));
    assert!(!Arc::ptr_eq(&file, &fresh));
    assert_eq!(fresh.generation, 1);
    assert_eq!(table.generation(ino), 1);
}
