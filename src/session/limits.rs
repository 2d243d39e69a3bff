//! Per-session abuse limits: the send rate (a token bucket) and the cap on sessions per user.

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

    /// Takes one token; when none is left, how long until one is.
    pub fn take(&mut self, now: Instant) -> Result<(), Duration> {
        if self.rate == 0.0 {
            return Ok(());
        }
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
        }
    }
}

/// Counts the open sessions of each user, to cap them.
#[derive(Default)]
pub struct SessionCounts {
    open: Mutex<HashMap<UserId, usize>>,
}

/// One admitted session; dropping it frees the place.
pub struct SessionPermit {
    counts: Arc<SessionCounts>,
    user: UserId,
}

impl SessionCounts {
    /// Admits one more session of `user` unless `cap` (0: none) are already open.
    pub fn admit(self: &Arc<Self>, user: &UserId, cap: usize) -> Option<SessionPermit> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(user.clone()).or_default();
        if cap > 0 && *count >= cap {
            return None;
        }
        *count += 1;
        Some(SessionPermit {
            counts: Arc::clone(self),
            user: user.clone(),
        })
    }
}

impl Drop for SessionPermit {
    fn drop(&mut self) {
        let mut open = self.counts.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.user) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.user);
            }
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
    fn permits_are_counted_per_user_and_freed_on_drop() {
        let counts = Arc::new(SessionCounts::default());
        let alice = UserId::parse("alice").unwrap();
        let bob = UserId::parse("bob").unwrap();
        let first = counts.admit(&alice, 2).expect("first");
        let second = counts.admit(&alice, 2).expect("second");
        assert!(counts.admit(&alice, 2).is_none());
        assert!(counts.admit(&bob, 2).is_some(), "caps are per user");
        drop(first);
        let third = counts.admit(&alice, 2).expect("a place was freed");
        drop((second, third));
        assert!(counts.open.lock().unwrap().is_empty());
        assert!(counts.admit(&alice, 0).is_some(), "0 means no cap");
    }
}
