//! A stream's segment files: an append-only log whose records are numbered
//! by offset (0, 1, 2, ...) and never settled one by one. Many cursors read
//! it, each at its own offset; retention deletes whole segments from the
//! head.
//!
//! ```text
//! DATA/queues/q9/00000001.seg   records, seq = offset, time field = append time
//! DATA/queues/q9/00000002.seg   (segment.rs, record.rs: the classic queues' format)
//! DATA/queues/q9/offsets        tracked consumer offsets (stream_offsets.rs)
//! ```
//!
//! # Memory
//! The newest messages (`TAIL_BYTES` at most) stay in memory, so readers
//! at the head of the stream never touch the disk; everything older than
//! the in-memory tail has been written to the OS (the writer is flushed
//! before the tail lets go of a message), so a cursor behind reads it back
//! through its own [`SegmentReader`] (two 256 KiB chunks). Per segment the
//! log keeps a sparse index, one entry every `INDEX_EVERY` records, to find
//! an offset or a time without reading the segment from its start.
//!
//! # Durability
//! As a durable classic queue: appends are buffered, the syncer's round
//! flushes and fsyncs them (`flush_for_sync`), and publishers are confirmed
//! after that round. Recovery (`recover.rs`) reads every segment back and
//! starts a new one, so a torn tail is never appended to.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::record::{RecordMeta, FLAG_PERSISTENT};
use super::segment::{self, SegmentWriter, FILE_HEADER_LEN};
use crate::message::Message;

mod read;
mod recover;
#[cfg(test)]
mod tests;

pub use read::{Cursor, Filter, Read};
pub use recover::Recovered;

/// Bytes of the newest messages kept in memory for readers at the head.
pub const TAIL_BYTES: u64 = 4 << 20;
/// One sparse-index entry per this many records of a segment.
const INDEX_EVERY: u64 = 256;
/// Buffered bytes that make an append write through to the OS.
const WRITE_BUFFER_BYTES: usize = 1 << 20;

/// A message of the stream, with its place and time.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Its offset.
    pub offset: u64,
    /// When it was appended (Unix ms).
    pub timestamp_ms: u64,
    /// The message.
    pub message: Arc<Message>,
}

/// A sparse-index point: the record of `offset` starts at `pos`.
#[derive(Clone, Copy, Debug)]
struct IndexPoint {
    offset: u64,
    pos: u64,
    timestamp_ms: u64,
}

/// What the log knows of one segment.
#[derive(Clone, Debug)]
struct SegmentInfo {
    id: u32,
    /// Offsets `[first, next)` are in it.
    first: u64,
    next: u64,
    /// Append time of its last record.
    last_ms: u64,
    /// Bytes of valid data (records end here).
    end: u64,
    index: Vec<IndexPoint>,
}

impl SegmentInfo {
    fn new(id: u32, first: u64) -> Self {
        SegmentInfo {
            id,
            first,
            next: first,
            last_ms: 0,
            end: FILE_HEADER_LEN,
            index: Vec::new(),
        }
    }

    fn note(&mut self, offset: u64, pos: u64, end: u64, timestamp_ms: u64) {
        if (offset - self.first).is_multiple_of(INDEX_EVERY) {
            self.index.push(IndexPoint {
                offset,
                pos,
                timestamp_ms,
            });
        }
        self.next = offset + 1;
        self.last_ms = timestamp_ms;
        self.end = end;
    }

    /// Where to start reading forward to reach `offset` (or the first
    /// record at or after `ms`).
    fn start_for(&self, at: impl Fn(&IndexPoint) -> bool) -> u64 {
        let i = self.index.partition_point(|p| !at(p));
        match i {
            0 => FILE_HEADER_LEN,
            _ => self.index[i - 1].pos,
        }
    }
}

/// Bounds and size of a stream, for the API.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogStats {
    /// The oldest offset kept.
    pub first_offset: u64,
    /// The offset the next message gets.
    pub next_offset: u64,
    /// Segment files.
    pub segments: u64,
    /// Bytes in them.
    pub bytes: u64,
}

