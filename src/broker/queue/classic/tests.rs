//! The classic kind driven at chosen times, with no clock and no
//! housekeeping task: each call's effects are read back instead of being
//! performed, so expiry and x-expires are checked to the millisecond.

use std::sync::Arc;

use amq_protocol::types::{AMQPValue, FieldTable};
use bytes::Bytes;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use crate::broker::chores::Chore;
use crate::broker::consumer::{ChannelCredit, ConnEvent, ConnHandle, Consumer, ConsumerCredit};
use crate::broker::dead_letter::Reason;
use crate::broker::message::Message;
use crate::broker::queue::kind::{Effect, Effects};
use crate::broker::queue::{Queue, QueueContext, QueueDef, Stored};
use crate::broker::ready::ReadyMessages;
use crate::config::Config;
use crate::store::Store;

struct Fixture {
    q: Arc<Queue>,
    /// Kept so the queue's context has a housekeeping task to ask.
    _chores: UnboundedReceiver<Chore>,
}

fn queue(args: &[(&str, AMQPValue)]) -> Fixture {
    let cfg = Config {
        data_dir: std::env::temp_dir().join(format!("warren-classic-{}", rand::random::<u64>())),
        fsync: crate::config::Fsync::Never,
        ..Default::default()
    };
    let store = Arc::new(Store::open(&cfg).expect("open store"));
    let mut arguments = FieldTable::default();
    for (k, v) in args {
        arguments.insert((*k).into(), v.clone());
    }
    let def = QueueDef {
        name: "q",
        vhost: "/",
        disk_dir: None,
        exclusive_owner: None,
        auto_delete: false,
        arguments,
    };
    let ready = ReadyMessages::new(store.clone(), None, None).expect("ready");
    let (tx, rx) = unbounded_channel();
    let ctx = QueueContext {
        flow: Default::default(),
        store,
        chores: Some(tx),
    };
    Fixture {
        q: Arc::new(Queue::new(def, ready, ctx)),
        _chores: rx,
    }
}

fn message() -> Arc<Message> {
    Arc::new(Message {
        exchange: Arc::from(""),
        routing_key: Arc::from("q"),
        properties: Bytes::from_static(&[0, 0]),
        body: Bytes::from_static(b"hello"),
        persistent: false,
        expiration_ms: None,
    })
}

fn times(fx: &Effects, pick: fn(&Effect) -> Option<u64>) -> Vec<u64> {
    fx.as_slice().iter().filter_map(pick).collect()
}

fn expiries(fx: &Effects) -> Vec<u64> {
    times(fx, |e| match e {
        Effect::ExpireAt(t) => Some(*t),
        _ => None,
    })
}

fn unused_checks(fx: &Effects) -> Vec<u64> {
    times(fx, |e| match e {
        Effect::CheckUnusedAt(t) => Some(*t),
        _ => None,
    })
}

#[test]
fn a_ttl_asks_for_a_wake_up_and_expires_exactly_after_it() {
    let f = queue(&[
        ("x-message-ttl", AMQPValue::LongInt(1_000)),
        (
            "x-dead-letter-exchange",
            AMQPValue::LongString("dlx".into()),
        ),
    ]);
    let (q, kind) = (&f.q, &*f.q.kind);
    let mut fx = Effects::default();
    assert_eq!(kind.publish(q, message(), 10_000, &mut fx), Stored::Done);
    assert_eq!(expiries(&fx), vec![11_000]);

    // A second message expires later: the wake-up already asked for comes
    // first, so no second one is asked for.
    let mut fx = Effects::default();
    kind.publish(q, message(), 10_500, &mut fx);
    assert!(expiries(&fx).is_empty());

    // At its expiry time a message may still go to a ready consumer; a
    // millisecond later it is gone (dead-lettered).
    let mut fx = Effects::default();
    kind.expire_due(q, Some(11_000), 11_000, &mut fx);
    assert_eq!(kind.message_count(), 2);
    assert_eq!(expiries(&fx), vec![11_000]);
    let mut fx = Effects::default();
    kind.expire_due(q, Some(11_000), 11_001, &mut fx);
    assert_eq!(kind.message_count(), 1);
    assert!(matches!(
        fx.as_slice(),
        [Effect::ExpireAt(11_500), Effect::DeadLetters]
    ));
    let letters = kind.take_dead_letters();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].reason, Reason::Expired);

    // A stale wake-up (for a time no longer asked for) does nothing.
    let mut fx = Effects::default();
    kind.expire_due(q, Some(11_000), 20_000, &mut fx);
    assert_eq!(kind.message_count(), 1);
    assert!(fx.as_slice().is_empty());
}

#[test]
fn x_expires_deletes_only_after_the_queue_was_unused_for_its_time() {
    let f = queue(&[("x-expires", AMQPValue::LongInt(5_000))]);
    let (q, kind) = (&f.q, &*f.q.kind);
    let mut fx = Effects::default();
    kind.touch(1_000, &mut fx);
    assert_eq!(unused_checks(&fx), vec![6_000]);

    // Used again at 3,000: the check at 6,000 finds it too early and asks
    // for the next one.
    let mut fx = Effects::default();
    kind.get(q, true, 3_000, &mut fx);
    let mut fx = Effects::default();
    assert!(!kind.delete_if_expired(6_000, &mut fx));
    assert_eq!(unused_checks(&fx), vec![8_000]);
    assert!(!kind.delete_if_expired(7_999, &mut Effects::default()));
    assert!(kind.delete_if_expired(8_000, &mut Effects::default()));
    assert!(kind.is_deleted());
}

#[test]
fn deleting_returns_the_cancel_notifications_instead_of_sending_them() {
    let f = queue(&[]);
    let (q, kind) = (&f.q, &*f.q.kind);
    let (tx, mut rx) = unbounded_channel();
    let credit = Arc::new(ConsumerCredit::new(10, Arc::new(ChannelCredit::default())));
    let consumer = Consumer {
        id: 7,
        tag: Arc::from("ctag"),
        channel: 1,
        conn: ConnHandle::new(1, tx),
        no_ack: false,
        exclusive: false,
        credit,
        priority: 0,
    };
    kind.add_consumer(q, consumer, None, 0, &mut Effects::default())
        .expect("consume");
    let mut fx = Effects::default();
    assert_eq!(kind.delete(false, false, &mut fx), Ok(0));
    assert!(matches!(fx.as_slice(), [Effect::Cancel(c)] if c.id == 7));
    assert!(rx.try_recv().is_err(), "nothing sent under the lock");
    fx.perform(q);
    assert!(matches!(
        rx.try_recv(),
        Ok(ConnEvent::ConsumerCancelled { consumer_id: 7, .. })
    ));
}
