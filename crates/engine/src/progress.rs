//! Progress display: one indicatif bar per running node on a terminal, tracing log lines
//! otherwise.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::stage::Progress;

/// Where progress goes.
#[derive(Clone)]
pub enum Reporter {
    /// Bars on stderr.
    Bars(MultiProgress),
    /// tracing lines.
    Log,
}

impl Reporter {
    /// Bars if stderr is a terminal, log lines otherwise.
    pub fn auto() -> Self {
        if std::io::stderr().is_terminal() {
            Reporter::Bars(MultiProgress::with_draw_target(ProgressDrawTarget::stderr()))
        } else {
            Reporter::Log
        }
    }

    /// Progress of one running node.
    pub fn node(&self, name: &str) -> NodeProgress {
        let bar = match self {
            Reporter::Bars(m) => {
                let b = m.add(ProgressBar::new_spinner());
                b.set_style(
                    ProgressStyle::with_template("{spinner} {prefix} {elapsed:>4} {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                b.set_prefix(name.to_string());
                b.enable_steady_tick(Duration::from_millis(120));
                Some(b)
            }
            Reporter::Log => None,
        };
        NodeProgress {
            bar,
            node: name.to_string(),
            len: AtomicU64::new(0),
            logged: AtomicU64::new(u64::MAX),
        }
    }

    /// Print a line above the bars (or as a log line).
    pub fn line(&self, line: &str) {
        match self {
            Reporter::Bars(m) => {
                let _ = m.println(line);
            }
            Reporter::Log => tracing::info!("{line}"),
        }
    }
}

/// [`Progress`] of one node.
pub struct NodeProgress {
    bar: Option<ProgressBar>,
    node: String,
    len: AtomicU64,
    logged: AtomicU64,
}

impl NodeProgress {
    /// Remove the bar.
    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

impl Progress for NodeProgress {
    fn set_length(&self, len: u64) {
        self.len.store(len, Ordering::Relaxed);
        if let Some(b) = &self.bar {
            b.set_length(len);
            b.set_style(
                ProgressStyle::with_template(
                    "{prefix} [{bar:30}] {pos}/{len} {elapsed:>4} eta {eta} {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
        }
    }

    fn set_position(&self, pos: u64) {
        match &self.bar {
            Some(b) => b.set_position(pos),
            None => {
                let len = self.len.load(Ordering::Relaxed);
                // one log line per 10 % step
                let decile = (pos * 10).checked_div(len).unwrap_or(pos);
                if self.logged.swap(decile, Ordering::Relaxed) != decile {
                    if len > 0 {
                        tracing::info!("{}: {pos}/{len}", self.node);
                    } else {
                        tracing::debug!("{}: {pos}", self.node);
                    }
                }
            }
        }
    }

    fn set_message(&self, msg: &str) {
        match &self.bar {
            Some(b) => b.set_message(msg.to_string()),
            None => tracing::debug!("{}: {msg}", self.node),
        }
    }
}
