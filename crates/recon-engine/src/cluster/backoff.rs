//! Capped exponential backoff for the coordinator's retry loops: no loop
//! retries a failing step without waiting, and the wait grows while the
//! failure lasts.

use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Waits that double from `first` up to `max`; [`reset`](Self::reset) after
/// a success.
#[derive(Debug, Clone)]
pub(super) struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// A backoff starting at `first` (at least 1 ms), capped at `max`.
    pub(super) fn new(first: Duration, max: Duration) -> Self {
        let first = first.max(Duration::from_millis(1));
        Self {
            first,
            max: max.max(first),
            next: first,
        }
    }

    /// The next wait, doubling the one after it.
    pub(super) fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        delay
    }

    /// Starts again from the first wait.
    pub(super) fn reset(&mut self) {
        self.next = self.first;
    }

    /// Waits the next delay; `false` if `cancel` fired first.
    pub(super) async fn wait(&mut self, cancel: &CancellationToken) -> bool {
        let delay = self.next_delay();
        tokio::select! {
            _ = cancel.cancelled() => false,
            _ = tokio::time::sleep(delay) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_cap_and_reset() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(500));
        let waits: Vec<u128> = (0..5).map(|_| backoff.next_delay().as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 500, 500]);
        backoff.reset();
        assert_eq!(backoff.next_delay(), Duration::from_millis(100));
    }

    #[test]
    fn a_zero_first_wait_still_waits() {
        let mut backoff = Backoff::new(Duration::ZERO, Duration::ZERO);
        assert!(backoff.next_delay() > Duration::ZERO);
    }
}
