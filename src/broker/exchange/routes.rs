//! One exchange's bindings and the routing table built from them (direct:
//! key → destinations; fanout: a set; topic: a trie; headers: parsed
//! binding arguments; consistent hash: weighted buckets). The exchange keeps this behind its own lock, so
//! changing one exchange's bindings never touches another's.

use std::sync::Arc;

use ahash::AHashMap as HashMap;

use amq_protocol::protocol::basic::AMQPProperties;
use amq_protocol::types::FieldTable;

use super::bindings::{Added, BindingSet, Removed};
use super::hash_ring::{self, HashOn, HashRing};
use super::{Binding, Destination, ExchangeKind};
use crate::broker::headers::HeadersBinding;
use crate::broker::topic::TopicTrie;
use crate::broker::IndexSet;
use crate::protocol::AmqpError;

#[derive(Debug)]
enum RoutingTable {
    Direct(HashMap<Arc<str>, IndexSet<Destination>>),
    Fanout(IndexSet<Destination>),
    Topic(TopicTrie<Destination>),
    Headers(Vec<(HeadersBinding, Destination)>),
    Hash(HashRing),
}

/// The bindings of an exchange and its routing table.
#[derive(Debug)]
pub(super) struct Routes {
    bindings: BindingSet,
    table: RoutingTable,
}

impl Routes {
    /// No bindings, with the table an exchange of `kind` (declared with
    /// `arguments`, already checked) routes with.
    pub fn new(kind: ExchangeKind, arguments: &FieldTable) -> Self {
        let table = match kind {
            ExchangeKind::ConsistentHash => {
                RoutingTable::Hash(HashRing::new(HashOn::parse(arguments).unwrap_or_default()))
            }
            ExchangeKind::Direct => RoutingTable::Direct(HashMap::new()),
            ExchangeKind::Fanout => RoutingTable::Fanout(IndexSet::default()),
            ExchangeKind::Topic => RoutingTable::Topic(TopicTrie::default()),
            ExchangeKind::Headers => RoutingTable::Headers(Vec::new()),
        };
        Routes {
            bindings: BindingSet::default(),
            table,
        }
    }

    /// The destinations of all bindings.
    pub fn destinations(&self) -> Vec<Destination> {
        let mut dests: IndexSet<Destination> = IndexSet::default();
        dests.extend(self.bindings.iter().map(|b| b.dest.clone()));
        dests.into_iter().collect()
    }

    /// Every binding, in the order they were made.
    pub fn bindings(&self) -> Vec<Binding> {
        self.bindings.iter().cloned().collect()
    }

    pub fn has_bindings(&self) -> bool {
        !self.bindings.is_empty()
    }

    /// The key the routing table stores a binding under: a topic pattern
    /// with runs of `#` collapsed (`a.#.#` and `a.#` are one entry).
    fn table_key(&self, binding: &Binding) -> String {
        match self.table {
            RoutingTable::Topic(_) => crate::broker::topic::normalized(&binding.routing_key),
            _ => binding.routing_key.clone(),
        }
    }

    pub fn binds_to(&self, dest: &Destination) -> bool {
        self.bindings.has_dest(dest)
    }

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
            RoutingTable::Hash(_) => {
                hash_ring::weight(&binding.routing_key)?;
                None
            }
            _ => None,
        };
        let dest = binding.dest.clone();
        let (added, key) = self.bindings.add(binding, &key);
        if added == Added::Duplicate {
            return Ok(false);
        }
        match &mut self.table {
            RoutingTable::Headers(list) => {
                if let Some(h) = headers {
                    list.push((h, dest));
                }
            }
            RoutingTable::Hash(ring) => ring.rebuild(self.bindings.iter()),
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
        let removed = self.bindings.remove(binding, &key);
        if let (RoutingTable::Hash(ring), false) = (&mut self.table, removed == Removed::Missing) {
            ring.rebuild(self.bindings.iter());
            return true;
        }
        match removed {
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
        match &mut self.table {
            RoutingTable::Headers(list) => {
                list.retain(|(_, d)| d != dest);
                return gone;
            }
            RoutingTable::Hash(ring) => {
                ring.rebuild(self.bindings.iter());
                return gone;
            }
            _ => {}
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
            RoutingTable::Headers(_) | RoutingTable::Hash(_) => {}
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

    /// Add the destinations a message with `key` and `props` goes to.
    pub fn route(
        &self,
        key: &str,
        props: Option<&AMQPProperties>,
        out: &mut IndexSet<Destination>,
    ) {
        let headers = props.and_then(|p| p.headers().as_ref());
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
            RoutingTable::Hash(ring) => out.extend(ring.route(key, props).cloned()),
        }
    }
}
