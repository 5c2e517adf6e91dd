//! Stress for parked consumers (review of the O(log n) consumer set):
//! consumers that cannot take a message (per-consumer prefetch, channel-wide
//! qos, full connection) are parked and must be woken when they can take
//! again. Random churn (acks, multiple acks, nack/reject with and without
//! requeue, cancel and re-consume, global qos changes, transactions with
//! commit and rollback, channel close and reopen) runs while publishers
//! fill several queues (one of them single-active-consumer) shared by
//! several channels on several connections, with mixed x-priority. Once
//! the churn stops and the consumers left ack promptly, every message must
//! be settled within a bound (a lost wake-up leaves messages ready next to
//! an idle consumer forever), and no delivery may ever exceed a
//! consumer's prefetch or its channel's global limit.
//!
//! Seeded (`STRESS_SEED=n` runs one seed only); each run is bounded.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use futures_lite::StreamExt;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::mpsc;

#[path = "consumer_stress/driver.rs"]
mod driver;

use driver::*;

async fn declare_all(ch: &Channel, queues: &[String]) {
    for (i, q) in queues.iter().enumerate() {
        let args = if i == 0 {
            table(&[("x-single-active-consumer", AMQPValue::Boolean(true))])
        } else {
            FieldTable::default()
        };
        ch.queue_declare(q.as_str().into(), QueueDeclareOptions::default(), args)
            .await
            .expect("declare");
    }
}

async fn stress(seed: u64) {
    let broker = Broker::start().await;
    let mut rng = StdRng::seed_from_u64(seed);
    let queues: Vec<String> = (0..4).map(|i| uniq(&format!("stress{i}"))).collect();
    let (admin_conn, admin) = broker.channel().await;
    declare_all(&admin, &queues).await;
    let shared = Arc::new(Shared {
        settled: Mutex::new(HashSet::new()),
        violations: Mutex::new(Vec::new()),
        phase: AtomicU8::new(CHAOS),
        queues: queues.clone(),
        history: Mutex::new(Default::default()),
    });

    // 3 connections x 2 channels; one channel transactional, two with
    // channel-wide qos only.
    let mut drivers = Vec::new();
    let mut conns = Vec::new();
    for c in 0..3 {
        let conn = Arc::new(broker.connect().await);
        conns.push(conn.clone());
        let mut events = conn.events_listener();
        let sh = shared.clone();
        tokio::spawn(async move {
            while let Some(ev) = events.next().await {
                if let lapin::Event::Error(e) = ev {
                    sh.violation(format!("conn{c}: server error: {e}"));
                }
            }
        });
        for k in 0..2 {
            let n = c * 2 + k;
            let (tx, rx) = mpsc::unbounded_channel();
            let global_only = n == 1 || n == 4;
            let mut d = Driver {
                name: format!("ch{n}"),
                conn: conn.clone(),
                ch: conn.create_channel().await.expect("placeholder"),
                epoch: 0,
                rng: StdRng::seed_from_u64(rng.gen()),
                shared: shared.clone(),
                tx,
                cons: Vec::new(),
                held: BTreeMap::new(),
                tx_pending: Vec::new(),
                transactional: n == 2,
                tx_tags: Vec::new(),
                global: if global_only {
                    rng.gen_range(1..=4)
                } else {
                    [0, 0, 2, 3][rng.gen_range(0..4)]
                },
                recent_globals: Vec::new(),
                consumer_prefetch: 0,
                global_only,
                prefix: 0,
                seen_above: BTreeSet::new(),
                next_tag_n: 0,
            };
            let _ = d.ch.close(200, "placeholder".into()).await;
            d.setup_channel().await;
            // Extras first (so the single-active queue's first consumer
            // can be cancelled), then one permanent consumer on a queue,
            // so every queue keeps consumers to the end.
            for _ in 0..rng.gen_range(1..=3) {
                let q = rng.gen_range(0..queues.len());
                d.consume(q, false).await;
            }
            d.consume(n % queues.len(), true).await;
            if n < 2 {
                d.consume((n + 2) % queues.len(), true).await;
            }
            drivers.push((d, rx));
        }
    }
    let handles: Vec<_> = drivers
        .into_iter()
        .map(|(d, rx)| tokio::spawn(d.run(rx)))
        .collect();

    // Publishers.
    const PER_PUBLISHER: u64 = 1500;
    let mut pubs = Vec::new();
    for p in 0..2u64 {
        let (conn, ch) = broker.channel().await;
        let queues = queues.clone();
        let mut prng = StdRng::seed_from_u64(rng.gen());
        pubs.push(tokio::spawn(async move {
            for i in 0..PER_PUBLISHER {
                let id = p * 1_000_000 + i;
                let q = &queues[prng.gen_range(0..queues.len())];
                ch.basic_publish(
                    "".into(),
                    q.as_str().into(),
                    BasicPublishOptions::default(),
                    id.to_string().as_bytes(),
                    BasicProperties::default(),
                )
                .await
                .expect("publish");
                if i % 20 == 0 {
                    tokio::time::sleep(Duration::from_millis(prng.gen_range(0..4))).await;
                }
            }
            drop(conn);
        }));
    }
    for p in pubs {
        p.await.expect("publisher");
    }
    // A little more churn with nothing coming in.
    tokio::time::sleep(Duration::from_millis(500)).await;
    shared.phase.store(DRAIN, Ordering::Release);

    let total = 2 * PER_PUBLISHER as usize;
    let drained = poll(Duration::from_secs(10), Duration::from_millis(50), || {
        (shared.settled.lock().unwrap().len() >= total).then_some(())
    })
    .await;
    let mut report = String::new();
    if drained.is_none() {
        let settled = shared.settled.lock().unwrap().len();
        report.push_str(&format!(
            "seed {seed}: only {settled} of {total} settled 10 s after the churn stopped\n"
        ));
        for q in &queues {
            let ready = ready_count(&admin, q).await.unwrap_or(u32::MAX);
            let consumers = passive_declare(&admin, q)
                .await
                .map(|d| d.consumer_count())
                .unwrap_or(u32::MAX);
            report.push_str(&format!("  {q}: {ready} ready, {consumers} consumers\n"));
        }
    }
    if drained.is_none() {
        let settled = shared.settled.lock().unwrap().clone();
        let history = shared.history.lock().unwrap();
        let mut n = 0;
        for p in 0..2u64 {
            for i in 0..PER_PUBLISHER {
                let id = p * 1_000_000 + i;
                if !settled.contains(&id) && n < 15 {
                    n += 1;
                    report.push_str(&format!("  unsettled {id}: {:?}\n", history.get(&id)));
                }
            }
        }
    }
    shared.phase.store(STOP, Ordering::Release);
    for h in handles {
        let d = h.await.expect("driver");
        if drained.is_none() {
            report.push_str(&format!(
                "  {} global {} held {} tx {}: {}\n",
                d.name,
                d.global,
                d.held.len(),
                d.tx_pending.len(),
                d.cons
                    .iter()
                    .filter(|c| c.live)
                    .map(|c| format!(
                        "{}(q{} pf{} prio{} noack{} count{})",
                        c.tag, c.queue, c.prefetch, c.priority, c.no_ack, c.count
                    ))
                    .collect::<Vec<_>>()
                    .join(" ")
            ));
        }
    }
    let violations = shared.violations.lock().unwrap().clone();
    assert!(violations.is_empty(), "seed {seed}: {violations:#?}");
    assert!(drained.is_some(), "{report}");
    for q in &queues {
        assert_eq!(
            ready_count(&admin, q).await.expect("count"),
            0,
            "{q} drained"
        );
    }
    drop(conns);
    drop(admin_conn);
}

