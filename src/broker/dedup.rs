//! Deduplication (an idempotent producer's other half, as LavinMQ and
//! RabbitMQ's community plugin offer it): an exchange declared with
//! `x-message-deduplication: true` drops a message whose key it has seen
//! among its last `x-cache-size` keys, within `x-cache-ttl` ms if set. The
//! key is the header named by `x-deduplication-header` (default
//! `x-deduplication-header`), or the `message_id` property when the message
//! has no such header; a message with neither is never a duplicate. A
//! dropped duplicate is confirmed: its first copy is safely in.
//!
//! The cache is bounded in entries and bytes: keys over 256 bytes are
//! kept as their SHA-256. A durable queue's cache is seeded at recovery
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
/// The largest `x-cache-size` accepted (with keys of at most
/// [`MAX_KEY_BYTES`], ~400 MB at worst).
pub const MAX_CACHE_SIZE: usize = 1_000_000;
/// Longer keys are kept as their SHA-256.
pub const MAX_KEY_BYTES: usize = 256;

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

#[derive(Debug, Default)]
struct State {
    /// Key → when it was seen (ms).
    seen: HashMap<Vec<u8>, u64>,
    /// Keys in the order they were seen, for eviction and expiry.
    order: VecDeque<(Vec<u8>, u64)>,
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
    fn key(&self, props: Option<&AMQPProperties>) -> Option<Vec<u8>> {
        let props = props?;
        let header = props
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get(self.settings.header.as_str()));
        let key = match header {
            Some(v) => as_text(v).unwrap_or_else(|| format!("{v:?}")).into_bytes(),
            None => props.message_id().as_ref()?.as_str().as_bytes().to_vec(),
        };
        Some(match key.len() > MAX_KEY_BYTES {
            true => Sha256::digest(&key).to_vec(),
            false => key,
        })
    }

    /// Remember the keys of messages already stored (a durable queue's, at
    /// recovery), oldest first, as seen `now_ms`.
    pub fn seed(&self, messages: impl Iterator<Item = AMQPProperties>, now_ms: u64) {
        for props in messages {
            self.is_duplicate(Some(&props), now_ms);
        }
        self.state.lock().dropped = 0;
    }

    /// Whether a message is a duplicate; if not, remember its key.
    pub fn is_duplicate(&self, props: Option<&AMQPProperties>, now_ms: u64) -> bool {
        let Some(key) = self.key(props) else {
            return false;
        };
        let mut st = self.state.lock();
        self.expire(&mut st, now_ms);
        if st.seen.contains_key(&key) {
            st.dropped += 1;
            return true;
        }
        while st.order.len() >= self.settings.size {
            if let Some((old, _)) = st.order.pop_front() {
                st.seen.remove(&old);
            }
        }
        st.seen.insert(key.clone(), now_ms);
        st.order.push_back((key, now_ms));
        false
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

    /// Duplicates dropped so far.
    pub fn dropped(&self) -> u64 {
        self.state.lock().dropped
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.state.lock().order.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
        assert!(!c.is_duplicate(Some(&with_header("a")), 0));
        assert!(c.is_duplicate(Some(&with_header("a")), 10));
        // message_id when there is no header; nothing to go on: no dedup.
        let by_id = AMQPProperties::default().with_message_id(ShortString::from("m1"));
        assert!(!c.is_duplicate(Some(&by_id), 20));
        assert!(c.is_duplicate(Some(&by_id), 30));
        assert!(!c.is_duplicate(Some(&AMQPProperties::default()), 30));
        assert!(!c.is_duplicate(None, 30));
        // Size 2: a third key evicts the oldest ("a").
        assert!(!c.is_duplicate(Some(&with_header("b")), 40));
        assert!(!c.is_duplicate(Some(&with_header("a")), 50));
        // TTL: "m1" (seen at 20) has expired by 1020.
        assert!(!c.is_duplicate(Some(&by_id), 1500));
        assert_eq!(c.dropped(), 2);
        // Long keys are held as 32-byte digests.
        let long = "k".repeat(10_000);
        assert!(!c.is_duplicate(Some(&with_header(&long)), 1600));
        assert!(c.is_duplicate(Some(&with_header(&long)), 1601));
    }
}
