//! The basic class on the consuming side: the method dispatcher, consume
//! and cancel, get, ack/nack/reject, recover, qos, and writing deliveries
//! to the client (publishing is in `publish.rs`).

use std::sync::Arc;

use amq_protocol::protocol::basic::{self, AMQPMethod};
use amq_protocol::protocol::AMQPClass;
use amq_protocol::types::ShortString;

use super::channel::{
    distinct_queues, ChannelConsumer, ChannelState, ReplyConsumer, Settle, Unacked,
};
use super::content::ContentState;
use super::session::Session;
use crate::auth::access::{Perm, Resource};
use crate::broker::consumer::{ConnEvent, Consumer, ConsumerCredit, Delivery};
use crate::broker::reply_to::{ReplyTarget, REPLY_QUEUE};
use crate::broker::stream::options::{self as stream_options, ConsumeOptions};
use crate::protocol::{short_string, AmqpError};

impl Session {
    /// An event from a queue: a delivery, or a consumer cancelled because
    /// its queue went away (basic.cancel to the client if it asked for
    /// cancel notifications).
    pub(super) fn handle_event(&mut self, ev: ConnEvent) {
        match ev {
            ConnEvent::Deliver(d) => {
                self.conn.delivery_taken(d.size());
                self.deliver(d);
                self.bound_unacked();
            }
            ConnEvent::ConsumerCancelled {
                channel,
                consumer_id,
                consumer_tag,
            } => {
                let Some(ch) = self.channels.get_mut(&channel) else {
                    return;
                };
                if ch.state != ChannelState::Open {
                    return;
                }
                if ch.consumers.get(&consumer_tag).map(|c| c.id) != Some(consumer_id) {
                    return;
                }
                // O(1): the order of a channel's consumers does not matter.
                ch.consumers.swap_remove(&consumer_tag);
                if self.cancel_notify {
                    let tag = ShortString::from(consumer_tag.to_string());
                    self.send(
                        channel,
                        AMQPClass::Basic(amq_protocol::protocol::basic::AMQPMethod::Cancel(
                            amq_protocol::protocol::basic::Cancel {
                                consumer_tag: tag,
                                nowait: true,
                            },
                        )),
                    );
                }
            }
        }
    }

    pub(super) fn basic_method(
        &mut self,
        id: u16,
        m: AMQPMethod,
        raw: &[u8],
    ) -> Result<(), AmqpError> {
        match m {
            AMQPMethod::Publish(p) => {
                self.block_if_alarmed();
                if p.immediate {
                    return Err(AmqpError::not_implemented("immediate=true"));
                }
                self.channel_mut(id)?.content = ContentState::ExpectHeader(p);
                Ok(())
            }
            AMQPMethod::Qos(q) => {
                let prefetch_size = raw
                    .get(0..4)
                    .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
                if prefetch_size != 0 {
                    return Err(AmqpError::not_implemented(format!(
                        "prefetch_size!=0 ({prefetch_size})"
                    )));
                }
                let ch = self.channel_mut(id)?;
                if q.global {
                    ch.credit.set_prefetch(u32::from(q.prefetch_count));
                    for queue in distinct_queues(ch.consumers.values().map(|c| &c.queue)) {
                        queue.dispatch();
                    }
                } else {
                    ch.consumer_prefetch = u32::from(q.prefetch_count);
                }
                self.send(id, AMQPClass::Basic(AMQPMethod::QosOk(basic::QosOk {})));
                Ok(())
            }
            AMQPMethod::Consume(c) => self.consume(id, c),
            AMQPMethod::Cancel(c) => {
                let tag: Arc<str> = Arc::from(c.consumer_tag.as_str());
                let ch = self.channel_mut(id)?;
                if ch.reply_consumer.as_ref().is_some_and(|r| r.tag == tag) {
                    if let Some(r) = ch.reply_consumer.take() {
                        self.vhost.reply_to.unregister(&r.name);
                    }
                } else if let Some(cc) = ch.consumers.swap_remove(&tag) {
                    // swap_remove: O(1), and the order of consumers does not matter.
                    let removal = cc.queue.remove_consumer(self.id, cc.id);
                    if removal.should_auto_delete {
                        self.vhost.delete_unused_queue(&cc.queue);
                    }
                }
                if !c.nowait {
                    self.send(
                        id,
                        AMQPClass::Basic(AMQPMethod::CancelOk(basic::CancelOk {
                            consumer_tag: c.consumer_tag,
                        })),
                    );
                }
                Ok(())
            }
            AMQPMethod::Get(g) => self.get(id, g),
            AMQPMethod::Ack(a) => self.settle(id, a.delivery_tag, a.multiple, Settle::Ack),
            AMQPMethod::Nack(n) => {
                let how = if n.requeue {
                    Settle::Requeue
                } else {
                    Settle::Discard
                };
                self.settle(id, n.delivery_tag, n.multiple, how)
            }
            AMQPMethod::Reject(r) => {
                let how = if r.requeue {
                    Settle::Requeue
                } else {
                    Settle::Discard
                };
                self.settle(id, r.delivery_tag, false, how)
            }
            AMQPMethod::Recover(r) => {
                self.recover(id, r.requeue)?;
                self.send(
                    id,
                    AMQPClass::Basic(AMQPMethod::RecoverOk(basic::RecoverOk {})),
                );
                Ok(())
            }
            AMQPMethod::RecoverAsync(r) => self.recover(id, r.requeue),
            _ => Err(AmqpError::command_invalid(
                "unexpected basic method from client",
            )),
        }
    }

