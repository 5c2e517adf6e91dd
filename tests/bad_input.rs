//! Malformed and out-of-order input over a raw socket. After each, the
//! broker must still serve a normal client.

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";
const FRAME_METHOD: u8 = 1;
const FRAME_HEADER: u8 = 2;
const FRAME_BODY: u8 = 3;
const FRAME_HEARTBEAT: u8 = 8;
const FRAME_END: u8 = 0xCE;

fn frame_with_end(ty: u8, channel: u16, payload: &[u8], end: u8) -> Vec<u8> {
    let mut f = vec![ty];
    f.extend_from_slice(&channel.to_be_bytes());
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    f.extend_from_slice(payload);
    f.push(end);
    f
}

fn frame(ty: u8, channel: u16, payload: &[u8]) -> Vec<u8> {
    frame_with_end(ty, channel, payload, FRAME_END)
}

fn method(channel: u16, class: u16, method: u16, args: &[u8]) -> Vec<u8> {
    let mut p = class.to_be_bytes().to_vec();
    p.extend_from_slice(&method.to_be_bytes());
    p.extend_from_slice(args);
    frame(FRAME_METHOD, channel, &p)
}

fn shortstr(s: &str) -> Vec<u8> {
    let mut v = vec![s.len() as u8];
    v.extend_from_slice(s.as_bytes());
    v
}

