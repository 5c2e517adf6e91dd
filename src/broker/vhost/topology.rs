//! A vhost's exchanges, queues and bindings, with the indexes that keep
//! every change proportional to what it touches: which exchanges bind to
//! each destination (so deleting a queue visits only its own bindings,
//! not every exchange) and which exclusive queues each connection owns (so
//! a closing connection does not scan every queue).
//!
//! Publishers read only [`Names`] (behind its own lock, held by writers for
//! one map insert or remove) and each exchange's routing table (behind the
//! exchange's lock), never this struct, which the vhost keeps behind the
//! mutex that serializes topology writers. So a writer's work (a
//! connection's 5,000 exclusive queues, an exchange's 100,000 bindings)
//! stalls other writers, not publishing.
//!
//! All changes to bindings go through [`Topology::bind`],
//! [`Topology::unbind`], [`Topology::remove_exchange`] and
//! [`Topology::remove_destination`], which keep the indexes true. Those
//! and [`Topology::insert_exchange`], [`Topology::insert_queue`] and
//! [`Topology::unregister_queue`] also note each change to a durable
//! object in `journal`, which the vhost hands to the metadata log before
//! it lets go of the lock (so the log has the changes in their order).

use std::sync::{mpsc, Arc};

use ahash::AHashMap as HashMap;

use parking_lot::RwLock;

use crate::broker::exchange::{Binding, Destination, Exchange};
use crate::broker::queue::Queue;
use crate::broker::IndexSet;
use crate::protocol::AmqpError;
use crate::store::definitions::{BindingDef, ExchangeDef, QueueDef};
use crate::store::metadata::MetaOp;

/// What publishing reads: the vhost's exchanges and queues by name.
#[derive(Debug, Default)]
pub(super) struct Names {
    pub exchanges: HashMap<String, Arc<Exchange>>,
    pub queues: HashMap<String, Arc<Queue>>,
    /// Queues added and removed since start (restored ones not counted),
    /// for the metrics.
    pub queues_created: u64,
    pub queues_deleted: u64,
}

/// Stored bindings handed to the table-filling thread at a time.
const RESTORE_BATCH: usize = 4096;

#[derive(Debug)]
pub(super) struct Topology {
    /// Shared with the vhost's publishers; written only here.
    names: Arc<RwLock<Names>>,
    /// For each destination, the exchanges with bindings to it.
    sources: HashMap<Destination, IndexSet<Arc<str>>>,
    /// For each connection, the exclusive queues it declared.
    exclusive: HashMap<u64, IndexSet<String>>,
    /// The vhost's name (for the journal's entries).
    pub vhost: String,
    /// Changes to durable objects not yet handed to the metadata log.
    pub journal: Vec<MetaOp>,
    /// Rebuilding from the metadata at start: nothing is journaled.
    pub restoring: bool,
}

impl Topology {
    /// An empty topology of vhost `vhost`, publishing into `names`.
    pub fn new(vhost: &str, names: Arc<RwLock<Names>>) -> Self {
        Topology {
            names,
            sources: HashMap::default(),
            exclusive: HashMap::default(),
            vhost: vhost.to_string(),
            journal: Vec::new(),
            restoring: false,
        }
    }

    /// The exchange named `name`.
    pub fn exchange(&self, name: &str) -> Option<Arc<Exchange>> {
        self.names.read().exchanges.get(name).cloned()
    }

    /// The queue named `name`.
    pub fn queue(&self, name: &str) -> Option<Arc<Queue>> {
        self.names.read().queues.get(name).cloned()
    }

    pub fn has_exchange(&self, name: &str) -> bool {
        self.names.read().exchanges.contains_key(name)
    }

    pub fn has_queue(&self, name: &str) -> bool {
        self.names.read().queues.contains_key(name)
    }

    /// Add a binding from exchange `source`; Ok(false) if an identical one
    /// exists, Ok(true) if added; None if there is no such exchange.
    pub fn bind(&mut self, source: &str, binding: Binding) -> Option<Result<bool, AmqpError>> {
        let durable = !self.restoring && self.is_durable_binding(source, &binding.dest);
        let def = durable.then(|| binding_def(source, &binding));
        let x = self.exchange(source)?;
        let dest = binding.dest.clone();
        let added = x.bind(binding);
        if let Ok(true) = added {
            let name = x.name.clone();
            self.sources.entry(dest).or_default().insert(name);
            if let Some(def) = def {
                let vhost = self.vhost.clone();
                self.journal.push(MetaOp::PutBinding { vhost, def });
            }
        }
        Some(added)
    }

