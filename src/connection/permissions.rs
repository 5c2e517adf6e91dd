//! The permission checks a connection makes before a method touches the
//! broker, as RabbitMQ makes them (which permission each method needs is
//! listed in `auth::access`). A publish checks its exchange once per
//! change of the access model: the last allowed exchange is kept with the
//! model's generation, so the hot path is a string comparison.

use super::session::Session;
use crate::auth::access::{Perm, Resource};
use crate::protocol::AmqpError;

/// The last exchange a publish was allowed to, and the access model's
/// generation when it was checked.
#[derive(Debug, Default)]
pub struct PublishGrant {
    generation: u64,
    exchange: String,
}

impl Session {
    /// Whether this connection's user may do `perm` on a resource.
    pub(super) fn allow(&self, perm: Perm, kind: Resource, name: &str) -> Result<(), AmqpError> {
        self.broker
            .access
            .check(&self.user, &self.vhost.name, perm, kind, name)
    }

    /// basic.publish: write on the exchange, and the topic permission on
    /// the routing key when the user has one for this exchange.
    pub(super) fn allow_publish(
        &mut self,
        exchange: &str,
        routing_key: &str,
    ) -> Result<(), AmqpError> {
        let access = &self.broker.access;
        let generation = access.generation();
        let grant = &self.publish_grant;
        if grant.generation != generation || grant.exchange != exchange {
            access.check(
                &self.user,
                &self.vhost.name,
                Perm::Write,
                Resource::Exchange,
                exchange,
            )?;
            self.publish_grant = PublishGrant {
                generation,
                exchange: exchange.to_string(),
            };
        }
        if access.has_topic_permissions() && self.vhost.is_topic_exchange(exchange) {
            access.check_topic(
                &self.user,
                &self.vhost.name,
                exchange,
                routing_key,
                Perm::Write,
            )?;
        }
        Ok(())
    }

    /// queue.bind / exchange.bind and their unbinds: write on the
    /// destination, read on the source exchange, and the topic read
    /// permission on the binding key when the source is a topic exchange.
    pub(super) fn allow_bind(
        &self,
        dest: Resource,
        dest_name: &str,
        source: &str,
        routing_key: &str,
    ) -> Result<(), AmqpError> {
        self.allow(Perm::Write, dest, dest_name)?;
        self.allow(Perm::Read, Resource::Exchange, source)?;
        let access = &self.broker.access;
        if access.has_topic_permissions() && self.vhost.is_topic_exchange(source) {
            access.check_topic(
                &self.user,
                &self.vhost.name,
                source,
                routing_key,
                Perm::Read,
            )?;
        }
        Ok(())
    }
}
