//! Recovery of a durable queue's log at start: each segment is scanned
//! whole, settled records are counted out with its ack file, corrupt
//! stretches are noted (to be stepped over when the tail is read) and a
//! torn end of the last segment is truncated.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use super::{QueueLog, Recovered, Recovery, Segment};
use crate::store::acks::{self, AckMarks};
use crate::store::record::FLAG_PERSISTENT;
use crate::store::segment::{self, ScanItem, FILE_HEADER_LEN};

impl QueueLog {
    /// Rebuild a durable queue's log from its directory.
    pub fn recover(dir: &Path, segment_bytes: u64) -> io::Result<(Self, Recovery)> {
        Self::recover_reading(dir, segment_bytes, &mut |_| {})
    }

    /// Rebuild a durable queue's log, showing `read` the encoded
    /// properties of every persistent record met, settled or not, oldest
    /// first (what a deduplicating queue rebuilds its cache from).
    pub fn recover_reading(
        dir: &Path,
        segment_bytes: u64,
        read: &mut dyn FnMut(&[u8]),
    ) -> io::Result<(Self, Recovery)> {
        let mut ids: Vec<u32> = Vec::new();
        let mut ack_ids: Vec<u32> = Vec::new();
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries.collect::<Vec<_>>(),
            // Declared but never written to: nothing on disk.
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let name = entry?.file_name();
            let name = name.to_string_lossy();
            if let Some(id) = name.strip_suffix(".seg").and_then(|n| n.parse().ok()) {
                ids.push(id);
            } else if let Some(id) = name.strip_suffix(".ack").and_then(|n| n.parse().ok()) {
                ack_ids.push(id);
            }
        }
        ids.sort_unstable();
        let mut report = Recovery::default();
        let mut segments = BTreeMap::new();
        let last = ids.last().copied();
        for &id in &ids {
            if let Some(seg) = recover_segment(dir, id, Some(id) == last, &mut report, read)? {
                segments.insert(id, seg);
            }
        }
        for id in ack_ids.into_iter().filter(|id| !segments.contains_key(id)) {
            let _ = std::fs::remove_file(acks::path(dir, id));
        }
        let next_id = last.map_or(1, |l| l + 1);
        let mut log = Self::with_first_segment(dir, true, segment_bytes, segments, next_id)?;
        log.tail_count = log.segments.values().map(|s| u64::from(s.tail)).sum();
        log.live_total = log.tail_count;
        log.cursor = log
            .segments
            .iter()
            .find(|(_, s)| s.tail > 0)
            .map(|(&id, _)| (id, FILE_HEADER_LEN));
        report.messages = log.tail_count;
        Ok((log, report))
    }
}

/// Show `read` the properties of the record at `offset` (valid, `len`
/// bytes with its header).
fn properties_of(bytes: &[u8], offset: u64, len: u64, read: &mut dyn FnMut(&[u8])) {
    let start = offset as usize + crate::store::record::HEADER_LEN;
    let Some(payload) = bytes.get(start..offset as usize + len as usize) else {
        return;
    };
    if let Some(p) = crate::store::record::properties(payload) {
        read(p);
    }
}

/// Scan one segment: count its live records, note corrupt stretches,
/// truncate a torn end. None when nothing in it is live (it is deleted) or
/// it is unusable (moved aside).
fn recover_segment(
    dir: &Path,
    id: u32,
    is_last: bool,
    report: &mut Recovery,
    read: &mut dyn FnMut(&[u8]),
) -> io::Result<Option<Segment>> {
    let path = segment::path(dir, id);
    let bytes = std::fs::read(&path)?;
    if !segment::header_ok(&bytes, segment::MAGIC, id) {
        if bytes.len() < FILE_HEADER_LEN as usize && is_last {
            // Created at a crash before its header reached the disk.
            let _ = std::fs::remove_file(&path);
            return Ok(None);
        }
        let aside = path.with_extension("seg.corrupt");
        tracing::warn!(path = %path.display(), moved_to = %aside.display(), "segment header is not valid; file set aside, its messages are not recovered");
        std::fs::rename(&path, &aside)?;
        return Ok(None);
    }
    let marks = match std::fs::read(acks::path(dir, id)) {
        Ok(b) => acks::parse(&b, id).unwrap_or_else(|| {
            tracing::warn!(path = %acks::path(dir, id).display(), "ack file header is not valid; its acks are ignored (messages may be redelivered)");
            AckMarks::default()
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => AckMarks::default(),
        Err(e) => return Err(e),
    };
    if marks.bad_entries > 0 {
        tracing::warn!(path = %acks::path(dir, id).display(), entries = marks.bad_entries, "ack entries failing their checksum ignored (messages may be redelivered)");
    }
    let mut seg = Segment {
        end: bytes.len() as u64,
        ..Default::default()
    };
    let mut rec = Recovered {
        marks,
        corrupt: Vec::new(),
    };
    for item in segment::scan(&bytes) {
        match item {
            ScanItem::Record { offset, meta, len } => {
                report.next_seq = report.next_seq.max(meta.seq.saturating_add(1));
                if meta.flags & FLAG_PERSISTENT != 0 {
                    properties_of(&bytes, offset, len, read);
                }
                if meta.flags & FLAG_PERSISTENT != 0 && !rec.marks.is_settled(offset) {
                    seg.live += 1;
                    report.body_bytes += meta.body_len;
                }
            }
            ScanItem::Corrupt { offset, resumed_at } => {
                tracing::warn!(path = %path.display(), offset, bytes = resumed_at - offset, "corrupt record skipped");
                report.corrupt_records += 1;
                rec.corrupt.push((offset, resumed_at));
            }
            ScanItem::Torn { offset } => {
                seg.end = offset;
                if is_last {
                    tracing::warn!(path = %path.display(), offset, bytes = bytes.len() as u64 - offset, "torn record at the end of the log truncated");
                    report.torn_tails += 1;
                    let f = std::fs::OpenOptions::new().write(true).open(&path)?;
                    f.set_len(offset)?;
                    f.sync_all()?;
                } else {
                    tracing::warn!(path = %path.display(), offset, bytes = bytes.len() as u64 - offset, "corrupt record skipped (to the end of the segment)");
                    report.corrupt_records += 1;
                }
            }
        }
    }
    if seg.live == 0 {
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::remove_file(acks::path(dir, id));
        return Ok(None);
    }
    seg.tail = seg.live;
    seg.recovered = Some(Box::new(rec));
    Ok(Some(seg))
}
