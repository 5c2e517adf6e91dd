//! Routing a publish: from the exchange it names, through the exchanges'
//! tables, exchange-to-exchange bindings and alternate exchanges, to the
//! queues it reaches. Reads only `names` and the exchanges' own tables
//! (see the lock rules in the parent module).

use std::sync::Arc;

use amq_protocol::protocol::basic::AMQPProperties;

use super::{Names, VHost};
use crate::broker::exchange::{Destination, Exchange};
use crate::broker::queue::Queue;
use crate::broker::IndexSet;
use crate::protocol::AmqpError;

impl VHost {
    /// Route a message published to `exchange` with `routing_keys` (the
    /// routing key plus any CC/BCC keys) and `props` (headers, and what a
    /// consistent-hash exchange hashes on); appends each target queue once.
    pub fn route(
        &self,
        exchange: &str,
        routing_keys: &[&str],
        props: Option<&AMQPProperties>,
        out: &mut Vec<Arc<Queue>>,
    ) -> Result<(), AmqpError> {
        let names = self.names.read();
        let Some(first) = names.exchanges.get(exchange) else {
            return Err(self.no_exchange(exchange));
        };
        if first.internal {
            return Err(AmqpError::access_refused(format!(
                "cannot publish to internal exchange '{exchange}' in vhost '{}'",
                self.name
            )));
        }
        if exchange.is_empty() {
            for key in routing_keys {
                if let Some(q) = names.queues.get(*key) {
                    if !out.iter().any(|o| Arc::ptr_eq(o, q)) {
                        out.push(q.clone());
                    }
                }
            }
            return Ok(());
        }
        let mut dests = crate::broker::scratch_set();
        first.route(routing_keys, props, &mut dests);
        let only_queues = dests.iter().all(|d| matches!(d, Destination::Queue(_)));
        if only_queues && (!dests.is_empty() || !first.has_alternate()) {
            // The usual case, one exchange's bindings to queues: no
            // exchanges to follow, so no sets to keep them.
            for d in &dests {
                if let Destination::Queue(q) = d {
                    out.extend(names.queues.get(&**q).cloned());
                }
            }
            return Ok(());
        }
        follow_exchanges(&names, first, dests, routing_keys, props, out);
        Ok(())
    }
}

/// Route on from `first`, whose table gave `dests`, through
/// exchange-to-exchange bindings and alternate exchanges, each exchange
/// once; append each target queue once.
fn follow_exchanges<'a>(
    names: &'a Names,
    first: &'a Exchange,
    mut dests: IndexSet<Destination>,
    routing_keys: &[&str],
    props: Option<&AMQPProperties>,
    out: &mut Vec<Arc<Queue>>,
) {
    let mut visited: IndexSet<&str> = crate::broker::scratch_set();
    let mut pending: Vec<&Exchange> = Vec::new();
    let mut queues: IndexSet<Arc<str>> = crate::broker::scratch_set();
    visited.insert(&first.name);
    let mut x = first;
    loop {
        if dests.is_empty() {
            if let Some(ae) = x.alternate() {
                if let Some(alt) = names.exchanges.get(&*ae) {
                    if visited.insert(&*alt.name) {
                        pending.push(alt);
                    }
                }
            }
        }
        for d in dests.drain(..) {
            match d {
                Destination::Queue(q) => {
                    queues.insert(q);
                }
                Destination::Exchange(name) => {
                    if let Some(next) = names.exchanges.get(&*name) {
                        if visited.insert(&*next.name) {
                            pending.push(next);
                        }
                    }
                }
            }
        }
        let Some(next) = pending.pop() else {
            break;
        };
        x = next;
        x.route(routing_keys, props, &mut dests);
    }
    out.extend(
        queues
            .iter()
            .filter_map(|n| names.queues.get(&**n).cloned()),
    );
}