    /// Add stored bindings at start (nothing is journaled); one whose
    /// source or destination is gone is dropped. Each exchange's table is
    /// filled on a helper thread while this one resolves the ends and
    /// indexes destinations: the two halves of the work.
    pub fn restore_bindings(&mut self, defs: Vec<BindingDef>) {
        type Batch = Vec<(Arc<Exchange>, Vec<Binding>)>;
        let (tx, rx) = mpsc::sync_channel::<Batch>(8);
        std::thread::scope(|scope| {
            scope.spawn(move || {
                for (x, bindings) in rx.into_iter().flatten() {
                    for b in bindings {
                        // Stored bindings were checked when made.
                        let _ = x.bind(b);
                    }
                }
            });
            let mut batch: Batch = Vec::new();
            let mut count = 0;
            for def in defs {
                let Some((x, binding)) = self.stored_binding(def) else {
                    continue;
                };
                let dests = self.sources.entry(binding.dest.clone()).or_default();
                dests.insert(x.name.clone());
                match batch.last_mut() {
                    Some((last, list)) if Arc::ptr_eq(last, &x) => list.push(binding),
                    _ => batch.push((x, vec![binding])),
                }
                count += 1;
                if count % RESTORE_BATCH == 0 && tx.send(std::mem::take(&mut batch)).is_err() {
                    return;
                }
            }
            let _ = tx.send(batch);
            drop(tx);
        });
    }

    /// A stored binding's source exchange and the binding, if both ends
    /// exist.
    fn stored_binding(&self, def: BindingDef) -> Option<(Arc<Exchange>, Binding)> {
        let source = self.exchange(&def.source)?;
        let dest = match def.to_exchange {
            true => Destination::Exchange(self.exchange(&def.destination)?.name.clone()),
            false => self.queue_destination(&def.destination)?,
        };
        let binding = Binding {
            dest,
            routing_key: def.routing_key,
            arguments: def.arguments,
        };
        Some((source, binding))
    }

    /// A binding destination for queue `name` that shares the queue's own
    /// name (bindings are many, names few); None if there is no such queue.
    pub fn queue_destination(&self, name: &str) -> Option<Destination> {
        self.queue(name).map(|q| Destination::Queue(q.name.clone()))
    }

    /// Register a declared exchange.
    pub fn insert_exchange(&mut self, x: Exchange) {
        if x.durable && !self.restoring {
            self.journal.push(MetaOp::PutExchange {
                vhost: self.vhost.clone(),
                def: ExchangeDef {
                    name: x.name.to_string(),
                    kind: x.type_name().to_string(),
                    auto_delete: x.auto_delete,
                    internal: x.internal,
                    arguments: x.arguments.clone(),
                },
            });
        }
        self.names
            .write()
            .exchanges
            .insert(x.name.to_string(), Arc::new(x));
    }

    /// Drop a just-declared exchange that could not be stored (it has no
    /// bindings yet, and nothing is journaled).
    pub fn forget_exchange(&mut self, name: &str) {
        self.names.write().exchanges.remove(name);
    }

    /// Whether a binding from `source` to `dest` is stored: both ends are
    /// durable.
    pub fn is_durable_binding(&self, source: &str, dest: &Destination) -> bool {
        let names = self.names.read();
        let durable_exchange = |name: &str| names.exchanges.get(name).is_some_and(|x| x.durable);
        durable_exchange(source)
            && match dest {
                Destination::Queue(q) => {
                    names.queues.get(&**q).is_some_and(|q| q.disk_dir.is_some())
                }
                Destination::Exchange(x) => durable_exchange(x),
            }
    }

    /// Remove a binding from exchange `source`; false if there was none.
    pub fn unbind(&mut self, source: &str, binding: &Binding) -> bool {
        let durable = self.is_durable_binding(source, &binding.dest);
        let Some(x) = self.exchange(source) else {
            return false;
        };
        if !x.unbind(binding) {
            return false;
        }
        if !x.binds_to(&binding.dest) {
            self.forget_source(&binding.dest, source);
        }
        if durable {
            let def = binding_def(source, binding);
            let vhost = self.vhost.clone();
            self.journal.push(MetaOp::DeleteBinding { vhost, def });
        }
        true
    }

