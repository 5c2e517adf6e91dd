//! What "stored" means to a publisher: tx.commit-ok for persistent
//! messages on a durable queue comes after the store has them (a kill -9
//! right after it loses nothing), methods pipelined behind the commit are
//! answered after it, in order, and a store that cannot write refuses
//! (nacks) instead of pretending.

mod common;

use common::child::{self, ChildBroker};
use common::disk::DataDir;
use common::raw::{self, Raw, EMPTY_TABLE, FRAME_BODY, FRAME_HEADER};
use common::{declare_durable, persistent, ready_count, within, Broker};
use futures_lite::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions};
use lapin::types::FieldTable;

/// A content header whose properties carry only delivery_mode 2.
fn persistent_header(channel: u16, body_size: u64) -> Vec<u8> {
    let mut p = 60u16.to_be_bytes().to_vec();
    p.extend_from_slice(&0u16.to_be_bytes());
    p.extend_from_slice(&body_size.to_be_bytes());
    p.extend_from_slice(&0x1000u16.to_be_bytes()); // delivery_mode present
    p.push(2);
    raw::frame(FRAME_HEADER, channel, &p)
}

fn passive_declare(channel: u16, name: &str) -> Vec<u8> {
    let mut a = 0u16.to_be_bytes().to_vec();
    a.extend(raw::shortstr(name));
    a.push(0b0000_0001); // passive
    a.extend_from_slice(&EMPTY_TABLE);
    raw::method(channel, 50, 10, &a)
}

#[tokio::test]
async fn committed_persistent_messages_survive_and_later_methods_wait_for_commit_ok() {
    within(async {
        let dir = DataDir::new();
        let broker = Broker::start_in(dir.path().to_path_buf(), |_| {}).await;
        let (_conn, ch) = broker.channel().await;
        declare_durable(&ch, "tx-durable").await;

        let mut c = Raw::handshake(&broker).await;
        c.open_channel(1).await;
        // tx.select, two persistent publishes, commit and a passive declare,
        // all in one write: the declare must be answered after Commit-Ok.
        let mut bytes = raw::method(1, 90, 10, &[]);
        for body in [&b"first"[..], b"second"] {
            bytes.extend(raw::basic_publish(1, "", "tx-durable"));
            bytes.extend(persistent_header(1, body.len() as u64));
            bytes.extend(raw::frame(FRAME_BODY, 1, body));
        }
        bytes.extend(raw::method(1, 90, 20, &[]));
        bytes.extend(passive_declare(1, "tx-durable"));
        c.send(&bytes).await;
        c.expect_method(1, 90, 11).await;
        c.expect_method(1, 90, 21).await;
        let declare_ok = c.expect_method(1, 50, 11).await;
        // queue name (shortstr), then message count.
        let name_len = usize::from(declare_ok[0]);
        let count = &declare_ok[1 + name_len..5 + name_len];
        assert_eq!(u32::from_be_bytes(count.try_into().unwrap()), 2);
        drop(c);
        broker.stop().await;

        let broker = Broker::start_in(dir.path().to_path_buf(), |_| {}).await;
        let (_conn, ch) = broker.channel().await;
        let mut consumer = ch
            .basic_consume(
                "tx-durable".into(),
                "c".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("consume");
        let mut bodies = Vec::new();
        for _ in 0..2 {
            let d = consumer.next().await.expect("delivery").expect("ok");
            bodies.push(d.data);
        }
        assert_eq!(bodies, vec![b"first".to_vec(), b"second".to_vec()]);
        broker.stop().await;
    })
    .await;
}

/// Commit-Ok is the promise: kill -9 the broker the moment it arrives and
/// every committed message must be there after a restart. (Before commits
/// waited for the store, the last batch could still sit in a write buffer.)
#[tokio::test]
async fn committed_messages_survive_a_kill_right_after_commit_ok() {
    let dir = DataDir::new();
    let config = dir.write_config("fsync = \"never\"\n");
    let mut committed = 0u32;
    for round in 0..5 {
        let mut broker = ChildBroker::start(dir.path(), &config);
        let conn = child::connect(broker.port).await;
        let ch = conn.create_channel().await.expect("channel");
        declare_durable(&ch, "tx-kill").await;
        assert_eq!(
            ready_count(&ch, "tx-kill").await.expect("count"),
            committed,
            "after restart {round}"
        );
        ch.tx_select().await.expect("tx.select");
        for i in 0..200 {
            ch.basic_publish(
                "".into(),
                "tx-kill".into(),
                BasicPublishOptions::default(),
                format!("{round}-{i}").as_bytes(),
                persistent(),
            )
            .await
            .expect("publish");
        }
        ch.tx_commit().await.expect("tx.commit");
        committed += 200;
        broker.kill();
    }
    let broker = ChildBroker::start(dir.path(), &config);
    let conn = child::connect(broker.port).await;
    let ch = conn.create_channel().await.expect("channel");
    assert_eq!(ready_count(&ch, "tx-kill").await.expect("count"), committed);
}

/// A write the store cannot make stops it, as a failed fsync would:
/// publishers waiting for a confirm get basic.nack, later persistent
/// publishes are nacked too, and a publisher without confirms has its
/// connection closed (541). The failure is forced through the file system:
/// the queue's next segment file name is taken, so rolling over fails.
#[tokio::test]
async fn a_failed_store_write_nacks_publishers() {
    within(async {
        let broker = Broker::start_with(|c| c.segment_bytes = 4096).await;
        let (_c, ch) = broker.channel().await;
        declare_durable(&ch, "doomed").await;
        declare_durable(&ch, "healthy").await;
        // A queue's directory is created with its first message.
        common::confirm(&ch).await;
        common::publish_confirmed(&ch, "doomed", std::iter::once(b"first".to_vec())).await;
        let queues = broker.data_dir.join("queues");
        let dir = std::fs::read_dir(&queues)
            .expect("queues dir")
            .map(|e| e.expect("entry").path())
            .min()
            .expect("the first queue's directory");
        std::os::unix::fs::symlink("/nonexistent/segment", dir.join("00000002.seg"))
            .expect("symlink");

        let mut nacked = 0;
        for i in 0..20 {
            let confirm = ch
                .basic_publish(
                    "".into(),
                    "doomed".into(),
                    lapin::options::BasicPublishOptions::default(),
                    &[i as u8; 1000],
                    persistent(),
                )
                .await
                .expect("publish")
                .await
                .expect("confirm");
            if confirm.is_nack() {
                nacked += 1;
            } else {
                assert_eq!(nacked, 0, "an ack after the store failed (message {i})");
            }
        }
        assert!(nacked >= 15, "only {nacked} of 20 nacked");
        // The whole store stopped, not just that queue.
        let other = ch
            .basic_publish(
                "".into(),
                "healthy".into(),
                lapin::options::BasicPublishOptions::default(),
                b"fine?",
                persistent(),
            )
            .await
            .expect("publish")
            .await
            .expect("confirm");
        assert!(
            other.is_nack(),
            "a durable write after the store failed was confirmed"
        );

        // Without confirms: the connection is closed with 541.
        let (conn, plain) = broker.channel().await;
        plain
            .basic_publish(
                "".into(),
                "doomed".into(),
                Default::default(),
                b"x",
                persistent(),
            )
            .await
            .expect("publish");
        let r = ready_count(&plain, "doomed").await;
        assert!(r.is_err(), "channel still usable: {r:?}");
        for _ in 0..50 {
            if !conn.status().connected() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(!conn.status().connected(), "connection not closed");
        broker.stop().await;
    })
    .await;
}
