//! Delayed messages: an exchange of type `x-delayed-message` (the routing
//! type is its `x-delayed-type` argument) holds a message published with an
//! `x-delay` header (milliseconds) until it is due, then routes it. What the
//! RabbitMQ plugin keeps in Mnesia on one node, Warren keeps in its store:
//! a persistent message held by a durable exchange is written to the
//! vhost's delayed log (a queue log under `DATA/delayed/`, the due time in
//! the record's expiry field) before it is confirmed, and is settled there
//! only once it has been routed and its copies stored, so a restart
//! neither loses nor fires it early.
//!
//! Held messages are ordered by due time in memory, in a heap of small
//! entries (due time, sequence number, disk position: ~48 bytes each);
//! their bodies stay in memory only while they fit a window of
//! `queue_memory_bytes`. Beyond it a body stays on disk only, in the
//! delayed log (a transient or non-persistent message too, as a record
//! that recovery ignores), and is read back when it is due. Recovery
//! reads the log back through the same window.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::Mutex;

use super::chores::{Chore, ChoreSender};
use super::message::Message;
use super::queue::Stored;
use crate::store::{message_bytes, DiskRef, QueueLog, Store, SyncSource};

mod listing;
pub use listing::HeldInfo;

/// A message that is due, taken from the delayed store.
#[derive(Debug)]
pub struct Held {
    /// The message (its exchange is the delayed exchange).
    pub message: Arc<Message>,
    /// Its record in the delayed log, to settle once it is routed.
    pub disk: Option<DiskRef>,
}

/// A held message as the heap keeps it.
#[derive(Debug)]
struct Entry {
    due_ms: u64,
    seq: u64,
    /// The message while it fits the window; else it is only on disk.
    body: Option<Arc<Message>>,
    /// Its record, settled once the message is routed: a persistent
    /// message's, or that of a body kept on disk only.
    disk: Option<DiskRef>,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.due_ms, self.seq) == (other.due_ms, other.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.due_ms, self.seq).cmp(&(other.due_ms, other.seq))
    }
}

#[derive(Debug, Default)]
struct State {
    log: Option<QueueLog>,
    heap: BinaryHeap<Reverse<Entry>>,
    /// Bytes of the bodies held in memory.
    mem_bytes: u64,
    next_seq: u64,
    /// The earliest due time the housekeeping task will wake up for.
    wake_at: Option<u64>,
}

/// A vhost's delayed messages.
#[derive(Debug)]
pub struct Delayed {
    state: Mutex<State>,
    store: Arc<Store>,
    dir: PathBuf,
    chores: ChoreSender,
}

impl Delayed {
    /// Open the delayed log in `dir`, recovering what it holds.
    pub fn open(store: Arc<Store>, dir: PathBuf, chores: ChoreSender) -> io::Result<Self> {
        let mut state = State::default();
        if dir.exists() {
            let (mut log, report) = QueueLog::recover(&dir, store.segment_bytes)?;
            let mut items: VecDeque<super::message::QueuedMessage> = VecDeque::new();
            while log.tail_count() > 0 {
                if log.read_tail(store.window_bytes, |r| items.push_back(r.into())) == 0
                    && items.is_empty()
                {
                    break;
                }
                for m in items.drain(..) {
                    let entry = Entry {
                        due_ms: m.expires_at_ms.unwrap_or(0),
                        seq: m.seq,
                        body: Some(Arc::try_unwrap(m.message).map_or_else(|m| m, with_expiration)),
                        disk: m.disk,
                    };
                    state.keep(entry, store.window_bytes);
                }
            }
            state.next_seq = report.next_seq;
            state.log = Some(log);
        }
        Ok(Delayed {
            state: Mutex::new(state),
            store,
            dir,
            chores,
        })
    }

    /// Hold `message` until `due_ms`; a persistent one held by a durable
    /// exchange is stored first, any other one written to disk when it
    /// does not fit the window.
    pub fn hold(self: &Arc<Self>, message: Arc<Message>, due_ms: u64, durable: bool) -> Stored {
        let mut st = self.state.lock();
        let seq = st.next_seq;
        st.next_seq += 1;
        let persistent = durable && message.persistent;
        let fits = st.mem_bytes + message_bytes(&message) <= self.store.window_bytes;
        let mut entry = Entry {
            due_ms,
            seq,
            body: Some(message),
            disk: None,
        };
        let mut stored = Stored::Done;
        if persistent || !fits {
            if persistent && self.store.syncer.failed() {
                return Stored::Failed;
            }
            let Some(message) = entry.body.as_deref() else {
                return Stored::Failed;
            };
            match self.append(&mut st, seq, due_ms, message, persistent) {
                Ok(r) => {
                    entry.disk = Some(r);
                    if persistent {
                        stored = Stored::AfterSync(self.register_dirty(&mut st));
                    }
                }
                Err(e) if persistent => {
                    self.store.syncer.fail(&e);
                    return Stored::Failed;
                }
                // Not stored: it waits in memory (the memory alarm bounds
                // what a publisher can add).
                Err(e) => tracing::warn!(error = %e, "cannot write a delayed message to disk"),
            }
        }
        st.keep(entry, self.store.window_bytes);
        self.schedule(&mut st);
        stored
    }

    fn append(
        &self,
        st: &mut State,
        seq: u64,
        due_ms: u64,
        message: &Message,
        persistent: bool,
    ) -> io::Result<DiskRef> {
        if st.log.is_none() {
            st.log = Some(QueueLog::create(&self.dir, true, self.store.segment_bytes)?);
        }
        let log = st
            .log
            .as_mut()
            .ok_or_else(|| io::Error::other("delayed log missing"))?;
        log.append(seq, Some(due_ms), message, persistent, false)
    }

