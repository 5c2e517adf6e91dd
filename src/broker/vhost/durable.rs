//! A vhost's durable topology: the snapshot written to the store on each
//! change, and the rebuild from it (with each durable queue's messages) at
//! start.

use std::sync::Arc;
use std::time::Instant;

use super::{Topology, VHost, PREDECLARED};
use crate::broker::exchange::{Binding, Destination, Exchange, ExchangeKind};
use crate::broker::queue::{Queue, QueueDef};
use crate::broker::queue_policy::QueuePolicy;
use crate::broker::ready::ReadyMessages;
use crate::protocol::{AmqpError, ErrorKind};
use crate::store::definitions::{BindingDef, ExchangeDef, QueueDef as StoredQueue};
use crate::store::{QueueLog, VhostDefinitions};

impl VHost {
    /// Write the durable part of `topo` to the store if it changed. Called
    /// with the topology lock held, so snapshots are written in order.
    pub(super) fn persist(&self, topo: &Topology) -> Result<(), AmqpError> {
        self.store
            .definitions
            .save_vhost(&self.name, snapshot(topo))
            .map_err(|e| {
                tracing::error!(vhost = %self.name, error = %e, "cannot write durable definitions");
                AmqpError::new(
                    ErrorKind::InternalError,
                    format!("cannot store durable definitions: {e}"),
                )
            })
    }

    /// Same, for paths that cannot fail (deletes): the error is logged.
    pub(super) fn persist_or_log(&self, topo: &Topology) {
        let _ = self.persist(topo);
    }

    /// Rebuild exchanges, queues (with their messages) and bindings.
    pub(super) fn restore(
        &self,
        topo: &mut Topology,
        defs: &VhostDefinitions,
    ) -> Result<(), String> {
        for x in &defs.exchanges {
            let Some((kind, delayed)) = ExchangeKind::of_declared(&x.kind, &x.arguments) else {
                tracing::warn!(vhost = %self.name, exchange = %x.name, kind = %x.kind, "stored exchange of unknown type skipped");
                continue;
            };
            let mut exchange = Exchange::new(
                &x.name,
                kind,
                true,
                x.auto_delete,
                x.internal,
                x.arguments.clone(),
            );
            exchange.delayed = delayed;
            topo.exchanges.insert(x.name.clone(), exchange);
        }
        for q in &defs.queues {
            let started = Instant::now();
            let path = self.store.queue_path(&q.dir);
            let fail = |e: std::io::Error| {
                format!(
                    "cannot recover queue '{}' from {}: {e}",
                    q.name,
                    path.display()
                )
            };
            let (log, report) = QueueLog::recover(&path, self.store.segment_bytes).map_err(fail)?;
            let max_priority = QueuePolicy::from_arguments(&q.arguments).max_priority;
            let ready = ReadyMessages::new(
                self.store.clone(),
                Some((log, report.clone())),
                max_priority,
            )
            .map_err(fail)?;
            tracing::info!(
                vhost = %self.name,
                queue = %q.name,
                messages = ready.len(),
                corrupt_records = report.corrupt_records,
                torn_tails = report.torn_tails,
                ms = started.elapsed().as_millis() as u64,
                "recovered queue"
            );
            let def = QueueDef {
                name: &q.name,
                vhost: &self.name,
                disk_dir: Some(q.dir.clone()),
                exclusive_owner: None,
                auto_delete: q.auto_delete,
                arguments: q.arguments.clone(),
            };
            let queue = Queue::new(def, ready, self.queue_context());
            topo.insert_queue(Arc::new(queue));
        }
        for b in &defs.bindings {
            let dest = match b.to_exchange {
                true => Destination::Exchange(Arc::from(b.destination.as_str())),
                false => Destination::Queue(Arc::from(b.destination.as_str())),
            };
            let binding = Binding {
                dest,
                routing_key: b.routing_key.clone(),
                arguments: b.arguments.clone(),
            };
            let _ = topo.bind(&b.source, binding);
        }
        Ok(())
    }
}

/// The durable entities of a topology.
fn snapshot(topo: &Topology) -> VhostDefinitions {
    let durable_queue = |name: &str| topo.queues.get(name).is_some_and(|q| q.disk_dir.is_some());
    let durable_exchange = |name: &str| topo.exchanges.get(name).is_some_and(|x| x.durable);
    let mut defs = VhostDefinitions::default();
    for (name, x) in &topo.exchanges {
        if !x.durable {
            continue;
        }
        if !PREDECLARED.iter().any(|(n, _)| n == name) {
            defs.exchanges.push(ExchangeDef {
                name: name.clone(),
                kind: x.type_name().to_string(),
                auto_delete: x.auto_delete,
                internal: x.internal,
                arguments: x.arguments.clone(),
            });
        }
        for b in x.bindings() {
            let (destination, to_exchange) = match &b.dest {
                Destination::Queue(q) => (q, false),
                Destination::Exchange(e) => (e, true),
            };
            let durable = match to_exchange {
                true => durable_exchange(destination),
                false => durable_queue(destination),
            };
            if durable {
                defs.bindings.push(BindingDef {
                    source: name.clone(),
                    destination: destination.to_string(),
                    to_exchange,
                    routing_key: b.routing_key.clone(),
                    arguments: b.arguments.clone(),
                });
            }
        }
    }
    for q in topo.queues.values() {
        if let Some(dir) = &q.disk_dir {
            defs.queues.push(StoredQueue {
                name: q.name.to_string(),
                dir: dir.clone(),
                auto_delete: q.auto_delete,
                arguments: q.arguments.clone(),
            });
        }
    }
    // Map iteration order is random: sort so equal topologies compare
    // equal and no needless rewrite happens.
    defs.exchanges.sort_by(|a, b| a.name.cmp(&b.name));
    defs.queues.sort_by(|a, b| a.name.cmp(&b.name));
    defs.bindings.sort_by(|a, b| {
        (&a.source, &a.destination, &a.routing_key).cmp(&(
            &b.source,
            &b.destination,
            &b.routing_key,
        ))
    });
    defs
}
