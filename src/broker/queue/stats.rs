//! A queue's counters for the management API and metrics, and the rates
//! the sampler derives from them.
//!
//! Counters are relaxed atomics bumped where the event happens (the queue's
//! own lock is usually held there already, so the cache line is the
//! queue's). Rates are not kept per event: the node's sampler reads the
//! counters every few seconds and stores the last rate, so memory per
//! queue is fixed (no sample history, no statistics database).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use std::sync::Arc;

use parking_lot::Mutex;

use crate::broker::consumer_set::BlockedTime;

/// The counters of one queue.
#[derive(Debug, Default)]
pub struct QueueStats {
    published: AtomicU64,
    delivered_ack: AtomicU64,
    delivered_no_ack: AtomicU64,
    get_ack: AtomicU64,
    get_no_ack: AtomicU64,
    acked: AtomicU64,
    redelivered: AtomicU64,
    /// Deliveries a client holds and has not settled (a gauge).
    unacked: AtomicU64,
    /// Time with every consumer parked (the consumer set's clock).
    blocked: Arc<BlockedTime>,
    sampled: Mutex<Sampled>,
}

/// A copy of the counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Counts {
    /// Messages enqueued.
    pub published: u64,
    /// Deliveries to consumers that ack.
    pub delivered_ack: u64,
    /// Deliveries to no-ack consumers.
    pub delivered_no_ack: u64,
    /// basic.get answers that need an ack.
    pub get_ack: u64,
    /// basic.get answers with no-ack.
    pub get_no_ack: u64,
    /// Deliveries acked.
    pub acked: u64,
    /// Deliveries with the redelivered flag.
    pub redelivered: u64,
}

impl Counts {
    /// Every delivery and get (RabbitMQ's `deliver_get`).
    pub fn deliver_get(&self) -> u64 {
        self.delivered_ack + self.delivered_no_ack + self.get_ack + self.get_no_ack
    }
}

/// Per-second rates of [`Counts`] over the last sampling interval.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Rates {
    /// Messages enqueued per second.
    pub published: f64,
    /// Deliveries to consumers that ack, per second.
    pub delivered_ack: f64,
    /// Deliveries to no-ack consumers per second.
    pub delivered_no_ack: f64,
    /// Gets needing an ack per second.
    pub get_ack: f64,
    /// No-ack gets per second.
    pub get_no_ack: f64,
    /// Acks per second.
    pub acked: f64,
    /// Redeliveries per second.
    pub redelivered: f64,
}

impl Rates {
    /// Deliveries and gets per second.
    pub fn deliver_get(&self) -> f64 {
        self.delivered_ack + self.delivered_no_ack + self.get_ack + self.get_no_ack
    }
}

#[derive(Debug, Default)]
struct Sampled {
    at_ms: u64,
    counts: Counts,
    rates: Rates,
    /// When a counter last moved (Unix ms; 0: never seen to).
    active_ms: u64,
    /// Ready and unacked messages at the last sample.
    ready: u64,
    unacked: u64,
    /// Their change per second over the last interval.
    ready_rate: f64,
    unacked_rate: f64,
    /// Blocked time at the last sample, ns.
    blocked_ns: u64,
    /// Share of the last interval some consumer could take a message.
    utilisation: f64,
}

impl QueueStats {
    /// Counters for a queue whose consumer set keeps `blocked`.
    pub fn new(blocked: Arc<BlockedTime>) -> Self {
        QueueStats {
            blocked,
            ..Default::default()
        }
    }

    /// A message was enqueued.
    pub fn published(&self) {
        self.published.fetch_add(1, Relaxed);
    }

    /// A consumer got a message; `ack` if it must settle it.
    pub fn delivered(&self, ack: bool, redelivered: bool) {
        match ack {
            true => {
                self.delivered_ack.fetch_add(1, Relaxed);
                self.unacked.fetch_add(1, Relaxed);
            }
            false => {
                self.delivered_no_ack.fetch_add(1, Relaxed);
            }
        };
        if redelivered {
            self.redelivered.fetch_add(1, Relaxed);
        }
    }

    /// basic.get handed a message out; `ack` if it must be settled.
    pub fn got(&self, ack: bool, redelivered: bool) {
        match ack {
            true => {
                self.get_ack.fetch_add(1, Relaxed);
                self.unacked.fetch_add(1, Relaxed);
            }
            false => {
                self.get_no_ack.fetch_add(1, Relaxed);
            }
        };
        if redelivered {
            self.redelivered.fetch_add(1, Relaxed);
        }
    }

    /// `n` unacked deliveries were settled (acked when `acked`, else
    /// requeued or rejected).
    pub fn settled(&self, n: u64, acked: bool) {
        if acked {
            self.acked.fetch_add(n, Relaxed);
        }
        // Never below zero, whatever the order of events.
        let _ = self
            .unacked
            .fetch_update(Relaxed, Relaxed, |u| Some(u.saturating_sub(n)));
    }

    /// Deliveries held by clients, not yet settled.
    pub fn unacked(&self) -> u64 {
        self.unacked.load(Relaxed)
    }

