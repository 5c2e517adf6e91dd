//! The delayed store keeps bodies beyond its window on disk and gives
//! every message back, in due order, whole.

use std::sync::Arc;

use bytes::Bytes;

use super::Delayed;
use crate::broker::message::Message;
use crate::config::Config;
use crate::store::Store;

const WINDOW: u64 = 64 * 1024;

fn store() -> Arc<Store> {
    let cfg = Config {
        data_dir: std::env::temp_dir().join(format!("warren-delayed-{}", rand::random::<u64>())),
        queue_memory_bytes: WINDOW,
        fsync: crate::config::Fsync::Never,
        ..Default::default()
    };
    Arc::new(Store::open(&cfg).expect("open store"))
}

/// A 4000-byte message; every one has the expiration property "60000".
fn message(id: u32, persistent: bool) -> Arc<Message> {
    let mut body = id.to_le_bytes().to_vec();
    body.resize(4000, (id % 251) as u8);
    // Flags: expiration (bit 8), then the shortstr.
    let mut properties = vec![0x01, 0x00, 5];
    properties.extend(b"60000");
    Arc::new(Message {
        exchange: Arc::from("delayed"),
        routing_key: Arc::from("k"),
        properties: Bytes::from(properties),
        body: Bytes::from(body),
        persistent,
        expiration_ms: Some(60_000),
    })
}

fn open(store: &Arc<Store>) -> Arc<Delayed> {
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let dir = store.data_dir().join("delayed");
    Arc::new(Delayed::open(store.clone(), dir, tx).expect("open delayed"))
}

/// Take everything due by `now`, a window at a time, as (id, body ok).
fn take_all(d: &Delayed, now: u64) -> Vec<u32> {
    let mut ids = Vec::new();
    loop {
        let due = d.take_due(now, now);
        if due.is_empty() {
            return ids;
        }
        let refs: Vec<_> = due.iter().filter_map(|h| h.disk).collect();
        for h in due {
            let id = u32::from_le_bytes(h.message.body[..4].try_into().expect("4 bytes"));
            assert_eq!(h.message.body.len(), 4000);
            assert_eq!(h.message.expiration_ms, Some(60_000), "TTL of {id}");
            assert!(h.message.body[4..].iter().all(|&b| b == (id % 251) as u8));
            ids.push(id);
        }
        d.settle(refs);
    }
}

#[test]
fn bodies_beyond_the_window_wait_on_disk_and_come_back_in_due_order() {
    let store = store();
    let d = open(&store);
    // Due times in a scrambled order; every third message persistent.
    let due = |id: u32| 1_000 + u64::from(id * 7919 % 500);
    for id in 0..500 {
        d.hold(message(id, id % 3 == 0), due(id), true);
    }
    assert_eq!(d.len(), 500);
    assert!(d.in_memory() <= 16, "{} bodies in memory", d.in_memory());
    let mut want: Vec<u32> = (0..500).collect();
    want.sort_by_key(|&id| (due(id), id));
    // Half of them due first.
    let cut = due(want[249]);
    let first = take_all(&d, cut);
    assert_eq!(first, want[..250]);
    let rest = take_all(&d, u64::MAX);
    assert_eq!(rest, want[250..]);
    assert!(d.is_empty());
    store.close();
    let _ = std::fs::remove_dir_all(store.data_dir());
}

#[test]
fn persistent_messages_come_back_after_a_restart_through_the_window() {
    let store = store();
    let d = open(&store);
    for id in 0..300 {
        d.hold(message(id, id % 2 == 0), 5_000 - u64::from(id), true);
    }
    d.state
        .lock()
        .log
        .as_mut()
        .expect("log")
        .flush_for_sync(&mut Vec::new())
        .expect("flush");
    drop(d);
    let d = open(&store);
    assert_eq!(d.len(), 150, "persistent ones only");
    assert!(d.in_memory() <= 16, "{} bodies in memory", d.in_memory());
    let got = take_all(&d, u64::MAX);
    let want: Vec<u32> = (0..300).rev().filter(|id| id % 2 == 0).collect();
    assert_eq!(got, want);
    store.close();
    let _ = std::fs::remove_dir_all(store.data_dir());
}

#[test]
fn listing_reads_bodies_on_disk_back_and_a_cancelled_message_is_never_due() {
    let store = store();
    let d = open(&store);
    // 100 × 4000 bytes: most are beyond the 64 KiB window, on disk only.
    for id in 0..100u32 {
        d.hold(message(id, false), 1_000 + u64::from(99 - id), false);
    }
    assert!(d.in_memory() < 100);
    let listed = d.list("delayed", 1_000);
    assert_eq!(listed.len(), 100);
    let ids: Vec<u32> = listed
        .iter()
        .map(|h| u32::from_le_bytes(h.message.body[..4].try_into().expect("4 bytes")))
        .collect();
    assert_eq!(
        ids,
        (0..100).rev().collect::<Vec<_>>(),
        "earliest due first"
    );
    assert!(d.list("other", 1_000).is_empty());
    assert_eq!(d.list("delayed", 3).len(), 3);

    let gone = listed[10].id;
    assert!(!d.cancel("other", gone), "another exchange's message");
    assert!(d.cancel("delayed", gone));
    assert!(!d.cancel("delayed", gone));
    let due = take_all(&d, 10_000);
    assert_eq!(due.len(), 99);
    assert!(!due.contains(&89));
}
