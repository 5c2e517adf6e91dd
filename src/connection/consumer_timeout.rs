//! Consumer timeouts: a delivery not acknowledged within its consumer's
//! timeout is returned to its queue (redelivered, counting towards
//! `x-delivery-limit`) and the consumer is cancelled, told with
//! basic.cancel; the channel and the consumer's other deliveries go on,
//! and a late ack of the taken-back delivery is ignored. RabbitMQ instead
//! closes the whole channel with 406, which `consumer_timeout_closes_channel`
//! asks for. The timeout is the consumer's `x-consumer-timeout`, else its
//! queue's (argument or `consumer-timeout` policy key, as the queue had it
//! at basic.consume), else `consumer_timeout_ms`; checked once a second.

use std::time::{Duration, Instant};

use amq_protocol::protocol::basic::{self, AMQPMethod};
use amq_protocol::protocol::AMQPClass;
use amq_protocol::types::{FieldTable, ShortString};

use super::channel::{Channel, ChannelState, Settle};
use super::session::Session;
use crate::broker::queue::Queue;
use crate::protocol::AmqpError;

/// Late-ack tags remembered per channel at most.
const EXPIRED_TAGS_KEPT: usize = 4096;

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
        let now = Instant::now();
        let ids: Vec<u16> = self
            .channels
            .iter()
            .filter(|(_, ch)| ch.state == ChannelState::Open)
            .filter(|(_, ch)| ch.consumers.values().any(|c| c.timeout.is_some()))
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            let Some(ch) = self.channels.get_mut(&id) else {
                continue;
            };
            let expired = ch.unacked.expired(now);
            let Some((_, first_consumer)) = expired.first() else {
                continue;
            };
            if self.broker.config.consumer_timeout_closes_channel {
                let ms = ch
                    .consumers
                    .get(first_consumer)
                    .and_then(|c| c.timeout)
                    .map_or(0, |t| t.as_millis());
                self.channel_error(id, AmqpError::precondition_failed(format!(
                    "delivery acknowledgement on channel {id} timed out. Timeout value used: {ms} ms. This timeout value can be configured, see consumers doc guide to learn more"
                )));
                continue;
            }
            let mut consumers: Vec<std::sync::Arc<str>> = Vec::new();
            for (tag, consumer) in expired {
                if let Ok(items) = ch.unacked.take(tag, false) {
                    ch.settle(items, Settle::Requeue);
                }
                remember_expired(ch, tag);
                if !consumers.contains(&consumer) {
                    consumers.push(consumer);
                }
            }
            for consumer in consumers {
                tracing::info!(channel = id, consumer = %consumer, "consumer timed out: delivery returned, consumer cancelled");
                self.cancel_timed_out(id, &consumer);
            }
        }
    }

    /// Cancel a consumer whose delivery timed out, telling the client.
    fn cancel_timed_out(&mut self, id: u16, consumer: &str) {
        let Some(ch) = self.channels.get_mut(&id) else {
            return;
        };
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
    if ch.expired_tags.len() == EXPIRED_TAGS_KEPT {
        ch.expired_tags.pop_front();
    }
    ch.expired_tags.push_back(tag);
}

/// Whether `tag` was taken back on a timeout (forgetting it): its late
/// ack, nack or reject is then ignored.
pub(super) fn forget_expired(ch: &mut Channel, tag: u64) -> bool {
    match ch.expired_tags.iter().position(|t| *t == tag) {
        Some(i) => {
            ch.expired_tags.remove(i);
            true
        }
        None => false,
    }
}