    fn forget_source(&mut self, dest: &Destination, source: &str) {
        if let Some(set) = self.sources.get_mut(dest) {
            set.swap_remove(source);
            if set.is_empty() {
                self.sources.remove(dest);
            }
        }
    }

    /// Remove an exchange, its bindings, and every binding to it (then
    /// auto-delete exchanges left unbound).
    pub fn remove_exchange(&mut self, name: &str) -> Option<Arc<Exchange>> {
        let x = self.names.write().exchanges.remove(name)?;
        if x.durable {
            self.journal.push(MetaOp::DeleteExchange {
                vhost: self.vhost.clone(),
                name: name.to_string(),
            });
        }
        for d in &x.destinations() {
            self.forget_source(d, name);
        }
        self.remove_destination(&Destination::Exchange(x.name.clone()));
        Some(x)
    }

    /// Remove every binding to `dest`, then auto-delete exchanges left
    /// unbound.
    pub fn remove_destination(&mut self, dest: &Destination) {
        let Some(sources) = self.sources.remove(dest) else {
            return;
        };
        let mut emptied = Vec::new();
        for source in sources {
            if let Some(x) = self.exchange(&source) {
                if x.unbind_destination(dest) > 0 && x.auto_delete && !x.has_bindings() {
                    emptied.push(source);
                }
            }
        }
        for name in emptied {
            self.remove_exchange(&name);
        }
    }

    /// Register a queue (an exclusive one under its owner too).
    pub fn insert_queue(&mut self, queue: Arc<Queue>) {
        if let Some(owner) = queue.exclusive_owner {
            let names = self.exclusive.entry(owner).or_default();
            names.insert(queue.name.to_string());
        }
        if let Some(dir) = queue.disk_dir.as_ref().filter(|_| !self.restoring) {
            self.journal.push(MetaOp::PutQueue {
                vhost: self.vhost.clone(),
                def: QueueDef {
                    name: queue.name.to_string(),
                    dir: dir.clone(),
                    auto_delete: queue.auto_delete,
                    arguments: queue.arguments.clone(),
                },
            });
        }
        let mut names = self.names.write();
        names.queues_created += u64::from(!self.restoring);
        names.queues.insert(queue.name.to_string(), queue);
    }

    /// Drop a (deleted) queue from the map and every binding to it.
    pub fn unregister_queue(&mut self, name: &str) -> Option<Arc<Queue>> {
        let q = {
            let mut names = self.names.write();
            let q = names.queues.remove(name)?;
            names.queues_deleted += 1;
            q
        };
        if q.disk_dir.is_some() {
            self.journal.push(MetaOp::DeleteQueue {
                vhost: self.vhost.clone(),
                name: name.to_string(),
            });
        }
        if let Some(owner) = q.exclusive_owner {
            if let Some(names) = self.exclusive.get_mut(&owner) {
                names.swap_remove(name);
                if names.is_empty() {
                    self.exclusive.remove(&owner);
                }
            }
        }
        self.remove_destination(&Destination::Queue(q.name.clone()));
        Some(q)
    }

    /// Mark a queue deleted and unregister it; its ready-message count.
    pub fn remove_queue(&mut self, name: &str) -> u32 {
        let Some(q) = self.queue(name) else {
            return 0;
        };
        let n = q.mark_deleted();
        self.unregister_queue(name);
        n
    }

    /// The names of the exclusive queues `conn_id` owns.
    pub fn exclusive_queues(&self, conn_id: u64) -> Vec<String> {
        self.exclusive
            .get(&conn_id)
            .map(|names| names.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// How a binding is stored.
fn binding_def(source: &str, binding: &Binding) -> BindingDef {
    let (destination, to_exchange) = match &binding.dest {
        Destination::Queue(q) => (q, false),
        Destination::Exchange(e) => (e, true),
    };
    BindingDef {
        source: source.to_string(),
        destination: destination.to_string(),
        to_exchange,
        routing_key: binding.routing_key.clone(),
        arguments: binding.arguments.clone(),
    }
}
