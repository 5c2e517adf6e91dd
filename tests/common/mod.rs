//! Helpers shared by the integration tests: an in-process Warren on a free
//! port, lapin connections to it, time bounds and polling, and small
//! assertions.

#![allow(dead_code)]

pub mod child;
pub mod disk;
pub mod raw;
pub mod stream;
pub mod tls;

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_lite::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer};

use disk::DataDir;

/// Upper bound for any single test (a hang detector: generous, as a debug
/// build on a loaded CI machine is slow).
pub const TEST_TIMEOUT: Duration = Duration::from_secs(20);

/// How long to wait before concluding that nothing more is coming.
pub const QUIET: Duration = Duration::from_millis(300);

/// A Warren broker running inside the test process.
pub struct Broker {
    server: warren::RunningServer,
    url: String,
    pub port: u16,
    /// The broker's data directory: a fresh one from `start`/`start_with`,
    /// removed when the broker is stopped, or, when it is only dropped, once
    /// the test's runtime shuts down (kept, and its path printed, when the
    /// test fails); or the caller's from `start_in`, left alone.
    pub data_dir: std::path::PathBuf,
    /// The fresh data directory made for this broker, if it was.
    fresh: Option<FreshDir>,
}

/// A broker's fresh data directory. Removed at once when the broker has
/// stopped; when the broker is only dropped, its server goes on running
/// (and may still write there) until the test's runtime shuts down, so the
/// directory is removed then.
struct FreshDir(Option<DataDir>);

impl FreshDir {
    /// Remove the directory now (its server has stopped).
    fn remove(mut self) {
        drop(self.0.take());
    }
}

impl Drop for FreshDir {
    fn drop(&mut self) {
        let Some(dir) = self.0.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            // A task that never finishes: the runtime drops it, and with it
            // the directory, when it shuts down and no longer runs servers.
            Ok(runtime) if !std::thread::panicking() => {
                runtime.spawn(async move {
                    let _dir = dir;
                    std::future::pending::<()>().await
                });
            }
            // When the test fails the directory is kept (and named).
            _ => drop(dir),
        }
    }
}

/// A fresh, unique data directory under the system temp dir.
pub fn fresh_data_dir() -> std::path::PathBuf {
    std::env::temp_dir().join(uniq("warren-test-data"))
}

impl Broker {
    /// Start a broker with the default configuration on a free port.
    pub async fn start() -> Broker {
        Self::start_with(|_| {}).await
    }

    /// Start a broker after letting the caller adjust the configuration.
    pub async fn start_with(adjust: impl FnOnce(&mut warren::Config)) -> Broker {
        let fresh = DataDir::new();
        let mut broker = Self::start_in(fresh.path().to_path_buf(), adjust).await;
        broker.fresh = Some(FreshDir(Some(fresh)));
        broker
    }

    /// Start a broker on the given data directory (a restart when it holds
    /// a previous broker's data); the directory outlives the broker.
    pub async fn start_in(
        data_dir: std::path::PathBuf,
        adjust: impl FnOnce(&mut warren::Config),
    ) -> Broker {
        // The HTTP listeners are off unless a test asks for them (see
        // `free_port`): their default ports would clash between tests.
        let mut cfg = warren::Config {
            port: 0,
            log_level: "off".into(),
            data_dir: data_dir.clone(),
            management_port: 0,
            prometheus_port: 0,
            ..Default::default()
        };
        adjust(&mut cfg);
        let server = warren::RunningServer::start(cfg)
            .await
            .expect("start warren");
        let url = server.url();
        let port = server.addr.port();
        Broker {
            server,
            url,
            port,
            data_dir,
            fresh: None,
        }
    }

    /// The management API's base URL (`http://127.0.0.1:PORT/api`), if it
    /// was turned on.
    #[allow(dead_code)]
    pub fn api_url(&self) -> Option<String> {
        self.server
            .management_addr
            .map(|a| format!("http://{a}/api"))
    }

    /// Where the listener of `protocol` (`amqp/ssl`, `https`, ...) is.
    pub fn addr_of(&self, protocol: &str) -> Option<std::net::SocketAddr> {
        self.server.addr_of(protocol)
    }