fn longstr(s: &[u8]) -> Vec<u8> {
    let mut v = (s.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(s);
    v
}

fn channel_open(channel: u16) -> Vec<u8> {
    method(channel, 20, 10, &shortstr(""))
}

fn queue_declare(channel: u16, name: &str) -> Vec<u8> {
    let mut a = 0u16.to_be_bytes().to_vec();
    a.extend(shortstr(name));
    a.push(0b0000_1000); // auto-delete
    a.extend_from_slice(&0u32.to_be_bytes()); // empty arguments table
    method(channel, 50, 10, &a)
}

fn basic_publish(channel: u16, exchange: &str, key: &str) -> Vec<u8> {
    let mut a = 0u16.to_be_bytes().to_vec();
    a.extend(shortstr(exchange));
    a.extend(shortstr(key));
    a.push(0);
    method(channel, 60, 40, &a)
}

fn content_header(channel: u16, body_size: u64) -> Vec<u8> {
    let mut p = 60u16.to_be_bytes().to_vec();
    p.extend_from_slice(&0u16.to_be_bytes());
    p.extend_from_slice(&body_size.to_be_bytes());
    p.extend_from_slice(&0u16.to_be_bytes()); // no properties
    frame(FRAME_HEADER, channel, &p)
}

struct Raw {
    s: TcpStream,
    frame_max: u32,
}

#[derive(Debug)]
struct Frame {
    ty: u8,
    channel: u16,
    payload: Vec<u8>,
}

impl Frame {
    fn class_method(&self) -> (u16, u16) {
        assert_eq!(self.ty, FRAME_METHOD, "not a method frame: {self:?}");
        (
            u16::from_be_bytes([self.payload[0], self.payload[1]]),
            u16::from_be_bytes([self.payload[2], self.payload[3]]),
        )
    }
}

/// A Connection.Close or Channel.Close as received.
#[derive(Debug)]
struct Close {
    code: u16,
    text: String,
    class_id: u16,
    method_id: u16,
}

fn parse_close(args: &[u8]) -> Close {
    let code = u16::from_be_bytes([args[0], args[1]]);
    let n = args[2] as usize;
    let text = String::from_utf8_lossy(&args[3..3 + n]).into_owned();
    let rest = &args[3 + n..];
    Close {
        code,
        text,
        class_id: u16::from_be_bytes([rest[0], rest[1]]),
        method_id: u16::from_be_bytes([rest[2], rest[3]]),
    }
}

impl Raw {
    async fn connect(broker: &Broker) -> Raw {
        let s = TcpStream::connect(("127.0.0.1", broker.port))
            .await
            .expect("tcp connect");
        s.set_nodelay(true).unwrap();
        Raw {
            s,
            frame_max: 131072,
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).await.expect("write");
    }

    /// Write, ignoring failures: the server may already have hung up.
    async fn send_lossy(&mut self, bytes: &[u8]) {
        let _ = self.s.write_all(bytes).await;
    }

    /// The next frame, or None at EOF / reset.
    async fn read_frame(&mut self) -> Option<Frame> {
        let mut hdr = [0u8; 7];
        if self.s.read_exact(&mut hdr).await.is_err() {
            return None;
        }
        let size = u32::from_be_bytes([hdr[3], hdr[4], hdr[5], hdr[6]]) as usize;
        let mut payload = vec![0u8; size + 1];
        if self.s.read_exact(&mut payload).await.is_err() {
            return None;
        }
        assert_eq!(
            payload.pop(),
            Some(FRAME_END),
            "server sent a bad frame end"
        );
        Some(Frame {
            ty: hdr[0],
            channel: u16::from_be_bytes([hdr[1], hdr[2]]),
            payload,
        })
    }

    /// The next non-heartbeat frame; panics at EOF.
    async fn next(&mut self) -> Frame {
        loop {
            match self.read_frame().await {
                Some(f) if f.ty == FRAME_HEARTBEAT => continue,
                Some(f) => return f,
                None => panic!("connection closed while a frame was expected"),
            }
        }
    }

    async fn expect_method(&mut self, channel: u16, class: u16, method: u16) -> Vec<u8> {
        let f = self.next().await;
        assert_eq!(f.channel, channel, "{f:?}");
        assert_eq!(f.class_method(), (class, method), "{f:?}");
        f.payload[4..].to_vec()
    }

    /// Send the protocol header and complete the handshake as guest on `/`.
    async fn handshake(broker: &Broker) -> Raw {
        Self::handshake_with(broker, None, 0).await
    }

    /// The handshake, optionally asking for a lower channel_max in tune-ok,
    /// with the given heartbeat interval.
    async fn handshake_with(broker: &Broker, want_channel_max: Option<u16>, heartbeat: u16) -> Raw {
        let mut r = Raw::connect(broker).await;
        r.send(HEADER).await;
        r.expect_method(0, 10, 10).await; // start
        let mut a = 0u32.to_be_bytes().to_vec(); // empty client-properties
        a.extend(shortstr("PLAIN"));
        a.extend(longstr(b"\0guest\0guest"));
        a.extend(shortstr("en_US"));
        r.send(&method(0, 10, 11, &a)).await;
        let tune = r.expect_method(0, 10, 30).await;
        let channel_max = want_channel_max.unwrap_or(u16::from_be_bytes([tune[0], tune[1]]));
        r.frame_max = u32::from_be_bytes([tune[2], tune[3], tune[4], tune[5]]);
        let mut t = channel_max.to_be_bytes().to_vec();
        t.extend_from_slice(&r.frame_max.to_be_bytes());
        t.extend_from_slice(&heartbeat.to_be_bytes());
        r.send(&method(0, 10, 31, &t)).await;
        let mut o = shortstr("/");
        o.extend(shortstr(""));
        o.push(0);
        r.send(&method(0, 10, 40, &o)).await;
        r.expect_method(0, 10, 41).await;
        r
    }

    async fn open_channel(&mut self, channel: u16) {
        self.send(&channel_open(channel)).await;
        self.expect_method(channel, 20, 11).await;
    }

    /// Expect Connection.Close (skipping anything else on other channels),
    /// answer Close-Ok, and expect the server to close the socket.
    async fn expect_connection_close(&mut self) -> Close {
        let close = loop {
            let f = self.next().await;
            if f.ty == FRAME_METHOD && f.channel == 0 && f.class_method() == (10, 50) {
                break parse_close(&f.payload[4..]);
            }
        };
        // After a framing error the server may close without waiting.
        self.send_lossy(&method(0, 10, 51, &[])).await;
        self.expect_eof().await;
        close
    }

    async fn expect_channel_close(&mut self, channel: u16) -> Close {
        let args = self.expect_method(channel, 20, 40).await;
        self.send(&method(channel, 20, 41, &[])).await;
        parse_close(&args)
    }

    /// Everything the server still sends until it closes the socket.
    async fn expect_eof(&mut self) -> Vec<u8> {
        let mut rest = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match tokio::time::timeout(Duration::from_secs(5), self.s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return rest,
                Ok(Ok(n)) => rest.extend_from_slice(&buf[..n]),
                Err(_) => panic!("server kept the socket open; got {rest:?}"),
            }
        }
    }
}

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
        let mut c = 200u16.to_be_bytes().to_vec();
        c.extend(shortstr(""));
        c.extend_from_slice(&[0, 0, 0, 0]);
        r.send(&method(1, 20, 40, &c)).await;
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
        p.extend_from_slice(&0u32.to_be_bytes());
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
