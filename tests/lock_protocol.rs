//! The mtab lock protocol (xfstests generic/089, t_mtab): several processes take a lock by
//! `link(tmp, lock)`, drop `tmp`, open `lock`, rewrite `mtab` through `mtab.tmp` and a rename,
//! and release with `unlink(lock)`. It once spun forever on stratafs (a hard link whose first
//! name was removed could not be opened), where the kernel finishes in seconds. Each process
//! must make progress, and the lock must exclude: no update of `mtab` is lost.
//!
//! The same run on kernel overlayfs is the control that the protocol itself makes progress.

mod common;

#[path = "write_union/sysc.rs"]
#[allow(dead_code)] // the shared syscall helpers; this test needs a few of them
mod sysc;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::rw::{require_root, KernelMount, StrataChild, StrataSpec};
use common::tmp::TempDir;
use common::workers::{worker_fields, Worker};

/// Tells a started test binary to act as one locking process: "DIR\tID\tMILLIS\tOUTFILE".
const WORKER_ENV: &str = "STRATAFS_LOCK_WORKER";
const WORKERS: usize = 3;
/// How long each process runs the protocol.
const RUN_FOR: Duration = Duration::from_secs(3);
/// Lock cycles each process must complete in that time (the kernel does thousands; a
/// livelock does none).
const MIN_CYCLES: u64 = 10;
/// A process still running this long after its time is hung inside one call.
const HANG_LIMIT: Duration = Duration::from_secs(60);

/// One process: the t_mtab cycle until the time is up; returns the cycles completed.
fn lock_cycles(dir: &Path, id: usize, run_for: Duration) -> Result<u64, String> {
    let deadline = Instant::now() + run_for;
    let lock = dir.join("mtab~");
    let mtab = dir.join("mtab");
    let mtab_tmp = dir.join("mtab.tmp");
    let target = dir.join(format!("mtab~{}", std::process::id()));
    let err = |what: &str, p: &Path, e: i32| {
        format!(
            "process {id}: {what} {}: {}",
            p.display(),
            sysc::errno_name(e)
        )
    };
    let mut cycles = 0;
    'cycles: while Instant::now() < deadline {
        sysc::open(&target, libc::O_WRONLY | libc::O_CREAT, 0o600)
            .and_then(|fd| fd.close())
            .map_err(|e| err("create", &target, e))?;
        // Take the lock: link our file to the lock name; whoever's link succeeds holds it.
        loop {
            if Instant::now() >= deadline {
                sysc::unlink(&target).map_err(|e| err("unlink", &target, e))?;
                break 'cycles;
            }
            let linked = match sysc::link(&target, &lock) {
                Ok(()) => true,
                Err(libc::EEXIST) => false,
                Err(e) => return Err(err("link to", &lock, e)),
            };
            // Both the holder and the waiters open the lock; ENOENT means it just went.
            match sysc::open(&lock, libc::O_WRONLY, 0) {
                Ok(fd) => fd.close().map_err(|e| err("close", &lock, e))?,
                Err(libc::ENOENT) => continue,
                Err(e) => return Err(err("open", &lock, e)),
            }
            if linked {
                break;
            }
            std::thread::yield_now();
        }
        sysc::unlink(&target).map_err(|e| err("unlink", &target, e))?;
        // Under the lock: one more line in mtab, written aside and renamed over.
        let fd = sysc::open(&mtab, libc::O_RDONLY, 0).map_err(|e| err("open", &mtab, e))?;
        let mut content = sysc::read_all(&fd).map_err(|e| err("read", &mtab, e))?;
        fd.close().map_err(|e| err("close", &mtab, e))?;
        content.extend_from_slice(format!("process{id} cycle{cycles}\n").as_bytes());
        let out = sysc::open(
            &mtab_tmp,
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
            0o644,
        )
        .map_err(|e| err("create", &mtab_tmp, e))?;
        sysc::write_all_at(&out, None, &content).map_err(|e| err("write", &mtab_tmp, e))?;
        out.close().map_err(|e| err("close", &mtab_tmp, e))?;
        sysc::rename2(&mtab_tmp, &mtab, 0).map_err(|e| err("rename over", &mtab, e))?;
        sysc::unlink(&lock).map_err(|e| err("unlock", &lock, e))?;
        cycles += 1;
    }
    Ok(cycles)
}

