//! Login attempts, succeeded and failed, as RabbitMQ's
//! `/api/auth/attempts/{node}` shows them: per protocol (every HTTP
//! request authenticates, so each counts, as in RabbitMQ), and per client
//! address, user and protocol (`.../source`; RabbitMQ's
//! `track_auth_attempt_source`, always on here). The per-source table
//! holds at most [`MAX_SOURCES`] entries: a client cannot grow it without
//! bound by trying names; when full, an arbitrary entry makes room.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use parking_lot::Mutex;

/// Most (address, user, protocol) entries kept.
pub const MAX_SOURCES: usize = 10_000;
/// Longest user name kept in an entry (longer ones are cut).
const MAX_USER_LEN: usize = 255;

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

/// Logins that succeeded and failed, per protocol and per source.
#[derive(Debug, Default)]
pub struct AuthAttempts {
    succeeded: [AtomicU64; 2],
    failed: [AtomicU64; 2],
    by_source: Mutex<HashMap<SourceKey, (u64, u64)>>,
}

/// (client address, user, protocol).
type SourceKey = (IpAddr, String, usize);

/// One source's counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceCounts {
    /// The client's address.
    pub address: IpAddr,
    /// The user it logged in as.
    pub user: String,
    /// The protocol.
    pub protocol: AuthProtocol,
    /// Logins that succeeded.
    pub succeeded: u64,
    /// Logins refused.
    pub failed: u64,
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
    /// Count a login as `user` from `address` through `protocol`.
    pub fn record(&self, protocol: AuthProtocol, ok: bool, user: &str, address: IpAddr) {
        let counters = match ok {
            true => &self.succeeded,
            false => &self.failed,
        };
        counters[protocol as usize].fetch_add(1, Relaxed);
        let user = match user.char_indices().nth(MAX_USER_LEN) {
            Some((cut, _)) => &user[..cut],
            None => user,
        };
        let key = (address.to_canonical(), user.to_string(), protocol as usize);
        let mut sources = self.by_source.lock();
        if sources.len() >= MAX_SOURCES && !sources.contains_key(&key) {
            // Full: an arbitrary entry makes room, so a flood of made-up
            // names cannot stop later sources from being recorded.
            if let Some(old) = sources.keys().next().cloned() {
                sources.remove(&old);
            }
        }
        let entry = sources.entry(key).or_default();
        match ok {
            true => entry.0 += 1,
            false => entry.1 += 1,
        }
    }

    /// Every source's counts, by address, user and protocol.
    pub fn by_source(&self) -> Vec<SourceCounts> {
        let mut rows: Vec<SourceCounts> = self
            .by_source
            .lock()
            .iter()
            .map(|((address, user, p), (succeeded, failed))| SourceCounts {
                address: *address,
                user: user.clone(),
                protocol: AuthProtocol::ALL[*p],
                succeeded: *succeeded,
                failed: *failed,
            })
            .collect();
        rows.sort_by(|a, b| {
            (a.address, &a.user, a.protocol.name()).cmp(&(b.address, &b.user, b.protocol.name()))
        });
        rows
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

    fn local() -> IpAddr {
        IpAddr::from([127, 0, 0, 1])
    }

    #[test]
    fn counts_per_protocol_and_outcome() {
        let a = AuthAttempts::default();
        assert!(a.counts().is_empty());
        a.record(AuthProtocol::Http, true, "guest", local());
        a.record(AuthProtocol::Http, false, "guest", local());
        a.record(AuthProtocol::Http, true, "guest", local());
        let c = a.counts();
        assert_eq!(c.len(), 1);
        assert_eq!(
            (c[0].protocol.name(), c[0].succeeded, c[0].failed),
            ("http", 2, 1)
        );
        let s = a.by_source();
        assert_eq!(s.len(), 1);
        assert_eq!(
            (s[0].user.as_str(), s[0].succeeded, s[0].failed),
            ("guest", 2, 1)
        );
    }

    #[test]
    fn the_source_table_is_bounded() {
        let a = AuthAttempts::default();
        for i in 0..MAX_SOURCES + 50 {
            a.record(AuthProtocol::Amqp, false, &format!("u{i}"), local());
        }
        assert_eq!(a.by_source().len(), MAX_SOURCES);
        assert_eq!(
            a.counts()[0].failed,
            (MAX_SOURCES + 50) as u64,
            "totals still count"
        );
        a.record(AuthProtocol::Amqp, true, &"x".repeat(10_000), local());
        let rows = a.by_source();
        assert_eq!(rows.len(), MAX_SOURCES, "full: one made room");
        let cut = rows.iter().filter(|r| r.user.len() == MAX_USER_LEN).count();
        assert_eq!(cut, 1, "the newest is kept, its name cut");
    }
}
