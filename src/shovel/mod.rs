//! Dynamic shovels (RabbitMQ's `shovel` runtime parameters): tasks that
//! move messages from a queue or an exchange (`source.rs`) to a queue or
//! an exchange of this broker,
//! without loss (see `mover.rs`). What an operator does with poison
//! messages: inspect the dead-letter queue, then move them back.
//!
//! A shovel is a durable parameter (`PUT /api/parameters/shovel/...`,
//! kept in the metadata log), so it starts again after a restart and goes
//! on where it stopped. With `src-delete-after` it deletes its parameter
//! once it has moved that many. [`Shovels`] holds the running ones: a
//! task each, stopped by a token; the server starts them and stops them
//! before the store closes.

mod declare;
pub mod definition;
pub mod grants;
mod headers;
mod mover;
mod source;
pub mod status;
pub mod uri;

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker::Broker;
use definition::ShovelDef;
use mover::Outcome;
use status::Status;

/// How long `/api/shovels` still shows a shovel that has finished.
const FINISHED_SHOWN: Duration = Duration::from_secs(60);

/// The component name of shovel parameters.
pub const COMPONENT: &str = "shovel";

/// The running shovels, by (vhost, name).
#[derive(Debug, Default)]
pub struct Shovels {
    running: Mutex<BTreeMap<(String, String), Running>>,
    /// Set when the server starts: the token that stops them all, the
    /// tracker the server waits on, and the broker the tasks serve.
    root: OnceLock<Root>,
}

#[derive(Debug)]
struct Root {
    shutdown: CancellationToken,
    tracker: TaskTracker,
    broker: Weak<Broker>,
}

#[derive(Debug)]
struct Running {
    status: Arc<Status>,
    stop: CancellationToken,
}

impl Shovels {
    /// Start every stored shovel; later ones start as they are declared.
    pub fn start_all(&self, broker: &Arc<Broker>, shutdown: CancellationToken) {
        let root = Root {
            shutdown,
            tracker: TaskTracker::new(),
            broker: Arc::downgrade(broker),
        };
        if self.root.set(root).is_err() {
            return;
        }
        for ((vhost, component, name), value) in broker.access.parameters() {
            if component != COMPONENT {
                continue;
            }
            match ShovelDef::parse(&value, &name) {
                Ok(def) => self.start(&vhost, &name, def),
                Err(e) => {
                    tracing::warn!(vhost = %vhost, shovel = %name, error = %e, "a stored shovel is not valid; not started")
                }
            }
        }
    }

    /// Start (or restart with a new definition) shovel `name` of `vhost`.
    pub fn start(&self, vhost: &str, name: &str, def: ShovelDef) {
        let Some(root) = self.root.get() else {
            // Not serving yet: `start_all` will start it.
            return;
        };
        let Some(broker) = root.broker.upgrade() else {
            return;
        };
        let key = (vhost.to_string(), name.to_string());
        let status = Arc::new(Status::new(vhost, name, def));
        let stop = root.shutdown.child_token();
        let old = self.running.lock().insert(
            key,
            Running {
                status: status.clone(),
                stop: stop.clone(),
            },
        );
        if let Some(old) = old {
            old.stop.cancel();
        }
        // Its parameter deleted meanwhile (a DELETE racing this start):
        // the delete's `stop` may have come first, so stop it here.
        if broker.access.parameter(vhost, COMPONENT, name).is_none() {
            self.stop(vhost, name);
            return;
        }
        tracing::info!(vhost, shovel = name, "shovel started");
        root.tracker.spawn(run(broker, status, stop));
    }

    /// Restart shovel `name` of `vhost` with its definition (what
    /// `DELETE /api/shovels/vhost/{vhost}/{name}/restart` does); false if
    /// there is no such shovel.
    pub fn restart(&self, vhost: &str, name: &str) -> bool {
        let key = (vhost.to_string(), name.to_string());
        let def = match self.running.lock().get(&key) {
            // A finished one has deleted its parameter: nothing to restart.
            Some(r) if !r.status.finished() => r.status.def.clone(),
            _ => return false,
        };
        self.start(vhost, name, def);
        true
    }

