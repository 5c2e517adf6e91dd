//! A virtual host: its exchanges, queues and bindings, and routing.
//!
//! Lock rules (the locks above the per-queue ones):
//! - `topology` is a `parking_lot::Mutex` that serializes every change to
//!   exchanges, queues and bindings; publishing never takes it. `names`
//!   (the maps of exchanges and queues) and each exchange's routing table
//!   are `parking_lot::RwLock`s that writers hold only for one map or
//!   table change, so a publisher waits for no more than that. None is
//!   held across `.await` (nothing in this module is async).
//! - Publishing takes `names` (read), then one exchange's table at a time
//!   (read), only to compute the target queues, and releases both before
//!   touching any queue. Nothing takes `names` while holding a table.
//! - Declare, delete and auto-delete take a queue's mutex while holding
//!   `topology` (for counts, and to check-and-delete atomically). Queue code
//!   never takes `topology`, `names` or a table. So the order is always
//!   topology → names → table, topology → queue, and no cycle exists.
//! - Queues send to connections only through unbounded mailboxes, so a
//!   queue lock never waits on a connection. A queue's kind sends only
//!   deliveries under its lock; timers, chores, cancel notifications and
//!   file deletions come back as effects that `Queue` carries out after
//!   the lock is released (see `queue/kind.rs`).
//! - Changes to durable entities are appended to the metadata log's
//!   buffer while `topology` is held (so they land in order): a memory
//!   copy, no file I/O. The sync thread writes and fsyncs them; the reply
//!   to the client waits for that round (the ticket these methods return),
//!   not the lock.

use std::sync::Arc;

use amq_protocol::protocol::basic::AMQPProperties;
use amq_protocol::types::FieldTable;
use parking_lot::{Mutex, RwLock};

use super::chores::{Chore, ChoreSender};
use super::delayed::Delayed;
use super::exchange::{Binding, Destination, Exchange, ExchangeKind};
use super::queue::{DeleteRefused, FlowLimits, Queue, QueueContext};
use super::reply_to::ReplyTargets;
use crate::protocol::AmqpError;
use crate::store::{Store, VhostDefinitions};

mod declare;
mod durable;
mod housekeeping;
mod limits;
mod listing;
mod policies;
mod routing;
mod streams;
#[cfg(test)]
mod tests;
mod topology;

pub use declare::generated_name;
use topology::{Names, Topology};

/// The exchanges every vhost has.
const PREDECLARED: &[(&str, ExchangeKind)] = &[
    ("", ExchangeKind::Direct),
    ("amq.direct", ExchangeKind::Direct),
    ("amq.fanout", ExchangeKind::Fanout),
    ("amq.topic", ExchangeKind::Topic),
    ("amq.headers", ExchangeKind::Headers),
    ("amq.match", ExchangeKind::Headers),
];

/// Declare-ok counts for a queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueInfo {
    /// The queue's (possibly server-generated) name.
    pub name: String,
    /// Ready messages.
    pub message_count: u32,
    /// Consumers.
    pub consumer_count: u32,
    /// The sync round after which the declare is durable (0: nothing to
    /// wait for).
    pub ticket: u64,
}

/// One virtual host.
#[derive(Debug)]
pub struct VHost {
    /// Name.
    pub name: Arc<str>,
    /// Serializes topology changes (the indexes and the journal).
    topology: Mutex<Topology>,
    /// The exchanges and queues by name, as publishing reads them.
    names: Arc<RwLock<Names>>,
    /// Flow-control watermarks given to every queue declared here.
    flow: FlowLimits,
    store: Arc<Store>,
    /// Queues' requests to the housekeeping task.
    chores: ChoreSender,
    /// Direct reply-to names held by this vhost's RPC clients.
    pub reply_to: ReplyTargets,
    /// Messages held by x-delayed-message exchanges.
    pub delayed: Arc<Delayed>,
    /// Dead letters' and delayed messages' old records, settled once their
    /// new copies are synced.
    pending: parking_lot::Mutex<housekeeping::Waiting>,
    /// Being deleted: nothing more is declared or bound here.
    deleted: std::sync::atomic::AtomicBool,
    /// The vhost's policies and operator policies (see `policies.rs`).
    policies: RwLock<crate::broker::policy::PolicySet>,
    /// queue.declare calls that succeeded (for the metrics).
    queues_declared: std::sync::atomic::AtomicU64,
    /// Most queues the vhost may hold (negative: no limit; see
    /// `limits.rs`).
    max_queues: std::sync::atomic::AtomicI64,
    /// Some exchange or queue here deduplicates, or a consistent-hash
    /// exchange hashes on a property (publishers decode and carry
    /// properties only then; set once, never cleared).
    has_dedup: std::sync::atomic::AtomicBool,
    /// Its end, until the task starts.
    chore_rx: parking_lot::Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<Chore>>>,
}

