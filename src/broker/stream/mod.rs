//! Stream queues (`x-queue-type: stream`): an append-only log that is
//! never settled message by message, read by any number of consumers, each
//! from an offset of its own. A [`Queue`] of this kind hands every call to
//! its `StreamQueue`; the connection layer sees one queue interface.
//!
//! Consumers: each has a cursor into the log and takes messages while it
//! has prefetch credit and its connection has room (acks are credit and
//! nothing else; nacks and rejects never requeue). A consumer that tracks
//! its offset stores the offset of each ack under its consumer tag and
//! resumes after it on its next consume, across reconnects and restarts.
//!
//! All state is under one mutex, never held across `.await`; log reads
//! behind the in-memory tail are buffered reads with read-ahead (see
//! `store::stream_log`). Readers see only what is written to the OS: a
//! publish leaves its record buffered and schedules a *pass* (a task of
//! the stream's own, one at a time) that writes the buffer, then feeds the
//! readers, so publishes arriving together cost one write, and no offset a
//! reader saw can be given to another message after a crash. A pass also
//! picks up a long filtered scan where a reader's budget stopped it, and
//! retention that a policy changed (never under the topology lock).

use std::fs::File;
use std::sync::Arc;

use parking_lot::Mutex;

use super::consumer::Consumer;
use super::message::{Message, QueuedMessage};
use super::policy::Matched;
use super::queue::kind::{Effect, Effects};
use super::queue::{Queue, Stored};
use super::queue_policy::QueuePolicy;
use crate::protocol::AmqpError;
use crate::store::stream_log::{Cursor, LogStats, StreamLog};
use crate::store::stream_offsets::StreamOffsets;
use crate::store::{Store, SyncSource};

mod interface;
mod offset_header;
pub mod options;
mod reader;
#[cfg(test)]
mod tests;

use options::{ConsumeOptions, Retention, Start};
use reader::{Fed, Reader};

#[derive(Debug)]
struct StreamState {
    log: StreamLog,
    offsets: StreamOffsets,
    readers: Vec<Reader>,
    retention: Retention,
    deleted: bool,
    /// A pass is scheduled (see the module doc).
    pass_scheduled: bool,
    /// The pass applies retention (a policy changed it).
    retention_due: bool,
    /// Tracked places that may not move past these offsets: deliveries
    /// taken back unacked (a consumer timeout, a closed channel) until
    /// a consumer under the tag comes again.
    holds: ahash::AHashMap<Arc<str>, u64>,
    /// The last pass could not write (the disk is full): passes wait for
    /// the next publish or ack rather than retry at once, over and over.
    write_failed: bool,
    /// The policies applied, and what they make of the arguments (None:
    /// none applied yet, the arguments alone).
    applied: Matched,
    policy: Option<QueuePolicy>,
}

/// The stream half of a stream queue.
#[derive(Debug)]
pub struct StreamQueue {
    state: Mutex<StreamState>,
    store: Arc<Store>,
}

/// A consumer's place, for the API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReaderInfo {
    /// Its consumer tag.
    pub tag: Arc<str>,
    /// Its connection and channel.
    pub connection: u64,
    /// Channel number.
    pub channel: u16,
    /// The next offset it will read.
    pub offset: u64,
    /// Messages between it and the end of the stream.
    pub lag: u64,
}

/// What a stream holds, for the API.
#[derive(Clone, Debug, Default)]
pub struct StreamInfo {
    /// Offsets, segments and bytes.
    pub log: LogStats,
    /// Each consumer's place.
    pub readers: Vec<ReaderInfo>,
    /// Tracked places (name, the next offset it reads).
    pub tracked: Vec<(String, u64)>,
    /// Retention in force.
    pub retention: Retention,
}

impl StreamQueue {
    /// A stream over `log` with its tracked `offsets`.
    pub fn new(
        log: StreamLog,
        offsets: StreamOffsets,
        retention: Retention,
        store: Arc<Store>,
    ) -> Self {
        StreamQueue {
            state: Mutex::new(StreamState {
                log,
                offsets,
                readers: Vec::new(),
                retention,
                deleted: false,
                pass_scheduled: false,
                retention_due: false,
                holds: Default::default(),
                write_failed: false,
                applied: Default::default(),
                policy: None,
            }),
            store,
        }
    }

    /// Append a published message; confirmed after the sync round that
    /// writes it (every stream message is stored, persistent or not).
    pub fn publish(
        &self,
        queue: &Arc<Queue>,
        message: Arc<Message>,
        now: u64,
        fx: &mut Effects,
    ) -> Stored {
        let mut st = self.state.lock();
        if st.deleted {
            return Stored::Done;
        }
        if self.store.syncer.failed() {
            return Stored::Failed;
        }
        // Taken before the append, which may write (and so move the mark
        // past a reader waiting at the end without feeding it).
        let end = st.log.written_end();
        if let Err(e) = st.log.append(message, now) {
            tracing::error!(queue = %queue.name, error = %e, "cannot append to a stream");
            self.store.syncer.fail(&e);
            return Stored::Failed;
        }
        queue.stats.published();
        let ticket = st.log.sync_ticket(&self.store.syncer, || {
            let me: Arc<dyn SyncSource> = queue.clone();
            Arc::downgrade(&me)
        });
        let r = st.retention;
        st.log.enforce_retention(r.max_bytes, r.max_age_ms, now);
        if st.readers.iter().any(|r| r.cursor.next >= end) {
            schedule_pass(&mut st, fx);
        }
        Stored::AfterSync(ticket)
    }