fn seeds(default: &[u64]) -> Vec<u64> {
    match std::env::var("STRESS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        Some(s) => vec![s],
        None => default.to_vec(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parked_consumers_always_drain_the_queues_a() {
    for seed in seeds(&[1]) {
        bounded(Duration::from_secs(40), stress(seed)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parked_consumers_always_drain_the_queues_b() {
    for seed in seeds(&[2]) {
        bounded(Duration::from_secs(40), stress(seed)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parked_consumers_always_drain_the_queues_c() {
    for seed in seeds(&[3]) {
        bounded(Duration::from_secs(40), stress(seed)).await;
    }
}

/// basic.qos with the global flag.
fn qos_global(channel: u16, prefetch_count: u16) -> Vec<u8> {
    let mut a = 0u32.to_be_bytes().to_vec();
    a.extend_from_slice(&prefetch_count.to_be_bytes());
    a.push(1);
    common::raw::method(channel, 60, 10, &a)
}

fn basic_ack_multiple(channel: u16, tag: u64) -> Vec<u8> {
    let mut a = tag.to_be_bytes().to_vec();
    a.push(1);
    common::raw::method(channel, 60, 80, &a)
}

/// A connection whose mailbox fills and drains again and again (its client
/// stops reading for a while, then reads a burst): its consumers, no-ack
/// and manual-ack under a channel-wide limit, on two queues that another
/// connection's consumer also drains (so a queue may go empty while they
/// wait for their connection), must get every message in the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn consumers_of_a_connection_that_fills_and_drains_get_everything() {
    use common::raw::{basic_consume, Raw, DELIVER};
    bounded(Duration::from_secs(60), async {
        let broker = Broker::start().await;
        let (_admin_conn, admin) = broker.channel().await;
        let qa = uniq("mailbox-a");
        let qb = uniq("mailbox-b");
        declare_queue(&admin, &qa).await;
        declare_queue(&admin, &qb).await;

        let mut r = Raw::handshake(&broker).await;
        r.open_channel(1).await;
        r.open_channel(2).await;
        r.send(&basic_consume(1, &qa, "na", true)).await;
        r.expect_method(1, 60, 21).await;
        r.send(&qos_global(2, 300)).await;
        r.expect_method(2, 60, 11).await;
        r.send(&basic_consume(2, &qa, "ma", false)).await;
        r.expect_method(2, 60, 21).await;
        r.send(&basic_consume(2, &qb, "mb", false)).await;
        r.expect_method(2, 60, 21).await;

        // Another connection's slow consumer on queue a.
        let (lconn, lch) = broker.channel().await;
        lch.basic_qos(1, BasicQosOptions::default()).await.unwrap();
        let mut lc = consume(&lch, &qa).await;
        let seen = Arc::new(Mutex::new(HashSet::<u64>::new()));
        let lseen = seen.clone();
        let slow = tokio::spawn(async move {
            while let Some(Ok(d)) = lc.next().await {
                lseen.lock().unwrap().insert(body_id(&d.data));
                tokio::time::sleep(Duration::from_micros(300)).await;
                d.ack(BasicAckOptions::default()).await.unwrap();
            }
            drop(lconn);
        });

        const TOTAL: u64 = 16_000;
        let mut praw = Raw::handshake(&broker).await;
        praw.open_channel(1).await;
        let (qa2, qb2) = (qa.clone(), qb.clone());
        let publisher = tokio::spawn(async move {
            use common::raw::{basic_publish, content_header, frame, FRAME_BODY};
            for chunk in 0..TOTAL / 500 {
                let mut out = Vec::new();
                for i in chunk * 500..(chunk + 1) * 500 {
                    let mut body = format!("{i:>12}").into_bytes();
                    body.resize(4096, b'x');
                    let q = if i % 3 == 0 { &qb2 } else { &qa2 };
                    out.extend(basic_publish(1, "", q));
                    out.extend(content_header(1, body.len() as u64));
                    out.extend(frame(FRAME_BODY, 1, &body));
                }
                praw.send(&out).await;
            }
            // A round trip: everything before it was routed.
            praw.send(&common::raw::queue_declare(1, "mailbox-sync"))
                .await;
            praw.expect_method(1, 50, 11).await;
        });

        // Read in bursts, stopping for a while between them.
        let mut unacked_ch2 = 0u64;
        let mut last_tag_ch2 = 0u64;
        let mut burst = 0u64;
        let started = Instant::now();
        let mut published_done_at: Option<Instant> = None;
        loop {
            if seen.lock().unwrap().len() as u64 >= TOTAL {
                break;
            }
            if publisher.is_finished() && published_done_at.is_none() {
                published_done_at = Some(Instant::now());
            }
            if let Some(t) = published_done_at {
                let settled = seen.lock().unwrap().len();
                assert!(
                    t.elapsed() < Duration::from_secs(15),
                    "stall: {settled} of {TOTAL} delivered 15 s after publishing ended; \
                     queue a {} ready, queue b {} ready",
                    ready_count(&admin, &qa).await.unwrap_or(u32::MAX),
                    ready_count(&admin, &qb).await.unwrap_or(u32::MAX),
                );
            }
            let paused = published_done_at.is_none() && started.elapsed() < Duration::from_secs(20);
            if paused && burst >= 2500 {
                burst = 0;
                tokio::time::sleep(Duration::from_millis(700)).await;
            }
            let f = match tokio::time::timeout(Duration::from_millis(200), r.next()).await {
                Ok(f) => f,
                Err(_) => {
                    // Quiet: ack what channel 2 holds, if anything.
                    if unacked_ch2 > 0 {
                        r.send(&basic_ack_multiple(2, last_tag_ch2)).await;
                        unacked_ch2 = 0;
                    }
                    continue;
                }
            };
            if f.method() != Some(DELIVER) {
                continue;
            }
            let args = &f.payload[4..];
            let tag_len = args[0] as usize;
            let tag = u64::from_be_bytes(args[1 + tag_len..9 + tag_len].try_into().unwrap());
            let body = r.skip_content().await;
            seen.lock().unwrap().insert(body_id(&body));
            burst += 1;
            if f.channel == 2 {
                unacked_ch2 += 1;
                last_tag_ch2 = tag;
                if unacked_ch2 >= 100 {
                    r.send(&basic_ack_multiple(2, tag)).await;
                    unacked_ch2 = 0;
                }
            }
        }
        publisher.await.unwrap();
        slow.abort();
    })
    .await
}

fn body_id(body: &[u8]) -> u64 {
    std::str::from_utf8(&body[..12])
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}
