//! Login attempts per protocol, succeeded and failed, as RabbitMQ's
//! `/api/auth/attempts/{node}` shows them (every HTTP request
//! authenticates, so each counts, as in RabbitMQ). Counters only: nothing
//! is kept per client address (RabbitMQ's per-source tracking is off by
//! default too).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Where a login came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthProtocol {
    /// An AMQP 0-9-1 connection's handshake.
    Amqp,
    /// A management API request.
    Http,
}

impl AuthProtocol {
    const ALL: [AuthProtocol; 2] = [AuthProtocol::Amqp, AuthProtocol::Http];

    /// RabbitMQ's name of the protocol.
    pub fn name(self) -> &'static str {
        match self {
            AuthProtocol::Amqp => "amqp091",
            AuthProtocol::Http => "http",
        }
    }
}

/// Logins that succeeded and failed, per protocol.
#[derive(Debug, Default)]
pub struct AuthAttempts {
    succeeded: [AtomicU64; 2],
    failed: [AtomicU64; 2],
}

/// One protocol's counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttemptCounts {
    /// The protocol.
    pub protocol: AuthProtocol,
    /// Logins that succeeded.
    pub succeeded: u64,
    /// Logins refused.
    pub failed: u64,
}

impl AuthAttempts {
    /// Count a login through `protocol`.
    pub fn record(&self, protocol: AuthProtocol, ok: bool) {
        let counters = match ok {
            true => &self.succeeded,
            false => &self.failed,
        };
        counters[protocol as usize].fetch_add(1, Relaxed);
    }

    /// The protocols with any attempt.
    pub fn counts(&self) -> Vec<AttemptCounts> {
        AuthProtocol::ALL
            .iter()
            .map(|&p| AttemptCounts {
                protocol: p,
                succeeded: self.succeeded[p as usize].load(Relaxed),
                failed: self.failed[p as usize].load(Relaxed),
            })
            .filter(|c| c.succeeded + c.failed > 0)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_protocol_and_outcome() {
        let a = AuthAttempts::default();
        assert!(a.counts().is_empty());
        a.record(AuthProtocol::Http, true);
        a.record(AuthProtocol::Http, false);
        a.record(AuthProtocol::Http, true);
        let c = a.counts();
        assert_eq!(c.len(), 1);
        assert_eq!(
            (c[0].protocol.name(), c[0].succeeded, c[0].failed),
            ("http", 2, 1)
        );
    }
}
