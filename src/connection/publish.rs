//! Publishing: content assembly (header and body frames), validation and
//! routing of a complete message, then enqueueing it (at once, or at
//! commit in a transaction), with mandatory returns, direct replies and
//! delayed messages.

use std::sync::Arc;

use amq_protocol::protocol::basic::{self, AMQPMethod};
use amq_protocol::protocol::AMQPClass;
use amq_protocol::types::{AMQPValue, FieldTable, ShortString};
use bytes::Bytes;

use super::backpressure::{add_throttle, Throttle};
use super::content::{ContentState, PendingPublish};
use super::session::Session;
use super::tx_confirm::store_failed;
use crate::broker::dedup::Check;
use crate::broker::delayed::delay_ms;
use crate::broker::message::{
    decode_properties, delivery_mode, encode_properties, properties_well_formed, Message,
};
use crate::broker::queue::{Queue, Stored};
use crate::broker::reply_to::{ReplyTargets, REPLY_QUEUE};
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
    /// The properties, when the vhost deduplicates: keys are checked and
    /// recorded at enqueue (in a transaction, at commit), and forgotten if
    /// the message is not stored, so a retry is never wrongly dropped.
    pub dedup: Option<Box<AMQPProperties>>,
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
        let mut props = if needs_decoding(&properties, self.vhost.reads_ids()) {
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
                dedup: None,
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
                    dedup: self.vhost.dedup_props(props.as_ref()),
                });
            }
        }
        let mut queues: Vec<Arc<Queue>> = Vec::new();
        let routed = if extra_keys.is_empty() {
            self.vhost.route(
                p.publish.exchange.as_str(),
                &[rk],
                props.as_ref(),
                &mut queues,
            )
        } else {
            let mut keys: Vec<&str> = vec![rk];
            keys.extend(extra_keys.iter().map(String::as_str));
            self.vhost.route(
                p.publish.exchange.as_str(),
                &keys,
                props.as_ref(),
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
            dedup: self.vhost.dedup_props(props.as_ref()),
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
        let now = crate::broker::message::now_ms();
        let exchange_key = match r.dedup.as_deref() {
            Some(props) => match self.vhost.exchange_dedup(&r.message.exchange) {
                Some(cache) => match cache.check(props, now) {
                    // In already: confirmed, never returned.
                    Check::Duplicate => return Stored::Done,
                    Check::New(key) => Some((cache, key)),
                    Check::NoKey => None,
                },
                None => None,
            },
            None => None,
        };
        let stored = self.enqueue_checked(id, r, now);
        if let (Stored::Rejected(_) | Stored::Failed, Some((cache, key))) = (stored, exchange_key) {
            cache.forget(&key);
        }
        stored
    }

    /// `enqueue` past the exchange's deduplication.
    fn enqueue_checked(&mut self, id: u16, r: Routed, now: u64) -> Stored {
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
            let key = match (r.dedup.as_deref(), &q.dedup) {
                (Some(props), Some(cache)) => match cache.check(props, now) {
                    // In already: confirmed, never returned.
                    Check::Duplicate => continue,
                    Check::New(key) => Some(key),
                    Check::NoKey => None,
                },
                _ => None,
            };
            let outcome = q.publish(r.message.clone());
            if let (Stored::Rejected(_) | Stored::Failed, Some(key), Some(cache)) =
                (outcome, key, &q.dedup)
            {
                cache.forget(&key);
            }
            stored = stored.and(outcome);
            if q.is_saturated() {
                add_throttle(&mut self.throttled, Throttle::Queue(q.clone()));
            }
        }
        stored
    }
}

/// Whether the properties carry headers, reply_to, expiration or user_id,
/// the ones routing and validation look at (bits 13, 9, 8 and 4 of the
/// property flags); with `ids`, also correlation_id, message_id or
/// timestamp (bits 10, 7 and 6), which the vhost's consistent-hash
/// exchanges hash on or its deduplication reads.
fn needs_decoding(properties: &[u8], ids: bool) -> bool {
    const ACTED_ON: u16 = (1 << 13) | (1 << 9) | (1 << 8) | (1 << 4);
    const IDS: u16 = (1 << 10) | (1 << 7) | (1 << 6);
    let wanted = if ids { ACTED_ON | IDS } else { ACTED_ON };
    match properties {
        [hi, lo, ..] => u16::from_be_bytes([*hi, *lo]) & wanted != 0,
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
