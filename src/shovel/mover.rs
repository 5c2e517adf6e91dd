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

use super::definition::{AckMode, DeleteAfter, Dest, ShovelDef, Source};
use super::headers::Stamp;
use super::source::SourceQueue;
use super::status::Status;
use super::uri::credentials;
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
/// `held` is the source opened by an earlier attempt, kept while the
/// shovel waits (the shovel's own queue for an exchange source); the
/// caller drops it when the shovel stops.
pub async fn run_once(
    broker: &Arc<Broker>,
    def: &ShovelDef,
    status: &Status,
    stop: &CancellationToken,
    held: &mut Option<SourceQueue>,
) -> Outcome {
    let (dest_vhost, src, conn_id) = match prepare(broker, def, stop, held).await {
        Ok(ready) => ready,
        Err(outcome) => return outcome,
    };
    let src = &src;
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
    let conn = ConnHandle::new(conn_id, tx);
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
        src,
        dest: &dest_vhost,
        conn,
        rx,
        credit: (def.ack_mode != AckMode::NoAck).then_some(credit),
        sync: broker.store.syncer.subscribe(),
        stamp: Stamp::new(def, &broker.cluster_name(), &status.vhost, &status.name),
        broker,
        dest_user: credentials(&def.dest_uri).map(|(user, _)| user),
    };
    let outcome = mover.pump(stop).await;
    mover.detach();
    outcome
}

/// Everything a run needs before it consumes: both vhosts, the URI users'
/// grants, the declared queues stored, the destination there, and the
/// source opened (or the one `held` kept): the destination vhost, the
/// source queue and the consumer's connection id.
async fn prepare(
    broker: &Arc<Broker>,
    def: &ShovelDef,
    stop: &CancellationToken,
    held: &mut Option<SourceQueue>,
) -> Result<(Arc<VHost>, Arc<Queue>, u64), Outcome> {
    let retry = |why: String| Outcome::Retry(why);
    let vhost = |name: &str| {
        broker
            .vhost(name)
            .ok_or_else(|| retry(format!("vhost '{name}' not found")))
    };
    let (src_vhost, dest_vhost) = (vhost(&def.src_vhost)?, vhost(&def.dest_vhost)?);
    // A user a URI names logs in again and is checked again, as RabbitMQ's
    // shovel connection would on each start.
    super::grants::for_run(broker, def).map_err(retry)?;
    let round = super::declare::missing_queues(broker, def).map_err(retry)?;
    if round > 0 {
        // The declarations are stored before anything moves into them.
        let mut sync = broker.store.syncer.subscribe();
        let stored = tokio::select! {
            s = sync.wait_for(|s| s.synced >= round || s.failed) => {
                s.map(|s| s.synced >= round).unwrap_or(false)
            }
            _ = stop.cancelled() => return Err(Outcome::Stopped),
        };
        if !stored {
            return Err(retry(
                "the store could not write the declared queues".into(),
            ));
        }
    }
    if let Some(why) = missing_destination(&dest_vhost, &def.dest) {
        return Err(retry(why));
    }
    // A kept source that is gone is dropped first (deleting a queue of
    // its own).
    let source = match held.take().filter(SourceQueue::reusable) {
        Some(kept) => held.insert(kept),
        None => {
            let opened = super::source::open(&src_vhost, &def.src, broker.next_connection_id());
            held.insert(opened.map_err(retry)?)
        }
    };
    Ok((dest_vhost, source.queue.clone(), source.conn_id))
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
    broker: &'a Broker,
    /// The user `dest-uri` names: each copy is published as that user.
    dest_user: Option<String>,
}

/// Most deliveries one batch takes from the mailbox.
const BATCH_MAX: usize = 1_000;

/// How long a stopped shovel still waits for its batch's copies to be
/// stored before giving the batch back.
const STOP_SYNC_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// What became of one message's copy at the destination.
struct Copy {
    /// A queue took it (or no binding routes it, which drops it).
    taken: bool,
    /// The sync round that stores it (0: none).
    round: u64,
    /// Why it was refused before reaching a queue, if it was.
    why: Option<String>,
}

