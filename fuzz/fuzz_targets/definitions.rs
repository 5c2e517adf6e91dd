//! cargo-fuzz target `definitions`; the body is shared with `tests/fuzz.rs`.

#![no_main]

#[allow(dead_code)]
#[path = "../targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::definitions(data));
