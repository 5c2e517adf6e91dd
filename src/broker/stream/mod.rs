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
//! `store::stream_log`). A pass reads at most `SCAN_PER_PASS` records per
//! consumer, so a filter that skips most of a long stream cannot hold the
//! lock for long: the rest of the scan is handed to a task of its own.

use std::fs::File;
use std::sync::Arc;

use parking_lot::Mutex;

use super::consumer::{ConnEvent, Consumer, Delivery};
use super::message::{now_ms, Message, QueuedMessage};
use super::queue::{Queue, Stored};
use crate::protocol::AmqpError;
use crate::store::stream_log::{Cursor, Entry, LogStats, StreamLog};
use crate::store::stream_offsets::StreamOffsets;
use crate::store::{Store, SyncSource};

mod offset_header;
pub mod options;

use options::{passes, ConsumeOptions, Retention, Start};

/// Records one dispatch pass reads for one consumer at most.
const SCAN_PER_PASS: usize = 4_096;

/// A consumer reading the stream.
#[derive(Debug)]
struct Reader {
    consumer: Consumer,
    cursor: Cursor,
    options: ConsumeOptions,
}

#[derive(Debug)]
struct StreamState {
    log: StreamLog,
    offsets: StreamOffsets,
    readers: Vec<Reader>,
    retention: Retention,
    deleted: bool,
    /// A task will dispatch again (a pass stopped at `SCAN_PER_PASS`).
    rescan_scheduled: bool,
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
                rescan_scheduled: false,
            }),
            store,
        }
    }

    /// Append a published message; confirmed after the sync round that
    /// writes it (every stream message is stored, persistent or not).
    pub fn publish(&self, queue: &Arc<Queue>, message: Arc<Message>) -> Stored {
        let mut st = self.state.lock();
        if st.deleted {
            return Stored::Done;
        }
        if self.store.syncer.failed() {
            return Stored::Failed;
        }
        let now = now_ms();
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
        self.dispatch_locked(queue, &mut st);
        Stored::AfterSync(ticket)
    }

    /// Register a consumer reading from where `options` (or its tracked
    /// offset) says.
    pub fn add_consumer(
        &self,
        queue: &Arc<Queue>,
        consumer: Consumer,
        options: ConsumeOptions,
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
        self.dispatch_locked(queue, &mut st);
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
    pub fn dispatch(&self, queue: &Arc<Queue>) {
        let mut st = self.state.lock();
        self.dispatch_locked(queue, &mut st);
    }

    fn dispatch_locked(&self, queue: &Arc<Queue>, st: &mut StreamState) {
        let StreamState { log, readers, .. } = st;
        let mut unfinished = false;
        readers.retain_mut(|r| match feed(queue, log, r) {
            Fed::Caught => true,
            Fed::MoreToScan => {
                unfinished = true;
                true
            }
            Fed::Gone => false,
        });
        if unfinished && !st.rescan_scheduled {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                st.rescan_scheduled = true;
                let q = queue.clone();
                rt.spawn(async move {
                    tokio::task::yield_now().await;
                    q.stream_rescan();
                });
            }
        }
    }

    /// The task a long scan handed its rest to.
    pub fn rescan(&self, queue: &Arc<Queue>) {
        let mut st = self.state.lock();
        st.rescan_scheduled = false;
        self.dispatch_locked(queue, &mut st);
    }

    /// An ack of the message at `offset`: a tracking consumer's place
    /// (the next offset to read, stored under its tag) moves past it.
    pub fn acked(&self, tag: &str, offset: u64) {
        let mut st = self.state.lock();
        let Some(stored) = st.offsets.get(tag) else {
            return;
        };
        // A reader under the same tag that does not track (it gave an
        // offset) leaves the tracked place alone; a cancelled tracking
        // reader's late acks still count.
        let mut same_tag = st.readers.iter().filter(|r| &*r.consumer.tag == tag);
        let untracked = same_tag.clone().next().is_some() && !same_tag.any(|r| r.options.track);
        if untracked || stored > offset {
            return;
        }
        if let Err(e) = st.offsets.store(tag, offset + 1) {
            tracing::warn!(tag, error = %e, "cannot store a stream consumer's offset");
        }
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

    /// Policies changed: retention from the declared `arguments` and the
    /// matched policies (`max_bytes` already the lower of both; for the
    /// age and the segment size the argument wins, as in RabbitMQ),
    /// applied at once.
    pub fn apply_policy(
        &self,
        arguments: &amq_protocol::types::FieldTable,
        max_bytes: Option<u64>,
        matched: &super::policy::Matched,
    ) {
        let def = matched.definition();
        let declared = Retention::from_arguments(arguments, "", "").unwrap_or_default();
        let policy_age = def
            .get("max-age")
            .and_then(|v| v.as_str())
            .and_then(options::parse_age);
        let policy_segment = def
            .get("stream-max-segment-size-bytes")
            .and_then(|v| v.as_u64());
        let segment_arg = arguments.contains_key("x-stream-max-segment-size-bytes");
        let retention = Retention {
            max_bytes,
            max_age_ms: declared.max_age_ms.or(policy_age),
            segment_bytes: match (segment_arg, policy_segment) {
                (false, Some(b)) => b.clamp(options::MIN_SEGMENT_BYTES, options::MAX_SEGMENT_BYTES),
                _ => declared.segment_bytes,
            },
        };
        let mut st = self.state.lock();
        st.retention = retention;
        st.log.set_max_segment_bytes(retention.segment_bytes);
        st.log
            .enforce_retention(retention.max_bytes, retention.max_age_ms, now_ms());
    }

    /// The queue was deleted: cancel consumers; its files go with it.
    pub fn mark_deleted(&self) -> u32 {
        let mut st = self.state.lock();
        if st.deleted {
            return 0;
        }
        st.deleted = true;
        crate::store::reaper::remove_dir(st.log.dir());
        for r in st.readers.drain(..) {
            let c = r.consumer;
            let _ = c.conn.send(ConnEvent::ConsumerCancelled {
                channel: c.channel,
                consumer_id: c.id,
                consumer_tag: c.tag.clone(),
            });
        }
        st.log.len() as u32
    }

    /// Whether the queue was deleted.
    pub fn is_deleted(&self) -> bool {
        self.state.lock().deleted
    }

    /// Write buffers to the OS and list the files to sync.
    pub fn flush_for_sync(&self, out: &mut Vec<Arc<File>>) -> std::io::Result<()> {
        self.state.lock().log.flush_for_sync(out)
    }
}

