use std::time::{Duration, Instant};

use amq_protocol::types::{AMQPValue, FieldTable, LongString};

use super::*;
use crate::store::definitions::{BindingDef, ExchangeDef, QueueDef};

struct Dir(PathBuf);

impl Dir {
    fn new() -> Self {
        let p = std::env::temp_dir().join(format!("warren-meta-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&p).unwrap();
        Dir(p)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn queue(name: &str) -> MetaOp {
    let mut args = FieldTable::default();
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(LongString::from("dlx")),
    );
    MetaOp::PutQueue {
        vhost: "/".into(),
        def: QueueDef {
            name: name.into(),
            dir: format!("d-{name}"),
            auto_delete: false,
            arguments: args,
        },
    }
}

fn exchange(name: &str) -> MetaOp {
    MetaOp::PutExchange {
        vhost: "/".into(),
        def: ExchangeDef {
            name: name.into(),
            kind: "topic".into(),
            auto_delete: false,
            internal: false,
            arguments: FieldTable::default(),
        },
    }
}

fn binding(dest: &str, key: &str) -> MetaOp {
    MetaOp::PutBinding {
        vhost: "/".into(),
        def: BindingDef {
            source: "x".into(),
            destination: dest.into(),
            to_exchange: false,
            routing_key: key.into(),
            arguments: FieldTable::default(),
        },
    }
}

/// Append `ops` one call each and wait until they are synced.
fn write(meta: &MetaStore, syncer: &Syncer, ops: &[MetaOp]) {
    let mut last = 0;
    for op in ops {
        last = meta.append(syncer, std::slice::from_ref(op)).unwrap();
    }
    let mut status = syncer.subscribe();
    let deadline = Instant::now() + Duration::from_secs(10);
    while status.borrow_and_update().synced < last {
        assert!(Instant::now() < deadline, "sync round {last} never came");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn names(defs: &Definitions) -> (Vec<String>, Vec<String>, usize) {
    let v = defs.vhosts.get("/").cloned().unwrap_or_default();
    let mut queues: Vec<String> = v.queues.iter().map(|q| q.name.clone()).collect();
    let mut exchanges: Vec<String> = v.exchanges.iter().map(|x| x.name.clone()).collect();
    queues.sort();
    exchanges.sort();
    (exchanges, queues, v.bindings.len())
}

#[test]
fn appended_objects_load_back_with_their_arguments() {
    let dir = Dir::new();
    let syncer = Syncer::start(true).unwrap();
    let (meta, defs) = MetaStore::open(&dir.0, true, 1 << 20).unwrap();
    assert!(defs.vhosts.is_empty());
    write(&meta, &syncer, &[exchange("x"), queue("a"), queue("b")]);
    write(&meta, &syncer, &[binding("a", "k.#"), binding("b", "k")]);
    write(
        &meta,
        &syncer,
        &[MetaOp::DeleteQueue {
            vhost: "/".into(),
            name: "b".into(),
        }],
    );
    drop(meta);
    let (_meta, defs) = MetaStore::open(&dir.0, true, 1 << 20).unwrap();
    assert_eq!(names(&defs), (vec!["x".into()], vec!["a".into()], 1));
    let MetaOp::PutQueue { def, .. } = queue("a") else {
        unreachable!()
    };
    assert_eq!(defs.vhosts["/"].queues[0], def);
}

#[test]
fn compaction_folds_the_log_into_a_snapshot_that_loads_the_same() {
    let dir = Dir::new();
    let syncer = Syncer::start(false).unwrap();
    let (meta, _) = MetaStore::open(&dir.0, false, 4096).unwrap();
    let mut ops = vec![exchange("x")];
    for i in 0..300 {
        ops.push(queue(&format!("q{i}")));
        ops.push(binding(&format!("q{i}"), "k"));
    }
    for i in 0..100 {
        ops.push(MetaOp::DeleteQueue {
            vhost: "/".into(),
            name: format!("q{i}"),
        });
    }
    write(&meta, &syncer, &ops);
    let deadline = Instant::now() + Duration::from_secs(10);
    while meta.compactions() == 0 || meta.compacting.load(Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "no compaction happened");
        std::thread::sleep(Duration::from_millis(5));
    }
    let listing = files::list(&meta.dir).unwrap();
    assert!(!listing.snapshots.is_empty(), "{listing:?}");
    assert!(
        listing.logs.iter().all(|&l| l > listing.snapshots[0]),
        "compacted logs were not removed: {listing:?}"
    );
    drop(meta);
    let (_meta, defs) = MetaStore::open(&dir.0, false, 4096).unwrap();
    let (exchanges, queues, bindings) = names(&defs);
    assert_eq!((exchanges.len(), queues.len(), bindings), (1, 200, 200));
}

#[test]
fn a_torn_tail_is_cut_off_and_a_damaged_entry_skipped() {
    let dir = Dir::new();
    let syncer = Syncer::start(false).unwrap();
    let (meta, _) = MetaStore::open(&dir.0, false, 1 << 20).unwrap();
    write(&meta, &syncer, &[queue("a"), queue("b"), queue("c")]);
    drop(meta);
    let log = files::log_path(&dir.0.join(DIR), 1);
    let mut bytes = std::fs::read(&log).unwrap();
    // Damage b (a byte inside its JSON), then tear the file after c.
    let b_at = bytes
        .windows(10)
        .position(|w| w == b"\"name\":\"b\"")
        .unwrap();
    bytes[b_at + 8] = b'#';
    bytes.extend_from_slice(&[200, 0, 0, 0, 1, 2]);
    std::fs::write(&log, &bytes).unwrap();
    let (meta, defs) = MetaStore::open(&dir.0, false, 1 << 20).unwrap();
    assert_eq!(names(&defs).1, ["a", "c"]);
    assert_eq!(
        std::fs::metadata(&log).unwrap().len() as usize,
        bytes.len() - 6
    );
    // Appends go on after the cut.
    write(&meta, &syncer, &[queue("d")]);
    drop(meta);
    let (_meta, defs) = MetaStore::open(&dir.0, false, 1 << 20).unwrap();
    assert_eq!(names(&defs).1, ["a", "c", "d"]);
}

#[test]
fn a_legacy_definitions_file_is_converted() {
    let dir = Dir::new();
    let text = r#"{"version":1,"vhosts":{"/":{"exchanges":[{"name":"x","kind":"topic","auto_delete":false,"internal":false,"arguments":{}}],
        "queues":[{"name":"a","dir":"q1","auto_delete":false,"arguments":{}},
                  {"name":"bad","dir":"q2","auto_delete":false,"arguments":7}],
        "bindings":[{"source":"x","destination":"a","to_exchange":false,"routing_key":"k","arguments":{}}]}}}"#;
    std::fs::write(dir.0.join(definitions::FILE_NAME), text).unwrap();
    let (meta, defs) = MetaStore::open(&dir.0, true, 1 << 20).unwrap();
    assert_eq!(names(&defs), (vec!["x".into()], vec!["a".into()], 1));
    assert_eq!(defs.unloaded_queue_dirs, ["q2"]);
    assert!(!dir.0.join(definitions::FILE_NAME).exists());
    assert!(dir.0.join(MIGRATED).exists());
    drop(meta);
    let (_meta, defs) = MetaStore::open(&dir.0, true, 1 << 20).unwrap();
    assert_eq!(names(&defs), (vec!["x".into()], vec!["a".into()], 1));
    // A file that is not a definitions document at all still stops the
    // start (nothing was converted from it).
    let other = Dir::new();
    std::fs::write(other.0.join(definitions::FILE_NAME), b"{not json").unwrap();
    assert!(MetaStore::open(&other.0, true, 1 << 20).is_err());
}
