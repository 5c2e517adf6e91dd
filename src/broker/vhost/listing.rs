//! Lists of a vhost's exchanges, queues and bindings for the management
//! API: copies of the `Arc`s taken under the `names` read lock (held only
//! for the copy), sorted by name.

use std::sync::Arc;

use super::VHost;
use crate::broker::exchange::{Binding, Exchange};
use crate::broker::queue::Queue;

impl VHost {
    /// Queues declared (redeclares included), created and deleted since
    /// start.
    pub fn queue_churn(&self) -> (u64, u64, u64) {
        let names = self.names.read();
        let declared = self
            .queues_declared
            .load(std::sync::atomic::Ordering::Relaxed);
        (declared, names.queues_created, names.queues_deleted)
    }

    /// Every queue, by name.
    pub fn queues(&self) -> Vec<Arc<Queue>> {
        let mut all: Vec<Arc<Queue>> = self.names.read().queues.values().cloned().collect();
        all.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// Every exchange, by name (the default exchange first).
    pub fn exchanges(&self) -> Vec<Arc<Exchange>> {
        let mut all: Vec<Arc<Exchange>> = self.names.read().exchanges.values().cloned().collect();
        all.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// Whether `name` is a topic exchange (topic permissions apply).
    pub fn is_topic_exchange(&self, name: &str) -> bool {
        let names = self.names.read();
        names
            .exchanges
            .get(name)
            .is_some_and(|x| x.kind == crate::broker::exchange::ExchangeKind::Topic)
    }

    /// The exchange named `name`.
    pub fn find_exchange(&self, name: &str) -> Option<Arc<Exchange>> {
        self.names.read().exchanges.get(name).cloned()
    }

    /// Every binding, with its source exchange, by source. The default
    /// exchange's implicit binding to each queue is not included (the
    /// management API adds those itself, as RabbitMQ shows them).
    pub fn bindings(&self) -> Vec<(Arc<str>, Binding)> {
        let mut out = Vec::new();
        for x in self.exchanges() {
            if x.name.is_empty() {
                continue;
            }
            out.extend(x.bindings().into_iter().map(|b| (x.name.clone(), b)));
        }
        out
    }
}
