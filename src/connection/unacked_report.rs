//! A connection's answer to the management API's question "which
//! deliveries do you hold unacked?" (see `broker::unacked_view`): counts
//! per consumer and the oldest deliveries, built from the channels'
//! unacked lists on request only.

use std::sync::Arc;
use std::time::Instant;

use indexmap::IndexMap;

use super::session::Session;
use super::unacked::Unacked;
use crate::broker::message::{decode_properties, now_ms};
use crate::broker::unacked_view::{HeldDelivery, Holder, UnackedQuery, UnackedReport};

/// Holders by channel, consumer tag and queue, in the order first seen.
type HolderCounts = IndexMap<(u16, Option<Arc<str>>, Arc<str>), Holder>;

/// Turns the session's monotonic stamps into Unix milliseconds.
struct Clock {
    now: Instant,
    now_ms: u64,
}

impl Clock {
    fn at_ms(&self, then: Instant) -> u64 {
        let ago = self.now.saturating_duration_since(then).as_millis();
        self.now_ms
            .saturating_sub(u64::try_from(ago).unwrap_or(u64::MAX))
    }
}

impl Session {
    /// Answer `q` from this connection's channels.
    pub(super) fn answer_unacked(&mut self, q: UnackedQuery) {
        if q.reply.is_closed() {
            // The asker gave up waiting: no work for nobody.
            return;
        }
        let clock = Clock {
            now: self.now,
            now_ms: now_ms(),
        };
        let wanted = |u: &&Unacked| q.queue.as_ref().is_none_or(|w| Arc::ptr_eq(w, &u.queue));
        let mut holders = HolderCounts::new();
        // Each channel's list is in delivery order: its oldest `limit` are
        // the only candidates it has. Only the final ones are described.
        let mut oldest: Vec<(u16, &Unacked)> = Vec::new();
        for (&id, ch) in &self.channels {
            // Settled inside a transaction not yet committed: still unacked
            // at their queues (a rollback gives them back).
            let in_tx = ch.tx.iter().flat_map(|tx| tx.settlements.iter());
            let in_tx: Vec<&Unacked> = in_tx.flat_map(|(items, _)| items).filter(wanted).collect();
            for u in ch
                .unacked
                .iter()
                .filter(wanted)
                .chain(in_tx.iter().copied())
            {
                count(&mut holders, id, u, &clock);
            }
            let first = ch.unacked.iter().filter(wanted).take(q.limit);
            oldest.extend(first.chain(in_tx).map(|u| (id, u)));
        }
        oldest.sort_by_key(|(id, u)| (u.delivered_at, *id, u.tag));
        oldest.truncate(q.limit);
        let report = UnackedReport {
            holders: holders.into_values().collect(),
            deliveries: oldest
                .iter()
                .map(|(id, u)| describe(*id, u, &clock))
                .collect(),
        };
        let _ = q.reply.send(report);
    }
}

/// Its body's size, unless the body was paged out (then only its queue's
/// file has it, and its size is not known here).
fn body_in_memory(u: &Unacked) -> Option<u64> {
    (!u.message.body_on_disk).then_some(u.message.message.body.len() as u64)
}

/// Add `u` to its holder's counts.
fn count(holders: &mut HolderCounts, channel: u16, u: &Unacked, clock: &Clock) {
    let bytes = body_in_memory(u).unwrap_or(0);
    let at = clock.at_ms(u.delivered_at);
    let key = (channel, u.consumer_tag.clone(), Arc::clone(&u.queue.name));
    let h = holders.entry(key).or_insert_with(|| Holder {
        channel,
        consumer_tag: u.consumer_tag.clone(),
        queue: Arc::clone(&u.queue.name),
        count: 0,
        bytes: 0,
        oldest_at_ms: at,
    });
    h.count += 1;
    h.bytes += bytes;
    h.oldest_at_ms = h.oldest_at_ms.min(at);
}

fn describe(channel: u16, u: &Unacked, clock: &Clock) -> HeldDelivery {
    let m = &u.message.message;
    let message_id = decode_properties(&m.properties)
        .and_then(|p| p.message_id().as_ref().map(|id| id.to_string()));
    HeldDelivery {
        channel,
        consumer_tag: u.consumer_tag.clone(),
        delivery_tag: u.tag,
        queue: Arc::clone(&u.queue.name),
        delivered_at_ms: clock.at_ms(u.delivered_at),
        redelivered: u.message.redelivered,
        exchange: m.exchange.to_string(),
        routing_key: m.routing_key.to_string(),
        payload_bytes: body_in_memory(u),
        message_id,
    }
}
