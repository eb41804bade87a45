#![allow(dead_code)] // shared by several test crates, each using part of it
//! One differential run: the same operations on kernel overlayfs and on stratafs over identical
//! copies of the same layers, then the merged trees, the upper dirs, a remount of stratafs, and
//! both cross mounts (each implementation on the upper dir the other one wrote) compared.

use std::path::{Path, PathBuf};

use std::time::Duration;

use crate::common::rw::{copy_tree, KernelMount, StrataChild, StrataSpec, Watchdog};
use crate::common::tmp::TempDir;
use crate::common::workers::env_u64;
use crate::common::Ns;

use super::fixture::Template;
use super::ops::{apply, describe, generate, Op, Outcome};
use super::tree::{diff, snapshot, Tree, View};

/// Kernel overlayfs options of the reference, the formats stratafs writes: directory renames
/// write redirects, chmod/chown/utimes copy up metadata only (metacopy), and copied-up hard
/// links are kept together through the index in the work dir. (With index=off the kernel
/// breaks lower hard links on copy-up; stratafs keeps them, as index=on does.)
pub const KERNEL_OPTS: &str = "redirect_dir=on,index=on,metacopy=on";

/// Kernel overlayfs options of the rootless reference, what a user namespace can mount: markers
/// in user.overlay.*, which makes the kernel refuse metacopy and directory redirects (renaming
/// a merged or lower directory fails with EXDEV; `mv` then copies).
pub const KERNEL_USERXATTR_OPTS: &str = "userxattr";

/// Which on-disk format the run compares: the privileged one, or the one written by mounts made
/// inside a user namespace.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    #[default]
    Privileged,
    Userxattr,
}

impl Format {
    pub fn kernel_opts(self) -> &'static str {
        match self {
            Format::Privileged => KERNEL_OPTS,
            Format::Userxattr => KERNEL_USERXATTR_OPTS,
        }
    }

    /// The xattr namespace of the overlay markers in this format.
    pub fn ns(self) -> Ns {
        match self {
            Format::Privileged => Ns::Trusted,
            Format::Userxattr => Ns::User,
        }
    }
}

/// A check run against both mounts after the operations, while they are live.
pub type LiveCheck<'a> = &'a dyn Fn(&Path, &Path) -> Result<(), String>;

#[derive(Default)]
pub struct Options<'a> {
    /// Paths whose differences are expected (documented divergences; the caller checks them).
    pub ignore_paths: &'a [&'a str],
    /// Paths whose differences are expected in the upper dirs only (the merged views, after
    /// remounts and cross mounts, must still agree).
    pub ignore_upper_paths: &'a [&'a str],
    /// Extra assertions on (kernel mount, stratafs mount) after the operations.
    pub live_check: Option<LiveCheck<'a>>,
    pub format: Format,
    /// More `stratafs mount` options for every stratafs mount of the run.
    pub strata_args: &'a [&'a str],
}

/// Snapshots kept for further assertions by the caller.
pub struct Report {
    /// What each operation observed (the same on both, or the run fails).
    pub outcomes: Vec<Outcome>,
    pub strata_upper: Tree,
}

pub struct Side {
    pub layers: Vec<PathBuf>,
    pub upper: PathBuf,
    pub work: PathBuf,
    pub mnt: PathBuf,
}

pub fn side(scratch: &TempDir, name: &str, template: &Template) -> Side {
    let base = scratch.subdir(name);
    let layer_dir = base.join("layers");
    std::fs::create_dir(&layer_dir).expect("create layers dir");
    let mut layers = Vec::new();
    for l in &template.layers {
        copy_tree(l, &layer_dir);
        layers.push(layer_dir.join(l.file_name().expect("layer dir name")));
    }
    Side {
        layers,
        upper: scratch.subdir(&format!("{name}/upper")),
        work: scratch.subdir(&format!("{name}/work")),
        mnt: scratch.subdir(&format!("{name}/mnt")),
    }
}

impl Side {
    /// Kernel overlayfs with `opts` on this side's layers and writable layer.
    pub fn mount_kernel(&self, opts: &str) -> Result<KernelMount, String> {
        KernelMount::mount(
            &self.layers,
            Some((&self.upper, &self.work)),
            &self.mnt,
            opts,
        )
    }

    /// stratafs with `extra_args` on this side's layers and writable layer, logging into
    /// `scratch`.
    pub fn mount_strata(
        &self,
        scratch: &TempDir,
        extra_args: &[&str],
    ) -> Result<StrataChild, String> {
        StrataChild::start(&StrataSpec {
            layers: self.layers.clone(),
            upper: Some((self.upper.clone(), self.work.clone())),
            mountpoint: self.mnt.clone(),
            log: scratch.path().join("stratafs.log"),
            extra_args: extra_args.iter().map(|a| a.to_string()).collect(),
        })
    }
}