    /// Whether shovel `name` of `vhost` is listed (running, waiting or
    /// just finished).
    pub fn exists(&self, vhost: &str, name: &str) -> bool {
        let key = (vhost.to_string(), name.to_string());
        self.running.lock().contains_key(&key)
    }

    /// Stop shovel `name` of `vhost` (its parameter was deleted).
    pub fn stop(&self, vhost: &str, name: &str) {
        let key = (vhost.to_string(), name.to_string());
        if let Some(r) = self.running.lock().remove(&key) {
            r.stop.cancel();
        }
    }

    /// Stop every shovel of a deleted vhost.
    pub fn stop_vhost(&self, vhost: &str) {
        self.running.lock().retain(|(v, _), r| {
            let keep = v != vhost;
            if !keep {
                r.stop.cancel();
            }
            keep
        });
    }

    /// Every shovel's status, by vhost and name.
    pub fn statuses(&self) -> Vec<Arc<Status>> {
        let running = self.running.lock();
        running.values().map(|r| r.status.clone()).collect()
    }

    /// Wait (up to `limit`) for the shovels to stop after shutdown.
    pub async fn wait_stopped(&self, limit: Duration) {
        if let Some(root) = self.root.get() {
            root.tracker.close();
            let _ = tokio::time::timeout(limit, root.tracker.wait()).await;
        }
    }

    /// Forget a shovel that has finished (its entry, if still this one).
    fn finished(&self, status: &Arc<Status>) {
        let key = (status.vhost.clone(), status.name.clone());
        let mut running = self.running.lock();
        if running
            .get(&key)
            .is_some_and(|r| Arc::ptr_eq(&r.status, status))
        {
            running.remove(&key);
        }
    }
}

/// A shovel's task: attempts until it is done or stopped, waiting
/// `reconnect-delay` between them.
async fn run(broker: Arc<Broker>, status: Arc<Status>, stop: CancellationToken) {
    let delay = Duration::from_secs(status.def.reconnect_delay_s.max(1));
    // Kept between attempts, dropped (its own queue deleted) on return.
    let mut held = None;
    loop {
        match mover::run_once(&broker, &status.def, &status, &stop, &mut held).await {
            Outcome::Stopped => {
                status.set_terminated("stopped");
                return;
            }
            Outcome::Done => break,
            Outcome::Retry(why) => {
                tracing::warn!(vhost = %status.vhost, shovel = %status.name, reason = %why, "shovel waits");
                status.set_waiting(why);
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.cancelled() => {
                        status.set_terminated("stopped");
                        return;
                    }
                }
            }
        }
    }
    drop(held);
    status.set_terminated("done");
    tracing::info!(vhost = %status.vhost, shovel = %status.name, "shovel done; its parameter is deleted");
    // As RabbitMQ, a shovel that has moved what it was to move deletes its
    // parameter (so a restart does not run it again).
    let (vhost, name) = (status.vhost.clone(), status.name.clone());
    let access = broker.clone();
    let def = status.def.clone();
    let deleted = tokio::task::spawn_blocking(move || {
        // Not a definition PUT since this one started.
        let stored = access.access.parameter(&vhost, COMPONENT, &name);
        match stored.map(|v| ShovelDef::parse(&v, &name)) {
            Some(Ok(now)) if now == def => access.access.delete_parameter(&vhost, COMPONENT, &name),
            _ => Ok(0),
        }
    })
    .await;
    if let Ok(Err(e)) = deleted {
        tracing::warn!(shovel = %status.name, error = ?e, "cannot delete a finished shovel's parameter");
    }
    // Shown as terminated, with what it moved, for a while (RabbitMQ drops
    // it at once; a person who started a move wants to see it finish).
    tokio::select! {
        _ = tokio::time::sleep(FINISHED_SHOWN) => {}
        _ = stop.cancelled() => {}
    }
    broker.shovels.finished(&status);
}
