//! Publishing never waits for a topology writer: routing reads `names` and
//! the exchanges' own tables, not the mutex writers hold.

use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use amq_protocol::protocol::{exchange, queue};
use amq_protocol::types::{FieldTable, ShortString};

use super::VHost;
use crate::broker::exchange::Destination;
use crate::broker::queue::FlowLimits;
use crate::config::Config;
use crate::store::Store;

fn config() -> Config {
    Config {
        data_dir: std::env::temp_dir().join(format!("warren-vhost-{}", rand::random::<u64>())),
        fsync: crate::config::Fsync::Never,
        ..Default::default()
    }
}

fn vhost() -> Arc<VHost> {
    let store = Arc::new(Store::open(&config()).expect("open store"));
    Arc::new(VHost::new("/", FlowLimits::default(), store, None).expect("vhost"))
}

fn exchange(v: &VHost, name: &str, durable: bool) {
    let x = exchange::Declare {
        exchange: ShortString::from(name),
        kind: ShortString::from("topic"),
        passive: false,
        durable,
        auto_delete: false,
        internal: false,
        nowait: false,
        arguments: FieldTable::default(),
    };
    v.declare_exchange(&x).expect("exchange");
}

fn queue(v: &VHost, name: &str, durable: bool) {
    let q = queue::Declare {
        queue: ShortString::from(name),
        passive: false,
        durable,
        exclusive: false,
        auto_delete: false,
        nowait: false,
        arguments: FieldTable::default(),
    };
    v.declare_queue(&q, 1).expect("queue");
}

fn declare(v: &VHost) {
    exchange(v, "t", false);
    queue(v, "q", false);
    let dest = Destination::Queue(Arc::from("q"));
    v.bind("t", dest, "a.*", &FieldTable::default(), 1)
        .expect("bind");
}

fn bind(v: &VHost, source: &str, dest: Destination, key: &str) {
    v.bind(source, dest, key, &FieldTable::default(), 1)
        .expect("bind");
}

/// The names of the queues `key` reaches from `exchange`.
fn routed(v: &VHost, exchange: &str, key: &str) -> Vec<String> {
    let mut out = Vec::new();
    v.route(exchange, &[key], None, &mut out).expect("route");
    out.iter().map(|q| q.name.to_string()).collect()
}

/// Route in another thread; the number of queues reached, or None if it
/// did not finish within a second.
fn route_elsewhere(v: &Arc<VHost>, exchange: &'static str, key: &'static str) -> Option<usize> {
    let (tx, rx) = mpsc::channel();
    let v = v.clone();
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let routed = v.route(exchange, &[key], None, &mut out).map(|_| out.len());
        let _ = tx.send(routed.ok());
    });
    rx.recv_timeout(Duration::from_secs(1)).ok().flatten()
}

#[test]
fn publishing_routes_while_a_topology_writer_holds_its_lock() {
    let v = vhost();
    declare(&v);
    let held = v.topology.lock();
    assert_eq!(route_elsewhere(&v, "t", "a.b"), Some(1), "topic exchange");
    assert_eq!(route_elsewhere(&v, "", "q"), Some(1), "default exchange");
    assert_eq!(route_elsewhere(&v, "t", "b.b"), Some(0));
    drop(held);
}

#[test]
fn bindings_changed_while_publishing_are_seen_by_the_next_publish() {
    let v = vhost();
    declare(&v);
    let dest = Destination::Queue(Arc::from("q"));
    v.unbind("t", dest.clone(), "a.*", &FieldTable::default(), 1)
        .expect("unbind");
    assert_eq!(route_elsewhere(&v, "t", "a.b"), Some(0));
    v.bind("t", dest, "#", &FieldTable::default(), 1)
        .expect("bind");
    assert_eq!(route_elsewhere(&v, "t", "b.b"), Some(1));
    v.delete_queue("q", false, false, 1).expect("delete");
    assert_eq!(route_elsewhere(&v, "t", "b.b"), Some(0));
}

#[test]
fn stored_bindings_come_back_across_exchanges_and_batches() {
    let cfg = config();
    {
        let store = Arc::new(Store::open(&cfg).expect("open store"));
        let v = VHost::new("/", FlowLimits::default(), store.clone(), None).expect("vhost");
        exchange(&v, "t1", true);
        exchange(&v, "t2", true);
        for i in 0..100 {
            queue(&v, &format!("q{i}"), true);
        }
        // Sources alternate, so batches hold runs of both exchanges.
        for i in 0..10_000 {
            let source = if i % 3 == 0 { "t1" } else { "t2" };
            let dest = Destination::Queue(Arc::from(format!("q{}", i % 100)));
            bind(&v, source, dest, &format!("k.{i}.#"));
        }
        bind(&v, "t1", Destination::Exchange(Arc::from("t2")), "#");
        store.close();
    }
    let store = Arc::new(Store::open(&cfg).expect("reopen store"));
    let mut defs = store.take_recovered();
    let v = VHost::new("/", FlowLimits::default(), store, defs.vhosts.remove("/")).expect("vhost");
    for i in [0, 1, 2, 4095, 4096, 4097, 8192, 9999] {
        let want = vec![format!("q{}", i % 100)];
        let source = if i % 3 == 0 { "t1" } else { "t2" };
        assert_eq!(routed(&v, source, &format!("k.{i}.z")), want, "binding {i}");
        // Through the exchange-to-exchange binding too.
        assert_eq!(
            routed(&v, "t1", &format!("k.{i}.z")),
            want,
            "binding {i} via t2"
        );
    }
    assert!(routed(&v, "t2", "k.10000.z").is_empty());
    // Deleting a queue drops its restored bindings (the index came back).
    v.delete_queue("q7", false, false, 1).expect("delete");
    assert!(routed(&v, "t2", "k.7.z").is_empty());
    assert!(routed(&v, "t2", "k.107.z").is_empty());
}
