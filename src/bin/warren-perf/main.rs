//! `warren-perf`: a load generator for any AMQP 0-9-1 broker (Warren,
//! RabbitMQ, ...), in the spirit of RabbitMQ's PerfTest.
//!
//! It declares its own exchange and queues, runs producers and consumers on
//! separate connections for a fixed time (or publishes a backlog and then
//! drains it), prints a summary, and with `--json` one JSON line. Latency is
//! measured from a timestamp in each body. Its own CPU use is reported so a
//! saturated client can be told from a saturated broker.

mod client;
mod confirms;
mod options;
mod roles;
mod stats;
mod tls;
mod topology;

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use client::Target;
use options::Options;
use stats::{process_cpu_s, Counters, Latencies, Percentiles};

fn main() -> ExitCode {
    let opts = match options::parse(std::env::args().skip(1)) {
        Ok(Some(o)) => o,
        Ok(None) => {
            print!("{}", options::USAGE);
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("warren-perf: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(opts.threads)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("warren-perf: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(opts)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("warren-perf: {e}");
            ExitCode::FAILURE
        }
    }
}

/// What a run measured.
#[derive(Debug, Default)]
struct Report {
    publish_rate: f64,
    consume_rate: f64,
    published: u64,
    confirmed: u64,
    nacked: u64,
    returned: u64,
    consumed: u64,
    latency: Percentiles,
    elapsed_s: f64,
    client_cpu_pct: f64,
    idle_connected: Option<(usize, usize)>,
}

async fn run(opts: Options) -> Result<(), String> {
    let target = Target::parse(&opts.url, opts.tls_ca.as_deref())?;
    if opts.idle_connections > 0 {
        let report = run_idle(&target, &opts).await?;
        print_report(&opts, &report);
        return Ok(());
    }
    let queues = topology::declare(&target, &opts).await?;
    let result = if let Some(n) = opts.backlog {
        run_backlog(&target, &opts, &queues, n).await
    } else {
        run_timed(&target, &opts, &queues).await
    };
    let keep = opts.publish_only && opts.backlog.is_some();
    let cleanup = match keep {
        true => Ok(()),
        false => topology::delete(&target, &opts, &queues).await,
    };
    let report = result?;
    cleanup?;
    print_report(&opts, &report);
    Ok(())
}

fn spawn_consumers(
    target: &Target,
    opts: &Options,
    queues: &[String],
    counters: &Arc<Counters>,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<client::Result<Latencies>>> {
    (0..opts.consumers)
        .map(|i| {
            tokio::spawn(roles::consumer(
                target.clone(),
                queues[i % queues.len()].clone(),
                opts.ack_spec(),
                opts.consumer_args.clone(),
                counters.clone(),
                stop.clone(),
            ))
        })
        .collect()
}

fn spawn_producers(
    target: &Target,
    opts: &Options,
    limit_each: Option<u64>,
    counters: &Arc<Counters>,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<client::Result<()>>> {
    (0..opts.producers)
        .map(|_| {
            let mut spec = opts.publish_spec();
            spec.limit = limit_each;
            tokio::spawn(roles::producer(
                target.clone(),
                spec,
                counters.clone(),
                stop.clone(),
            ))
        })
        .collect()
}

async fn join_all<T>(
    handles: Vec<tokio::task::JoinHandle<client::Result<T>>>,
) -> Result<Vec<T>, String> {
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.map_err(|e| format!("task failed: {e}"))??);
    }
    Ok(out)
}

/// Producers and consumers together for `duration`; rates are measured
/// after a warm-up of a tenth of the run (at most 2 s).
async fn run_timed(target: &Target, opts: &Options, queues: &[String]) -> Result<Report, String> {
    let counters = Arc::new(Counters::default());
    let stop_consumers = Arc::new(AtomicBool::new(false));
    let stop_producers = Arc::new(AtomicBool::new(false));
    let consumers = spawn_consumers(target, opts, queues, &counters, &stop_consumers);
    // Give consumers time to register before publishing starts.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let producers = spawn_producers(target, opts, None, &counters, &stop_producers);
    let duration = Duration::from_secs_f64(opts.duration_s);
    let warmup = (duration / 10).min(Duration::from_secs(2));
    let cpu0 = process_cpu_s();
    let start = Instant::now();
    let mut warm = None;
    let mut last_progress = Instant::now();
    while start.elapsed() < duration {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if warm.is_none() && start.elapsed() >= warmup {
            warm = Some((Instant::now(), snapshot(&counters)));
        }
        if !opts.quiet && last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            progress(start, &counters);
        }
        if producers.iter().all(|h| h.is_finished()) && consumers.iter().all(|h| h.is_finished()) {
            break;
        }
    }
    let end = (Instant::now(), snapshot(&counters));
    let cpu1 = process_cpu_s();
    stop_producers.store(true, Ordering::Relaxed);
    join_all(producers).await?;
    // Let in-flight messages arrive, then stop the consumers.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop_consumers.store(true, Ordering::Relaxed);
    let lats = join_all(consumers).await?;
    let (t0, s0) = warm.unwrap_or((start, Snapshot::default()));
    let window = end.0.duration_since(t0).as_secs_f64().max(1e-9);
    let wall = end.0.duration_since(start).as_secs_f64().max(1e-9);
    Ok(Report {
        publish_rate: (end.1.published - s0.published) as f64 / window,
        consume_rate: (end.1.consumed - s0.consumed) as f64 / window,
        published: Counters::get(&counters.published),
        confirmed: Counters::get(&counters.confirmed),
        nacked: Counters::get(&counters.nacked),
        returned: Counters::get(&counters.returned),
        consumed: Counters::get(&counters.consumed),
        latency: Latencies::merge(lats),
        elapsed_s: wall,
        client_cpu_pct: 100.0 * (cpu1 - cpu0) / wall,
        idle_connected: None,
    })
}

