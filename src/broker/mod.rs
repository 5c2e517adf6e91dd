//! The broker's model: vhosts with their exchanges, queues and bindings,
//! messages, consumers and routing. Nothing here does I/O; connection tasks
//! call in synchronously and queues talk back through `ConnEvent`s.

pub mod arguments;
pub mod consumer;
pub mod exchange;
pub mod headers;
pub mod message;
pub mod queue;
pub mod ready;
pub mod topic;
pub mod vhost;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::config::Config;
pub use vhost::VHost;

/// An insertion-ordered set with aHash (fast, and randomly keyed so names
/// chosen by clients cannot force collisions).
pub type IndexSet<T> = indexmap::IndexSet<T, ahash::RandomState>;

/// Shared broker state: a cheap handle cloned into every connection task.
#[derive(Debug)]
pub struct Broker {
    /// The configuration it runs with.
    pub config: Config,
    vhosts: HashMap<String, Arc<VHost>>,
    next_connection_id: AtomicU64,
}

impl Broker {
    /// A broker with the vhosts named in the config.
    pub fn new(config: Config) -> Self {
        let vhosts = config
            .vhosts
            .iter()
            .map(|name| {
                let flow = queue::FlowLimits {
                    high: config.flow_high_watermark,
                    low: config.flow_low_watermark,
                };
                (name.clone(), Arc::new(VHost::new(name, flow)))
            })
            .collect();
        Broker {
            config,
            vhosts,
            next_connection_id: AtomicU64::new(1),
        }
    }

    /// Look a vhost up by name.
    pub fn vhost(&self, name: &str) -> Option<Arc<VHost>> {
        self.vhosts.get(name).cloned()
    }

    /// A fresh connection id.
    pub fn next_connection_id(&self) -> u64 {
        self.next_connection_id.fetch_add(1, Ordering::Relaxed)
    }
}
