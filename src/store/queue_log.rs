//! One queue's log: its segment files and their ack files, the on-disk part
//! of its ready messages (the "tail"), and recovery.
//!
//! A queue appends every persistent message (durable queues) and every
//! message that does not fit its memory window (all queues) to its current
//! segment. In memory each segment is a few counters: `live` records not
//! yet settled, and `tail` records not yet read back into the window. The
//! tail is always one stretch of the log, from `cursor` to the end, in
//! sequence order: once a queue has spilled, later messages go behind it
//! until consumers catch up. A segment whose records are all settled is
//! deleted (the current one is swapped for a fresh one when the whole queue
//! is settled and it has grown large), so a drained queue leaves little on
//! disk. Transient queues use the same log in a scratch directory, without
//! ack files or fsync. Recovery at start is in [`recover`].
//!
//! # When a write fails
//! Every offset handed out (a [`DiskRef`]) must end up holding its record,
//! or later records would land after a hole and the in-memory counters
//! (`live`, `tail`, the cursor) would disagree with the file. So:
//! - A failed [`QueueLog::append`] takes its record back out of the
//!   buffer ([`SegmentWriter::undo`]) and the message is not enqueued:
//!   nothing refers to the offset, and the next append reuses it.
//! - Records appended before (messages already enqueued, their publishers
//!   waiting for a sync round) stay buffered whatever happens: a failed
//!   flush leaves them in the buffer and the file cut back to its last
//!   good length, and the next flush writes them at the offsets already
//!   handed out. After a full disk the sync thread retries exactly that.
//! - A segment is only rolled after its buffer was written, and the roll
//!   changes nothing unless the new file could be created: a closed
//!   segment never ends in a fragment or misses a record.
//! - Ack entries that could not be written stay buffered and listed for
//!   the next flush.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::acks::{self, AckKind, AckMarks, AckWriter};
use super::record::{self, RecordMeta, FLAG_PERSISTENT};
use super::segment::{self, ReadOutcome, SegmentReader, SegmentWriter, FILE_HEADER_LEN};
use crate::message::Message;

mod recover;
#[cfg(test)]
mod tests;

/// Buffered segment bytes written out without waiting for the sync thread.
const WRITE_BUFFER_BYTES: usize = 256 * 1024;

/// Where a message's record is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskRef {
    /// Segment id.
    pub segment: u32,
    /// Offset of the record in the segment.
    pub offset: u32,
    /// Which of its owner's logs holds it (a priority queue has one per
    /// priority level; see [`QueueLog::set_id`]).
    pub log: u16,
    /// Its settlement and delivery are written to the ack file (a
    /// persistent message in a durable queue).
    pub logged: bool,
}

/// What recovery found in a queue's directory.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Messages that come back.
    pub messages: u64,
    /// Corrupt stretches skipped in the middle of segments.
    pub corrupt_records: u64,
    /// Torn records truncated at the end of the log.
    pub torn_tails: u64,
    /// Highest sequence number seen, plus one.
    pub next_seq: u64,
    /// Body bytes of the messages that come back.
    pub body_bytes: u64,
}

#[derive(Debug, Default)]
struct Segment {
    /// Records not yet settled.
    live: u32,
    /// Records of the on-disk tail (not yet read back).
    tail: u32,
    /// End of valid data (recovered segments; the writer's is its length).
    end: u64,
    /// What recovery read for this segment: settled/delivered marks and
    /// corrupt stretches to step over.
    recovered: Option<Box<Recovered>>,
    /// Boxed: most segments have none open, and map nodes hold eleven.
    acks: Option<Box<AckWriter>>,
}

#[derive(Debug, Default)]
struct Recovered {
    marks: AckMarks,
    corrupt: Vec<(u64, u64)>,
}

/// A message read back from the on-disk tail, with what its record and
/// its marks say about it.
#[derive(Debug)]
pub struct TailRecord {
    /// The queue sequence number it was written with.
    pub seq: u64,
    /// The message.
    pub message: Message,
    /// It had been delivered before a restart.
    pub redelivered: bool,
    /// Its record.
    pub disk: DiskRef,
    /// When it expires in its queue (Unix ms).
    pub expires_at_ms: Option<u64>,
    /// Times it was returned to its queue before a restart.
    pub delivery_count: u32,
}

