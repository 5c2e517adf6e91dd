//! Tools for the hostile-client suite (`tests/hostile.rs`): a broker child
//! process with its pid (for RSS from `/proc`), a raw AMQP socket to any
//! port ([`Wire`], as [`super::raw::Raw`] only reaches in-process brokers),
//! builders for deeply nested field tables, a time-bounded flood writer,
//! and a prober that times another client's publish+get round trips.
//!
//! Included by `tests/hostile.rs` with `#[path]` (next to `mod common`),
//! hence the `crate::common` paths.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lapin::options::{BasicGetOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::BasicProperties;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;

use crate::common::child::{self, ChildBroker};
use crate::common::disk::DataDir;
use crate::common::raw::{
    basic_publish, frame, longstr, method, parse_close, shortstr, Close, Frame, FRAME_BODY,
    FRAME_END, FRAME_HEADER, FRAME_HEARTBEAT, HEADER,
};

// ---------------------------------------------------------------------------
// The broker process
// ---------------------------------------------------------------------------

/// Tests that time a bystander or measure a small memory signal hold this
/// exclusively, the other child-process tests shared: on two cores a
/// neighbour's flood would otherwise pass for the broker's own slowness.
pub static CPU: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// A `warren` child process on a fresh data directory.
pub struct Hostile {
    pub broker: ChildBroker,
    pub pid: u32,
    pub dir: DataDir,
    /// Started with a memory watermark the attack may leave exceeded: a
    /// publish would then (rightly) be blocked, so serving is checked
    /// without one.
    pub memory_capped: bool,
}

impl Hostile {
    /// Start `warren` with `toml` over the defaults (log level `warn`).
    pub fn start(toml: &str) -> Hostile {
        let dir = DataDir::new();
        let config = dir.write_config(&format!("log_level = \"warn\"\n{toml}"));
        let broker = ChildBroker::start(dir.path(), &config);
        let pid = pid_of(dir.path());
        let memory_capped = toml.contains("memory_high_watermark");
        Hostile {
            broker,
            pid,
            dir,
            memory_capped,
        }
    }

    /// Stop with SIGTERM and start again on the same data directory
    /// (panics, with the log, if it does not come up).
    pub async fn restart(&mut self) {
        self.broker.terminate().await;
        self.broker = ChildBroker::start(self.dir.path(), &self.dir.config_path());
        self.pid = pid_of(self.dir.path());
    }

    pub fn port(&self) -> u16 {
        self.broker.port
    }

    /// Resident set size now, MB.
    pub fn rss_mb(&self) -> u64 {
        status_kb(self.pid, "VmRSS:") / 1024
    }

    /// Peak resident set size so far, MB.
    pub fn peak_mb(&self) -> u64 {
        status_kb(self.pid, "VmHWM:") / 1024
    }

    /// Panic (with the broker's output) if the process has exited, or
    /// does within 100 ms (an aborting process closes its sockets a moment
    /// before its exit can be seen).
    pub async fn assert_running(&mut self) {
        let patience = Duration::from_millis(100);
        if let Some(status) = self.broker.wait_for_exit(patience).await {
            panic!(
                "warren died ({status}); output:\n{}",
                tail(&self.broker.output())
            );
        }
    }

    /// The process runs, and a fresh lapin client can declare, publish and
    /// get.
    pub async fn assert_serves(&mut self) {
        self.assert_running().await;
        let port = self.port();
        let capped = self.memory_capped;
        let served =
            tokio::time::timeout(Duration::from_secs(10), round_trip_on_new(port, capped)).await;
        self.assert_running().await;
        assert!(served.is_ok(), "a fresh client was not served within 10 s");
    }
}

