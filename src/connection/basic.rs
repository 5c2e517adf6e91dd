//! The basic class: publish (with content assembly, routing, mandatory
//! returns and confirms), consume/cancel, get, ack/nack/reject, recover, qos,
//! and writing deliveries to the client.

use std::sync::Arc;

use amq_protocol::protocol::basic::{self, AMQPMethod};
use amq_protocol::protocol::AMQPClass;
use amq_protocol::types::{AMQPValue, FieldTable, ShortString};
use bytes::Bytes;

use super::backpressure::{add_throttle, Throttle};
use super::channel::{distinct_queues, ChannelConsumer, ReplyConsumer, Settle, Unacked};
use super::content::{ContentState, PendingPublish};
use super::session::Session;
use super::tx_confirm::store_failed;
use crate::auth::access::{Perm, Resource};
use crate::broker::consumer::{Consumer, ConsumerCredit, Delivery};
use crate::broker::delayed::delay_ms;
use crate::broker::message::{
    decode_properties, delivery_mode, encode_properties, properties_well_formed, Message,
};
use crate::broker::queue::{Queue, Stored};
use crate::broker::reply_to::{ReplyTarget, ReplyTargets, REPLY_QUEUE};
use crate::protocol::{short_string, AmqpError};
use amq_protocol::protocol::basic::AMQPProperties;

/// A message and the queues it was routed to, not yet enqueued.
#[derive(Debug)]
pub struct Routed {
    pub message: Arc<Message>,
    pub queues: Vec<Arc<Queue>>,
    pub mandatory: bool,
    /// Not for queues: a direct reply, or a delayed message to hold. Done
    /// at enqueue, so that in a transaction it happens at commit.
    pub deferred: Option<Deferred>,
}

/// What a routed message becomes instead of going to queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deferred {
    /// A direct reply, to the channel holding its routing key as name.
    Reply,
    /// Held by its x-delayed-message exchange for this many milliseconds.
    Delay(u64),
}

/// A fully received publish, ready to route.
#[derive(Debug)]
pub struct CompletePublish {
    pub publish: basic::Publish,
    pub properties: Bytes,
    pub body: Bytes,
}

impl Session {
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

    pub(super) fn content_header(
        &mut self,
        id: u16,
        class_id: u16,
        body_size: u64,
        properties: Bytes,
    ) -> Result<(), AmqpError> {
        let max = self.broker.config.max_message_size;
        let ch = self.channel_mut(id)?;
        let publish = match std::mem::take(&mut ch.content) {
            ContentState::ExpectHeader(p) => p,
            ContentState::Idle => {
                return Err(AmqpError::unexpected_frame(
                    "expected method frame, got non method frame instead",
                ))
            }
            ContentState::ExpectBody(_) => {
                return Err(AmqpError::unexpected_frame(
                    "expected content body, got non content body frame instead",
                ))
            }
        };
        if class_id != 60 {
            return Err(AmqpError::unexpected_frame(format!(
                "expected content header for class 60, got one for class {class_id} instead"
            ))
            .at(60, 40));
        }
        if body_size > max {
            return Err(AmqpError::precondition_failed(format!(
                "message size {body_size} is larger than configured max size {max}"
            ))
            .at(60, 40));
        }
        let pending = PendingPublish {
            publish,
            properties,
            body_size,
            parts: Vec::new(),
            received: 0,
        };
        if body_size == 0 {
            return self.complete_publish(id, pending);
        }
        self.check_content_budget(body_size)?;
        self.channel_mut(id)?.content = ContentState::ExpectBody(pending);
        Ok(())
    }

    pub(super) fn content_body(&mut self, id: u16, payload: Bytes) -> Result<(), AmqpError> {
        let ch = self.channel_mut(id)?;
        let ContentState::ExpectBody(pending) = &mut ch.content else {
            let what = if matches!(ch.content, ContentState::ExpectHeader(_)) {
                "expected content header for class 60, got non content header frame instead"
            } else {
                "expected method frame, got non method frame instead"
            };
            return Err(AmqpError::unexpected_frame(what));
        };
        pending.received += payload.len() as u64;
        if pending.received > pending.body_size {
            // Like RabbitMQ: the message can no longer complete; the next
            // method frame on this channel is the error (505). Keep nothing.
            pending.parts.clear();
            return Ok(());
        }
        if !payload.is_empty() {
            pending.parts.push(payload);
        }
        if pending.received == pending.body_size {
            if let ContentState::ExpectBody(done) = std::mem::take(&mut ch.content) {
                return self.complete_publish(id, done);
            }
        }
        Ok(())
    }

