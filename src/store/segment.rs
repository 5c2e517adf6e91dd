//! Segment files: append-only files of message records, written through a
//! user-space buffer, scanned whole on recovery and read back in order at
//! run time.
//!
//! ```text
//! segment = "WARRENSG" version:u32 id:u32 record*      (little-endian)
//! ```
//! Records are described in [`super::record`]. A segment's id is its file
//! name (`00000007.seg`); ids grow with each new segment of a queue.
//!
//! # Failed writes
//! [`AppendBuffer`] (segments and ack files) knows how many bytes are in
//! the file for sure (`written`) and keeps everything after that in its
//! buffer until a write succeeds. When a write fails (maybe after part of
//! the buffer reached the file) the file is cut back to `written`, so it
//! never ends in a fragment: the buffer can be written again later (the
//! disk had no space, see [`super::syncer`]) at the same offsets, or
//! shortened first by [`SegmentWriter::undo`] (an append that failed is
//! taken back whole), and a recovery scan after a crash finds no garbage.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::file_cache::{Access, CachedFile};
use super::record::{self, RecordMeta, HEADER_LEN, MAX_PAYLOAD, MIN_PAYLOAD};

mod reader;
pub use reader::{ReadOutcome, SegmentReader};

/// Magic bytes at the head of every segment file.
pub const MAGIC: &[u8; 8] = b"WARRENSG";
/// Format version written and understood.
pub const VERSION: u32 = 1;
/// Size of the file header.
pub const FILE_HEADER_LEN: u64 = 16;

/// File name of segment `id` in a queue directory.
pub fn path(dir: &Path, id: u32) -> PathBuf {
    dir.join(format!("{id:08}.seg"))
}

/// The file header for segment `id`.
pub fn file_header(magic: &[u8; 8], id: u32) -> [u8; 16] {
    let mut h = [0u8; 16];
    h[..8].copy_from_slice(magic);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h[12..].copy_from_slice(&id.to_le_bytes());
    h
}

/// Whether `buf` starts with a valid header for segment `id`.
pub fn header_ok(buf: &[u8], magic: &[u8; 8], id: u32) -> bool {
    buf.len() >= FILE_HEADER_LEN as usize && buf[..16] == file_header(magic, id)
}

/// The segment being appended to.
#[derive(Debug)]
pub struct SegmentWriter {
    /// Segment id.
    pub id: u32,
    out: AppendBuffer,
    /// Logical length: written plus buffered.
    len: u64,
}

/// A file appended to through a buffer. Writes are positional, at the end
/// of what is known to be in the file: after a failed (maybe partial)
/// write the file is truncated back to that point and the buffer kept, so
/// a retry writes the same bytes at the same offsets.
#[derive(Debug)]
pub struct AppendBuffer {
    file: Arc<CachedFile>,
    /// Bytes waiting to be written.
    pub buf: Vec<u8>,
    /// Bytes known to be in the file (the buffer goes right after them).
    written: u64,
    /// Test fault injection: the next write puts this many bytes in the
    /// file, then fails with this error.
    #[cfg(test)]
    fault: Option<(usize, io::ErrorKind)>,
}

impl AppendBuffer {
    /// Append to `file`, which holds `written` bytes, after `buf`.
    pub fn new(file: Arc<CachedFile>, written: u64, buf: Vec<u8>) -> Self {
        AppendBuffer {
            file,
            buf,
            written,
            #[cfg(test)]
            fault: None,
        }
    }

    /// Write the buffered bytes to the OS. On error the buffer is kept and
    /// the file ends at `written` again (see [`Self::cut_back`]).
    pub fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        // Opening (or creating) the file may fail as a write does (no
        // space for a new directory, no descriptor left): nothing reached
        // the file then, and the error keeps its kind for the retry logic.
        let file = self.file.get()?;
        match self.write_out(&file) {
            Ok(()) => {
                self.written += self.buf.len() as u64;
                self.buf.clear();
                Ok(())
            }
            Err(e) => Err(self.cut_back(&file, e)),
        }
    }

    fn write_out(&mut self, file: &File) -> io::Result<()> {
        #[cfg(test)]
        if let Some((n, kind)) = self.fault.take() {
            let n = n.min(self.buf.len());
            file.write_all_at(&self.buf[..n], self.written)?;
            return Err(io::Error::from(kind));
        }
        file.write_all_at(&self.buf, self.written)
    }

    /// After a failed write: drop whatever part of the buffer reached the
    /// file. Those bytes are not needed (the buffer still has them) and,
    /// left there, could end up as a fragment in the middle of the file if
    /// the buffer is shortened before it is written again. If even that
    /// fails, the error is one no retry may paper over.
    fn cut_back(&self, file: &File, e: io::Error) -> io::Error {
        match file.set_len(self.written) {
            Ok(()) => e,
            Err(t) => io::Error::other(format!(
                "{e}; truncating the file back to its last good length failed too: {t}"
            )),
        }
    }

    /// The open file, for fsync (reopened if the cache closed it).
    pub fn file(&self) -> io::Result<Arc<File>> {
        self.file.get()
    }

    /// Make the next write put `after` bytes in the file, then fail.
    #[cfg(test)]
    pub fn inject_fault(&mut self, after: usize, kind: io::ErrorKind) {
        self.fault = Some((after, kind));
    }
}