/// The kernel side (KERNEL_OPTS) and the stratafs side (no extra options) mounted.
pub fn mount_both(
    scratch: &TempDir,
    k: &Side,
    s: &Side,
) -> Result<(KernelMount, StrataChild), String> {
    Ok((k.mount_kernel(KERNEL_OPTS)?, s.mount_strata(scratch, &[])?))
}

/// Collects the differences of every comparison stage of one run.
pub struct Differences<'a> {
    pub ignore: &'a [&'a str],
    /// Ignored in the upper-dir comparison only.
    pub ignore_upper: &'a [&'a str],
    pub lower_layers: &'a [PathBuf],
    pub found: Vec<String>,
}

impl Differences<'_> {
    /// Compares snapshot `a` with `b`; each is (name for the report, tree).
    pub fn check(&mut self, stage: &str, a: (&str, &Tree), b: (&str, &Tree), view: View) {
        self.check_except(stage, a, b, view, &[]);
    }

    /// `check`, leaving out differences whose report line contains one of `kinds`.
    pub fn check_except(
        &mut self,
        stage: &str,
        a: (&str, &Tree),
        b: (&str, &Tree),
        view: View,
        kinds: &[&str],
    ) {
        let upper_only: &[&str] = if matches!(view, View::Upper(_)) {
            self.ignore_upper
        } else {
            &[]
        };
        let ignored = |line: &String| {
            kinds.iter().any(|k| line.contains(k))
                || self.ignore.iter().chain(upper_only).any(|p| {
                    line.strip_prefix(p)
                        .is_some_and(|rest| rest.starts_with(':') || rest.starts_with('/'))
                })
        };
        let diffs: Vec<String> = diff(a.0, a.1, b.0, b.1, view, self.lower_layers)
            .into_iter()
            .filter(|l| !ignored(l))
            .collect();
        if !diffs.is_empty() {
            self.found
                .push(format!("{stage}:\n  {}", diffs.join("\n  ")));
        }
    }
}

pub fn snap(path: &Path, view: View, what: &str) -> Result<Tree, String> {
    snapshot(path, view).map_err(|e| format!("snapshot of {what}: {e}"))
}

/// How long stratafs may take over one operation (or one tree walk) before it counts as hung.
pub const STALL: Duration = Duration::from_secs(30);

/// A note for the report when the watchdog had to kill a stalled daemon.
fn hung(watchdog: &Watchdog, i: usize) -> String {
    if watchdog.fired() {
        format!("stratafs hung (no progress for {STALL:?}, killed) at or after operation #{i}\n")
    } else {
        String::new()
    }
}

