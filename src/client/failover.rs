//! Several server URLs: which one the worker tries next, and how long it waits first.
//!
//! A client may be given the URLs of several nodes of one service (an active node and a
//! standby, docs/PROTOCOL.md §3.4, *Several servers*). Only one accepts sessions at a time; the
//! others refuse the upgrade (a standby answers `503` with `Retry-After`), are down, or close
//! with 1012 when they step down. The client goes round the list until one accepts it.
//!
//! The rule, in [`Rotation`]: after a connection that was up ends (a drop, any close but 4001),
//! wait the reconnect delay, as with one URL, then try the *next* URL; after a failed attempt,
//! try the next one at once, until every URL failed once since the last wait (a round); then
//! wait the reconnect delay again, or longer when a refusal asked for it with `Retry-After`
//! (capped at [`MAX_RETRY_AFTER`]). With one URL this is exactly the single-server behaviour:
//! every round is one attempt, each after the delay. The rejected option, waiting before every
//! attempt, makes a move to the new active node take one delay per standby in front of it; and
//! trying the same URL again first after a drop sends a 1012 straight back to the standby.
//!
//! It is a pure struct (no clock, no socket), so the order and the waits are unit-tested here.

use std::time::Duration;

/// The longest `Retry-After` the client honours; a longer one is cut to this.
pub(crate) const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// Where the worker is in its list of URLs (see the module documentation).
#[derive(Debug, Clone)]
pub(crate) struct Rotation {
    n_urls: usize,
    /// The URL connected now, or to try next.
    current: usize,
    /// Attempts that failed since the last wait.
    n_failed_in_round: usize,
    /// The shortest `Retry-After` a refusal of this round asked for.
    retry_after: Option<Duration>,
}

impl Rotation {
    /// A rotation over `n_urls` URLs (at least one is assumed), at URL `current`.
    pub(crate) fn starting_at(n_urls: usize, current: usize) -> Rotation {
        let n_urls = n_urls.max(1);
        Rotation {
            n_urls,
            current: current % n_urls,
            n_failed_in_round: 0,
            retry_after: None,
        }
    }

    /// The index of the URL connected now, or to try next.
    pub(crate) fn current(&self) -> usize {
        self.current
    }

    /// The connection to the current URL was up and ended: the next URL is tried after
    /// `reconnect_delay`, which this returns.
    pub(crate) fn on_dropped(&mut self, reconnect_delay: Duration) -> Duration {
        self.current = (self.current + 1) % self.n_urls;
        self.n_failed_in_round = 0;
        self.retry_after = None;
        reconnect_delay
    }

    /// An attempt at the current URL failed (`retry_after`: what its refusal asked for): moves
    /// to the next URL and returns how long to wait before trying it: nothing within a round;
    /// after a round, `reconnect_delay` or the round's shortest `Retry-After` if longer.
    pub(crate) fn on_failed(
        &mut self,
        retry_after: Option<Duration>,
        reconnect_delay: Duration,
    ) -> Duration {
        self.current = (self.current + 1) % self.n_urls;
        self.n_failed_in_round += 1;
        if let Some(asked) = retry_after {
            let asked = asked.min(MAX_RETRY_AFTER);
            self.retry_after = Some(self.retry_after.map_or(asked, |kept| kept.min(asked)));
        }
        if self.n_failed_in_round < self.n_urls {
            return Duration::ZERO;
        }
        let wait = self
            .retry_after
            .map_or(reconnect_delay, |asked| asked.max(reconnect_delay));
        self.n_failed_in_round = 0;
        self.retry_after = None;
        wait
    }

    /// An attempt at the current URL succeeded: it stays current.
    pub(crate) fn on_connected(&mut self) {
        self.n_failed_in_round = 0;
        self.retry_after = None;
    }
}

/// The wait a `Retry-After` header value asks for: whole seconds, capped at
/// [`MAX_RETRY_AFTER`]. The HTTP-date form (and anything else) gives `None`: the client then
/// waits its own reconnect delay.
pub(crate) fn parse_retry_after(value: &str) -> Option<Duration> {
    let seconds: u64 = value.trim().parse().ok()?;
    Some(Duration::from_secs(seconds).min(MAX_RETRY_AFTER))
}

