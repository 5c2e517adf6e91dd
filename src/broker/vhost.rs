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
//!   queue lock never waits on a connection.
//! - Changes to durable entities are appended to the metadata log's
//!   buffer while `topology` is held (so they land in order): a memory
//!   copy, no file I/O. The sync thread writes and fsyncs them; the reply
//!   to the client waits for that round (the ticket these methods return),
//!   not the lock.

use std::sync::Arc;

use super::IndexSet;
use amq_protocol::protocol::{exchange, queue};
use amq_protocol::types::{AMQPValue, FieldTable};
use parking_lot::{Mutex, RwLock};
use rand::Rng;

use super::arguments::{self, as_int, show, type_name, validate_queue_arguments};
use super::chores::{Chore, ChoreSender};
use super::delayed::Delayed;
use super::exchange::{Binding, Destination, Exchange, ExchangeKind, DELAYED_TYPE};
use super::queue::{DeleteRefused, FlowLimits, Queue};
use super::queue::{QueueContext, QueueDef};
use super::queue_policy::QueuePolicy;
use super::ready::ReadyMessages;
use super::reply_to::{ReplyTargets, REPLY_QUEUE};
use crate::protocol::AmqpError;
use crate::store::{QueueLog, Store, VhostDefinitions};

mod durable;
mod housekeeping;
#[cfg(test)]
mod tests;
mod topology;

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
    /// Its end, until the task starts.
    chore_rx: parking_lot::Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<Chore>>>,
}

