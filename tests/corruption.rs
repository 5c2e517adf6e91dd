//! Recovery from damaged segment files: a record whose bytes were flipped
//! is skipped and reported (`corrupt record`, with its file and offset), a
//! record torn at the end of the last segment is truncated and reported
//! (`torn`), a corrupt length field costs at most the records after it in
//! its own segment, and garbage after the last record of a segment is
//! ignored. In every case the broker starts and serves the rest in order.
//! Messages are written by an in-process broker (stopped gracefully), the
//! files are edited, and the `warren` binary recovers them so that its log
//! can be checked.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::child::{connect, ChildBroker, STEP};
use common::disk::DataDir;
use common::*;
use futures_lite::StreamExt;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::Connection;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Small segments: a few hundred 1 KiB messages span several files.
const SEGMENT_BYTES: u64 = 64 * 1024;
/// Messages written before the damage.
const COUNT: usize = 300;
/// The durable queue under test.
const QUEUE: &str = "damaged";
/// Bytes before the first record of a segment file.
const SEGMENT_HEADER: u64 = 16;
/// Bytes before a record's payload (length and checksum).
const RECORD_HEADER: u64 = 8;
/// Upper bound for a whole test.
const TEST_BOUND: Duration = Duration::from_secs(40);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_drops_only_its_record_and_is_reported() {
    bounded(TEST_BOUND, async {
        let dir = DataDir::new();
        populate(&dir).await;
        let records = records_of(&dir);
        let victim = middle_record(&records);
        flip_byte(&victim.file, victim.body_offset + 100);
        flip_byte(&victim.file, victim.body_offset + 500);

        let r = recover(&dir).await;
        let expected: Vec<usize> = (0..COUNT).filter(|&n| n != victim.number).collect();
        assert_eq!(
            r.numbers, expected,
            "everything but message {} should be served, in order",
            victim.number
        );
        let line = r.broker.log_line(|l| l.contains("corrupt record")).await;
        assert!(line.contains("WARN"), "not a warning: {line}");
        assert!(
            line.contains(&file_name(&victim.file)),
            "the warning should name {}: {line}",
            victim.file.display()
        );
        let offsets = [victim.offset, victim.offset + RECORD_HEADER];
        assert!(
            offsets.iter().any(|o| line.contains(&o.to_string())),
            "the warning should give the record's offset ({}): {line}",
            victim.offset
        );
        r.broker.assert_no_panic();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_last_record_is_truncated_and_the_rest_served() {
    bounded(TEST_BOUND, async {
        let dir = DataDir::new();
        populate(&dir).await;
        let records = records_of(&dir);
        let last = records.last().expect("records");
        truncate(
            &last.file,
            last.offset + RECORD_HEADER + u64::from(last.len) / 2,
        );

        let r = recover(&dir).await;
        let served: Vec<usize> = (0..COUNT - 1).collect();
        assert_eq!(r.numbers, served, "every complete record, in order");
        let line = r.broker.log_line(|l| l.contains("torn")).await;
        assert!(
            line.contains(&file_name(&last.file)),
            "the report should name {}: {line}",
            last.file.display()
        );
        // What is appended after the repair reads back after a crash.
        append_crash_and_recover(&dir, r, &served).await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_length_field_keeps_the_records_before_it() {
    bounded(TEST_BOUND, async {
        for (what, bad_len) in bad_lengths() {
            let case = corrupt_length(bad_len).await;
            let before: Vec<usize> = case
                .records
                .iter()
                .take_while(|r| r.number != case.victim.number)
                .map(|r| r.number)
                .collect();
            assert!(
                case.numbers.starts_with(&before),
                "length field of message {} set {what}: the {} messages before it \
                 should all be served first; got {}",
                case.victim.number,
                before.len(),
                list(&case.numbers)
            );
            let line = case
                .broker
                .log_line(|l| l.contains("corrupt record") || l.contains("torn"))
                .await;
            assert!(
                line.contains(&file_name(&case.victim.file)),
                "length field set {what}: the report should name {}: {line}",
                case.victim.file.display()
            );
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_length_field_spares_later_segments() {
    bounded(TEST_BOUND, async {
        for (what, bad_len) in bad_lengths() {
            let case = corrupt_length(bad_len).await;
            let later: Vec<usize> = case
                .records
                .iter()
                .filter(|r| r.file > case.victim.file)
                .map(|r| r.number)
                .collect();
            assert!(
                !later.is_empty(),
                "the victim should not be in the last segment"
            );
            let missing: Vec<usize> = later
                .iter()
                .filter(|n| !case.numbers.contains(n))
                .copied()
                .collect();
            assert!(
                missing.is_empty(),
                "length field of message {} in {} set {what}: messages in later \
                 segments were not served: {}",
                case.victim.number,
                case.victim.file.display(),
                list(&missing)
            );
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_after_the_records_of_a_segment_is_ignored() {
    bounded(TEST_BOUND, async {
        let dir = DataDir::new();
        populate(&dir).await;
        let files = segment_files(dir.path());
        assert!(files.len() >= 3, "expected several segments: {files:?}");
        // Zeros after a middle segment (as after a crash on some file
        // systems), and after the last one something that starts like a
        // record: a plausible length, then random bytes.
        append(&files[files.len() / 2], &[0; 4096]);
        let mut garbage = 100u32.to_le_bytes().to_vec();
        let mut rng = StdRng::seed_from_u64(7);
        garbage.extend((0..777).map(|_| rng.gen::<u8>()));
        append(files.last().expect("segments"), &garbage);

        let r = recover(&dir).await;
        let all: Vec<usize> = (0..COUNT).collect();
        assert_eq!(r.numbers, all, "every message, in order");
        append_crash_and_recover(&dir, r, &all).await;
    })
    .await
}

// ---------------------------------------------------------------------------
// Writing messages and reading them back.

/// The body of message `n`: a marker with its number, then filler up to
/// 1000 bytes.
fn body(n: usize) -> Vec<u8> {
    let mut b = format!("#BODY#{n:06}#").into_bytes();
    b.extend((0..1000 - b.len()).map(|i| b'a' + ((n + i) % 26) as u8));
    b
}

/// The number in a body (or in a payload that contains one).
fn number_in(bytes: &[u8]) -> Option<(usize, usize)> {
    let at = bytes.windows(6).position(|w| w == b"#BODY#")?;
    let digits = bytes.get(at + 6..at + 12)?;
    let n = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some((at, n))
}

/// Write [`COUNT`] persistent messages with an in-process broker, and stop it.
async fn populate(dir: &DataDir) {
    let broker = Broker::start_in(dir.path().to_path_buf(), |c| {
        c.segment_bytes = SEGMENT_BYTES;
    })
    .await;
    let conn = broker.connect().await;
    let ch = conn.create_channel().await.expect("open channel");
    declare_durable(&ch, QUEUE).await;
    publish_numbers(&conn, &(0..COUNT).collect::<Vec<_>>()).await;
    broker.stop().await;
}

/// Publish the given messages on a new confirm channel; all must be acked.
async fn publish_numbers(conn: &Connection, numbers: &[usize]) {
    let ch = conn.create_channel().await.expect("open channel");
    confirm(&ch).await;
    publish_confirmed(&ch, QUEUE, numbers.iter().map(|&n| body(n))).await;
}

/// A broker started on a damaged data directory, and what it served.
struct Recovery {
    broker: ChildBroker,
    conn: Connection,
    /// The numbers of the messages served, in order.
    numbers: Vec<usize>,
}

/// Start the binary on `dir` and read every message the queue holds (they
/// are handed back afterwards), checking each body.
async fn recover(dir: &DataDir) -> Recovery {
    let config = dir.write_config(&format!("segment_bytes = {SEGMENT_BYTES}\n"));
    let broker = ChildBroker::start(dir.path(), &config);
    let conn = connect(broker.port).await;
    let ch = conn.create_channel().await.expect("open channel");
    let count = ready_count(&ch, QUEUE)
        .await
        .expect("the durable queue should be there after recovery");
    let mut consumer = ch
        .basic_consume(
            QUEUE.into(),
            "recovery".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("basic.consume");
    let mut numbers = Vec::new();
    loop {
        let limit = if numbers.len() < count as usize {
            STEP
        } else {
            QUIET
        };
        let d = match tokio::time::timeout(limit, consumer.next()).await {
            Ok(Some(Ok(d))) => d,
            Ok(Some(Err(e))) => panic!("consumer error: {e:?}"),
            Ok(None) => panic!("consumer ended"),
            Err(_) => break,
        };
        let Some((0, n)) = number_in(&d.data) else {
            panic!(
                "unknown body: {:?}",
                String::from_utf8_lossy(&d.data[..d.data.len().min(40)])
            );
        };
        assert!(d.data == body(n), "message {n} was served damaged");
        numbers.push(n);
    }
    assert_eq!(
        numbers.len(),
        count as usize,
        "the queue reported {count} messages but served {}",
        numbers.len()
    );
    if let Some(w) = numbers.windows(2).find(|w| w[0] >= w[1]) {
        panic!("out of order or duplicated: {} came before {}", w[0], w[1]);
    }
    let _ = ch.close(200, "read".into()).await;
    Recovery {
        broker,
        conn,
        numbers,
    }
}

// ---------------------------------------------------------------------------
// Segment files.

/// A message record found in a segment file.
#[derive(Clone, Debug)]
struct Record {
    file: PathBuf,
    /// Offset of the record (its length field) in the file.
    offset: u64,
    /// Payload length.
    len: u32,
    /// The number of the message whose body it holds.
    number: usize,
    /// Offset of that body in the file.
    body_offset: u64,
}

/// The segment files under the data directory, oldest first.
fn segment_files(data_dir: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|x| x == "seg") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&data_dir.join("queues"), &mut out);
    // Zero-padded ids: name order is age order.
    out.sort();
    out
}

/// The message records of one segment file, parsed as documented: a
/// 16-byte header starting with `WARRENSG`, then `len:u32 crc:u32
/// payload[len]` records (little-endian).
fn records(file: &Path) -> Vec<Record> {
    let bytes = std::fs::read(file).expect("read a segment file");
    assert!(
        bytes.starts_with(b"WARRENSG"),
        "{} does not start with the segment magic",
        file.display()
    );
    let mut out = Vec::new();
    let mut at = SEGMENT_HEADER as usize;
    while let Some(len_bytes) = bytes.get(at..at + 4) {
        let len = u32::from_le_bytes(len_bytes.try_into().expect("4 bytes"));
        let start = at + RECORD_HEADER as usize;
        let Some(payload) = bytes.get(start..start + len as usize) else {
            break;
        };
        if len == 0 {
            break;
        }
        if let Some((pos, number)) = number_in(payload) {
            out.push(Record {
                file: file.to_path_buf(),
                offset: at as u64,
                len,
                number,
                body_offset: (start + pos) as u64,
            });
        }
        at = start + len as usize;
    }
    out
}

/// Every message record of the data directory, checked to be exactly the
/// [`COUNT`] messages written, in order, over several segments.
fn records_of(dir: &DataDir) -> Vec<Record> {
    let files = segment_files(dir.path());
    assert!(
        files.len() >= 3,
        "{COUNT} messages of 1 KiB in {SEGMENT_BYTES}-byte segments should span \
         several files: {files:?}"
    );
    let all: Vec<Record> = files.iter().flat_map(|f| records(f)).collect();
    let numbers: Vec<usize> = all.iter().map(|r| r.number).collect();
    assert_eq!(
        numbers,
        (0..COUNT).collect::<Vec<_>>(),
        "the segment files should hold every message once, in order"
    );
    all
}

/// A record in the middle of a segment that is neither the first nor the
/// last one.
fn middle_record(records: &[Record]) -> Record {
    let mut files: Vec<&PathBuf> = records.iter().map(|r| &r.file).collect();
    files.dedup();
    let file = files[files.len() / 2];
    let in_file: Vec<&Record> = records.iter().filter(|r| &r.file == file).collect();
    assert!(in_file.len() >= 3, "too few records in {}", file.display());
    in_file[in_file.len() / 2].clone()
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .expect("a file name")
        .to_string_lossy()
        .into_owned()
}

fn flip_byte(file: &Path, offset: u64) {
    let mut bytes = std::fs::read(file).expect("read the segment");
    bytes[offset as usize] ^= 0xff;
    std::fs::write(file, bytes).expect("write the segment");
}

fn truncate(file: &Path, len: u64) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(file)
        .and_then(|f| f.set_len(len))
        .expect("truncate the segment");
}

fn append(file: &Path, garbage: &[u8]) {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(file)
        .and_then(|mut f| f.write_all(garbage))
        .expect("append to the segment");
}

/// A way to corrupt a length field: what it is set to, and the new length
/// given the old.
type BadLength = (&'static str, fn(u32) -> u32);

/// Ways to corrupt a length field: far beyond the file, and a little off
/// (the checksum then covers the wrong bytes and the next record starts in
/// the wrong place).
fn bad_lengths() -> [BadLength; 2] {
    [
        ("to u32::MAX", |_| u32::MAX),
        ("37 bytes too long", |len| len + 37),
    ]
}

/// Publish three more messages to a recovered broker (which served
/// `served`), kill it, and check that it comes back with all of them, in
/// order.
async fn append_crash_and_recover(dir: &DataDir, r: Recovery, served: &[usize]) {
    let new: Vec<usize> = (COUNT..COUNT + 3).collect();
    publish_numbers(&r.conn, &new).await;
    let mut broker = r.broker;
    broker.kill();
    drop(r.conn);

    let r = recover(dir).await;
    let expected: Vec<usize> = served.iter().chain(&new).copied().collect();
    assert_eq!(r.numbers, expected, "after appending and another restart");
    r.broker.assert_no_panic();
}

/// A broker recovered after the length field of a middle record was
/// overwritten.
struct LengthCase {
    records: Vec<Record>,
    victim: Record,
    numbers: Vec<usize>,
    broker: ChildBroker,
    _dir: DataDir,
}

async fn corrupt_length(bad_len: fn(u32) -> u32) -> LengthCase {
    let dir = DataDir::new();
    populate(&dir).await;
    let records = records_of(&dir);
    let victim = middle_record(&records);
    let mut bytes = std::fs::read(&victim.file).expect("read the segment");
    let at = victim.offset as usize;
    bytes[at..at + 4].copy_from_slice(&bad_len(victim.len).to_le_bytes());
    std::fs::write(&victim.file, bytes).expect("write the segment");

    let r = recover(&dir).await;
    assert!(
        r.numbers.iter().all(|&n| n < COUNT),
        "unknown messages served: {}",
        list(&r.numbers)
    );
    r.broker.assert_no_panic();
    LengthCase {
        records,
        victim,
        numbers: r.numbers,
        broker: r.broker,
        _dir: dir,
    }
}

/// A queue whose definition cannot be loaded (here one saved with a NaN
/// argument by an older Warren, which wrote it as `null`) does not stop the
/// broker, and its messages are set aside, not deleted as a deleted
/// queue's directory would be.
#[tokio::test]
async fn a_queue_whose_definition_cannot_load_keeps_its_messages_aside() {
    let dir = DataDir::new();
    let queue_dir = dir.path().join("queues").join("q7");
    std::fs::create_dir_all(&queue_dir).unwrap();
    std::fs::write(queue_dir.join("00000001.seg"), b"messages").unwrap();
    let defs = r#"{"version":1,"vhosts":{"/":{"exchanges":[],"bindings":[],
        "queues":[{"name":"nan","dir":"q7","auto_delete":false,"arguments":{"x-nan":{"Double":null}}}]}}}"#;
    std::fs::write(dir.path().join("definitions.json"), defs).unwrap();
    let broker = Broker::start_in(dir.path().to_path_buf(), |_| {}).await;
    let (_conn, ch) = broker.channel().await;
    declare_queue(&ch, "still-serving").await;
    broker.stop().await;
    let aside: Vec<_> = std::fs::read_dir(dir.path().join("unloaded"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(aside.len(), 1);
    let kept = std::fs::read(aside[0].path().join("00000001.seg")).unwrap();
    assert_eq!(kept, b"messages");
    assert!(!queue_dir.exists());
}
