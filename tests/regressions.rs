//! Regression tests for bugs fixed after review: deliveries after a
//! connection-level Close, non-atomic transactions, exponential topic
//! matching, and a reused consumer tag taking over the old consumer's
//! in-flight deliveries.

mod common;

use std::time::Duration;

use common::raw::*;
use common::*;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, ExchangeKind};

// ---------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------

/// Declare a plain (non-exclusive) queue and put `n` messages on it,
/// confirmed, bodies "m0".."m{n-1}".
async fn queue_with_messages(broker: &Broker, n: usize) -> String {
    let (conn, ch) = broker.channel().await;
    let q = uniq("reg");
    declare_queue(&ch, &q).await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for i in 0..n {
        ch.basic_publish(
            "".into(),
            q.as_str().into(),
            BasicPublishOptions::default(),
            format!("m{i}").as_bytes(),
            BasicProperties::default(),
        )
        .await
        .unwrap();
    }
    let nacked = ch.wait_for_confirms().await.unwrap();
    assert!(nacked.is_empty(), "{} publishes not acked", nacked.len());
    conn.close(200, "".into()).await.unwrap();
    q
}

/// The queue's ready count (passive declare).
async fn message_count(ch: &lapin::Channel, queue: &str) -> u32 {
    common::ready_count(ch, queue)
        .await
        .expect("passive declare")
}

/// The ready count once it has stopped changing (requeues after a
/// connection or channel ends happen asynchronously).
async fn settled_count(broker: &Broker, queue: &str) -> u32 {
    let (conn, ch) = broker.channel().await;
    let mut last = message_count(&ch, queue).await;
    let mut stable = 0;
    while stable < 5 {
        tokio::time::sleep(Duration::from_millis(60)).await;
        let n = message_count(&ch, queue).await;
        if n == last {
            stable += 1;
        } else {
            stable = 0;
            last = n;
        }
    }
    conn.close(200, "".into()).await.unwrap();
    last
}

// ---------------------------------------------------------------------------
// 1. Nothing is delivered after a connection-level Close
// ---------------------------------------------------------------------------

const BACKLOG: usize = 2_000;