/// A stream's segments.
#[derive(Debug)]
pub struct StreamLog {
    dir: PathBuf,
    max_segment_bytes: u64,
    /// Closed segments, oldest first.
    closed: VecDeque<SegmentInfo>,
    /// The segment being written.
    active: SegmentInfo,
    writer: SegmentWriter,
    /// Offsets below this are in the OS (survive a kill of the process):
    /// readers see no further, so no offset a reader was given can be
    /// handed out again for another message after a crash.
    written: u64,
    /// Bytes of the closed segments.
    closed_bytes: u64,
    /// The newest messages, in offset order, ending at `active.next`.
    tail: VecDeque<Entry>,
    tail_bytes: u64,
    /// Rolled segments to fsync in the next round.
    to_sync: Vec<Arc<File>>,
    writer_unsynced: bool,
    dir_unsynced: bool,
    /// Registered with the syncer and not flushed since: the round that
    /// will flush it.
    pub dirty: Option<u64>,
}

impl StreamLog {
    /// A new, empty stream in `dir` (created with its first segment).
    pub fn create(dir: &Path, max_segment_bytes: u64) -> io::Result<Self> {
        Self::starting_at(dir, max_segment_bytes, VecDeque::new(), 1, 0)
    }

    fn starting_at(
        dir: &Path,
        max_segment_bytes: u64,
        closed: VecDeque<SegmentInfo>,
        id: u32,
        first: u64,
    ) -> io::Result<Self> {
        Ok(StreamLog {
            dir: dir.to_path_buf(),
            max_segment_bytes: max_segment_bytes.max(FILE_HEADER_LEN + 1),
            written: first,
            closed_bytes: closed.iter().map(|s| s.end).sum(),
            closed,
            active: SegmentInfo::new(id, first),
            writer: SegmentWriter::create(dir, id)?,
            tail: VecDeque::new(),
            tail_bytes: 0,
            to_sync: Vec::new(),
            writer_unsynced: false,
            dir_unsynced: true,
            dirty: None,
        })
    }

    /// Segments are closed at this size from now on.
    pub fn set_max_segment_bytes(&mut self, bytes: u64) {
        self.max_segment_bytes = bytes.max(FILE_HEADER_LEN + 1);
    }

    /// Write what is buffered to the OS; readers may then see it.
    pub fn flush(&mut self) -> io::Result<()> {
        self.writer.flush()?;
        self.written = self.active.next;
        Ok(())
    }