    fn complete_publish(&mut self, id: u16, pending: PendingPublish) -> Result<(), AmqpError> {
        let (publish, properties, body) = pending.body();
        let complete = CompletePublish {
            publish,
            properties,
            body,
        };
        // Validate and route now (errors surface at the publish, as in
        // RabbitMQ); in a transaction, enqueue only at commit.
        let routed = self.route_publish(id, complete)?;
        self.count_published(id, &routed.message);
        if self.channel_mut(id)?.tx.is_some() {
            let bytes = crate::store::message_bytes(&routed.message);
            self.check_transaction_budget(bytes)?;
            if let Some(tx) = &mut self.channel_mut(id)?.tx {
                tx.bytes += bytes;
                tx.publishes.push(routed);
            }
            return Ok(());
        }
        let stored = self.enqueue(id, routed);
        let ch = self.channel_mut(id)?;
        let confirming = ch.confirms.is_some();
        ch.totals.published_confirm += u64::from(confirming);
        match &mut ch.confirms {
            Some(confirms) => {
                let ticket = confirms.push(stored);
                self.sync_wanted = self.sync_wanted.max(ticket);
            }
            None if stored == Stored::Failed => {
                return Err(store_failed(self.broker.store.health()))
            }
            None => {}
        }
        Ok(())
    }