/// The last 40 lines of a log.
fn tail(output: &str) -> String {
    let lines: Vec<&str> = output.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// The pid of this process's child that was started on `data_dir`
/// (ChildBroker does not expose it).
fn pid_of(data_dir: &Path) -> u32 {
    let wanted = data_dir.to_string_lossy().into_owned();
    let tasks = std::fs::read_dir("/proc/self/task").expect("read /proc/self/task");
    for task in tasks.flatten() {
        let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        for pid in children.split_whitespace() {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            if args.contains(&wanted) {
                return pid.parse().expect("numeric pid");
            }
        }
    }
    panic!("no child process runs on {wanted}");
}

/// A `kB` field of `/proc/PID/status`.
fn status_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Declare a temporary queue, publish to it and get the message back, on a
/// new connection.
async fn round_trip_on_new(port: u16, without_publishing: bool) {
    let conn = child::connect(port).await;
    let ch = conn.create_channel().await.expect("open channel");
    let q = ch
        .queue_declare("".into(), exclusive(), FieldTable::default())
        .await
        .expect("queue.declare");
    if without_publishing {
        let got = ch
            .basic_get(q.name().as_str().into(), Default::default())
            .await
            .expect("basic.get");
        assert!(got.is_none());
    } else {
        round_trip(&ch, q.name().as_str()).await;
    }
    let _ = conn.close(200, "".into()).await;
}

fn exclusive() -> QueueDeclareOptions {
    QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    }
}

/// Publish one message to `queue` and get it back.
async fn round_trip(ch: &lapin::Channel, queue: &str) {
    ch.basic_publish(
        "".into(),
        queue.into(),
        BasicPublishOptions::default(),
        b"ping",
        BasicProperties::default(),
    )
    .await
    .expect("basic.publish");
    loop {
        let got = ch
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
            .expect("basic.get");
        if got.is_some() {
            return;
        }
    }
}

// ---------------------------------------------------------------------------
// Latency of another client
// ---------------------------------------------------------------------------

/// Times publish+get round trips of a well-behaved client in a task while
/// an attack runs.
pub struct Prober {
    stop: Arc<AtomicBool>,
    /// When the round trip in progress started.
    inflight: Arc<Mutex<Option<Instant>>>,
    task: tokio::task::JoinHandle<Vec<Duration>>,
}

impl Prober {
    /// Connect (before the attack starts) and begin sampling every 20 ms
    /// on a queue of its own.
    pub async fn start(port: u16) -> Prober {
        Self::start_on(port, None).await
    }

