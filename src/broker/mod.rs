//! The broker's model: vhosts with their exchanges, queues and bindings,
//! messages, consumers and routing. Nothing here does I/O; connection tasks
//! call in synchronously and queues talk back through `ConnEvent`s.

pub mod arguments;
pub mod chores;
pub mod connections;
pub mod consumer;
pub mod consumer_set;
pub mod dead_letter;
pub mod dedup;
pub mod delayed;
pub mod exchange;
pub mod headers;
mod limits;
pub mod message;
pub mod policy;
pub mod queue;
pub mod queue_policy;
pub mod ready;
pub mod reply_to;
pub mod stream;
pub mod topic;
pub mod unacked_view;
pub mod vhost;
mod vhosts;
pub mod wake;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::alarms::monitor::{Limits, Monitor};
use crate::alarms::Alarms;
use crate::config::Config;
use crate::store::Store;
pub use vhost::VHost;

/// An insertion-ordered set with aHash (fast, and randomly keyed so names
/// chosen by clients cannot force collisions).
pub type IndexSet<T> = indexmap::IndexSet<T, ahash::RandomState>;

thread_local! {
    /// This thread's randomly keyed hasher state, copied into the
    /// short-lived sets each publish builds: making a fresh one per set
    /// mixes new keys every time (about 1 % of a publish's CPU).
    static HASHER: ahash::RandomState = ahash::RandomState::new();
}

/// A copy of this thread's hasher state (still random per process and
/// thread, so clients cannot choose colliding names).
pub fn hasher() -> ahash::RandomState {
    HASHER.with(|h| h.clone())
}

/// An empty set for one publish's routing.
pub fn scratch_set<T>() -> IndexSet<T> {
    IndexSet::with_hasher(hasher())
}

/// Shared broker state: a cheap handle cloned into every connection task.
#[derive(Debug)]
pub struct Broker {
    /// The configuration it runs with.
    pub config: Config,
    vhosts: parking_lot::RwLock<HashMap<String, Arc<VHost>>>,
    /// Users, vhosts, permissions and policies at run time.
    pub access: crate::auth::access::Access,
    /// Serializes vhost and policy changes (see `vhosts.rs`).
    admin: parking_lot::Mutex<()>,
    next_connection_id: AtomicU64,
    /// The data directory.
    pub store: Arc<Store>,
    /// Memory and disk alarms, watched by connections that publish.
    pub alarms: Arc<Alarms>,
    /// Samples memory and disk for the alarms until the broker is dropped.
    _monitor: Monitor,
    /// Open connections, for the management API and metrics.
    pub connections: connections::Connections,
    /// When the broker started.
    pub started: std::time::Instant,
    /// This node's name (config `node_name`, or `warren@` + host name).
    pub node_name: String,
    /// The dynamic shovels running.
    pub shovels: crate::shovel::Shovels,
}

impl Broker {
    /// Open the data directory and build the vhosts named in the config,
    /// with their durable topology and messages.
    pub fn open(config: Config) -> Result<Self, String> {
        let started = std::time::Instant::now();
        let store = Arc::new(Store::open(&config)?);
        let mut stored = store.take_recovered();
        let access = recover_access(&config, &store, std::mem::take(&mut stored.access))?;
        let vhost_names: Vec<String> = access.defs().vhosts.into_keys().collect();
        for name in stored.vhosts.keys() {
            if !vhost_names.contains(name) {
                tracing::warn!(vhost = %name, "the data directory holds a vhost that is not configured; its queues are kept on disk but not served");
            }
        }
        let flow = queue::FlowLimits {
            high: config.flow_high_watermark,
            low: config.flow_low_watermark,
        };
        let mut vhosts = HashMap::new();
        for name in &vhost_names {
            let vhost = Arc::new(VHost::new(
                name,
                flow,
                store.clone(),
                stored.vhosts.remove(name),
            )?);
            vhost.set_policies(&access.policies_of(name));
            vhost.start_housekeeping();
            vhosts.insert(name.clone(), vhost);
        }
        tracing::info!(
            data_dir = %config.data_dir.display(),
            queues = vhosts.values().map(|v| v.queue_count()).sum::<usize>(),
            ms = started.elapsed().as_millis() as u64,
            "data directory opened"
        );
        let alarms = Arc::new(Alarms::default());
        let limits = Limits {
            memory: config.memory_high_watermark.clone(),
            disk_free_bytes: config.disk_free_limit.bytes()?,
            data_dir: config.data_dir.clone(),
            interval: std::time::Duration::from_millis(config.alarm_check_interval_ms),
        };
        let monitor = Monitor::start(alarms.clone(), limits)
            .map_err(|e| format!("cannot start the resource monitor: {e}"))?;
        let node_name = match config.node_name.is_empty() {
            true => format!("warren@{}", host_name()),
            false => config.node_name.clone(),
        };
        let broker = Broker {
            vhosts: parking_lot::RwLock::new(vhosts),
            access,
            admin: parking_lot::Mutex::new(()),
            connections: connections::Connections::default(),
            started,
            node_name,
            config,
            next_connection_id: AtomicU64::new(1),
            store,
            alarms,
            _monitor: monitor,
            shovels: Default::default(),
        };
        for vhost in broker.access.defs().vhost_limits.keys() {
            broker.apply_limits(crate::store::access::LimitScope::Vhost, vhost);
        }
        Ok(broker)
    }

