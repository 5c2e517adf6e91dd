//! One FIFO of ready messages: a bounded window in memory and, behind it,
//! the on-disk tail of its log.
//!
//! Messages are kept sorted by their queue sequence number, so a requeued
//! message goes back to its original position. Every message in memory has
//! a lower sequence number than every message in the tail: once a message
//! did not fit the window, later ones go to disk too until the tail has
//! been read back. Persistent messages of durable queues are also written
//! to the log when they fit the window, so they survive a restart.

use std::collections::VecDeque;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use crate::broker::message::{Message, QueuedMessage};
use crate::store::{message_bytes, DiskRef, QueueLog, Store};

/// One FIFO: a classic queue's only one, or one priority level's.
#[derive(Debug)]
pub(super) struct Lane {
    items: VecDeque<QueuedMessage>,
    mem_bytes: u64,
    window_bytes: u64,
    /// The log (made when first needed, unless given). Boxed: an idle
    /// queue's lane stays small.
    log: Option<Box<QueueLog>>,
    /// The number its log stamps on disk references.
    log_id: u16,
    /// Where a durable lane makes its log; None: a transient spill log.
    durable_dir: Option<PathBuf>,
}

impl Lane {
    /// A lane with a window of `window_bytes`, its log (if it has one yet)
    /// and where to make a durable one.
    pub fn new(
        window_bytes: u64,
        log: Option<QueueLog>,
        log_id: u16,
        durable_dir: Option<PathBuf>,
    ) -> Self {
        Lane {
            items: VecDeque::new(),
            mem_bytes: 0,
            window_bytes,
            log: log.map(Box::new),
            log_id,
            durable_dir,
        }
    }

    pub fn log(&mut self) -> Option<&mut QueueLog> {
        self.log.as_deref_mut()
    }

    fn log_mut(&mut self, store: &Store) -> io::Result<&mut QueueLog> {
        if self.log.is_none() {
            let mut log = match &self.durable_dir {
                Some(dir) => {
                    let mut log = QueueLog::create(dir, true, store.segment_bytes)?;
                    // A level's directory (`qN/p<level>/`) may be what
                    // creates the queue's: sync that entry too.
                    log.set_parents_to_sync(2);
                    log
                }
                None => QueueLog::create(&store.transient_path(), false, store.segment_bytes)?,
            };
            log.set_id(self.log_id);
            self.log = Some(Box::new(log));
        }
        self.log
            .as_deref_mut()
            .ok_or_else(|| io::Error::other("queue log missing"))
    }

    pub fn tail_count(&self) -> u64 {
        self.log.as_deref().map_or(0, QueueLog::tail_count)
    }

    /// Append a newly routed message with sequence number `seq`: in memory
    /// (and, if `persistent`, in the log) when it fits the window behind an
    /// empty tail, else in the tail. Returns its record when it must be
    /// synced before the message is confirmed.
    pub fn push(
        &mut self,
        store: &Store,
        seq: u64,
        message: Arc<Message>,
        expires_at_ms: Option<u64>,
        persistent: bool,
    ) -> io::Result<Option<DiskRef>> {
        let size = message_bytes(&message);
        if self.tail_count() == 0 && self.mem_bytes + size <= self.window_bytes {
            let disk = match persistent {
                true => {
                    Some(
                        self.log_mut(store)?
                            .append(seq, expires_at_ms, &message, true, false)?,
                    )
                }
                false => None,
            };
            self.insert(QueuedMessage {
                seq,
                message,
                redelivered: false,
                disk,
                expires_at_ms,
                delivery_count: 0,
                body_on_disk: false,
            });
            return Ok(disk);
        }
        let r = self
            .log_mut(store)?
            .append(seq, expires_at_ms, &message, persistent, true)?;
        Ok(persistent.then_some(r))
    }

    /// Write a record for a message that has none (a delivered one whose
    /// body is to leave memory); it is not part of the tail.
    pub fn write_record(&mut self, store: &Store, m: &QueuedMessage) -> io::Result<DiskRef> {
        self.log_mut(store)?
            .append(m.seq, m.expires_at_ms, &m.message, false, false)
    }

    /// The head, reading the tail back first when the window runs low.
    pub fn front(&mut self) -> Option<&QueuedMessage> {
        self.refill();
        self.items.front()
    }

    /// Take the head, reading the tail back when the window runs low.
    pub fn pop(&mut self) -> Option<QueuedMessage> {
        self.refill();
        let m = self.items.pop_front()?;
        self.mem_bytes = self.mem_bytes.saturating_sub(message_bytes(&m.message));
        Some(m)
    }

    /// Read the tail back when the window runs low.
    fn refill(&mut self) {
        if self.mem_bytes < self.window_bytes / 2 && self.tail_count() > 0 {
            let budget = self.window_bytes - self.mem_bytes;
            if let Some(log) = self.log.as_deref_mut() {
                let items = &mut self.items;
                self.mem_bytes += log.read_tail(budget, |r| items.push_back(r.into()));
            }
        }
    }

    /// Put a message in memory at its place in sequence order (requeues
    /// usually belong at or near the front).
    pub fn insert(&mut self, m: QueuedMessage) {
        self.mem_bytes += message_bytes(&m.message);
        if self.items.back().is_none_or(|b| b.seq < m.seq) {
            self.items.push_back(m);
            return;
        }
        let pos = self.items.partition_point(|x| x.seq < m.seq);
        self.items.insert(pos, m);
    }

    /// Drop every message: those in memory are handed back (their records
    /// may be in another log), the tail is settled; returns how many the
    /// tail held.
    pub fn purge(&mut self, dropped: &mut Vec<QueuedMessage>) -> u64 {
        dropped.extend(self.items.drain(..));
        self.mem_bytes = 0;
        match self.log.as_deref_mut().map(QueueLog::purge_tail) {
            Some(Ok(n)) => n,
            Some(Err(e)) => {
                tracing::error!(error = %e, "cannot purge queued messages on disk");
                0
            }
            None => 0,
        }
    }

    /// Drop what is in memory and delete the log's files.
    pub fn remove(&mut self) {
        self.items.clear();
        self.mem_bytes = 0;
        if let Some(log) = self.log.take() {
            log.remove();
        }
    }

    /// Ready messages in memory and on disk.
    pub fn len(&self) -> usize {
        self.items.len() + self.tail_count() as usize
    }

    /// Messages held in memory.
    pub fn in_memory(&self) -> usize {
        self.items.len()
    }
}