/// Publish `total` messages with no consumer, then drain them.
async fn run_backlog(
    target: &Target,
    opts: &Options,
    queues: &[String],
    total: u64,
) -> Result<Report, String> {
    let counters = Arc::new(Counters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let each = total.div_ceil(opts.producers as u64);
    let cpu0 = process_cpu_s();
    let start = Instant::now();
    let producers = spawn_producers(target, opts, Some(each), &counters, &stop);
    let mut last_progress = Instant::now();
    while !producers.iter().all(|h| h.is_finished()) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if !opts.quiet && last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            progress(start, &counters);
        }
    }
    join_all(producers).await?;
    let published = Counters::get(&counters.published);
    let publish_s = start.elapsed().as_secs_f64().max(1e-9);
    // Every queue is bound so that each message reaches all of them.
    let expected = match (opts.publish_only, opts.streams()) {
        (true, _) => 0,
        // Every consumer reads the whole stream.
        (false, true) => published * opts.consumers as u64,
        (false, false) => published * queues.len() as u64,
    };
    let drain_start = Instant::now();
    let consumers = match opts.publish_only {
        true => Vec::new(),
        false => spawn_consumers(target, opts, queues, &counters, &stop),
    };
    let deadline = Duration::from_secs_f64(opts.duration_s.max(60.0) * 10.0);
    while Counters::get(&counters.consumed) < expected && drain_start.elapsed() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if !opts.quiet && last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            progress(start, &counters);
        }
        if consumers.iter().all(|h| h.is_finished()) {
            break;
        }
    }
    let drain_s = drain_start.elapsed().as_secs_f64().max(1e-9);
    stop.store(true, Ordering::Relaxed);
    let lats = join_all(consumers).await?;
    let wall = start.elapsed().as_secs_f64();
    Ok(Report {
        publish_rate: published as f64 / publish_s,
        consume_rate: Counters::get(&counters.consumed) as f64 / drain_s,
        published,
        confirmed: Counters::get(&counters.confirmed),
        nacked: Counters::get(&counters.nacked),
        returned: Counters::get(&counters.returned),
        consumed: Counters::get(&counters.consumed),
        latency: Latencies::merge(lats),
        elapsed_s: wall,
        client_cpu_pct: 100.0 * (process_cpu_s() - cpu0) / wall.max(1e-9),
        idle_connected: None,
    })
}

