//! Progress of a long export, import or clone: bytes and files done, drawn on stderr only
//! when stderr is a terminal (scripts and pipes see nothing).

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct Progress {
    bar: Option<ProgressBar>,
    verb: &'static str,
    files: u64,
}

impl Progress {
    /// A spinner on stderr when it is a terminal, else nothing.
    pub fn on_terminal(verb: &'static str) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            if let Ok(style) =
                ProgressStyle::with_template("{spinner} {msg}, {bytes} ({bytes_per_sec}) {elapsed}")
            {
                bar.set_style(style);
            }
            bar.enable_steady_tick(std::time::Duration::from_millis(200));
            bar
        });
        Progress {
            bar,
            verb,
            files: 0,
        }
    }

    pub fn bytes(&self, n: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(n);
        }
    }

    pub fn file(&mut self) {
        self.files += 1;
        if let Some(bar) = &self.bar {
            bar.set_message(format!("{} {} files", self.verb, self.files));
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
