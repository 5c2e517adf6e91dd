//! Deduplication (an idempotent producer's other half, as LavinMQ and
//! RabbitMQ's community plugin offer it): an exchange declared with
//! `x-message-deduplication: true` drops a message whose key it has seen
//! among its last `x-cache-size` keys, within `x-cache-ttl` ms if set. The
//! key is the header named by `x-deduplication-header` (default
//! `x-deduplication-header`), or the `message_id` property when the message
//! has no such header; a message with neither is never a duplicate. A
//! dropped duplicate is confirmed: its first copy is safely in.
//!
//! Keys are checked and recorded when a message is enqueued (in a
//! transaction, at commit) and forgotten when it is not stored (a queue's
//! reject-publish, a store failure), so a retry is never wrongly dropped.
//! The cache is bounded in entries and bytes: each key is held as the
//! first 128 bits of its SHA-256 (~60 bytes an entry with the bookkeeping). A durable queue's cache is seeded at recovery
//! from the records its segments still hold (`Cache::seed`); an
//! exchange's starts empty.

use std::collections::VecDeque;

use ahash::AHashMap as HashMap;
use amq_protocol::protocol::basic::AMQPProperties;
use amq_protocol::types::{AMQPValue, FieldTable};
use parking_lot::Mutex;
use sha2::{Digest, Sha256};

use super::arguments::{as_int, as_text};
use crate::protocol::AmqpError;

/// Entries kept when `x-cache-size` is not given.
pub const DEFAULT_CACHE_SIZE: usize = 10_000;
/// The largest `x-cache-size` accepted (~60 MB of keys at worst).
pub const MAX_CACHE_SIZE: usize = 1_000_000;

/// How an exchange deduplicates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    header: String,
    size: usize,
    ttl_ms: Option<u64>,
}

impl Settings {
    /// How many keys the cache holds.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Read the declare arguments; None when deduplication is off.
    pub fn parse(args: &FieldTable) -> Result<Option<Self>, AmqpError> {
        let get = |k: &str| args.inner().get(k);
        let bad = |k: &str, why: &str| {
            AmqpError::precondition_failed(format!("invalid value for '{k}': {why}"))
        };
        match get("x-message-deduplication") {
            None | Some(AMQPValue::Boolean(false)) => return Ok(None),
            Some(AMQPValue::Boolean(true)) => {}
            Some(_) => return Err(bad("x-message-deduplication", "must be a boolean")),
        }
        let size = match get("x-cache-size") {
            None => DEFAULT_CACHE_SIZE,
            Some(v) => match as_int(v) {
                Some(n) if n > 0 && n <= MAX_CACHE_SIZE as i128 => n as usize,
                _ => {
                    let why = format!("must be an integer from 1 to {MAX_CACHE_SIZE}");
                    return Err(bad("x-cache-size", &why));
                }
            },
        };
        let ttl_ms = match get("x-cache-ttl") {
            None => None,
            Some(v) => match as_int(v) {
                Some(n) if n > 0 && n <= i128::from(u32::MAX) => Some(n as u64),
                _ => return Err(bad("x-cache-ttl", "must be a positive integer (ms)")),
            },
        };
        let header = match get("x-deduplication-header") {
            None => "x-deduplication-header".to_string(),
            Some(v) => {
                as_text(v).ok_or_else(|| bad("x-deduplication-header", "must be a string"))?
            }
        };
        Ok(Some(Settings {
            header,
            size,
            ttl_ms,
        }))
    }
}

/// The keys an exchange has seen.
#[derive(Debug)]
pub struct Cache {
    settings: Settings,
    state: Mutex<State>,
}

/// A key: the first 128 bits of its SHA-256.
pub type Key = u128;

/// What a message is to the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// Seen before: drop it.
    Duplicate,
    /// New: recorded (forget it if the message is not stored).
    New(Key),
    /// No key to go on: never a duplicate.
    NoKey,
}

#[derive(Debug, Default)]
struct State {
    /// Key → when it was seen (ms).
    seen: HashMap<Key, u64>,
    /// Keys in the order they were seen, for eviction and expiry.
    order: VecDeque<(Key, u64)>,
    /// Duplicates dropped.
    dropped: u64,
}

impl Cache {
    /// An empty cache.
    pub fn new(settings: Settings) -> Self {
        Cache {
            settings,
            state: Mutex::new(State::default()),
        }
    }

