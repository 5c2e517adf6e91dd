//! Malformed and out-of-order input over a raw socket. After each, the
//! broker must still serve a normal client.

mod common;

use std::time::Duration;

use common::raw::*;
use common::*;

/// The broker still works for a well-behaved client.
async fn still_serves(broker: &Broker) {
    let (conn, ch) = broker.channel().await;
    let q = temp_queue(&ch).await;
    publish(&ch, "", &q, b"alive").await;
    assert_eq!(get_all(&ch, &q).await, vec!["alive"]);
    conn.close(200, "".into()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_protocol_header_gets_ours_and_a_close() {
    within(async {
        let broker = Broker::start().await;
        for bad in [
            &b"AMQP\x01\x01\x00\x0a"[..],
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            b"AMQP\x00\x00\x09\x02",
        ] {
            let mut r = Raw::connect(&broker).await;
            r.send(bad).await;
            let got = r.expect_eof().await;
            assert_eq!(got, HEADER, "answer to {:?}", String::from_utf8_lossy(bad));
        }
        still_serves(&broker).await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_after_the_header_closes_the_connection() {
    within(async {
        let broker = Broker::start().await;
        let mut r = Raw::connect(&broker).await;
        r.send(HEADER).await;
        r.expect_method(0, 10, 10).await;
        r.send(&[0xde, 0xad, 0xbe, 0xef].repeat(16)).await;
        // Whatever the server says first, it ends the connection.
        let rest = r.expect_eof().await;
        if !rest.is_empty() {
            assert_eq!(
                rest[0], FRAME_METHOD,
                "only a Connection.Close may precede the close: {rest:?}"
            );
        }
        still_serves(&broker).await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_after_the_handshake_is_a_frame_error_501() {
    within(async {
        let broker = Broker::start().await;
        let mut r = Raw::handshake(&broker).await;
        r.send(&[0xde, 0xad, 0xbe, 0xef].repeat(16)).await;
        let close = r.expect_connection_close().await;
        assert_eq!(close.code, 501, "{close:?}");
        assert!(close.text.starts_with("FRAME_ERROR"), "{close:?}");
        still_serves(&broker).await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frame_end_is_501() {
    within(async {
        let broker = Broker::start().await;
        let mut r = Raw::handshake(&broker).await;
        let mut payload = 20u16.to_be_bytes().to_vec();
        payload.extend_from_slice(&10u16.to_be_bytes());
        payload.extend(shortstr(""));
        r.send(&frame_with_end(FRAME_METHOD, 1, &payload, 0x00))
            .await;
        let close = r.expect_connection_close().await;
        assert_eq!(close.code, 501, "{close:?}");
        assert!(close.text.starts_with("FRAME_ERROR"), "{close:?}");
        still_serves(&broker).await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frame_is_501() {
    within(async {
        let broker = Broker::start().await;
        let mut r = Raw::handshake(&broker).await;
        r.open_channel(1).await;
        let q = uniq("big");
        r.send(&queue_declare(1, &q)).await;
        r.expect_method(1, 50, 11).await;
        r.send(&basic_publish(1, "", &q)).await;
        let n = r.frame_max as u64 * 2;
        r.send(&content_header(1, n)).await;
        r.send_lossy(&frame(FRAME_BODY, 1, &vec![b'x'; n as usize]))
            .await;
        let close = r.expect_connection_close().await;
        assert_eq!(close.code, 501, "{close:?}");
        still_serves(&broker).await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_on_unopened_channel_is_504() {
    within(async {
        let broker = Broker::start().await;
        let mut r = Raw::handshake(&broker).await;
        r.send(&queue_declare(3, &uniq("q"))).await;
        let close = r.expect_connection_close().await;
        assert_eq!(close.code, 504, "{close:?}");
        assert!(close.text.starts_with("CHANNEL_ERROR"), "{close:?}");
        assert_eq!((close.class_id, close.method_id), (50, 10), "{close:?}");
        still_serves(&broker).await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_channel_open_is_504() {
    within(async {
        let broker = Broker::start().await;
        let mut r = Raw::handshake(&broker).await;
        r.open_channel(1).await;
        r.send(&channel_open(1)).await;
        let close = r.expect_connection_close().await;
        assert_eq!(close.code, 504, "{close:?}");
        still_serves(&broker).await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_open_channels_than_channel_max_is_530() {
    within(async {
        let broker = Broker::start().await;
        let mut r = Raw::handshake_with(&broker, Some(2), 0).await;
        r.open_channel(1).await;
        r.open_channel(7).await;
        r.send(&channel_open(3)).await;
        let close = r.expect_connection_close().await;
        assert_eq!(close.code, 530, "{close:?}");
        assert!(close.text.starts_with("NOT_ALLOWED"), "{close:?}");
        still_serves(&broker).await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_a_channel_frees_a_slot_under_channel_max() {
    within(async {
        let broker = Broker::start().await;
        let mut r = Raw::handshake_with(&broker, Some(2), 0).await;
        r.open_channel(1).await;
        r.open_channel(2).await;
        r.send(&channel_close(1)).await;
        r.expect_method(1, 20, 41).await;
        r.open_channel(3).await;
        r.send(&queue_declare(3, &uniq("q"))).await;
        r.expect_method(3, 50, 11).await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_without_header_is_505() {
    within(async {
        let broker = Broker::start().await;
        let mut r = Raw::handshake(&broker).await;
        r.open_channel(1).await;
        r.send(&frame(FRAME_BODY, 1, b"orphan body")).await;
        let close = r.expect_connection_close().await;
        assert_eq!(close.code, 505, "{close:?}");
        assert!(close.text.starts_with("UNEXPECTED_FRAME"), "{close:?}");
        still_serves(&broker).await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_without_publish_is_505() {
    within(async {
        let broker = Broker::start().await;
        let mut r = Raw::handshake(&broker).await;
        r.open_channel(1).await;
        r.send(&content_header(1, 3)).await;
        let close = r.expect_connection_close().await;
        assert_eq!(close.code, 505, "{close:?}");
        still_serves(&broker).await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_instead_of_content_is_505() {
    within(async {
        let broker = Broker::start().await;
        let mut r = Raw::handshake(&broker).await;
        r.open_channel(1).await;
        let q = uniq("q");
        r.send(&queue_declare(1, &q)).await;
        r.expect_method(1, 50, 11).await;
        r.send(&basic_publish(1, "", &q)).await;
        r.send(&content_header(1, 10)).await;
        r.send(&frame(FRAME_BODY, 1, b"12345")).await;
        // Five bytes still owed: a method frame now is out of place.
        r.send(&queue_declare(1, &q)).await;
        let close = r.expect_connection_close().await;
        assert_eq!(close.code, 505, "{close:?}");
        still_serves(&broker).await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_publish_and_soft_error_keep_the_connection() {
    within(async {
        let broker = Broker::start().await;
        let mut r = Raw::handshake(&broker).await;
        r.open_channel(1).await;
        let q = uniq("raw");
        r.send(&queue_declare(1, &q)).await;
        let ok = r.expect_method(1, 50, 11).await;
        assert_eq!(&ok[1..1 + q.len()], q.as_bytes());
        // A body split over two frames, sent in one write.
        let mut batch = basic_publish(1, "", &q);
        batch.extend(content_header(1, 10));
        batch.extend(frame(FRAME_BODY, 1, b"hello"));
        batch.extend(frame(FRAME_BODY, 1, b"world"));
        // basic.get no-ack
        let mut g = 0u16.to_be_bytes().to_vec();
        g.extend(shortstr(&q));
        g.push(1);
        batch.extend(method(1, 60, 70, &g));
        r.send(&batch).await;
        r.expect_method(1, 60, 71).await;
        let h = r.next().await;
        assert_eq!(h.ty, FRAME_HEADER);
        assert_eq!(u64::from_be_bytes(h.payload[4..12].try_into().unwrap()), 10);
        let b = r.next().await;
        assert_eq!(
            (b.ty, b.payload.as_slice()),
            (FRAME_BODY, &b"helloworld"[..])
        );

        // Soft error on channel 1: Channel.Close 404, connection stays.
        let mut p = 0u16.to_be_bytes().to_vec();
        p.extend(shortstr(&uniq("missing")));
        p.push(0b0000_0001); // passive
        p.extend_from_slice(&EMPTY_TABLE);
        r.send(&method(1, 50, 10, &p)).await;
        let close = r.expect_channel_close(1).await;
        assert_eq!(close.code, 404, "{close:?}");
        assert_eq!((close.class_id, close.method_id), (50, 10));
        // The channel number is free again.
        r.open_channel(1).await;
        // Clean connection close.
        let mut c = 200u16.to_be_bytes().to_vec();
        c.extend(shortstr("bye"));
        c.extend_from_slice(&[0, 0, 0, 0]);
        r.send(&method(0, 10, 50, &c)).await;
        r.expect_method(0, 10, 51).await;
        still_serves(&broker).await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_client_is_dropped_after_the_handshake_timeout() {
    within(async {
        let broker = Broker::start_with(|c| c.handshake_timeout_ms = 300).await;
        let mut r = Raw::connect(&broker).await;
        let started = std::time::Instant::now();
        r.expect_eof().await;
        assert!(
            started.elapsed() >= Duration::from_millis(250),
            "{:?}",
            started.elapsed()
        );
        // Half a handshake is not enough either.
        let mut r = Raw::connect(&broker).await;
        r.send(HEADER).await;
        r.expect_method(0, 10, 10).await;
        r.expect_eof().await;
        still_serves(&broker).await;
        broker.stop().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sends_heartbeats_and_drops_a_silent_peer() {
    within(async {
        let broker = Broker::start().await;
        let mut r = Raw::handshake_with(&broker, None, 1).await;
        let started = std::time::Instant::now();
        // The server sends heartbeats on channel 0 ...
        let f = r.read_frame().await.expect("a heartbeat");
        assert_eq!(
            (f.ty, f.channel, f.payload.len()),
            (FRAME_HEARTBEAT, 0, 0),
            "{f:?}"
        );
        // ... and, hearing nothing back, gives up after about two intervals.
        loop {
            match tokio::time::timeout(Duration::from_secs(8), r.read_frame()).await {
                Ok(Some(f)) if f.ty == FRAME_HEARTBEAT => continue,
                Ok(Some(f)) => panic!("unexpected frame {f:?}"),
                Ok(None) => break,
                Err(_) => panic!("silent peer was never dropped"),
            }
        }
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(1500),
            "dropped too early: {waited:?}"
        );
        still_serves(&broker).await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_properties_are_541_not_forwarded() {
    // Regression: properties that are not decoded (no headers, expiration
    // or user_id) were forwarded unchecked, so a bad length reached every
    // consumer's client.
    within(async {
        let broker = Broker::start().await;
        let mut r = Raw::handshake(&broker).await;
        r.open_channel(1).await;
        r.send(&basic_publish(1, "", "nowhere")).await;
        // content-type flagged with length 200, but only 3 bytes follow.
        let mut p = 60u16.to_be_bytes().to_vec();
        p.extend_from_slice(&0u16.to_be_bytes());
        p.extend_from_slice(&1u64.to_be_bytes());
        p.extend_from_slice(&[0x80, 0x00, 200, b'a', b'b', b'c']);
        r.send(&frame(FRAME_HEADER, 1, &p)).await;
        r.send(&frame(FRAME_BODY, 1, b"x")).await;
        let close = r.expect_connection_close().await;
        assert_eq!(close.code, 541, "{close:?}");
        still_serves(&broker).await;
    })
    .await
}
