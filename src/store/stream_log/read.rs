//! Reading a stream: cursors, the in-memory tail or a segment reader with
//! read-ahead, lookups by time, and filtered reads that skip a record by
//! its properties without copying its body.
//!
//! Readers see offsets below the log's `written` mark only (see
//! [`StreamLog::written_end`]). A cursor holds a segment reader (up to
//! three 256 KiB buffers) while it reads from disk; at most
//! `OPEN_READERS_BUDGET` of them are kept across the broker by readers
//! that are waiting (for credit or a full connection), the others drop
//! theirs and read their chunk again when they go on.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::{corrupt, Entry, SegmentInfo, StreamLog};
use crate::store::record::{self, RecordMeta};
use crate::store::segment::{ReadOutcome, SegmentReader};

/// Segment readers that waiting cursors keep open, broker-wide.
const OPEN_READERS_BUDGET: usize = 64;
static OPEN_READERS: AtomicUsize = AtomicUsize::new(0);

/// A cursor's open segment: the reader, the file position of the cursor's
/// next record, and its place in the budget.
#[derive(Debug)]
struct DiskPlace {
    reader: SegmentReader,
    pos: u64,
}

impl DiskPlace {
    fn new(reader: SegmentReader, pos: u64) -> Self {
        OPEN_READERS.fetch_add(1, Ordering::Relaxed);
        DiskPlace { reader, pos }
    }
}

impl Drop for DiskPlace {
    fn drop(&mut self) {
        OPEN_READERS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A reader's position in the log.
#[derive(Debug)]
pub struct Cursor {
    /// The next offset to read.
    pub next: u64,
    disk: Option<DiskPlace>,
}

impl Cursor {
    /// A cursor at `offset`.
    pub fn at(offset: u64) -> Cursor {
        Cursor {
            next: offset,
            disk: None,
        }
    }

    /// The cursor's reader waits: it lets go of its segment reader if too
    /// many are kept open.
    pub fn park(&mut self) {
        if self.disk.is_some() && OPEN_READERS.load(Ordering::Relaxed) > OPEN_READERS_BUDGET {
            self.disk = None;
        }
    }
}

/// Which records a read takes, by their encoded properties.
pub type Filter<'a> = &'a dyn Fn(&[u8]) -> bool;

/// What a read found.
#[derive(Debug)]
pub enum Read {
    /// The message at the cursor.
    Entry(Entry),
    /// A record the filter refused, and its length: the cursor moved on.
    Skipped(u64),
    /// Nothing (more) to read now.
    End,
}

impl StreamLog {
    /// The message at the cursor, moving it on (a cursor behind the kept
    /// head jumps to the head). With `accept`, a record whose encoded
    /// properties it refuses is skipped without copying its body.
    pub fn read(&mut self, cursor: &mut Cursor, accept: Option<Filter<'_>>) -> io::Result<Read> {
        let first = self.first_offset();
        if cursor.next < first {
            cursor.next = first;
            cursor.disk = None;
        }
        if cursor.next >= self.written {
            return Ok(Read::End);
        }
        if let Some(front) = self.tail.front() {
            if cursor.next >= front.offset {
                let e = &self.tail[(cursor.next - front.offset) as usize];
                cursor.next += 1;
                cursor.disk = None;
                if accept.is_some_and(|f| !f(&e.message.properties)) {
                    return Ok(Read::Skipped(crate::store::message_bytes(&e.message)));
                }
                return Ok(Read::Entry(e.clone()));
            }
        }
        self.read_disk(cursor, accept)
    }

    /// The segment holding `offset` (an index into `closed`, or None for
    /// the active one) and the readable end of its data.
    fn segment_of(&self, offset: u64) -> (Option<usize>, u32, u64) {
        let i = self.closed.partition_point(|s| s.next <= offset);
        match self.closed.get(i) {
            Some(s) => (Some(i), s.id, s.end),
            // Of the active segment, only what was written.
            None => (
                None,
                self.active.id,
                self.writer.len() - self.writer.buffered() as u64,
            ),
        }
    }

    fn info(&self, at: Option<usize>) -> &SegmentInfo {
        at.and_then(|i| self.closed.get(i)).unwrap_or(&self.active)
    }

    fn read_disk(&mut self, cursor: &mut Cursor, accept: Option<Filter<'_>>) -> io::Result<Read> {
        let target = cursor.next;
        let (at, id, end) = self.segment_of(target);
        if cursor.disk.as_ref().is_none_or(|d| d.reader.id != id) {
            let start = self.info(at).start_for(|p| p.offset > target);
            cursor.disk = Some(DiskPlace::new(SegmentReader::open(&self.dir, id)?, start));
        }
        let Some(place) = cursor.disk.as_mut() else {
            return Err(corrupt(&self.dir, id, 0));
        };
        while place.pos < end {
            let at = place.pos;
            let ReadOutcome::Record(payload, len) = place.reader.read(at, end)? else {
                return Err(corrupt(&self.dir, id, at));
            };
            place.pos += len;
            let meta = record::meta(payload).ok_or_else(|| corrupt(&self.dir, id, at))?;
            if meta.seq < target {
                continue;
            }
            cursor.next = meta.seq + 1;
            let done = place.pos >= end;
            let props = record::properties(payload).ok_or_else(|| corrupt(&self.dir, id, at))?;
            let read = match accept.is_some_and(|f| !f(props)) {
                true => Read::Skipped(len),
                false => {
                    let (meta, message) =
                        record::decode(payload).ok_or_else(|| corrupt(&self.dir, id, at))?;
                    Read::Entry(Entry {
                        offset: meta.seq,
                        timestamp_ms: meta.expires_at_ms.unwrap_or(0),
                        message: Arc::new(message),
                    })
                }
            };
            if done {
                cursor.disk = None;
            }
            return Ok(read);
        }
        Err(corrupt(&self.dir, id, end))
    }

    /// The first offset whose append time is at or after `ms` (the next
    /// offset if none is).
    pub fn offset_at_time(&mut self, ms: u64) -> io::Result<u64> {
        let segments = self.closed.iter().chain(std::iter::once(&self.active));
        let Some(seg) = segments
            .clone()
            .find(|s| s.next > s.first && s.last_ms >= ms)
        else {
            return Ok(self.next_offset());
        };
        let (id, next, end) = (seg.id, seg.next, seg.end);
        let start = seg.start_for(|p| p.timestamp_ms >= ms);
        if id == self.active.id {
            self.flush()?;
        }
        let found =
            self.scan_segment(id, start, end, |meta| meta.expires_at_ms.unwrap_or(0) >= ms)?;
        Ok(found.unwrap_or(next))
    }

    /// Read segment `id` forward from `pos` to the first record `stop` accepts.
    fn scan_segment(
        &self,
        id: u32,
        mut pos: u64,
        end: u64,
        stop: impl Fn(&RecordMeta) -> bool,
    ) -> io::Result<Option<u64>> {
        let mut reader = SegmentReader::open(&self.dir, id)?;
        while pos < end {
            let ReadOutcome::Record(payload, len) = reader.read(pos, end)? else {
                return Err(corrupt(&self.dir, id, pos));
            };
            let meta = record::meta(payload).ok_or_else(|| corrupt(&self.dir, id, pos))?;
            if stop(&meta) {
                return Ok(Some(meta.seq));
            }
            pos += len;
        }
        Ok(None)
    }
}