/// The length of a [`SegmentWriter`] before an append, to take it back.
#[derive(Clone, Copy, Debug)]
pub struct Mark {
    buffered: usize,
    len: u64,
}

impl SegmentWriter {
    /// Start segment `id` (it must not exist yet). The file (and the
    /// queue's directory) is created when its first bytes are written, so
    /// a queue that never writes has no files.
    pub fn create(dir: &Path, id: u32) -> io::Result<Self> {
        let file = CachedFile::lazy(path(dir, id), Access::Write);
        Ok(SegmentWriter {
            id,
            out: AppendBuffer::new(file, 0, file_header(MAGIC, id).to_vec()),
            len: FILE_HEADER_LEN,
        })
    }

    /// Buffer a record for `message`; returns its offset in the file.
    pub fn append(&mut self, meta: &RecordMeta, message: &crate::message::Message) -> u64 {
        let offset = self.len;
        self.len += record::encode(&mut self.out.buf, meta, message) as u64;
        offset
    }

    /// Write the buffered records to the OS (see [`AppendBuffer`]). A
    /// segment without records is not written at all: a log that never
    /// gets one leaves no file.
    pub fn flush(&mut self) -> io::Result<()> {
        if self.is_empty() {
            return Ok(());
        }
        self.out.flush()
    }

    /// Where the segment ends now, for [`Self::undo`].
    pub fn mark(&self) -> Mark {
        Mark {
            buffered: self.out.buf.len(),
            len: self.len,
        }
    }

    /// Take back the appends made since `mark`, which must still be
    /// buffered (no flush succeeded since).
    pub fn undo(&mut self, mark: Mark) {
        debug_assert!(mark.buffered <= self.out.buf.len());
        self.out.buf.truncate(mark.buffered);
        self.len = mark.len;
    }

    /// Make the next write put `after` bytes in the file, then fail.
    #[cfg(test)]
    pub fn inject_fault(&mut self, after: usize, kind: io::ErrorKind) {
        self.out.inject_fault(after, kind);
    }

    /// Bytes waiting in the buffer.
    pub fn buffered(&self) -> usize {
        self.out.buf.len()
    }

    /// Logical length (what has been appended, buffered or not).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether only the file header is there.
    pub fn is_empty(&self) -> bool {
        self.len == FILE_HEADER_LEN
    }

    /// The open file, for fsync.
    pub fn file(&self) -> io::Result<Arc<File>> {
        self.out.file()
    }
}

/// One step of a recovery scan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScanItem {
    /// A valid record.
    Record {
        /// Where it starts.
        offset: u64,
        /// Its total length (header included).
        len: u64,
        /// Its sequence number and flags.
        meta: RecordMeta,
    },
    /// Bytes that are not a valid record, followed by a valid one.
    Corrupt {
        /// Where the bad bytes start.
        offset: u64,
        /// Where the next valid record starts.
        resumed_at: u64,
    },
    /// Bytes up to the end of the file that hold no valid record: a write
    /// torn by a crash (or damage at the end).
    Torn {
        /// Where the bad bytes start.
        offset: u64,
    },
}

/// The valid record at `pos` in `buf`, if there is one: (total length, meta).
fn valid_at(buf: &[u8], pos: usize) -> Option<(usize, RecordMeta)> {
    let (len, crc) = record::header(buf.get(pos..)?)?;
    if !(MIN_PAYLOAD..=MAX_PAYLOAD).contains(&len) {
        return None;
    }
    let payload = buf.get(pos + HEADER_LEN..pos + HEADER_LEN + len)?;
    if !record::verify(payload, crc) {
        return None;
    }
    Some((HEADER_LEN + len, record::meta(payload)?))
}