/// How a consumer's pass ended.
enum Fed {
    /// It has no credit or room, or read to the end.
    Caught,
    /// It stopped at `SCAN_PER_PASS` with more to read.
    MoreToScan,
    /// Its connection is gone.
    Gone,
}

/// Give one consumer what it can take now.
fn feed(queue: &Arc<Queue>, log: &mut StreamLog, r: &mut Reader) -> Fed {
    for _ in 0..SCAN_PER_PASS {
        let c = &r.consumer;
        if c.credit.blocker().is_some() || !c.conn.has_room() {
            return Fed::Caught;
        }
        let entry = match log.read(&mut r.cursor) {
            Ok(Some(e)) => e,
            Ok(None) => return Fed::Caught,
            Err(e) => {
                tracing::error!(queue = %queue.name, error = %e, "cannot read a stream");
                return Fed::Caught;
            }
        };
        if r.options.filter.is_some() && !passes(&r.options, filter_value(&entry).as_deref()) {
            continue;
        }
        if c.credit.try_acquire().is_err() {
            // Another queue of the channel took the last unit meanwhile.
            r.cursor = Cursor::at(entry.offset);
            return Fed::Caught;
        }
        let event = ConnEvent::Deliver(Delivery {
            channel: c.channel,
            consumer_id: c.id,
            consumer_tag: c.tag.clone(),
            queue: Some(queue.clone()),
            message: delivered(entry),
            credit: Some(c.credit.clone()),
        });
        if c.conn.send(event).is_err() {
            c.credit.release();
            return Fed::Gone;
        }
    }
    Fed::MoreToScan
}

/// A stream message as a queued one: `seq` is its offset; it has no record
/// of its own to settle.
fn delivered(e: Entry) -> QueuedMessage {
    let mut m = QueuedMessage::unqueued(e.message);
    m.seq = e.offset;
    m
}

/// The `x-stream-filter-value` header of a message, if it has one.
fn filter_value(e: &Entry) -> Option<String> {
    let props = super::message::decode_properties(&e.message.properties)?;
    let v = props
        .headers()
        .as_ref()?
        .inner()
        .get("x-stream-filter-value")?
        .clone();
    crate::broker::arguments::as_text(&v)
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