/// A URL as it may appear in a log line: without its query and fragment, where a token could
/// have been put.
pub(crate) fn loggable(url: &str) -> &str {
    url.split(['?', '#']).next().unwrap_or(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DELAY: Duration = Duration::from_millis(200);

    #[test]
    fn one_url_waits_the_delay_before_every_attempt_as_before() {
        let mut rotation = Rotation::starting_at(1, 0);
        assert_eq!(rotation.on_dropped(DELAY), DELAY);
        assert_eq!(rotation.current(), 0);
        assert_eq!(rotation.on_failed(None, DELAY), DELAY);
        assert_eq!(rotation.on_failed(None, DELAY), DELAY);
        assert_eq!(rotation.current(), 0);
    }

    #[test]
    fn a_round_tries_every_url_at_once_then_waits() {
        let mut rotation = Rotation::starting_at(3, 0);
        // Connected to 0, which drops: 1 after the delay, then 2 and 0 at once.
        assert_eq!(rotation.on_dropped(DELAY), DELAY);
        assert_eq!(rotation.current(), 1);
        assert_eq!(rotation.on_failed(None, DELAY), Duration::ZERO);
        assert_eq!(rotation.current(), 2);
        assert_eq!(rotation.on_failed(None, DELAY), Duration::ZERO);
        assert_eq!(rotation.current(), 0);
        // Every URL failed once: wait before the next round, which starts at 1 again.
        assert_eq!(rotation.on_failed(None, DELAY), DELAY);
        assert_eq!(rotation.current(), 1);
        assert_eq!(rotation.on_failed(None, DELAY), Duration::ZERO);
        assert_eq!(rotation.current(), 2);
    }

    #[test]
    fn a_connection_resets_the_round() {
        let mut rotation = Rotation::starting_at(2, 0);
        assert_eq!(rotation.on_failed(None, DELAY), Duration::ZERO);
        rotation.on_connected();
        assert_eq!(rotation.current(), 1);
        // A failure right after a connection is the first of a new round.
        assert_eq!(rotation.on_failed(None, DELAY), Duration::ZERO);
        assert_eq!(rotation.current(), 0);
    }

    #[test]
    fn retry_after_lengthens_the_wait_after_a_round_capped() {
        let mut rotation = Rotation::starting_at(2, 0);
        assert_eq!(
            rotation.on_failed(Some(Duration::from_secs(3)), DELAY),
            Duration::ZERO
        );
        // The other URL is just down: the round waits what the standby asked for.
        assert_eq!(rotation.on_failed(None, DELAY), Duration::from_secs(3));
        // The shortest of the round's asks wins; none is shorter than the delay.
        rotation.on_failed(Some(Duration::from_secs(5)), DELAY);
        assert_eq!(rotation.on_failed(Some(Duration::ZERO), DELAY), DELAY);
        // An absurd ask is capped, and forgotten after its round.
        rotation.on_failed(Some(Duration::from_secs(86_400)), DELAY);
        assert_eq!(rotation.on_failed(None, DELAY), MAX_RETRY_AFTER);
        rotation.on_failed(None, DELAY);
        assert_eq!(rotation.on_failed(None, DELAY), DELAY);
    }

    #[test]
    fn a_start_past_the_end_wraps() {
        assert_eq!(Rotation::starting_at(2, 3).current(), 1);
        assert_eq!(Rotation::starting_at(0, 0).current(), 0);
    }

    #[test]
    fn retry_after_values() {
        assert_eq!(parse_retry_after("5"), Some(Duration::from_secs(5)));
        assert_eq!(parse_retry_after(" 2 "), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after("100000"), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after(""), None);
    }

    #[test]
    fn logged_urls_lose_their_query() {
        assert_eq!(loggable("ws://a:1/ws?token=secret"), "ws://a:1/ws");
        assert_eq!(loggable("ws://a:1/ws#x"), "ws://a:1/ws");
        assert_eq!(loggable("ws://a:1/ws"), "ws://a:1/ws");
    }
}