    pub(super) fn channel_mut(
        &mut self,
        id: u16,
    ) -> Result<&mut super::channel::Channel, AmqpError> {
        self.channels
            .get_mut(&id)
            .ok_or_else(|| AmqpError::channel_error("expected 'channel.open'"))
    }

    fn consume(&mut self, id: u16, c: basic::Consume) -> Result<(), AmqpError> {
        if c.queue.as_str() == REPLY_QUEUE {
            return self.consume_replies(id, c);
        }
        let name = self.queue_name(id, c.queue.as_str())?;
        self.allow(Perm::Read, Resource::Queue, &name)?;
        let queue = self.vhost.queue(&name, self.id)?;
        let tag_text = if c.consumer_tag.as_str().is_empty() {
            generated_tag()
        } else {
            c.consumer_tag.as_str().to_string()
        };
        let stream = match queue.is_stream() {
            true => Some(self.stream_options(id, &c, &tag_text, &name)?),
            false => None,
        };
        let priority = match c.arguments.inner().get("x-priority").filter(|_| stream.is_none()) {
            None => 0,
            Some(v) => crate::broker::arguments::as_int(v)
                .and_then(|i| i64::try_from(i).ok())
                .ok_or_else(|| {
                    AmqpError::precondition_failed(format!(
                        "invalid arg 'x-priority' for queue '{name}' in vhost '{}': {{unacceptable_type,{}}}",
                        self.vhost.name,
                        crate::broker::arguments::type_name(v)
                    ))
                })?,
        };
        let timeout = self.consumer_timeout(&queue, &c.arguments)?;
        let tag: Arc<str> = Arc::from(tag_text.as_str());
        let conn = self.conn.clone();
        self.next_consumer_id += 1;
        let consumer_id = self.next_consumer_id;
        let ch = self.channel_mut(id)?;
        if ch.consumers.contains_key(&tag)
            || ch.reply_consumer.as_ref().is_some_and(|r| r.tag == tag)
        {
            return Err(AmqpError::not_allowed(format!(
                "attempt to reuse consumer tag '{tag}'"
            )));
        }
        let credit = Arc::new(ConsumerCredit::new(ch.consumer_prefetch, ch.credit.clone()));
        ch.consumers.insert(
            tag.clone(),
            ChannelConsumer {
                queue: queue.clone(),
                id: consumer_id,
                no_ack: c.no_ack,
                exclusive: c.exclusive,
                prefetch: ch.consumer_prefetch,
                arguments: c.arguments.clone(),
                timeout,
            },
        );
        let consumer = Consumer {
            id: consumer_id,
            tag: tag.clone(),
            channel: id,
            conn,
            no_ack: c.no_ack,
            exclusive: c.exclusive,
            credit,
            priority,
        };
        let added = match stream {
            Some(options) => queue.add_stream_consumer(consumer, options),
            None => queue.add_consumer(consumer),
        };
        if let Err(e) = added {
            if let Some(ch) = self.channels.get_mut(&id) {
                ch.consumers.swap_remove(&tag);
            }
            return Err(e);
        }
        // Deliveries the queue just handed out wait in the mailbox, so
        // consume-ok still reaches the client first.
        if !c.nowait {
            self.send(
                id,
                AMQPClass::Basic(AMQPMethod::ConsumeOk(basic::ConsumeOk {
                    consumer_tag: ShortString::from(tag_text),
                })),
            );
        }
        Ok(())
    }