    /// The counters now.
    pub fn counts(&self) -> Counts {
        Counts {
            published: self.published.load(Relaxed),
            delivered_ack: self.delivered_ack.load(Relaxed),
            delivered_no_ack: self.delivered_no_ack.load(Relaxed),
            get_ack: self.get_ack.load(Relaxed),
            get_no_ack: self.get_no_ack.load(Relaxed),
            acked: self.acked.load(Relaxed),
            redelivered: self.redelivered.load(Relaxed),
        }
    }

    /// Take a sample at `now_ms`, with `ready` messages in the queue: the
    /// rates since the last one.
    pub fn sample(&self, now_ms: u64, ready: u64, consumers: u64) {
        let counts = self.counts();
        let unacked = self.unacked();
        let blocked_ns = self.blocked.total_ns();
        let mut s = self.sampled.lock();
        if s.at_ms != 0 && now_ms > s.at_ms {
            let secs = (now_ms - s.at_ms) as f64 / 1000.0;
            s.rates = rates_between(&s.counts, &counts, now_ms - s.at_ms);
            s.ready_rate = (ready as f64 - s.ready as f64) / secs;
            s.unacked_rate = (unacked as f64 - s.unacked as f64) / secs;
            let blocked = blocked_ns.saturating_sub(s.blocked_ns) as f64 / 1e9;
            s.utilisation = match consumers {
                0 => 0.0,
                _ => (1.0_f64 - blocked / secs).clamp(0.0, 1.0),
            };
        }
        s.blocked_ns = blocked_ns;
        s.ready = ready;
        s.unacked = unacked;
        if counts != s.counts || s.at_ms == 0 {
            s.active_ms = now_ms;
        }
        s.at_ms = now_ms;
        s.counts = counts;
    }

    /// The share of the last sampling interval in which some consumer
    /// could take a message at once (0 without consumers), RabbitMQ's
    /// `consumer_utilisation`.
    pub fn utilisation(&self) -> f64 {
        self.sampled.lock().utilisation
    }

    /// The rates of the last sampling interval.
    pub fn rates(&self) -> Rates {
        self.sampled.lock().rates
    }

    /// How fast ready and unacked messages changed over the last
    /// interval, per second (negative when they fall).
    pub fn depth_rates(&self) -> (f64, f64) {
        let s = self.sampled.lock();
        (s.ready_rate, s.unacked_rate)
    }

    /// When a counter was last seen to move (Unix ms), as of the last
    /// sample; 0 before the first.
    pub fn active_ms(&self) -> u64 {
        self.sampled.lock().active_ms
    }
}

/// Per-second rates between two samples `ms` apart.
fn rates_between(before: &Counts, after: &Counts, ms: u64) -> Rates {
    let secs = ms as f64 / 1000.0;
    let r = |b: u64, a: u64| a.saturating_sub(b) as f64 / secs;
    Rates {
        published: r(before.published, after.published),
        delivered_ack: r(before.delivered_ack, after.delivered_ack),
        delivered_no_ack: r(before.delivered_no_ack, after.delivered_no_ack),
        get_ack: r(before.get_ack, after.get_ack),
        get_no_ack: r(before.get_no_ack, after.get_no_ack),
        acked: r(before.acked, after.acked),
        redelivered: r(before.redelivered, after.redelivered),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics_memory_per_queue_is_fixed_and_small() {
        // The bound: under 1 KB per queue, whatever the traffic.
        let bytes = std::mem::size_of::<QueueStats>();
        assert!(bytes < 1024, "{bytes} bytes");
    }

    #[test]
    fn utilisation_is_the_unblocked_share_of_the_interval() {
        let blocked = Arc::new(BlockedTime::default());
        let s = QueueStats::new(blocked.clone());
        s.sample(1_000, 0, 1);
        s.sample(1_200, 0, 1);
        assert_eq!(s.utilisation(), 1.0, "never blocked");
        blocked.start();
        std::thread::sleep(std::time::Duration::from_millis(100));
        blocked.stop();
        s.sample(1_400, 0, 1);
        assert!(s.utilisation() <= 0.5, "{}", s.utilisation());
        s.sample(1_600, 0, 0);
        assert_eq!(s.utilisation(), 0.0, "no consumers");
    }

    #[test]
    fn rates_come_from_consecutive_samples() {
        let s = QueueStats::default();
        s.sample(1_000, 0, 0);
        for _ in 0..50 {
            s.published();
        }
        s.delivered(true, false);
        s.delivered(false, true);
        s.got(true, false);
        s.sample(6_000, 10, 0);
        let r = s.rates();
        assert_eq!(r.published, 10.0);
        assert!((r.deliver_get() - 0.6).abs() < 1e-9);
        assert_eq!(r.redelivered, 0.2);
        assert_eq!(s.unacked(), 2);
        assert_eq!(s.depth_rates(), (2.0, 0.4));
        s.settled(1, true);
        s.settled(5, false);
        assert_eq!(s.unacked(), 0, "never below zero");
        assert_eq!(s.counts().acked, 1);
        s.sample(11_000, 0, 0);
        assert_eq!(s.rates().published, 0.0);
        assert_eq!(s.rates().acked, 0.2);
        assert_eq!(s.active_ms(), 11_000);
        s.sample(16_000, 0, 0);
        assert_eq!(s.active_ms(), 11_000, "no change since");
    }
}
