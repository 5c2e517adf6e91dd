//! Exchanges: their declared properties, their bindings, and the routing
//! table each type keeps (direct: key → destinations; fanout: a set; topic: a
//! trie; headers: parsed binding arguments).

use ahash::AHashMap as HashMap;
use std::sync::Arc;

use super::IndexSet;
use amq_protocol::types::FieldTable;

use super::headers::HeadersBinding;
use super::topic::TopicTrie;
use crate::protocol::AmqpError;
use bindings::{Added, BindingSet, Removed};

mod bindings;

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
        }
    }
}

#[derive(Debug)]
enum RoutingTable {
    Direct(HashMap<String, IndexSet<Destination>>),
    Fanout(IndexSet<Destination>),
    Topic(TopicTrie<Destination>),
    Headers(Vec<(HeadersBinding, Destination)>),
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
    pub alternate_exchange: Option<String>,
    /// Declared as `x-delayed-message` (routing by `kind`, the
    /// x-delayed-type, once a message's x-delay has passed).
    pub delayed: bool,
    bindings: BindingSet,
    table: RoutingTable,
}

impl Exchange {
    /// A new exchange with no bindings.
    pub fn new(
        name: &str,
        kind: ExchangeKind,
        durable: bool,
        auto_delete: bool,
        internal: bool,
        arguments: FieldTable,
    ) -> Self {
        let table = match kind {
            ExchangeKind::Direct => RoutingTable::Direct(HashMap::new()),
            ExchangeKind::Fanout => RoutingTable::Fanout(IndexSet::default()),
            ExchangeKind::Topic => RoutingTable::Topic(TopicTrie::default()),
            ExchangeKind::Headers => RoutingTable::Headers(Vec::new()),
        };
        let alternate_exchange =
            arguments
                .inner()
                .get("alternate-exchange")
                .and_then(|v| match v {
                    amq_protocol::types::AMQPValue::LongString(s) => {
                        Some(String::from_utf8_lossy(s.as_bytes()).into_owned())
                    }
                    amq_protocol::types::AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
                    _ => None,
                });
        Exchange {
            name: Arc::from(name),
            kind,
            durable,
            auto_delete,
            internal,
            arguments,
            alternate_exchange,
            delayed: false,
            bindings: BindingSet::default(),
            table,
        }
    }

    /// The type as declared.
    pub fn type_name(&self) -> &'static str {
        match self.delayed {
            true => DELAYED_TYPE,
            false => self.kind.name(),
        }
    }

    /// All bindings from this exchange.
    pub fn bindings(&self) -> impl Iterator<Item = &Binding> {
        self.bindings.iter()
    }

    /// Whether any binding leaves this exchange.
    pub fn has_bindings(&self) -> bool {
        !self.bindings.is_empty()
    }

    /// The key the routing table stores a binding under: a topic pattern
    /// with runs of `#` collapsed (`a.#.#` and `a.#` are one entry).
    fn table_key(&self, binding: &Binding) -> String {
        match self.table {
            RoutingTable::Topic(_) => super::topic::normalized(&binding.routing_key),
            _ => binding.routing_key.clone(),
        }
    }

    /// Whether any binding goes to `dest`.
    pub fn binds_to(&self, dest: &Destination) -> bool {
        self.bindings.has_dest(dest)
    }

    /// Whether an identical binding exists.
    pub fn has_binding(&self, binding: &Binding) -> bool {
        self.bindings.contains(binding, &self.table_key(binding))
    }

    /// Add a binding; Ok(false) if an identical one exists.
    pub fn bind(&mut self, binding: Binding) -> Result<bool, AmqpError> {
        let key = self.table_key(&binding);
        // Parsed first: a binding the table cannot take is not added.
        let headers = match self.table {
            RoutingTable::Headers(_) if !self.bindings.contains(&binding, &key) => {
                Some(HeadersBinding::parse(&binding.arguments)?)
            }
            _ => None,
        };
        let dest = binding.dest.clone();
        let added = self.bindings.add(binding, key.clone());
        if added == Added::Duplicate {
            return Ok(false);
        }
        match &mut self.table {
            RoutingTable::Headers(list) => {
                if let Some(h) = headers {
                    list.push((h, dest));
                }
            }
            _ if added == Added::Joined => {}
            RoutingTable::Direct(map) => {
                map.entry(key).or_default().insert(dest);
            }
            RoutingTable::Fanout(set) => {
                set.insert(dest);
            }
            RoutingTable::Topic(trie) => {
                trie.insert(&key, dest);
            }
        }
        Ok(true)
    }

    /// Remove a binding; false if there was none.
    pub fn unbind(&mut self, binding: &Binding) -> bool {
        let key = self.table_key(binding);
        match self.bindings.remove(binding, &key) {
            Removed::Missing => false,
            Removed::Left => {
                self.unindex_headers(binding);
                true
            }
            Removed::LastOfGroup => {
                self.unindex(&binding.dest, &key);
                self.unindex_headers(binding);
                true
            }
        }
    }

    /// Remove every binding to `dest`; returns how many went.
    pub fn unbind_destination(&mut self, dest: &Destination) -> usize {
        let (keys, gone) = self.bindings.remove_dest(dest);
        if let RoutingTable::Headers(list) = &mut self.table {
            list.retain(|(_, d)| d != dest);
            return gone;
        }
        for key in keys {
            self.unindex(dest, &key);
        }
        gone
    }

    /// Drop the routing table's entry for `dest` under `key` (its last
    /// binding there went).
    fn unindex(&mut self, dest: &Destination, key: &str) {
        match &mut self.table {
            RoutingTable::Direct(map) => {
                if let Some(set) = map.get_mut(key) {
                    set.swap_remove(dest);
                    if set.is_empty() {
                        map.remove(key);
                    }
                }
            }
            RoutingTable::Fanout(set) => {
                if !self.bindings.has_dest(dest) {
                    set.swap_remove(dest);
                }
            }
            RoutingTable::Topic(trie) => {
                trie.remove(key, dest);
            }
            RoutingTable::Headers(_) => {}
        }
    }

    /// A headers exchange's table has one entry per binding: drop one of
    /// `binding`'s (O(bindings): headers exchanges are matched by scanning
    /// them anyway).
    fn unindex_headers(&mut self, binding: &Binding) {
        let RoutingTable::Headers(list) = &mut self.table else {
            return;
        };
        if let Ok(parsed) = HeadersBinding::parse(&binding.arguments) {
            if let Some(pos) = list
                .iter()
                .position(|(h, d)| h == &parsed && d == &binding.dest)
            {
                list.swap_remove(pos);
            }
        }
    }

    /// Add the destinations this exchange routes `key` / `headers` to.
    pub fn route(&self, key: &str, headers: Option<&FieldTable>, out: &mut IndexSet<Destination>) {
        match &self.table {
            RoutingTable::Direct(map) => {
                if let Some(set) = map.get(key) {
                    out.extend(set.iter().cloned());
                }
            }
            RoutingTable::Fanout(set) => out.extend(set.iter().cloned()),
            RoutingTable::Topic(trie) => trie.matches(key, out),
            RoutingTable::Headers(list) => {
                for (h, d) in list {
                    if h.matches(headers) {
                        out.insert(d.clone());
                    }
                }
            }
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
        x.route(key, None, &mut out);
        out.into_iter().collect()
    }

    #[test]
    fn direct_routes_by_exact_key() {
        let mut x = Exchange::new(
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
        let mut x = Exchange::new(
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
        let mut x = Exchange::new(
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
