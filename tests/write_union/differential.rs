//! One differential run: the same operations on kernel overlayfs and on stratafs over identical
//! copies of the same layers, then the merged trees, the upper dirs, a remount of stratafs, and
//! both cross mounts (each implementation on the upper dir the other one wrote) compared.

use std::path::{Path, PathBuf};

use crate::common::{copy_tree, KernelOverlay, Scratch, StrataMount, StrataSpec};

use super::fixture::Template;
use super::ops::{apply, describe, Op, Outcome};
use super::tree::{diff, snapshot, Tree, View};

/// Kernel overlayfs options of the reference: directory renames write redirects (as stratafs
/// does); no index, so lower hard links are broken by copy-up (see the hard-link test).
pub const KERNEL_OPTS: &str = "redirect_dir=on,index=off,metacopy=off";

/// A check run against both mounts after the operations, while they are live.
pub type LiveCheck<'a> = &'a dyn Fn(&Path, &Path) -> Result<(), String>;

#[derive(Default)]
pub struct Options<'a> {
    /// Paths whose differences are expected (documented divergences; the caller checks them).
    pub ignore_paths: &'a [&'a str],
    /// Extra assertions on (kernel mount, stratafs mount) after the operations.
    pub live_check: Option<LiveCheck<'a>>,
}

/// Snapshots kept for further assertions by the caller.
pub struct Report {
    /// What each operation observed (the same on both, or the run fails).
    pub outcomes: Vec<Outcome>,
    pub strata_merged: Tree,
    pub strata_upper: Tree,
}

struct Side {
    layers: Vec<PathBuf>,
    upper: PathBuf,
    work: PathBuf,
    mnt: PathBuf,
}

fn side(scratch: &Scratch, name: &str, template: &Template) -> Side {
    let base = scratch.dir(name);
    let layer_dir = base.join("layers");
    std::fs::create_dir(&layer_dir).expect("create layers dir");
    let mut layers = Vec::new();
    for l in &template.layers {
        copy_tree(l, &layer_dir);
        layers.push(layer_dir.join(l.file_name().expect("layer dir name")));
    }
    Side {
        layers,
        upper: scratch.dir(&format!("{name}/upper")),
        work: scratch.dir(&format!("{name}/work")),
        mnt: scratch.dir(&format!("{name}/mnt")),
    }
}

fn strata_spec(scratch: &Scratch, s: &Side, upper: &Path, work: &Path) -> StrataSpec {
    StrataSpec {
        layers: s.layers.clone(),
        upper: Some((upper.to_path_buf(), work.to_path_buf())),
        mountpoint: s.mnt.clone(),
        log: scratch.path.join("stratafs.log"),
    }
}

fn compare(
    stage: &str,
    a_name: &str,
    a: &Tree,
    b_name: &str,
    b: &Tree,
    view: View,
    ignore: &[&str],
) -> Result<(), String> {
    let ignored = |line: &String| {
        ignore.iter().any(|p| {
            line.strip_prefix(p)
                .is_some_and(|rest| rest.starts_with(':') || rest.starts_with('/'))
        })
    };
    let diffs: Vec<String> = diff(a_name, a, b_name, b, view)
        .into_iter()
        .filter(|l| !ignored(l))
        .collect();
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(format!("{stage}:\n  {}", diffs.join("\n  ")))
    }
}

fn snap(path: &Path, view: View, what: &str) -> Result<Tree, String> {
    snapshot(path, view).map_err(|e| format!("snapshot of {what}: {e}"))
}

