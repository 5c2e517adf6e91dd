//! Asking a connection which deliveries it holds unacked: the request the
//! management API sends and the report the connection answers with.
//!
//! Unacked deliveries live in their connection's task (no lock on the
//! delivery path), so the API asks each connection through a small
//! bounded channel and waits a bounded time for its report. Nothing is
//! kept for this while nobody asks.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::queue::Queue;

/// Requests a connection may have queued before further ones are refused
/// (a connection too busy to answer is skipped, not waited for).
pub const QUERY_CAPACITY: usize = 4;

/// How long the API waits for one connection's report.
pub const REPORT_TIMEOUT: Duration = Duration::from_secs(2);

/// Most deliveries one report lists (the counts cover all of them).
pub const MAX_LISTED: usize = 1_000;

/// What the API asks a connection.
#[derive(Debug)]
pub struct UnackedQuery {
    /// Only deliveries from this queue (this one: not another of the same
    /// name declared after it was deleted).
    pub queue: Option<Arc<Queue>>,
    /// List at most this many, oldest first (at most [`MAX_LISTED`]).
    pub limit: usize,
    /// Where the report goes.
    pub reply: oneshot::Sender<UnackedReport>,
}

/// A connection's unacked deliveries: counts per holder and the oldest
/// deliveries themselves.
#[derive(Debug, Default)]
pub struct UnackedReport {
    /// Per channel and consumer (a basic.get's deliveries have no tag).
    pub holders: Vec<Holder>,
    /// The oldest deliveries, at most the query's limit, oldest first.
    pub deliveries: Vec<HeldDelivery>,
}

/// One consumer's (or one channel's basic.get) unacked deliveries.
#[derive(Debug, Clone, PartialEq)]
pub struct Holder {
    /// Channel number.
    pub channel: u16,
    /// None: deliveries of basic.get.
    pub consumer_tag: Option<Arc<str>>,
    /// The queue they came from.
    pub queue: Arc<str>,
    /// Deliveries held.
    pub count: u64,
    /// Body bytes held in memory (paged-out bodies count 0).
    pub bytes: u64,
    /// When the oldest was delivered, Unix milliseconds.
    pub oldest_at_ms: u64,
}

/// One unacked delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct HeldDelivery {
    /// Channel number.
    pub channel: u16,
    /// Its consumer (None: a basic.get).
    pub consumer_tag: Option<Arc<str>>,
    /// The tag the client acks it by.
    pub delivery_tag: u64,
    /// The queue it came from.
    pub queue: Arc<str>,
    /// When it was delivered, Unix milliseconds (ages are taken from one
    /// clock reading by the asker, so connections answering at different
    /// times compare fairly).
    pub delivered_at_ms: u64,
    /// Delivered before and returned.
    pub redelivered: bool,
    /// Where it was published.
    pub exchange: String,
    /// Its routing key.
    pub routing_key: String,
    /// None when its body was paged out to disk.
    pub payload_bytes: Option<u64>,
    /// Its message-id property.
    pub message_id: Option<String>,
}

/// Ask through `to` and wait for the report: None if the connection is
/// gone, too busy to take the request, or does not answer in time.
pub async fn ask(
    to: &mpsc::Sender<UnackedQuery>,
    queue: Option<Arc<Queue>>,
    limit: usize,
) -> Option<UnackedReport> {
    let (reply, answer) = oneshot::channel();
    let query = UnackedQuery {
        queue,
        limit: limit.min(MAX_LISTED),
        reply,
    };
    to.try_send(query).ok()?;
    tokio::time::timeout(REPORT_TIMEOUT, answer)
        .await
        .ok()?
        .ok()
}