    /// Register a consumer reading from where `options` (or its tracked
    /// offset) says.
    pub fn add_consumer(
        &self,
        queue: &Arc<Queue>,
        consumer: Consumer,
        options: ConsumeOptions,
        fx: &mut Effects,
    ) -> Result<(), AmqpError> {
        let mut st = self.state.lock();
        if st.deleted {
            return Err(AmqpError::not_found(format!(
                "no queue '{}' in vhost '{}'",
                queue.name, queue.vhost
            )));
        }
        let tracked = match options.track && !options.explicit_start {
            true => st.offsets.get(&consumer.tag),
            false => None,
        };
        let next = match tracked {
            Some(next) => next,
            None => self.start_offset(&mut st.log, options.start)?,
        };
        st.holds.remove(&consumer.tag);
        if options.track && tracked.is_none() {
            // Its place from now on: a reader that stops before its first
            // ack resumes here, not at the then-current end. An explicit
            // offset moves a tracked place (back, too).
            if let Err(e) = st.offsets.store(&consumer.tag, next) {
                tracing::warn!(tag = %consumer.tag, error = %e, "cannot store a stream consumer's offset");
            }
        }
        st.readers.push(Reader {
            consumer,
            cursor: Cursor::at(next),
            options,
        });
        dispatch_locked(queue, &mut st, fx);
        Ok(())
    }

    fn start_offset(&self, log: &mut StreamLog, start: Start) -> Result<u64, AmqpError> {
        Ok(match start {
            Start::First => log.first_offset(),
            Start::Next => log.next_offset(),
            Start::Last => log.next_offset().saturating_sub(1).max(log.first_offset()),
            // Past the end: the consumer waits for that offset (RabbitMQ).
            Start::Offset(n) => n,
            Start::Time(ms) => log.offset_at_time(ms).map_err(|e| {
                tracing::error!(error = %e, "cannot look up a stream offset by time");
                AmqpError::new(
                    crate::protocol::ErrorKind::InternalError,
                    "cannot read the stream",
                )
            })?,
        })
    }

    /// Remove consumers by their connection's ids for them; true if any was.
    pub fn remove_consumers(&self, conn_id: u64, consumer_ids: &[u64]) -> bool {
        let mut st = self.state.lock();
        let before = st.readers.len();
        st.readers
            .retain(|r| !(r.consumer.conn.id == conn_id && consumer_ids.contains(&r.consumer.id)));
        st.readers.len() != before
    }

    /// Hand each consumer what its credit allows.
    pub fn dispatch(&self, queue: &Arc<Queue>, fx: &mut Effects) {
        let mut st = self.state.lock();
        dispatch_locked(queue, &mut st, fx);
    }

    /// The pass: write what publishes left buffered, apply retention if
    /// due, feed the readers.
    pub fn pass(&self, queue: &Arc<Queue>, now: u64, fx: &mut Effects) {
        let mut st = self.state.lock();
        st.pass_scheduled = false;
        if st.deleted {
            return;
        }
        let written = st.log.flush();
        st.write_failed = written.is_err();
        if let Err(e) = written {
            // The sync thread retries it (and fails the store if it must).
            tracing::warn!(queue = %queue.name, error = %e, "cannot write a stream segment");
        }
        if std::mem::take(&mut st.retention_due) {
            let r = st.retention;
            st.log.enforce_retention(r.max_bytes, r.max_age_ms, now);
        }
        dispatch_locked(queue, &mut st, fx);
    }

    /// Acks of a consumer under `tag`: a tracking consumer's place (the
    /// next offset to read, stored under its tag) moves to `next`, the
    /// offset after which it has acked everything.
    pub fn acked(&self, tag: &str, next: u64) {
        let mut st = self.state.lock();
        if st.deleted {
            return;
        }
        let Some(stored) = st.offsets.get(tag) else {
            return;
        };
        // A reader under the same tag that does not track (it gave an
        // offset) leaves the tracked place alone; a cancelled tracking
        // reader's late acks still count.
        let mut same_tag = st.readers.iter().filter(|r| &*r.consumer.tag == tag);
        let untracked = same_tag.clone().next().is_some() && !same_tag.any(|r| r.options.track);
        let next = st.holds.get(tag).map_or(next, |&held| next.min(held));
        if untracked || stored >= next {
            return;
        }
        if let Err(e) = st.offsets.store(tag, next) {
            tracing::warn!(tag, error = %e, "cannot store a stream consumer's offset");
        }
    }

