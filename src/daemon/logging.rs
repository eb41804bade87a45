//! Where the daemon's log lines go, each naming the mountpoint it serves.
//!
//! In the foreground: stderr. With `--log-file PATH` (`-o log_file=PATH`): that file, also
//! once detached. A detached daemon without a log file has its stderr on /dev/null, so it
//! sends its lines to the system log (/dev/log: journald or a syslog daemon). `RUST_LOG`
//! sets the level as usual; the default is `warn`, or `debug` with `-d`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use log::{Level, Log, Metadata, Record};

use crate::sys::c;

type SyslogWriter = syslog::Logger<syslog::LoggerBackend, syslog::Formatter3164>;

enum Sink {
    /// env_logger's formatting, to stderr or to a log file.
    Env(env_logger::Logger),
    Syslog(Box<SyslogWriter>),
}

struct Router {
    /// Decides which records pass (RUST_LOG or the default level).
    filter: env_logger::Logger,
    /// "MNT: " put before every message.
    prefix: String,
    /// The default level when RUST_LOG is not set.
    level: &'static str,
    sink: Mutex<Sink>,
}

static ROUTER: std::sync::OnceLock<&'static Router> = std::sync::OnceLock::new();

fn env_logger_for(
    default_level: &str,
    prefix: &str,
    target: env_logger::Target,
) -> env_logger::Logger {
    let prefix = prefix.to_string();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_level))
        .target(target)
        .format(move |buf, record| {
            writeln!(
                buf,
                "[{} {} {}] {prefix}{}",
                buf.timestamp(),
                record.level(),
                record.target(),
                record.args()
            )
        })
        .build()
}

/// Starts logging to stderr. `debug` (from `-d`) lowers the default level to debug;
/// `mountpoint` is named in every line. Only the first call takes effect.
pub fn init(debug: bool, mountpoint: Option<&Path>) {
    let level = if debug { "debug" } else { "warn" };
    // Absolute, so that a line in the system log says which mount it is about; made without
    // touching the filesystem (the path may be a stale mount).
    let prefix = mountpoint
        .map(|m| std::path::absolute(m).unwrap_or_else(|_| m.to_path_buf()))
        .map(|m| format!("{}: ", m.display()))
        .unwrap_or_default();
    let router: &'static Router = Box::leak(Box::new(Router {
        filter: env_logger_for(level, &prefix, env_logger::Target::Stderr),
        sink: Mutex::new(Sink::Env(env_logger_for(
            level,
            &prefix,
            env_logger::Target::Stderr,
        ))),
        prefix,
        level,
    }));
    if ROUTER.set(router).is_ok() && log::set_logger(router).is_ok() {
        log::set_max_level(router.filter.filter());
    }
}

/// Sends every later line to `path` (appended; created 0600 if missing). Opened now, so
/// that a bad path is reported to the caller before the daemon detaches.
pub fn to_file(path: &Path) -> Result<(), crate::error::Error> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(c::O_CLOEXEC)
        .open(path)
        .map_err(|e| {
            crate::error::Error::io_with_fix(
                format!("--log-file {}: cannot open", path.display()),
                e,
                "give a writable file path",
            )
        })?;
    if let Some(r) = ROUTER.get() {
        let logger = env_logger_for(r.level, &r.prefix, env_logger::Target::Pipe(Box::new(file)));
        *r.sink.lock().unwrap_or_else(|e| e.into_inner()) = Sink::Env(logger);
    }
    Ok(())
}

/// Sends every later line to the system log, when it has a socket here (`/dev/log`, or the
/// path in STRATAFS_SYSLOG_SOCKET). Without one, lines are dropped: stderr is /dev/null.
pub fn to_syslog() {
    let Some(r) = ROUTER.get() else { return };
    let formatter = syslog::Formatter3164 {
        facility: syslog::Facility::LOG_DAEMON,
        hostname: None,
        process: "stratafs".into(),
        pid: std::process::id(),
    };
    let writer = match std::env::var_os("STRATAFS_SYSLOG_SOCKET") {
        Some(path) => syslog::unix_custom(formatter, PathBuf::from(path)),
        None => syslog::unix(formatter),
    };
    if let Ok(w) = writer {
        *r.sink.lock().unwrap_or_else(|e| e.into_inner()) = Sink::Syslog(Box::new(w));
    }
}

impl Log for Router {
    fn enabled(&self, metadata: &Metadata) -> bool {
        self.filter.enabled(metadata)
    }

    fn log(&self, record: &Record) {
        if !self.filter.matches(record) {
            return;
        }
        let mut sink = self.sink.lock().unwrap_or_else(|e| e.into_inner());
        match &mut *sink {
            Sink::Env(logger) => logger.log(record),
            Sink::Syslog(w) => {
                let line = format!("{}{}", self.prefix, record.args());
                // A full or gone log socket must never stop the daemon.
                let _ = match record.level() {
                    Level::Error => w.err(line),
                    Level::Warn => w.warning(line),
                    Level::Info => w.info(line),
                    Level::Debug | Level::Trace => w.debug(line),
                };
            }
        }
    }

    fn flush(&self) {
        if let Sink::Env(logger) = &*self.sink.lock().unwrap_or_else(|e| e.into_inner()) {
            logger.flush();
        }
    }
}
