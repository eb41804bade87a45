//! Worker processes for multi-process tests: the test binary started again on one of its
//! ignored tests, told what to do through an environment variable, with its output in a log
//! file; and the wait for all of them with a deadline, killing any that hangs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A started worker: its process, the file it writes its result to, and its log.
pub struct Worker {
    pub child: Child,
    pub out: PathBuf,
    pub log: PathBuf,
}

impl Worker {
    /// Starts workers 0..`count` at once, each this test binary on its ignored test
    /// `test_name`: worker i writes its result to `out` = LOGS/RESULT-i, gets `env` set to
    /// `spec(i, out)`, and logs to LOGS/worker-i.log. `who` and the number name a worker in
    /// an error.
    pub fn start_all(
        test_name: &str,
        env: &str,
        count: usize,
        logs: &Path,
        result: &str,
        who: &str,
        spec: impl Fn(usize, &Path) -> String,
    ) -> Result<Vec<Worker>, String> {
        (0..count)
            .map(|i| {
                let out = logs.join(format!("{result}-{i}"));
                let spec = spec(i, &out);
                let log = logs.join(format!("worker-{i}.log"));
                Worker::start(test_name, env, &spec, out, log, &format!("{who} {i}"))
            })
            .collect()
    }

    /// Starts this test binary on its ignored test `test_name` with `env=spec`; stdout and
    /// stderr go to `log`, and the worker is expected to write its result to `out`. `who`
    /// names the worker in the error.
    fn start(
        test_name: &str,
        env: &str,
        spec: &str,
        out: PathBuf,
        log: PathBuf,
        who: &str,
    ) -> Result<Worker, String> {
        let exe = std::env::current_exe().expect("path of the test binary");
        let log_file = std::fs::File::create(&log).expect("create a worker log");
        let child = Command::new(exe)
            .args([test_name, "--exact", "--ignored", "--nocapture"])
            .args(["--test-threads=1", "-q"])
            .env(env, spec)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("dup a log fd"))
            .stderr(log_file)
            .spawn()
            .map_err(|e| format!("cannot start {who}: {e}"))?;
        Ok(Worker { child, out, log })
    }

    /// Waits until the worker exits or `deadline` passes; a worker still running then is
    /// killed and reaped, and None returned.
    pub fn wait_until(&mut self, deadline: Instant) -> Option<ExitStatus> {
        loop {
            match self.child.try_wait().expect("wait for a worker") {
                Some(s) => return Some(s),
                None if Instant::now() >= deadline => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return None;
                }
                None => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// What the worker printed (empty if its log cannot be read).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// In a worker: the tab-separated fields of `env` (set by [`Worker::start`]); panics naming
/// `layout` when there are not as many as it lists.
pub fn worker_fields(env: &str, layout: &[&str]) -> Vec<String> {
    let spec = std::env::var(env)
        .unwrap_or_else(|_| panic!("this test is started as a worker, with {env} set"));
    let fields: Vec<String> = spec.split('\t').map(str::to_string).collect();
    assert_eq!(
        fields.len(),
        layout.len(),
        "{env}={spec:?}: expected {}",
        layout.join("\\t")
    );
    fields
}

/// A number from the environment variable `name`, if set; panics when it is not a number.
pub fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(
        v.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v}: expected a number")),
    )
}
