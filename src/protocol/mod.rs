//! The AMQP 0-9-1 wire layer: frames in and out, content assembly and the
//! error type every protocol violation is reported through.
//!
//! Method and content-header payloads are decoded with `amq-protocol`'s
//! generated parsers; the 7-byte frame header and body payloads are handled
//! here so that bodies are sliced out of the read buffer as `Bytes` without a
//! copy.

pub mod error;
pub mod frame;
pub mod nesting;
pub mod output;

pub use error::{AmqpError, ErrorKind};

/// `s` as an AMQP short string, cut to its first 255 bytes (at a character
/// boundary): names that reached the broker by other ways than a short
/// string (an HTTP publish, a dead-letter routing key given as a long
/// string) must never make the encoder panic.
pub fn short_string(s: &str) -> amq_protocol::types::ShortString {
    let mut end = s.len().min(255);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    amq_protocol::types::ShortString::from(&s[..end])
}
pub use frame::{DecodeError, Frame};
