//! A queue log whose writes fail (injected into its segment and ack
//! writers): nothing confirmed may be lost, no offset handed out may be
//! left empty, and recovery afterwards finds no damage.

use std::io::ErrorKind::StorageFull;

use bytes::Bytes;

use super::*;

struct Dir(PathBuf);

impl Dir {
    fn new() -> Dir {
        let d = std::env::temp_dir().join(format!("warren-qlog-{}", rand::random::<u64>()));
        Dir(d)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn msg(body: Vec<u8>) -> Message {
    Message {
        exchange: Arc::from(""),
        routing_key: Arc::from("q"),
        properties: Bytes::from_static(&[0, 0]),
        body: Bytes::from(body),
        persistent: true,
        expiration_ms: None,
    }
}

fn body(n: u8, len: usize) -> Vec<u8> {
    vec![n; len]
}

fn append(log: &mut QueueLog, seq: u64, len: usize) -> io::Result<DiskRef> {
    log.append(seq, None, &msg(body(seq as u8, len)), true, false)
}

fn file_len(dir: &Dir, id: u32) -> u64 {
    std::fs::metadata(segment::path(&dir.0, id)).map_or(0, |m| m.len())
}

/// Recover the log and read every message back: what comes back (first
/// byte of each body, and its length) and the recovery report.
fn recovered(dir: &Dir, segment_bytes: u64) -> (Vec<(u8, usize)>, Recovery) {
    let (mut log, report) = QueueLog::recover(&dir.0, segment_bytes).unwrap();
    let mut out = Vec::new();
    log.read_tail(u64::MAX, |r| out.push(r));
    let got = out
        .iter()
        .map(|m| (m.message.body[0], m.message.body.len()))
        .collect();
    (got, report)
}

fn clean(report: &Recovery) {
    assert_eq!(
        (report.corrupt_records, report.torn_tails),
        (0, 0),
        "{report:?}"
    );
}

#[test]
fn a_failed_flush_keeps_its_records_for_the_retry_at_the_same_offsets() {
    let dir = Dir::new();
    let mut log = QueueLog::create(&dir.0, true, 1 << 20).unwrap();
    let refs: Vec<DiskRef> = (0..3).map(|i| append(&mut log, i, 100).unwrap()).collect();
    // Part of the buffer reaches the file, then the disk is full.
    log.writer.inject_fault(40, StorageFull);
    let mut files = Vec::new();
    let e = log.flush_for_sync(&mut files).unwrap_err();
    assert_eq!(e.kind(), StorageFull);
    assert!(
        files.is_empty(),
        "files handed over before they were written"
    );
    assert_eq!(file_len(&dir, 1), 0, "the partial write was not cut back");
    log.flush_for_sync(&mut files).unwrap();
    assert!(
        !files.is_empty(),
        "the segment is not synced after the retry"
    );
    assert_eq!(file_len(&dir, 1), log.writer.len());
    assert!(refs.windows(2).all(|w| w[0].offset < w[1].offset));
    drop(log);
    let (got, report) = recovered(&dir, 1 << 20);
    clean(&report);
    assert_eq!(got, vec![(0, 100), (1, 100), (2, 100)]);
}

#[test]
fn a_failed_append_is_taken_back_whole_and_its_offset_reused() {
    let dir = Dir::new();
    let mut log = QueueLog::create(&dir.0, true, 1 << 24).unwrap();
    let big = 100_000;
    append(&mut log, 0, big).unwrap();
    append(&mut log, 1, big).unwrap();
    let free_at = log.writer.len();
    // The third crosses the write buffer's size: its flush fails after
    // writing part of the buffer (into the second record).
    log.writer.inject_fault(150_000, StorageFull);
    let e = append(&mut log, 2, big).unwrap_err();
    assert_eq!(e.kind(), StorageFull);
    assert_eq!(log.writer.len(), free_at, "the failed record was kept");
    assert_eq!(file_len(&dir, 1), 0, "the partial write was not cut back");
    let r = append(&mut log, 3, 10).unwrap();
    assert_eq!(
        u64::from(r.offset),
        free_at,
        "a hole before the next record"
    );
    log.flush_for_sync(&mut Vec::new()).unwrap();
    drop(log);
    let (got, report) = recovered(&dir, 1 << 24);
    clean(&report);
    assert_eq!(got, vec![(0, big), (1, big), (3, 10)]);
}

#[test]
fn a_roll_that_fails_changes_nothing() {
    let dir = Dir::new();
    let seg = 4096;
    let mut log = QueueLog::create(&dir.0, true, seg).unwrap();
    let mut seq = 0;
    while log.writer.len() < seg {
        append(&mut log, seq, 500).unwrap();
        seq += 1;
    }
    // The flush before the roll fails: the next segment is not begun.
    log.writer.inject_fault(100, StorageFull);
    assert_eq!(append(&mut log, 99, 500).unwrap_err().kind(), StorageFull);
    assert_eq!(log.writer.id, 1);
    assert!(log.to_sync.is_empty() && log.writer_logged);
    // (Creating the next segment cannot fail: its file is created when
    // first written.)
    append(&mut log, seq, 500).unwrap();
    assert_eq!(log.writer.id, 2);
    log.flush_for_sync(&mut Vec::new()).unwrap();
    drop(log);
    let (got, report) = recovered(&dir, seg);
    clean(&report);
    let want: Vec<(u8, usize)> = (0..=seq).map(|i| (i as u8, 500)).collect();
    assert_eq!(got, want);
}

#[test]
fn ack_entries_that_could_not_be_written_stay_buffered() {
    let dir = Dir::new();
    let mut log = QueueLog::create(&dir.0, true, 1 << 20).unwrap();
    let kept = append(&mut log, 0, 10).unwrap();
    let acked = append(&mut log, 1, 10).unwrap();
    log.flush_for_sync(&mut Vec::new()).unwrap();
    log.settle(acked).unwrap();
    let acks = log.segments.get_mut(&1).and_then(|s| s.acks.as_mut());
    acks.unwrap().inject_fault(5, StorageFull);
    assert_eq!(log.flush_acks().unwrap_err().kind(), StorageFull);
    assert_eq!(log.acks_buffered, vec![1]);
    log.flush_acks().unwrap();
    assert!(log.acks_buffered.is_empty());
    drop(log);
    let (got, report) = recovered(&dir, 1 << 20);
    clean(&report);
    assert_eq!(got, vec![(0, 10)], "kept {kept:?}, acked {acked:?}");
}
