//! A multi-process stress run in the manner of fsstress: several processes at once apply
//! generated operation sequences (create, write, truncate, link, rename, unlink, mkfifo,
//! setxattr, ...) to one mounted union, each in a subtree of its own that starts as a copy of
//! the differential fixture in the lower layers. Own subtrees make every process's outcomes and
//! the final tree independent of how the processes interleave, so the same run on kernel
//! overlayfs is the reference: the outcomes, the merged tree, and the tree after a remount of
//! stratafs must all match it, and the remount must change nothing.
//!
//! The processes are this test binary started again on its ignored `stress_worker` test, told
//! what to do through WORKER_ENV.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::rw::copy_tree;
use crate::common::tmp::TempDir;
use crate::common::workers::{worker_fields, Worker};

use super::differential::{mount_both, side, snap, Differences};
use super::fixture::{build_template, Extras, Template};
use super::ops::{apply, describe, generate, Op};
use super::tree::View;

/// Concurrent processes per run.
pub const WORKERS: usize = 4;
/// Operations each process applies.
pub const OPS_PER_WORKER: usize = 60;
/// How long all processes of one side may take together.
const WORKERS_TIMEOUT: Duration = Duration::from_secs(300);
/// Tells a started test binary to act as one worker: "ROOT\tWORKER\tSEED\tOUTFILE".
pub const WORKER_ENV: &str = "STRATAFS_STRESS_WORKER";

/// The subtree of worker `w`.
fn subtree(w: usize) -> String {
    format!("p{w}")
}

/// Lower layers holding one copy of the differential fixture per worker, in `p0`, `p1`, ...
pub fn stress_template(dir: &Path) -> Template {
    let base = build_template(&dir.join("base"), Extras::default());
    let mut layers = Vec::new();
    for (i, layer) in base.layers.iter().enumerate() {
        let stacked = dir.join(format!("s{i}"));
        std::fs::create_dir(&stacked).expect("create a stress layer dir");
        for w in 0..WORKERS {
            // `cp -a LAYER NEW` makes NEW a copy of LAYER.
            copy_tree(layer, &stacked.join(subtree(w)));
        }
        layers.push(stacked);
    }
    Template { layers }
}

/// The operations of worker `w` in run `seed`: a generated sequence moved into its subtree.
pub fn worker_ops(seed: u64, w: usize) -> Vec<Op> {
    let prefix = subtree(w);
    generate(seed * 1_000 + w as u64, OPS_PER_WORKER)
        .iter()
        .map(|op| {
            op.map_paths(|p| -> &'static str {
                Box::leak(format!("{prefix}/{p}").into_boxed_str())
            })
        })
        .collect()
}

/// The body of one worker process: applies its operations under ROOT and writes one outcome
/// per line (debug-quoted, so a line holds exactly one) to OUTFILE.
pub fn worker_main() {
    let fields = worker_fields(WORKER_ENV, &["ROOT", "WORKER", "SEED", "OUTFILE"]);
    let [root, w, seed, out] = &fields[..] else {
        unreachable!("worker_fields checks the count")
    };
    let (w, seed): (usize, u64) = (
        w.parse().expect("worker number"),
        seed.parse().expect("seed"),
    );
    let lines: Vec<String> = worker_ops(seed, w)
        .iter()
        .map(|op| format!("{:?}", describe(&apply(Path::new(root), op))))
        .collect();
    std::fs::write(out, lines.join("\n")).expect("write the worker's outcomes");
}

