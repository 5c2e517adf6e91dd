//! What a connection tells the node's registry about itself: its counters
//! (kept in plain fields of the session, bumped where each event happens)
//! and a snapshot of its channels and consumers, copied once a second so
//! the management API reads them without asking the connection task.

use std::sync::atomic::Ordering;

use super::session::Session;
use crate::broker::connections::{ChannelSnapshot, ConsumerSnapshot, Snapshot, Totals};

impl Session {
    /// Copy counters and channels to the registry.
    pub(super) fn publish_snapshot(&mut self) {
        let channels = self.channels.values().map(channel_snapshot).collect();
        let snapshot = Snapshot {
            totals: self.current_totals(),
            channels,
            blocked: self.alarm.blocked,
        };
        self.broker.connections.publish(&self.entry, snapshot);
    }

    /// The counters as they are now.
    fn current_totals(&self) -> Totals {
        Totals {
            recv_oct: self.io.recv_oct,
            send_oct: self.io.send_oct,
            ..self.totals
        }
    }

    /// The counters at the end (the registry keeps them for node totals).
    pub(super) fn final_totals(&mut self) -> Totals {
        for ch in self.channels.values_mut() {
            if let Some(c) = ch.confirms.as_mut() {
                self.totals.confirmed += std::mem::take(&mut c.acks_sent);
            }
        }
        self.current_totals()
    }
}

fn channel_snapshot(ch: &super::channel::Channel) -> ChannelSnapshot {
    ChannelSnapshot {
        number: ch.id,
        prefetch_count: ch.consumer_prefetch,
        global_prefetch_count: ch.credit.prefetch.load(Ordering::Relaxed),
        confirm: ch.confirms.is_some(),
        transactional: ch.tx.is_some(),
        unacked: ch.unacked.len() as u64,
        unconfirmed: ch.confirms.as_ref().map_or(0, |c| c.pending()),
        consumers: ch
            .consumers
            .iter()
            .map(|(tag, c)| ConsumerSnapshot {
                tag: tag.clone(),
                queue: c.queue.name.clone(),
                ack_required: !c.no_ack,
                exclusive: c.exclusive,
                prefetch: c.prefetch,
                arguments: c.arguments.clone(),
            })
            .collect(),
    }
}
