//! Exchanges: their declared properties, their bindings, and the routing
//! table each type keeps (direct: key → destinations; fanout: a set; topic: a
//! trie; headers: parsed binding arguments).

use std::sync::Arc;

use amq_protocol::protocol::basic::AMQPProperties;
use amq_protocol::types::FieldTable;
use parking_lot::RwLock;

use super::IndexSet;
use crate::protocol::AmqpError;
use routes::Routes;

mod bindings;
pub mod hash_ring;
mod routes;
pub mod stats;

/// Where a binding sends messages.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Destination {
    /// A queue, by name.
    Queue(Arc<str>),
    /// Another exchange, by name (exchange-to-exchange binding).
    Exchange(Arc<str>),
}

/// One binding from an exchange.
#[derive(Clone, Debug, PartialEq)]
pub struct Binding {
    /// Target.
    pub dest: Destination,
    /// Binding key.
    pub routing_key: String,
    /// Binding arguments.
    pub arguments: FieldTable,
}

/// The exchange types Warren knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExchangeKind {
    /// Exact routing-key match.
    Direct,
    /// Every binding.
    Fanout,
    /// Dot-separated patterns with `*` and `#`.
    Topic,
    /// Header table matching.
    Headers,
    /// One destination per message, by a weighted consistent hash
    /// (RabbitMQ's consistent-hash exchange plugin).
    ConsistentHash,
}

/// The exchange type of delayed messages (RabbitMQ's delayed-message
/// plugin); the routing type is the `x-delayed-type` argument.
pub const DELAYED_TYPE: &str = "x-delayed-message";

impl ExchangeKind {
    /// The routing type of a declared type: itself, or for
    /// `x-delayed-message` the `x-delayed-type` argument; with whether the
    /// exchange delays. None for an unknown type (or delayed type).
    pub fn of_declared(name: &str, arguments: &FieldTable) -> Option<(Self, bool)> {
        if name != DELAYED_TYPE {
            return Self::parse(name).map(|k| (k, false));
        }
        let inner = arguments.inner().get("x-delayed-type")?;
        let t = super::arguments::as_text(inner)?;
        Self::parse(&t).map(|k| (k, true))
    }

    /// Parse a type name as given in exchange.declare.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "direct" => ExchangeKind::Direct,
            "fanout" => ExchangeKind::Fanout,
            "topic" => ExchangeKind::Topic,
            "headers" => ExchangeKind::Headers,
            "x-consistent-hash" => ExchangeKind::ConsistentHash,
            _ => return None,
        })
    }

    /// The type name.
    pub fn name(self) -> &'static str {
        match self {
            ExchangeKind::Direct => "direct",
            ExchangeKind::Fanout => "fanout",
            ExchangeKind::Topic => "topic",
            ExchangeKind::Headers => "headers",
            ExchangeKind::ConsistentHash => "x-consistent-hash",
        }
    }
}

/// What a policy sets on an exchange.
#[derive(Debug, Default)]
struct AppliedPolicy {
    name: Option<String>,
    alternate: Option<Arc<str>>,
}

/// A declared exchange.
#[derive(Debug)]
pub struct Exchange {
    /// Name.
    pub name: Arc<str>,
    /// Type.
    pub kind: ExchangeKind,
    /// Survives restarts.
    pub durable: bool,
    /// Deleted when its last binding goes.
    pub auto_delete: bool,
    /// Cannot be published to directly.
    pub internal: bool,
    /// Declare arguments.
    pub arguments: FieldTable,
    /// Name of the alternate exchange, from the `alternate-exchange` argument.
    pub alternate_exchange: Option<Arc<str>>,
    /// The alternate exchange a policy sets (the argument's wins) and the
    /// policy's name; read only for unroutable messages.
    policy: RwLock<AppliedPolicy>,
    /// `policy` names an alternate exchange (checked on the routing path
    /// without the lock).
    policy_alternate: std::sync::atomic::AtomicBool,
    /// Declared as `x-delayed-message` (routing by `kind`, the
    /// x-delayed-type, once a message's x-delay has passed).
    pub delayed: bool,
    /// Bindings and the routing table: publishers read them, binds and
    /// unbinds write them (each for O(1) or O(log n) work, never across
    /// I/O), so a writer holds up only publishers to this exchange and
    /// only for that long.
    routes: RwLock<Routes>,
    /// Messages in and out, for the management API.
    pub stats: stats::ExchangeStats,
    /// With `x-message-deduplication`: the keys seen.
    pub dedup: Option<Arc<super::dedup::Cache>>,
}

impl Exchange {
    /// Whether routing or deduplication here reads message_id,
    /// correlation_id or timestamp.
    pub fn reads_ids(&self) -> bool {
        self.dedup.is_some()
            || (self.kind == ExchangeKind::ConsistentHash
                && self.arguments.inner().contains_key("hash-property"))
    }

    /// A new exchange with no bindings.
    pub fn new(
        name: &str,
        kind: ExchangeKind,
        durable: bool,
        auto_delete: bool,
        internal: bool,
        arguments: FieldTable,
    ) -> Self {
        let alternate_exchange =
            arguments
                .inner()
                .get("alternate-exchange")
                .and_then(|v| match v {
                    amq_protocol::types::AMQPValue::LongString(s) => {
                        Some(Arc::from(String::from_utf8_lossy(s.as_bytes()).as_ref()))
                    }
                    amq_protocol::types::AMQPValue::ShortString(s) => Some(Arc::from(s.as_str())),
                    _ => None,
                });
        let routes = Routes::new(kind, &arguments);
        // Checked at declare; a stored exchange's arguments parse too.
        let dedup = super::dedup::Settings::parse(&arguments)
            .ok()
            .flatten()
            .map(|s| Arc::new(super::dedup::Cache::new(s)));
        Exchange {
            name: Arc::from(name),
            kind,
            durable,
            auto_delete,
            internal,
            arguments,
            alternate_exchange,
            policy: RwLock::new(AppliedPolicy::default()),
            policy_alternate: Default::default(),
            delayed: false,
            routes: RwLock::new(routes),
            stats: Default::default(),
            dedup,
        }
    }

