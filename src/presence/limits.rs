//! Per-user abuse limits: the write rate (a token bucket shared by all of a user's sessions, so
//! reconnecting or opening more sessions buys nothing) and the cap on sessions per user.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::ids::UserId;

/// A token bucket: `rate` tokens per second, at most `burst` saved up. Starts full.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    refilled: Instant,
}

impl TokenBucket {
    /// A bucket refilling `rate` per second up to `burst`; a `rate` of 0 never refuses.
    pub fn new(rate: u32, burst: u32, now: Instant) -> TokenBucket {
        TokenBucket {
            rate: f64::from(rate),
            burst: f64::from(burst.max(1)),
            tokens: f64::from(burst.max(1)),
            refilled: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.refilled = now;
    }

    /// Whether the bucket is full again (forgetting it then loses nothing).
    pub fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.rate == 0.0 || self.tokens >= self.burst
    }

    /// Takes one token; when none is left, how long until one is.
    pub fn take(&mut self, now: Instant) -> Result<(), Duration> {
        if self.rate == 0.0 {
            return Ok(());
        }
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
        }
    }
}

/// The sessions and the write budget of each user with a session open (or a budget still
/// refilling).
pub struct SessionCounts {
    rate: u32,
    burst: u32,
    users: Mutex<HashMap<UserId, UserLimits>>,
}

struct UserLimits {
    open: usize,
    writes: TokenBucket,
}

/// One admitted session; dropping it frees the place.
pub struct SessionPermit {
    counts: Arc<SessionCounts>,
    user: UserId,
}

impl SessionCounts {
    /// Budgets of `rate` writes per second and bursts of `burst` per user (rate 0: no limit).
    pub fn new(rate: u32, burst: u32) -> SessionCounts {
        SessionCounts {
            rate,
            burst,
            users: Mutex::new(HashMap::new()),
        }
    }

    fn users(&self) -> std::sync::MutexGuard<'_, HashMap<UserId, UserLimits>> {
        self.users.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits one more session of `user` unless `cap` (0: none) are already open.
    pub fn admit(self: &Arc<Self>, user: &UserId, cap: usize) -> Option<SessionPermit> {
        let mut users = self.users();
        let limits = users.entry(user.clone()).or_insert_with(|| UserLimits {
            open: 0,
            writes: TokenBucket::new(self.rate, self.burst, Instant::now()),
        });
        if cap > 0 && limits.open >= cap {
            return None;
        }
        limits.open += 1;
        Some(SessionPermit {
            counts: Arc::clone(self),
            user: user.clone(),
        })
    }
}

impl SessionPermit {
    /// Takes one write (a `send`, a new `direct`) from the user's budget; when it is spent, how
    /// long until the next write is allowed.
    pub fn take_write(&self, now: Instant) -> Result<(), Duration> {
        match self.counts.users().get_mut(&self.user) {
            Some(limits) => limits.writes.take(now),
            None => Ok(()),
        }
    }
}

impl Drop for SessionPermit {
    fn drop(&mut self) {
        let mut users = self.counts.users();
        if let Some(limits) = users.get_mut(&self.user) {
            limits.open = limits.open.saturating_sub(1);
            // A spent budget outlives the sessions, so reconnecting does not refill it; the
            // entry goes once it is full again (checked when any session of anyone closes).
            let now = Instant::now();
            users.retain(|_, l| l.open > 0 || !l.writes.is_full(now));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_a_burst_then_the_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10, 3, start);
        for _ in 0..3 {
            assert_eq!(bucket.take(start), Ok(()));
        }
        let wait = bucket.take(start).expect_err("the burst is spent");
        assert!(wait <= Duration::from_millis(100) && wait > Duration::ZERO);
        // 100 ms later one token (10/s) is back, and only one.
        let later = start + Duration::from_millis(100);
        assert_eq!(bucket.take(later), Ok(()));
        assert!(bucket.take(later).is_err());
        // A long pause refills no more than the burst.
        let much_later = later + Duration::from_secs(60);
        for _ in 0..3 {
            assert_eq!(bucket.take(much_later), Ok(()));
        }
        assert!(bucket.take(much_later).is_err());
    }

    #[test]
    fn rate_zero_never_refuses() {
        let now = Instant::now();
        let mut bucket = TokenBucket::new(0, 1, now);
        for _ in 0..10_000 {
            assert_eq!(bucket.take(now), Ok(()));
        }
    }

    #[test]
    fn the_write_budget_is_per_user_and_survives_reconnects() {
        let counts = Arc::new(SessionCounts::new(1, 2));
        let alice = UserId::parse("alice").unwrap();
        let now = Instant::now();
        let first = counts.admit(&alice, 0).expect("admitted");
        let second = counts.admit(&alice, 0).expect("admitted");
        assert_eq!(first.take_write(now), Ok(()));
        assert_eq!(second.take_write(now), Ok(()));
        assert!(first.take_write(now).is_err(), "the burst is shared");
        drop((first, second));
        let again = counts.admit(&alice, 0).expect("admitted");
        assert!(again.take_write(now).is_err(), "reconnecting buys nothing");
    }

    #[test]
    fn permits_are_counted_per_user_and_freed_on_drop() {
        let counts = Arc::new(SessionCounts::new(0, 1));
        let alice = UserId::parse("alice").unwrap();
        let bob = UserId::parse("bob").unwrap();
        let first = counts.admit(&alice, 2).expect("first");
        let second = counts.admit(&alice, 2).expect("second");
        assert!(counts.admit(&alice, 2).is_none());
        assert!(counts.admit(&bob, 2).is_some(), "caps are per user");
        drop(first);
        let third = counts.admit(&alice, 2).expect("a place was freed");
        drop((second, third));
        assert!(counts.users().is_empty(), "rate 0: nothing to remember");
        assert!(counts.admit(&alice, 0).is_some(), "0 means no cap");
    }
}
