//! The exchange and queue classes: declare, delete, bind, unbind, purge.

use std::sync::Arc;

use amq_protocol::protocol::{exchange, queue, AMQPClass};
use amq_protocol::types::ShortString;

use super::session::Session;
use crate::broker::exchange::Destination;
use crate::protocol::AmqpError;

impl Session {
    /// Resolve a queue name: empty means the channel's last declared queue.
    pub(super) fn queue_name(&mut self, id: u16, name: &str) -> Result<String, AmqpError> {
        if !name.is_empty() {
            return Ok(name.to_string());
        }
        self.channel_mut(id)?
            .last_queue
            .clone()
            .ok_or_else(|| AmqpError::not_found("no previously declared queue"))
    }

    pub(super) fn exchange_method(
        &mut self,
        id: u16,
        m: exchange::AMQPMethod,
    ) -> Result<(), AmqpError> {
        let reply = match m {
            exchange::AMQPMethod::Declare(d) => {
                self.vhost.declare_exchange(&d)?;
                (!d.nowait).then_some(exchange::AMQPMethod::DeclareOk(exchange::DeclareOk {}))
            }
            exchange::AMQPMethod::Delete(d) => {
                self.vhost
                    .delete_exchange(d.exchange.as_str(), d.if_unused)?;
                (!d.nowait).then_some(exchange::AMQPMethod::DeleteOk(exchange::DeleteOk {}))
            }
            exchange::AMQPMethod::Bind(b) => {
                let dest = Destination::Exchange(Arc::from(b.destination.as_str()));
                self.vhost.bind(
                    b.source.as_str(),
                    dest,
                    b.routing_key.as_str(),
                    &b.arguments,
                    self.id,
                )?;
                (!b.nowait).then_some(exchange::AMQPMethod::BindOk(exchange::BindOk {}))
            }
            exchange::AMQPMethod::Unbind(b) => {
                let dest = Destination::Exchange(Arc::from(b.destination.as_str()));
                self.vhost.unbind(
                    b.source.as_str(),
                    dest,
                    b.routing_key.as_str(),
                    &b.arguments,
                    self.id,
                )?;
                (!b.nowait).then_some(exchange::AMQPMethod::UnbindOk(exchange::UnbindOk {}))
            }
            _ => {
                return Err(AmqpError::command_invalid(
                    "unexpected exchange method from client",
                ))
            }
        };
        if let Some(r) = reply {
            self.send(id, AMQPClass::Exchange(r));
        }
        Ok(())
    }

    pub(super) fn queue_method(&mut self, id: u16, m: queue::AMQPMethod) -> Result<(), AmqpError> {
        let reply = match m {
            queue::AMQPMethod::Declare(d) => {
                let info = self.vhost.declare_queue(&d, self.id)?;
                self.channel_mut(id)?.last_queue = Some(info.name.clone());
                (!d.nowait).then(|| {
                    queue::AMQPMethod::DeclareOk(queue::DeclareOk {
                        queue: ShortString::from(info.name),
                        message_count: info.message_count,
                        consumer_count: info.consumer_count,
                    })
                })
            }
            queue::AMQPMethod::Bind(b) => {
                let dest = Destination::Queue(Arc::from(self.queue_name(id, b.queue.as_str())?));
                self.vhost.bind(
                    b.exchange.as_str(),
                    dest,
                    b.routing_key.as_str(),
                    &b.arguments,
                    self.id,
                )?;
                (!b.nowait).then_some(queue::AMQPMethod::BindOk(queue::BindOk {}))
            }
            queue::AMQPMethod::Unbind(b) => {
                let dest = Destination::Queue(Arc::from(self.queue_name(id, b.queue.as_str())?));
                self.vhost.unbind(
                    b.exchange.as_str(),
                    dest,
                    b.routing_key.as_str(),
                    &b.arguments,
                    self.id,
                )?;
                Some(queue::AMQPMethod::UnbindOk(queue::UnbindOk {}))
            }
            queue::AMQPMethod::Purge(p) => {
                let name = self.queue_name(id, p.queue.as_str())?;
                let q = self.vhost.queue(&name, self.id)?;
                let message_count = q.purge();
                (!p.nowait).then_some(queue::AMQPMethod::PurgeOk(queue::PurgeOk { message_count }))
            }
            queue::AMQPMethod::Delete(d) => {
                let name = self.queue_name(id, d.queue.as_str())?;
                let message_count =
                    self.vhost
                        .delete_queue(&name, d.if_unused, d.if_empty, self.id)?;
                (!d.nowait).then_some(queue::AMQPMethod::DeleteOk(queue::DeleteOk {
                    message_count,
                }))
            }
            _ => {
                return Err(AmqpError::command_invalid(
                    "unexpected queue method from client",
                ))
            }
        };
        if let Some(r) = reply {
            self.send(id, AMQPClass::Queue(r));
        }
        Ok(())
    }
}