/// Runs `ops` differentially; Err describes the first stage that differs.
pub fn run(template: &Template, ops: &[Op], opts: &Options<'_>) -> Result<Report, String> {
    let scratch = TempDir::new("wu");
    let k = side(&scratch, "kernel", template);
    let s = side(&scratch, "strata", template);

    let mut kernel = k.mount_kernel(opts.format.kernel_opts())?;
    let mut strata = s.mount_strata(&scratch, opts.strata_args)?;

    let mut log = Vec::new();
    let mut outcomes = Vec::new();
    let mut watchdog = Watchdog::new(strata.pid(), STALL);
    for (i, op) in ops.iter().enumerate() {
        if *op == Op::Remount {
            // Both sides start over from their upper dirs: nothing may live only in memory.
            drop(watchdog);
            kernel.unmount()?;
            strata.unmount()?;
            kernel = k.mount_kernel(opts.format.kernel_opts())?;
            strata = s.mount_strata(&scratch, &[])?;
            watchdog = Watchdog::new(strata.pid(), STALL);
            log.push(format!("  #{i} {op:?}"));
            outcomes.push(Ok(String::new()));
            continue;
        }
        let ko = apply(&k.mnt, op);
        let so = apply(&s.mnt, op);
        watchdog.tick();
        log.push(format!("  #{i} {op:?} -> {}", describe(&ko)));
        if ko != so {
            return Err(format!(
                "{}operation #{i} {op:?}: kernel {}, stratafs {}\n{}",
                hung(&watchdog, i),
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
    let mut differences = Differences {
        ignore: opts.ignore_paths,
        ignore_upper: opts.ignore_upper_paths,
        lower_layers: &template.layers,
        found: Vec::new(),
    };
    if let Some(check) = opts.live_check {
        if let Err(e) = check(&k.mnt, &s.mnt) {
            differences.found.push(format!("live check: {e}"));
        }
    }
    let kernel_live = snap(&k.mnt, View::Merged, "the kernel mount")?;
    let strata_merged = snap(&s.mnt, View::Merged, "the stratafs mount")
        .map_err(|e| format!("{}{e}", hung(&watchdog, ops.len())))?;
    drop(watchdog);
    // Documented divergence of the userxattr format: the kernel cannot decode origins in a
    // user namespace, so a copied-up lower file keeps its lower inode number only while its
    // inode is cached, and a hard link made to it later shows the upper inode's number: one
    // file, two st_ino, until a remount. stratafs gives every name of a file one number. The
    // live trees are compared without link groups; the kernel remounted on its own upper dir
    // (a consistent view) is the reference for everything else, link groups included.
    let live_ignore: &[&str] = match opts.format {
        Format::Privileged => &[],
        Format::Userxattr => &[": hard links: "],
    };
    differences.check_except(
        "merged trees differ",
        ("kernel", &kernel_live),
        ("stratafs", &strata_merged),
        View::Merged,
        live_ignore,
    );
    kernel.unmount()?;
    strata.unmount()?;
    let kernel_merged = match opts.format {
        Format::Privileged => kernel_live,
        Format::Userxattr => {
            let again = k.mount_kernel(opts.format.kernel_opts())?;
            let tree = snap(&k.mnt, View::Merged, "the remounted kernel")?;
            again.unmount()?;
            differences.check(
                "stratafs differs from the kernel remounted on its upper dir",
                ("kernel-remounted", &tree),
                ("stratafs", &strata_merged),
                View::Merged,
            );
            tree
        }
    };

    let upper_view = View::Upper(opts.format.ns());
    let kernel_upper = snap(&k.upper, upper_view, "the kernel's upper dir")?;
    let strata_upper = snap(&s.upper, upper_view, "stratafs's upper dir")?;
    differences.check(
        "upper dirs differ",
        ("kernel", &kernel_upper),
        ("stratafs", &strata_upper),
        upper_view,
    );

    // Persistence: stratafs remounted on its own upper dir shows the same tree.
    let strata = s.mount_strata(&scratch, opts.strata_args)?;
    let remounted = snap(&s.mnt, View::Merged, "the remounted stratafs")?;
    strata.unmount()?;
    differences.check(
        "stratafs after a remount differs from the kernel",
        ("kernel", &kernel_merged),
        ("stratafs-remounted", &remounted),
        View::Merged,
    );

    // Round trip: the kernel reads the upper dir stratafs wrote (with its work dir: the
    // hard-link index lives there).
    let kernel_on_s = s.mount_kernel(opts.format.kernel_opts())?;
    let k_view = snap(&s.mnt, View::Merged, "the kernel mount of stratafs's upper")?;
    kernel_on_s.unmount()?;
    differences.check(
        "the kernel mounted on stratafs's upper dir differs from stratafs",
        ("stratafs", &strata_merged),
        ("kernel-on-stratafs-upper", &k_view),
        View::Merged,
    );

    // And the other way: stratafs reads the upper dir the kernel wrote.
    let strata_on_k = k.mount_strata(&scratch, opts.strata_args)?;
    let s_view = snap(&k.mnt, View::Merged, "stratafs on the kernel's upper")?;
    strata_on_k.unmount()?;
    differences.check(
        "stratafs mounted on the kernel's upper dir differs from the kernel",
        ("kernel", &kernel_merged),
        ("stratafs-on-kernel-upper", &s_view),
        View::Merged,
    );

    if !differences.found.is_empty() {
        return Err(with_log(differences.found.join("\n")));
    }
    Ok(Report {
        outcomes,
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

/// Operations per random sequence.
const SEQUENCE_LEN: usize = 40;

/// Random runs over `template`: seeds 1..=STRATAFS_SEEDS (default `default_seeds`), or only
/// STRATAFS_SEED; stops at the first failing seed unless STRATAFS_KEEP_GOING is set. Returns one
/// report per failing seed, with the operation list shrunk to a minimal failing one.
pub fn random_runs(template: &Template, opts: &Options<'_>, default_seeds: u64) -> Vec<String> {
    let seeds: Vec<u64> = match env_u64("STRATAFS_SEED") {
        Some(s) => vec![s],
        None => (1..=env_u64("STRATAFS_SEEDS").unwrap_or(default_seeds)).collect(),
    };
    let keep_going = std::env::var_os("STRATAFS_KEEP_GOING").is_some();
    let mut failures = Vec::new();
    for seed in seeds {
        let ops = generate(seed, SEQUENCE_LEN);
        let Err(first) = run(template, &ops, opts) else {
            continue;
        };
        let (minimal, mut failure) = shrink(template, &ops, opts);
        if minimal.len() == ops.len() {
            // Not reproduced (or nothing could be dropped): the first failure says what it was.
            failure = format!("{failure}\nfirst failure of the full list:\n{first}");
        }
        let list: Vec<String> = minimal.iter().map(|o| format!("    {o:?},")).collect();
        let msg = format!(
            "seed {seed} fails (STRATAFS_SEED={seed} to rerun); minimal operation list ({} of {}):\n{}\nfailure: {failure}",
            minimal.len(),
            ops.len(),
            list.join("\n"),
        );
        eprintln!("{msg}\n");
        failures.push(msg);
        if !keep_going {
            break;
        }
    }
    failures
}