    /// A stream consumer's checks and arguments (RabbitMQ's refusals).
    fn stream_options(
        &mut self,
        id: u16,
        c: &basic::Consume,
        tag: &str,
        queue: &str,
    ) -> Result<ConsumeOptions, AmqpError> {
        let vhost = self.vhost.name.clone();
        let ch = self.channel_mut(id)?;
        let global = ch
            .credit
            .prefetch
            .load(std::sync::atomic::Ordering::Acquire);
        stream_options::check_consume(ch.consumer_prefetch, c.no_ack, global, queue, &vhost)?;
        let now = crate::broker::message::now_ms();
        ConsumeOptions::parse(&c.arguments, tag, now, queue, &vhost)
    }

    /// basic.consume from `amq.rabbitmq.reply-to` (direct reply-to).
    fn consume_replies(&mut self, id: u16, c: basic::Consume) -> Result<(), AmqpError> {
        if !c.no_ack {
            return Err(AmqpError::precondition_failed(
                "reply consumer cannot acknowledge",
            ));
        }
        let tag: Arc<str> = match c.consumer_tag.as_str() {
            "" => Arc::from(generated_tag()),
            t => Arc::from(t),
        };
        self.next_consumer_id += 1;
        let consumer_id = self.next_consumer_id;
        let conn = self.conn.clone();
        let ch = self.channel_mut(id)?;
        if ch.reply_consumer.is_some() {
            return Err(AmqpError::precondition_failed("reply consumer already set"));
        }
        if ch.consumers.contains_key(&tag) {
            return Err(AmqpError::not_allowed(format!(
                "attempt to reuse consumer tag '{tag}'"
            )));
        }
        let name = self.vhost.reply_to.register(ReplyTarget {
            conn,
            channel: id,
            consumer_tag: tag.clone(),
            consumer_id,
        });
        let ch = self.channel_mut(id)?;
        ch.reply_consumer = Some(ReplyConsumer {
            tag: tag.clone(),
            id: consumer_id,
            name,
        });
        if !c.nowait {
            self.send(
                id,
                AMQPClass::Basic(AMQPMethod::ConsumeOk(basic::ConsumeOk {
                    consumer_tag: ShortString::from(&*tag),
                })),
            );
        }
        Ok(())
    }

    fn get(&mut self, id: u16, g: basic::Get) -> Result<(), AmqpError> {
        let name = self.queue_name(id, g.queue.as_str())?;
        self.allow(Perm::Read, Resource::Queue, &name)?;
        let queue = self.vhost.queue(&name, self.id)?;
        if queue.is_stream() {
            return Err(stream_options::unsupported(
                "basic.get",
                &name,
                &self.vhost.name,
            ));
        }
        let Some((message, remaining)) = queue.get(g.no_ack) else {
            self.counts(id).get_empty += 1;
            self.send(
                id,
                AMQPClass::Basic(AMQPMethod::GetEmpty(basic::GetEmpty {})),
            );
            return Ok(());
        };
        let redelivered = message.redelivered;
        queue.stats.got(!g.no_ack, redelivered);
        let now = self.now;
        let ch = self.channel_mut(id)?;
        match g.no_ack {
            true => ch.totals.get_no_ack += 1,
            false => ch.totals.get_ack += 1,
        }
        ch.totals.redelivered += u64::from(redelivered);
        let tag = ch.next_tag();
        let m = message.message.clone();
        let properties = queue.delivery_properties(&message, true);
        if !g.no_ack {
            ch.unacked.push(Unacked {
                tag,
                queue,
                message,
                credit: None,
                deadline: None,
                consumer_tag: None,
                delivered_at: now,
            });
        }
        self.send(
            id,
            AMQPClass::Basic(AMQPMethod::GetOk(basic::GetOk {
                delivery_tag: tag,
                redelivered,
                exchange: short_string(&m.exchange),
                routing_key: short_string(&m.routing_key),
                message_count: remaining,
            })),
        );
        self.io.out.content(id, &properties, &m.body);
        self.bound_unacked();
        Ok(())
    }

