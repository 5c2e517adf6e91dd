//! A connection's answer to the management API's question "which
//! deliveries do you hold unacked?" (see `broker::unacked_view`): counts
//! per consumer and the oldest deliveries, built from the channels'
//! unacked lists on request only.

use std::sync::Arc;
use std::time::Instant;

use indexmap::IndexMap;

use super::session::Session;
use super::unacked::Unacked;
use crate::broker::message::decode_properties;
use crate::broker::unacked_view::{HeldDelivery, Holder, UnackedQuery, UnackedReport};

impl Session {
    /// Answer `q` from this connection's channels.
    pub(super) fn answer_unacked(&mut self, q: UnackedQuery) {
        let mut ids: Vec<u16> = self.channels.keys().copied().collect();
        ids.sort_unstable();
        let mut report = UnackedReport::default();
        let mut holders = HolderCounts::new();
        for id in ids {
            let Some(ch) = self.channels.get(&id) else {
                continue;
            };
            let wanted = |u: &&Unacked| q.queue.as_ref().is_none_or(|n| *n == u.queue.name);
            for u in ch.unacked.iter().filter(wanted) {
                count(&mut holders, id, u, self.now);
            }
            // A channel's list is in delivery order: its oldest come first.
            let oldest = ch.unacked.iter().filter(wanted).take(q.limit);
            report
                .deliveries
                .extend(oldest.map(|u| describe(id, u, self.now)));
        }
        report.holders = holders.into_values().collect();
        report.deliveries.sort_by(|a, b| {
            b.held_ms
                .cmp(&a.held_ms)
                .then(a.delivery_tag.cmp(&b.delivery_tag))
        });
        report.deliveries.truncate(q.limit);
        // The asker may have given up waiting: nothing to do then.
        let _ = q.reply.send(report);
    }
}

fn held_ms(u: &Unacked, now: Instant) -> u64 {
    let ms = now.saturating_duration_since(u.delivered_at).as_millis();
    u64::try_from(ms).unwrap_or(u64::MAX)
}

/// Holders by channel, consumer tag and queue, in the order first seen.
type HolderCounts = IndexMap<(u16, Option<Arc<str>>, Arc<str>), Holder>;

/// Add `u` to its holder's counts.
fn count(holders: &mut HolderCounts, channel: u16, u: &Unacked, now: Instant) {
    let bytes = match u.message.body_on_disk {
        true => 0,
        false => u.message.message.body.len() as u64,
    };
    let key = (channel, u.consumer_tag.clone(), Arc::clone(&u.queue.name));
    let h = holders.entry(key).or_insert_with(|| Holder {
        channel,
        consumer_tag: u.consumer_tag.clone(),
        queue: Arc::clone(&u.queue.name),
        count: 0,
        bytes: 0,
        oldest_ms: 0,
    });
    h.count += 1;
    h.bytes += bytes;
    h.oldest_ms = h.oldest_ms.max(held_ms(u, now));
}

fn describe(channel: u16, u: &Unacked, now: Instant) -> HeldDelivery {
    let m = &u.message.message;
    let message_id = decode_properties(&m.properties)
        .and_then(|p| p.message_id().as_ref().map(|id| id.to_string()));
    HeldDelivery {
        channel,
        consumer_tag: u.consumer_tag.clone(),
        delivery_tag: u.tag,
        queue: Arc::clone(&u.queue.name),
        held_ms: held_ms(u, now),
        redelivered: u.message.redelivered,
        exchange: m.exchange.to_string(),
        routing_key: m.routing_key.to_string(),
        payload_bytes: (!u.message.body_on_disk).then_some(m.body.len() as u64),
        message_id,
    }
}
