//! The stats of a directory merge, spread over a few threads kept for the life of the
//! process. On a cold cache each stat is a disk read and the disk serves several at once;
//! keeping the threads (rather than starting them for every layer of every directory merged)
//! spares a first lookup of a deep path a thread start and exit per layer and directory.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, OnceLock};

use crate::sys;
use crate::sys::c;

/// Below this many names a directory is stat'ed on the calling thread.
const PARALLEL_STAT_MIN: usize = 32;
/// Threads of the pool; the calling thread takes a share too.
const POOL_THREADS: usize = 3;

type Job = Box<dyn FnOnce() + Send>;

struct Pool {
    jobs: Mutex<Sender<Job>>,
}

/// Threads the pool has started (for the test that they are started once).
static STARTED: AtomicUsize = AtomicUsize::new(0);

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..POOL_THREADS {
            let rx = rx.clone();
            let started = std::thread::Builder::new()
                .name(format!("stat-{i}"))
                .spawn(move || worker(&rx));
            match started {
                Ok(_) => {
                    STARTED.fetch_add(1, Ordering::Relaxed);
                }
                // Fewer threads (or none: the caller then stats everything) is slower, not wrong.
                Err(e) => log::warn!("cannot start a stat thread: {e}"),
            }
        }
        Pool {
            jobs: Mutex::new(tx),
        }
    })
}

fn worker(jobs: &Mutex<Receiver<Job>>) {
    loop {
        let job = jobs.lock().unwrap_or_else(|e| e.into_inner()).recv();
        match job {
            Ok(job) => job(),
            Err(_) => return,
        }
    }
}

/// The stat (not following symlinks) of each of `names` in directory `dir`, in order.
pub fn stat_many(dir: &Arc<OwnedFd>, names: &[&[u8]]) -> Vec<io::Result<c::stat>> {
    if names.len() < PARALLEL_STAT_MIN {
        return names.iter().map(|n| stat_entry(dir, n)).collect();
    }
    let chunk = names.len().div_ceil(POOL_THREADS + 1);
    let mut parts = names.chunks(chunk);
    let mine = parts.next().unwrap_or_default();
    let (tx, rx) = mpsc::channel();
    let mut handed: Vec<&[&[u8]]> = Vec::new();
    {
        let jobs = pool().jobs.lock().unwrap_or_else(|e| e.into_inner());
        for part in parts {
            let owned: Vec<Vec<u8>> = part.iter().map(|n| n.to_vec()).collect();
            let (dir, tx, i) = (dir.clone(), tx.clone(), handed.len());
            let job: Job = Box::new(move || {
                let stats = owned
                    .iter()
                    .map(|n| stat_entry(&dir, n))
                    .collect::<Vec<_>>();
                let _ = tx.send((i, stats));
            });
            if jobs.send(job).is_err() {
                break;
            }
            handed.push(part);
        }
    }
    drop(tx);
    let mut out: Vec<io::Result<c::stat>> = mine.iter().map(|n| stat_entry(dir, n)).collect();
    let mut results: Vec<Option<Vec<io::Result<c::stat>>>> = handed.iter().map(|_| None).collect();
    for (i, stats) in rx.iter() {
        results[i] = Some(stats);
    }
    // A part the pool did not answer (a thread gone) is stat'ed here: slower, never lost.
    for (part, stats) in handed.iter().zip(results) {
        out.extend(stats.unwrap_or_else(|| part.iter().map(|n| stat_entry(dir, n)).collect()));
    }
    // Names the pool was never handed (its queue closed) are stat'ed here as well.
    let done: usize = 1 + handed.len();
    for part in names.chunks(chunk).skip(done) {
        out.extend(part.iter().map(|n| stat_entry(dir, n)));
    }
    out
}

fn stat_entry(dir: &OwnedFd, name: &[u8]) -> io::Result<c::stat> {
    sys::stat_at(dir.as_fd(), &sys::cstr(name)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_come_back_in_order_and_threads_start_once() {
        let tmp = crate::testutil::TempDir::new("statpool");
        let names: Vec<Vec<u8>> = (0..200).map(|i| format!("f{i}").into_bytes()).collect();
        for (i, n) in names.iter().enumerate() {
            // Each file's size is its position, so the order of the answers shows.
            std::fs::write(tmp.path().join(std::str::from_utf8(n).unwrap()), vec![0; i]).unwrap();
        }
        let dir = Arc::new(sys::open_dir_path(tmp.path()).unwrap());
        let mut refs: Vec<&[u8]> = names.iter().map(|n| n.as_slice()).collect();
        refs.push(b"missing");
        for _ in 0..10 {
            let stats = stat_many(&dir, &refs);
            assert_eq!(stats.len(), refs.len());
            for (i, st) in stats[..names.len()].iter().enumerate() {
                assert_eq!(st.as_ref().unwrap().st_size, i as i64, "name {i}");
            }
            let err = stats.last().unwrap().as_ref().unwrap_err();
            assert_eq!(err.raw_os_error(), Some(c::ENOENT));
        }
        assert_eq!(STARTED.load(Ordering::Relaxed), POOL_THREADS);
    }
}
