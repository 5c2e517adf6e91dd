//! Looking into the delayed messages an exchange holds, and cancelling
//! one: Warren's own management routes (RabbitMQ's plugin has neither).
//!
//! Held messages are kept in a heap by due time, not in order, and their
//! bodies may be on disk only: a listing scans at most
//! [`LIST_SCAN_ENTRIES`] of the earliest entries and reads back at most
//! [`LIST_READ_BYTES`] of records, so it holds the delayed store for a
//! bounded time whatever it holds.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;

use super::{read_body, Delayed, Entry, State};
use crate::broker::message::Message;
use crate::store::{message_bytes, QueueLog};

/// Earliest entries a listing looks at, at most.
pub const LIST_SCAN_ENTRIES: usize = 10_000;
/// Record bytes a listing reads back from disk, at most.
pub const LIST_READ_BYTES: u64 = 16 << 20;

/// A held message, as a listing shows it.
#[derive(Clone, Debug)]
pub struct HeldInfo {
    /// Its id in the vhost's delayed store (to cancel it by).
    pub id: u64,
    /// When it is due (Unix ms).
    pub due_ms: u64,
    /// The message, as published.
    pub message: Arc<Message>,
}

impl Delayed {
    /// Up to `limit` messages held for `exchange`, earliest due first.
    pub fn list(&self, exchange: &str, limit: usize) -> Vec<HeldInfo> {
        let mut st = self.state.lock();
        let State { heap, log, .. } = &mut *st;
        let mut entries: Vec<&Entry> = heap.iter().map(|Reverse(e)| e).collect();
        let scan = entries.len().min(LIST_SCAN_ENTRIES);
        if scan < entries.len() {
            entries.select_nth_unstable(scan);
            entries.truncate(scan);
        }
        entries.sort_unstable();
        let mut out = Vec::new();
        let mut read = 0;
        for e in entries {
            if out.len() >= limit || read > LIST_READ_BYTES {
                break;
            }
            let Some(message) = body_of(e, log.as_mut(), &mut read) else {
                continue;
            };
            if &*message.exchange == exchange {
                out.push(HeldInfo {
                    id: e.seq,
                    due_ms: e.due_ms,
                    message,
                });
            }
        }
        out
    }

    /// Cancel held message `id` of `exchange`: it is dropped, never
    /// routed. False if there is no such message.
    pub fn cancel(&self, exchange: &str, id: u64) -> bool {
        let mut st = self.state.lock();
        match st.message_of(id) {
            Some(m) if &*m.exchange == exchange => {}
            _ => return false,
        }
        let mut entries = std::mem::take(&mut st.heap).into_vec();
        let removed = entries
            .iter()
            .position(|Reverse(e)| e.seq == id)
            .map(|at| entries.swap_remove(at).0);
        st.heap = BinaryHeap::from(entries);
        let Some(entry) = removed else {
            return false;
        };
        if let Some(body) = &entry.body {
            st.mem_bytes = st.mem_bytes.saturating_sub(message_bytes(body));
        }
        if let (Some(r), Some(log)) = (entry.disk, st.log.as_mut()) {
            if let Err(e) = log.settle(r).and_then(|()| log.flush_acks()) {
                tracing::error!(error = %e, "cannot record a delayed message as cancelled");
            }
        }
        true
    }
}

impl State {
    /// Held message `seq`, its body read back from disk if it is not in
    /// memory.
    fn message_of(&mut self, seq: u64) -> Option<Arc<Message>> {
        let entry: &Entry = self
            .heap
            .iter()
            .map(|Reverse(e)| e)
            .find(|e| e.seq == seq)?;
        body_of(entry, self.log.as_mut(), &mut 0)
    }
}

/// A held message: its body in memory, or read back from `log` (counted
/// in `read`); None if it cannot be read.
fn body_of(e: &Entry, log: Option<&mut QueueLog>, read: &mut u64) -> Option<Arc<Message>> {
    if let Some(body) = &e.body {
        return Some(body.clone());
    }
    match read_body(log?, e.disk?, read) {
        Ok(m) => Some(m),
        Err(err) => {
            tracing::warn!(error = %err, "cannot read a delayed message back");
            None
        }
    }
}
