//! Counters shared by the load tasks, latency samples and percentiles, and
//! this process's CPU time (from /proc, so no extra crate is needed).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Most latency samples one consumer keeps; past that it keeps every n-th.
const MAX_SAMPLES: usize = 1 << 20;

/// Run-wide counters.
#[derive(Debug, Default)]
pub struct Counters {
    pub published: AtomicU64,
    pub confirmed: AtomicU64,
    pub nacked: AtomicU64,
    pub returned: AtomicU64,
    pub consumed: AtomicU64,
}

impl Counters {
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

/// Microseconds since the Unix epoch, written into each body so consumers
/// can measure publish-to-delivery latency.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Latency samples of one consumer, in microseconds.
#[derive(Debug, Default)]
pub struct Latencies {
    samples: Vec<u32>,
    seen: u64,
    stride: u64,
}

impl Latencies {
    pub fn record(&mut self, us: u64) {
        self.seen += 1;
        if self.stride == 0 {
            self.stride = 1;
        }
        if !self.seen.is_multiple_of(self.stride) {
            return;
        }
        if self.samples.len() >= MAX_SAMPLES {
            // Halve the density: keep every other sample from now on.
            self.samples = self.samples.iter().step_by(2).copied().collect();
            self.stride *= 2;
        }
        self.samples.push(us.min(u64::from(u32::MAX)) as u32);
    }

    pub fn merge(all: Vec<Latencies>) -> Percentiles {
        let mut v: Vec<u32> = all.into_iter().flat_map(|l| l.samples).collect();
        v.sort_unstable();
        let at = |q: f64| -> u64 {
            if v.is_empty() {
                return 0;
            }
            let i = ((v.len() as f64 - 1.0) * q).round() as usize;
            u64::from(v[i.min(v.len() - 1)])
        };
        Percentiles {
            p50_us: at(0.50),
            p95_us: at(0.95),
            p99_us: at(0.99),
            max_us: v.last().map_or(0, |&x| u64::from(x)),
            samples: v.len() as u64,
        }
    }
}

/// Latency summary.
#[derive(Debug, Default, Clone, Copy)]
pub struct Percentiles {
    pub p50_us: u64,
    pub p95_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    pub samples: u64,
}

/// CPU seconds (user + system) used by this process so far.
pub fn process_cpu_s() -> f64 {
    cpu_seconds_of("self")
}

/// CPU seconds (user + system) of a process by pid or "self", from
/// /proc/PID/stat (fields 14 and 15, in clock ticks of 1/100 s on Linux).
pub fn cpu_seconds_of(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // The command name may contain spaces; fields resume after the ')'.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // After ')' the state is field 3, so utime (14) and stime (15) are at 11, 12.
    (ticks(11) + ticks(12)) / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_set() {
        let mut l = Latencies::default();
        for us in 1..=100 {
            l.record(us);
        }
        let p = Latencies::merge(vec![l]);
        assert_eq!(p.p50_us, 51);
        assert_eq!(p.p99_us, 99);
        assert_eq!(p.max_us, 100);
        assert_eq!(p.samples, 100);
    }

    #[test]
    fn sampling_stays_bounded() {
        let mut l = Latencies::default();
        for i in 0..(3 * MAX_SAMPLES as u64) {
            l.record(i % 1000);
        }
        assert!(l.samples.len() <= MAX_SAMPLES);
    }

    #[test]
    fn own_cpu_time_is_readable() {
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        assert!(x > 0);
        assert!(process_cpu_s() >= 0.0);
    }
}