/// Runs `ops` differentially; Err describes the first stage that differs.
pub fn run(template: &Template, ops: &[Op], opts: &Options<'_>) -> Result<Report, String> {
    let scratch = Scratch::new("wu");
    let k = side(&scratch, "kernel", template);
    let s = side(&scratch, "strata", template);

    let kernel = KernelOverlay::mount(&k.layers, Some((&k.upper, &k.work)), &k.mnt, KERNEL_OPTS)?;
    let strata = StrataMount::start(&strata_spec(&scratch, &s, &s.upper, &s.work))?;

    let mut log = Vec::new();
    let mut outcomes = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        let ko = apply(&k.mnt, op);
        let so = apply(&s.mnt, op);
        log.push(format!("  #{i} {op:?} -> {}", describe(&ko)));
        if ko != so {
            return Err(format!(
                "operation #{i} {op:?}: kernel {}, stratafs {}\n{}",
                describe(&ko),
                describe(&so),
                log.join("\n")
            ));
        }
        outcomes.push(ko);
    }
    let with_log = |e: String| {
        format!(
            "{e}\noperations and their kernel outcomes:\n{}",
            log.join("\n")
        )
    };

    // Every stage runs even after one differs: together they tell where a difference comes from.
    let mut problems: Vec<String> = Vec::new();
    if let Some(check) = opts.live_check {
        if let Err(e) = check(&k.mnt, &s.mnt) {
            problems.push(format!("live check: {e}"));
        }
    }
    let kernel_merged = snap(&k.mnt, View::Merged, "the kernel mount")?;
    let strata_merged = snap(&s.mnt, View::Merged, "the stratafs mount")?;
    compare(
        "merged trees differ",
        "kernel",
        &kernel_merged,
        "stratafs",
        &strata_merged,
        View::Merged,
        opts.ignore_paths,
    )
    .err()
    .into_iter()
    .for_each(|e| problems.push(e));
    kernel.unmount()?;
    strata.unmount()?;

    let kernel_upper = snap(&k.upper, View::Upper, "the kernel's upper dir")?;
    let strata_upper = snap(&s.upper, View::Upper, "stratafs's upper dir")?;
    compare(
        "upper dirs differ",
        "kernel",
        &kernel_upper,
        "stratafs",
        &strata_upper,
        View::Upper,
        opts.ignore_paths,
    )
    .err()
    .into_iter()
    .for_each(|e| problems.push(e));

    // Persistence: stratafs remounted on its own upper dir shows the same tree.
    let strata = StrataMount::start(&strata_spec(&scratch, &s, &s.upper, &s.work))?;
    let remounted = snap(&s.mnt, View::Merged, "the remounted stratafs")?;
    strata.unmount()?;
    compare(
        "stratafs after a remount differs from the kernel",
        "kernel",
        &kernel_merged,
        "stratafs-remounted",
        &remounted,
        View::Merged,
        opts.ignore_paths,
    )
    .err()
    .into_iter()
    .for_each(|e| problems.push(e));

    // Round trip: the kernel reads the upper dir stratafs wrote.
    let work2 = scratch.dir("strata/work-kernel");
    let kernel_on_s =
        KernelOverlay::mount(&s.layers, Some((&s.upper, &work2)), &s.mnt, KERNEL_OPTS)?;
    let k_view = snap(&s.mnt, View::Merged, "the kernel mount of stratafs's upper")?;
    kernel_on_s.unmount()?;
    compare(
        "the kernel mounted on stratafs's upper dir differs from stratafs",
        "stratafs",
        &strata_merged,
        "kernel-on-stratafs-upper",
        &k_view,
        View::Merged,
        opts.ignore_paths,
    )
    .err()
    .into_iter()
    .for_each(|e| problems.push(e));

    // And the other way: stratafs reads the upper dir the kernel wrote.
    let work3 = scratch.dir("kernel/work-strata");
    let strata_on_k = StrataMount::start(&StrataSpec {
        layers: k.layers.clone(),
        upper: Some((k.upper.clone(), work3)),
        mountpoint: k.mnt.clone(),
        log: scratch.path.join("stratafs.log"),
    })?;
    let s_view = snap(&k.mnt, View::Merged, "stratafs on the kernel's upper")?;
    strata_on_k.unmount()?;
    compare(
        "stratafs mounted on the kernel's upper dir differs from the kernel",
        "kernel",
        &kernel_merged,
        "stratafs-on-kernel-upper",
        &s_view,
        View::Merged,
        opts.ignore_paths,
    )
    .err()
    .into_iter()
    .for_each(|e| problems.push(e));

    if !problems.is_empty() {
        return Err(with_log(problems.join("\n")));
    }
    Ok(Report {
        outcomes,
        strata_merged,
        strata_upper,
    })
}

/// Drops operations one at a time while the run still fails; returns the minimal list and its
/// failure. Bounded, so a slow or flaky failure cannot run forever.
pub fn shrink(template: &Template, ops: &[Op], opts: &Options<'_>) -> (Vec<Op>, String) {
    let mut current = ops.to_vec();
    let mut failure = match run(template, &current, opts) {
        Err(e) => e,
        Ok(_) => return (current, "did not fail again (flaky?)".into()),
    };
    let mut budget = 400;
    loop {
        let mut progressed = false;
        let mut i = 0;
        while i < current.len() && budget > 0 {
            budget -= 1;
            let mut candidate = current.clone();
            candidate.remove(i);
            match run(template, &candidate, opts) {
                Err(e) => {
                    current = candidate;
                    failure = e;
                    progressed = true;
                }
                Ok(_) => i += 1,
            }
        }
        if !progressed || budget == 0 {
            return (current, failure);
        }
    }
}