    /// Whether unroutable messages go on to an alternate exchange.
    pub fn has_alternate(&self) -> bool {
        self.alternate_exchange.is_some()
            || self
                .policy_alternate
                .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The alternate exchange: the argument's, else a policy's.
    pub fn alternate(&self) -> Option<Arc<str>> {
        match &self.alternate_exchange {
            Some(a) => Some(a.clone()),
            None => self.policy.read().alternate.clone(),
        }
    }

    /// Apply the policy that now matches this exchange (None: none).
    pub fn apply_policy(&self, name: Option<String>, alternate: Option<Arc<str>>) {
        self.policy_alternate
            .store(alternate.is_some(), std::sync::atomic::Ordering::Relaxed);
        *self.policy.write() = AppliedPolicy { name, alternate };
    }

    /// The name of the policy applied, if any.
    pub fn policy_name(&self) -> Option<String> {
        self.policy.read().name.clone()
    }

    /// The type as declared.
    pub fn type_name(&self) -> &'static str {
        match self.delayed {
            true => DELAYED_TYPE,
            false => self.kind.name(),
        }
    }

    /// The destinations of all bindings from this exchange.
    pub fn destinations(&self) -> Vec<Destination> {
        self.routes.read().destinations()
    }

    /// A copy of every binding from this exchange.
    pub fn bindings(&self) -> Vec<Binding> {
        self.routes.read().bindings()
    }

    /// Whether any binding leaves this exchange.
    pub fn has_bindings(&self) -> bool {
        self.routes.read().has_bindings()
    }

    /// Whether any binding goes to `dest`.
    pub fn binds_to(&self, dest: &Destination) -> bool {
        self.routes.read().binds_to(dest)
    }

    /// Whether an identical binding exists.
    pub fn has_binding(&self, binding: &Binding) -> bool {
        self.routes.read().has_binding(binding)
    }

    /// Add a binding; Ok(false) if an identical one exists.
    pub fn bind(&self, binding: Binding) -> Result<bool, AmqpError> {
        self.routes.write().bind(binding)
    }

    /// Remove a binding; false if there was none.
    pub fn unbind(&self, binding: &Binding) -> bool {
        self.routes.write().unbind(binding)
    }

    /// Remove every binding to `dest`; returns how many went.
    pub fn unbind_destination(&self, dest: &Destination) -> usize {
        self.routes.write().unbind_destination(dest)
    }

    /// Add the destinations this exchange routes any of `keys` /
    /// `headers` to (one read of the table for all keys).
    pub fn route(
        &self,
        keys: &[&str],
        props: Option<&AMQPProperties>,
        out: &mut IndexSet<Destination>,
    ) {
        let routes = self.routes.read();
        // A consistent-hash exchange picks one destination, by the first
        // routing key (CC/BCC keys do not add more), as RabbitMQ's plugin.
        let keys = match self.kind {
            ExchangeKind::ConsistentHash => &keys[..keys.len().min(1)],
            _ => keys,
        };
        for key in keys {
            routes.route(key, props, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(name: &str) -> Destination {
        Destination::Queue(Arc::from(name))
    }

    fn binding(dest: Destination, key: &str) -> Binding {
        Binding {
            dest,
            routing_key: key.to_string(),
            arguments: FieldTable::default(),
        }
    }

    fn routed(x: &Exchange, key: &str) -> Vec<Destination> {
        let mut out = IndexSet::default();
        x.route(&[key], None, &mut out);
        out.into_iter().collect()
    }

    #[test]
    fn direct_routes_by_exact_key() {
        let x = Exchange::new(
            "d",
            ExchangeKind::Direct,
            false,
            false,
            false,
            FieldTable::default(),
        );
        x.bind(binding(q("a"), "k")).unwrap();
        x.bind(binding(q("b"), "other")).unwrap();
        assert_eq!(routed(&x, "k"), vec![q("a")]);
        assert!(routed(&x, "nope").is_empty());
    }

    #[test]
    fn duplicate_bind_is_idempotent_and_unbind_removes() {
        let x = Exchange::new(
            "d",
            ExchangeKind::Direct,
            false,
            false,
            false,
            FieldTable::default(),
        );
        assert!(x.bind(binding(q("a"), "k")).unwrap());
        assert!(!x.bind(binding(q("a"), "k")).unwrap());
        assert!(x.unbind(&binding(q("a"), "k")));
        assert!(!x.unbind(&binding(q("a"), "k")));
        assert!(routed(&x, "k").is_empty());
    }

    #[test]
    fn fanout_ignores_key() {
        let x = Exchange::new(
            "f",
            ExchangeKind::Fanout,
            false,
            false,
            false,
            FieldTable::default(),
        );
        x.bind(binding(q("a"), "x")).unwrap();
        x.bind(binding(q("a"), "y")).unwrap();
        x.bind(binding(q("b"), "")).unwrap();
        assert_eq!(routed(&x, "whatever"), vec![q("a"), q("b")]);
        x.unbind(&binding(q("a"), "x"));
        assert_eq!(routed(&x, "").len(), 2, "a is still bound with key y");
        assert_eq!(x.unbind_destination(&q("a")), 1);
        assert_eq!(routed(&x, ""), vec![q("b")]);
    }
}
