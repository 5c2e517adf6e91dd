//! The `x-consistent-hash` exchange's routing (RabbitMQ's
//! rabbitmq_consistent_hash_exchange): each binding's key is a weight;
//! a message goes to one destination, picked by a hash of its routing key,
//! of a header (`hash-header`) or of a property (`hash-property`:
//! `message_id`, `correlation_id`, `timestamp`).
//!
//! The pick is weighted rendezvous hashing: every destination scores the
//! value (a hash of value and destination, scaled by the weight) and the
//! highest wins. Each destination gets a share of values in proportion to
//! its weight; adding one moves only the values it wins, removing one
//! moves only its own; and the result does not depend on the order the
//! bindings were made or recovered in, so a key keeps its queue across a
//! restart. (Jump hashing over ordered buckets, as RabbitMQ's plugin does,
//! would move keys when a restart recovers bindings in another order.) It
//! costs one hash per destination per message; hash exchanges have a
//! handful of partitions.
//!
//! The hash is FNV-1a with a 64-bit finaliser: stable across restarts and
//! builds (Rust's own hashers are not). A missing header or property hashes
//! as empty, as RabbitMQ routes such messages too (all to one destination).

use amq_protocol::protocol::basic::AMQPProperties;
use amq_protocol::types::{AMQPValue, FieldTable};

use super::{Binding, Destination};
use crate::broker::arguments::as_text;
use crate::broker::IndexSet;
use crate::protocol::AmqpError;

/// The properties `hash-property` may name (RabbitMQ's list).
const PROPERTIES: [&str; 3] = ["message_id", "correlation_id", "timestamp"];

/// What a message is hashed on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum HashOn {
    /// The routing key.
    #[default]
    RoutingKey,
    /// A header's value.
    Header(String),
    /// A property, one of [`PROPERTIES`].
    Property(String),
}

impl HashOn {
    /// Read the exchange's arguments, with RabbitMQ's refusals.
    pub fn parse(arguments: &FieldTable) -> Result<Self, AmqpError> {
        let header = arguments.inner().get("hash-header");
        let property = arguments.inner().get("hash-property");
        let text = |v: &AMQPValue, arg: &str| {
            // RabbitMQ fails with 541 on a non-string; a clear 406 instead.
            as_text(v)
                .ok_or_else(|| AmqpError::precondition_failed(format!("{arg} must be a string")))
        };
        match (header, property) {
            (Some(_), Some(_)) => Err(AmqpError::precondition_failed(
                "hash-header and hash-property are mutually exclusive",
            )),
            (Some(h), None) => Ok(HashOn::Header(text(h, "hash-header")?)),
            (None, Some(p)) => {
                let p = text(p, "hash-property")?;
                match PROPERTIES.contains(&p.as_str()) {
                    true => Ok(HashOn::Property(p)),
                    false => Err(AmqpError::precondition_failed(format!(
                        "Unsupported property: {p}"
                    ))),
                }
            }
            (None, None) => Ok(HashOn::RoutingKey),
        }
    }
}

/// A binding key's weight, with RabbitMQ's refusals.
pub fn weight(key: &str) -> Result<u32, AmqpError> {
    match key.parse::<i64>() {
        Ok(w) if w <= 0 => Err(AmqpError::precondition_failed(
            "The binding key must be greater than 0",
        )),
        Ok(w) => u32::try_from(w).map_err(|_| {
            AmqpError::precondition_failed(format!("The binding key must be at most {}", u32::MAX))
        }),
        // Erlang's way of printing the binary: <<>> or <<"abc">>.
        Err(_) if key.is_empty() => Err(AmqpError::precondition_failed(
            "The binding key must be an integer: <<>>",
        )),
        Err(_) => Err(AmqpError::precondition_failed(format!(
            "The binding key must be an integer: <<\"{key}\">>"
        ))),
    }
}

/// The destinations and their weights.
#[derive(Debug, Default)]
pub struct HashRing {
    on: HashOn,
    /// (weight, the destination's own hash, destination).
    members: Vec<(f64, u64, Destination)>,
}

impl HashRing {
    /// An empty ring hashing on `on`.
    pub fn new(on: HashOn) -> Self {
        HashRing {
            on,
            members: Vec::new(),
        }
    }

