//! Reading a segment's records back in order, with read-ahead.
//!
//! A queue reads its on-disk backlog under its own mutex, on whichever
//! async worker asked for the next message. So that this is a memory copy
//! and not a disk read, each fill of the reader's buffer starts a read of
//! the next chunk on a blocking thread; the next fill takes those bytes if
//! they are there (and reads itself only if they are not yet, or if the
//! reader jumped elsewhere). A reader holds at most its buffer and one
//! chunk read ahead.

use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;

use super::path;
use crate::store::file_cache::{Access, CachedFile};
use crate::store::record::{self, HEADER_LEN, MAX_PAYLOAD, MIN_PAYLOAD};

/// Bytes read from a segment at a time (and read ahead).
const READ_CHUNK: usize = 256 * 1024;

/// What a read at an offset found.
#[derive(Debug)]
pub enum ReadOutcome<'a> {
    /// A record whose checksum matches: its payload and total length.
    Record(&'a [u8], u64),
    /// A record that fails its checksum or runs past `end`.
    Corrupt,
}

/// The chunk after the buffer, as the blocking thread leaves it.
#[derive(Debug, Default)]
enum Ahead {
    #[default]
    Idle,
    Reading,
    Ready {
        start: u64,
        bytes: Vec<u8>,
    },
}

/// Reads records of one segment in order, through a buffer of whole chunks.
#[derive(Debug)]
pub struct SegmentReader {
    /// Segment id.
    pub id: u32,
    file: Arc<CachedFile>,
    buf: Vec<u8>,
    buf_start: u64,
    ahead: Arc<Mutex<Ahead>>,
    /// The buffer last replaced, reused by the next read-ahead (so it
    /// needs no zeroing).
    spare: Vec<u8>,
    /// Reads made by the caller itself (not taken from read-ahead).
    own_reads: u64,
}

impl SegmentReader {
    /// Open segment `id` for reading.
    pub fn open(dir: &Path, id: u32) -> io::Result<Self> {
        Ok(SegmentReader {
            id,
            file: CachedFile::lazy(path(dir, id), Access::Read),
            buf: Vec::new(),
            buf_start: 0,
            ahead: Arc::default(),
            spare: Vec::new(),
            own_reads: 0,
        })
    }

    /// Make `buf` cover `[offset, offset + n)`, reading no further than
    /// `end`; then read the chunk after it ahead.
    fn fill(&mut self, offset: u64, n: usize, end: u64) -> io::Result<bool> {
        let have_end = self.buf_start + self.buf.len() as u64;
        if offset >= self.buf_start && offset + n as u64 <= have_end {
            return Ok(true);
        }
        if offset + n as u64 > end {
            return Ok(false);
        }
        if !self.take_ahead(offset, n) {
            let want = (end - offset).min(n.max(READ_CHUNK) as u64) as usize;
            self.buf.resize(want, 0);
            let read = self
                .file
                .get()
                .and_then(|f| f.read_exact_at(&mut self.buf, offset));
            if let Err(e) = read {
                // Nothing in the buffer may pass for the old offset's bytes.
                self.buf.clear();
                return Err(e);
            }
            self.buf_start = offset;
            self.own_reads += 1;
        }
        self.read_ahead(end);
        Ok(true)
    }

    /// Use the chunk read ahead if, alone or after what is left of the
    /// buffer, it covers `[offset, offset + n)`.
    fn take_ahead(&mut self, offset: u64, n: usize) -> bool {
        let mut slot = self.ahead.lock();
        let Ahead::Ready { start, bytes } = &mut *slot else {
            return false;
        };
        let start = *start;
        let have_end = self.buf_start + self.buf.len() as u64;
        let joined = start == have_end && offset >= self.buf_start && offset <= have_end;
        let from = match joined {
            true => offset.min(start),
            false => start,
        };
        if offset < from || offset + n as u64 > start + bytes.len() as u64 {
            // Not what this read needs (the reader jumped): drop it.
            *slot = Ahead::Idle;
            return false;
        }
        let bytes = std::mem::take(bytes);
        *slot = Ahead::Idle;
        drop(slot);
        if joined && offset < start {
            // A record that straddles the chunks: keep the buffer's end.
            let keep = (offset - self.buf_start) as usize;
            self.buf.drain(..keep);
            self.buf.extend_from_slice(&bytes);
            self.buf_start = offset;
            self.spare = bytes;
        } else {
            self.spare = std::mem::replace(&mut self.buf, bytes);
            self.buf_start = start;
        }
        true
    }

