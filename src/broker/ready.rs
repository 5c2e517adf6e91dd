//! The ready messages of one queue, in delivery order, bounded in memory.
//!
//! A classic queue's are one [`Lane`]: a FIFO with a window of
//! `queue_memory_bytes` in memory and the rest in its log on disk. A
//! priority queue's (x-max-priority) are one lane per level (see
//! `priority.rs`). Sequence numbers are shared by the lanes, so a
//! requeued message goes back to its place in its level. Every record is
//! found through its [`DiskRef`]'s `log`.

mod lane;
mod priority;

use std::io;
use std::sync::Arc;

use lane::Lane;
use priority::{PriorityLanes, Recovered};

use super::message::{Message, QueuedMessage};
use crate::store::queue_log::Recovery;
use crate::store::{DiskRef, QueueLog, Store};

pub use priority::LANE_MIN_WINDOW_BYTES;

/// Ready (not yet delivered, or requeued) messages.
#[derive(Debug)]
pub struct ReadyMessages {
    lanes: Lanes,
    /// Body bytes of all ready messages, in memory and on disk (for
    /// x-max-length-bytes).
    body_bytes: u64,
    next_seq: u64,
    store: Arc<Store>,
    durable: bool,
    /// Registered with the syncer and not flushed since: the round that
    /// will flush the logs.
    dirty: Option<u64>,
}

/// A classic queue's one lane, or a priority queue's levels.
#[derive(Debug)]
enum Lanes {
    Fifo(Lane),
    Priority(PriorityLanes),
}

impl Lanes {
    /// The lane `m` goes to.
    fn lane_for(&mut self, m: &Message) -> &mut Lane {
        match self {
            Lanes::Fifo(lane) => lane,
            Lanes::Priority(p) => p.lane_for(m),
        }
    }

    /// The lane delivery takes from.
    fn head(&mut self) -> Option<&mut Lane> {
        match self {
            Lanes::Fifo(lane) => Some(lane),
            Lanes::Priority(p) => p.head(),
        }
    }

    /// The log a reference points into.
    fn log_of(&mut self, r: DiskRef) -> Option<&mut QueueLog> {
        match self {
            Lanes::Fifo(lane) => lane.log(),
            Lanes::Priority(p) => p.log_of(r),
        }
    }

    /// A log besides the lanes' (a priority queue's shared one), and the
    /// lanes.
    fn parts(&mut self) -> (Option<&mut QueueLog>, &mut [Lane]) {
        match self {
            Lanes::Fifo(lane) => (None, std::slice::from_mut(lane)),
            Lanes::Priority(p) => p.parts(),
        }
    }

    fn all(&self) -> &[Lane] {
        match self {
            Lanes::Fifo(lane) => std::slice::from_ref(lane),
            Lanes::Priority(p) => p.lanes(),
        }
    }
}

impl ReadyMessages {
    /// The ready messages of a queue; a durable queue brings its log (new,
    /// or recovered with what recovery found). A durable priority queue's
    /// level logs are recovered here, from beside it.
    pub fn new(
        store: Arc<Store>,
        durable_log: Option<(QueueLog, Recovery)>,
        max_priority: Option<u8>,
    ) -> io::Result<Self> {
        let durable = durable_log.is_some();
        let (log, recovered) = match durable_log {
            Some((log, recovered)) => (Some(log), recovered),
            None => (None, Recovery::default()),
        };
        let mut found = Recovered {
            next_seq: recovered.next_seq,
            body_bytes: recovered.body_bytes,
        };
        let lanes = match max_priority {
            None => Lanes::Fifo(Lane::new(store.window_bytes, log, 0, None)),
            Some(max) => Lanes::Priority(PriorityLanes::new(&store, log, max, &mut found)?),
        };
        Ok(ReadyMessages {
            lanes,
            body_bytes: found.body_bytes,
            next_seq: found.next_seq,
            store,
            durable,
            dirty: None,
        })
    }

    fn logs(&mut self) -> impl Iterator<Item = &mut QueueLog> {
        let (extra, lanes) = self.lanes.parts();
        extra
            .into_iter()
            .chain(lanes.iter_mut().filter_map(Lane::log))
    }

    /// The sync round that will flush this queue's buffered writes: the
    /// one it is registered for, or (registering `source` now) the next.
    pub fn sync_ticket(
        &mut self,
        source: impl FnOnce() -> std::sync::Weak<dyn crate::store::SyncSource>,
    ) -> u64 {
        if let Some(ticket) = self.dirty {
            return ticket;
        }
        let ticket = self.store.syncer.register(source());
        self.dirty = Some(ticket);
        ticket
    }

    /// Write every log's buffers to the OS and list the files to sync.
    pub fn flush_for_sync(&mut self, out: &mut Vec<Arc<std::fs::File>>) -> io::Result<()> {
        self.dirty = None;
        let mut result = Ok(());
        for log in self.logs() {
            // Every log gets its turn even when one fails: the others'
            // records are as good.
            if let Err(e) = log.flush_for_sync(out) {
                result = Err(e);
            }
        }
        result
    }

    /// Whether the queue has a log yet (transient queues make one when
    /// they first spill).
    pub fn has_log(&mut self) -> bool {
        self.logs().next().is_some()
    }