impl VHost {
    /// A vhost with the default and `amq.*` exchanges, plus what `stored`
    /// holds (durable topology and messages from an earlier run).
    pub fn new(
        name: &str,
        flow: FlowLimits,
        store: Arc<Store>,
        stored: Option<VhostDefinitions>,
    ) -> Result<Self, String> {
        let names = Arc::new(RwLock::new(Names::default()));
        let mut topo = Topology::new(name, names.clone());
        topo.restoring = true;
        for &(xname, kind) in PREDECLARED {
            let x = Exchange::new(xname, kind, true, false, false, FieldTable::default());
            topo.insert_exchange(x);
        }
        topo.restoring = false;
        let (chores, chore_rx) = tokio::sync::mpsc::unbounded_channel();
        let hex: String = name.bytes().map(|b| format!("{b:02x}")).collect();
        let delayed_dir = store.data_dir().join("delayed").join(format!("v{hex}"));
        let delayed =
            Delayed::open(store.clone(), delayed_dir.clone(), chores.clone()).map_err(|e| {
                format!(
                    "cannot recover delayed messages from {}: {e}",
                    delayed_dir.display()
                )
            })?;
        let vhost = VHost {
            name: Arc::from(name),
            topology: Mutex::new(Topology::new(name, names.clone())),
            names,
            flow,
            store,
            chores,
            reply_to: ReplyTargets::default(),
            delayed: Arc::new(delayed),
            pending: parking_lot::Mutex::new(Vec::new()),
            has_dedup: Default::default(),
            chore_rx: parking_lot::Mutex::new(Some(chore_rx)),
            queues_declared: Default::default(),
            max_queues: std::sync::atomic::AtomicI64::new(-1),
            policies: Default::default(),
            deleted: Default::default(),
        };
        if let Some(defs) = stored {
            vhost.restore(&mut topo, defs)?;
        }
        *vhost.topology.lock() = topo;
        Ok(vhost)
    }

    /// What the queues of this vhost share.
    fn queue_context(&self) -> QueueContext {
        QueueContext {
            flow: self.flow,
            store: self.store.clone(),
            chores: Some(self.chores.clone()),
        }
    }

    /// Refuse a change to a vhost being deleted (checked under the
    /// topology lock, which `mark_deleted` takes, so nothing slips in
    /// after the delete has listed what to remove).
    fn check_live(&self) -> Result<(), AmqpError> {
        match self.deleted.load(std::sync::atomic::Ordering::Acquire) {
            true => Err(AmqpError::not_found(format!(
                "vhost '{}' is being deleted",
                self.name
            ))),
            false => Ok(()),
        }
    }

    /// Stop taking declares and binds (the vhost is being deleted).
    pub fn mark_deleted(&self) {
        let _topo = self.topology.lock();
        self.deleted
            .store(true, std::sync::atomic::Ordering::Release);
    }

    fn no_exchange(&self, name: &str) -> AmqpError {
        AmqpError::not_found(format!("no exchange '{name}' in vhost '{}'", self.name))
    }

    fn no_queue(&self, name: &str) -> AmqpError {
        AmqpError::not_found(format!("no queue '{name}' in vhost '{}'", self.name))
    }

    fn locked(&self, name: &str) -> AmqpError {
        AmqpError::resource_locked(format!(
            "cannot obtain exclusive access to locked queue '{name}' in vhost '{}'. It could be originally declared on another connection or the exclusive property value does not match that of the original declaration.",
            self.name
        ))
    }

    fn default_exchange_refused() -> AmqpError {
        AmqpError::access_refused("operation not permitted on the default exchange")
    }

    /// exchange.delete; the sync round that makes it durable (0: none).
    pub fn delete_exchange(&self, name: &str, if_unused: bool) -> Result<u64, AmqpError> {
        if name.is_empty() {
            return Err(Self::default_exchange_refused());
        }
        if name.starts_with("amq.") {
            return Err(AmqpError::access_refused(format!(
                "deletion of system exchange '{name}' in vhost '{}' not allowed",
                self.name
            )));
        }
        let mut topo = self.topology.lock();
        let Some(x) = topo.exchange(name) else {
            return Ok(0);
        };
        if if_unused && x.has_bindings() {
            return Err(AmqpError::precondition_failed(format!(
                "exchange '{name}' in vhost '{}' in use",
                self.name
            )));
        }
        topo.remove_exchange(name);
        Ok(self.commit_or_log(&mut topo))
    }

