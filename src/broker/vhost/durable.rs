//! A vhost's durable topology: handing its changes to the metadata log,
//! and the rebuild (with each durable queue's messages) at start.

use std::sync::Arc;
use std::time::Instant;

use super::{Topology, VHost};
use crate::broker::exchange::{Exchange, ExchangeKind};
use crate::broker::queue::{Queue, QueueDef};
use crate::broker::queue_policy::QueuePolicy;
use crate::broker::ready::ReadyMessages;
use crate::protocol::{AmqpError, ErrorKind};
use crate::store::definitions::QueueDef as StoredQueue;
use crate::store::{QueueLog, VhostDefinitions};

impl VHost {
    /// Hand the changes `topo` journaled to the metadata log. Called with
    /// the topology lock held, so they are logged in order. Returns the
    /// sync round after which they are durable (0: nothing to wait for),
    /// which the reply to the client waits for.
    pub(super) fn commit(&self, topo: &mut Topology) -> Result<u64, AmqpError> {
        if topo.journal.is_empty() {
            // Nothing changed, but what this answers may rest on a change
            // not yet durable (another client's declare of the same queue).
            return Ok(self.store.metadata.last_ticket());
        }
        let ops = std::mem::take(&mut topo.journal);
        self.store.append_metadata(&ops).map_err(|e| {
            tracing::error!(vhost = %self.name, error = %e, "cannot store durable definitions");
            AmqpError::new(
                ErrorKind::InternalError,
                format!("cannot store durable definitions: {e}"),
            )
        })
    }

    /// Same, for paths that cannot fail (deletes): the error is logged.
    pub(super) fn commit_or_log(&self, topo: &mut Topology) -> u64 {
        self.commit(topo).unwrap_or(0)
    }

    /// Rebuild exchanges, queues (with their messages) and bindings.
    pub(super) fn restore(
        &self,
        topo: &mut Topology,
        defs: VhostDefinitions,
    ) -> Result<(), String> {
        // Restored, not changed: nothing is journaled.
        topo.restoring = true;
        let restored = self.restore_objects(topo, defs);
        topo.restoring = false;
        restored
    }

    fn restore_objects(&self, topo: &mut Topology, defs: VhostDefinitions) -> Result<(), String> {
        let began = Instant::now();
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
            self.note_dedup(exchange.reads_ids());
            topo.insert_exchange(exchange);
        }
        let recovered = map_in_parallel(&defs.queues, |q| self.recover_queue(q));
        for queue in recovered {
            topo.insert_queue(queue?);
        }
        let queues_ms = began.elapsed().as_millis() as u64;
        let (queues, bindings) = (defs.queues.len(), defs.bindings.len());
        topo.restore_bindings(defs.bindings);
        tracing::info!(
            vhost = %self.name,
            queues,
            bindings,
            queues_ms,
            bindings_ms = began.elapsed().as_millis() as u64 - queues_ms,
            "restored topology"
        );
        Ok(())
    }

    /// A durable queue with the messages its directory holds.
    fn recover_queue(&self, q: &StoredQueue) -> Result<Arc<Queue>, String> {
        if crate::broker::arguments::is_stream(&q.arguments) {
            return self.recover_stream(q);
        }
        let started = Instant::now();
        let path = self.store.queue_path(&q.dir);
        let fail = |e: std::io::Error| {
            format!(
                "cannot recover queue '{}' from {}: {e}",
                q.name,
                path.display()
            )
        };
        // A deduplicating queue gets back the keys of its stored messages
        // (settled ones too, while their segment is kept): the last
        // x-cache-size of them, as 128-bit digests.
        let dedup = crate::broker::dedup::Settings::parse(&q.arguments)
            .ok()
            .flatten()
            .map(crate::broker::dedup::Cache::new);
        let mut keys = std::collections::VecDeque::new();
        let mut read = |raw: &[u8]| {
            let Some(cache) = &dedup else { return };
            let key = crate::broker::message::decode_properties(raw).and_then(|p| cache.key(&p));
            if let Some(key) = key {
                if keys.len() == cache.size() {
                    keys.pop_front();
                }
                keys.push_back(key);
            }
        };
        let (log, report) =
            QueueLog::recover_reading(&path, self.store.segment_bytes, &mut read).map_err(fail)?;
        let max_priority = QueuePolicy::from_arguments(&q.arguments).max_priority;
        let ready = ReadyMessages::new(
            self.store.clone(),
            Some((log, report.clone())),
            max_priority,
        )
        .map_err(fail)?;
        // One line per queue with something to report; 100,000 empty
        // queues are not 100,000 lines.
        if !ready.is_empty() || report.corrupt_records > 0 || report.torn_tails > 0 {
            tracing::info!(
                vhost = %self.name,
                queue = %q.name,
                messages = ready.len(),
                corrupt_records = report.corrupt_records,
                torn_tails = report.torn_tails,
                ms = started.elapsed().as_millis() as u64,
                "recovered queue"
            );
        }
        let queue = Queue::new(self.recovered_def(q), ready, self.queue_context());
        self.note_dedup(queue.dedup.is_some());
        if let Some(cache) = &queue.dedup {
            cache.seed(keys.into_iter(), crate::broker::message::now_ms());
        }
        Ok(Arc::new(queue))
    }
}

impl VHost {
    /// The declared properties of a queue from the definitions.
    pub(super) fn recovered_def<'a>(&'a self, q: &'a StoredQueue) -> QueueDef<'a> {
        QueueDef {
            name: &q.name,
            vhost: &self.name,
            disk_dir: Some(q.dir.clone()),
            exclusive_owner: None,
            auto_delete: q.auto_delete,
            arguments: q.arguments.clone(),
        }
    }
}

/// Threads that recover queues at start: with a cold page cache their
/// work is mostly waiting for the disk.
const RECOVERY_THREADS: usize = 4;

/// `f` of each item, in order, computed by a few threads over contiguous
/// parts of `items`.
fn map_in_parallel<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let chunk = items.len().div_ceil(RECOVERY_THREADS).max(1);
    std::thread::scope(|scope| {
        let parts: Vec<_> = items
            .chunks(chunk)
            .map(|part| scope.spawn(|| part.iter().map(&f).collect::<Vec<R>>()))
            .collect();
        parts
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}