    /// Rebuild from the exchange's bindings. A destination bound more than
    /// once gets the largest of its weights: unlike "the first binding's"
    /// (what RabbitMQ 3.10 does), it does not depend on the order bindings
    /// are kept or recovered in.
    pub fn rebuild<'a>(&mut self, bindings: impl Iterator<Item = &'a Binding>) {
        self.members.clear();
        let mut weights: IndexSet<(&Destination, u32)> = IndexSet::default();
        for b in bindings {
            // Checked at bind; a stored binding that no longer parses
            // (none should) routes nothing rather than failing.
            if let Ok(w) = weight(&b.routing_key) {
                weights.insert((&b.dest, w));
            }
        }
        let mut best: Vec<(&Destination, u32)> = Vec::new();
        for (dest, w) in weights {
            match best.iter_mut().find(|(d, _)| *d == dest) {
                Some(entry) => entry.1 = entry.1.max(w),
                None => best.push((dest, w)),
            }
        }
        for (dest, w) in best {
            let id = match dest {
                Destination::Queue(q) => fnv(format!("q:{q}").as_bytes()),
                Destination::Exchange(x) => fnv(format!("x:{x}").as_bytes()),
            };
            self.members.push((f64::from(w), id, dest.clone()));
        }
    }

    /// The destination for a message with `routing_key` and `props`.
    pub fn route(&self, routing_key: &str, props: Option<&AMQPProperties>) -> Option<&Destination> {
        let hash = match &self.on {
            HashOn::RoutingKey => fnv(routing_key.as_bytes()),
            HashOn::Header(name) => {
                let value = props
                    .and_then(|p| p.headers().as_ref())
                    .and_then(|h| h.inner().get(name.as_str()));
                fnv(value_text(value).as_bytes())
            }
            HashOn::Property(name) => fnv(property_text(props, name).as_bytes()),
        };
        let mut best: Option<(f64, &Destination)> = None;
        for (w, id, dest) in &self.members {
            let score = score(hash, *id, *w);
            if best.is_none_or(|(b, _)| score > b) {
                best = Some((score, dest));
            }
        }
        best.map(|(_, d)| d)
    }
}