    /// The key a message is deduplicated by, if it has one.
    pub fn key(&self, props: &AMQPProperties) -> Option<Key> {
        let header = props
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get(self.settings.header.as_str()));
        let digest = match header {
            Some(v) => Sha256::digest(as_text(v).unwrap_or_else(|| format!("{v:?}"))),
            None => Sha256::digest(props.message_id().as_ref()?.as_str()),
        };
        let mut first = [0u8; 16];
        first.copy_from_slice(&digest[..16]);
        Some(u128::from_le_bytes(first))
    }

    /// Check a message; a new key is recorded.
    pub fn check(&self, props: &AMQPProperties, now_ms: u64) -> Check {
        match self.key(props) {
            None => Check::NoKey,
            Some(key) => match self.record(key, now_ms) {
                true => Check::New(key),
                false => Check::Duplicate,
            },
        }
    }

    /// Record `key`; false (and counted as dropped) if it is held already.
    pub fn record(&self, key: Key, now_ms: u64) -> bool {
        let mut st = self.state.lock();
        self.expire(&mut st, now_ms);
        if st.seen.contains_key(&key) {
            st.dropped += 1;
            return false;
        }
        while st.order.len() >= self.settings.size {
            if let Some((old, _)) = st.order.pop_front() {
                st.seen.remove(&old);
            }
        }
        st.seen.insert(key, now_ms);
        st.order.push_back((key, now_ms));
        true
    }

    /// Forget a key recorded for a message that was not stored.
    pub fn forget(&self, key: &Key) {
        let mut st = self.state.lock();
        if st.seen.remove(key).is_some() {
            st.order.retain(|(k, _)| k != key);
        }
    }

    /// Remember the keys of messages already stored (a durable queue's, at
    /// recovery), oldest first, as seen `now_ms`.
    pub fn seed(&self, keys: impl Iterator<Item = Key>, now_ms: u64) {
        for key in keys {
            self.record(key, now_ms);
        }
        self.state.lock().dropped = 0;
    }

    /// Drop keys older than the TTL (all keys share it, so they expire in
    /// the order they were seen).
    fn expire(&self, st: &mut State, now_ms: u64) {
        let Some(ttl) = self.settings.ttl_ms else {
            return;
        };
        while let Some((_, at)) = st.order.front() {
            if now_ms.saturating_sub(*at) < ttl {
                break;
            }
            if let Some((old, _)) = st.order.pop_front() {
                st.seen.remove(&old);
            }
        }
    }

    /// How many keys it holds at most.
    pub fn size(&self) -> usize {
        self.settings.size
    }

    /// Duplicates dropped so far.
    pub fn dropped(&self) -> u64 {
        self.state.lock().dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::types::ShortString;

    fn args(pairs: &[(&str, AMQPValue)]) -> FieldTable {
        let mut t = FieldTable::default();
        for (k, v) in pairs {
            t.insert((*k).into(), v.clone());
        }
        t
    }

    fn on() -> (&'static str, AMQPValue) {
        ("x-message-deduplication", AMQPValue::Boolean(true))
    }

    fn with_header(v: &str) -> AMQPProperties {
        let mut h = FieldTable::default();
        h.insert(
            "x-deduplication-header".into(),
            AMQPValue::LongString(v.into()),
        );
        AMQPProperties::default().with_headers(h)
    }

    #[test]
    fn settings_parse_and_refuse() {
        assert_eq!(Settings::parse(&args(&[])).unwrap(), None);
        let s = Settings::parse(&args(&[on()])).unwrap().unwrap();
        assert_eq!((s.size, s.ttl_ms), (DEFAULT_CACHE_SIZE, None));
        for bad in [
            ("x-cache-size", AMQPValue::LongInt(0)),
            ("x-cache-ttl", AMQPValue::LongString("soon".into())),
            ("x-deduplication-header", AMQPValue::LongInt(1)),
        ] {
            let key = bad.0;
            let e = Settings::parse(&args(&[on(), bad])).unwrap_err();
            assert!(e.text.contains(key), "{}", e.text);
        }
    }

    #[test]
    fn duplicates_within_size_and_ttl_are_caught() {
        let s = Settings::parse(&args(&[
            on(),
            ("x-cache-size", AMQPValue::LongInt(2)),
            ("x-cache-ttl", AMQPValue::LongInt(1000)),
        ]))
        .unwrap()
        .unwrap();
        let c = Cache::new(s);
        let dup = |p: &AMQPProperties, at| c.check(p, at) == Check::Duplicate;
        assert!(!dup(&with_header("a"), 0));
        assert!(dup(&with_header("a"), 10));
        // message_id when there is no header; nothing to go on: no dedup.
        let by_id = AMQPProperties::default().with_message_id(ShortString::from("m1"));
        assert!(!dup(&by_id, 20));
        assert!(dup(&by_id, 30));
        assert_eq!(c.check(&AMQPProperties::default(), 30), Check::NoKey);
        // Size 2: a third key evicts the oldest ("a").
        assert!(!dup(&with_header("b"), 40));
        assert!(!dup(&with_header("a"), 50));
        // TTL: "m1" (seen at 20) has expired by 1020.
        assert!(!dup(&by_id, 1500));
        assert_eq!(c.dropped(), 2);
        // A key forgotten (its message not stored) is new again.
        let Check::New(key) = c.check(&with_header("x"), 1600) else {
            panic!("new key");
        };
        c.forget(&key);
        assert!(!dup(&with_header("x"), 1601));
    }
}