    /// Deliveries to `tag` from `offset` on were taken back unacked: its
    /// tracked place stays before them until a consumer under the tag
    /// comes again (and reads them again).
    pub fn taken_back(&self, tag: &Arc<str>, offset: u64) {
        let mut st = self.state.lock();
        if st.offsets.get(tag).is_none() {
            return;
        }
        let held = st.holds.entry(tag.clone()).or_insert(offset);
        *held = (*held).min(offset);
    }

    /// Messages kept.
    pub fn len(&self) -> u64 {
        self.state.lock().log.len()
    }

    /// Whether no message is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Consumers reading.
    pub fn consumer_count(&self) -> usize {
        self.state.lock().readers.len()
    }

    /// Offsets and sizes, and the number of consumers (for gauges, with
    /// nothing copied).
    pub fn sizes(&self) -> (LogStats, usize) {
        let st = self.state.lock();
        (st.log.stats(), st.readers.len())
    }

    /// Offsets, sizes and consumers, for the API.
    pub fn info(&self) -> StreamInfo {
        let st = self.state.lock();
        let end = st.log.next_offset();
        StreamInfo {
            log: st.log.stats(),
            readers: st
                .readers
                .iter()
                .map(|r| ReaderInfo {
                    tag: r.consumer.tag.clone(),
                    connection: r.consumer.conn.id,
                    channel: r.consumer.channel,
                    offset: r.cursor.next,
                    lag: end.saturating_sub(r.cursor.next),
                })
                .collect(),
            tracked: st.offsets.iter().map(|(n, o)| (n.to_string(), o)).collect(),
            retention: st.retention,
        }
    }

    /// Policies changed: retention from the declared arguments and the
    /// matched policies (for the size the lower of both; for the age and
    /// the segment size the argument wins, as in RabbitMQ), applied by the
    /// next pass.
    pub fn apply_policy(&self, queue: &Queue, matched: Matched, fx: &mut Effects) {
        let mut st = self.state.lock();
        if st.deleted || st.applied == matched {
            return;
        }
        let policy = matched.apply(&queue.declared);
        let retention = options::retention_with_policy(
            &queue.arguments,
            policy.max_length_bytes,
            &matched.definition(),
        );
        st.policy = Some(policy);
        st.applied = matched;
        st.retention = retention;
        st.log.set_max_segment_bytes(retention.segment_bytes);
        // Files are deleted by a pass, not here under the topology lock.
        st.retention_due = true;
        schedule_pass(&mut st, fx);
    }

    /// The policies applied (for the API).
    pub fn applied_policy(&self) -> Matched {
        self.state.lock().applied.clone()
    }

    /// The consumer timeout in force (`declared`: the arguments'), ms.
    pub fn consumer_timeout_ms(&self, declared: &QueuePolicy) -> Option<u64> {
        let st = self.state.lock();
        st.policy.as_ref().unwrap_or(declared).consumer_timeout_ms
    }

    /// The queue was deleted: cancel consumers; its files go with it.
    pub fn delete(&self, fx: &mut Effects) {
        let mut st = self.state.lock();
        if st.deleted {
            return;
        }
        st.deleted = true;
        fx.push(Effect::RemoveDir(st.log.dir().to_path_buf()));
        for r in st.readers.drain(..) {
            fx.push(Effect::Cancel(r.consumer));
        }
    }

    /// Whether the queue was deleted.
    pub fn is_deleted(&self) -> bool {
        self.state.lock().deleted
    }

    /// Write buffers to the OS and list the files to sync.
    pub fn flush_for_sync(&self, out: &mut Vec<Arc<File>>) -> std::io::Result<()> {
        let mut st = self.state.lock();
        if st.deleted {
            // Its directory is gone: writing would bring it back.
            return Ok(());
        }
        st.log.flush_for_sync(out)
    }
}

fn dispatch_locked(queue: &Arc<Queue>, st: &mut StreamState, fx: &mut Effects) {
    let StreamState { log, readers, .. } = st;
    let mut unfinished = false;
    readers.retain_mut(|r| match r.feed(queue, log) {
        Fed::Caught => true,
        Fed::MoreToScan => {
            unfinished = true;
            true
        }
        Fed::Gone => false,
    });
    // A reader that caught up with what is written while publishes are
    // still buffered needs a pass to write them (their publishes did not
    // schedule one if it was behind then).
    let end = st.log.written_end();
    let buffered = st.log.next_offset() > end;
    let waiting = buffered && !st.write_failed && st.readers.iter().any(|r| r.cursor.next >= end);
    if unfinished || waiting {
        schedule_pass(st, fx);
    }
}

/// Have a pass run soon, once (see the module doc).
fn schedule_pass(st: &mut StreamState, fx: &mut Effects) {
    if !st.pass_scheduled {
        st.pass_scheduled = true;
        fx.push(Effect::StreamPass);
    }
}

/// The properties a delivery from a stream carries: as published, plus
/// the `x-stream-offset` header.
pub fn delivery_properties(m: &QueuedMessage) -> bytes::Bytes {
    let raw = &m.message.properties;
    offset_header::with_offset(raw, m.seq).unwrap_or_else(|| {
        super::message::with_header(
            raw,
            "x-stream-offset",
            amq_protocol::types::AMQPValue::LongLongInt(m.seq as i64),
        )
    })
}
