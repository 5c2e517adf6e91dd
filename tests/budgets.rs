//! Per-connection byte budgets over TCP: content still arriving and
//! uncommitted transactions are refused past their budget with 406 on the
//! channel that would pass it, and the connection goes on (holding the
//! connection back instead could never shrink them: only reading more
//! completes a message or a transaction).

mod common;

use common::raw::{self, Raw};
use common::{declare_queue, ready_count, uniq, Broker};

/// Body frames of `size` bytes in all, each at most `chunk`.
fn body(channel: u16, size: usize, chunk: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk);
        out.extend(raw::frame(3, channel, &vec![7u8; n]));
        left -= n;
    }
    out
}

#[tokio::test]
async fn interleaved_content_past_the_budget_is_refused_and_the_rest_completes() {
    let broker = Broker::start_with(|c| c.max_message_size = 1 << 20).await;
    let (_conn, ch) = broker.channel().await;
    let q = uniq("interleaved");
    declare_queue(&ch, &q).await;
    let mut r = Raw::handshake(&broker).await;
    let chunk = r.frame_max as usize - 8;
    r.open_channel(1).await;
    r.open_channel(2).await;
    let mut first = raw::basic_publish(1, "", &q);
    first.extend(raw::content_header(1, 900_000));
    first.extend(body(1, 600_000, chunk));
    r.send(&first).await;
    // Channel 2 announces a second large message while the first is
    // incomplete: together past the 1 MiB budget.
    let mut second = raw::basic_publish(2, "", &q);
    second.extend(raw::content_header(2, 900_000));
    r.send(&second).await;
    let close = common::within(r.expect_channel_close(2)).await;
    assert_eq!(close.code, 406, "{close:?}");
    // Reading went on: the first message completes.
    r.send(&body(1, 300_000, chunk)).await;
    for _ in 0..100 {
        if ready_count(&ch, &q).await.unwrap() == 1 {
            broker.stop().await;
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("the first message never arrived");
}

#[tokio::test]
async fn empty_publishes_count_against_the_transaction_budget() {
    let broker = Broker::start_with(|c| c.max_transaction_bytes = 10_000).await;
    let mut r = Raw::handshake(&broker).await;
    r.open_channel(1).await;
    r.send(&raw::method(1, 90, 10, &[])).await; // tx.select
    r.expect_method(1, 90, 11).await;
    let mut publishes = Vec::new();
    for _ in 0..200 {
        publishes.extend(raw::basic_publish(1, "", "nowhere"));
        publishes.extend(raw::content_header(1, 0));
    }
    r.send(&publishes).await;
    let close = common::within(r.expect_channel_close(1)).await;
    assert_eq!(close.code, 406, "{close:?}");
    // The connection is still usable (expect_channel_close sent close-ok).
    r.open_channel(2).await;
    broker.stop().await;
}

/// A 512 KiB body that says which message it is in every byte.
fn numbered_body(i: u8) -> Vec<u8> {
    vec![i; 512 << 10]
}

/// Unacked deliveries past the connection's 16 MiB are paged out; they
/// must come back whole when requeued (channel closed) or dead-lettered
/// (rejected), from a transient queue (records written when paged out)
/// and a durable one (records already there).
#[tokio::test]
async fn paged_out_unacked_messages_come_back_whole() {
    use lapin::options::{BasicGetOptions, BasicRejectOptions};
    use lapin::types::AMQPValue;
    const N: u8 = 48;
    let broker = Broker::start().await;
    let (_conn, ch) = broker.channel().await;
    for durable in [false, true] {
        let q = uniq("paged");
        let dlq = uniq("paged-dlq");
        declare_queue(&ch, &dlq).await;
        let args = common::table(&[
            ("x-dead-letter-exchange", AMQPValue::LongString("".into())),
            (
                "x-dead-letter-routing-key",
                AMQPValue::LongString(dlq.as_str().into()),
            ),
        ]);
        let options = match durable {
            true => common::durable(),
            false => Default::default(),
        };
        ch.queue_declare(q.as_str().into(), options, args)
            .await
            .unwrap();
        for i in 0..N {
            common::publish_with(&ch, "", &q, &numbered_body(i), common::persistent()).await;
        }
        let (holder, held) = broker.channel().await;
        let mut consumer = common::consume(&held, &q).await;
        let got = common::next_deliveries(&mut consumer, N as usize).await;
        for (i, d) in got.iter().enumerate() {
            assert_eq!(d.data, numbered_body(i as u8), "delivery {i}");
        }
        // Rejected without requeue: dead-lettered, read back from disk.
        for d in &got[..8] {
            held.basic_reject(d.delivery_tag, BasicRejectOptions { requeue: false })
                .await
                .unwrap();
        }
        // The rest go back to the queue when the channel closes.
        held.close(200, "bye".into()).await.unwrap();
        drop(holder);
        common::wait_for_count(&ch, &dlq, 8).await;
        common::wait_for_count(&ch, &q, u32::from(N) - 8).await;
        for (queue, range) in [(&dlq, 0..8), (&q, 8..N)] {
            for i in range {
                let m = ch
                    .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
                    .await
                    .unwrap()
                    .expect("a message");
                assert_eq!(
                    m.delivery.data,
                    numbered_body(i),
                    "message {i} from {queue}"
                );
            }
        }
    }
    broker.stop().await;
}
