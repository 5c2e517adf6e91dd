//! A stream queue driven at chosen times: the append time is the time its
//! caller passed in, and deletion hands back what must happen to files and
//! consumers instead of doing it under the stream's lock.

use std::sync::Arc;

use bytes::Bytes;

use super::options::Retention;
use super::StreamQueue;
use crate::broker::message::Message;
use crate::broker::queue::kind::{Effect, Effects};
use crate::broker::queue::{Queue, QueueContext, QueueDef, Stored};
use crate::config::Config;
use crate::store::stream_log::StreamLog;
use crate::store::stream_offsets::StreamOffsets;
use crate::store::Store;

fn stream() -> (Arc<Queue>, std::path::PathBuf) {
    let cfg = Config {
        data_dir: std::env::temp_dir().join(format!("warren-stream-{}", rand::random::<u64>())),
        fsync: crate::config::Fsync::Never,
        ..Default::default()
    };
    let store = Arc::new(Store::open(&cfg).expect("open store"));
    let dir = store.queue_path(&store.new_queue_dir());
    let retention = Retention::default();
    let log = StreamLog::create(&dir, retention.segment_bytes).expect("create log");
    let s = StreamQueue::new(log, StreamOffsets::empty(&dir), retention, store.clone());
    let def = QueueDef {
        name: "s",
        vhost: "/",
        disk_dir: Some("s".into()),
        exclusive_owner: None,
        auto_delete: false,
        arguments: Default::default(),
    };
    let ctx = QueueContext {
        flow: Default::default(),
        store,
        chores: None,
    };
    (Arc::new(Queue::new_stream(def, s, ctx)), dir)
}

fn message() -> Arc<Message> {
    Arc::new(Message {
        exchange: Arc::from(""),
        routing_key: Arc::from("s"),
        properties: Bytes::from_static(&[0, 0]),
        body: Bytes::from_static(b"event"),
        persistent: false,
        expiration_ms: None,
    })
}

#[test]
fn appends_are_stamped_with_the_time_passed_in() {
    let (q, _dir) = stream();
    let s = q.as_stream().expect("a stream");
    for at in [1_000, 2_000, 3_000] {
        let stored = s.publish(&q, message(), at, &mut Effects::default());
        assert!(matches!(stored, Stored::AfterSync(_)));
    }
    let mut st = s.state.lock();
    st.log.flush().expect("write");
    assert_eq!(st.log.offset_at_time(1_500).expect("look up"), 1);
    assert_eq!(st.log.offset_at_time(3_000).expect("look up"), 2);
    assert_eq!(st.log.offset_at_time(3_001).expect("look up"), 3);
}

#[test]
fn deleting_returns_the_directory_to_remove_instead_of_removing_it() {
    let (q, dir) = stream();
    let s = q.as_stream().expect("a stream");
    s.publish(&q, message(), 1_000, &mut Effects::default());
    s.state.lock().log.flush().expect("write");
    let mut fx = Effects::default();
    s.delete(&mut fx);
    assert!(matches!(fx.as_slice(), [Effect::RemoveDir(d)] if *d == dir));
    assert!(dir.exists(), "nothing removed under the lock");
    assert!(q.is_deleted());
    fx.perform(&q);
    assert!(!dir.exists());
}