impl Mover<'_> {
    /// Move batches until done, stopped or failed.
    async fn pump(&mut self, stop: &CancellationToken) -> Outcome {
        let mut batch = Vec::new();
        loop {
            // Stop first: a stopped shovel (a restart's old run) takes no
            // further batch.
            let first = tokio::select! {
                biased;
                _ = stop.cancelled() => return Outcome::Stopped,
                ev = self.rx.recv() => ev,
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
                        return Outcome::Retry(match &self.def.src {
                            Source::Queue(q) => format!("queue '{q}' was deleted"),
                            other => format!("the queue for {} was deleted", other.describe()),
                        });
                    }
                }
                if batch.len() < BATCH_MAX {
                    next = self.rx.try_recv().ok();
                }
            }
            if let Some(outcome) = self.move_batch(std::mem::take(&mut batch), stop).await {
                return outcome;
            }
            // A full mailbox parked the consumer: it takes more now.
            if self.conn.take_starved() {
                self.src.dispatch();
            }
        }
    }

    fn no_ack(&self) -> bool {
        self.def.ack_mode == AckMode::NoAck
    }

    /// Publish a batch to the destination and settle at the source what
    /// the destination took, once stored; None to go on.
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
        let now_s = crate::broker::message::now_ms() / 1000;
        let (mut moved, mut refused, mut round) = (Vec::new(), Vec::new(), 0);
        let mut why = None;
        for m in batch {
            let copy = self.publish(&m.message, now_s);
            round = round.max(copy.round);
            why = why.or(copy.why);
            match copy.taken {
                true => moved.push(m),
                false => refused.push(m),
            }
        }
        // Only what no destination took goes back (each copy taken stays
        // taken: giving it back too would duplicate it).
        let refused_count = refused.len();
        self.give_back(refused);
        if self.def.ack_mode == AckMode::OnConfirm && round > 0 && !self.synced(round, stop).await {
            self.give_back(moved);
            return Some(match stop.is_cancelled() {
                true => Outcome::Stopped,
                false => Outcome::Retry("the store could not write the copies".into()),
            });
        }
        self.settle(&moved);
        self.status.moved(moved.len() as u64);
        if self.status.remaining() == Some(0) {
            return Some(Outcome::Done);
        }
        if stop.is_cancelled() {
            return Some(Outcome::Stopped);
        }
        if refused_count > 0 {
            let why = why.map(|w| format!(": {w}")).unwrap_or_default();
            return Some(Outcome::Retry(format!(
                "the destination refused {refused_count} messages{why}"
            )));
        }
        self.src.dispatch();
        None
    }

    /// Whether the store's sync round `round` completed. Stopped meanwhile,
    /// it still waits a little: copies about to be written are settled
    /// rather than moved again after a restart.
    async fn synced(&mut self, round: u64, stop: &CancellationToken) -> bool {
        let done = |s: &crate::store::syncer::SyncStatus| s.synced >= round || s.failed;
        let reached = |s: &crate::store::syncer::SyncStatus| s.synced >= round;
        tokio::select! {
            s = self.sync.wait_for(done) => return s.map(|s| reached(&s)).unwrap_or(false),
            _ = stop.cancelled() => {}
        }
        let late = tokio::time::timeout(STOP_SYNC_WAIT, self.sync.wait_for(done)).await;
        matches!(late, Ok(Ok(s)) if reached(&s))
    }

    /// Publish one message to the destination.
    fn publish(&self, m: &Message, now_s: u64) -> Copy {
        let (exchange, key): (&str, &str) = match &self.def.dest {
            Dest::Queue(q) => ("", q),
            Dest::Exchange { name, key } => (name, key.as_deref().unwrap_or(&m.routing_key)),
            Dest::AsPublished => (&m.exchange, &m.routing_key),
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
        let refused = |why: String| Copy {
            taken: false,
            round: 0,
            why: Some(why),
        };
        if let Some(user) = &self.dest_user {
            let may = super::grants::may_publish(self.broker, &self.dest.name, user, exchange, key);
            if let Err(e) = may {
                return refused(e.text);
            }
        }
        let props = decode_properties(&copy.properties);
        let mut targets = Vec::new();
        // A missing or internal exchange takes nothing: the message stays
        // at the source (RabbitMQ's shovel channel would be closed).
        if let Err(e) = self
            .dest
            .route(exchange, &[key], props.as_ref(), &mut targets)
        {
            return refused(e.text);
        }
        if targets.iter().any(|q| Arc::ptr_eq(q, self.src)) {
            // Back into the queue it came from, again and again (RabbitMQ's
            // shovel would loop): it stays where it is.
            let why = format!(
                "a copy would go back into queue '{}', a loop",
                self.src.name
            );
            return refused(why);
        }
        // A message no binding routes is dropped, as a RabbitMQ shovel's
        // publish (not mandatory) is; but a destination queue that is gone
        // takes nothing.
        let mut out = Copy {
            taken: targets.is_empty() && !matches!(self.def.dest, Dest::Queue(_)),
            round: 0,
            why: None,
        };
        for q in &targets {
            match q.publish(copy.clone()) {
                Stored::Done => out.taken = true,
                Stored::AfterSync(t) => (out.taken, out.round) = (true, out.round.max(t)),
                Stored::Rejected(t) => out.round = out.round.max(t),
                Stored::Failed => {}
            }
        }
        out
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