    /// exchange.bind / queue.bind to `dest`; the sync round that makes it
    /// durable (0: none).
    pub fn bind(
        &self,
        source: &str,
        dest: Destination,
        routing_key: &str,
        arguments: &FieldTable,
        conn_id: u64,
    ) -> Result<u64, AmqpError> {
        let mut topo = self.topology.lock();
        self.check_live()?;
        self.check_binding_ends(&topo, source, &dest, conn_id)?;
        let dest = match dest {
            Destination::Queue(q) => topo.queue_destination(&q).unwrap_or(Destination::Queue(q)),
            other => other,
        };
        let binding = Binding {
            dest,
            routing_key: routing_key.to_string(),
            arguments: arguments.clone(),
        };
        let Some(added) = topo.bind(source, binding.clone()) else {
            return Err(self.no_exchange(source));
        };
        added?;
        // Only a binding with both ends durable is journaled (RabbitMQ's
        // rule); not stored means not bound.
        self.commit(&mut topo).inspect_err(|_| {
            topo.unbind(source, &binding);
            topo.journal.clear();
        })
    }

    /// exchange.unbind / queue.unbind. A missing binding, queue or exchange
    /// is not an error (as in RabbitMQ); an existing binding to another
    /// connection's exclusive queue is 405. The sync round that makes it
    /// durable (0: none).
    pub fn unbind(
        &self,
        source: &str,
        dest: Destination,
        routing_key: &str,
        arguments: &FieldTable,
        conn_id: u64,
    ) -> Result<u64, AmqpError> {
        if source.is_empty() || matches!(&dest, Destination::Exchange(d) if d.is_empty()) {
            return Err(Self::default_exchange_refused());
        }
        let mut topo = self.topology.lock();
        let binding = Binding {
            dest,
            routing_key: routing_key.to_string(),
            arguments: arguments.clone(),
        };
        let Some(x) = topo.exchange(source) else {
            return Ok(0);
        };
        if !x.has_binding(&binding) {
            return Ok(0);
        }
        if let Destination::Queue(q) = &binding.dest {
            if let Some(queue) = topo.queue(q) {
                self.check_owner(&queue, conn_id)?;
            }
        }
        topo.unbind(source, &binding);
        if x.auto_delete && !x.has_bindings() {
            topo.remove_exchange(source);
        }
        Ok(self.commit_or_log(&mut topo))
    }

    fn check_binding_ends(
        &self,
        topo: &Topology,
        source: &str,
        dest: &Destination,
        conn_id: u64,
    ) -> Result<(), AmqpError> {
        if source.is_empty() || matches!(dest, Destination::Exchange(d) if d.is_empty()) {
            return Err(Self::default_exchange_refused());
        }
        match dest {
            Destination::Queue(q) => match topo.queue(q) {
                None => return Err(self.no_queue(q)),
                Some(queue) => self.check_owner(&queue, conn_id)?,
            },
            Destination::Exchange(x) => {
                if !topo.has_exchange(x) {
                    return Err(self.no_exchange(x));
                }
            }
        }
        if !topo.has_exchange(source) {
            return Err(self.no_exchange(source));
        }
        Ok(())
    }

    fn check_owner(&self, queue: &Queue, conn_id: u64) -> Result<(), AmqpError> {
        match queue.exclusive_owner {
            Some(owner) if owner != conn_id => Err(self.locked(&queue.name)),
            _ => Ok(()),
        }
    }

    /// Look a queue up for an operation from `conn_id` (404 / 405).
    pub fn queue(&self, name: &str, conn_id: u64) -> Result<Arc<Queue>, AmqpError> {
        let q = self.find_queue(name).ok_or_else(|| self.no_queue(name))?;
        self.check_owner(&q, conn_id)?;
        Ok(q)
    }