    fn register_dirty(self: &Arc<Self>, st: &mut State) -> u64 {
        let Some(log) = st.log.as_mut() else {
            return 0;
        };
        log.sync_ticket(&self.store.syncer, || {
            let me: Arc<dyn SyncSource> = self.clone();
            Arc::downgrade(&me)
        })
    }

    /// Ask the housekeeping task to wake up for the earliest due message.
    fn schedule(&self, st: &mut State) {
        let Some(Reverse(first)) = st.heap.peek() else {
            return;
        };
        if st.wake_at.is_none_or(|w| first.due_ms < w) {
            st.wake_at = Some(first.due_ms);
            let _ = self.chores.send(Chore::FireDelayed {
                at_ms: first.due_ms,
            });
        }
    }

    /// Make sure the housekeeping task knows the earliest due time (after
    /// recovery).
    pub fn reschedule(&self) {
        let mut st = self.state.lock();
        st.wake_at = None;
        self.schedule(&mut st);
    }

    /// Take the messages due by `now_ms`, on the wake-up asked for `at_ms`
    /// (a stale one, superseded by an earlier request, schedules nothing).
    /// Bodies on disk are read back, a window's worth per call: when more
    /// are due, the next wake-up is due at once.
    pub fn take_due(&self, now_ms: u64, at_ms: u64) -> Vec<Held> {
        let mut st = self.state.lock();
        let mut due = Vec::new();
        let mut read_back = 0;
        while read_back < self.store.window_bytes
            && st.heap.peek().is_some_and(|Reverse(e)| e.due_ms <= now_ms)
        {
            let Some(Reverse(entry)) = st.heap.pop() else {
                break;
            };
            if let Some(held) = st.held(entry, &mut read_back) {
                due.push(held);
            }
        }
        if st.wake_at.is_none_or(|w| w == at_ms) {
            st.wake_at = None;
            self.schedule(&mut st);
        }
        due
    }

    /// Routed and stored elsewhere: their records may go.
    pub fn settle(&self, refs: impl IntoIterator<Item = DiskRef>) {
        let mut st = self.state.lock();
        let Some(log) = st.log.as_mut() else {
            return;
        };
        for r in refs {
            if let Err(e) = log.settle(r) {
                tracing::error!(error = %e, "cannot record a delayed message as routed");
            }
        }
        if let Err(e) = log.flush_acks() {
            tracing::error!(error = %e, "cannot write delayed-log acks");
        }
    }

    /// Messages held.
    pub fn len(&self) -> usize {
        self.state.lock().heap.len()
    }

    /// Whether none are held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Messages whose bodies are held in memory.
    pub fn in_memory(&self) -> usize {
        let st = self.state.lock();
        st.heap.iter().filter(|Reverse(e)| e.body.is_some()).count()
    }
}

impl State {
    /// Put an entry in the heap, its body in memory only while the window
    /// has room for it and its record is on disk otherwise.
    fn keep(&mut self, mut entry: Entry, window_bytes: u64) {
        if let Some(body) = &entry.body {
            let size = message_bytes(body);
            match self.mem_bytes + size <= window_bytes || entry.disk.is_none() {
                true => self.mem_bytes += size,
                false => entry.body = None,
            }
        }
        self.heap.push(Reverse(entry));
    }

    /// A due entry as a message to route, its body read back from disk if
    /// it was not in memory (counted in `read_back`).
    fn held(&mut self, entry: Entry, read_back: &mut u64) -> Option<Held> {
        let disk = entry.disk;
        let message = match entry.body {
            Some(body) => {
                self.mem_bytes = self.mem_bytes.saturating_sub(message_bytes(&body));
                body
            }
            None => {
                let (r, log) = disk.zip(self.log.as_mut())?;
                match read_body(log, r, read_back) {
                    Ok(m) => m,
                    Err(e) => {
                        // A persistent one stays in the log and comes back
                        // after a restart; any other one is lost.
                        tracing::error!(error = %e, "cannot read a delayed message back");
                        if !r.logged {
                            let _ = log.settle(r);
                        }
                        return None;
                    }
                }
            }
        };
        Some(Held { message, disk })
    }
}

/// A held message's body read back from `log` (counted in `read`).
fn read_body(log: &mut QueueLog, r: DiskRef, read: &mut u64) -> io::Result<Arc<Message>> {
    let m = log.read_at(r)?;
    *read += message_bytes(&m);
    Ok(with_expiration(m))
}

/// A message read back from the log, with its per-message TTL (which
/// applies in the queues it is routed to) taken from its properties again.
fn with_expiration(mut m: Message) -> Arc<Message> {
    m.expiration_ms = super::message::expiration_ms(&m.properties);
    Arc::new(m)
}

impl SyncSource for Delayed {
    fn flush_for_sync(&self, out: &mut Vec<Arc<File>>) -> io::Result<()> {
        match self.state.lock().log.as_mut() {
            Some(log) => log.flush_for_sync(out),
            None => Ok(()),
        }
    }
}

/// The `x-delay` header of a message, in milliseconds, when positive.
pub fn delay_ms(headers: Option<&amq_protocol::types::FieldTable>) -> Option<u64> {
    let v = headers?.inner().get("x-delay")?;
    let ms = super::arguments::as_int(v)?;
    (ms > 0).then(|| u64::try_from(ms).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests;