/// The queue arguments RabbitMQ compares on redeclare.
const COMPARED_QUEUE_ARGS: &[&str] = &[
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-expires",
    "x-max-length",
    "x-max-length-bytes",
    "x-max-in-memory-length",
    "x-max-in-memory-bytes",
    "x-max-priority",
    "x-message-ttl",
    "x-overflow",
    "x-queue-mode",
    "x-queue-type",
    "x-queue-master-locator",
    "x-single-active-consumer",
    "x-delivery-limit",
    "x-quorum-initial-group-size",
];

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
            chore_rx: parking_lot::Mutex::new(Some(chore_rx)),
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

    /// exchange.declare; the sync round that makes it durable (0: none).
    pub fn declare_exchange(&self, d: &exchange::Declare) -> Result<u64, AmqpError> {
        let name = d.exchange.as_str();
        if name.is_empty() {
            return Err(Self::default_exchange_refused());
        }
        let mut topo = self.topology.lock();
        if d.passive {
            return match topo.has_exchange(name) {
                true => Ok(self.store.metadata.last_ticket()),
                false => Err(self.no_exchange(name)),
            };
        }
        if d.kind.as_str() == DELAYED_TYPE
            && ExchangeKind::of_declared(DELAYED_TYPE, &d.arguments).is_none()
        {
            // The delayed-message plugin's text.
            return Err(AmqpError::precondition_failed(
                "Invalid argument, 'x-delayed-type' must be an existing exchange type",
            ));
        }
        let Some((kind, delayed)) = ExchangeKind::of_declared(d.kind.as_str(), &d.arguments) else {
            let what = if d.kind.as_str().is_empty() {
                "invalid"
            } else {
                "unknown"
            };
            return Err(AmqpError::command_invalid(format!(
                "{what} exchange type '{}'",
                d.kind
            )));
        };
        if let Some(ae) = d.arguments.inner().get("alternate-exchange") {
            if arguments::as_text(ae).is_none() {
                return Err(AmqpError::precondition_failed(format!(
                    "invalid type '{}' for arg 'alternate-exchange' in exchange '{name}' in vhost '{}'",
                    type_name(ae),
                    self.name
                )));
            }
        }
        if let Some(x) = topo.exchange(name) {
            let ae = |args: &FieldTable| args.inner().get("alternate-exchange").cloned();
            let diff = |arg: &str, received: String, current: String| {
                AmqpError::precondition_failed(format!(
                    "inequivalent arg '{arg}' for exchange '{name}' in vhost '{}': received '{received}' but current is '{current}'",
                    self.name
                ))
            };
            if x.kind != kind || x.delayed != delayed {
                return Err(diff("type", d.kind.to_string(), x.type_name().into()));
            }
            if x.durable != d.durable {
                return Err(diff(
                    "durable",
                    d.durable.to_string(),
                    x.durable.to_string(),
                ));
            }
            if x.auto_delete != d.auto_delete {
                return Err(diff(
                    "auto_delete",
                    d.auto_delete.to_string(),
                    x.auto_delete.to_string(),
                ));
            }
            if x.internal != d.internal {
                return Err(diff(
                    "internal",
                    d.internal.to_string(),
                    x.internal.to_string(),
                ));
            }
            if ae(&x.arguments) != ae(&d.arguments) {
                return Err(diff(
                    "alternate-exchange",
                    describe_arg(ae(&d.arguments).as_ref()),
                    describe_arg(ae(&x.arguments).as_ref()),
                ));
            }
            return Ok(self.store.metadata.last_ticket());
        }
        if name.starts_with("amq.") {
            return Err(AmqpError::access_refused(format!(
                "exchange name '{name}' contains reserved prefix 'amq.*'"
            )));
        }
        let mut exchange = Exchange::new(
            name,
            kind,
            d.durable,
            d.auto_delete,
            d.internal,
            d.arguments.clone(),
        );
        exchange.delayed = delayed;
        topo.insert_exchange(exchange);
        // Not stored means not declared.
        self.commit(&mut topo)
            .inspect_err(|_| topo.forget_exchange(name))
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

    /// queue.declare.
    pub fn declare_queue(&self, d: &queue::Declare, conn_id: u64) -> Result<QueueInfo, AmqpError> {
        let requested = d.queue.as_str();
        if d.passive && requested == REPLY_QUEUE {
            // As RabbitMQ: the pseudo-queue exists, with one consumer.
            return Ok(QueueInfo {
                name: requested.to_string(),
                message_count: 0,
                consumer_count: 1,
                ticket: 0,
            });
        }
        if d.passive {
            let queue = self.queue(requested, conn_id)?;
            // A declare, passive too, counts as a use for x-expires.
            queue.touch();
            return Ok(QueueInfo {
                name: requested.to_string(),
                message_count: queue.message_count(),
                consumer_count: queue.consumer_count(),
                ticket: self.store.metadata.last_ticket(),
            });
        }
        if requested.starts_with("amq.") {
            return Err(AmqpError::access_refused(format!(
                "queue name '{requested}' contains reserved prefix 'amq.*'"
            )));
        }
        let mut topo = self.topology.lock();
        let durable = d.durable && !d.exclusive;
        let name = if requested.is_empty() {
            loop {
                let candidate = generated_name("amq.gen-");
                if !topo.has_queue(&candidate) {
                    break candidate;
                }
            }
        } else {
            requested.to_string()
        };
        validate_queue_arguments(&d.arguments, &name, &self.name)?;
        arguments::check_queue_type(
            &d.arguments,
            d.durable,
            d.exclusive,
            d.auto_delete,
            &name,
            &self.name,
        )?;
        if let Some(q) = topo.queue(&name) {
            self.check_owner(&q, conn_id)?;
            if q.exclusive_owner.is_some() != d.exclusive {
                return Err(self.locked(&name));
            }
            self.check_queue_equivalent(&q, d)?;
            q.touch();
            return Ok(QueueInfo {
                name,
                message_count: q.message_count(),
                consumer_count: q.consumer_count(),
                ticket: self.store.metadata.last_ticket(),
            });
        }
        let (disk_dir, log) = match durable {
            true => {
                let dir = self.store.new_queue_dir();
                let path = self.store.queue_path(&dir);
                let log = QueueLog::create(&path, true, self.store.segment_bytes).map_err(|e| {
                    tracing::error!(queue = %name, path = %path.display(), error = %e, "cannot create queue directory");
                    AmqpError::new(
                        crate::protocol::ErrorKind::InternalError,
                        format!("cannot create the store of queue '{name}': {e}"),
                    )
                })?;
                (Some(dir), Some((log, Default::default())))
            }
            false => (None, None),
        };
        let def = QueueDef {
            name: &name,
            vhost: &self.name,
            disk_dir,
            exclusive_owner: d.exclusive.then_some(conn_id),
            auto_delete: d.auto_delete,
            arguments: d.arguments.clone(),
        };
        let max_priority = QueuePolicy::from_arguments(&d.arguments).max_priority;
        let ready = ReadyMessages::new(self.store.clone(), log, max_priority).map_err(|e| {
            tracing::error!(queue = %name, error = %e, "cannot open the store of a queue");
            AmqpError::new(
                crate::protocol::ErrorKind::InternalError,
                format!("cannot create the store of queue '{name}': {e}"),
            )
        })?;
        let queue = Queue::new(def, ready, self.queue_context());
        let queue = Arc::new(queue);
        queue.touch();
        topo.insert_queue(queue);
        // Not stored means not declared: a queue missing from the
        // definitions would lose its messages at the next start.
        let ticket = self.commit(&mut topo).inspect_err(|_| {
            if let Some(q) = topo.unregister_queue(&name) {
                q.mark_deleted();
            }
            topo.journal.clear();
        })?;
        Ok(QueueInfo {
            name,
            message_count: 0,
            consumer_count: 0,
            ticket,
        })
    }

    fn check_queue_equivalent(&self, q: &Queue, d: &queue::Declare) -> Result<(), AmqpError> {
        let diff = |arg: &str, received: String, current: String| {
            AmqpError::precondition_failed(format!(
                "inequivalent arg '{arg}' for queue '{}' in vhost '{}': received {received} but current is {current}",
                q.name, self.name
            ))
        };
        if q.exclusive_owner.is_none() && q.durable != d.durable {
            return Err(diff(
                "durable",
                format!("'{}'", d.durable),
                format!("'{}'", q.durable),
            ));
        }
        if q.auto_delete != d.auto_delete {
            return Err(diff(
                "auto_delete",
                format!("'{}'", d.auto_delete),
                format!("'{}'", q.auto_delete),
            ));
        }
        for key in COMPARED_QUEUE_ARGS {
            let have = q.arguments.inner().get(*key);
            let want = d.arguments.inner().get(*key);
            if !args_equal(have, want) {
                let (received, current) = match (want, have) {
                    (Some(w), Some(h)) => (format!("'{}'", show(w)), format!("'{}'", show(h))),
                    _ => (describe_typed(want), describe_typed(have)),
                };
                return Err(diff(key, received, current));
            }
        }
        Ok(())
    }

    /// Look a queue up for an operation from `conn_id` (404 / 405).
    pub fn queue(&self, name: &str, conn_id: u64) -> Result<Arc<Queue>, AmqpError> {
        let q = self.find_queue(name).ok_or_else(|| self.no_queue(name))?;
        self.check_owner(&q, conn_id)?;
        Ok(q)
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

    /// Route a message published to `exchange` with `routing_keys` (the
    /// routing key plus any CC/BCC keys); appends each target queue once.
    pub fn route(
        &self,
        exchange: &str,
        routing_keys: &[&str],
        headers: Option<&FieldTable>,
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
        let mut visited: IndexSet<&str> = super::scratch_set();
        let mut pending = vec![first];
        let mut queues: IndexSet<Arc<str>> = super::scratch_set();
        let mut dests = super::scratch_set();
        visited.insert(exchange);
        while let Some(x) = pending.pop() {
            dests.clear();
            x.route(routing_keys, headers, &mut dests);
            if dests.is_empty() {
                if let Some(ae) = x.alternate_exchange.as_deref() {
                    if let Some(alt) = names.exchanges.get(ae) {
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
        }
        out.extend(
            queues
                .iter()
                .filter_map(|n| names.queues.get(&**n).cloned()),
        );
        Ok(())
    }
}

/// A server-generated name: the prefix and 22 random URL-safe base64
/// characters, as RabbitMQ makes them.
pub fn generated_name(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut rng = rand::thread_rng();
    let suffix: String = (0..22)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect();
    format!("{prefix}{suffix}")
}

fn args_equal(a: Option<&AMQPValue>, b: Option<&AMQPValue>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(x), Some(y)) => match (as_int(x), as_int(y)) {
            (Some(i), Some(j)) => i == j,
            _ => type_name(x) == type_name(y) && show(x) == show(y),
        },
        _ => false,
    }
}

fn describe_arg(v: Option<&AMQPValue>) -> String {
    v.map_or_else(|| "none".to_string(), show)
}

fn describe_typed(v: Option<&AMQPValue>) -> String {
    match v {
        None => "none".into(),
        Some(v) => format!("the value '{}' of type '{}'", show(v), type_name(v)),
    }
}