    /// Re-read the TLS files, as SIGHUP does; how many endpoints failed.
    pub async fn reload_tls(&self) -> usize {
        self.server.tls_reloader.reload().await
    }

    /// A request to the management API as `user` (password = name, or
    /// guest's); the status and the JSON body (Null if none).
    #[allow(dead_code)]
    pub async fn api_as(
        &self,
        user: &str,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let url = format!("{}{}", self.api_url().expect("api on"), path);
        let mut req = reqwest::Client::new()
            .request(method.parse().expect("a method"), url)
            .basic_auth(user, Some(user));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// A request to the management API as guest.
    #[allow(dead_code)]
    pub async fn api(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        self.api_as("guest", method, path, body).await
    }

    /// The Prometheus endpoint's address, if it was turned on.
    #[allow(dead_code)]
    pub fn prometheus_addr(&self) -> Option<std::net::SocketAddr> {
        self.server.prometheus_addr
    }

    /// The broker's resource alarms, to raise and clear them by hand.
    #[allow(dead_code)]
    pub fn alarms(&self) -> std::sync::Arc<warren::alarms::Alarms> {
        self.server.broker.alarms.clone()
    }

    /// `amqp://guest:guest@127.0.0.1:PORT/%2f`
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The URL with other credentials and vhost (vhost already %-encoded).
    pub fn url_as(&self, user: &str, password: &str, vhost: &str) -> String {
        format!("amqp://{user}:{password}@127.0.0.1:{}/{vhost}", self.port)
    }

    /// A new lapin connection as guest to vhost `/`.
    pub async fn connect(&self) -> Connection {
        Connection::connect(&self.url, ConnectionProperties::default())
            .await
            .expect("connect to broker")
    }

    /// A new connection and one open channel on it.
    pub async fn channel(&self) -> (Connection, Channel) {
        let conn = self.connect().await;
        let ch = conn.create_channel().await.expect("open channel");
        (conn, ch)
    }

    /// Stop the broker (closing its connections with 320) and wait; then
    /// remove its data directory if it was a fresh one.
    pub async fn stop(self) {
        let Broker { server, fresh, .. } = self;
        server.stop().await;
        // Only now: the server has released the directory's lock.
        if let Some(fresh) = fresh {
            fresh.remove();
        }
    }
}

/// Run a test body under [`TEST_TIMEOUT`].
pub async fn within<F: Future>(body: F) -> F::Output {
    bounded(TEST_TIMEOUT, body).await
}

/// Run `body` within `limit` (panicking, and so killing any child broker,
/// after).
pub async fn bounded<F: Future>(limit: Duration, body: F) -> F::Output {
    match tokio::time::timeout(limit, body).await {
        Ok(v) => v,
        Err(_) => panic!("test did not finish within {limit:?}"),
    }
}

/// Call `probe` every `interval` until it gives a value, or until a call
/// after `patience` has passed gives none (then None).
pub async fn poll<T>(
    patience: Duration,
    interval: Duration,
    mut probe: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = std::time::Instant::now() + patience;
    loop {
        if let Some(v) = probe() {
            return Some(v);
        }
        if std::time::Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(interval).await;
    }
}

/// Like [`poll`] with an asynchronous probe.
#[allow(dead_code)]
pub async fn poll_async<T, F: Future<Output = Option<T>>>(
    patience: Duration,
    interval: Duration,
    mut probe: impl FnMut() -> F,
) -> Option<T> {
    let deadline = std::time::Instant::now() + patience;
    loop {
        if let Some(v) = probe().await {
            return Some(v);
        }
        if std::time::Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(interval).await;
    }
}

/// A name unique within this test process (and across runs).
pub fn uniq(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{prefix}-{}-{}-{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The AMQP reply code carried by a lapin error, if it is a protocol error.
pub fn reply_code(e: &lapin::Error) -> Option<u16> {
    match e.kind() {
        lapin::ErrorKind::ProtocolError(amqp) => Some(amqp.get_id()),
        _ => None,
    }
}

/// Assert that a result failed with the given AMQP reply code.
#[track_caller]
pub fn assert_code<T: std::fmt::Debug>(res: lapin::Result<T>, code: u16) -> lapin::Error {
    match res {
        Ok(v) => panic!("expected AMQP error {code}, got Ok({v:?})"),
        Err(e) => {
            assert_eq!(
                reply_code(&e),
                Some(code),
                "expected AMQP error {code}, got {e:?}"
            );
            e
        }
    }
}

/// The reply text carried by a protocol error.
pub fn reply_text(e: &lapin::Error) -> String {
    match e.kind() {
        lapin::ErrorKind::ProtocolError(amqp) => amqp.get_message().to_string(),
        other => format!("{other:?}"),
    }
}

/// Declare a queue with the given name (non-durable, not exclusive).
pub async fn declare_queue(ch: &Channel, name: &str) {
    ch.queue_declare(
        name.into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("queue.declare");
}

/// Queue options for a durable queue.
pub fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..Default::default()
    }
}

/// Declare a durable queue with the given name (no arguments).
pub async fn declare_durable(ch: &Channel, name: &str) {
    ch.queue_declare(name.into(), durable(), FieldTable::default())
        .await
        .expect("declare durable queue");
}

/// A passive queue.declare: the queue's counts (and a round trip on the
/// channel).
pub async fn passive_declare(ch: &Channel, queue: &str) -> lapin::Result<lapin::Queue> {
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions {
            passive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
}

/// The ready-message count of a queue: a passive declare (and so also a
/// round trip on the channel).
pub async fn ready_count(ch: &Channel, queue: &str) -> lapin::Result<u32> {
    Ok(passive_declare(ch, queue).await?.message_count())
}

/// Declare a fresh server-named exclusive queue and return its name.
pub async fn temp_queue(ch: &Channel) -> String {
    let q = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("queue.declare");
    q.name().to_string()
}

/// Properties of a persistent message (delivery mode 2).
pub fn persistent() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(2)
}

/// Put a channel in confirm mode.
pub async fn confirm(ch: &Channel) {
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm.select");
}

/// Publish persistent messages to `queue` on a confirm channel, a window
/// at a time, and check that every one is acked.
pub async fn publish_confirmed(ch: &Channel, queue: &str, bodies: impl Iterator<Item = Vec<u8>>) {
    let mut pending = Vec::new();
    for body in bodies {
        let confirm = ch
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                &body,
                persistent(),
            )
            .await
            .expect("basic.publish");
        pending.push(confirm);
        if pending.len() == 500 {
            await_acks(std::mem::take(&mut pending)).await;
        }
    }
    await_acks(pending).await;
}

async fn await_acks(pending: Vec<lapin::PublisherConfirm>) {
    for confirm in pending {
        let c = confirm.await.expect("publisher confirm");
        assert!(c.is_ack(), "publish nacked: {c:?}");
    }
}

/// Publish a body with default properties and wait for the publish to be
/// written (and confirmed, on a confirm channel).
pub async fn publish(ch: &Channel, exchange: &str, routing_key: &str, body: &[u8]) {
    publish_with(ch, exchange, routing_key, body, BasicProperties::default()).await
}

pub async fn publish_with(
    ch: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    props: BasicProperties,
) {
    ch.basic_publish(
        exchange.into(),
        routing_key.into(),
        BasicPublishOptions::default(),
        body,
        props,
    )
    .await
    .expect("basic.publish")
    .await
    .expect("publish confirm");
}

/// An argument table from (key, value) pairs.
pub fn table(pairs: &[(&str, lapin::types::AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert((*k).into(), v.clone());
    }
    t
}

/// A manual-ack consumer with a server-generated tag.
pub async fn consume(ch: &Channel, queue: &str) -> Consumer {
    ch.basic_consume(
        queue.into(),
        "".into(),
        lapin::options::BasicConsumeOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("basic.consume")
}

/// Start consuming from `queue` with consumer tag `tag` (acks required).
#[allow(dead_code)]
pub async fn consume_tagged(ch: &Channel, queue: &str, tag: &str) -> Consumer {
    ch.basic_consume(
        queue.into(),
        tag.into(),
        lapin::options::BasicConsumeOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("basic.consume")
}

/// The next delivery of a consumer (panics on error, cancellation or timeout).
pub async fn next_delivery(consumer: &mut Consumer) -> Delivery {
    match tokio::time::timeout(Duration::from_secs(5), consumer.next()).await {
        Ok(Some(Ok(d))) => d,
        Ok(Some(Err(e))) => panic!("consumer error: {e:?}"),
        Ok(None) => panic!("consumer ended"),
        Err(_) => panic!("no delivery within 5s"),
    }
}

/// The next `n` bodies of a consumer, in order (deliveries are not acked).
pub async fn next_deliveries(consumer: &mut Consumer, n: usize) -> Vec<Delivery> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(next_delivery(consumer).await);
    }
    out
}

/// Assert that a consumer receives nothing for [`QUIET`].
pub async fn assert_no_delivery(consumer: &mut Consumer) {
    if let Ok(Some(item)) = tokio::time::timeout(QUIET, consumer.next()).await {
        match item {
            Ok(d) => panic!(
                "unexpected delivery: tag {} body {:?}",
                d.delivery_tag,
                String::from_utf8_lossy(&d.data)
            ),
            Err(e) => panic!("unexpected consumer error: {e:?}"),
        }
    }
}

/// Drain a queue with basic.get (no-ack) and return the bodies as strings.
pub async fn get_all(ch: &Channel, queue: &str) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(m) = ch
        .basic_get(
            queue.into(),
            lapin::options::BasicGetOptions { no_ack: true },
        )
        .await
        .expect("basic.get")
    {
        out.push(String::from_utf8_lossy(&m.delivery.data).into_owned());
    }
    out
}

/// At most 20 numbers of a list, and its length.
pub fn list<N: ToString>(numbers: &[N]) -> String {
    let shown: Vec<String> = numbers.iter().take(20).map(N::to_string).collect();
    let more = if numbers.len() > 20 { ", ..." } else { "" };
    format!("{} message(s): {}{more}", numbers.len(), shown.join(", "))
}

/// Bodies of deliveries as strings.
pub fn bodies(ds: &[Delivery]) -> Vec<String> {
    ds.iter()
        .map(|d| String::from_utf8_lossy(&d.data).into_owned())
        .collect()
}

/// Wait until a consumer-less queue holds `n` messages (passive declare).
pub async fn wait_for_count(ch: &Channel, queue: &str, n: u32) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut count = 0;
    while std::time::Instant::now() < deadline {
        count = ready_count(ch, queue).await.expect("passive declare");
        if count == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("queue {queue} never reached {n} messages within 10 s (holds {count})");
}

/// The next channel error reported on a connection's event stream (lapin
/// reports a server-initiated Channel.Close there once it has answered it).
pub async fn next_channel_error(
    events: &mut (impl futures_lite::Stream<Item = lapin::Event> + Unpin),
) -> lapin::Error {
    let deadline = Duration::from_secs(5);
    loop {
        match tokio::time::timeout(deadline, events.next()).await {
            Ok(Some(lapin::Event::Error(e))) => return e,
            Ok(Some(_)) => continue,
            Ok(None) => panic!("event stream ended"),
            Err(_) => panic!("no channel error within {deadline:?}"),
        }
    }
}

/// A port free on 127.0.0.1 right now (for a listener that cannot be
/// given port 0, where 0 means "off").
///
/// Taken below Linux's ephemeral range (32768 and up): a port the kernel
/// handed out for `:0` could be handed out again to another test's AMQP
/// listener before this one binds it. A per-process counter keeps this
/// binary's tests apart; the pid spreads concurrent binaries.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 20_000 + (std::process::id() % 60) as u16 * 200;
    for _ in 0..2_000 {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed) % 12_000;
        let port = 20_000 + (base - 20_000 + offset) % 12_000;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 20000..32000")
}

/// Sleep into the next whole second and return it (Unix seconds): stream
/// timestamps are seconds, so messages published after this are the
/// first at or after the returned time.
#[allow(dead_code)]
pub async fn next_second() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970");
    tokio::time::sleep(Duration::from_millis(
        1_050 - u64::from(now.subsec_millis()),
    ))
    .await;
    now.as_secs() + 1
}
