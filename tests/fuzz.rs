//! Fuzzing of Warren's decoders of untrusted bytes on stable Rust: each
//! target in `fuzz/targets.rs` runs a deterministic, seeded mutation loop
//! over a corpus of real inputs (`fuzz/corpus.rs` here), bounded so CI runs
//! it on every `cargo test`. The same targets run coverage-guided under
//! cargo-fuzz on nightly (see `fuzz/README.md`).
//!
//! - `WARREN_FUZZ_ITERS=N`: run N mutated inputs per target, with no time
//!   bound (long runs: `cargo test --release --test fuzz`).
//! - `WARREN_FUZZ_SEED=S`: explore another seed.
//! - `WARREN_FUZZ_CORPUS_OUT=DIR`: write the seed corpus to
//!   `DIR/<target>/` for cargo-fuzz (test `write_corpus`).
//!
//! A panic in a target fails the test with the seed, the iteration and the
//! input in hex. Every crash found becomes a test under "Regressions".

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[path = "../fuzz/targets.rs"]
mod targets;

#[path = "fuzz/corpus.rs"]
mod corpus;

use targets::Target;

/// Mutated inputs per target in a plain `cargo test`.
const DEFAULT_ITERS: u64 = 200_000;
/// Wall-clock bound per target in a plain `cargo test`.
const DEFAULT_BUDGET: Duration = Duration::from_secs(2);
const DEFAULT_SEED: u64 = 0x5741_5252_454E; // "WARREN"
/// Inputs grow by insertions; past this they are cut back.
const MAX_LEN: usize = 64 * 1024;

/// How long one target runs: a count, and a deadline unless the count was
/// asked for explicitly.
fn budget() -> (u64, Option<Instant>) {
    match std::env::var("WARREN_FUZZ_ITERS") {
        Ok(n) => (n.parse().expect("WARREN_FUZZ_ITERS is a number"), None),
        Err(_) => (DEFAULT_ITERS, Some(Instant::now() + DEFAULT_BUDGET)),
    }
}

/// The seed of one target: the base seed mixed with the target's name, so
/// targets do not share a mutation sequence.
fn seed_for(name: &str) -> u64 {
    let base = std::env::var("WARREN_FUZZ_SEED")
        .map(|s| s.parse().expect("WARREN_FUZZ_SEED is a number"))
        .unwrap_or(DEFAULT_SEED);
    name.bytes().fold(base, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01B3)
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// Run `target` on one input; a panic fails the test with what reproduces it.
fn run_one(name: &str, target: Target, input: &[u8], seed: u64, iteration: u64) {
    if let Err(panic) = catch_unwind(AssertUnwindSafe(|| target(input))) {
        let what = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("(no message)");
        panic!(
            "fuzz target `{name}` panicked: {what}\n seed {seed}, iteration {iteration}\n \
             input ({} bytes): {}",
            input.len(),
            hex(input)
        );
    }
}

/// The mutation loop: seeds first, unchanged, then mutants of seeds and of
/// earlier mutants (a pool that keeps some of them, so mutations stack).
fn fuzz(name: &str) {
    let target = targets::TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, t)| *t)
        .expect("known target");
    let seeds = corpus::for_target(name);
    let seed = seed_for(name);
    for (i, input) in seeds.iter().enumerate() {
        run_one(name, target, input, seed, i as u64);
    }
    let (iters, deadline) = budget();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut pool = seeds.clone();
    let started = Instant::now();
    let mut done = 0;
    while done < iters && !deadline.is_some_and(|d| done % 64 == 0 && Instant::now() > d) {
        let mut input = pool[rng.gen_range(0..pool.len())].clone();
        for _ in 0..rng.gen_range(1..=4) {
            mutate(&mut rng, &mut input, &pool);
        }
        input.truncate(MAX_LEN);
        run_one(name, target, &input, seed, done);
        if rng.gen_ratio(1, 16) {
            keep(&mut rng, &mut pool, seeds.len(), input);
        }
        done += 1;
    }
    eprintln!(
        "fuzz {name}: {done} executions in {:.1?} (seed {seed})",
        started.elapsed()
    );
}