    /// Offsets below this are in the OS and may be read.
    pub fn written_end(&self) -> u64 {
        self.written
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The oldest offset still kept.
    pub fn first_offset(&self) -> u64 {
        self.closed.front().map_or(self.active.first, |s| s.first)
    }

    /// The offset the next append gets.
    pub fn next_offset(&self) -> u64 {
        self.active.next
    }

    /// Messages kept.
    pub fn len(&self) -> u64 {
        self.next_offset() - self.first_offset()
    }

    /// Whether no message is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Offsets, segments and bytes.
    pub fn stats(&self) -> LogStats {
        let segments = self.closed.len() as u64 + u64::from(!self.writer.is_empty());
        LogStats {
            first_offset: self.first_offset(),
            next_offset: self.next_offset(),
            segments,
            bytes: self.bytes(),
        }
    }

    /// Bytes of all segments (the active one with what is buffered).
    pub fn bytes(&self) -> u64 {
        self.closed_bytes + self.writer.len()
    }

    /// The sync round that will flush the buffered appends: the one the
    /// log is registered for, or (registering `source` now) the next.
    pub fn sync_ticket(
        &mut self,
        syncer: &super::Syncer,
        source: impl FnOnce() -> std::sync::Weak<dyn super::SyncSource>,
    ) -> u64 {
        super::syncer::ticket_for(&mut self.dirty, syncer, source)
    }

    /// Append a message at `timestamp_ms`; returns its offset. A failed
    /// write takes the record back whole, so no offset names a fragment.
    pub fn append(&mut self, message: Arc<Message>, timestamp_ms: u64) -> io::Result<u64> {
        if self.writer.len() >= self.max_segment_bytes {
            self.roll()?;
        }
        let offset = self.active.next;
        let meta = RecordMeta {
            seq: offset,
            flags: FLAG_PERSISTENT,
            expires_at_ms: Some(timestamp_ms.max(1)),
            body_len: 0,
        };
        let mark = self.writer.mark();
        let pos = self.writer.append(&meta, &message);
        let flushed = self.writer.buffered() >= WRITE_BUFFER_BYTES;
        if flushed {
            if let Err(e) = self.writer.flush() {
                self.writer.undo(mark);
                return Err(e);
            }
        }
        self.active
            .note(offset, pos, self.writer.len(), timestamp_ms);
        if flushed {
            self.written = self.active.next;
        }
        self.writer_unsynced = true;
        self.tail_bytes += super::message_bytes(&message);
        self.tail.push_back(Entry {
            offset,
            timestamp_ms,
            message,
        });
        self.trim_tail();
        Ok(offset)
    }

    /// Let the tail go down to half its budget once over it; what leaves
    /// memory must be in the OS first (readers then find it on disk).
    fn trim_tail(&mut self) {
        if self.tail_bytes <= TAIL_BYTES {
            return;
        }
        if let Err(e) = self.flush() {
            // Kept in memory until a later flush succeeds.
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot write a stream segment");
            return;
        }
        while self.tail_bytes > TAIL_BYTES / 2 && self.tail.len() > 1 {
            if let Some(e) = self.tail.pop_front() {
                self.tail_bytes -= super::message_bytes(&e.message);
            }
        }
    }

    /// Close the active segment and start the next.
    fn roll(&mut self) -> io::Result<()> {
        self.flush()?;
        let file = match self.writer_unsynced {
            true => Some(self.writer.file()?),
            false => None,
        };
        let next_id = self.active.id + 1;
        let next = SegmentWriter::create(&self.dir, next_id)?;
        let closed = std::mem::replace(&mut self.writer, next);
        let first = self.active.next;
        let info = std::mem::replace(&mut self.active, SegmentInfo::new(next_id, first));
        if !closed.is_empty() {
            self.closed_bytes += info.end;
            self.closed.push_back(info);
        }
        self.to_sync.extend(file);
        self.writer_unsynced = false;
        self.dir_unsynced = true;
        Ok(())
    }

    /// Retention: delete whole closed segments from the head while the
    /// stream is over `max_bytes`, or while their newest record is older
    /// than `max_age_ms`. The active segment always stays (as in
    /// RabbitMQ). Returns the number of segments deleted.
    pub fn enforce_retention(
        &mut self,
        max_bytes: Option<u64>,
        max_age_ms: Option<u64>,
        now_ms: u64,
    ) -> usize {
        let mut total = self.bytes();
        let mut deleted = 0;
        // The newest closed segment holds the stream's highest offset on
        // disk until the active one has a record in the OS: deleting it
        // first would let a restart number offsets from 0 again.
        let active_written = self.written > self.active.first;
        while let Some(front) = self.closed.front() {
            let too_big = max_bytes.is_some_and(|m| total > m);
            let too_old = max_age_ms.is_some_and(|a| front.last_ms < now_ms.saturating_sub(a));
            let last = self.closed.len() == 1 && !active_written;
            if (!too_big && !too_old) || last {
                break;
            }
            total -= front.end;
            let path = segment::path(&self.dir, front.id);
            // A plain unlink, as a classic queue's settled segment: the
            // data was written long ago and the inode goes in one step.
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot delete a stream segment");
                    break;
                }
            }
            self.closed_bytes -= front.end;
            self.closed.pop_front();
            deleted += 1;
        }
        if deleted > 0 {
            self.dir_unsynced = true;
        }
        deleted
    }

    /// Write buffers to the OS and list the files to sync.
    pub fn flush_for_sync(&mut self, out: &mut Vec<Arc<File>>) -> io::Result<()> {
        self.dirty = None;
        self.flush()?;
        if self.writer_unsynced && !self.writer.is_empty() {
            out.push(self.writer.file()?);
            self.writer_unsynced = false;
        }
        if self.dir_unsynced && self.dir.exists() {
            out.push(Arc::new(File::open(&self.dir)?));
            if let Some(parent) = self.dir.parent() {
                out.push(Arc::new(File::open(parent)?));
            }
            self.dir_unsynced = false;
        }
        out.append(&mut self.to_sync);
        Ok(())
    }

    /// Delete every file (the stream was deleted).
    pub fn remove(self) {
        super::reaper::remove_dir(&self.dir);
    }
}

pub(super) fn corrupt(dir: &Path, id: u32, pos: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "stream segment {} is damaged at byte {pos}",
            segment::path(dir, id).display()
        ),
    )
}
