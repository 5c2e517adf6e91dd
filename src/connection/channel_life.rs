//! A connection's channels coming and going: the channel class (open,
//! flow, close), soft errors that close one channel, hard errors that
//! close the connection, and releasing what a closing channel held
//! (consumers cancelled, unacked deliveries requeued, counters kept).

use std::sync::Arc;
use std::time::Instant;

use amq_protocol::protocol::{channel, AMQPClass};
use amq_protocol::types::ShortString;

use super::channel::{Channel, ChannelState, Settle};
use super::content::ContentState;
use super::handshake::close_method;
use super::session::Session;
use crate::broker::queue::Queue;
use crate::protocol::AmqpError;

impl Session {
    pub(super) fn channel_class(
        &mut self,
        id: u16,
        m: channel::AMQPMethod,
    ) -> Result<(), AmqpError> {
        match m {
            channel::AMQPMethod::Open(_) => {
                Err(AmqpError::channel_error("second 'channel.open' seen"))
            }
            channel::AMQPMethod::Flow(f) => {
                if !f.active {
                    return Err(AmqpError::not_implemented("active=false"));
                }
                self.send(
                    id,
                    AMQPClass::Channel(channel::AMQPMethod::FlowOk(channel::FlowOk {
                        active: true,
                    })),
                );
                Ok(())
            }
            channel::AMQPMethod::Close(_) => {
                if let Some(mut ch) = self.channels.remove(&id) {
                    self.release_channel(&mut ch);
                }
                self.send(
                    id,
                    AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})),
                );
                Ok(())
            }
            channel::AMQPMethod::CloseOk(_) => {
                Err(AmqpError::command_invalid("unimplemented method"))
            }
            _ => Err(AmqpError::command_invalid("unexpected channel method")),
        }
    }

    pub(super) fn open_channel(&mut self, id: u16) -> Result<(), AmqpError> {
        let open = self.channels.len();
        if open >= usize::from(self.channel_max) {
            return Err(AmqpError::not_allowed(format!(
                "number of channels opened ({open}) has reached the negotiated channel_max ({})",
                self.channel_max
            )));
        }
        self.broker.check_channel_limit(&self.user)?;
        self.channels
            .insert(id, Channel::new(id, self.unacked_bytes.clone()));
        self.count_channels();
        let opened = &self.broker.connections.channels_opened_total;
        opened.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.send(
            id,
            AMQPClass::Channel(channel::AMQPMethod::OpenOk(channel::OpenOk {})),
        );
        Ok(())
    }

    /// Tell the registry how many channels are open (for users'
    /// `max-channels`); a channel closed on an error no longer counts.
    fn count_channels(&self) {
        let open = self
            .channels
            .values()
            .filter(|c| c.state == ChannelState::Open)
            .count();
        let open = u32::try_from(open).unwrap_or(u32::MAX);
        self.entry
            .open_channels
            .store(open, std::sync::atomic::Ordering::Relaxed);
    }

    /// Soft error: close the channel, release what it held.
    pub(super) fn channel_error(&mut self, id: u16, e: AmqpError) {
        tracing::debug!(channel = id, code = e.kind.code(), text = %e.text, "channel error");
        let Some(mut ch) = self.channels.remove(&id) else {
            return;
        };
        self.release_channel(&mut ch);
        ch.state = ChannelState::Closing;
        ch.content = ContentState::Idle;
        ch.tx = None;
        ch.confirms = None;
        self.channels.insert(id, ch);
        self.send(
            id,
            AMQPClass::Channel(channel::AMQPMethod::Close(channel::Close {
                reply_code: e.kind.code(),
                reply_text: ShortString::from(e.short_text()),
                class_id: e.class_id,
                method_id: e.method_id,
            })),
        );
    }

    /// Hard error: send Connection.Close and wait for Close-Ok.
    pub(super) fn connection_error(&mut self, e: AmqpError) {
        tracing::info!(code = e.kind.code(), text = %e.text, class_id = e.class_id, method_id = e.method_id, "closing connection on error");
        // Like RabbitMQ, channels end before the Close goes out: consumers
        // are cancelled and unacked messages requeued, so nothing is sent
        // that the client would discard after seeing Close.
        self.release_all_channels();
        // Close-Ok must be readable: stop holding this connection back.
        self.throttled.clear();
        self.alarm.blocked = false;
        self.io.out.method(0, &close_method(&e));
        self.closing_since = Some(Instant::now());
    }

    pub(super) fn release_all_channels(&mut self) {
        let ids: Vec<u16> = self.channels.keys().copied().collect();
        for id in ids {
            if let Some(mut ch) = self.channels.remove(&id) {
                self.release_channel(&mut ch);
            }
        }
    }

    /// Cancel a channel's consumers and requeue its unacked deliveries.
    pub(super) fn release_channel(&mut self, ch: &mut Channel) {
        // A channel closed on an error was released then; it only waits
        // for the client's Close-Ok.
        if ch.state == ChannelState::Closing {
            return;
        }
        self.count_channels();
        self.retire_counts(ch);
        let closed = &self.broker.connections.channels_closed_total;
        closed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Settlements of an uncommitted transaction never happened.
        if let Some(tx) = ch.tx.take() {
            tx.roll_back(ch);
        }
        // One call per queue, however many consumers the channel has on
        // it.
        let mut by_queue: indexmap::IndexMap<*const Queue, (Arc<Queue>, Vec<u64>)> =
            indexmap::IndexMap::new();
        for (_, c) in ch.consumers.drain(..) {
            by_queue
                .entry(Arc::as_ptr(&c.queue))
                .or_insert_with(|| (c.queue.clone(), Vec::new()))
                .1
                .push(c.id);
        }
        let left: Vec<Arc<Queue>> = by_queue
            .into_values()
            .map(|(q, ids)| {
                if q.remove_consumers(self.id, &ids).should_auto_delete {
                    self.vhost.delete_unused_queue(&q);
                }
                q
            })
            .collect();
        if let Some(r) = ch.reply_consumer.take() {
            self.vhost.reply_to.unregister(&r.name);
        }
        // Unacked messages go back first, then the queues the channel
        // consumed from hand out to their other consumers.
        let unacked = ch.unacked.take_all();
        ch.settle(unacked, Settle::Requeue);
        for q in left {
            q.dispatch();
        }
    }
}
