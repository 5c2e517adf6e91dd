//! The exchange and queue classes: declare, delete, bind, unbind, purge.

use std::sync::Arc;

use amq_protocol::protocol::{exchange, queue, AMQPClass};
use amq_protocol::types::ShortString;

use super::session::Session;
use crate::auth::access::{Perm, Resource};
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
        // Each reply waits for its change to be durable (ticket 0: no
        // durable change).
        let (reply, ticket) = match m {
            exchange::AMQPMethod::Declare(d) => {
                if !d.passive {
                    let name = d.exchange.as_str();
                    self.broker.access.check_exchange_declare(
                        &self.user,
                        &self.vhost.name,
                        name,
                        &d.arguments,
                    )?;
                }
                let ticket = self.vhost.declare_exchange(&d)?;
                let ok = exchange::AMQPMethod::DeclareOk(exchange::DeclareOk {});
                ((!d.nowait).then_some(ok), ticket)
            }
            exchange::AMQPMethod::Delete(d) => {
                self.allow(Perm::Configure, Resource::Exchange, d.exchange.as_str())?;
                let ticket = self
                    .vhost
                    .delete_exchange(d.exchange.as_str(), d.if_unused)?;
                let ok = exchange::AMQPMethod::DeleteOk(exchange::DeleteOk {});
                ((!d.nowait).then_some(ok), ticket)
            }
            exchange::AMQPMethod::Bind(b) => {
                self.allow_bind(
                    Resource::Exchange,
                    b.destination.as_str(),
                    b.source.as_str(),
                    b.routing_key.as_str(),
                )?;
                let dest = Destination::Exchange(Arc::from(b.destination.as_str()));
                let ticket = self.vhost.bind(
                    b.source.as_str(),
                    dest,
                    b.routing_key.as_str(),
                    &b.arguments,
                    self.id,
                )?;
                let ok = exchange::AMQPMethod::BindOk(exchange::BindOk {});
                ((!b.nowait).then_some(ok), ticket)
            }
            exchange::AMQPMethod::Unbind(b) => {
                self.allow_bind(
                    Resource::Exchange,
                    b.destination.as_str(),
                    b.source.as_str(),
                    b.routing_key.as_str(),
                )?;
                let dest = Destination::Exchange(Arc::from(b.destination.as_str()));
                let ticket = self.vhost.unbind(
                    b.source.as_str(),
                    dest,
                    b.routing_key.as_str(),
                    &b.arguments,
                    self.id,
                )?;
                let ok = exchange::AMQPMethod::UnbindOk(exchange::UnbindOk {});
                ((!b.nowait).then_some(ok), ticket)
            }
            _ => {
                return Err(AmqpError::command_invalid(
                    "unexpected exchange method from client",
                ))
            }
        };
        if let Some(r) = reply {
            self.send_when_synced(id, AMQPClass::Exchange(r), ticket);
        }
        Ok(())
    }

    pub(super) fn queue_method(&mut self, id: u16, m: queue::AMQPMethod) -> Result<(), AmqpError> {
        let (reply, ticket) = match m {
            queue::AMQPMethod::Declare(d) => {
                if !d.passive {
                    // A server-named queue is checked as RabbitMQ does, by
                    // a name of the form it will get.
                    let name = match d.queue.as_str() {
                        "" => crate::broker::vhost::generated_name("amq.gen-"),
                        n => n.to_string(),
                    };
                    self.broker.access.check_queue_declare(
                        &self.user,
                        &self.vhost.name,
                        &name,
                        &d.arguments,
                    )?;
                }
                let info = self.vhost.declare_queue(&d, self.id)?;
                self.channel_mut(id)?.last_queue = Some(info.name.clone());
                let ticket = info.ticket;
                let ok = (!d.nowait).then(|| {
                    queue::AMQPMethod::DeclareOk(queue::DeclareOk {
                        queue: ShortString::from(info.name),
                        message_count: info.message_count,
                        consumer_count: info.consumer_count,
                    })
                });
                (ok, ticket)
            }
            queue::AMQPMethod::Bind(b) => {
                let queue = self.queue_name(id, b.queue.as_str())?;
                self.allow_bind(
                    Resource::Queue,
                    &queue,
                    b.exchange.as_str(),
                    b.routing_key.as_str(),
                )?;
                let dest = Destination::Queue(Arc::from(queue));
                let ticket = self.vhost.bind(
                    b.exchange.as_str(),
                    dest,
                    b.routing_key.as_str(),
                    &b.arguments,
                    self.id,
                )?;
                let ok = queue::AMQPMethod::BindOk(queue::BindOk {});
                ((!b.nowait).then_some(ok), ticket)
            }
            queue::AMQPMethod::Unbind(b) => {
                let queue = self.queue_name(id, b.queue.as_str())?;
                self.allow_bind(
                    Resource::Queue,
                    &queue,
                    b.exchange.as_str(),
                    b.routing_key.as_str(),
                )?;
                let dest = Destination::Queue(Arc::from(queue));
                let ticket = self.vhost.unbind(
                    b.exchange.as_str(),
                    dest,
                    b.routing_key.as_str(),
                    &b.arguments,
                    self.id,
                )?;
                (
                    Some(queue::AMQPMethod::UnbindOk(queue::UnbindOk {})),
                    ticket,
                )
            }
            queue::AMQPMethod::Purge(p) => {
                let name = self.queue_name(id, p.queue.as_str())?;
                self.allow(Perm::Read, Resource::Queue, &name)?;
                let q = self.vhost.queue(&name, self.id)?;
                if q.is_stream() {
                    return Err(crate::broker::stream::options::unsupported(
                        "queue.purge",
                        &name,
                        &self.vhost.name,
                    ));
                }
                let message_count = q.purge();
                let ok = queue::AMQPMethod::PurgeOk(queue::PurgeOk { message_count });
                ((!p.nowait).then_some(ok), 0)
            }
            queue::AMQPMethod::Delete(d) => {
                let name = self.queue_name(id, d.queue.as_str())?;
                self.allow(Perm::Configure, Resource::Queue, &name)?;
                let (message_count, ticket) =
                    self.vhost
                        .delete_queue(&name, d.if_unused, d.if_empty, self.id)?;
                let ok = queue::AMQPMethod::DeleteOk(queue::DeleteOk { message_count });
                ((!d.nowait).then_some(ok), ticket)
            }
            _ => {
                return Err(AmqpError::command_invalid(
                    "unexpected queue method from client",
                ))
            }
        };
        if let Some(r) = reply {
            self.send_when_synced(id, AMQPClass::Queue(r), ticket);
        }
        Ok(())
    }
}
