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

fn vhost() -> Arc<VHost> {
    let cfg = Config {
        data_dir: std::env::temp_dir().join(format!("warren-vhost-{}", rand::random::<u64>())),
        fsync: crate::config::Fsync::Never,
        ..Default::default()
    };
    let store = Arc::new(Store::open(&cfg).expect("open store"));
    Arc::new(VHost::new("/", FlowLimits::default(), store, None).expect("vhost"))
}

fn declare(v: &VHost) {
    let x = exchange::Declare {
        exchange: ShortString::from("t"),
        kind: ShortString::from("topic"),
        passive: false,
        durable: false,
        auto_delete: false,
        internal: false,
        nowait: false,
        arguments: FieldTable::default(),
    };
    v.declare_exchange(&x).expect("exchange");
    let q = queue::Declare {
        queue: ShortString::from("q"),
        passive: false,
        durable: false,
        exclusive: false,
        auto_delete: false,
        nowait: false,
        arguments: FieldTable::default(),
    };
    v.declare_queue(&q, 1).expect("queue");
    let dest = Destination::Queue(Arc::from("q"));
    v.bind("t", dest, "a.*", &FieldTable::default(), 1)
        .expect("bind");
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