/// Add a mutant to the pool; past a size, it replaces an earlier mutant
/// (never a seed).
fn keep(rng: &mut StdRng, pool: &mut Vec<Vec<u8>>, seeds: usize, input: Vec<u8>) {
    if pool.len() < seeds + 256 {
        pool.push(input);
    } else {
        let at = rng.gen_range(seeds..pool.len());
        pool[at] = input;
    }
}

const INTERESTING: [u8; 6] = [0, 1, 0x7F, 0x80, 0xFE, 0xFF];

/// Apply one random mutation to `input`.
fn mutate(rng: &mut StdRng, input: &mut Vec<u8>, pool: &[Vec<u8>]) {
    if input.is_empty() {
        input.push(rng.gen());
        return;
    }
    let at = rng.gen_range(0..input.len());
    match rng.gen_range(0..9) {
        0 => input[at] ^= 1 << rng.gen_range(0..8),
        1 => input[at] = INTERESTING[rng.gen_range(0..INTERESTING.len())],
        2 => input[at] = rng.gen(),
        3 => input.truncate(at),
        4 => {
            let end = rng.gen_range(at..=input.len());
            input.drain(at..end);
        }
        5 => {
            // Duplicate a slice of the input somewhere else in it.
            let end = rng.gen_range(at..=input.len().min(at + 64));
            let slice = input[at..end].to_vec();
            let to = rng.gen_range(0..=input.len());
            input.splice(to..to, slice);
        }
        6 => splice(rng, input, pool),
        7 => tweak_length(rng, input, at),
        _ => {
            let n = rng.gen_range(1..=8);
            let bytes: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
            input.splice(at..at, bytes);
        }
    }
}

/// Replace a slice of `input` with a slice of another pool entry.
fn splice(rng: &mut StdRng, input: &mut Vec<u8>, pool: &[Vec<u8>]) {
    let other = &pool[rng.gen_range(0..pool.len())];
    if other.is_empty() {
        return;
    }
    let from = rng.gen_range(0..other.len());
    let from_end = rng.gen_range(from..=other.len());
    let at = rng.gen_range(0..=input.len());
    let end = rng.gen_range(at..=input.len());
    input.splice(at..end, other[from..from_end].iter().copied());
}

/// Treat the 1, 2 or 4 bytes at `at` as a big- or little-endian length and
/// nudge it, or set it to an extreme.
fn tweak_length(rng: &mut StdRng, input: &mut [u8], at: usize) {
    let width = [1, 2, 4][rng.gen_range(0..3)];
    let Some(field) = input.get_mut(at..at + width) else {
        return;
    };
    let big_endian = rng.gen_bool(0.7);
    let mut bytes = [0u8; 8];
    if big_endian {
        bytes[8 - width..].copy_from_slice(field);
    }
    let value = if big_endian {
        u64::from_be_bytes(bytes)
    } else {
        bytes[..width].copy_from_slice(field);
        u64::from_le_bytes(bytes)
    };
    let max = u64::MAX >> (64 - 8 * width);
    let value = match rng.gen_range(0..4) {
        0 => value.wrapping_add(rng.gen_range(1..=16)),
        1 => value.wrapping_sub(rng.gen_range(1..=16)),
        2 => 0,
        _ => max,
    } & max;
    if big_endian {
        field.copy_from_slice(&value.to_be_bytes()[8 - width..]);
    } else {
        field.copy_from_slice(&value.to_le_bytes()[..width]);
    }
}

#[test]
fn fuzz_frame() {
    fuzz("frame");
}

#[test]
fn fuzz_method() {
    fuzz("method");
}

#[test]
fn fuzz_content_header() {
    fuzz("content_header");
}

#[test]
fn fuzz_field_table() {
    fuzz("field_table");
}

#[test]
fn fuzz_sasl() {
    fuzz("sasl");
}

#[test]
fn fuzz_store_record() {
    fuzz("store_record");
}

#[test]
fn fuzz_ack_file() {
    fuzz("ack_file");
}

#[test]
fn fuzz_definitions() {
    fuzz("definitions");
}

/// Writes the seed corpus for cargo-fuzz when `WARREN_FUZZ_CORPUS_OUT` is
/// set; otherwise checks that every target has seeds.
#[test]
fn write_corpus() {
    let out = std::env::var_os("WARREN_FUZZ_CORPUS_OUT");
    for (name, _) in targets::TARGETS {
        let seeds = corpus::for_target(name);
        assert!(!seeds.is_empty(), "{name} has no seeds");
        let Some(out) = &out else {
            continue;
        };
        let dir = std::path::Path::new(out).join(name);
        std::fs::create_dir_all(&dir).expect("create corpus dir");
        for (i, seed) in seeds.iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i:03}")), seed).expect("write seed");
        }
    }
}

