//! The allocator, and giving memory back to the operating system after a burst.
//!
//! mimalloc: the proxy allocates many small, short-lived buffers per query on several threads;
//! glibc's malloc showed up at ~8 % of the proxy's CPU under pgbench, and mimalloc also made the
//! classifier ~24 % faster in its benchmark.
//!
//! mimalloc returns freed memory to the OS lazily: a block freed by another thread than the one
//! that allocated it waits for its owner to allocate again, and empty pages are purged only when
//! their thread next works in the allocator. Tasks move between runtime threads, so after a
//! burst of connections (a flood of logins that never finish, say) the threads go idle with the
//! burst's memory still resident. Measured with 1,000 half-open logins: RSS 37 MB before, 123 MB
//! during, still 122 MB after they closed. [`on_park`] lets each runtime thread collect when it
//! goes idle, at most ten times a second, which brings it back (SECURITY.md has the figures).

use std::cell::Cell;
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The most often one thread collects: a collection walks the thread's pages, cheap ten times
/// a second, not on every park of a busy thread. Short, because what is freed after a thread's
/// last collection waits for that thread to work again.
const COLLECT_EVERY: Duration = Duration::from_millis(100);

/// For the runtime's `on_thread_park`: collects this thread's freed memory when it last did so
/// more than [`COLLECT_EVERY`] ago.
pub fn on_park() {
    thread_local! {
        static LAST: Cell<Option<Instant>> = const { Cell::new(None) };
    }
    let now = Instant::now();
    let due = LAST.with(|last| match last.get() {
        Some(at) if now.duration_since(at) < COLLECT_EVERY => false,
        _ => {
            last.set(Some(now));
            true
        }
    });
    if due {
        // SAFETY: `mi_collect` takes no pointers and may be called from any thread at any
        // time; it only frees memory the program has already freed.
        unsafe { libmimalloc_sys::mi_collect(false) };
    }
}
