//! Standard output and error without `println!`'s panics.
//!
//! `println!` panics ("failed printing to stdout: Broken pipe") when the reader of a pipe
//! went away, as in `whittle status FILE | head -1`: Rust ignores SIGPIPE, so the write
//! fails with EPIPE instead of killing the process. Every line whittle prints goes through
//! [`outln!`] and [`errln!`] instead:
//!
//! - Query commands (status, why, diff, report, gc): a closed stdout ends the process the way
//!   it ends `git log | head -1` or `cat`: killed by SIGPIPE, with no message (a shell shows
//!   exit status 141). It happens only between two lines of output, never inside a cache
//!   write: gc has finished removing the item it was on.
//! - `run` and `resume` ([`keep_going`]): a closed stdout is ignored and the run goes on to
//!   the end: finish the nodes, write their cache entries and the report, exit with the run's
//!   code. Restoring SIGPIPE's default disposition at startup instead would kill a run
//!   half-way through a node (its progress and log lines go to stderr) just because the
//!   terminal or `| head` went away.
//! - Other write errors (a full disk behind `> file`): a query command reports it on stderr
//!   and exits 2; a run ignores it like a closed pipe.
//! - Standard error: errors are ignored (there is nowhere left to report them).
//!
//! Child processes of `command` stages are unaffected: the standard library restores
//! SIGPIPE's default disposition in every child it spawns, and their output goes to files.

use std::fmt;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};

/// Set by `run`/`resume`: output errors do not end the process.
static KEEP_GOING: AtomicBool = AtomicBool::new(false);
/// Stdout failed once in a run: write nothing more to it.
static STDOUT_GONE: AtomicBool = AtomicBool::new(false);

/// A line to standard output, like `println!`.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::out::stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// Text to standard output, like `print!`.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::out::stdout(format_args!($($arg)*))
    };
}

/// A line to standard error, like `eprintln!`, ignoring errors.
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::out::stderr(format_args!("{}\n", format_args!($($arg)*)))
    };
}

pub(crate) use {errln, out, outln};

/// From now on output errors are ignored instead of ending the process (long runs).
pub fn keep_going() {
    KEEP_GOING.store(true, Ordering::SeqCst);
}

/// Write `args` to stdout and flush; on error see the module doc.
pub fn stdout(args: fmt::Arguments) {
    if STDOUT_GONE.load(Ordering::SeqCst) {
        return;
    }
    let r = {
        let mut o = io::stdout().lock();
        o.write_fmt(args).and_then(|()| o.flush())
    };
    let Err(e) = r else { return };
    if KEEP_GOING.load(Ordering::SeqCst) {
        STDOUT_GONE.store(true, Ordering::SeqCst);
        tracing::debug!("standard output is gone ({e}); the run goes on without it");
        return;
    }
    if e.kind() == io::ErrorKind::BrokenPipe {
        die_of_sigpipe();
    }
    stderr(format_args!(
        "error: cannot write to standard output: {e}\n"
    ));
    std::process::exit(2);
}

/// Write `args` to stderr; errors are ignored.
pub fn stderr(args: fmt::Arguments) {
    let _ = io::stderr().lock().write_fmt(args);
}

/// End the process as the default SIGPIPE disposition would have: killed by the signal.
fn die_of_sigpipe() -> ! {
    // SAFETY: restoring a default signal disposition and raising the signal in this
    // process; no handler runs.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::raise(libc::SIGPIPE);
    }
    // Not reached; the conventional status should the signal somehow be blocked.
    std::process::exit(128 + libc::SIGPIPE)
}
