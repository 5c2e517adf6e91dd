//! One shovel at work: a consumer of its source queue inside the broker
//! that publishes what it gets to its destination and settles it at the
//! source only once the destination has it (ack-mode `on-confirm`: after
//! the store's sync round that wrote the copies), so a crash at any point
//! loses nothing; what was in flight may arrive twice.
//!
//! Deliveries are handled in batches (what the mailbox holds, up to the
//! prefetch): one sync wait and one settle per batch. A copy the
//! destination refuses (reject-publish, a failed store) sends the batch
//! back to the source and the shovel waits before it tries again.

use std::sync::Arc;

use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use tokio_util::sync::CancellationToken;

use super::definition::{AckMode, DeleteAfter, Dest, ShovelDef};
use super::headers::Stamp;
use super::status::Status;
use crate::broker::consumer::{ChannelCredit, ConnEvent, ConnHandle, Consumer, ConsumerCredit};
use crate::broker::message::{decode_properties, QueuedMessage};
use crate::broker::queue::{Queue, Stored};
use crate::broker::{Broker, VHost};
use crate::message::Message;

/// The consumer's id on its own connection handle.
const CONSUMER_ID: u64 = 1;

/// How a run of the shovel ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It moved what `src-delete-after` asked for.
    Done,
    /// It was stopped (deleted, or the broker shuts down).
    Stopped,
    /// Something is missing or failing: try again after a delay.
    Retry(String),
}

/// Run one attempt: consume from the source until done, stopped or failed.
pub async fn run_once(
    broker: &Arc<Broker>,
    def: &ShovelDef,
    status: &Status,
    stop: &CancellationToken,
) -> Outcome {
    let Some(src_vhost) = broker.vhost(&def.src_vhost) else {
        return Outcome::Retry(format!("vhost '{}' not found", def.src_vhost));
    };
    let Some(dest_vhost) = broker.vhost(&def.dest_vhost) else {
        return Outcome::Retry(format!("vhost '{}' not found", def.dest_vhost));
    };
    match super::declare::missing_queues(broker, def) {
        Err(why) => return Outcome::Retry(why),
        // The declarations are stored before anything moves into them.
        Ok(round) if round > 0 => {
            let mut sync = broker.store.syncer.subscribe();
            let stored = tokio::select! {
                s = sync.wait_for(|s| s.synced >= round || s.failed) => {
                    s.map(|s| s.synced >= round).unwrap_or(false)
                }
                _ = stop.cancelled() => return Outcome::Stopped,
            };
            if !stored {
                return Outcome::Retry("the store could not write the declared queues".into());
            }
        }
        Ok(_) => {}
    }
    let Some(src) = src_vhost.find_queue(&def.src_queue) else {
        return Outcome::Retry(format!(
            "no queue '{}' in vhost '{}'",
            def.src_queue, def.src_vhost
        ));
    };
    if let Some(missing) = missing_destination(&dest_vhost, &def.dest) {
        return Outcome::Retry(missing);
    }
    if status.remaining().is_none() {
        let total = match def.delete_after {
            DeleteAfter::QueueLength => Some(u64::from(src.message_count())),
            DeleteAfter::Count(n) => Some(n),
            DeleteAfter::Never => None,
        };
        status.set_total(total);
    }
    if status.remaining() == Some(0) {
        return Outcome::Done;
    }
    let (tx, rx) = unbounded_channel();
    let conn = ConnHandle::new(broker.next_connection_id(), tx);
    let credit = Arc::new(ConsumerCredit::new(
        def.prefetch,
        Arc::new(ChannelCredit::default()),
    ));
    let consumer = Consumer {
        id: CONSUMER_ID,
        tag: Arc::from(format!("shovel-{}", status.name)),
        channel: 0,
        conn: conn.clone(),
        no_ack: def.ack_mode == AckMode::NoAck,
        exclusive: false,
        credit: credit.clone(),
        priority: 0,
    };
    if let Err(e) = src.add_consumer(consumer) {
        return Outcome::Retry(e.to_string());
    }
    status.set_running();
    let mut mover = Mover {
        def,
        status,
        src: &src,
        dest: &dest_vhost,
        conn,
        rx,
        credit: (def.ack_mode != AckMode::NoAck).then_some(credit),
        sync: broker.store.syncer.subscribe(),
        stamp: Stamp::new(def, &broker.cluster_name(), &status.vhost, &status.name),
    };
    let outcome = mover.pump(stop).await;
    mover.detach();
    outcome
}

/// Why the destination cannot take messages yet, if it cannot.
fn missing_destination(vhost: &VHost, dest: &Dest) -> Option<String> {
    match dest {
        Dest::Queue(q) if vhost.find_queue(q).is_none() => {
            Some(format!("no queue '{q}' in vhost '{}'", vhost.name))
        }
        Dest::Exchange { name, .. } if vhost.find_exchange(name).is_none() => {
            Some(format!("no exchange '{name}' in vhost '{}'", vhost.name))
        }
        _ => None,
    }
}

struct Mover<'a> {
    def: &'a ShovelDef,
    status: &'a Status,
    src: &'a Arc<Queue>,
    dest: &'a VHost,
    conn: ConnHandle,
    rx: UnboundedReceiver<ConnEvent>,
    /// The consumer's prefetch credit (None for no-ack).
    credit: Option<Arc<ConsumerCredit>>,
    sync: tokio::sync::watch::Receiver<crate::store::syncer::SyncStatus>,
    /// Headers to add to each copy, if the definition asks for them.
    stamp: Option<Stamp>,
}

/// Most deliveries one batch takes from the mailbox.
const BATCH_MAX: usize = 1_000;