/// A queue's segment files.
#[derive(Debug)]
pub struct QueueLog {
    dir: PathBuf,
    /// Durable queue: ack files are written and files fsynced.
    durable: bool,
    segment_bytes: u64,
    segments: BTreeMap<u32, Segment>,
    writer: SegmentWriter,
    /// Rolled segments with persistent records, to fsync in the next round
    /// (which their records' registration guarantees).
    to_sync: Vec<Arc<File>>,
    /// The current segment holds persistent records not yet synced.
    writer_logged: bool,
    /// A segment was created since the directory was last synced.
    dir_unsynced: bool,
    /// Segments with buffered ack entries.
    acks_buffered: Vec<u32>,
    /// Start of the on-disk tail.
    cursor: Option<(u32, u64)>,
    tail_count: u64,
    reader: Option<SegmentReader>,
    live_total: u64,
    /// Registered with the syncer and not flushed since: the round that
    /// will flush it.
    pub dirty: Option<u64>,
    /// Stamped on the references it hands out.
    id: u16,
    /// Directories above `dir` whose entries are synced with its own: up
    /// to the store's `queues/`.
    parents_to_sync: usize,
}

impl QueueLog {
    /// A new, empty log in `dir`. Nothing is created on disk until the
    /// first record is written (the directory with the first segment), so
    /// declaring a queue costs no file I/O and an idle queue has no files.
    pub fn create(dir: &Path, durable: bool, segment_bytes: u64) -> io::Result<Self> {
        Self::with_first_segment(dir, durable, segment_bytes, BTreeMap::new(), 1)
    }

    fn with_first_segment(
        dir: &Path,
        durable: bool,
        segment_bytes: u64,
        segments: BTreeMap<u32, Segment>,
        id: u32,
    ) -> io::Result<Self> {
        let writer = SegmentWriter::create(dir, id)?;
        // The writer's segment gets its entry with its first record: an
        // idle queue's map stays empty (a map node is ~400 bytes).
        Ok(QueueLog {
            dir: dir.to_path_buf(),
            to_sync: Vec::new(),
            writer_logged: false,
            // A new segment's directory entry must be durable too (and,
            // for a new queue, the directory's own).
            dir_unsynced: durable,
            durable,
            segment_bytes,
            segments,
            writer,
            acks_buffered: Vec::new(),
            cursor: None,
            tail_count: 0,
            reader: None,
            live_total: 0,
            dirty: None,
            id: 0,
            parents_to_sync: 1,
        })
    }

    /// Sync the entries of `n` directories above this log's (1 unless the
    /// log's directory is nested in a queue's).
    pub fn set_parents_to_sync(&mut self, n: usize) {
        self.parents_to_sync = n;
    }

