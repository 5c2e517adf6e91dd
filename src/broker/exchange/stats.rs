//! An exchange's counters for the management API: messages published
//! into it and messages it routed to at least one queue (RabbitMQ's
//! `publish_in` and `publish_out`). Connections count per channel in
//! their own task and add here once a second, so publishing to a busy
//! exchange (the default one above all) touches no shared cache line; the
//! node's sampler turns the counters into rates every few seconds.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use parking_lot::Mutex;

/// The counters of one exchange.
#[derive(Debug, Default)]
pub struct ExchangeStats {
    publish_in: AtomicU64,
    publish_out: AtomicU64,
    sampled: Mutex<Sampled>,
}

#[derive(Debug, Default)]
struct Sampled {
    at_ms: u64,
    counts: (u64, u64),
    rates: (f64, f64),
}

impl ExchangeStats {
    /// Add what a connection counted since it last reported.
    pub fn add(&self, publish_in: u64, publish_out: u64) {
        self.publish_in.fetch_add(publish_in, Relaxed);
        self.publish_out.fetch_add(publish_out, Relaxed);
    }

    /// Messages in and routed out since the exchange was made (or the node
    /// started).
    pub fn counts(&self) -> (u64, u64) {
        (
            self.publish_in.load(Relaxed),
            self.publish_out.load(Relaxed),
        )
    }

    /// Take a reading at `now_ms`: the rates since the previous one.
    pub fn sample(&self, now_ms: u64) {
        let counts = self.counts();
        let mut s = self.sampled.lock();
        if s.at_ms != 0 && now_ms > s.at_ms {
            let secs = (now_ms - s.at_ms) as f64 / 1000.0;
            let rate = |a: u64, b: u64| b.saturating_sub(a) as f64 / secs;
            s.rates = (rate(s.counts.0, counts.0), rate(s.counts.1, counts.1));
        }
        s.at_ms = now_ms;
        s.counts = counts;
    }

    /// Messages in and out per second over the last sampling interval.
    pub fn rates(&self) -> (f64, f64) {
        self.sampled.lock().rates
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_over_the_last_interval() {
        let s = ExchangeStats::default();
        s.sample(1_000);
        s.add(10, 4);
        s.sample(3_000);
        assert_eq!(s.counts(), (10, 4));
        assert_eq!(s.rates(), (5.0, 2.0));
        s.sample(5_000);
        assert_eq!(s.rates(), (0.0, 0.0));
    }
}
