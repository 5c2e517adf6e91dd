//! Reading a stream's segments back at start: each record is checked and
//! indexed; the first damaged or torn record ends its segment (what
//! follows it in that file is not trusted), and offsets must follow each
//! other. Writing goes on in a new segment.

use std::collections::VecDeque;
use std::io;
use std::path::Path;

use super::{SegmentInfo, StreamLog};
use crate::store::record;
use crate::store::segment::{self, ReadOutcome, SegmentReader, FILE_HEADER_LEN, MAGIC};

/// What recovery found besides the log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Segments that ended in a damaged or torn record.
    pub torn_segments: u64,
}

impl StreamLog {
    /// The stream whose segments are in `dir` (an empty one if there are
    /// none). Blocking file I/O: run at start, off the async workers.
    pub fn recover(dir: &Path, max_segment_bytes: u64) -> io::Result<(StreamLog, Recovered)> {
        let mut ids = segment_ids(dir)?;
        ids.sort_unstable();
        let mut closed: VecDeque<SegmentInfo> = VecDeque::new();
        let mut report = Recovered::default();
        for id in &ids {
            let expected = closed.back().map(|s| s.next);
            let (info, torn) = read_segment(dir, *id, expected)?;
            report.torn_segments += u64::from(torn);
            // A segment without a valid record is left alone (it may be
            // looked at by hand); reading and writing go on around it.
            if let Some(info) = info {
                closed.push_back(info);
            }
        }
        let next_id = ids.last().map_or(1, |id| id + 1);
        let first = closed.back().map_or(0, |s| s.next);
        let log = StreamLog::starting_at(dir, max_segment_bytes, closed, next_id, first)?;
        Ok((log, report))
    }
}

fn segment_ids(dir: &Path) -> io::Result<Vec<u32>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut ids = Vec::new();
    for entry in entries {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if let Some(id) = name.strip_suffix(".seg").and_then(|n| n.parse().ok()) {
            ids.push(id);
        }
    }
    Ok(ids)
}

/// Index segment `id`; `expected` is the offset its first record must
/// have (None for the first segment). Returns the segment (None if it has
/// no valid record) and whether it ended in damage.
fn read_segment(
    dir: &Path,
    id: u32,
    expected: Option<u64>,
) -> io::Result<(Option<SegmentInfo>, bool)> {
    let path = segment::path(dir, id);
    let len = std::fs::metadata(&path)?.len();
    let mut header = [0u8; FILE_HEADER_LEN as usize];
    let file = std::fs::File::open(&path)?;
    let header_read = std::os::unix::fs::FileExt::read_exact_at(&file, &mut header, 0);
    if header_read.is_err() || !segment::header_ok(&header, MAGIC, id) {
        tracing::warn!(path = %path.display(), "stream segment without a valid header is ignored");
        return Ok((None, true));
    }
    let mut reader = SegmentReader::open(dir, id)?;
    let mut info: Option<SegmentInfo> = None;
    let mut pos = FILE_HEADER_LEN;
    let mut torn = false;
    while pos < len {
        let ReadOutcome::Record(payload, rec_len) = reader.read(pos, len)? else {
            torn = true;
            break;
        };
        let Some(meta) = record::meta(payload) else {
            torn = true;
            break;
        };
        // Offsets follow each other within a segment; across segments a
        // gap is allowed (a damaged segment before this one lost its end).
        let bad = match &info {
            Some(s) => meta.seq != s.next,
            None => expected.is_some_and(|e| meta.seq < e),
        };
        if bad {
            torn = true;
            break;
        }
        let seg = info.get_or_insert_with(|| SegmentInfo::new(id, meta.seq));
        seg.note(
            meta.seq,
            pos,
            pos + rec_len,
            meta.expires_at_ms.unwrap_or(0),
        );
        pos += rec_len;
    }
    if torn {
        tracing::warn!(path = %path.display(), at = pos, "stream segment ends in a damaged record; it is read up to there");
    }
    Ok((info, torn))
}

/// The segment ids in `dir`, unsorted (tests).
#[cfg(test)]
pub fn segment_ids_for_tests(dir: &Path) -> Vec<u32> {
    segment_ids(dir).unwrap_or_default()
}
