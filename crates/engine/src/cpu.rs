//! CPU accounting: the process's CPU time (for the whole-run utilisation printed by `whittle
//! run`), the CPU time of one node (the threads of the pools it ran in, see [`in_pool`]),
//! and the utilisation figure "CPU 1.85 of 2 cores (185.0 s CPU / 100.0 s wall)".

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// User + system CPU seconds of this process and of its waited-for children
/// (`getrusage(RUSAGE_SELF)` + `getrusage(RUSAGE_CHILDREN)`).
pub fn process_cpu_secs() -> f64 {
    fn usage(who: libc::c_int) -> f64 {
        // SAFETY: getrusage only writes the struct it is given.
        let mut u: libc::rusage = unsafe { std::mem::zeroed() };
        if unsafe { libc::getrusage(who, &mut u) } != 0 {
            return 0.0;
        }
        let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
        tv(u.ru_utime) + tv(u.ru_stime)
    }
    usage(libc::RUSAGE_SELF) + usage(libc::RUSAGE_CHILDREN)
}

/// CPU seconds the calling thread has used since it started.
pub fn thread_cpu_secs() -> f64 {
    // SAFETY: clock_gettime only writes the struct it is given.
    let mut t: libc::timespec = unsafe { std::mem::zeroed() };
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) } != 0 {
        return 0.0;
    }
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}

/// Collects the CPU time of the pools one node runs in (nanoseconds).
#[derive(Default, Debug)]
pub struct Meter(AtomicU64);

impl Meter {
    pub fn add(&self, secs: f64) {
        self.0
            .fetch_add((secs.max(0.0) * 1e9) as u64, Ordering::Relaxed);
    }
    pub fn secs(&self) -> f64 {
        self.0.load(Ordering::Relaxed) as f64 * 1e-9
    }
}

thread_local! {
    static METER: RefCell<Option<Arc<Meter>>> = const { RefCell::new(None) };
}

/// The meter of the node this thread works for, if any.
pub fn current_meter() -> Option<Arc<Meter>> {
    METER.with(|m| m.borrow().clone())
}

/// Makes `meter` the calling thread's meter; returns the previous one.
pub fn set_meter(meter: Option<Arc<Meter>>) -> Option<Arc<Meter>> {
    METER.with(|m| std::mem::replace(&mut *m.borrow_mut(), meter))
}

/// Runs `f` inside a fresh rayon pool of exactly `threads` threads (so a node never uses more
/// cores than the scheduler granted it) and adds the CPU time of the pool's threads to the
/// calling thread's [`Meter`] (its workers inherit the meter, so nested pools count too).
pub fn in_pool<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    let meter = current_meter();
    let inherit = meter.clone();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .start_handler(move |_| {
            set_meter(inherit.clone());
        })
        .build();
    match pool {
        Ok(pool) => {
            let out = pool.install(f);
            if let Some(m) = &meter {
                // each worker's CPU time since the pool started it
                for s in pool.broadcast(|_| thread_cpu_secs()) {
                    m.add(s);
                }
            }
            out
        }
        Err(_) => f(),
    }
}

/// CPU time against wall time on a core budget.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Utilisation {
    pub cpu_secs: f64,
    pub wall_secs: f64,
    pub cores: usize,
}

impl Utilisation {
    /// Cores kept busy on average: CPU time / wall time.
    pub fn cores_busy(&self) -> f64 {
        if self.wall_secs > 0.0 {
            self.cpu_secs / self.wall_secs
        } else {
            0.0
        }
    }

    /// Fraction of the budget: CPU time / wall time / cores.
    pub fn fraction(&self) -> f64 {
        self.cores_busy() / self.cores.max(1) as f64
    }

    /// `CPU 1.85 of 2 cores (185.0 s CPU / 100.0 s wall)`.
    pub fn line(&self) -> String {
        format!(
            "CPU {:.2} of {} cores ({:.1} s CPU / {:.1} s wall)",
            self.cores_busy(),
            self.cores,
            self.cpu_secs,
            self.wall_secs
        )
    }
}

/// Measures a span of this process: [`Clock::stop`] gives its utilisation.
pub struct Clock {
    cpu: f64,
    wall: std::time::Instant,
}

impl Clock {
    pub fn start() -> Self {
        Clock {
            cpu: process_cpu_secs(),
            wall: std::time::Instant::now(),
        }
    }

    pub fn stop(&self, cores: usize) -> Utilisation {
        Utilisation {
            cpu_secs: (process_cpu_secs() - self.cpu).max(0.0),
            wall_secs: self.wall.elapsed().as_secs_f64(),
            cores,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utilisation_from_hand_values() {
        let u = Utilisation {
            cpu_secs: 185.0,
            wall_secs: 100.0,
            cores: 2,
        };
        assert!((u.cores_busy() - 1.85).abs() < 1e-12);
        assert!((u.fraction() - 0.925).abs() < 1e-12);
        assert_eq!(u.line(), "CPU 1.85 of 2 cores (185.0 s CPU / 100.0 s wall)");
        let idle = Utilisation {
            cpu_secs: 0.0,
            wall_secs: 0.0,
            cores: 2,
        };
        assert_eq!(idle.cores_busy(), 0.0);
    }

    fn spin(secs: f64) -> u64 {
        let t = std::time::Instant::now();
        let mut x = 1u64;
        while t.elapsed().as_secs_f64() < secs {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        x
    }

    #[test]
    fn a_pool_adds_its_threads_cpu_time_to_the_meter() {
        let meter = Arc::new(Meter::default());
        let before = set_meter(Some(meter.clone()));
        // two workers each spinning 0.2 s: about 0.4 s of CPU (less if the machine is busy)
        in_pool(2, || {
            rayon::join(|| spin(0.2), || spin(0.2));
            // a nested pool's worker inherits the meter
            in_pool(1, || spin(0.1));
        });
        set_meter(before);
        let s = meter.secs();
        assert!(s > 0.15 && s < 0.9, "metered {s} s");
        // without a meter nothing is recorded and the work still runs
        assert_eq!(in_pool(1, || 7), 7);
        assert!(current_meter().is_none());
    }

    #[test]
    fn process_cpu_time_grows_with_work() {
        let c = Clock::start();
        spin(0.1);
        let u = c.stop(1);
        assert!(u.cpu_secs > 0.03, "{u:?}");
        assert!(u.wall_secs >= 0.1, "{u:?}");
    }
}