    /// Remember that an exchange or queue here deduplicates or hashes on
    /// a property (see `has_dedup`).
    pub(crate) fn note_dedup(&self, dedup: bool) {
        if dedup {
            self.has_dedup
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// The properties to carry to enqueue when this vhost deduplicates.
    pub fn dedup_props(&self, props: Option<&AMQPProperties>) -> Option<Box<AMQPProperties>> {
        match self.has_dedup.load(std::sync::atomic::Ordering::Relaxed) {
            true => props.map(|p| Box::new(p.clone())),
            false => None,
        }
    }

    /// The deduplication cache of `exchange`, if it has one.
    pub fn exchange_dedup(&self, exchange: &str) -> Option<Arc<crate::broker::dedup::Cache>> {
        self.names.read().exchanges.get(exchange)?.dedup.clone()
    }

    /// Whether publishers must decode message_id, correlation_id and
    /// timestamp: something here deduplicates or hashes on them.
    pub fn reads_ids(&self) -> bool {
        self.has_dedup.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether clients may publish delayed messages to `exchange`: an
    /// x-delayed-message exchange, not internal (publishing to an internal
    /// one fails at routing, 403).
    pub fn is_delayed_exchange(&self, exchange: &str) -> bool {
        self.names
            .read()
            .exchanges
            .get(exchange)
            .is_some_and(|x| x.delayed && !x.internal)
    }

    /// Hold `message` if `exchange` is an x-delayed-message exchange (the
    /// caller found a positive x-delay); None when it is not one.
    pub fn hold_delayed(
        &self,
        exchange: &str,
        message: Arc<super::message::Message>,
        delay_ms: u64,
    ) -> Option<super::queue::Stored> {
        let durable = {
            let names = self.names.read();
            let x = names.exchanges.get(exchange).filter(|x| x.delayed)?;
            x.durable
        };
        let due = super::message::now_ms().saturating_add(delay_ms);
        Some(self.delayed.hold(message, due, durable))
    }

    /// Let every queue hand out what it can (after the store recovered from
    /// a full disk). The queues are collected first so that the topology
    /// lock is not held while each dispatches.
    pub fn dispatch_all(&self) {
        let queues: Vec<Arc<Queue>> = self.names.read().queues.values().cloned().collect();
        for q in queues {
            q.dispatch();
        }
    }

    /// Number of queues.
    pub fn queue_count(&self) -> usize {
        self.names.read().queues.len()
    }

    /// The queue registered under `name`, if any (no ownership check).
    pub fn find_queue(&self, name: &str) -> Option<Arc<Queue>> {
        self.names.read().queues.get(name).cloned()
    }

    /// queue.delete; a missing queue deletes nothing and is not an error.
    /// The ready-message count and the sync round that makes the delete
    /// durable (0: none).
    pub fn delete_queue(
        &self,
        name: &str,
        if_unused: bool,
        if_empty: bool,
        conn_id: u64,
    ) -> Result<(u32, u64), AmqpError> {
        let mut topo = self.topology.lock();
        let Some(q) = topo.queue(name) else {
            return Ok((0, 0));
        };
        self.check_owner(&q, conn_id)?;
        match q.mark_deleted_if(if_unused, if_empty) {
            Ok(n) => {
                topo.unregister_queue(name);
                Ok((n, self.commit_or_log(&mut topo)))
            }
            Err(DeleteRefused::InUse) => Err(AmqpError::precondition_failed(format!(
                "queue '{name}' in vhost '{}' in use",
                self.name
            ))),
            Err(DeleteRefused::NotEmpty) => Err(AmqpError::precondition_failed(format!(
                "queue '{name}' in vhost '{}' not empty",
                self.name
            ))),
        }
    }

    /// Auto-delete: delete `queue` if it is still the one registered under
    /// its name and has no consumers (one may have arrived since the last
    /// one left: then keep it).
    pub fn delete_unused_queue(&self, queue: &Arc<Queue>) {
        self.delete_registered_if(queue, || queue.mark_deleted_if(true, false).is_ok());
    }

    /// x-expires: delete `queue` if it is still the one registered under its
    /// name and has gone unused for its x-expires.
    pub fn expire_queue(&self, queue: &Arc<Queue>) {
        self.delete_registered_if(queue, || queue.delete_if_expired());
    }

    /// Under the topology lock: if `queue` is still the one registered
    /// under its name and `delete` (which checks and marks it deleted under
    /// the queue's lock) did delete it, unregister it.
    fn delete_registered_if(&self, queue: &Arc<Queue>, delete: impl FnOnce() -> bool) {
        let mut topo = self.topology.lock();
        let registered = topo
            .queue(&queue.name)
            .is_some_and(|q| Arc::ptr_eq(&q, queue));
        if registered && delete() {
            tracing::debug!(queue = %queue.name, "unused queue deleted");
            topo.unregister_queue(&queue.name);
            self.commit_or_log(&mut topo);
        }
    }

    /// Delete every exclusive queue owned by a closing connection.
    pub fn delete_exclusive_queues(&self, conn_id: u64) {
        let mut topo = self.topology.lock();
        let names = topo.exclusive_queues(conn_id);
        if names.is_empty() {
            return;
        }
        for n in names {
            topo.remove_queue(&n);
        }
        // Durable auto-delete exchanges may have gone with their bindings.
        self.commit_or_log(&mut topo);
    }
}
