//! Warren: an AMQP 0-9-1 message broker that RabbitMQ clients use unchanged.
//!
//! # Layout
//! The code follows the data path: bytes → frames → methods → broker state.
//! - [`config`]: the TOML config, its defaults and validation.
//! - [`server`]: the listener and connection tasks' lifetime, shutdown.
//! - [`protocol`]: frame decoding/encoding, protocol errors and reply codes.
//! - `connection`: one task per client: handshake, channels, one function
//!   per method, content assembly, deliveries out.
//! - [`broker`]: vhosts, exchanges (routing tables per type), queues,
//!   consumers and prefetch credit, flow control, messages. A queue is a
//!   shell every kind shares and a kind behind one interface
//!   (`broker::queue::kind`): classic (with priority lanes,
//!   `broker::ready`) or stream (`broker::stream`). Kinds get the time
//!   from their caller and return timers and notifications as effects.
//! - [`store`]: the data directory: durable definitions, per-queue segment
//!   files, acks, recovery, group-commit fsync.
//! - [`tls`]: rustls for the AMQPS and HTTPS listeners, certificate
//!   reload, client-certificate identities for SASL EXTERNAL.
//! - [`shovel`]: dynamic shovels, moving messages between this broker's
//!   queues and exchanges without loss.
//! - [`ctl`]: `warren ctl`, the command line over the management API.
//! - [`management`]: the management HTTP API and the Prometheus endpoint,
//!   reading the broker's live objects and per-queue counters.
//! - `src/bin/warren-perf/`: the load generator, a lean client built on
//!   [`protocol`].
//!
//! # Locks and awaits
//! The rules are written once, in [`broker::vhost`]: the topology lock and the
//! per-queue locks are synchronous and never held across `.await`; the order
//! is always topology → queue. Connection tasks own their state outright.

#![deny(unsafe_code)]
#![warn(missing_docs)]
#![warn(clippy::unwrap_in_result)]

pub mod alarms;
pub mod auth;
pub mod broker;
pub mod cli;
pub mod config;
mod connection;
pub mod ctl;
pub mod management;
pub mod message;
pub mod protocol;
pub mod server;
pub mod shovel;
pub mod store;
pub mod tls;

pub use config::Config;
pub use server::{RunningServer, Server};