    /// Validate a complete message and find the queues it goes to.
    pub(super) fn route_publish(
        &mut self,
        channel: u16,
        p: CompletePublish,
    ) -> Result<Routed, AmqpError> {
        let (exchange, routing_key) = (p.publish.exchange.as_str(), p.publish.routing_key.as_str());
        self.allow_publish(exchange, routing_key)
            .map_err(|e| e.at(60, 40))?;
        let mut properties = p.properties;
        // Decoding allocates (header tables), so only messages carrying a
        // property the broker acts on are decoded.
        let mut props = if needs_decoding(&properties) {
            decode_properties(&properties)
        } else if properties_well_formed(&properties) {
            Some(AMQPProperties::default())
        } else {
            None
        };
        if props.is_none() {
            // Undecodable properties (an unknown field type in the headers):
            // RabbitMQ fails the connection with a bare 541.
            return Err(AmqpError {
                kind: crate::protocol::ErrorKind::InternalError,
                text: "INTERNAL_ERROR".to_string(),
                class_id: 0,
                method_id: 0,
            });
        }
        if let Some(pr) = props.as_mut() {
            if pr
                .reply_to()
                .as_ref()
                .is_some_and(|r| r.as_str() == REPLY_QUEUE)
            {
                // Direct reply-to: replies to this channel's reply consumer.
                let name = match self
                    .channels
                    .get(&channel)
                    .and_then(|c| c.reply_consumer.as_ref())
                {
                    Some(r) => r.name.clone(),
                    None => {
                        return Err(AmqpError::precondition_failed(
                            "fast reply consumer does not exist",
                        )
                        .at(60, 40))
                    }
                };
                // Kept in `props` too: a BCC rewrite below starts from it.
                *pr = pr.clone().with_reply_to(ShortString::from(name));
                if let Some(encoded) = encode_properties(pr) {
                    properties = encoded;
                }
            }
        }
        let headers = props.as_ref().and_then(|p| p.headers().clone());
        if let Some(user_id) = props.as_ref().and_then(|p| p.user_id().clone()) {
            if user_id.as_str() != self.user {
                return Err(AmqpError::precondition_failed(format!(
                    "user_id property set to '{}' but authenticated user was '{}'",
                    user_id, self.user
                ))
                .at(60, 40));
            }
        }
        let mut expiration_ms = None;
        if let Some(exp) = props.as_ref().and_then(|p| p.expiration().clone()) {
            expiration_ms = Some(check_expiration(exp.as_str()).map_err(|e| e.at(60, 40))?);
        }
        // CC and BCC add routing keys; most messages have neither.
        let mut extra_keys: Vec<String> = Vec::new();
        if let Some(h) = &headers {
            for k in ["CC", "BCC"] {
                if let Some(AMQPValue::FieldArray(arr)) = h.inner().get(k) {
                    for v in arr.as_slice() {
                        match v {
                            AMQPValue::LongString(s) => {
                                extra_keys.push(String::from_utf8_lossy(s.as_bytes()).into_owned())
                            }
                            AMQPValue::ShortString(s) => extra_keys.push(s.as_str().to_string()),
                            _ => {}
                        }
                    }
                }
            }
            if h.contains_key("BCC") {
                // BCC is removed from what consumers see.
                if let Some(mut pr) = props.clone() {
                    let mut kept = FieldTable::default();
                    for (k, v) in h {
                        if k.as_str() != "BCC" {
                            kept.insert(k.clone(), v.clone());
                        }
                    }
                    pr = pr.with_headers(kept);
                    if let Some(encoded) = encode_properties(&pr) {
                        properties = encoded;
                    }
                }
            }
        }
        let rk = p.publish.routing_key.as_str();
        if p.publish.exchange.as_str().is_empty() && ReplyTargets::is_reply_name(rk) {
            // A direct reply goes straight to the requester's channel (or
            // nowhere, if it is gone).
            let message = Arc::new(Message {
                exchange: Arc::from(""),
                routing_key: Arc::from(rk),
                persistent: false,
                expiration_ms: None,
                properties,
                body: p.body,
            });
            return Ok(Routed {
                message,
                queues: Vec::new(),
                mandatory: false,
                deferred: Some(Deferred::Reply),
            });
        }
        let message = |properties: Bytes, body: Bytes| {
            Arc::new(Message {
                exchange: Arc::from(p.publish.exchange.as_str()),
                routing_key: Arc::from(rk),
                persistent: delivery_mode(&properties) == 2,
                expiration_ms,
                properties,
                body,
            })
        };
        if let Some(ms) = delay_ms(headers.as_ref()) {
            if self.vhost.is_delayed_exchange(p.publish.exchange.as_str()) {
                // Routed when due (the delayed-message plugin does not
                // return unroutable delayed messages either).
                let (properties, body) = self.compacted(channel, &properties, p.body);
                return Ok(Routed {
                    message: message(properties, body),
                    queues: Vec::new(),
                    mandatory: false,
                    deferred: Some(Deferred::Delay(ms)),
                });
            }
        }
        let mut queues: Vec<Arc<Queue>> = Vec::new();
        let routed = if extra_keys.is_empty() {
            self.vhost.route(
                p.publish.exchange.as_str(),
                &[rk],
                headers.as_ref(),
                &mut queues,
            )
        } else {
            let mut keys: Vec<&str> = vec![rk];
            keys.extend(extra_keys.iter().map(String::as_str));
            self.vhost.route(
                p.publish.exchange.as_str(),
                &keys,
                headers.as_ref(),
                &mut queues,
            )
        };
        routed.map_err(|e| e.at(60, 40))?;
        let kept = queues.iter().any(|q| q.would_keep())
            || self.channels.get(&channel).is_some_and(|c| c.tx.is_some());
        let (properties, body) = match kept {
            true => self.compacted(channel, &properties, p.body),
            false => (properties, p.body),
        };
        Ok(Routed {
            message: message(properties, body),
            queues,
            mandatory: p.publish.mandatory,
            deferred: None,
        })
    }

    /// A message that will be kept, copied out of the read buffer (see
    /// `content::compact`).
    fn compacted(&mut self, channel: u16, properties: &Bytes, body: Bytes) -> (Bytes, Bytes) {
        match self.channels.get_mut(&channel) {
            Some(ch) => super::content::compact(properties, body, &mut ch.last_properties),
            None => (properties.clone(), body),
        }
    }