/// Open many connections that only heartbeat, hold them for `duration`,
/// and count how many are still up at the end.
async fn run_idle(target: &Target, opts: &Options) -> Result<Report, String> {
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let cpu0 = process_cpu_s();
    let mut handles = Vec::with_capacity(opts.idle_connections);
    // Open in waves so the broker's accept backlog is not overrun.
    for wave in (0..opts.idle_connections).collect::<Vec<_>>().chunks(200) {
        let mut opening = Vec::new();
        for _ in wave {
            opening.push(tokio::spawn(roles::idle(
                target.clone(),
                opts.heartbeat_s,
                stop.clone(),
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        handles.extend(opening);
    }
    if !opts.quiet {
        eprintln!(
            "opened {} connections in {:.1}s",
            handles.len(),
            start.elapsed().as_secs_f64()
        );
    }
    tokio::time::sleep(Duration::from_secs_f64(opts.duration_s)).await;
    let alive = handles.iter().filter(|h| !h.is_finished()).count();
    stop.store(true, Ordering::Relaxed);
    let mut errors = 0;
    for h in handles {
        if !matches!(h.await, Ok(Ok(true))) {
            errors += 1;
        }
    }
    let wall = start.elapsed().as_secs_f64();
    if errors > 0 && !opts.quiet {
        eprintln!("{errors} idle connections failed");
    }
    Ok(Report {
        elapsed_s: wall,
        client_cpu_pct: 100.0 * (process_cpu_s() - cpu0) / wall.max(1e-9),
        idle_connected: Some((alive, opts.idle_connections)),
        ..Report::default()
    })
}

#[derive(Clone, Copy, Debug, Default)]
struct Snapshot {
    published: u64,
    consumed: u64,
}

fn snapshot(c: &Counters) -> Snapshot {
    Snapshot {
        published: Counters::get(&c.published),
        consumed: Counters::get(&c.consumed),
    }
}

fn progress(start: Instant, c: &Counters) {
    eprintln!(
        "t={:>5.1}s published={} confirmed={} consumed={}",
        start.elapsed().as_secs_f64(),
        Counters::get(&c.published),
        Counters::get(&c.confirmed),
        Counters::get(&c.consumed)
    );
}

fn print_report(opts: &Options, r: &Report) {
    if opts.json {
        let idle = match r.idle_connected {
            Some((alive, total)) => {
                format!(",\"idle_connected\":{alive},\"idle_requested\":{total}")
            }
            None => String::new(),
        };
        println!(
            "{{\"label\":{:?},\"publish_rate\":{:.1},\"consume_rate\":{:.1},\"published\":{},\"confirmed\":{},\"nacked\":{},\"returned\":{},\"consumed\":{},\"latency_us\":{{\"p50\":{},\"p95\":{},\"p99\":{},\"max\":{},\"samples\":{}}},\"elapsed_s\":{:.3},\"client_cpu_pct\":{:.1}{}}}",
            opts.label,
            r.publish_rate,
            r.consume_rate,
            r.published,
            r.confirmed,
            r.nacked,
            r.returned,
            r.consumed,
            r.latency.p50_us,
            r.latency.p95_us,
            r.latency.p99_us,
            r.latency.max_us,
            r.latency.samples,
            r.elapsed_s,
            r.client_cpu_pct,
            idle
        );
        return;
    }
    if let Some((alive, total)) = r.idle_connected {
        println!("idle connections still connected: {alive} of {total}");
        println!("client CPU:  {:.1}%", r.client_cpu_pct);
        return;
    }
    println!(
        "publish rate: {:>12.0} msg/s   ({} published, {} confirmed, {} nacked, {} returned)",
        r.publish_rate, r.published, r.confirmed, r.nacked, r.returned
    );
    println!(
        "consume rate: {:>12.0} msg/s   ({} consumed)",
        r.consume_rate, r.consumed
    );
    println!(
        "latency:      p50 {} µs, p95 {} µs, p99 {} µs, max {} µs ({} samples)",
        r.latency.p50_us, r.latency.p95_us, r.latency.p99_us, r.latency.max_us, r.latency.samples
    );
    println!(
        "elapsed:      {:.2} s; client CPU {:.1}%",
        r.elapsed_s, r.client_cpu_pct
    );
}