    /// Start reading the chunk after the buffer on a blocking thread, if
    /// there is one before `end`, none is under way, and a runtime runs.
    fn read_ahead(&mut self, end: u64) {
        let from = self.buf_start + self.buf.len() as u64;
        if from >= end {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        {
            let mut slot = self.ahead.lock();
            if !matches!(*slot, Ahead::Idle) {
                return;
            }
            *slot = Ahead::Reading;
        }
        let len = (end - from).min(READ_CHUNK as u64) as usize;
        let (file, slot) = (self.file.clone(), self.ahead.clone());
        let mut bytes = std::mem::take(&mut self.spare);
        runtime.spawn_blocking(move || {
            bytes.resize(len, 0);
            let read = file.get().and_then(|f| f.read_exact_at(&mut bytes, from));
            *slot.lock() = match read {
                Ok(()) => Ahead::Ready { start: from, bytes },
                // The reader reads it itself and meets the error there.
                Err(_) => Ahead::Idle,
            };
        });
    }

    /// The record at `offset`; `end` is where valid data in the file ends.
    pub fn read(&mut self, offset: u64, end: u64) -> io::Result<ReadOutcome<'_>> {
        if !self.fill(offset, HEADER_LEN, end)? {
            return Ok(ReadOutcome::Corrupt);
        }
        let at = (offset - self.buf_start) as usize;
        let Some((len, crc)) = record::header(&self.buf[at..]) else {
            return Ok(ReadOutcome::Corrupt);
        };
        if !(MIN_PAYLOAD..=MAX_PAYLOAD).contains(&len)
            || !self.fill(offset, HEADER_LEN + len, end)?
        {
            return Ok(ReadOutcome::Corrupt);
        }
        let at = (offset - self.buf_start) as usize;
        let payload = &self.buf[at + HEADER_LEN..at + HEADER_LEN + len];
        if crc32fast::hash(payload) != crc {
            return Ok(ReadOutcome::Corrupt);
        }
        Ok(ReadOutcome::Record(payload, (HEADER_LEN + len) as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::segment::tests::{meta, msg};
    use crate::store::segment::SegmentWriter;

    /// A segment of `bodies` in a fresh directory; the record offsets and
    /// the end of the data.
    fn written(id: u32, bodies: &[Vec<u8>]) -> (std::path::PathBuf, Vec<u64>, u64) {
        let dir = std::env::temp_dir().join(format!("warren-seg-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut w = SegmentWriter::create(&dir, id).unwrap();
        let offs = bodies
            .iter()
            .enumerate()
            .map(|(i, b)| w.append(&meta(i as u64), &msg(b)))
            .collect();
        w.flush().unwrap();
        (dir, offs, w.len())
    }

    fn body_len(r: &mut SegmentReader, offset: u64, end: u64) -> usize {
        match r.read(offset, end).unwrap() {
            ReadOutcome::Record(p, _) => record::decode(p).unwrap().1.body.len(),
            ReadOutcome::Corrupt => panic!("corrupt at {offset}"),
        }
    }

    #[test]
    fn reader_reads_back_what_the_writer_wrote() {
        let bodies = [vec![1], vec![7u8; 300_000], vec![2]];
        let (dir, offs, end) = written(3, &bodies);
        let mut r = SegmentReader::open(&dir, 3).unwrap();
        let lens: Vec<usize> = offs.iter().map(|&o| body_len(&mut r, o, end)).collect();
        assert_eq!(lens, vec![1, 300_000, 1]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_failed_read_leaves_nothing_that_passes_for_other_bytes() {
        let bodies = [vec![1], vec![7u8; 300_000], vec![2]];
        let (dir, offs, end) = written(5, &bodies);
        let mut r = SegmentReader::open(&dir, 5).unwrap();
        let seq = |r: &mut SegmentReader, o: u64| match r.read(o, end).unwrap() {
            ReadOutcome::Record(p, _) => record::decode(p).unwrap().0.seq,
            ReadOutcome::Corrupt => panic!("corrupt at {o}"),
        };
        assert_eq!(seq(&mut r, offs[0]), 0);
        // A read told of more data than the file has fails part way, after
        // the last record's bytes landed at the head of the buffer.
        assert!(r.read(offs[2], end + 500_000).is_err());
        assert_eq!(
            seq(&mut r, offs[0]),
            0,
            "the first record's bytes, not the last's"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn backlog_is_read_ahead_off_the_callers_thread() {
        // 40 KB records: some straddle the 256 KiB chunks.
        let bodies: Vec<Vec<u8>> = (0..60u8).map(|i| vec![i; 40_000]).collect();
        let (dir, offs, end) = written(4, &bodies);
        let mut r = SegmentReader::open(&dir, 4).unwrap();
        for (i, &o) in offs.iter().enumerate() {
            // Give the read-ahead time to land, as a consumer's pace would.
            while matches!(*r.ahead.lock(), Ahead::Reading) {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            match r.read(o, end).unwrap() {
                ReadOutcome::Record(p, _) => {
                    let m = record::decode(p).unwrap().1;
                    assert_eq!(&m.body[..], &bodies[i][..], "record {i}");
                }
                ReadOutcome::Corrupt => panic!("corrupt at {o}"),
            }
        }
        assert_eq!(r.own_reads, 1, "only the first chunk is read by the caller");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
