//! Raw AMQP 0-9-1 over a plain socket, for tests that must send exactly
//! the bytes they mean (malformed ones included) and see exactly what the
//! broker writes back: frame and argument builders, and [`Raw`], a client
//! socket that does the handshake and reads frames.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::Broker;

pub const HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";
pub const FRAME_METHOD: u8 = 1;
pub const FRAME_HEADER: u8 = 2;
pub const FRAME_BODY: u8 = 3;
pub const FRAME_HEARTBEAT: u8 = 8;
pub const FRAME_END: u8 = 0xCE;

pub const EMPTY_TABLE: [u8; 4] = [0, 0, 0, 0];

/// (class, method) of basic.deliver.
pub const DELIVER: (u16, u16) = (60, 60);

// ---------------------------------------------------------------------------
// Builders
// ---------------------------------------------------------------------------

/// A frame with the given end octet (a wrong one makes a malformed frame).
pub fn frame_with_end(ty: u8, channel: u16, payload: &[u8], end: u8) -> Vec<u8> {
    let mut f = vec![ty];
    f.extend_from_slice(&channel.to_be_bytes());
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    f.extend_from_slice(payload);
    f.push(end);
    f
}

pub fn frame(ty: u8, channel: u16, payload: &[u8]) -> Vec<u8> {
    frame_with_end(ty, channel, payload, FRAME_END)
}

/// A method frame with already encoded arguments.
pub fn method(channel: u16, class: u16, method: u16, args: &[u8]) -> Vec<u8> {
    let mut p = class.to_be_bytes().to_vec();
    p.extend_from_slice(&method.to_be_bytes());
    p.extend_from_slice(args);
    frame(FRAME_METHOD, channel, &p)
}

pub fn shortstr(s: &str) -> Vec<u8> {
    let mut v = vec![s.len() as u8];
    v.extend_from_slice(s.as_bytes());
    v
}