    /// Sample on `queue` (which must not hand the probe to a consumer that
    /// can take it), or on a queue of its own.
    pub async fn start_on(port: u16, queue: Option<&str>) -> Prober {
        let conn = child::connect(port).await;
        let ch = conn.create_channel().await.expect("open channel");
        let q = match queue {
            Some(q) => q.to_string(),
            None => ch
                .queue_declare("".into(), exclusive(), FieldTable::default())
                .await
                .expect("queue.declare")
                .name()
                .to_string(),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let inflight = Arc::new(Mutex::new(None));
        let (stop2, inflight2) = (stop.clone(), inflight.clone());
        let task = tokio::spawn(async move {
            let _conn = conn;
            let mut samples = Vec::new();
            while !stop2.load(Ordering::Relaxed) {
                let t0 = Instant::now();
                *inflight2.lock().unwrap() = Some(t0);
                round_trip(&ch, &q).await;
                *inflight2.lock().unwrap() = None;
                samples.push(t0.elapsed());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            samples
        });
        Prober {
            stop,
            inflight,
            task,
        }
    }

    /// Stop; the slowest round trip (one still running counts with its time
    /// so far) and the number of samples.
    pub async fn finish(self) -> (Duration, usize) {
        self.stop.store(true, Ordering::Relaxed);
        let stuck = (*self.inflight.lock().unwrap()).map(|t| t.elapsed());
        let mut task = self.task;
        match tokio::time::timeout(Duration::from_secs(3), &mut task).await {
            Ok(samples) => {
                let samples = samples.expect("prober task");
                let max = samples.iter().max().copied().unwrap_or_default();
                (max, samples.len())
            }
            Err(_) => {
                task.abort();
                (stuck.unwrap_or_default() + Duration::from_secs(3), 0)
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Attacks and checks
// ---------------------------------------------------------------------------

/// How much a memory attack pushes (at most; a held-back writer stalls).
pub const FLOOD_BYTES: u64 = 1 << 30;
/// How long a memory attack may push.
pub const FLOOD_TIME: Duration = Duration::from_secs(6);
/// One MiB.
pub const MIB: usize = 1 << 20;

/// Panic unless the connection ended with Connection.Close 501 or 502.
pub fn assert_refused_as_malformed(what: &str, got: Option<Close>) {
    match got {
        Some(c) if c.code == 501 || c.code == 502 => {}
        Some(c) => panic!("{what}: expected Connection.Close 501/502, got {c:?}"),
        None => panic!("{what}: connection dropped without Connection.Close"),
    }
}

/// The broker's first answer to a Start-Ok: Ok(()) for Tune (logged in),
/// Err(Some(close)) or Err(None) for EOF.
pub async fn login_answer(w: &mut Wire) -> Result<(), Option<Close>> {
    match tokio::time::timeout(Duration::from_secs(5), w.next_opt()).await {
        Ok(Some(f)) if f.is(0, 10, 30) => Ok(()),
        Ok(Some(f)) if f.is(0, 10, 50) => {
            Err(Some(crate::common::raw::parse_close(&f.payload[4..])))
        }
        Ok(Some(f)) => panic!("unexpected answer to start-ok: {f:?}"),
        Ok(None) | Err(_) => Err(None),
    }
}

/// Run a memory attack (which returns the bytes it pushed) and require the
/// broker's peak RSS to grow less than `limit_mb` meanwhile.
pub async fn assert_bounded_memory<F: std::future::Future<Output = u64>>(
    h: &mut Hostile,
    what: &str,
    limit_mb: u64,
    attack: impl FnOnce(u16) -> F,
) {
    let before = h.rss_mb();
    let pushed = attack(h.port()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    h.assert_running().await;
    let growth = h.peak_mb().saturating_sub(before);
    eprintln!(
        "{what}: pushed {} MiB, RSS {before} MB -> peak {} MB (+{growth} MB)",
        pushed >> 20,
        h.peak_mb()
    );
    assert!(
        growth < limit_mb,
        "{what}: RSS grew by {growth} MB after {} MiB pushed",
        pushed >> 20
    );
    h.assert_serves().await;
}

/// Flood 1 MiB messages with the given properties, publishing on channel 1
/// of a fresh connection (after `setup` frames, answered by `setup_reply`).
pub async fn flood_messages(
    port: u16,
    setup: &[u8],
    exchange: &str,
    key: &str,
    props: (u16, &[u8]),
) -> u64 {
    let mut w = Wire::login(port).await;
    w.send(setup).await;
    let msg = message(1, exchange, key, props, MIB);
    let batch = msg.repeat(8);
    let until = Instant::now() + FLOOD_TIME;
    let pushed = w.flood(&batch, FLOOD_BYTES, until).await;
    drop(w);
    pushed
}

/// Declare a queue on a lapin connection to the child.
pub async fn lapin_queue(port: u16, name: &str, args: FieldTable) -> lapin::Connection {
    let conn = crate::common::child::connect(port).await;
    let ch = conn.create_channel().await.unwrap();
    ch.queue_declare(name.into(), Default::default(), args)
        .await
        .unwrap();
    conn
}

/// Point every frame in `frames` at `channel`.
pub fn relabel(frames: &mut [u8], channel: u16) {
    let mut at = 0;
    while at < frames.len() {
        frames[at + 1..at + 3].copy_from_slice(&channel.to_be_bytes());
        let size = u32::from_be_bytes(frames[at + 3..at + 7].try_into().unwrap()) as usize;
        at += size + 8;
    }
}

/// Publish+get pairs on queue `queue`, each message expiring a second
/// before the previous one, and taken at once: the queue is empty again for
/// the next, whose expiry is then the earliest yet.
pub fn ever_earlier(queue: &str, pairs: usize) -> Vec<u8> {
    let mut get = 0u16.to_be_bytes().to_vec();
    get.extend(shortstr(queue));
    get.push(1); // no-ack
    let get = method(1, 60, 70, &get);
    let mut out = Vec::with_capacity(pairs * 100);
    for i in 0..pairs as u64 {
        let exp = shortstr(&((1u64 << 40) - i * 1_000).to_string());
        out.extend(message(1, "", queue, (PROP_EXPIRATION, &exp), 0));
        out.extend_from_slice(&get);
    }
    out
}

/// Send a Start-Ok (advertising authentication_failure_close) and return
/// the broker's answer.
pub async fn try_login(port: u16, mechanism: &str, response: &[u8]) -> Result<(), Option<Close>> {
    let mut w = Wire::started(port).await;
    w.send(&start_ok(&auth_failure_close_props(), mechanism, response))
        .await;
    login_answer(&mut w).await
}

/// Panic unless the answer is Connection.Close 403.
pub fn assert_access_refused(what: &str, answer: Result<(), Option<Close>>) {
    match answer {
        Err(Some(c)) if c.code == 403 => {}
        Ok(()) => panic!("{what}: logged in"),
        Err(Some(c)) => panic!("{what}: expected 403, got {c:?}"),
        Err(None) => panic!("{what}: socket dropped without Connection.Close 403"),
    }
}

/// Send `attack` on a fresh logged-in connection: it must be closed with
/// 501/502. Then `control` (nested shallowly) followed by a
/// declare must both succeed.
pub async fn deep_then_shallow(h: &mut Hostile, what: &str, attack: Vec<u8>, control: Vec<u8>) {
    let mut w = Wire::login(h.port()).await;
    w.send(&attack).await;
    let got = w.close_or_eof().await;
    h.assert_running().await;
    assert_refused_as_malformed(what, got);
    let mut w = Wire::login(h.port()).await;
    w.send(&control).await;
    w.send(&queue_declare_args(1, "after-control", 8, &[0, 0, 0, 0]))
        .await;
    w.until_method(1, 50, 11, &format!("{what} nested shallowly"))
        .await;
}

/// An AMQPLAIN response for guest carrying a table nested `depth` deep.
pub fn amqplain_guest(depth: usize) -> Vec<u8> {
    let mut r = shortstr("LOGIN");
    r.extend(b"S\0\0\0\x05guest");
    r.extend(shortstr("PASSWORD"));
    r.extend(b"S\0\0\0\x05guest");
    r.extend(nested_entries(depth, false));
    r
}

/// One logged-in connection per `(setup, data)`: send `setup`, then write
/// `data` until it is all written or `until` passes, draining whatever
/// comes back. Returns the `data` bytes written, in all.
pub async fn flood_connections(port: u16, floods: Vec<(Vec<u8>, Vec<u8>)>, until: Instant) -> u64 {
    let mut tasks = Vec::new();
    for (setup, data) in floods {
        let mut w = Wire::login(port).await;
        w.send(&setup).await;
        tasks.push(tokio::spawn(async move {
            let (drained, mut w) = w.split();
            let mut pushed = 0;
            for chunk in data.chunks(1 << 20) {
                pushed += flood(&mut w, chunk, chunk.len() as u64, until).await;
            }
            drained.abort();
            pushed
        }));
    }
    let mut pushed = 0;
    for t in tasks {
        pushed += t.await.expect("flood task");
    }
    pushed
}

// ---------------------------------------------------------------------------
// Raw frames to a port
// ---------------------------------------------------------------------------

/// A raw AMQP client socket to a port.
pub struct Wire {
    s: BufReader<TcpStream>,
}

impl Wire {
    /// Pipeline `n` manual-ack consumers `c0`, `c1`, ... on `queue`
    /// (channel 1) and wait for every consume-ok.
    pub async fn consume_many(&mut self, queue: &str, n: usize) {
        let consumes: Vec<u8> = (0..n)
            .flat_map(|i| crate::common::raw::basic_consume(1, queue, &format!("c{i}"), false))
            .collect();
        self.send(&consumes).await;
        for _ in 0..n {
            self.expect_method(1, 60, 21).await;
        }
    }

    pub async fn connect(port: u16) -> Wire {
        let s = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("tcp connect");
        s.set_nodelay(true).unwrap();
        Wire {
            s: BufReader::new(s),
        }
    }

    /// Protocol header sent and Connection.Start read.
    pub async fn started(port: u16) -> Wire {
        let mut w = Wire::connect(port).await;
        w.send(HEADER).await;
        w.expect_method(0, 10, 10).await;
        w
    }

    /// A complete handshake as guest on `/` (frame_max 131072, no
    /// heartbeats), with channel 1 open.
    pub async fn login(port: u16) -> Wire {
        let mut w = Wire::started(port).await;
        w.send(&start_ok(&[0, 0, 0, 0], "PLAIN", b"\0guest\0guest"))
            .await;
        w.expect_method(0, 10, 30).await;
        w.send(&tune_ok()).await;
        w.send(&open_vhost()).await;
        w.expect_method(0, 10, 41).await;
        w.send(&method(1, 20, 10, &shortstr(""))).await;
        w.expect_method(1, 20, 11).await;
        w
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).await.expect("write");
    }

    /// Write, ignoring failures (the server may have hung up); false on one.
    pub async fn send_lossy(&mut self, bytes: &[u8]) -> bool {
        self.s.write_all(bytes).await.is_ok()
    }

    /// The next non-heartbeat frame, or None at EOF / reset.
    pub async fn next_opt(&mut self) -> Option<Frame> {
        loop {
            let mut hdr = [0u8; 7];
            self.s.read_exact(&mut hdr).await.ok()?;
            let size = u32::from_be_bytes([hdr[3], hdr[4], hdr[5], hdr[6]]) as usize;
            let mut payload = vec![0u8; size + 1];
            self.s.read_exact(&mut payload).await.ok()?;
            assert_eq!(payload.pop(), Some(FRAME_END), "bad frame end");
            if hdr[0] != FRAME_HEARTBEAT {
                return Some(Frame {
                    ty: hdr[0],
                    channel: u16::from_be_bytes([hdr[1], hdr[2]]),
                    payload,
                });
            }
        }
    }

    /// The next frame within 10 s; panics at EOF.
    pub async fn next(&mut self) -> Frame {
        match tokio::time::timeout(Duration::from_secs(10), self.next_opt()).await {
            Ok(Some(f)) => f,
            Ok(None) => panic!("connection closed while a frame was expected"),
            Err(_) => panic!("no frame within 10 s"),
        }
    }

    /// Expect the given method; returns its arguments.
    pub async fn expect_method(&mut self, channel: u16, class: u16, method_id: u16) -> Vec<u8> {
        let f = self.next().await;
        assert!(
            f.is(channel, class, method_id),
            "expected {class}.{method_id} on channel {channel}, got {:?}",
            f.method()
        );
        f.payload[4..].to_vec()
    }

    /// Read until the given method arrives; panics on Connection.Close.
    pub async fn until_method(&mut self, channel: u16, class: u16, method_id: u16, what: &str) {
        loop {
            let f = self.next().await;
            if f.is(0, 10, 50) {
                panic!(
                    "{what}: connection closed: {:?}",
                    parse_close(&f.payload[4..])
                );
            }
            if f.is(channel, class, method_id) {
                return;
            }
        }
    }

    /// What ends the connection: Some(Connection.Close), answered with
    /// Close-Ok, or None when the socket closed (or stayed silent for 10 s)
    /// without one. Frames on other channels are skipped.
    pub async fn close_or_eof(&mut self) -> Option<Close> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let f = tokio::time::timeout(left, self.next_opt()).await.ok()??;
            if f.is(0, 10, 50) {
                self.send_lossy(&method(0, 10, 51, &[])).await;
                return Some(parse_close(&f.payload[4..]));
            }
        }
    }

    /// Read and discard everything until EOF, in a task (a consumer that
    /// keeps its socket drained).
    pub fn drain_in_background(self) -> tokio::task::JoinHandle<u64> {
        let (drained, write) = self.split();
        // Dropping the write half would shut the socket down: keep it.
        tokio::spawn(async move {
            let _write = write;
            drained.await.unwrap_or(0)
        })
    }

    /// Drain the reading side in a task; keep the writing side.
    pub fn split(self) -> (tokio::task::JoinHandle<u64>, OwnedWriteHalf) {
        let (mut read, write) = self.s.into_inner().into_split();
        let drained = tokio::spawn(async move {
            let mut buf = vec![0u8; 256 * 1024];
            let mut total = 0;
            while let Ok(n) = read.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                total += n as u64;
            }
            total
        });
        (drained, write)
    }

    /// Read at most `bytes_per_s` until `until`.
    pub async fn read_slowly(&mut self, bytes_per_s: usize, until: Instant) {
        let mut buf = vec![0u8; bytes_per_s / 10];
        while Instant::now() < until {
            let _ = tokio::time::timeout(Duration::from_millis(100), self.s.read(&mut buf)).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// See [`flood`].
    pub async fn flood(&mut self, chunk: &[u8], limit: u64, until: Instant) -> u64 {
        flood(&mut self.s, chunk, limit, until).await
    }
}

/// Write `chunk` over and over until `limit` bytes are written or `until`
/// passes (a held-back writer stalls); returns the bytes written.
pub async fn flood(
    w: &mut (impl AsyncWrite + Unpin),
    chunk: &[u8],
    limit: u64,
    until: Instant,
) -> u64 {
    let mut sent = 0;
    while sent < limit {
        let left = until.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, w.write_all(chunk)).await {
            Ok(Ok(())) => sent += chunk.len() as u64,
            _ => break,
        }
    }
    sent
}

// ---------------------------------------------------------------------------
// Frames
// ---------------------------------------------------------------------------

/// Connection.Start-Ok with the given client properties (an encoded table).
pub fn start_ok(client_properties: &[u8], mechanism: &str, response: &[u8]) -> Vec<u8> {
    let mut a = client_properties.to_vec();
    a.extend(shortstr(mechanism));
    a.extend(longstr(response));
    a.extend(shortstr("en_US"));
    method(0, 10, 11, &a)
}

/// Tune-Ok: channel_max 2047, frame_max 131072, no heartbeats.
pub fn tune_ok() -> Vec<u8> {
    let mut t = 2047u16.to_be_bytes().to_vec();
    t.extend_from_slice(&131072u32.to_be_bytes());
    t.extend_from_slice(&0u16.to_be_bytes());
    method(0, 10, 31, &t)
}

/// Connection.Open of `/`.
pub fn open_vhost() -> Vec<u8> {
    let mut o = shortstr("/");
    o.extend(shortstr(""));
    o.push(0);
    method(0, 10, 40, &o)
}

/// Client properties advertising `authentication_failure_close`.
pub fn auth_failure_close_props() -> Vec<u8> {
    let mut caps = shortstr("authentication_failure_close");
    caps.extend_from_slice(b"t\x01");
    let mut props = shortstr("capabilities");
    props.push(b'F');
    props.extend(table_of(&caps));
    table_of(&props)
}

/// A field table (length-prefixed) with the given encoded entries.
pub fn table_of(entries: &[u8]) -> Vec<u8> {
    let mut t = (entries.len() as u32).to_be_bytes().to_vec();
    t.extend_from_slice(entries);
    t
}

/// The entries of a field table `{"k": …}` in which `depth` tables (or,
/// with `arrays`, one table then arrays) are nested, counting the outer
/// table: `depth` 1 is an empty table.
pub fn nested_entries(depth: usize, arrays: bool) -> Vec<u8> {
    if depth <= 1 {
        return Vec::new();
    }
    // Innermost value first, wrapped outwards.
    let mut value = vec![if arrays { b'A' } else { b'F' }, 0, 0, 0, 0];
    for _ in 2..depth {
        let inner = if arrays {
            value
        } else {
            [shortstr("k"), value].concat()
        };
        value = vec![if arrays { b'A' } else { b'F' }];
        value.extend_from_slice(&(inner.len() as u32).to_be_bytes());
        value.extend(inner);
    }
    [shortstr("k"), value].concat()
}

/// A field table nested `depth` deep (see [`nested_entries`]).
pub fn nested_table(depth: usize, arrays: bool) -> Vec<u8> {
    table_of(&nested_entries(depth, arrays))
}

/// queue.declare with the given flag bits (1 passive, 2 durable, 4
/// exclusive, 8 auto-delete) and an encoded argument table.
pub fn queue_declare_args(channel: u16, name: &str, flags: u8, args: &[u8]) -> Vec<u8> {
    let mut a = 0u16.to_be_bytes().to_vec();
    a.extend(shortstr(name));
    a.push(flags);
    a.extend_from_slice(args);
    method(channel, 50, 10, &a)
}

/// exchange.bind of `destination` to `source` with an encoded argument table.
pub fn exchange_bind(channel: u16, destination: &str, source: &str, args: &[u8]) -> Vec<u8> {
    let mut a = 0u16.to_be_bytes().to_vec();
    a.extend(shortstr(destination));
    a.extend(shortstr(source));
    a.extend(shortstr(""));
    a.push(0);
    a.extend_from_slice(args);
    method(channel, 40, 30, &a)
}

/// Property flags of a content header.
pub const PROP_HEADERS: u16 = 0x2000;
pub const PROP_PRIORITY: u16 = 0x0800;
pub const PROP_REPLY_TO: u16 = 0x0200;
pub const PROP_EXPIRATION: u16 = 0x0100;

/// A basic content header with `flags` and their encoded values.
pub fn content_header_props(channel: u16, body_size: u64, flags: u16, props: &[u8]) -> Vec<u8> {
    let mut p = 60u16.to_be_bytes().to_vec();
    p.extend_from_slice(&0u16.to_be_bytes());
    p.extend_from_slice(&body_size.to_be_bytes());
    p.extend_from_slice(&flags.to_be_bytes());
    p.extend_from_slice(props);
    frame(FRAME_HEADER, channel, &p)
}

/// Body frames carrying `len` bytes, each at most a 131072-byte frame.
pub fn body_frames(channel: u16, len: usize) -> Vec<u8> {
    const MAX_PAYLOAD: usize = 131072 - 8;
    let chunk = vec![b'x'; MAX_PAYLOAD.min(len)];
    let mut out = Vec::with_capacity(len + len / MAX_PAYLOAD * 8 + 8);
    let mut left = len;
    while left > 0 {
        let n = left.min(MAX_PAYLOAD);
        out.extend(frame(FRAME_BODY, channel, &chunk[..n]));
        left -= n;
    }
    out
}

/// A whole message: basic.publish, its header (`flags`, `props`) and a
/// body of `len` bytes.
pub fn message(
    channel: u16,
    exchange: &str,
    key: &str,
    (flags, props): (u16, &[u8]),
    len: usize,
) -> Vec<u8> {
    let mut m = basic_publish(channel, exchange, key);
    m.extend(content_header_props(channel, len as u64, flags, props));
    m.extend(body_frames(channel, len));
    m
}
