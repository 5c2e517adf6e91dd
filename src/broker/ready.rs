//! The ready messages of one queue, in delivery order, bounded in memory.
//!
//! A classic queue is one [`Lane`]: a FIFO with a window of
//! `queue_memory_bytes` in memory and the rest in its log on disk. A
//! priority queue (x-max-priority = N) is N + 1 lanes, one per priority
//! level, each with its own log (`p<level>/` in a durable queue's
//! directory) and an equal share of the window (at least
//! [`LANE_MIN_WINDOW_BYTES`]); the head is the head of the highest lane
//! that holds anything. Sequence numbers are shared by the lanes, so a
//! requeued message goes back to its place in its level.
//!
//! Every record is found through its [`DiskRef`]'s `log`: 0 is the queue's
//! own directory (a classic queue's lane; in a priority queue, the log of
//! the single-log layout that earlier versions wrote, read back whole at
//! recovery), level L's lane is log L + 1.

mod lane;

use std::io;
use std::path::Path;
use std::sync::Arc;

use lane::Lane;

use super::message::{Message, QueuedMessage};
use crate::store::queue_log::Recovery;
use crate::store::{DiskRef, QueueLog, Store};

/// The smallest window a priority level gets, however many levels share
/// the queue's window (so a queue with 256 levels may hold up to 16 MiB).
pub const LANE_MIN_WINDOW_BYTES: u64 = 64 * 1024;