/// Starts every worker on `root` at once and waits for all; returns each one's outcomes.
fn run_workers(root: &Path, seed: u64, logs: &Path) -> Result<Vec<Vec<String>>, String> {
    let mut workers = Worker::start_all(
        "stress_worker",
        WORKER_ENV,
        WORKERS,
        logs,
        "outcomes",
        "worker",
        |w, out| format!("{}\t{w}\t{seed}\t{}", root.display(), out.display()),
    )?;
    let deadline = Instant::now() + WORKERS_TIMEOUT;
    let mut failures = Vec::new();
    for (w, worker) in workers.iter_mut().enumerate() {
        let why = match worker.wait_until(deadline) {
            Some(s) if s.success() => continue,
            Some(s) => format!("exited with {s}"),
            None => format!("still running after {WORKERS_TIMEOUT:?} (hung?), killed"),
        };
        let output = worker.log_text();
        failures.push(format!("worker {w} on {}: {why}\n{output}", root.display()));
    }
    if !failures.is_empty() {
        return Err(failures.join("\n"));
    }
    workers
        .iter()
        .map(|Worker { out, .. }| {
            std::fs::read_to_string(out)
                .map(|s| s.split('\n').map(str::to_string).collect())
                .map_err(|e| format!("outcomes {}: {e}", out.display()))
        })
        .collect()
}

/// What one stress run did, for the caller's checks of coverage.
pub struct StressReport {
    /// Per operation kind (the variant name): how many succeeded on the kernel.
    pub succeeded: BTreeMap<String, usize>,
}

fn kind(op: &Op) -> String {
    let dbg = format!("{op:?}");
    dbg.split([' ', '{']).next().unwrap_or_default().to_string()
}

/// One run with seed `seed`: the workers on the kernel, then on stratafs; Err lists every
/// difference found.
pub fn stress_run(template: &Template, seed: u64) -> Result<StressReport, String> {
    let scratch = TempDir::new("stress");
    let k = side(&scratch, "kernel", template);
    let s = side(&scratch, "strata", template);
    let (kernel, strata) = mount_both(&scratch, &k, &s)?;

    let kernel_out = run_workers(&k.mnt, seed, &scratch.subdir("kernel-logs"))?;
    let strata_out = run_workers(&s.mnt, seed, &scratch.subdir("strata-logs"))
        .map_err(|e| format!("seed {seed}: {e}"))?;

    let mut differences = Differences {
        ignore: &[],
        ignore_upper: &[],
        lower_layers: &template.layers,
        found: Vec::new(),
    };
    let mut succeeded = BTreeMap::new();
    for w in 0..WORKERS {
        let ops = worker_ops(seed, w);
        for (i, op) in ops.iter().enumerate() {
            let (ko, so) = (&kernel_out[w][i], &strata_out[w][i]);
            if ko == "\"ok\"" || ko.starts_with("\"ok: ") {
                *succeeded.entry(kind(op)).or_insert(0) += 1;
            }
            if ko != so {
                let before: Vec<String> = ops[..i]
                    .iter()
                    .zip(&kernel_out[w])
                    .map(|(op, o)| format!("    {op:?} -> {o}"))
                    .collect();
                differences.found.push(format!(
                    "worker {w}, operation #{i} {op:?}: kernel {ko}, stratafs {so}\n  after (kernel outcomes):\n{}",
                    before.join("\n")
                ));
                break;
            }
        }
    }

    let kernel_tree = snap(&k.mnt, View::Merged, "the kernel mount")?;
    let strata_tree = snap(&s.mnt, View::Merged, "the stratafs mount")?;
    differences.check(
        "merged trees differ",
        ("kernel", &kernel_tree),
        ("stratafs", &strata_tree),
        View::Merged,
    );
    kernel.unmount()?;
    strata.unmount()?;

    let strata = s.mount_strata(&scratch, &[])?;
    let remounted = snap(&s.mnt, View::Merged, "the remounted stratafs")?;
    strata.unmount()?;
    differences.check(
        "stratafs changed across a remount",
        ("stratafs", &strata_tree),
        ("stratafs-remounted", &remounted),
        View::Merged,
    );
    differences.check(
        "stratafs after a remount differs from the kernel",
        ("kernel", &kernel_tree),
        ("stratafs-remounted", &remounted),
        View::Merged,
    );
    if !differences.found.is_empty() {
        return Err(format!(
            "seed {seed} ({WORKERS} processes x {OPS_PER_WORKER} operations; \
             STRATAFS_STRESS_SEED={seed} to rerun):\n{}",
            differences.found.join("\n")
        ));
    }
    Ok(StressReport { succeeded })
}
