//! The per-call deadline: wall-clock epochs to notice an overrun cheaply, thread CPU time to decide
//! whether it is one.
//!
//! A pure wall-clock deadline fails calls that did almost no work but were preempted by the OS —
//! on a busy 2-core machine (a policy swap compiling next to the workers, a noisy neighbour) a
//! 1 µs call occasionally waits 10 ms for a CPU, and `fail-closed` would turn that into a client
//! error. Reading the thread's CPU clock on every call would fix it but costs a syscall (~0.3 µs,
//! a third of a call). So the CPU clock is read only once the wall clock says the call is late:
//!
//! 1. the epoch deadline is set at half the budget (wall time);
//! 2. when it fires, the thread CPU time is noted and the call continues in small steps;
//! 3. at each later step the call traps once it has used another half budget of CPU since the
//!    mark — a runaway loop on an idle machine is thus stopped after about the budget (½ wall +
//!    ½ CPU), while a preempted call simply finishes when it gets the CPU back;
//! 4. whatever happens, a call is stopped after `MAX_STEPS` steps (about ten budgets of wall
//!    time), so a starved machine cannot hold a call forever.
//!
//! Guest code pays nothing for this; only calls that pass half their budget take the slow path.

use std::time::Duration;

use super::runtime::EPOCH_TICK;

/// Upper bound on deadline steps after the first mark: ~10 budgets of wall time in quarter steps.
const MAX_STEPS: u32 = 38;

/// Deadline bookkeeping of one call, kept in the store.
#[derive(Debug, Default)]
pub struct CallDeadline {
    budget: Duration,
    cpu_mark: Option<Duration>,
    steps: u32,
    /// Set when the call was stopped for overrunning its budget.
    pub exceeded: bool,
}

/// What the epoch callback should do.
pub enum Verdict {
    /// Let the call run this many more ticks.
    Continue(u64),
    Stop,
}

impl CallDeadline {
    /// Resets for a new call and returns the epoch ticks to arm the store with.
    pub fn start(&mut self, budget: Duration) -> u64 {
        self.budget = budget;
        self.cpu_mark = None;
        self.steps = 0;
        self.exceeded = false;
        ticks(budget / 2) + 1
    }

    /// Called when the armed epoch deadline is reached.
    pub fn on_epoch(&mut self) -> Verdict {
        let step = ticks(self.budget / 4);
        let Some(now) = thread_cpu_time() else {
            // No thread CPU clock: fall back to the plain wall-clock budget.
            self.steps += 1;
            return self.stop_if(self.steps > 2, step);
        };
        match self.cpu_mark {
            None => {
                self.cpu_mark = Some(now);
                Verdict::Continue(step)
            }
            Some(mark) => {
                self.steps += 1;
                let used = now.saturating_sub(mark);
                self.stop_if(used >= self.budget / 2 || self.steps > MAX_STEPS, step)
            }
        }
    }

    fn stop_if(&mut self, stop: bool, step: u64) -> Verdict {
        if stop {
            self.exceeded = true;
            Verdict::Stop
        } else {
            Verdict::Continue(step)
        }
    }
}

/// Epoch ticks covering `d`, at least one.
fn ticks(d: Duration) -> u64 {
    (d.as_nanos().div_ceil(EPOCH_TICK.as_nanos()) as u64).max(1)
}

/// CPU time consumed by the calling thread.
fn thread_cpu_time() -> Option<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_THREAD_CPUTIME_ID needs no other state.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    (rc == 0).then(|| Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Burns `d` of this thread's CPU time (not wall time: on a loaded machine a wall-clock
    /// spin may get much less CPU, which made this test flaky).
    fn spin(d: Duration) {
        let start = thread_cpu_time().expect("thread CPU clock");
        while thread_cpu_time().expect("thread CPU clock") - start < d {
            std::hint::black_box(0u64);
        }
    }

    #[test]
    fn a_busy_call_is_stopped_after_half_a_budget_of_cpu_past_the_mark() {
        let mut deadline = CallDeadline::default();
        deadline.start(Duration::from_millis(20));
        assert!(matches!(deadline.on_epoch(), Verdict::Continue(_)));
        spin(Duration::from_millis(12));
        assert!(matches!(deadline.on_epoch(), Verdict::Stop));
        assert!(deadline.exceeded);
    }

    #[test]
    fn an_idle_call_keeps_running_until_the_wall_cap() {
        let mut deadline = CallDeadline::default();
        deadline.start(Duration::from_millis(20));
        let mut continued = 0;
        while let Verdict::Continue(_) = deadline.on_epoch() {
            continued += 1;
            assert!(continued < 100, "never stopped");
        }
        assert_eq!(continued, MAX_STEPS as usize + 1);
    }

    #[test]
    fn start_resets_the_previous_call() {
        let mut deadline = CallDeadline::default();
        deadline.start(Duration::from_millis(1));
        deadline.on_epoch();
        deadline.exceeded = true;
        let ticks = deadline.start(Duration::from_millis(10));
        assert!(!deadline.exceeded);
        assert_eq!(ticks, super::ticks(Duration::from_millis(5)) + 1);
    }
}