/// A no-ack consumer on a queue with a backlog; `trigger` (sent in the same
/// write as the consume) causes a connection error with `code`. No
/// basic.deliver may follow the Connection.Close, and every message not
/// delivered before it must still be in the queue.
async fn no_delivery_after_connection_close(trigger: impl FnOnce(&str) -> Vec<u8>, code: u16) {
    let broker = Broker::start().await;
    let q = queue_with_messages(&broker, BACKLOG).await;

    let mut r = Raw::handshake(&broker).await;
    let mut batch = channel_open(1);
    batch.extend(basic_qos(1, 0));
    batch.extend(basic_consume(1, &q, "c", true));
    batch.extend(trigger(&q));
    r.send(&batch).await;

    let mut before = 0usize;
    let close = loop {
        let f = r.next().await;
        if f.method() == Some(DELIVER) {
            before += 1;
            r.skip_content().await;
        } else if f.is(0, 10, 50) {
            break f;
        }
    };
    let got = u16::from_be_bytes([close.payload[4], close.payload[5]]);
    assert_eq!(got, code, "Connection.Close {close:?}");
    r.send(&method(0, 10, 51, &[])).await;

    let mut after = 0usize;
    while let Some(f) = r.next_opt().await {
        if f.method() == Some(DELIVER) {
            after += 1;
        }
    }
    assert_eq!(
        after, 0,
        "{after} basic.deliver frames followed Connection.Close ({before} before it)"
    );
    assert_eq!(
        settled_count(&broker, &q).await as usize,
        BACKLOG - before,
        "messages not delivered before the Close must stay queued ({before} delivered before it)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_deliveries_after_connection_close_on_unknown_exchange_type_503() {
    within(no_delivery_after_connection_close(
        |_| {
            let mut b = channel_open(2);
            b.extend(exchange_declare(2, &uniq("x"), "no-such-type"));
            b
        },
        503,
    ))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_deliveries_after_connection_close_on_duplicate_consumer_tag_530() {
    within(no_delivery_after_connection_close(
        |q| basic_consume(1, q, "c", true),
        530,
    ))
    .await
}

// ---------------------------------------------------------------------------
// 2. Transactions are atomic
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tx_publish_to_missing_exchange_enqueues_nothing() {
    within(async {
        let broker = Broker::start().await;
        let conn = broker.connect().await;
        let mut events = conn.events_listener();
        let observer = conn.create_channel().await.unwrap();
        let q = temp_queue(&observer).await;

        let ch = conn.create_channel().await.unwrap();
        ch.tx_select().await.unwrap();
        for b in ["t1", "t2", "t3"] {
            publish(&ch, "", &q, b.as_bytes()).await;
        }
        let _ = ch
            .basic_publish(
                uniq("missing").as_str().into(),
                "k".into(),
                BasicPublishOptions::default(),
                b"bad",
                BasicProperties::default(),
            )
            .await;
        assert!(ch.tx_commit().await.is_err(), "commit must not succeed");
        let err = next_channel_error(&mut events).await;
        assert_eq!(reply_code(&err), Some(404), "{err:?}");
        tokio::time::sleep(QUIET).await;
        assert_eq!(
            message_count(&observer, &q).await,
            0,
            "no publish of a failed transaction may be enqueued"
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tx_ack_then_recover_does_not_redeliver_and_commits() {
    within(async {
        let broker = Broker::start().await;
        let conn = broker.connect().await;
        let observer = conn.create_channel().await.unwrap();
        let q = temp_queue(&observer).await;
        publish(&observer, "", &q, b"once").await;

        let ch = conn.create_channel().await.unwrap();
        ch.tx_select().await.unwrap();
        let m = ch
            .basic_get(q.as_str().into(), BasicGetOptions::default())
            .await
            .unwrap()
            .expect("a message");
        ch.basic_ack(m.delivery.delivery_tag, BasicAckOptions::default())
            .await
            .unwrap();
        ch.basic_recover(BasicRecoverOptions { requeue: true })
            .await
            .expect("basic.recover");
        ch.tx_commit()
            .await
            .expect("commit of an ack that recover must not have undone");
        assert_eq!(message_count(&observer, &q).await, 0);
        ch.close(200, "".into()).await.unwrap();
        tokio::time::sleep(QUIET).await;
        assert_eq!(
            get_all(&observer, &q).await,
            Vec::<String>::new(),
            "the acked message came back"
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tx_ack_of_unknown_tag_fails_at_once() {
    within(async {
        let broker = Broker::start().await;
        let conn = broker.connect().await;
        let mut events = conn.events_listener();
        let observer = conn.create_channel().await.unwrap();
        let q = temp_queue(&observer).await;

        let ch = conn.create_channel().await.unwrap();
        ch.tx_select().await.unwrap();
        ch.basic_ack(999, BasicAckOptions::default()).await.unwrap();
        let res = ch
            .queue_declare(
                q.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await;
        assert!(
            res.is_err(),
            "the channel must be closed by the ack, not at commit: {res:?}"
        );
        let err = next_channel_error(&mut events).await;
        assert_eq!(reply_code(&err), Some(406), "{err:?}");
        assert!(conn.status().connected());
    })
    .await
}

// ---------------------------------------------------------------------------
// 3. Topic matching is not exponential
// ---------------------------------------------------------------------------

/// A broker on its own runtime and thread: if a bug wedges its worker
/// threads, the test's runtime can still time out (and shut down) cleanly.
struct IsolatedBroker {
    url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl IsolatedBroker {
    async fn start() -> IsolatedBroker {
        let (url_tx, url_rx) = tokio::sync::oneshot::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        // Detached on purpose: never joined, so a wedged broker cannot hang
        // the test.
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("broker runtime");
            rt.block_on(async move {
                let broker = Broker::start().await;
                let _ = url_tx.send(broker.url().to_string());
                let _ = stop_rx.await;
                broker.stop().await;
            });
        });
        IsolatedBroker {
            url: url_rx.await.expect("broker started"),
            stop: Some(stop_tx),
        }
    }

    async fn channel(&self) -> (lapin::Connection, lapin::Channel) {
        let conn = lapin::Connection::connect(&self.url, Default::default())
            .await
            .expect("connect");
        let ch = conn.create_channel().await.expect("open channel");
        (conn, ch)
    }
}

impl Drop for IsolatedBroker {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_match_with_many_hashes_is_fast() {
    let broker = IsolatedBroker::start().await;
    let routed = async {
        let (_conn, ch) = broker.channel().await;
        let x = uniq("topic");
        ch.exchange_declare(
            x.as_str().into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
        let q = temp_queue(&ch).await;
        ch.queue_bind(
            q.as_str().into(),
            x.as_str().into(),
            "#.#.#.#.#.#.#.#.#.#.#.#.x".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        let key = vec!["a"; 100].join(".");
        publish(&ch, &x, &key, b"miss").await;
        publish(&ch, &x, &format!("{key}.x"), b"hit").await;
        // basic.get is answered only after both publishes were routed.
        get_all(&ch, &q).await
    };
    match tokio::time::timeout(Duration::from_secs(5), routed).await {
        Ok(got) => assert_eq!(got, vec!["hit"]),
        Err(_) => panic!("publishes to a #.#.#… topic binding were not routed within 5s"),
    }
}

// ---------------------------------------------------------------------------
// 4. A reused consumer tag does not take the old consumer's deliveries
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reused_consumer_tag_does_not_inherit_in_flight_deliveries() {
    within(async {
        const N: usize = 3_000;
        let broker = Broker::start().await;
        let q = queue_with_messages(&broker, N).await;

        let mut r = Raw::handshake(&broker).await;
        r.open_channel(1).await;
        // Manual-ack consumer "c" fills the connection's mailbox, then is
        // cancelled and "c" comes back as a no-ack consumer, all at once.
        let mut batch = basic_qos(1, 0);
        batch.extend(basic_consume(1, &q, "c", false));
        batch.extend(basic_cancel(1, "c"));
        batch.extend(basic_consume(1, &q, "c", true));
        r.send(&batch).await;
        r.expect_method(1, 60, 11).await;
        r.expect_method(1, 60, 21).await;

        // Deliveries before the second consume-ok are the old (manual-ack)
        // consumer's; after it, the new (no-ack) consumer's.
        let mut old = 0usize;
        let mut new = 0usize;
        let mut consume_oks = 1;
        let mut seen = std::collections::HashSet::new();
        while old + new < N {
            let f = r.next().await;
            match f.method() {
                Some(DELIVER) => {
                    let body = r.skip_content().await;
                    assert!(seen.insert(body), "a message was delivered twice");
                    if consume_oks == 2 {
                        new += 1;
                    } else {
                        old += 1;
                    }
                }
                Some((60, 31)) => {}
                Some((60, 21)) => consume_oks += 1,
                _ => panic!("unexpected frame {f:?}"),
            }
        }
        assert_eq!(consume_oks, 2);
        r.send(&channel_close(1)).await;
        r.expect_method(1, 20, 41).await;

        // Only the old consumer's deliveries were unacked: closing the
        // channel requeues exactly those.
        assert_eq!(
            settled_count(&broker, &q).await as usize,
            old,
            "after the channel closed, only the {old} deliveries to the cancelled \
             manual-ack consumer may be requeued ({new} came after the no-ack consume-ok)"
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tx_commit_routes_to_a_queue_redeclared_since_the_publish() {
    // Regression: a transactional publish kept the queue objects it was
    // routed to, so a queue deleted and declared again before commit
    // silently lost the message (RabbitMQ routes to the name at commit).
    within(async {
        let broker = Broker::start().await;
        let (_c, admin) = broker.channel().await;
        let q = uniq("tx-redeclare");
        declare_queue(&admin, &q).await;
        let (_c2, ch) = broker.channel().await;
        ch.tx_select().await.unwrap();
        publish(&ch, "", &q, b"kept").await;
        // A round trip on the publishing channel: the publish has been
        // routed (to the queue's name, as RabbitMQ does) before the other
        // connection deletes the queue. Without it the delete could come
        // first, and RabbitMQ would drop the message too.
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        ch.queue_declare(q.as_str().into(), passive, FieldTable::default())
            .await
            .unwrap();
        admin
            .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await
            .unwrap();
        declare_queue(&admin, &q).await;
        ch.tx_commit().await.unwrap();
        wait_for_count(&admin, &q, 1).await;
        assert_eq!(get_all(&admin, &q).await, vec!["kept"]);
    })
    .await
}
