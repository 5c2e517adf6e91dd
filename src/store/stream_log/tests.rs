use std::sync::Arc;

use super::*;

fn dir() -> PathBuf {
    std::env::temp_dir().join(format!("warren-stream-{}", rand::random::<u64>()))
}

fn msg(body: Vec<u8>) -> Arc<Message> {
    Arc::new(Message {
        exchange: Arc::from(""),
        routing_key: Arc::from("s"),
        properties: bytes::Bytes::from_static(&[0, 0]),
        body: body.into(),
        persistent: true,
        expiration_ms: None,
    })
}

fn body_of(i: u64) -> Vec<u8> {
    let mut b = i.to_le_bytes().to_vec();
    b.resize(1_000, (i % 251) as u8);
    b
}

fn read_all(log: &mut StreamLog, from: u64) -> Vec<(u64, Vec<u8>)> {
    log.flush().unwrap();
    let mut c = Cursor::at(from);
    let mut out = Vec::new();
    loop {
        match log.read(&mut c, None).unwrap() {
            Read::Entry(e) => out.push((e.offset, e.message.body.to_vec())),
            Read::Skipped(_) => panic!("no filter"),
            Read::End => return out,
        }
    }
}

#[test]
fn readers_see_only_what_was_written_and_filters_skip_bodies() {
    let d = dir();
    let mut log = StreamLog::create(&d, 64 * 1024).unwrap();
    log.append(msg(body_of(0)), 1).unwrap();
    let mut c = Cursor::at(0);
    assert!(
        matches!(log.read(&mut c, None).unwrap(), Read::End),
        "buffered only"
    );
    log.flush().unwrap();
    assert!(matches!(log.read(&mut c, None).unwrap(), Read::Entry(e) if e.offset == 0));
    for i in 1..3_000 {
        log.append(msg(body_of(i)), 1 + i).unwrap();
    }
    log.flush().unwrap();
    let refuse_all = |_: &[u8]| false;
    let mut c = Cursor::at(0);
    let mut skipped = 0;
    while let Read::Skipped(_) = log.read(&mut c, Some(&refuse_all)).unwrap() {
        skipped += 1;
    }
    assert_eq!((skipped, c.next), (3_000, 3_000));
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn retention_keeps_the_highest_offset_on_disk_across_a_restart() {
    let d = dir();
    write_and_close(&d, 500);
    let (mut log, _) = StreamLog::recover(&d, 64 * 1024).unwrap();
    assert_eq!(log.next_offset(), 500);
    // Everything is old, and the new active segment has nothing written.
    log.append(msg(body_of(500)), 9_000_000).unwrap();
    log.enforce_retention(None, Some(1), 9_000_000);
    assert_eq!(log.closed.len(), 1, "the newest closed segment stays");
    drop(log);
    let (log, _) = StreamLog::recover(&d, 64 * 1024).unwrap();
    assert_eq!(log.next_offset(), 500, "offsets go on, not from 0");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn readers_get_every_offset_in_order_from_memory_and_disk() {
    let d = dir();
    // 64 KiB segments, 10,000 KB of messages: most are on disk only.
    let mut log = StreamLog::create(&d, 64 * 1024).unwrap();
    for i in 0..10_000u64 {
        assert_eq!(log.append(msg(body_of(i)), 1_000 + i).unwrap(), i);
    }
    assert!(log.tail.len() < 10_000, "the tail is bounded");
    let all = read_all(&mut log, 0);
    assert_eq!(all.len(), 10_000);
    for (i, (offset, body)) in all.iter().enumerate() {
        assert_eq!((*offset, body), (i as u64, &body_of(i as u64)));
    }
    let later = read_all(&mut log, 4_321);
    assert_eq!(later.first().map(|e| e.0), Some(4_321));
    assert_eq!(later.len(), 10_000 - 4_321);
    assert!(log.stats().segments > 100);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn time_lookup_finds_the_first_message_at_or_after() {
    let d = dir();
    let mut log = StreamLog::create(&d, 64 * 1024).unwrap();
    for i in 0..3_000u64 {
        log.append(msg(body_of(i)), 10_000 + i * 10).unwrap();
    }
    assert_eq!(log.offset_at_time(0).unwrap(), 0);
    assert_eq!(log.offset_at_time(10_000 + 1_234 * 10).unwrap(), 1_234);
    assert_eq!(log.offset_at_time(10_000 + 1_234 * 10 - 5).unwrap(), 1_234);
    assert_eq!(log.offset_at_time(99_999_999).unwrap(), 3_000);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn retention_deletes_whole_segments_from_the_head() {
    let d = dir();
    let mut log = StreamLog::create(&d, 64 * 1024).unwrap();
    for i in 0..2_000u64 {
        log.append(msg(body_of(i)), 1_000 + i).unwrap();
    }
    let before = log.stats();
    let deleted = log.enforce_retention(Some(500_000), None, 0);
    let after = log.stats();
    assert!(deleted > 0);
    assert!(after.bytes <= 500_000 && after.bytes > 500_000 - 70 * 1024);
    assert!(after.first_offset > 0);
    assert_eq!(after.next_offset, before.next_offset);
    // A reader behind the head starts at the head.
    let rest = read_all(&mut log, 0);
    assert_eq!(rest.first().map(|e| e.0), Some(after.first_offset));
    // By age: everything closed is older than the cut, the active stays.
    log.enforce_retention(None, Some(10), 5_000);
    assert_eq!(log.closed.len(), 0);
    assert!(!log.is_empty());
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn recovery_reads_back_every_record_and_ignores_a_torn_tail() {
    let d = dir();
    write_and_close(&d, 500);
    let last = segment_ids_sorted(&d).pop().unwrap();
    let path = segment::path(&d, last);
    let len = std::fs::metadata(&path).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(len - 10).unwrap();
    let (mut log, report) = StreamLog::recover(&d, 64 * 1024).unwrap();
    assert_eq!(report.torn_segments, 1);
    assert_eq!(log.next_offset(), 499, "the torn record is gone");
    let all = read_all(&mut log, 0);
    assert_eq!(all.len(), 499);
    assert_eq!(all[498], (498, body_of(498)));
    // Appends go on in a new segment, after the last good offset.
    assert_eq!(log.append(msg(body_of(499)), 2_000).unwrap(), 499);
    assert_eq!(log.offset_at_time(1_250).unwrap(), 250);
    std::fs::remove_dir_all(&d).unwrap();
}

/// A stream of `n` messages (appended at 1,000 + i ms) written out and
/// closed, as a broker leaves it.
fn write_and_close(d: &Path, n: u64) {
    let mut log = StreamLog::create(d, 64 * 1024).unwrap();
    for i in 0..n {
        log.append(msg(body_of(i)), 1_000 + i).unwrap();
    }
    let mut files = Vec::new();
    log.flush_for_sync(&mut files).unwrap();
}

fn segment_ids_sorted(d: &Path) -> Vec<u32> {
    let mut ids = recover::segment_ids_for_tests(d);
    ids.sort_unstable();
    ids
}
