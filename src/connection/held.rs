//! Replies held for the store: the declare-ok, bind-ok or delete-ok of a
//! durable object goes out only once the metadata log's sync round has
//! made the change durable, as a confirm waits for its message's round.
//! The connection does not stop for it: it goes on reading and handling
//! the next methods (a client may pipeline thousands of declares, all
//! made durable by the same few fsyncs), and everything encoded after a
//! held reply waits behind it, so replies keep their order.

use std::collections::VecDeque;

use amq_protocol::protocol::AMQPClass;

use super::session::Session;
use crate::store::{StoreHealth, SyncStatus};

/// Output bytes held back at which the connection stops reading until
/// they go out: what a pipelining client can make it buffer.
pub const HELD_BYTES_MAX: usize = 1 << 20;

/// Points in the output buffer that must wait for a sync round.
#[derive(Debug, Default)]
pub struct HeldOutput {
    /// (offset in the output buffer, round), offsets and rounds rising.
    points: VecDeque<(usize, u64)>,
}

impl HeldOutput {
    /// Hold everything from `offset` on until round `ticket` is synced.
    pub fn hold(&mut self, offset: usize, ticket: u64) {
        match self.points.back() {
            // An earlier point waiting for this round or a later one
            // holds this output already.
            Some(&(_, t)) if t >= ticket => {}
            _ => self.points.push_back((offset, ticket)),
        }
    }

    /// How many of the `len` buffered bytes may be written now that
    /// rounds up to `synced` are done.
    pub fn sendable(&mut self, synced: u64, len: usize) -> usize {
        while self.points.front().is_some_and(|&(_, t)| t <= synced) {
            self.points.pop_front();
        }
        self.points.front().map_or(len, |&(offset, _)| offset)
    }

    /// `n` bytes from the front of the buffer were written.
    pub fn advance(&mut self, n: usize) {
        for (offset, _) in &mut self.points {
            *offset -= n;
        }
    }

    /// Where held output starts, if any is held.
    pub fn first(&self) -> Option<usize> {
        self.points.front().map(|&(offset, _)| offset)
    }

    /// Drop every hold (the output they held is discarded by the caller).
    pub fn clear(&mut self) {
        self.points.clear();
    }
}

impl Session {
    /// Send `method` on channel `id` once round `ticket` is synced (0: at
    /// once, behind whatever is held already).
    pub(super) fn send_when_synced(&mut self, id: u16, method: AMQPClass, ticket: u64) {
        if ticket > self.sync_status().synced {
            self.held.hold(self.io.out.len(), ticket);
            self.sync_wanted = self.sync_wanted.max(ticket);
        }
        self.send(id, method);
    }

    /// Bytes of output that may be written now. If the store failed for
    /// good, held replies will never be due: they are dropped and the
    /// connection is closed with the store's error. (A full disk only
    /// delays them: the sync thread retries until there is room.)
    pub(super) fn releasable_output(&mut self, status: SyncStatus) -> usize {
        let len = self.io.out.len();
        let n = self.held.sendable(status.synced, len);
        let failed = status.failed && self.broker.store.health() == StoreHealth::Failed;
        if n < len && failed {
            if let Some(first) = self.held.first() {
                self.io.out.truncate(first);
                self.held.clear();
                let health = self.broker.store.health();
                self.connection_error(super::tx_confirm::store_failed(health));
                return self.io.out.len();
            }
        }
        n
    }

    /// Whether held output waits for a sync round.
    pub(super) fn holds_output(&self) -> bool {
        self.held.first().is_some()
    }

    /// Whether so much output is held that input should wait.
    pub(super) fn holds_too_much(&self) -> bool {
        self.held
            .first()
            .is_some_and(|first| self.io.out.len() - first >= HELD_BYTES_MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_goes_out_up_to_the_first_unsynced_round() {
        let mut h = HeldOutput::default();
        assert_eq!(h.sendable(0, 10), 10);
        h.hold(10, 3);
        h.hold(15, 3); // behind the first already
        h.hold(20, 5);
        assert_eq!(h.sendable(2, 30), 10);
        assert_eq!(h.sendable(3, 30), 20);
        h.advance(20);
        assert_eq!(h.first(), Some(0));
        assert_eq!(h.sendable(4, 10), 0);
        assert_eq!(h.sendable(5, 10), 10);
        assert_eq!(h.first(), None);
    }
}