/// A destination's score for a value: `w / -ln(u)`, with `u` in (0, 1)
/// drawn from the value's and the destination's hashes: the highest score
/// wins with probability proportional to `w`.
fn score(value: u64, member: u64, w: f64) -> f64 {
    let u = ((mix(value ^ member) >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    w / -u.ln()
}

/// A header value as the text hashed: strings as they are, other values
/// in a stable printed form.
fn value_text(v: Option<&AMQPValue>) -> String {
    match v {
        None => String::new(),
        Some(v) => as_text(v).unwrap_or_else(|| format!("{v:?}")),
    }
}

fn property_text(props: Option<&AMQPProperties>, name: &str) -> String {
    let Some(p) = props else {
        return String::new();
    };
    match name {
        "message_id" => p.message_id().as_ref().map(|s| s.to_string()),
        "correlation_id" => p.correlation_id().as_ref().map(|s| s.to_string()),
        "timestamp" => p.timestamp().map(|t| t.to_string()),
        _ => None,
    }
    .unwrap_or_default()
}

/// FNV-1a, then a 64-bit finaliser so that short keys differing in one
/// byte differ in every bit.
fn fnv(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    mix(h)
}

/// splitmix64's finaliser.
fn mix(mut h: u64) -> u64 {
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn bind(q: &str, w: &str) -> Binding {
        Binding {
            dest: Destination::Queue(Arc::from(q)),
            routing_key: w.to_string(),
            arguments: FieldTable::default(),
        }
    }

    fn spread(ring: &HashRing, n: usize) -> std::collections::BTreeMap<String, usize> {
        let mut out = std::collections::BTreeMap::new();
        for i in 0..n {
            if let Some(Destination::Queue(q)) = ring.route(&format!("key-{i}"), None) {
                *out.entry(q.to_string()).or_default() += 1;
            }
        }
        out
    }

    #[test]
    fn weights_share_keys_and_a_key_stays_put() {
        let mut ring = HashRing::new(HashOn::RoutingKey);
        let bindings = [
            bind("a", "1"),
            bind("b", "1"),
            bind("c", "2"),
            bind("a", "5"),
        ];
        ring.rebuild(bindings.iter());
        // The order of the bindings does not matter (a restart may
        // recover them in another).
        let mut reversed = HashRing::new(HashOn::RoutingKey);
        let other = [
            bind("c", "2"),
            bind("a", "5"),
            bind("b", "1"),
            bind("a", "1"),
        ];
        reversed.rebuild(other.iter());
        for i in 0..1000 {
            let k = format!("k{i}");
            assert_eq!(ring.route(&k, None), reversed.route(&k, None));
        }
        let s = spread(&ring, 100_000);
        // a counts with its larger weight: 5 : 1 : 2.
        for (q, share) in [("a", 0.625), ("b", 0.125), ("c", 0.25)] {
            let got = s[q] as f64 / 100_000.0;
            assert!(
                (got - share).abs() < share * 0.05,
                "{q}: {got} of {share}; {s:?}"
            );
        }
        let before: Vec<_> = (0..1000)
            .map(|i| ring.route(&format!("k{i}"), None).cloned())
            .collect();
        // Adding a destination moves keys only to it; removing moves only
        // its own.
        let more = [
            bind("a", "5"),
            bind("b", "1"),
            bind("c", "2"),
            bind("d", "4"),
        ];
        ring.rebuild(more.iter());
        for (i, old) in before.iter().enumerate() {
            let new = ring.route(&format!("k{i}"), None).cloned();
            assert!(new == *old || new == Some(Destination::Queue(Arc::from("d"))));
        }
        let fewer = [bind("a", "5"), bind("c", "2"), bind("d", "4")];
        ring.rebuild(fewer.iter());
        for (i, old) in before.iter().enumerate() {
            let new = ring.route(&format!("k{i}"), None).cloned();
            let moved_from_b = *old == Some(Destination::Queue(Arc::from("b")));
            let d = Some(Destination::Queue(Arc::from("d")));
            assert!(new == *old || moved_from_b || new == d);
        }
    }

    #[test]
    fn hashing_is_stable_across_builds() {
        // Fixed values: a key's queue must not move between releases.
        let got: Vec<u64> = ["", "a", "order-42"]
            .iter()
            .map(|k| fnv(k.as_bytes()))
            .collect();
        assert_eq!(got, RECORDED);
        let mut ring = HashRing::new(HashOn::RoutingKey);
        let bindings = [
            bind("p0", "1"),
            bind("p1", "1"),
            bind("p2", "1"),
            bind("p3", "1"),
        ];
        ring.rebuild(bindings.iter());
        let picks: Vec<String> = (0..8)
            .filter_map(|i| match ring.route(&format!("order-{i}"), None) {
                Some(Destination::Queue(q)) => Some(q.to_string()),
                _ => None,
            })
            .collect();
        assert_eq!(picks, PICKS);
    }

    /// FNV-1a + finaliser of "", "a" and "order-42", as first computed.
    const RECORDED: [u64; 3] = [
        0xf52a_15e9_a9b5_e89b,
        0x02c0_bdbf_4814_20f8,
        0x586d_07f2_8908_894f,
    ];
    /// Where order-0 .. order-7 went among p0..p3, as first computed.
    const PICKS: [&str; 8] = ["p0", "p1", "p1", "p2", "p3", "p3", "p0", "p0"];

    #[test]
    fn arguments_and_weights_are_checked_as_rabbitmq() {
        let args = |pairs: &[(&str, &str)]| {
            let mut t = FieldTable::default();
            for (k, v) in pairs {
                t.insert((*k).into(), AMQPValue::LongString((*v).into()));
            }
            t
        };
        assert_eq!(HashOn::parse(&args(&[])).unwrap(), HashOn::RoutingKey);
        assert_eq!(
            HashOn::parse(&args(&[("hash-header", "h")])).unwrap(),
            HashOn::Header("h".into())
        );
        let e = HashOn::parse(&args(&[
            ("hash-header", "h"),
            ("hash-property", "message_id"),
        ]));
        assert_eq!(
            e.unwrap_err().text,
            "PRECONDITION_FAILED - hash-header and hash-property are mutually exclusive"
        );
        let e = HashOn::parse(&args(&[("hash-property", "nope")])).unwrap_err();
        assert_eq!(e.text, "PRECONDITION_FAILED - Unsupported property: nope");
        assert_eq!(weight("3").unwrap(), 3);
        assert_eq!(
            weight("abc").unwrap_err().text,
            "PRECONDITION_FAILED - The binding key must be an integer: <<\"abc\">>"
        );
        assert_eq!(
            weight("0").unwrap_err().text,
            "PRECONDITION_FAILED - The binding key must be greater than 0"
        );
    }

    #[test]
    fn missing_header_or_property_routes_to_one_place() {
        let mut ring = HashRing::new(HashOn::Property("message_id".into()));
        let bindings = [bind("a", "1"), bind("b", "1")];
        ring.rebuild(bindings.iter());
        let first = ring.route("x", None).cloned();
        assert!(first.is_some());
        for k in ["y", "z", "w"] {
            assert_eq!(ring.route(k, None).cloned(), first);
        }
    }
}