    /// Number this log's [`DiskRef`]s carry, for owners of several logs.
    pub fn set_id(&mut self, id: u16) {
        self.id = id;
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The sync round that will flush this log's buffered writes: the one
    /// it is registered for, or (registering `source` now) the next.
    pub fn sync_ticket(
        &mut self,
        syncer: &super::Syncer,
        source: impl FnOnce() -> std::sync::Weak<dyn super::SyncSource>,
    ) -> u64 {
        super::syncer::ticket_for(&mut self.dirty, syncer, source)
    }

    /// Messages in the on-disk tail.
    pub fn tail_count(&self) -> u64 {
        self.tail_count
    }

    /// Append a record. `to_tail`: the message is not kept in memory and
    /// joins the on-disk tail. `persistent`: it is to survive a restart.
    pub fn append(
        &mut self,
        seq: u64,
        expires_at_ms: Option<u64>,
        message: &Message,
        persistent: bool,
        to_tail: bool,
    ) -> io::Result<DiskRef> {
        if self.writer.len() >= self.segment_bytes {
            self.roll()?;
        }
        let meta = RecordMeta {
            seq,
            flags: if persistent { FLAG_PERSISTENT } else { 0 },
            expires_at_ms,
            body_len: 0,
        };
        let mark = self.writer.mark();
        let offset = self.writer.append(&meta, message);
        if self.writer.buffered() >= WRITE_BUFFER_BYTES {
            // Spilled messages must not pile up in memory before the sync
            // thread (or a read-back) writes them out.
            if let Err(e) = self.writer.flush() {
                // The message will not be enqueued: take its record back so
                // that no offset refers to it (the ones before stay).
                self.writer.undo(mark);
                return Err(e);
            }
        }
        self.writer_logged |= self.durable && persistent;
        let id = self.writer.id;
        let seg = self.segments.entry(id).or_default();
        seg.live += 1;
        self.live_total += 1;
        if to_tail {
            seg.tail += 1;
            self.tail_count += 1;
            self.cursor.get_or_insert((id, offset));
        }
        Ok(DiskRef {
            segment: id,
            offset: offset as u32,
            log: self.id,
            logged: self.durable && persistent,
        })
    }

    /// Start a new segment; the old one is synced in the next round, or
    /// deleted at once if nothing in it is live.
    /// Nothing changes unless both the flush and the new file succeed.
    fn roll(&mut self) -> io::Result<()> {
        self.writer.flush()?;
        let old = self.writer.id;
        let old_file = match self.writer_logged {
            true => Some(self.writer.file()?),
            false => None,
        };
        let next = SegmentWriter::create(&self.dir, old + 1)?;
        let closed = std::mem::replace(&mut self.writer, next);
        self.segments.entry(old).or_default().end = closed.len();
        self.writer_logged = false;
        self.to_sync.extend(old_file);
        self.dir_unsynced = self.durable;
        self.delete_if_settled(old);
        Ok(())
    }

    fn delete_if_settled(&mut self, id: u32) {
        if id == self.writer.id || self.segments.get(&id).is_none_or(|s| s.live > 0) {
            return;
        }
        self.segments.remove(&id);
        self.acks_buffered.retain(|&s| s != id);
        for p in [segment::path(&self.dir, id), acks::path(&self.dir, id)] {
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(path = %p.display(), error = %e, "cannot delete settled segment file")
                }
            }
        }
    }

    fn ack_entry(&mut self, r: DiskRef, kind: AckKind) -> io::Result<()> {
        self.ack_entry_with(r, kind, 0)
    }

    fn ack_entry_with(&mut self, r: DiskRef, kind: AckKind, count: u32) -> io::Result<()> {
        let Some(seg) = self.segments.get_mut(&r.segment) else {
            return Ok(());
        };
        let w = match &mut seg.acks {
            Some(w) => w,
            None => seg
                .acks
                .insert(Box::new(AckWriter::open(&self.dir, r.segment)?)),
        };
        w.push(u64::from(r.offset), kind, count);
        if !self.acks_buffered.contains(&r.segment) {
            self.acks_buffered.push(r.segment);
        }
        Ok(())
    }

    /// Record that a message is settled (acked, rejected, dropped). The
    /// entry is buffered until `flush_acks`.
    /// The counts change even when the entry cannot be made (the message
    /// may then come back after a restart, which at-least-once allows).
    pub fn settle(&mut self, r: DiskRef) -> io::Result<()> {
        let entry = match r.logged {
            true => self.ack_entry(r, AckKind::Settled),
            false => Ok(()),
        };
        let Some(seg) = self.segments.get_mut(&r.segment) else {
            return entry;
        };
        seg.live = seg.live.saturating_sub(1);
        self.live_total = self.live_total.saturating_sub(1);
        self.delete_if_settled(r.segment);
        if self.live_total == 0 && self.writer.len() >= self.segment_bytes / 4 {
            // Everything is settled: swap the large current segment for a
            // fresh one so a drained queue gives its disk space back.
            self.roll()?;
        }
        entry
    }

    /// Record that a message was delivered (buffered; flushed by the
    /// syncer or with the next acks).
    pub fn mark_delivered(&mut self, r: DiskRef) -> io::Result<()> {
        if r.logged {
            self.ack_entry(r, AckKind::Delivered)?;
        }
        Ok(())
    }

    /// Record that a message went back to the queue for the `count`-th
    /// time (buffered), so its delivery count survives a restart.
    pub fn mark_returned(&mut self, r: DiskRef, count: u32) -> io::Result<()> {
        if r.logged {
            self.ack_entry_with(r, AckKind::Returned, count)?;
        }
        Ok(())
    }

    /// Write buffered ack entries to the OS (not synced: a lost ack means
    /// a redelivery, which at-least-once allows).
    /// Segments whose entries could not be written stay listed.
    pub fn flush_acks(&mut self) -> io::Result<()> {
        let mut result = Ok(());
        let segments = &mut self.segments;
        self.acks_buffered.retain(|id| {
            let Some(w) = segments.get_mut(id).and_then(|s| s.acks.as_mut()) else {
                return false;
            };
            match result.is_ok().then(|| w.flush()) {
                Some(Ok(())) => false,
                Some(Err(e)) => {
                    result = Err(e);
                    true
                }
                None => true,
            }
        });
        result
    }

    /// Write all buffers to the OS and list the files to sync.
    pub fn flush_for_sync(&mut self, out: &mut Vec<Arc<File>>) -> io::Result<()> {
        self.dirty = None;
        self.writer.flush()?;
        self.flush_acks()?;
        if self.writer_logged {
            out.push(self.writer.file()?);
            self.writer_logged = false;
        }
        if self.dir_unsynced && self.dir.exists() {
            // The directory exists once a segment was written: sync its
            // entries and its own entry in its parents (a priority level's
            // directory is two levels below `queues/`).
            out.push(Arc::new(File::open(&self.dir)?));
            let parents = self.dir.ancestors().skip(1).take(self.parents_to_sync);
            for parent in parents {
                out.push(Arc::new(File::open(parent)?));
            }
            self.dir_unsynced = false;
        }
        out.append(&mut self.to_sync);
        Ok(())
    }

    /// Read tail messages into `out` until `budget` bytes were read or the
    /// tail is empty; returns the bytes read.
    pub fn read_tail(&mut self, budget: u64, mut out: impl FnMut(TailRecord)) -> u64 {
        let mut read = 0;
        while self.tail_count > 0 && read < budget {
            let Some((id, offset)) = self.cursor else {
                break;
            };
            match self.read_one(id, offset) {
                Ok(Some(m)) => {
                    read += super::message_bytes(&m.message);
                    out(m);
                }
                Ok(None) => {}
                Err(e) if super::syncer::is_out_of_space(&e) => {
                    // Reading the current segment writes its buffer first;
                    // the records stay buffered until there is room.
                    tracing::debug!(path = %segment::path(&self.dir, id).display(), error = %e, "queued messages wait for disk space to be read back");
                    break;
                }
                Err(e) => {
                    tracing::error!(path = %segment::path(&self.dir, id).display(), offset, error = %e, "cannot read queued messages back");
                    break;
                }
            }
        }
        if self.tail_count == 0 {
            self.cursor = None;
            self.reader = None;
        }
        read
    }

    /// The message of the record `r` points to, wherever it is (for owners
    /// that keep their own order, such as the delayed-message log).
    pub fn read_at(&mut self, r: DiskRef) -> io::Result<Message> {
        let end = match r.segment == self.writer.id {
            true => {
                self.writer.flush()?;
                self.writer.len()
            }
            false => self.segments.get(&r.segment).map_or(0, |s| s.end),
        };
        if self.reader.as_ref().is_none_or(|rd| rd.id != r.segment) {
            self.reader = Some(SegmentReader::open(&self.dir, r.segment)?);
        }
        let reader = self
            .reader
            .as_mut()
            .ok_or_else(|| io::Error::other("segment reader missing"))?;
        let corrupt = || {
            let what = format!("corrupt record at {} in segment {}", r.offset, r.segment);
            io::Error::new(io::ErrorKind::InvalidData, what)
        };
        match reader.read(u64::from(r.offset), end)? {
            ReadOutcome::Record(payload, _) => {
                record::decode(payload).map(|(_, m)| m).ok_or_else(corrupt)
            }
            ReadOutcome::Corrupt => Err(corrupt()),
        }
    }

    /// Step the cursor over one record; the message if it is a tail record.
    fn read_one(&mut self, id: u32, offset: u64) -> io::Result<Option<TailRecord>> {
        if id == self.writer.id {
            self.writer.flush()?;
        }
        let end = match id == self.writer.id {
            true => self.writer.len(),
            false => self.segments.get(&id).map_or(0, |s| s.end),
        };
        let seg = self.segments.get(&id);
        if let Some((_, to)) = seg.and_then(|s| s.recovered.as_ref()).and_then(|r| {
            r.corrupt
                .iter()
                .find(|(from, to)| (*from..*to).contains(&offset))
        }) {
            self.cursor = Some((id, *to));
            return Ok(None);
        }
        if offset >= end || seg.is_none_or(|s| s.tail == 0) {
            self.next_segment(id);
            return Ok(None);
        }
        if self.reader.as_ref().is_none_or(|r| r.id != id) {
            self.reader = Some(SegmentReader::open(&self.dir, id)?);
        }
        let Some(reader) = self.reader.as_mut() else {
            return Ok(None);
        };
        let decoded = match reader.read(offset, end)? {
            ReadOutcome::Record(payload, len) => record::decode(payload).map(|d| (d, len)),
            ReadOutcome::Corrupt => None,
        };
        let Some(((meta, message), len)) = decoded else {
            tracing::error!(path = %segment::path(&self.dir, id).display(), offset, "corrupt record while reading queued messages back; the rest of the segment is dropped");
            self.drop_segment_tail(id);
            self.next_segment(id);
            return Ok(None);
        };
        self.cursor = Some((id, offset + len));
        let persistent = meta.flags & FLAG_PERSISTENT != 0;
        let Some(seg) = self.segments.get_mut(&id) else {
            return Ok(None);
        };
        let mut redelivered = false;
        let mut delivery_count = 0;
        if let Some(rec) = &seg.recovered {
            // Recovered segments hold records that are not part of the
            // tail: settled ones and transient messages of the last run.
            if !persistent || rec.marks.is_settled(offset) {
                return Ok(None);
            }
            redelivered = rec.marks.delivered.contains(&(offset as u32));
            delivery_count = rec
                .marks
                .returned
                .get(&(offset as u32))
                .copied()
                .unwrap_or(0);
        }
        seg.tail -= 1;
        self.tail_count -= 1;
        Ok(Some(TailRecord {
            seq: meta.seq,
            message,
            redelivered,
            disk: DiskRef {
                segment: id,
                offset: offset as u32,
                log: self.id,
                logged: self.durable && persistent,
            },
            expires_at_ms: meta.expires_at_ms,
            delivery_count,
        }))
    }

    fn next_segment(&mut self, id: u32) {
        self.reader = None;
        match self.segments.range(id + 1..).next() {
            Some((&next, _)) => self.cursor = Some((next, FILE_HEADER_LEN)),
            None => {
                if self.tail_count > 0 {
                    tracing::error!(dir = %self.dir.display(), missing = self.tail_count, "queued messages missing at the end of the log");
                }
                self.tail_count = 0;
                self.cursor = None;
            }
        }
    }

    /// Forget the unread tail records of one segment.
    fn drop_segment_tail(&mut self, id: u32) {
        if let Some(seg) = self.segments.get_mut(&id) {
            seg.live -= seg.tail;
            self.live_total = self.live_total.saturating_sub(u64::from(seg.tail));
            self.tail_count = self.tail_count.saturating_sub(u64::from(seg.tail));
            seg.tail = 0;
        }
        self.delete_if_settled(id);
    }

    /// Drop the whole on-disk tail (queue.purge); returns how many
    /// messages it held.
    pub fn purge_tail(&mut self) -> io::Result<u64> {
        let n = self.tail_count;
        let Some((cursor_id, cursor_offset)) = self.cursor else {
            return Ok(0);
        };
        if self
            .segments
            .get(&self.writer.id)
            .is_some_and(|s| s.tail > 0)
        {
            // Tail records in the current segment: close it, so that it can
            // be deleted, or (as the cursor's segment) be marked "settled
            // from here on" without covering later appends.
            self.roll()?;
        }
        self.cursor = None;
        let ids: Vec<u32> = self
            .segments
            .range(cursor_id..)
            .map(|(&id, _)| id)
            .collect();
        for id in ids {
            self.drop_segment_tail(id);
        }
        if self.durable && self.segments.contains_key(&cursor_id) {
            let r = DiskRef {
                segment: cursor_id,
                offset: cursor_offset as u32,
                log: self.id,
                logged: true,
            };
            self.ack_entry(r, AckKind::SettledFrom)?;
        }
        self.flush_acks()?;
        self.tail_count = 0;
        self.reader = None;
        Ok(n)
    }

    /// Delete the log and its directory (renamed aside at once, unlinked
    /// in the background: see [`super::reaper`]).
    pub fn remove(self) {
        super::reaper::remove_dir(&self.dir);
    }
}
