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
//! Held messages wait in memory (a heap by due time) as well.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::Mutex;

use super::chores::{Chore, ChoreSender};
use super::message::Message;
use super::queue::Stored;
use crate::store::{DiskRef, QueueLog, Store, SyncSource};

/// A message held until it is due.
#[derive(Debug)]
pub struct Held {
    /// When it is due (Unix milliseconds).
    pub due_ms: u64,
    seq: u64,
    /// The message (its exchange is the delayed exchange).
    pub message: Arc<Message>,
    /// Its record in the delayed log.
    pub disk: Option<DiskRef>,
}

impl PartialEq for Held {
    fn eq(&self, other: &Self) -> bool {
        (self.due_ms, self.seq) == (other.due_ms, other.seq)
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Held {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.due_ms, self.seq).cmp(&(other.due_ms, other.seq))
    }
}

#[derive(Debug, Default)]
struct State {
    log: Option<QueueLog>,
    heap: BinaryHeap<Reverse<Held>>,
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
            let mut items = std::collections::VecDeque::new();
            log.read_tail(u64::MAX, &mut items);
            for m in items {
                state.heap.push(Reverse(Held {
                    due_ms: m.expires_at_ms.unwrap_or(0),
                    seq: m.seq,
                    message: m.message,
                    disk: m.disk,
                }));
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
    /// exchange is stored first.
    pub fn hold(self: &Arc<Self>, message: Arc<Message>, due_ms: u64, durable: bool) -> Stored {
        let mut st = self.state.lock();
        let seq = st.next_seq;
        st.next_seq += 1;
        let mut stored = Stored::Done;
        let mut disk = None;
        if durable && message.persistent {
            if self.store.syncer.failed() {
                return Stored::Failed;
            }
            match self.append(&mut st, seq, due_ms, &message) {
                Ok(r) => {
                    disk = Some(r);
                    stored = Stored::AfterSync(self.register_dirty(&mut st));
                }
                Err(e) => {
                    self.store.syncer.fail(&e);
                    return Stored::Failed;
                }
            }
        }
        st.heap.push(Reverse(Held {
            due_ms,
            seq,
            message,
            disk,
        }));
        self.schedule(&mut st);
        stored
    }

    fn append(
        &self,
        st: &mut State,
        seq: u64,
        due_ms: u64,
        message: &Message,
    ) -> io::Result<DiskRef> {
        if st.log.is_none() {
            st.log = Some(QueueLog::create(&self.dir, true, self.store.segment_bytes)?);
        }
        let log = st
            .log
            .as_mut()
            .ok_or_else(|| io::Error::other("delayed log missing"))?;
        log.append(seq, Some(due_ms), message, true, false)
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
    pub fn take_due(&self, now_ms: u64, at_ms: u64) -> Vec<Held> {
        let mut st = self.state.lock();
        let mut due = Vec::new();
        while st.heap.peek().is_some_and(|Reverse(h)| h.due_ms <= now_ms) {
            if let Some(Reverse(h)) = st.heap.pop() {
                due.push(h);
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
