//! A token bucket for `requests_per_minute`: full at start (a burst of a minute's worth is
//! allowed), refilled continuously.

use std::sync::Mutex;
use std::time::Instant;

#[derive(Debug)]
pub struct RateLimit {
    per_minute: u32,
    /// (tokens, last refill). A std mutex: held for a few arithmetic operations, never across
    /// an await.
    state: Mutex<(f64, Instant)>,
}

impl RateLimit {
    pub fn per_minute(per_minute: u32) -> RateLimit {
        RateLimit {
            per_minute,
            state: Mutex::new((f64::from(per_minute), Instant::now())),
        }
    }

    pub fn per_minute_limit(&self) -> u32 {
        self.per_minute
    }

    /// Takes one token; false when the bucket is empty.
    pub fn try_take(&self) -> bool {
        self.try_take_at(Instant::now())
    }

    pub(crate) fn try_take_at(&self, now: Instant) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (tokens, last) = &mut *state;
        let capacity = f64::from(self.per_minute);
        let elapsed = now.saturating_duration_since(*last).as_secs_f64();
        *tokens = (*tokens + elapsed * capacity / 60.0).min(capacity);
        *last = now.max(*last);
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}