// Regressions: inputs that crashed a target, or that are known to.

/// Run a target on one input in a thread with a fixed 2 MiB stack (a
/// tokio worker's), so a stack overflow does not depend on the test
/// runner's settings. An overflow aborts the whole test binary.
fn run_on_worker_stack(name: &'static str, input: Vec<u8>) {
    let target = targets::TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, t)| *t)
        .expect("known target");
    std::thread::Builder::new()
        .name(format!("deep-{name}"))
        .stack_size(2 << 20)
        .spawn(move || run_one(name, target, &input, 0, 0))
        .expect("spawn")
        .join()
        .expect("target panicked");
}

/// amq-protocol parses tables by recursion: 5,000 nested tables aborted
/// the broker (stack overflow) before the nesting limit.
#[test]
fn regression_queue_declare_arguments_nested_5000_tables() {
    let frame = corpus::queue_declare_frame(&corpus::nested_tables(5000));
    run_on_worker_stack("frame", frame);
}

/// Arrays recurse too.
#[test]
fn regression_start_ok_client_properties_nested_5000_arrays() {
    let frame = corpus::start_ok_frame(&corpus::table_of_nested_arrays(5000));
    run_on_worker_stack("frame", frame);
}

/// The target decodes the properties with `decode_properties`, which
/// checks the depth itself (properties also come back from disk).
#[test]
fn regression_content_header_headers_nested_5000_tables() {
    let props = corpus::properties_with_headers(&corpus::nested_tables(5000));
    run_on_worker_stack("content_header", props);
}

/// Found by `fuzz_field_table`: a table value that is a NaN or infinite
/// float is accepted in a durable queue's arguments and was saved to
/// `definitions.json` as `null`, which then failed to load, so the broker
/// could not start again. Tables are now stored in their wire encoding;
/// this goes through the metadata log as a declare does.
#[test]
fn regression_nan_argument_survives_definitions_save() {
    use warren::store::definitions::QueueDef;
    use warren::store::metadata::{MetaOp, MetaStore};
    // queue.declare arguments {"x-nan": d NaN}, as a client sends them.
    let table = unhex("0000000f05782d6e616e647ff8000000000000");
    let (_, arguments) = amq_protocol::types::parsing::parse_field_table(&table[..]).unwrap();
    let dir = std::env::temp_dir().join(format!("warren-fuzz-nan-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let syncer = warren::store::Syncer::start(false).unwrap();
    let (meta, _) = MetaStore::open(&dir, false, 1 << 20).unwrap();
    let op = MetaOp::PutQueue {
        vhost: "/".into(),
        def: QueueDef {
            name: "q".into(),
            dir: "q1".into(),
            auto_delete: false,
            arguments,
        },
    };
    let ticket = meta.append(&syncer, &[op]).unwrap();
    let mut status = syncer.subscribe();
    while status.borrow_and_update().synced < ticket {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    drop(meta);
    let loaded = MetaStore::open(&dir, false, 1 << 20).map(|(_, defs)| defs);
    let _ = std::fs::remove_dir_all(&dir);
    let defs = loaded.expect("saved definitions load");
    assert_eq!(defs.vhosts["/"].queues.len(), 1);
}

/// Found by the `definitions` cargo-fuzz target: serde_json's default
/// float parsing is not exact, so a double argument can come back from
/// `definitions.json` one ulp off (after a restart a headers binding on
/// it stops matching, a redeclare is inequivalent). Fixed by storing
/// tables in their wire encoding and reading old files with serde_json's
/// `float_roundtrip`.
#[test]
fn regression_double_argument_survives_definitions_save() {
    let input = br#"{"version": 1, "vhosts": {"/": {"exchanges": [], "bindings": [],
        "queues": [{"name": "q", "dir": "q1", "auto_delete": false,
                    "arguments": {"f64": {"Double": -2.25e+101}}}]}}}"#;
    let defs: warren::store::Definitions = serde_json::from_slice(input).unwrap();
    assert_eq!(
        targets::save_and_load(&defs),
        Ok(targets::normalized(&defs))
    );
}
