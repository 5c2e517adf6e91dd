//! Ack files: beside each segment, an append-only list of what happened to
//! its records after they were written (acked, delivered, dropped).
//!
//! ```text
//! ack file = "WARRENAK" version:u32 segment_id:u32 entry*     (little-endian)
//! entry    = offset:u32 kind:u8 reserved:[u8;3] crc:u32       (12 bytes)
//! crc      = CRC-32 of the entry's first 8 bytes
//! ```
//! `offset` names a record by where it starts in the segment. Kinds: 1 the
//! record is settled (acked, rejected or purged) and must not come back;
//! 2 it was delivered (it comes back with redelivered set); 3 every record
//! from `offset` on is settled (a purge); 4 it was returned to the queue,
//! for the n-th time, n in `reserved` (24 bits, little-endian): the
//! delivery count of x-delivery-limit, kept across restarts. A torn entry
//! at the end is ignored; an entry failing its checksum is skipped and
//! counted.

use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use ahash::AHashSet as HashSet;

use super::file_cache::{open_for_writing, Access, CachedFile};
use super::segment::{file_header, header_ok, AppendBuffer, FILE_HEADER_LEN};

/// Magic bytes at the head of every ack file.
pub const MAGIC: &[u8; 8] = b"WARRENAK";
const ENTRY_LEN: usize = 12;

/// What an entry says about a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum AckKind {
    /// Settled: never deliver again.
    Settled = 1,
    /// Delivered at least once.
    Delivered = 2,
    /// This record and every later one in the segment are settled.
    SettledFrom = 3,
    /// Returned to the queue (requeued); the entry carries the count.
    Returned = 4,
}

/// File name of segment `id`'s ack file.
pub fn path(dir: &Path, id: u32) -> PathBuf {
    dir.join(format!("{id:08}.ack"))
}

/// An ack file open for appending, with a buffer.
#[derive(Debug)]
pub struct AckWriter {
    out: AppendBuffer,
}

impl AckWriter {
    /// Open (creating with a header if missing) segment `id`'s ack file.
    pub fn open(dir: &Path, id: u32) -> io::Result<Self> {
        let path = path(dir, id);
        // The segment's file (and the queue's directory) may not be
        // written yet: an ack can come first.
        let file = open_for_writing(&path)?;
        let mut buf = Vec::new();
        let mut written = file.metadata()?.len();
        let mut header = [0u8; FILE_HEADER_LEN as usize];
        let header_ok = written >= FILE_HEADER_LEN
            && file.read_exact_at(&mut header, 0).is_ok()
            && header_ok(&header, MAGIC, id);
        if !header_ok {
            // New, created at a crash before its header was written, or
            // damaged (recovery has already warned): start it afresh.
            file.set_len(0)?;
            written = 0;
            buf.extend_from_slice(&file_header(MAGIC, id));
        } else if !(written - FILE_HEADER_LEN).is_multiple_of(ENTRY_LEN as u64) {
            // An entry torn by a crash: drop it, or every later entry
            // would be read out of step.
            written -= (written - FILE_HEADER_LEN) % ENTRY_LEN as u64;
            file.set_len(written)?;
        }
        Ok(AckWriter {
            out: AppendBuffer::new(CachedFile::adopt(path, Access::Write, file), written, buf),
        })
    }

    /// Buffer an entry (`count` is kept for `Returned` entries).
    pub fn push(&mut self, offset: u64, kind: AckKind, count: u32) {
        let mut e = [0u8; ENTRY_LEN];
        e[..4].copy_from_slice(&(offset as u32).to_le_bytes());
        e[4] = kind as u8;
        e[5..8].copy_from_slice(&count.min(0xFF_FFFF).to_le_bytes()[..3]);
        let crc = crc32fast::hash(&e[..8]);
        e[8..].copy_from_slice(&crc.to_le_bytes());
        self.out.buf.extend_from_slice(&e);
    }

    /// Write buffered entries to the OS (positional, and a failed write is
    /// cut back off the file, so a retry stays in step).
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// Make the next write put `after` bytes in the file, then fail.
    #[cfg(test)]
    pub fn inject_fault(&mut self, after: usize, kind: io::ErrorKind) {
        self.out.inject_fault(after, kind);
    }
}