impl Mover<'_> {
    /// Move batches until done, stopped or failed.
    async fn pump(&mut self, stop: &CancellationToken) -> Outcome {
        let mut batch = Vec::new();
        loop {
            let first = tokio::select! {
                ev = self.rx.recv() => ev,
                _ = stop.cancelled() => return Outcome::Stopped,
            };
            let Some(first) = first else {
                return Outcome::Retry("the consumer's mailbox closed".into());
            };
            let mut next = Some(first);
            while let Some(ev) = next.take() {
                match ev {
                    ConnEvent::Deliver(d) => {
                        self.conn.delivery_taken(d.size());
                        self.src
                            .stats
                            .delivered(!self.no_ack(), d.message.redelivered);
                        batch.push(d.message);
                    }
                    ConnEvent::ConsumerCancelled { .. } => {
                        self.give_back(std::mem::take(&mut batch));
                        return Outcome::Retry(format!(
                            "queue '{}' was deleted",
                            self.def.src_queue
                        ));
                    }
                }
                if batch.len() < BATCH_MAX {
                    next = self.rx.try_recv().ok();
                }
            }
            if let Some(outcome) = self.move_batch(std::mem::take(&mut batch), stop).await {
                return outcome;
            }
        }
    }

    fn no_ack(&self) -> bool {
        self.def.ack_mode == AckMode::NoAck
    }

    /// Publish a batch to the destination and settle it at the source
    /// once stored; None to go on.
    async fn move_batch(
        &mut self,
        mut batch: Vec<QueuedMessage>,
        stop: &CancellationToken,
    ) -> Option<Outcome> {
        // Past what src-delete-after asks for: back to the source.
        if let Some(left) = self.status.remaining() {
            let left = usize::try_from(left).unwrap_or(usize::MAX);
            if batch.len() > left {
                self.give_back(batch.split_off(left));
            }
        }
        let mut stored = Stored::Done;
        let now_s = crate::broker::message::now_ms() / 1000;
        for m in &batch {
            stored = stored.and(self.publish(&m.message, now_s));
        }
        if matches!(stored, Stored::Failed | Stored::Rejected(_)) {
            self.give_back(batch);
            return Some(Outcome::Retry("the destination refused messages".into()));
        }
        let round = stored.sync_round();
        if self.def.ack_mode == AckMode::OnConfirm && round > 0 {
            let synced = tokio::select! {
                s = self.sync.wait_for(|s| s.synced >= round || s.failed) => {
                    s.map(|s| s.synced >= round).unwrap_or(false)
                }
                // Stopped mid-wait: the copies may or may not be stored, so
                // the originals go back (at-least-once).
                _ = stop.cancelled() => false,
            };
            if !synced {
                self.give_back(batch);
                return Some(match stop.is_cancelled() {
                    true => Outcome::Stopped,
                    false => Outcome::Retry("the store could not write the copies".into()),
                });
            }
        }
        self.settle(&batch);
        self.status.moved(batch.len() as u64);
        if self.status.remaining() == Some(0) {
            return Some(Outcome::Done);
        }
        self.src.dispatch();
        None
    }

    /// Publish one message to the destination.
    fn publish(&self, m: &Message, now_s: u64) -> Stored {
        let (exchange, key): (&str, &str) = match &self.def.dest {
            Dest::Queue(q) => ("", q),
            Dest::Exchange { name, key } => (name, key.as_deref().unwrap_or(&m.routing_key)),
        };
        let copy = Arc::new(Message {
            exchange: Arc::from(exchange),
            routing_key: Arc::from(key),
            properties: match &self.stamp {
                Some(stamp) => stamp.apply(&m.properties, now_s),
                None => m.properties.clone(),
            },
            body: m.body.clone(),
            persistent: m.persistent,
            expiration_ms: m.expiration_ms,
        });
        let props = decode_properties(&copy.properties);
        let mut targets = Vec::new();
        // A message no binding routes is dropped, as a RabbitMQ shovel's
        // publish (not mandatory) is.
        let _ = self
            .dest
            .route(exchange, &[key], props.as_ref(), &mut targets);
        targets
            .iter()
            .fold(Stored::Done, |s, q| s.and(q.publish(copy.clone())))
    }

    /// The batch is at its destination: ack it at the source.
    fn settle(&self, batch: &[QueuedMessage]) {
        self.src.settle(batch.iter().filter_map(|m| m.disk));
        // A no-ack delivery was settled when delivered (no ack counted, no
        // credit taken), as for any no-ack consumer.
        if !self.no_ack() {
            self.src.stats.settled(batch.len() as u64, true);
            self.release(batch.len());
        }
    }

    fn release(&self, n: usize) {
        if let Some(c) = &self.credit {
            for _ in 0..n {
                c.release();
            }
        }
    }

    /// Return messages that never left the broker to their places at the
    /// source, as they were (not counted as redeliveries).
    fn give_back(&self, batch: Vec<QueuedMessage>) {
        if batch.is_empty() {
            return;
        }
        self.release(batch.len());
        self.src.stats.settled(batch.len() as u64, false);
        for m in batch {
            self.src.return_undelivered(m);
        }
    }

    /// Leave the source: remove the consumer and return what is still in
    /// the mailbox, undelivered.
    fn detach(&mut self) {
        self.src.remove_consumers(self.conn.id, &[CONSUMER_ID]);
        self.rx.close();
        while let Ok(ev) = self.rx.try_recv() {
            if let ConnEvent::Deliver(d) = ev {
                self.conn.delivery_taken(d.size());
                if let Some(c) = &d.credit {
                    c.release();
                }
                self.src.return_undelivered(d.message);
            }
        }
        self.src.dispatch();
    }
}