    fn settle(&mut self, id: u16, tag: u64, multiple: bool, how: Settle) -> Result<(), AmqpError> {
        let ch = self.channel_mut(id)?;
        let expired = super::consumer_timeout::forget_expired(ch, tag, multiple);
        if expired && !multiple {
            return Ok(());
        }
        let items = ch.unacked.take_checked(tag, multiple, !expired)?;
        if how != Settle::Ack {
            if let Some(u) = items.iter().find(|u| u.queue.is_stream()) {
                let e = stream_options::unsupported(
                    "basic.nack and basic.reject",
                    &u.queue.name,
                    &u.queue.vhost,
                );
                ch.unacked.put_back(items);
                return Err(e);
            }
        }
        if how == Settle::Ack {
            ch.totals.acked += items.len() as u64;
        }
        match &mut ch.tx {
            // Held (out of `unacked`) until commit; rollback puts them back.
            Some(tx) => tx.settlements.push((items, how)),
            None => ch.settle(items, how),
        }
        Ok(())
    }

    fn recover(&mut self, id: u16, requeue: bool) -> Result<(), AmqpError> {
        if !requeue {
            return Err(AmqpError::not_implemented("requeue=false"));
        }
        let ch = self.channel_mut(id)?;
        let items = ch.unacked.take_all();
        if let Some(u) = items.iter().find(|u| u.queue.is_stream()) {
            let e = stream_options::unsupported("basic.recover", &u.queue.name, &u.queue.vhost);
            ch.unacked.put_back(items);
            return Err(e);
        }
        ch.settle(items, Settle::Requeue);
        Ok(())
    }

    /// Write a delivery from a queue to the client, or hand it back if its
    /// consumer is gone.
    pub(super) fn deliver(&mut self, d: Delivery) {
        let Delivery {
            channel: id,
            consumer_id,
            consumer_tag,
            queue,
            message,
            credit,
        } = d;
        let now = self.now;
        let live = self.channels.get_mut(&id).filter(|ch| {
            let queue_consumer = ch
                .consumers
                .get(&consumer_tag)
                .is_some_and(|c| c.id == consumer_id);
            let reply_consumer = ch
                .reply_consumer
                .as_ref()
                .is_some_and(|r| r.id == consumer_id && r.tag == consumer_tag);
            ch.state == super::channel::ChannelState::Open && (queue_consumer || reply_consumer)
        });
        let Some(ch) = live else {
            // The consumer went away while this was in the mailbox (a
            // direct reply is then dropped, as in RabbitMQ).
            let Some(queue) = queue else {
                return;
            };
            queue.return_undelivered(message);
            if let Some(c) = credit {
                c.release();
                // Channel-wide credit freed: any of the channel's queues
                // may be able to deliver now.
                if let Some(ch) = self.channels.get(&id) {
                    for queue in distinct_queues(ch.consumers.values().map(|c| &c.queue)) {
                        queue.dispatch();
                    }
                }
            }
            return;
        };
        let tag = ch.next_tag();
        let m = message.message.clone();
        let properties = match &queue {
            Some(q) => q.delivery_properties(&message, false),
            None => m.properties.clone(),
        };
        let redelivered = message.redelivered;
        if let Some(q) = &queue {
            q.stats.delivered(credit.is_some(), redelivered);
            match credit.is_some() {
                true => ch.totals.delivered_ack += 1,
                false => ch.totals.delivered_no_ack += 1,
            }
            ch.totals.redelivered += u64::from(redelivered);
        }
        match (queue, credit) {
            (Some(queue), Some(credit)) => {
                let timeout = ch.consumers.get(&consumer_tag).and_then(|c| c.timeout);
                let deadline = timeout.map(|t| {
                    ch.had_deadlines = true;
                    (
                        std::time::Instant::now() + t,
                        consumer_tag.clone(),
                        consumer_id,
                    )
                });
                ch.unacked.push(Unacked {
                    tag,
                    queue,
                    message,
                    credit: Some(credit),
                    deadline,
                    consumer_tag: Some(consumer_tag.clone()),
                    delivered_at: now,
                })
            }
            (Some(queue), None) => {
                if let Some(r) = message.disk {
                    // No-ack: delivered means settled.
                    queue.settle([r]);
                }
            }
            (None, _) => {}
        }
        self.io.out.deliver(
            id,
            &consumer_tag,
            tag,
            redelivered,
            &m.exchange,
            &m.routing_key,
        );
        self.io.out.content(id, &properties, &m.body);
    }
}

fn generated_tag() -> String {
    crate::broker::vhost::generated_name("amq.ctag-")
}
