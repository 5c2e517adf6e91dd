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
pub use frame::{DecodeError, Frame};
