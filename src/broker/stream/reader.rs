//! One consumer of a stream: its cursor and options, and the pass that
//! hands it what its credit and its connection allow.
//!
//! A pass reads at most `SCAN_BYTES_PER_PASS` of records for one reader
//! (a filter that refuses most of a long stream skips records by their
//! properties, without copying bodies), so a pass never holds the stream
//! for long: the caller hands the rest to a task of its own.

use std::sync::Arc;

use crate::broker::consumer::{ConnEvent, Consumer, Delivery};
use crate::broker::message::QueuedMessage;
use crate::broker::queue::Queue;
use crate::store::stream_log::{Cursor, Entry, Filter, Read, StreamLog};

use super::options::{passes, ConsumeOptions};

/// Record bytes one pass reads for one reader at most.
const SCAN_BYTES_PER_PASS: u64 = 1 << 20;

/// A consumer reading the stream.
#[derive(Debug)]
pub struct Reader {
    pub consumer: Consumer,
    pub cursor: Cursor,
    pub options: ConsumeOptions,
}

/// How a reader's pass ended.
pub enum Fed {
    /// It has no credit or room, or read to the end.
    Caught,
    /// It stopped at the pass's budget with more to read.
    MoreToScan,
    /// Its connection is gone, or its stream cannot be read: drop it.
    Gone,
}

impl Reader {
    /// Give this consumer what it can take now.
    pub fn feed(&mut self, queue: &Arc<Queue>, log: &mut StreamLog) -> Fed {
        let mut scanned = 0;
        while scanned < SCAN_BYTES_PER_PASS {
            let c = &self.consumer;
            if c.credit.blocker().is_some() || !c.conn.has_room() {
                self.cursor.park();
                return Fed::Caught;
            }
            let options = &self.options;
            let accept = |props: &[u8]| passes(options, filter_value(props).as_deref());
            let filter: Option<Filter<'_>> = match options.filter {
                Some(_) => Some(&accept),
                None => None,
            };
            let entry = match log.read(&mut self.cursor, filter) {
                Ok(Read::Entry(e)) => e,
                Ok(Read::Skipped(bytes)) => {
                    scanned += bytes;
                    continue;
                }
                Ok(Read::End) => return Fed::Caught,
                Err(e) => {
                    tracing::error!(queue = %queue.name, consumer = %c.tag, error = %e, "cannot read a stream; its consumer is cancelled");
                    self.cancel();
                    return Fed::Gone;
                }
            };
            scanned += crate::store::message_bytes(&entry.message);
            if c.credit.try_acquire().is_err() {
                // Another queue of the channel took the last unit meanwhile.
                self.cursor = Cursor::at(entry.offset);
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

    /// Tell the client its consumer is gone (basic.cancel).
    pub fn cancel(&self) {
        let c = &self.consumer;
        let _ = c.conn.send(ConnEvent::ConsumerCancelled {
            channel: c.channel,
            consumer_id: c.id,
            consumer_tag: c.tag.clone(),
        });
    }
}

/// A stream message as a queued one: `seq` is its offset; it has no record
/// of its own to settle.
fn delivered(e: Entry) -> QueuedMessage {
    let mut m = QueuedMessage::unqueued(e.message);
    m.seq = e.offset;
    m
}

/// The `x-stream-filter-value` header of encoded properties, if any.
fn filter_value(props: &[u8]) -> Option<String> {
    let props = crate::broker::message::decode_properties(props)?;
    let v = props
        .headers()
        .as_ref()?
        .inner()
        .get("x-stream-filter-value")?
        .clone();
    crate::broker::arguments::as_text(&v)
}