    /// Append a newly routed message. Returns its record when one was
    /// written that must be synced before the message is confirmed.
    pub fn push(
        &mut self,
        message: Arc<Message>,
        expires_at_ms: Option<u64>,
    ) -> io::Result<Option<DiskRef>> {
        let seq = self.next_seq;
        let persistent = self.durable && message.persistent;
        let body = message.body.len() as u64;
        let lane = self.lanes.lane_for(&message);
        let r = lane.push(&self.store, seq, message, expires_at_ms, persistent)?;
        self.next_seq += 1;
        self.body_bytes += body;
        Ok(r)
    }

    /// When the head message expires, if it does.
    pub fn head_expiry(&mut self) -> Option<u64> {
        self.lanes.head()?.front().and_then(|m| m.expires_at_ms)
    }

    /// Body bytes of all ready messages.
    pub fn body_bytes(&self) -> u64 {
        self.body_bytes
    }

    /// Take the head, reading the tail back when the window runs low.
    pub fn pop(&mut self) -> Option<QueuedMessage> {
        let m = self.lanes.head()?.pop()?;
        self.body_bytes = self.body_bytes.saturating_sub(m.message.body.len() as u64);
        Some(m)
    }

    /// Put a message back at its original position, marked redelivered.
    pub fn requeue(&mut self, mut m: QueuedMessage) {
        m.redelivered = true;
        self.unpop(m);
    }

    /// Put back a message that was never handed out (redelivered unchanged).
    pub fn unpop(&mut self, m: QueuedMessage) {
        self.body_bytes += m.message.body.len() as u64;
        self.lanes.lane_for(&m.message).insert(m);
    }

    /// Keep a delivered message's body on disk only, writing its record
    /// first if it has none; [`Self::restore`] reads it back.
    pub fn page_out(&mut self, m: &mut QueuedMessage) -> io::Result<()> {
        if m.body_on_disk {
            return Ok(());
        }
        if m.disk.is_none() {
            let lane = self.lanes.lane_for(&m.message);
            m.disk = Some(lane.write_record(&self.store, m)?);
        }
        m.message = Arc::new(m.message.without_body());
        m.body_on_disk = true;
        Ok(())
    }

    /// Read back the body of a message paged out by [`Self::page_out`].
    pub fn restore(&mut self, m: &mut QueuedMessage) -> io::Result<()> {
        if !m.body_on_disk {
            return Ok(());
        }
        let missing = || io::Error::other("the record of a paged-out message is missing");
        let r = m.disk.ok_or_else(missing)?;
        let mut read = self.lanes.log_of(r).ok_or_else(missing)?.read_at(r)?;
        read.expiration_ms = m.message.expiration_ms;
        m.message = Arc::new(read);
        m.body_on_disk = false;
        Ok(())
    }

    /// A delivered or dropped message is settled: its record may go.
    /// Entries are buffered until `flush_acks`.
    pub fn settle(&mut self, r: DiskRef) {
        if let Some(log) = self.lanes.log_of(r) {
            if let Err(e) = log.settle(r) {
                log_ack_error(&e, "cannot record an ack");
            }
        }
    }

    /// Note that a message was delivered (buffered).
    pub fn mark_delivered(&mut self, r: DiskRef) {
        if let Some(log) = self.lanes.log_of(r) {
            if let Err(e) = log.mark_delivered(r) {
                log_ack_error(&e, "cannot record a delivery");
            }
        }
    }

    /// Note that a message went back to the queue for the `count`-th time
    /// (buffered).
    pub fn mark_returned(&mut self, r: DiskRef, count: u32) {
        if let Some(log) = self.lanes.log_of(r) {
            if let Err(e) = log.mark_returned(r, count) {
                log_ack_error(&e, "cannot record a requeue");
            }
        }
    }

    /// Write buffered acks to the OS.
    pub fn flush_acks(&mut self) {
        for log in self.logs() {
            if let Err(e) = log.flush_acks() {
                log_ack_error(&e, "cannot write acks");
            }
        }
    }

    /// Drop every message; returns how many there were.
    pub fn purge(&mut self) -> usize {
        let mut dropped = Vec::new();
        let mut on_disk = 0;
        for lane in self.lanes.parts().1 {
            on_disk += lane.purge(&mut dropped);
        }
        let n = dropped.len() + on_disk as usize;
        for r in dropped.into_iter().filter_map(|m| m.disk) {
            self.settle(r);
        }
        self.body_bytes = 0;
        self.flush_acks();
        n
    }

    /// Drop every message and delete the logs' files (queue.delete).
    pub fn remove(&mut self) -> usize {
        let n = self.len();
        // The queue directory first: a durable queue's level logs are in it
        // and go with it.
        if let Lanes::Priority(p) = &mut self.lanes {
            p.remove_shared_log();
        }
        for lane in self.lanes.parts().1 {
            lane.remove();
        }
        self.body_bytes = 0;
        n
    }

    /// Number of ready messages.
    pub fn len(&self) -> usize {
        self.lanes.all().iter().map(Lane::len).sum()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.lanes.all().iter().all(|l| l.len() == 0)
    }

    /// Messages held in memory.
    pub fn in_memory(&self) -> usize {
        self.lanes.all().iter().map(Lane::in_memory).sum()
    }
}

/// An ack file write failed: while the disk is full (the store retries
/// and recovers) that is expected and logged quietly; anything else is an
/// error.
fn log_ack_error(e: &io::Error, what: &str) {
    if crate::store::syncer::is_out_of_space(e) {
        tracing::debug!(error = %e, what, "ack write waits for disk space");
    } else {
        tracing::error!(error = %e, what);
    }
}

#[cfg(test)]
mod tests;
