//! Multi-process stress runs against kernel overlayfs (see tests/write_union/stress.rs).
//!
//! STRATAFS_STRESS_SEEDS=N runs seeds 1..=N (default 3); STRATAFS_STRESS_SEED=S runs only seed
//! S; STRATAFS_KEEP_GOING=1 goes on after a failing seed and reports them all.

mod common;

#[path = "write_union/differential.rs"]
mod differential;
#[path = "write_union/fixture.rs"]
mod fixture;
#[path = "write_union/ops.rs"]
mod ops;
#[path = "write_union/stress.rs"]
mod stress;
#[path = "write_union/sysc.rs"]
mod sysc;
#[path = "write_union/tree.rs"]
mod tree;

use std::collections::BTreeMap;

use common::rw::require_root;
use common::tmp::TempDir;
use common::workers::env_u64;
use stress::{stress_run, stress_template, OPS_PER_WORKER, WORKERS};

/// Several processes at once create, write, truncate, link, rename, unlink, mkfifo and setxattr
/// in one mounted tree; stratafs must observe what the kernel observes, end with the kernel's
/// tree, and keep that tree across a remount.
#[test]
fn multi_process_stress() {
    require_root();
    let seeds: Vec<u64> = match env_u64("STRATAFS_STRESS_SEED") {
        Some(s) => vec![s],
        None => (1..=env_u64("STRATAFS_STRESS_SEEDS").unwrap_or(3)).collect(),
    };
    let keep_going = std::env::var_os("STRATAFS_KEEP_GOING").is_some();
    let dir = TempDir::new("stress-template");
    let template = stress_template(dir.path());
    let mut failures = Vec::new();
    let mut succeeded: BTreeMap<String, usize> = BTreeMap::new();
    for &seed in &seeds {
        match stress_run(&template, seed) {
            Ok(report) => {
                for (kind, n) in report.succeeded {
                    *succeeded.entry(kind).or_insert(0) += n;
                }
            }
            Err(e) => {
                eprintln!("{e}\n");
                failures.push(e);
                if !keep_going {
                    break;
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} stress seed(s) failed:\n\n{}",
        failures.len(),
        seeds.len(),
        failures.join("\n\n")
    );
    // The run stresses what it claims: each kind of change succeeded at least once.
    let wanted = [
        "Create",
        "Append",
        "Overwrite",
        "Truncate",
        "Link",
        "Rename",
        "Unlink",
        "Mkfifo",
        "SetXattr",
    ];
    if seeds.len() >= 3 {
        let missing: Vec<&str> = wanted
            .iter()
            .copied()
            .filter(|k| succeeded.get(*k).copied().unwrap_or(0) == 0)
            .collect();
        assert!(
            missing.is_empty(),
            "over {} seeds x {WORKERS} processes x {OPS_PER_WORKER} operations, no {missing:?} \
             succeeded (successes per kind: {succeeded:?}): the generator no longer covers them",
            seeds.len()
        );
    }
    eprintln!(
        "successful operations per kind over {} seed(s): {succeeded:?}",
        seeds.len()
    );
}

/// One worker process of `multi_process_stress` (started by it with its task in the
/// environment; not meant to be run by hand).
#[test]
#[ignore = "a worker process of multi_process_stress, started by it"]
fn stress_worker() {
    stress::worker_main();
}