    /// Put a routed message on its queues; mandatory and unroutable means
    /// basic.return.
    pub(super) fn enqueue(&mut self, id: u16, r: Routed) -> Stored {
        match r.deferred {
            Some(Deferred::Reply) => {
                let name = r.message.routing_key.clone();
                if let Some(requester) = self.vhost.reply_to.deliver(&name, r.message) {
                    if requester.is_backlogged() {
                        add_throttle(&mut self.throttled, Throttle::Requester(requester));
                    }
                }
                return Stored::Done;
            }
            Some(Deferred::Delay(ms)) => {
                let exchange = r.message.exchange.clone();
                // An exchange deleted since the publish (in a transaction)
                // drops the message.
                return self
                    .vhost
                    .hold_delayed(&exchange, r.message, ms)
                    .unwrap_or(Stored::Done);
            }
            None => {}
        }
        if r.queues.is_empty() {
            let counts = self.counts(id);
            match r.mandatory {
                true => counts.unroutable_returned += 1,
                false => counts.unroutable_dropped += 1,
            }
            if r.mandatory {
                let m = &r.message;
                self.send(
                    id,
                    AMQPClass::Basic(AMQPMethod::Return(basic::Return {
                        reply_code: 312,
                        reply_text: ShortString::from("NO_ROUTE"),
                        exchange: short_string(&m.exchange),
                        routing_key: short_string(&m.routing_key),
                    })),
                );
                self.io.out.content(id, &m.properties, &m.body);
            }
            return Stored::Done;
        }
        self.count_routed(id, &r.message.exchange);
        let mut stored = Stored::Done;
        for q in &r.queues {
            stored = stored.and(q.publish(r.message.clone()));
            if q.is_saturated() {
                add_throttle(&mut self.throttled, Throttle::Queue(q.clone()));
            }
        }
        stored
    }

    fn consume(&mut self, id: u16, c: basic::Consume) -> Result<(), AmqpError> {
        if c.queue.as_str() == REPLY_QUEUE {
            return self.consume_replies(id, c);
        }
        let name = self.queue_name(id, c.queue.as_str())?;
        self.allow(Perm::Read, Resource::Queue, &name)?;
        let queue = self.vhost.queue(&name, self.id)?;
        let priority = match c.arguments.inner().get("x-priority") {
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
        let tag_text = if c.consumer_tag.as_str().is_empty() {
            generated_tag()
        } else {
            c.consumer_tag.as_str().to_string()
        };
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
            },
        );
        let added = queue.add_consumer(Consumer {
            id: consumer_id,
            tag: tag.clone(),
            channel: id,
            conn,
            no_ack: c.no_ack,
            exclusive: c.exclusive,
            credit,
            priority,
        });
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
        let items = ch.unacked.take(tag, multiple)?;
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
            (Some(queue), Some(credit)) => ch.unacked.push(Unacked {
                tag,
                queue,
                message,
                credit: Some(credit),
            }),
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

/// Whether the properties carry headers, reply_to, expiration or user_id,
/// the ones routing and validation look at (bits 13, 9, 8 and 4 of the
/// property flags).
fn needs_decoding(properties: &[u8]) -> bool {
    const ACTED_ON: u16 = (1 << 13) | (1 << 9) | (1 << 8) | (1 << 4);
    match properties {
        [hi, lo, ..] => u16::from_be_bytes([*hi, *lo]) & ACTED_ON != 0,
        _ => true,
    }
}

/// The expiration property must be a non-negative integer (milliseconds).
fn check_expiration(exp: &str) -> Result<u64, AmqpError> {
    match exp.parse::<i64>() {
        Ok(n) if n < 0 => Err(AmqpError::precondition_failed(format!(
            "invalid expiration '{exp}': {{value_negative,{n}}}"
        ))),
        Ok(n) => Ok(n as u64),
        Err(_) => Err(AmqpError::precondition_failed(format!(
            "invalid expiration '{exp}': no_integer"
        ))),
    }
}

fn generated_tag() -> String {
    crate::broker::vhost::generated_name("amq.ctag-")
}
