//! cargo-fuzz target `ack_file`; the body is shared with `tests/fuzz.rs`.

#![no_main]

#[allow(dead_code)]
#[path = "../targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::ack_file(data));
