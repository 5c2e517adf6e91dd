//! Crash safety of the durable store: the `warren` binary runs as a child
//! process while one channel publishes persistent messages with confirms
//! and another consumes them with manual acks; the child is killed with
//! SIGKILL at a random moment and restarted on the same data directory,
//! many times in a row. After every restart each confirmed message that was
//! not durably acked is there exactly once, no durably acked message comes
//! back, nothing unknown appears, and the order is kept. At the end the
//! queue is drained, crashed once more, and must come back empty with its
//! disk space released. Runs with `fsync = "always"` and `fsync = "never"`
//! (a process kill does not lose what was written, so the checks are the
//! same). The random seed is printed; `WARREN_CRASH_SEED` replays it.

mod common;

use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use common::child::{connect, ChildBroker, STEP};
use common::disk::{wait_for_disk_below, DataDir};
use common::*;
use futures_lite::StreamExt;
use lapin::message::Delivery;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{Channel, Confirmation, Connection, Consumer};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Kill-and-restart cycles per run (the issue asks for at least 10).
const CYCLES: usize = 12;
/// Upper bound for a whole run.
const RUN_BOUND: Duration = Duration::from_secs(120);
/// Small segments, so that every cycle writes (and deletes) several.
const SEGMENT_BYTES: u64 = 64 * 1024;
/// Publishes awaiting their confirm at most.
const CONFIRM_WINDOW: usize = 64;
/// Publishes per cycle at most.
const PUBLISH_PER_CYCLE: u64 = 2500;
/// The publisher waits while the queue may hold more than this many
/// messages (keeps the backlog, and the checks after restarts, bounded).
const MAX_BACKLOG: usize = 4000;
/// The consumer's prefetch.
const PREFETCH: u16 = 100;
/// Deliveries the consumer keeps unacked at most (below the prefetch).
const HELD_MAX: usize = 40;
/// The durable queue under test.
const QUEUE: &str = "crash-test";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmed_messages_survive_kill_9_with_fsync_always() {
    bounded(RUN_BOUND, kill_restart_cycles("always")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmed_messages_survive_kill_9_with_fsync_never() {
    bounded(RUN_BOUND, kill_restart_cycles("never")).await
}

async fn kill_restart_cycles(fsync: &str) {
    client_log();
    let seed = seed();
    eprintln!("crash test, fsync = {fsync}: seed {seed} (replay with WARREN_CRASH_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = DataDir::new();
    let config = dir.write_config(&format!(
        "fsync = \"{fsync}\"\nsegment_bytes = {SEGMENT_BYTES}\n"
    ));
    let ledger = Arc::new(Mutex::new(Ledger::default()));

    for cycle in 0..CYCLES {
        let mut broker = ChildBroker::start(dir.path(), &config);
        let conn = connect(broker.port).await;
        if cycle == 0 {
            declare_durable_queue(&conn).await;
        }
        let recovered = read_recovered(&conn).await;
        lock(&ledger).check_recovered(cycle, &recovered.numbers);
        // Hand the recovered messages back to the queue (in place, redelivered)
        // for the cycle's consumer.
        let _ = recovered.channel.close(200, "verified".into()).await;

        let publisher = tokio::spawn(publish_until_killed(
            open_channel(&conn).await,
            ledger.clone(),
        ));
        let consumer = tokio::spawn(consume_until_killed(
            open_channel(&conn).await,
            ledger.clone(),
            StdRng::seed_from_u64(rng.gen()),
        ));
        let uptime = Duration::from_millis(rng.gen_range(100..=600));
        tokio::time::sleep(uptime).await;
        broker.kill();
        publisher.abort();
        consumer.abort();
        let _ = publisher.await;
        let _ = consumer.await;
        drop(conn);
        broker.assert_no_panic();
        eprintln!(
            "cycle {cycle}: recovered {}, killed after {uptime:?}; {}",
            recovered.numbers.len(),
            lock(&ledger).summary()
        );
    }

    // Drain everything with durable acks, crash once more: the queue must
    // come back empty, and the acked segments must be gone from disk.
    let mut broker = ChildBroker::start(dir.path(), &config);
    let conn = connect(broker.port).await;
    let recovered = read_recovered(&conn).await;
    lock(&ledger).check_recovered(CYCLES, &recovered.numbers);
    if let Some(tag) = recovered.last_tag {
        lock(&ledger).acked.extend(&recovered.numbers);
        recovered
            .channel
            .basic_ack(tag, BasicAckOptions { multiple: true })
            .await
            .expect("ack everything");
        let left = ready_count(&recovered.channel, QUEUE)
            .await
            .expect("passive declare after acking everything");
        assert_eq!(left, 0, "messages left after acking everything");
        lock(&ledger).durably_acked.extend(&recovered.numbers);
    }
    broker.kill();
    drop(conn);

    let broker = ChildBroker::start(dir.path(), &config);
    let conn = connect(broker.port).await;
    let recovered = read_recovered(&conn).await;
    lock(&ledger).check_recovered(CYCLES + 1, &recovered.numbers);
    assert!(
        recovered.numbers.is_empty(),
        "the drained queue came back with {} messages",
        recovered.numbers.len()
    );
    let totals = lock(&ledger).totals;
    assert!(
        totals.confirmed >= 200 && totals.durably_acked >= 100,
        "too little happened for the run to mean anything: {totals:?}"
    );
    let queues = dir.queues();
    let used = wait_for_disk_below(&queues, 1024 * 1024, Duration::from_secs(5)).await;
    eprintln!(
        "done: {totals:?}; {used} bytes left under {}",
        queues.display()
    );
    broker.assert_no_panic();
}

// ---------------------------------------------------------------------------
// What the test knows about the queue.

/// The test's knowledge of what the queue must, may and must not hold.
/// "Since the restart" sets are cleared by every successful check.
#[derive(Default)]
struct Ledger {
    /// The next message number to publish.
    next: u64,
    /// What the queue held at the last restart (checked then).
    carried: BTreeSet<u64>,
    /// Published since the restart (the broker may or may not have them).
    published: BTreeSet<u64>,
    /// Confirmed by the broker since the restart: must survive.
    confirmed: BTreeSet<u64>,
    /// Acks sent since the restart (may or may not have been processed).
    acked: BTreeSet<u64>,
    /// Acks followed by a completed round trip on their channel: must not
    /// come back.
    durably_acked: BTreeSet<u64>,
    /// Running totals, to make sure a run is not vacuous.
    totals: Totals,
}

#[derive(Clone, Copy, Debug, Default)]
struct Totals {
    published: usize,
    confirmed: usize,
    durably_acked: usize,
    recovered: usize,
}

impl Ledger {
    /// Check what the queue holds after a restart (in delivery order)
    /// against what was known when the broker died, then start a new cycle
    /// with it as the queue's contents.
    fn check_recovered(&mut self, cycle: usize, recovered: &[u64]) {
        if let Some(w) = recovered.windows(2).find(|w| w[0] >= w[1]) {
            panic!(
                "restart {cycle}: messages out of order or duplicated: {} came before {}",
                w[0], w[1]
            );
        }
        let got: BTreeSet<u64> = recovered.iter().copied().collect();
        let resurrected: Vec<u64> = got.intersection(&self.durably_acked).copied().collect();
        assert!(
            resurrected.is_empty(),
            "restart {cycle}: durably acked messages came back: {}",
            list(&resurrected)
        );
        let unknown: Vec<u64> = got
            .iter()
            .filter(|n| !self.carried.contains(n) && !self.published.contains(n))
            .copied()
            .collect();
        assert!(
            unknown.is_empty(),
            "restart {cycle}: messages that were never published, or were already gone \
             at an earlier restart: {}",
            list(&unknown)
        );
        let lost: Vec<u64> = self
            .carried
            .union(&self.confirmed)
            .filter(|n| !self.acked.contains(n) && !got.contains(n))
            .copied()
            .collect();
        assert!(
            lost.is_empty(),
            "restart {cycle}: confirmed, unacked messages lost: {}",
            list(&lost)
        );
        self.totals.recovered += got.len();
        self.carried = got;
        self.published.clear();
        self.confirmed.clear();
        self.acked.clear();
        self.durably_acked.clear();
    }

    /// Take the next message number.
    fn publishing(&mut self) -> u64 {
        let n = self.next;
        self.next += 1;
        self.published.insert(n);
        self.totals.published += 1;
        n
    }

    /// How many messages the queue may hold at most.
    fn backlog(&self) -> usize {
        (self.carried.len() + self.published.len()).saturating_sub(self.acked.len())
    }

    fn summary(&self) -> String {
        format!(
            "this cycle: {} published, {} confirmed, {} acked, {} durably acked",
            self.published.len(),
            self.confirmed.len(),
            self.acked.len(),
            self.durably_acked.len()
        )
    }
}

fn lock(ledger: &Mutex<Ledger>) -> MutexGuard<'_, Ledger> {
    ledger
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

// ---------------------------------------------------------------------------
// Messages.

/// The body of message `n`: its number, then filler of a length that varies
/// with `n` (0–700 bytes), so that records straddle segment ends.
fn body(n: u64) -> Vec<u8> {
    let mut b = format!("crash:{n:012}:").into_bytes();
    let filler = (n * 37 % 701) as usize;
    b.extend((0..filler).map(|i| b'a' + ((n as usize + i) % 26) as u8));
    b
}

/// The number in a body.
fn number(body: &[u8]) -> Option<u64> {
    let digits = body.strip_prefix(b"crash:")?.get(..12)?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// The number of a recovered delivery, after checking that it arrived
/// intact.
fn check_delivery(d: &Delivery) -> u64 {
    let Some(n) = number(&d.data) else {
        panic!(
            "unknown body after restart: {:?}",
            String::from_utf8_lossy(&d.data[..d.data.len().min(60)])
        );
    };
    assert!(
        d.data == body(n),
        "message {n} came back with a different body"
    );
    assert_eq!(
        d.properties.delivery_mode(),
        &Some(2),
        "message {n} lost its delivery mode"
    );
    assert_eq!(d.routing_key.as_str(), QUEUE, "message {n}: routing key");
    n
}

// ---------------------------------------------------------------------------
// The publisher and the consumer of a cycle (both run until the broker dies).

/// Publish numbered persistent messages with at most [`CONFIRM_WINDOW`]
/// unconfirmed, recording publishes before they are sent and confirms when
/// they arrive.
async fn publish_until_killed(ch: Channel, ledger: Arc<Mutex<Ledger>>) {
    if ch
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .is_err()
    {
        return;
    }
    let mut window = VecDeque::with_capacity(CONFIRM_WINDOW);
    for _ in 0..PUBLISH_PER_CYCLE {
        if window.len() == CONFIRM_WINDOW {
            let (n, confirm) = window.pop_front().expect("a full window");
            if !record_confirm(&ledger, n, confirm.await) {
                return;
            }
        }
        while lock(&ledger).backlog() > MAX_BACKLOG {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let n = lock(&ledger).publishing();
        let sent = ch
            .basic_publish(
                "".into(),
                QUEUE.into(),
                BasicPublishOptions::default(),
                &body(n),
                persistent(),
            )
            .await;
        match sent {
            Ok(confirm) => window.push_back((n, confirm)),
            Err(_) => return,
        }
    }
    while let Some((n, confirm)) = window.pop_front() {
        if !record_confirm(&ledger, n, confirm.await) {
            return;
        }
    }
}

/// Record a confirm; false once the broker is gone.
fn record_confirm(ledger: &Mutex<Ledger>, n: u64, confirm: lapin::Result<Confirmation>) -> bool {
    match confirm {
        Ok(Confirmation::Ack(_)) => {
            let mut l = lock(ledger);
            l.confirmed.insert(n);
            l.totals.confirmed += 1;
            true
        }
        // A nack promises nothing either way.
        Ok(_) => true,
        Err(_) => false,
    }
}

/// Consume with manual acks: most deliveries are acked at once, some are
/// held back and acked later (out of order), a few stay unacked at the kill.
/// Every so often a round trip on the channel makes the acks before it
/// durable; now and then the consumer pauses so that a backlog builds up.
async fn consume_until_killed(ch: Channel, ledger: Arc<Mutex<Ledger>>, mut rng: StdRng) {
    let Ok(mut consumer) = start_consumer(&ch).await else {
        return;
    };
    let mut held: VecDeque<(u64, u64)> = VecDeque::new();
    let mut unsynced: Vec<u64> = Vec::new();
    let mut sync_after = rng.gen_range(1..40);
    while let Some(Ok(d)) = consumer.next().await {
        let Some(n) = number(&d.data) else {
            // Unknown bodies are reported by the check after the restart.
            continue;
        };
        let mut to_ack = Vec::new();
        if rng.gen_bool(0.25) {
            held.push_back((n, d.delivery_tag));
            if held.len() > HELD_MAX {
                to_ack.extend(held.pop_front());
            }
        } else {
            to_ack.push((n, d.delivery_tag));
        }
        for (n, tag) in to_ack {
            lock(&ledger).acked.insert(n);
            if ch.basic_ack(tag, BasicAckOptions::default()).await.is_err() {
                return;
            }
            unsynced.push(n);
        }
        if unsynced.len() >= sync_after {
            // Everything sent on the channel before this round trip has
            // been processed once it completes.
            if ready_count(&ch, QUEUE).await.is_err() {
                return;
            }
            let mut l = lock(&ledger);
            l.totals.durably_acked += unsynced.len();
            l.durably_acked.extend(unsynced.drain(..));
            sync_after = rng.gen_range(1..40);
        }
        if rng.gen_bool(0.002) {
            tokio::time::sleep(Duration::from_millis(rng.gen_range(10..60))).await;
        }
    }
}

async fn start_consumer(ch: &Channel) -> lapin::Result<Consumer> {
    ch.basic_qos(PREFETCH, BasicQosOptions::default()).await?;
    ch.basic_consume(
        QUEUE.into(),
        "cycle".into(),
        BasicConsumeOptions::default(),
        FieldTable::default(),
    )
    .await
}

// ---------------------------------------------------------------------------
// Talking to the broker.

async fn open_channel(conn: &Connection) -> Channel {
    conn.create_channel().await.expect("open channel")
}

async fn declare_durable_queue(conn: &Connection) {
    let ch = open_channel(conn).await;
    declare_durable(&ch, QUEUE).await;
    let _ = ch.close(200, "declared".into()).await;
}

/// What a restarted broker holds, delivered (unacked) on `channel`.
struct Recovered {
    channel: Channel,
    numbers: Vec<u64>,
    last_tag: Option<u64>,
}

/// Consume everything the queue holds right after a restart (nothing else
/// publishes yet), checking each message, and make sure nothing beyond the
/// reported count follows.
async fn read_recovered(conn: &Connection) -> Recovered {
    let channel = open_channel(conn).await;
    let count = ready_count(&channel, QUEUE)
        .await
        .unwrap_or_else(|e| panic!("the durable queue is gone after a restart: {e}"));
    let mut consumer = channel
        .basic_consume(
            QUEUE.into(),
            "verify".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("basic.consume");
    let mut numbers = Vec::with_capacity(count as usize);
    let mut last_tag = None;
    for i in 0..count {
        let Some(d) = next_within(&mut consumer, STEP).await else {
            panic!("only {i} of the {count} recovered messages were delivered within {STEP:?}");
        };
        numbers.push(check_delivery(&d));
        last_tag = Some(d.delivery_tag);
    }
    if let Some(d) = next_within(&mut consumer, Duration::from_millis(200)).await {
        panic!(
            "the queue reported {count} messages but delivered more: {:?}",
            number(&d.data)
        );
    }
    // Cancel before the caller closes the channel: a dropped lapin
    // consumer sends its basic.cancel from another task, which can land
    // after the channel.close, and a method on a closed channel is a
    // connection error (504, as in RabbitMQ).
    channel
        .basic_cancel("verify".into(), BasicCancelOptions::default())
        .await
        .expect("basic.cancel");
    Recovered {
        channel,
        numbers,
        last_tag,
    }
}

/// The next delivery within `limit`, or None; panics on consumer errors.
async fn next_within(consumer: &mut Consumer, limit: Duration) -> Option<Delivery> {
    match tokio::time::timeout(limit, consumer.next()).await {
        Ok(Some(Ok(d))) => Some(d),
        Ok(Some(Err(e))) => panic!("consumer error: {e:?}"),
        Ok(None) => panic!("consumer ended"),
        Err(_) => None,
    }
}

// ---------------------------------------------------------------------------
// Seeds and logs.

/// lapin's own warnings and errors (why it dropped a connection) in the
/// test's output.
fn client_log() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("lapin=warn")
        .with_test_writer()
        .try_init();
}

fn seed() -> u64 {
    match std::env::var("WARREN_CRASH_SEED") {
        Ok(s) => s.parse().expect("WARREN_CRASH_SEED must be a number"),
        Err(_) => rand::random(),
    }
}
