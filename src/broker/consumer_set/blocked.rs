//! How long all of a queue's consumers were unable to take a message (each
//! parked on its prefetch, its channel's or its connection's mailbox):
//! what RabbitMQ's `consumer_utilisation` is the complement of. The
//! consumer set marks the two transitions (the last active consumer
//! parks; one comes back or the last one leaves) under the queue's lock;
//! the sampler reads the total without it. One clock read per transition,
//! none per message while any consumer can take.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::Instant;

/// Nanoseconds since the first call in this process (never 0 after it).
fn now_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = EPOCH.get_or_init(Instant::now);
    (epoch.elapsed().as_nanos() as u64).max(1)
}

/// Time spent with every consumer parked.
#[derive(Debug, Default)]
pub struct BlockedTime {
    /// Finished blocked periods, ns.
    total_ns: AtomicU64,
    /// Start of the current blocked period (0: not blocked).
    since_ns: AtomicU64,
}

impl BlockedTime {
    /// Every consumer is parked now (no-op if already so).
    pub fn start(&self) {
        if self.since_ns.load(Relaxed) == 0 {
            self.since_ns.store(now_ns(), Relaxed);
        }
    }

    /// Some consumer can take again, or none is left. The total grows
    /// before the period closes, so a reader in between counts the period
    /// at most twice for an instant, never loses it (only the queue's
    /// lock holder writes).
    pub fn stop(&self) {
        let since = self.since_ns.load(Relaxed);
        if since != 0 {
            self.total_ns
                .fetch_add(now_ns().saturating_sub(since), Relaxed);
            self.since_ns.store(0, Relaxed);
        }
    }

    /// Whether a blocked period is open.
    pub fn is_running(&self) -> bool {
        self.since_ns.load(Relaxed) != 0
    }

    /// Total blocked time up to now, the current period included.
    pub fn total_ns(&self) -> u64 {
        let since = self.since_ns.load(Relaxed);
        let current = match since {
            0 => 0,
            s => now_ns().saturating_sub(s),
        };
        self.total_ns.load(Relaxed) + current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_finished_and_current_periods() {
        let b = BlockedTime::default();
        assert_eq!(b.total_ns(), 0);
        b.start();
        std::thread::sleep(std::time::Duration::from_millis(5));
        b.start(); // still the same period
        b.stop();
        let first = b.total_ns();
        assert!(first >= 5_000_000, "{first}");
        b.stop();
        assert_eq!(b.total_ns(), first, "stopping twice adds nothing");
        b.start();
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(b.total_ns() >= first + 2_000_000);
    }
}
