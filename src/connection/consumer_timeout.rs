//! Consumer timeouts: a delivery not acknowledged within its consumer's
//! timeout is returned to its queue (redelivered, counting towards
//! `x-delivery-limit`) and the consumer is cancelled, told with
//! basic.cancel; the channel and the consumer's other deliveries go on,
//! and a late ack of the taken-back delivery is ignored. RabbitMQ instead
//! closes the whole channel with 406, which `consumer_timeout_closes_channel`
//! asks for. The timeout is the consumer's `x-consumer-timeout`, else its
//! queue's (argument or `consumer-timeout` policy key, as the queue had it
//! at basic.consume), else `consumer_timeout_ms`; checked once a second.
//! A client that did not announce `consumer_cancel_notify` could not hear
//! the cancel, so its channel is closed as RabbitMQ does.

use std::time::{Duration, Instant};

use amq_protocol::protocol::basic::{self, AMQPMethod};
use amq_protocol::protocol::AMQPClass;
use amq_protocol::types::{FieldTable, ShortString};

use super::channel::{Channel, ChannelState, Settle};
use super::session::Session;
use crate::broker::queue::Queue;
use crate::protocol::AmqpError;

/// Late-ack tags remembered per channel at most.
const EXPIRED_TAGS_KEPT: usize = 65_536;

impl Session {
    /// The timeout of a new consumer of `queue` with `arguments`.
    pub(super) fn consumer_timeout(
        &self,
        queue: &Queue,
        arguments: &FieldTable,
    ) -> Result<Option<Duration>, AmqpError> {
        let own = match arguments.inner().get("x-consumer-timeout") {
            None => None,
            Some(v) => Some(
                crate::broker::arguments::as_int(v)
                    .and_then(|i| u64::try_from(i).ok())
                    .filter(|ms| *ms > 0)
                    .ok_or_else(|| {
                        AmqpError::precondition_failed(format!(
                            "invalid arg 'x-consumer-timeout' for queue '{}' in vhost '{}': must be a positive integer",
                            queue.name, self.vhost.name
                        ))
                    })?,
            ),
        };
        let configured = Some(self.broker.config.consumer_timeout_ms).filter(|ms| *ms > 0);
        let ms = own.or_else(|| queue.consumer_timeout_ms()).or(configured);
        Ok(ms.map(Duration::from_millis))
    }

    /// Take back every delivery past its deadline (once a second).
    pub(super) fn expire_deliveries(&mut self) {
        if self.done || self.closing_since.is_some() {
            return;
        }
        let now = Instant::now();
        let ids: Vec<u16> = self
            .channels
            .iter()
            .filter(|(_, ch)| ch.state == ChannelState::Open && ch.had_deadlines)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            let Some(ch) = self.channels.get_mut(&id) else {
                continue;
            };
            let expired = ch.unacked.take_expired(now);
            if expired.is_empty() {
                continue;
            }
            let closes_channel = self.broker.config.consumer_timeout_closes_channel;
            if closes_channel || !self.cancel_notify {
                // RabbitMQ's way, and the only one a client that cannot
                // hear basic.cancel would notice.
                let timeout = ch
                    .consumers
                    .values()
                    .filter_map(|c| c.timeout)
                    .min()
                    .map_or(0, |t| t.as_millis());
                ch.unacked
                    .put_back(expired.into_iter().map(|(u, _, _)| u).collect());
                self.channel_error(id, AmqpError::precondition_failed(format!(
                    "delivery acknowledgement on channel {id} timed out. Timeout value used: {timeout} ms. This timeout value can be configured, see consumers doc guide to learn more"
                )));
                continue;
            }
            let mut consumers: Vec<(std::sync::Arc<str>, u64)> = Vec::new();
            let mut items = Vec::with_capacity(expired.len());
            for (u, consumer, consumer_id) in expired {
                remember_expired(ch, u.tag);
                if !consumers.iter().any(|(_, c)| *c == consumer_id) {
                    consumers.push((consumer, consumer_id));
                }
                items.push(u);
            }
            // Cancel first, so the queue does not hand the messages
            // straight back to the consumer that timed out.
            for (consumer, consumer_id) in &consumers {
                tracing::info!(channel = id, consumer = %consumer, "consumer timed out: deliveries returned, consumer cancelled");
                self.cancel_timed_out(id, consumer, *consumer_id);
            }
            if let Some(ch) = self.channels.get_mut(&id) {
                ch.settle(items, Settle::Requeue);
            }
        }
    }

    /// Cancel a consumer whose delivery timed out (if it is still the
    /// one with that tag), telling the client.
    fn cancel_timed_out(&mut self, id: u16, consumer: &str, consumer_id: u64) {
        let Some(ch) = self.channels.get_mut(&id) else {
            return;
        };
        if ch.consumers.get(consumer).map(|c| c.id) != Some(consumer_id) {
            return;
        }
        let Some(cc) = ch.consumers.swap_remove(consumer) else {
            return;
        };
        let removal = cc.queue.remove_consumer(self.id, cc.id);
        if removal.should_auto_delete {
            self.vhost.delete_unused_queue(&cc.queue);
        }
        if self.cancel_notify {
            self.send(
                id,
                AMQPClass::Basic(AMQPMethod::Cancel(basic::Cancel {
                    consumer_tag: ShortString::from(consumer.to_string()),
                    nowait: true,
                })),
            );
        }
    }
}

fn remember_expired(ch: &mut Channel, tag: u64) {
    if ch.expired_tags.len() >= EXPIRED_TAGS_KEPT {
        ch.expired_tags.pop_first();
    }
    ch.expired_tags.insert(tag);
}

/// Whether an ack, nack or reject of `tag` (with `multiple`: up to it)
/// names a delivery taken back on a timeout, forgetting those it names: a
/// late settlement of one is ignored.
pub(super) fn forget_expired(ch: &mut Channel, tag: u64, multiple: bool) -> bool {
    if ch.expired_tags.is_empty() {
        return false;
    }
    let named = ch.expired_tags.contains(&tag);
    if multiple {
        let upto: Vec<u64> = match tag {
            0 => ch.expired_tags.iter().copied().collect(),
            _ => ch.expired_tags.range(..=tag).copied().collect(),
        };
        for t in upto {
            ch.expired_tags.remove(&t);
        }
    } else if named {
        ch.expired_tags.remove(&tag);
    }
    named
}