    /// The cluster's name: the `cluster_name` global parameter, else the
    /// node's name (as RabbitMQ).
    pub fn cluster_name(&self) -> String {
        match self.access.global_parameter("cluster_name") {
            Some(serde_json::Value::String(name)) => name,
            _ => self.node_name.clone(),
        }
    }

    /// Every vhost, by name.
    pub fn vhosts(&self) -> Vec<Arc<VHost>> {
        let mut all: Vec<Arc<VHost>> = self.vhosts.read().values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// Look a vhost up by name.
    pub fn vhost(&self, name: &str) -> Option<Arc<VHost>> {
        self.vhosts.read().get(name).cloned()
    }

    /// Shut the store down: a last sync round, then the records waiting
    /// for it (moved dead letters, routed delayed messages) are settled, so
    /// a clean stop leaves no duplicates behind.
    pub fn close(&self) {
        self.store.syncer.stop();
        if !self.store.syncer.failed() {
            for v in self.vhosts() {
                v.settle_pending(u64::MAX);
            }
        }
        // Unlocks the data directory: last.
        self.store.close();
    }

    /// A fresh connection id.
    pub fn next_connection_id(&self) -> u64 {
        self.next_connection_id.fetch_add(1, Ordering::Relaxed)
    }
}

/// The access model from the metadata log; a fresh data directory (no
/// access records yet) is seeded from the config's users and vhosts, as
/// RabbitMQ creates its default user on a new node.
fn recover_access(
    config: &Config,
    store: &Arc<Store>,
    mut defs: crate::store::access::AccessDefs,
) -> Result<crate::auth::access::Access, String> {
    let mut ops = if defs.seeded {
        Vec::new()
    } else {
        crate::auth::access::seed(config)
    };
    let seeding = !ops.is_empty();
    ops.extend(crate::auth::access::cluster_id(&defs));
    if !ops.is_empty() {
        store
            .append_metadata(&ops)
            .map_err(|e| format!("cannot store the configured users and vhosts: {e}"))?;
        for op in ops {
            let _ = crate::store::metadata::apply_access(&mut defs, op);
        }
    }
    if seeding {
        tracing::info!(
            users = defs.users.len(),
            vhosts = defs.vhosts.len(),
            "seeded users and vhosts from the config"
        );
    }
    let loopback = config
        .users
        .iter()
        .filter(|u| u.loopback_only)
        .map(|u| u.name.clone())
        .collect();
    Ok(crate::auth::access::Access::new(
        defs,
        loopback,
        store.clone(),
    ))
}

/// The machine's host name (for the node name), or "localhost".
fn host_name() -> String {
    rustix::system::uname()
        .nodename()
        .to_str()
        .ok()
        .filter(|n| !n.is_empty())
        .map(|n| n.split('.').next().unwrap_or(n).to_string())
        .unwrap_or_else(|| "localhost".to_string())
}