/// The body of one locking process (started by `run_processes`).
#[test]
#[ignore = "started by the lock protocol tests as a separate process"]
fn lock_worker() {
    let fields = worker_fields(WORKER_ENV, &["DIR", "ID", "MILLIS", "OUTFILE"]);
    let [dir, id, millis, out] = &fields[..] else {
        unreachable!("worker_fields checks the count")
    };
    let run_for = Duration::from_millis(millis.parse().expect("milliseconds"));
    let result = lock_cycles(Path::new(dir), id.parse().expect("process id"), run_for);
    let line = match result {
        Ok(n) => format!("ok {n}"),
        Err(e) => format!("error {e}"),
    };
    std::fs::write(out, line).expect("write the worker's result");
}

/// Runs the protocol from WORKERS processes at once in `dir`; returns each one's cycles.
fn run_processes(dir: &Path, logs: &Path) -> Result<Vec<u64>, String> {
    let mut workers = Worker::start_all(
        "lock_worker",
        WORKER_ENV,
        WORKERS,
        logs,
        "result",
        "lock process",
        |id, out| {
            let millis = RUN_FOR.as_millis();
            format!("{}\t{id}\t{millis}\t{}", dir.display(), out.display())
        },
    )?;
    let deadline = Instant::now() + RUN_FOR + HANG_LIMIT;
    let mut counts = Vec::new();
    let mut failures = Vec::new();
    for (id, worker) in workers.iter_mut().enumerate() {
        let Some(status) = worker.wait_until(deadline) else {
            failures.push(format!("process {id}: hung inside a call, killed"));
            continue;
        };
        let result = std::fs::read_to_string(&worker.out).unwrap_or_default();
        match result.strip_prefix("ok ").map(str::parse::<u64>) {
            Some(Ok(n)) if status.success() => counts.push(n),
            _ => failures.push(format!(
                "process {id} ({status}): {result}\n{}",
                worker.log_text()
            )),
        }
    }
    if failures.is_empty() {
        Ok(counts)
    } else {
        Err(failures.join("\n"))
    }
}

/// A lower layer with `etc/mtab`, so the first rename over it replaces a lower file.
fn layer(dir: &Path) -> PathBuf {
    let l = dir.join("layer");
    std::fs::create_dir_all(l.join("etc")).expect("create the layer");
    std::fs::write(l.join("etc/mtab"), b"rootfs / rootfs rw 0 0\n").expect("write mtab");
    l
}

/// Runs the protocol in MNT/etc and checks progress and exclusion; returns the cycle counts.
fn check_protocol(mnt: &Path, logs: &Path, what: &str) -> Vec<u64> {
    let etc = mnt.join("etc");
    let counts = run_processes(&etc, logs).unwrap_or_else(|e| panic!("{what}: {e}"));
    for (id, n) in counts.iter().enumerate() {
        assert!(
            *n >= MIN_CYCLES,
            "{what}: process {id} completed {n} lock cycles in {RUN_FOR:?} (others: {counts:?}); \
             want at least {MIN_CYCLES}"
        );
    }
    let mtab = std::fs::read_to_string(etc.join("mtab")).expect("read mtab");
    let updates = mtab.lines().count() as u64 - 1;
    let total: u64 = counts.iter().sum();
    assert_eq!(
        updates, total,
        "{what}: mtab holds {updates} updates for {total} completed lock cycles (a lost update: \
         the lock did not exclude)"
    );
    for leftover in ["mtab~", "mtab.tmp"] {
        assert!(
            sysc::lstat(&etc.join(leftover)).is_err(),
            "{what}: {leftover} left behind"
        );
    }
    counts
}

#[test]
fn mtab_lock_protocol_makes_progress() {
    require_root();
    let dir = TempDir::new("lockproto");
    let lower = vec![layer(dir.path())];

    let kernel_mnt = dir.subdir("kernel/mnt");
    let kernel = KernelMount::mount(
        &lower,
        Some((&dir.subdir("kernel/upper"), &dir.subdir("kernel/work"))),
        &kernel_mnt,
        "index=on,redirect_dir=on,metacopy=on",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let kernel_counts = check_protocol(&kernel_mnt, &dir.subdir("kernel/logs"), "kernel");
    kernel.unmount().unwrap_or_else(|e| panic!("{e}"));

    let mnt = dir.subdir("strata/mnt");
    let strata = StrataChild::start(&StrataSpec {
        layers: lower.clone(),
        upper: Some((dir.subdir("strata/upper"), dir.subdir("strata/work"))),
        mountpoint: mnt.clone(),
        log: dir.path().join("stratafs.log"),
        extra_args: Vec::new(),
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let counts = check_protocol(&mnt, &dir.subdir("strata/logs"), "stratafs");
    strata.unmount().unwrap_or_else(|e| panic!("{e}"));
    eprintln!("lock cycles in {RUN_FOR:?}: kernel {kernel_counts:?}, stratafs {counts:?}");
}