/// Ready (not yet delivered, or requeued) messages.
#[derive(Debug)]
pub struct ReadyMessages {
    /// One lane, or one per priority level (index = level).
    lanes: Vec<Lane>,
    /// A priority queue's log 0: the queue directory's own log (empty but
    /// for messages written before priority levels had their own logs).
    shared_log: Option<Box<QueueLog>>,
    /// Body bytes of all ready messages, in memory and on disk (for
    /// x-max-length-bytes).
    body_bytes: u64,
    next_seq: u64,
    store: Arc<Store>,
    durable: bool,
    /// x-max-priority: the highest level.
    max_priority: Option<u8>,
    /// Registered with the syncer and not flushed since: the round that
    /// will flush the logs.
    dirty: Option<u64>,
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
        let mut ready = ReadyMessages {
            lanes: Vec::new(),
            shared_log: None,
            body_bytes: recovered.body_bytes,
            next_seq: recovered.next_seq,
            store: store.clone(),
            durable,
            max_priority,
            dirty: None,
        };
        let Some(max) = max_priority else {
            ready
                .lanes
                .push(Lane::new(store.window_bytes, log, 0, None));
            return Ok(ready);
        };
        let levels = u64::from(max) + 1;
        let window = (store.window_bytes / levels)
            .max(LANE_MIN_WINDOW_BYTES)
            .min(store.window_bytes);
        let dir = log.as_ref().map(|l| l.dir().to_path_buf());
        for level in 0..=max {
            let log_id = u16::from(level) + 1;
            let lane_dir = dir.as_ref().map(|d| d.join(format!("p{level}")));
            let lane_log = match &lane_dir {
                Some(d) if d.exists() => Some(ready.recover_lane(d, log_id)?),
                _ => None,
            };
            ready
                .lanes
                .push(Lane::new(window, lane_log, log_id, lane_dir));
        }
        if let Some(mut shared) = log {
            let mut items: std::collections::VecDeque<QueuedMessage> = Default::default();
            shared.read_tail(u64::MAX, |r| items.push_back(r.into()));
            for m in items {
                let lane = ready.lane_of(&m.message);
                ready.lanes[lane].insert(m);
            }
            ready.shared_log = Some(Box::new(shared));
        }
        Ok(ready)
    }

    fn recover_lane(&mut self, dir: &Path, log_id: u16) -> io::Result<QueueLog> {
        let (mut log, report) = QueueLog::recover(dir, self.store.segment_bytes)?;
        log.set_id(log_id);
        // `qN/p<level>/`: the queue's directory entry is synced too.
        log.set_parents_to_sync(2);
        self.next_seq = self.next_seq.max(report.next_seq);
        self.body_bytes += report.body_bytes;
        Ok(log)
    }

    /// The lane a message belongs to (its priority, capped at the
    /// queue's maximum).
    fn lane_of(&self, m: &Message) -> usize {
        let level = match self.max_priority {
            Some(max) => usize::from(super::message::priority(&m.properties).min(max)),
            None => 0,
        };
        level.min(self.lanes.len().saturating_sub(1))
    }

    /// The lane delivery takes from: the highest that holds anything.
    fn head_lane(&mut self) -> Option<&mut Lane> {
        match self.max_priority {
            None => self.lanes.first_mut(),
            Some(_) => self.lanes.iter_mut().rev().find(|l| l.len() > 0),
        }
    }

    /// The log a reference points into.
    fn log_of(&mut self, r: DiskRef) -> Option<&mut QueueLog> {
        match (self.max_priority, r.log) {
            (None, _) => self.lanes.first_mut()?.log(),
            (Some(_), 0) => self.shared_log.as_deref_mut(),
            (Some(_), id) => self.lanes.get_mut(usize::from(id) - 1)?.log(),
        }
    }

    fn logs(&mut self) -> impl Iterator<Item = &mut QueueLog> {
        let lanes = self.lanes.iter_mut().filter_map(Lane::log);
        self.shared_log.as_deref_mut().into_iter().chain(lanes)
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
        let lane = self.lane_of(&message);
        let r = self.lanes[lane].push(&self.store, seq, message, expires_at_ms, persistent)?;
        self.next_seq += 1;
        self.body_bytes += body;
        Ok(r)
    }

    /// When the head message expires, if it does.
    pub fn head_expiry(&mut self) -> Option<u64> {
        self.head_lane()?.front().and_then(|m| m.expires_at_ms)
    }

    /// Body bytes of all ready messages.
    pub fn body_bytes(&self) -> u64 {
        self.body_bytes
    }

    /// Take the head, reading the tail back when the window runs low.
    pub fn pop(&mut self) -> Option<QueuedMessage> {
        let m = self.head_lane()?.pop()?;
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
        let lane = self.lane_of(&m.message);
        self.lanes[lane].insert(m);
    }

    /// Keep a delivered message's body on disk only, writing its record
    /// first if it has none; [`Self::restore`] reads it back.
    pub fn page_out(&mut self, m: &mut QueuedMessage) -> io::Result<()> {
        if m.body_on_disk {
            return Ok(());
        }
        if m.disk.is_none() {
            let lane = self.lane_of(&m.message);
            m.disk = Some(self.lanes[lane].write_record(&self.store, m)?);
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
        let mut read = self.log_of(r).ok_or_else(missing)?.read_at(r)?;
        read.expiration_ms = m.message.expiration_ms;
        m.message = Arc::new(read);
        m.body_on_disk = false;
        Ok(())
    }

    /// A delivered or dropped message is settled: its record may go.
    /// Entries are buffered until `flush_acks`.
    pub fn settle(&mut self, r: DiskRef) {
        if let Some(log) = self.log_of(r) {
            if let Err(e) = log.settle(r) {
                log_ack_error(&e, "cannot record an ack");
            }
        }
    }

    /// Note that a message was delivered (buffered).
    pub fn mark_delivered(&mut self, r: DiskRef) {
        if let Some(log) = self.log_of(r) {
            if let Err(e) = log.mark_delivered(r) {
                log_ack_error(&e, "cannot record a delivery");
            }
        }
    }

    /// Note that a message went back to the queue for the `count`-th time
    /// (buffered).
    pub fn mark_returned(&mut self, r: DiskRef, count: u32) {
        if let Some(log) = self.log_of(r) {
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
        for lane in &mut self.lanes {
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
        if let Some(log) = self.shared_log.take() {
            log.remove();
        }
        for lane in &mut self.lanes {
            lane.remove();
        }
        self.body_bytes = 0;
        n
    }

    /// Number of ready messages.
    pub fn len(&self) -> usize {
        self.lanes.iter().map(Lane::len).sum()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.lanes.iter().all(|l| l.len() == 0)
    }

    /// Messages held in memory.
    pub fn in_memory(&self) -> usize {
        self.lanes.iter().map(Lane::in_memory).sum()
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
