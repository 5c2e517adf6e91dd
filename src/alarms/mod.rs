//! Resource alarms, as RabbitMQ's memory and disk alarms: while the broker's
//! memory is above its high watermark or the data directory's free disk
//! space is below its limit, connections that publish are blocked (their
//! input is no longer read) and told with `connection.blocked`; consumers
//! keep draining, which is what clears a memory alarm.
//!
//! A monitor thread ([`monitor`]) samples both every
//! `alarm_check_interval_ms` and publishes the state on a watch channel;
//! connection tasks read it without locks.

pub mod monitor;
pub mod size;

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::watch;

/// Which alarms are raised.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AlarmState {
    /// Memory use is above the high watermark.
    pub memory: bool,
    /// Free disk space is below the limit.
    pub disk: bool,
}

impl AlarmState {
    /// Whether publishers must be blocked.
    pub fn any(self) -> bool {
        self.memory || self.disk
    }

    /// The reason sent in `connection.blocked`, RabbitMQ's texts.
    pub fn reason(self) -> &'static str {
        match (self.memory, self.disk) {
            (true, true) => "low on disk & memory",
            (true, false) => "low on memory",
            _ => "low on disk",
        }
    }
}

/// The alarms' shared state: written by the monitor, watched by
/// connections.
#[derive(Debug)]
pub struct Alarms {
    state: watch::Sender<AlarmState>,
    /// `state.any()`, readable with one load on every publish.
    raised: AtomicBool,
    /// The monitor's last readings, for the management API and metrics.
    readings: parking_lot::Mutex<Readings>,
}

/// What the monitor last measured, with the limits it compares against.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Readings {
    /// Resident memory, bytes.
    pub memory_used: u64,
    /// The memory watermark, bytes.
    pub memory_limit: u64,
    /// Free space on the data directory's file system, bytes.
    pub disk_free: u64,
    /// The free-space limit, bytes.
    pub disk_free_limit: u64,
}

impl Default for Alarms {
    fn default() -> Self {
        Alarms {
            state: watch::Sender::new(AlarmState::default()),
            raised: AtomicBool::new(false),
            readings: parking_lot::Mutex::new(Readings::default()),
        }
    }
}

impl Alarms {
    /// Whether any alarm is raised (cheap: for the publish path).
    pub fn raised(&self) -> bool {
        self.raised.load(Ordering::Relaxed)
    }

    /// The monitor's last readings.
    pub fn readings(&self) -> Readings {
        *self.readings.lock()
    }

    /// Record the monitor's readings.
    pub fn record(&self, r: Readings) {
        *self.readings.lock() = r;
    }

    /// The current state.
    pub fn current(&self) -> AlarmState {
        *self.state.borrow()
    }

    /// A receiver that wakes on every change.
    pub fn subscribe(&self) -> watch::Receiver<AlarmState> {
        self.state.subscribe()
    }

    /// Set the state, logging each alarm raised or cleared.
    pub fn set(&self, next: AlarmState) {
        let prev = self.current();
        if prev == next {
            return;
        }
        for (kind, was, is) in [
            ("memory", prev.memory, next.memory),
            ("disk", prev.disk, next.disk),
        ] {
            match (was, is) {
                (false, true) => tracing::warn!(
                    alarm = kind,
                    "resource alarm raised: publishers are blocked"
                ),
                (true, false) => tracing::info!(alarm = kind, "resource alarm cleared"),
                _ => {}
            }
        }
        self.raised.store(next.any(), Ordering::Relaxed);
        self.state.send_replace(next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_rabbitmqs() {
        let memory = AlarmState {
            memory: true,
            disk: false,
        };
        let disk = AlarmState {
            memory: false,
            disk: true,
        };
        let both = AlarmState {
            memory: true,
            disk: true,
        };
        assert_eq!(memory.reason(), "low on memory");
        assert_eq!(disk.reason(), "low on disk");
        assert_eq!(both.reason(), "low on disk & memory");
        assert!(!AlarmState::default().any());
    }

    #[test]
    fn subscribers_see_changes() {
        let alarms = Alarms::default();
        let mut rx = alarms.subscribe();
        alarms.set(AlarmState {
            memory: true,
            disk: false,
        });
        assert!(rx.has_changed().unwrap());
        assert!(rx.borrow_and_update().memory);
        alarms.set(AlarmState {
            memory: true,
            disk: false,
        });
        assert!(!rx.has_changed().unwrap());
    }
}
