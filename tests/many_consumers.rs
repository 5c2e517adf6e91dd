//! Tens of thousands of consumers on one queue, each waiting for its one
//! unit of prefetch credit: publishing to that queue and cancelling them
//! one by one must cost about what it costs without them (the consumer
//! set parks consumers without credit instead of scanning them per
//! message, and finds a cancelled one by id). Compared by the broker's
//! CPU time against a baseline measured in the same run, so the check
//! does not depend on the machine's speed: before, each publish scanned
//! all 20,000 consumers (~1 ms of debug-build CPU per publish against
//! ~40 µs) and each cancel searched and re-scanned them.

mod common;
// Shared with tests/hostile.rs, which uses the rest of it.
#[allow(dead_code)]
#[path = "common/hostile.rs"]
mod hostile;

use std::time::Duration;

use common::bounded;
use common::raw::{basic_cancel, basic_qos};
use hostile::*;
use lapin::types::FieldTable;
use tokio::io::AsyncWriteExt;

const CONSUMERS: usize = 20_000;
const BURST: usize = 20_000;

/// User+system CPU time of a process, ms (from /proc, 10 ms ticks).
fn cpu_ms(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces), from field 3.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<u64> = rest
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    let ticks = fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0);
    ticks * 10
}

/// Ready messages and consumers of `queue` (passive declare).
async fn counts(w: &mut Wire, queue: &str) -> (u32, u32) {
    w.send(&queue_declare_args(1, queue, 1, &[0, 0, 0, 0]))
        .await;
    let ok = w.expect_method(1, 50, 11).await;
    let rest = &ok[ok[0] as usize + 1..];
    let n = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    (n(&rest[..4]), n(&rest[4..8]))
}

/// Poll until `done` holds for `queue`'s counts.
async fn wait_for(w: &mut Wire, queue: &str, done: impl Fn((u32, u32)) -> bool) {
    loop {
        if done(counts(w, queue).await) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// CPU the broker spends routing `BURST` messages to `queue` until they
/// are all ready there (`before` were ready already).
async fn publish_cpu(h: &Hostile, w: &mut Wire, queue: &str, before: u32) -> u64 {
    let cpu = cpu_ms(h.pid);
    w.send(&message(1, "", queue, (0, &[]), 10).repeat(BURST))
        .await;
    wait_for(w, queue, |(ready, _)| {
        ready as usize >= before as usize + BURST
    })
    .await;
    cpu_ms(h.pid) - cpu
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_without_credit_cost_nothing_per_publish_or_cancel() {
    let _cpu = CPU.write().await;
    bounded(Duration::from_secs(240), async {
        let mut h = Hostile::start("");
        let _c = lapin_queue(h.port(), "crowded", FieldTable::default()).await;
        let _q = lapin_queue(h.port(), "quiet", FieldTable::default()).await;
        let mut crowd = Wire::login(h.port()).await;
        crowd.send(&basic_qos(1, 1)).await;
        crowd.expect_method(1, 60, 11).await;
        let consume_cpu = cpu_ms(h.pid);
        crowd.consume_many("crowded", CONSUMERS).await;
        let consume_cpu = cpu_ms(h.pid) - consume_cpu;
        let (drained, mut crowd) = crowd.split();
        // Use up every consumer's credit; one message stays ready.
        let mut publisher = Wire::login(h.port()).await;
        let fill = message(1, "", "crowded", (0, &[]), 10).repeat(CONSUMERS + 1);
        publisher.send(&fill).await;
        wait_for(&mut publisher, "crowded", |(ready, _)| ready == 1).await;

        let quiet = publish_cpu(&h, &mut publisher, "quiet", 0).await;
        let crowded = publish_cpu(&h, &mut publisher, "crowded", 1).await;
        eprintln!(
            "{BURST} publishes: {crowded} ms of broker CPU to a queue with {CONSUMERS} \
             consumers without credit, {quiet} ms to one without consumers"
        );
        assert!(
            crowded <= 3 * quiet + 500,
            "publishing cost {crowded} ms with credit-less consumers, {quiet} ms without"
        );

        let cancel_cpu = cpu_ms(h.pid);
        let cancels: Vec<u8> = (0..CONSUMERS)
            .flat_map(|i| basic_cancel(1, &format!("c{i}")))
            .collect();
        crowd.write_all(&cancels).await.expect("send cancels");
        wait_for(&mut publisher, "crowded", |(_, consumers)| consumers == 0).await;
        let cancel_cpu = cpu_ms(h.pid) - cancel_cpu;
        eprintln!(
            "{CONSUMERS} consumers: {consume_cpu} ms of broker CPU to add, {cancel_cpu} ms \
             to cancel one by one"
        );
        assert!(
            cancel_cpu <= 3 * consume_cpu + 500,
            "cancelling cost {cancel_cpu} ms, consuming {consume_cpu} ms"
        );
        drop(crowd);
        drained.abort();
        h.assert_serves().await;
    })
    .await
}