pub fn longstr(s: &[u8]) -> Vec<u8> {
    let mut v = (s.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(s);
    v
}

pub fn channel_open(channel: u16) -> Vec<u8> {
    method(channel, 20, 10, &shortstr(""))
}

/// Channel.Close 200 with an empty text.
pub fn channel_close(channel: u16) -> Vec<u8> {
    let mut a = 200u16.to_be_bytes().to_vec();
    a.extend(shortstr(""));
    a.extend_from_slice(&[0, 0, 0, 0]);
    method(channel, 20, 40, &a)
}

pub fn exchange_declare(channel: u16, name: &str, kind: &str) -> Vec<u8> {
    let mut a = 0u16.to_be_bytes().to_vec();
    a.extend(shortstr(name));
    a.extend(shortstr(kind));
    a.push(0);
    a.extend_from_slice(&EMPTY_TABLE);
    method(channel, 40, 10, &a)
}

/// queue.declare of a durable queue (passive: only check it).
pub fn durable_queue_declare(channel: u16, name: &str, passive: bool) -> Vec<u8> {
    let mut a = 0u16.to_be_bytes().to_vec();
    a.extend(shortstr(name));
    a.push(0b0000_0010 | u8::from(passive));
    a.extend_from_slice(&EMPTY_TABLE);
    method(channel, 50, 10, &a)
}

/// queue.bind of `queue` to `exchange` with `key` (no arguments).
pub fn queue_bind(channel: u16, queue: &str, exchange: &str, key: &str) -> Vec<u8> {
    let mut a = 0u16.to_be_bytes().to_vec();
    a.extend(shortstr(queue));
    a.extend(shortstr(exchange));
    a.extend(shortstr(key));
    a.push(0);
    a.extend_from_slice(&EMPTY_TABLE);
    method(channel, 50, 20, &a)
}

/// The message count in queue.declare-ok's arguments.
pub fn declare_ok_message_count(args: &[u8]) -> u32 {
    let at = 1 + args[0] as usize;
    u32::from_be_bytes([args[at], args[at + 1], args[at + 2], args[at + 3]])
}

/// An auto-delete queue.
pub fn queue_declare(channel: u16, name: &str) -> Vec<u8> {
    let mut a = 0u16.to_be_bytes().to_vec();
    a.extend(shortstr(name));
    a.push(0b0000_1000); // auto-delete
    a.extend_from_slice(&EMPTY_TABLE);
    method(channel, 50, 10, &a)
}

pub fn basic_qos(channel: u16, prefetch_count: u16) -> Vec<u8> {
    let mut a = 0u32.to_be_bytes().to_vec();
    a.extend_from_slice(&prefetch_count.to_be_bytes());
    a.push(0);
    method(channel, 60, 10, &a)
}

pub fn basic_consume(channel: u16, queue: &str, tag: &str, no_ack: bool) -> Vec<u8> {
    let mut a = 0u16.to_be_bytes().to_vec();
    a.extend(shortstr(queue));
    a.extend(shortstr(tag));
    a.push(if no_ack { 0b0000_0010 } else { 0 });
    a.extend_from_slice(&EMPTY_TABLE);
    method(channel, 60, 20, &a)
}

pub fn basic_cancel(channel: u16, tag: &str) -> Vec<u8> {
    let mut a = shortstr(tag);
    a.push(0);
    method(channel, 60, 30, &a)
}

pub fn basic_publish(channel: u16, exchange: &str, key: &str) -> Vec<u8> {
    let mut a = 0u16.to_be_bytes().to_vec();
    a.extend(shortstr(exchange));
    a.extend(shortstr(key));
    a.push(0);
    method(channel, 60, 40, &a)
}

/// A basic content header without properties.
pub fn content_header(channel: u16, body_size: u64) -> Vec<u8> {
    let mut p = 60u16.to_be_bytes().to_vec();
    p.extend_from_slice(&0u16.to_be_bytes());
    p.extend_from_slice(&body_size.to_be_bytes());
    p.extend_from_slice(&0u16.to_be_bytes()); // no properties
    frame(FRAME_HEADER, channel, &p)
}

// ---------------------------------------------------------------------------
// What the broker sends
// ---------------------------------------------------------------------------

/// A frame as received (the payload without the frame end).
#[derive(Debug)]
pub struct Frame {
    pub ty: u8,
    pub channel: u16,
    pub payload: Vec<u8>,
}

impl Frame {
    /// (class, method) of a method frame, None for other frames.
    pub fn method(&self) -> Option<(u16, u16)> {
        (self.ty == FRAME_METHOD).then(|| {
            (
                u16::from_be_bytes([self.payload[0], self.payload[1]]),
                u16::from_be_bytes([self.payload[2], self.payload[3]]),
            )
        })
    }

    /// (class, method); panics if this is not a method frame.
    pub fn class_method(&self) -> (u16, u16) {
        match self.method() {
            Some(cm) => cm,
            None => panic!("not a method frame: {self:?}"),
        }
    }

    pub fn is(&self, channel: u16, class: u16, method: u16) -> bool {
        self.channel == channel && self.method() == Some((class, method))
    }
}

/// A Connection.Close or Channel.Close as received.
#[derive(Debug)]
pub struct Close {
    pub code: u16,
    pub text: String,
    pub class_id: u16,
    pub method_id: u16,
}

/// Decode the arguments of a Connection.Close or Channel.Close.
pub fn parse_close(args: &[u8]) -> Close {
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

// ---------------------------------------------------------------------------
// The socket
// ---------------------------------------------------------------------------

/// A client connection that writes raw bytes and reads raw frames. Reads
/// are buffered; writes go straight to the socket.
/// A client-properties table whose `capabilities` sets each name to true.
pub fn client_properties(capabilities: &[&str]) -> Vec<u8> {
    if capabilities.is_empty() {
        return EMPTY_TABLE.to_vec();
    }
    let mut caps = Vec::new();
    for c in capabilities {
        caps.extend(shortstr(c));
        caps.extend_from_slice(&[b't', 1]);
    }
    let mut entry = shortstr("capabilities");
    entry.push(b'F');
    entry.extend_from_slice(&(caps.len() as u32).to_be_bytes());
    entry.extend(caps);
    let mut table = (entry.len() as u32).to_be_bytes().to_vec();
    table.extend(entry);
    table
}

pub struct Raw {
    s: BufReader<TcpStream>,
    /// The frame_max agreed in the handshake.
    pub frame_max: u32,
}

impl Raw {
    /// A TCP connection to the broker; nothing sent yet.
    pub async fn connect(broker: &Broker) -> Raw {
        let s = TcpStream::connect(("127.0.0.1", broker.port))
            .await
            .expect("tcp connect");
        s.set_nodelay(true).unwrap();
        Raw {
            s: BufReader::new(s),
            frame_max: 131072,
        }
    }

    /// Send the protocol header and complete the handshake as guest on `/`,
    /// taking channel_max and frame_max as offered, without heartbeats.
    pub async fn handshake(broker: &Broker) -> Raw {
        Self::handshake_with(broker, None, 0).await
    }

    /// The handshake, optionally asking for a lower channel_max in tune-ok,
    /// with the given heartbeat interval.
    pub async fn handshake_with(
        broker: &Broker,
        want_channel_max: Option<u16>,
        heartbeat: u16,
    ) -> Raw {
        Self::handshake_full(broker, want_channel_max, heartbeat, &[]).await
    }

    /// The handshake with client properties advertising `capabilities`
    /// (each set to true).
    #[allow(dead_code)]
    pub async fn handshake_caps(broker: &Broker, capabilities: &[&str]) -> Raw {
        Self::handshake_full(broker, None, 0, capabilities).await
    }

    async fn handshake_full(
        broker: &Broker,
        want_channel_max: Option<u16>,
        heartbeat: u16,
        capabilities: &[&str],
    ) -> Raw {
        let mut r = Raw::connect(broker).await;
        r.send(HEADER).await;
        r.expect_method(0, 10, 10).await; // start
        let mut a = client_properties(capabilities);
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

    pub async fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).await.expect("write");
    }

    /// Write, ignoring failures: the server may already have hung up.
    pub async fn send_lossy(&mut self, bytes: &[u8]) {
        let _ = self.s.write_all(bytes).await;
    }

    /// The next frame, or None at EOF / reset.
    pub async fn read_frame(&mut self) -> Option<Frame> {
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

    /// The next non-heartbeat frame, or None at EOF.
    pub async fn next_opt(&mut self) -> Option<Frame> {
        loop {
            match self.read_frame().await {
                Some(f) if f.ty == FRAME_HEARTBEAT => continue,
                other => return other,
            }
        }
    }

    /// The next non-heartbeat frame; panics at EOF.
    pub async fn next(&mut self) -> Frame {
        self.next_opt()
            .await
            .expect("connection closed while a frame was expected")
    }

    /// Expect the given method on the given channel; returns its arguments.
    pub async fn expect_method(&mut self, channel: u16, class: u16, method: u16) -> Vec<u8> {
        let f = self.next().await;
        assert!(
            f.is(channel, class, method),
            "expected {class}.{method} on channel {channel}: {f:?}"
        );
        f.payload[4..].to_vec()
    }

    pub async fn open_channel(&mut self, channel: u16) {
        self.send(&channel_open(channel)).await;
        self.expect_method(channel, 20, 11).await;
    }

    /// Skip the content (header and bodies) following a basic.deliver;
    /// returns the body.
    pub async fn skip_content(&mut self) -> Vec<u8> {
        let h = self.next().await;
        assert_eq!(h.ty, FRAME_HEADER, "expected a content header: {h:?}");
        let size = u64::from_be_bytes(h.payload[4..12].try_into().unwrap()) as usize;
        let mut body = Vec::with_capacity(size);
        while body.len() < size {
            let b = self.next().await;
            assert_eq!(b.ty, FRAME_BODY, "expected a content body: {b:?}");
            body.extend_from_slice(&b.payload);
        }
        body
    }

    /// Expect Connection.Close (skipping anything else on other channels),
    /// answer Close-Ok, and expect the server to close the socket.
    pub async fn expect_connection_close(&mut self) -> Close {
        let close = loop {
            let f = self.next().await;
            if f.is(0, 10, 50) {
                break parse_close(&f.payload[4..]);
            }
        };
        // After a framing error the server may close without waiting.
        self.send_lossy(&method(0, 10, 51, &[])).await;
        self.expect_eof().await;
        close
    }

    /// Expect Channel.Close on `channel` and answer Close-Ok.
    pub async fn expect_channel_close(&mut self, channel: u16) -> Close {
        let args = self.expect_method(channel, 20, 40).await;
        self.send(&method(channel, 20, 41, &[])).await;
        parse_close(&args)
    }

    /// Everything the server still sends until it closes the socket.
    pub async fn expect_eof(&mut self) -> Vec<u8> {
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