/// An ack file read back.
#[derive(Debug, Default)]
pub struct AckMarks {
    /// Offsets of settled records.
    pub settled: HashSet<u32>,
    /// Offsets of delivered records.
    pub delivered: HashSet<u32>,
    /// Records at or after this offset are settled.
    pub settled_from: Option<u32>,
    /// How many times records were returned to the queue, by offset.
    pub returned: ahash::AHashMap<u32, u32>,
    /// Entries that failed their checksum.
    pub bad_entries: usize,
}

impl AckMarks {
    /// Whether the record at `offset` is settled.
    pub fn is_settled(&self, offset: u64) -> bool {
        self.settled.contains(&(offset as u32))
            || self.settled_from.is_some_and(|f| offset >= u64::from(f))
    }
}

/// Parse an ack file's bytes (for segment `id`); a wrong header means the
/// file is not usable (None).
pub fn parse(buf: &[u8], id: u32) -> Option<AckMarks> {
    if buf.is_empty() {
        return Some(AckMarks::default());
    }
    if !header_ok(buf, MAGIC, id) {
        return None;
    }
    let mut marks = AckMarks::default();
    for e in buf[FILE_HEADER_LEN as usize..].chunks_exact(ENTRY_LEN) {
        let crc = u32::from_le_bytes([e[8], e[9], e[10], e[11]]);
        if crc32fast::hash(&e[..8]) != crc {
            marks.bad_entries += 1;
            continue;
        }
        let offset = u32::from_le_bytes([e[0], e[1], e[2], e[3]]);
        match e[4] {
            1 => {
                marks.settled.insert(offset);
            }
            2 => {
                marks.delivered.insert(offset);
            }
            3 => {
                marks.settled_from = Some(marks.settled_from.map_or(offset, |f| f.min(offset)));
            }
            4 => {
                let count = u32::from_le_bytes([e[5], e[6], e[7], 0]);
                let n = marks.returned.entry(offset).or_insert(0);
                *n = (*n).max(count);
            }
            _ => marks.bad_entries += 1,
        }
    }
    Some(marks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_torn_entry_is_ignored() {
        let dir = std::env::temp_dir().join(format!("warren-ack-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut w = AckWriter::open(&dir, 5).unwrap();
        w.push(16, AckKind::Settled, 0);
        w.push(100, AckKind::Delivered, 0);
        w.push(400, AckKind::SettledFrom, 0);
        w.push(100, AckKind::Returned, 2);
        w.push(100, AckKind::Returned, 3);
        w.flush().unwrap();
        let mut bytes = std::fs::read(path(&dir, 5)).unwrap();
        bytes.extend_from_slice(&[1, 2, 3]); // torn entry
        let m = parse(&bytes, 5).unwrap();
        assert!(m.is_settled(16));
        assert!(!m.is_settled(100));
        assert!(m.delivered.contains(&100));
        assert_eq!(m.returned.get(&100), Some(&3));
        assert!(m.is_settled(400) && m.is_settled(500));
        assert_eq!(m.bad_entries, 0);
        // A flipped byte makes that entry count as bad, not as an ack.
        bytes[16] ^= 1;
        let m = parse(&bytes, 5).unwrap();
        assert!(!m.is_settled(16));
        assert_eq!(m.bad_entries, 1);
        assert!(parse(&bytes, 6).is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_torn_entry_does_not_put_later_entries_out_of_step() {
        let dir = std::env::temp_dir().join(format!("warren-ack-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut w = AckWriter::open(&dir, 1).unwrap();
        w.push(16, AckKind::Settled, 0);
        w.flush().unwrap();
        drop(w);
        // A crash in the middle of the next entry.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(path(&dir, 1))
            .unwrap();
        std::io::Write::write_all(&mut f, &[9, 9, 9, 9, 9]).unwrap();
        drop(f);
        let mut w = AckWriter::open(&dir, 1).unwrap();
        w.push(300, AckKind::Settled, 0);
        w.flush().unwrap();
        let m = parse(&std::fs::read(path(&dir, 1)).unwrap(), 1).unwrap();
        assert!(m.is_settled(16) && m.is_settled(300));
        assert_eq!(m.bad_entries, 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