/// Scan a whole segment (file header already checked), record by record.
/// After a bad record it looks for the next valid one byte by byte, so a
/// damaged length field costs only the damaged record.
pub fn scan(buf: &[u8]) -> Vec<ScanItem> {
    let mut items = Vec::new();
    let mut pos = FILE_HEADER_LEN as usize;
    while pos < buf.len() {
        if let Some((len, meta)) = valid_at(buf, pos) {
            items.push(ScanItem::Record {
                offset: pos as u64,
                len: len as u64,
                meta,
            });
            pos += len;
            continue;
        }
        match (pos + 1..buf.len()).find(|&p| valid_at(buf, p).is_some()) {
            Some(next) => {
                items.push(ScanItem::Corrupt {
                    offset: pos as u64,
                    resumed_at: next as u64,
                });
                pos = next;
            }
            None => {
                items.push(ScanItem::Torn { offset: pos as u64 });
                break;
            }
        }
    }
    items
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;
    use bytes::Bytes;

    /// A persistent message with `body` (segment and reader tests).
    pub(super) fn msg(body: &[u8]) -> Message {
        Message {
            exchange: Arc::from(""),
            routing_key: Arc::from("q"),
            properties: Bytes::from_static(&[0, 0]),
            body: Bytes::copy_from_slice(body),
            persistent: true,
            expiration_ms: None,
        }
    }

    /// A persistent record's metadata with sequence number `seq`.
    pub(super) fn meta(seq: u64) -> RecordMeta {
        RecordMeta {
            seq,
            flags: 1,
            ..Default::default()
        }
    }

    fn segment_with(bodies: &[&[u8]]) -> (Vec<u8>, Vec<u64>) {
        let mut buf = file_header(MAGIC, 1).to_vec();
        let mut offsets = Vec::new();
        for (i, b) in bodies.iter().enumerate() {
            offsets.push(buf.len() as u64);
            record::encode(&mut buf, &meta(i as u64), &msg(b));
        }
        (buf, offsets)
    }

    fn seqs(items: &[ScanItem]) -> Vec<u64> {
        items
            .iter()
            .filter_map(|i| match i {
                ScanItem::Record { meta, .. } => Some(meta.seq),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn clean_segment_scans_every_record() {
        let (buf, _) = segment_with(&[b"a", b"bb", b"ccc"]);
        assert_eq!(seqs(&scan(&buf)), vec![0, 1, 2]);
    }

    #[test]
    fn torn_tail_is_reported_and_the_rest_kept() {
        let (buf, offsets) = segment_with(&[b"aaaa", b"bbbb", b"cccc"]);
        let cut = offsets[2] as usize + 10;
        let items = scan(&buf[..cut]);
        assert_eq!(seqs(&items), vec![0, 1]);
        assert_eq!(items.last(), Some(&ScanItem::Torn { offset: offsets[2] }));
    }

    #[test]
    fn flipped_body_byte_skips_one_record() {
        let (mut buf, offsets) = segment_with(&[b"aaaa", b"bbbb", b"cccc"]);
        let at = offsets[2] as usize - 2; // inside record 1's body
        buf[at] ^= 0xff;
        let items = scan(&buf);
        assert_eq!(seqs(&items), vec![0, 2]);
        assert!(items.contains(&ScanItem::Corrupt {
            offset: offsets[1],
            resumed_at: offsets[2]
        }));
    }

    #[test]
    fn damaged_length_resyncs_on_the_next_record() {
        let (mut buf, offsets) = segment_with(&[b"aaaa", b"bbbb", b"cccc", b"dddd"]);
        let at = offsets[1] as usize;
        buf[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(seqs(&scan(&buf)), vec![0, 2, 3]);
    }

    #[test]
    fn garbage_after_the_last_record_is_torn() {
        let (mut buf, _) = segment_with(&[b"aaaa"]);
        let clean = buf.len() as u64;
        buf.extend_from_slice(&[0u8; 100]);
        let items = scan(&buf);
        assert_eq!(seqs(&items), vec![0]);
        assert_eq!(items.last(), Some(&ScanItem::Torn { offset: clean }));
    }

    #[test]
    fn a_failed_write_is_cut_back_and_written_again_in_place() {
        let dir = std::env::temp_dir().join(format!("warren-seg-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut w = SegmentWriter::create(&dir, 1).unwrap();
        w.append(&meta(0), &msg(b"first"));
        w.flush().unwrap();
        let good = w.len();
        w.append(&meta(1), &msg(b"second"));
        w.append(&meta(2), &msg(b"third"));
        w.inject_fault(10, io::ErrorKind::StorageFull);
        assert_eq!(w.flush().unwrap_err().kind(), io::ErrorKind::StorageFull);
        let on_disk = std::fs::metadata(path(&dir, 1)).unwrap().len();
        assert_eq!(
            on_disk, good,
            "a fragment was left after the last good record"
        );
        w.flush().unwrap();
        let bytes = std::fs::read(path(&dir, 1)).unwrap();
        assert_eq!(bytes.len() as u64, w.len());
        assert_eq!(seqs(&scan(&bytes)), vec![0, 1, 2]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
