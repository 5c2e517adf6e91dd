//! The permissions an API request needs on what it touches, the same as
//! over AMQP (see `auth::access`): a declare or delete needs configure, a
//! publish write (and the topic permission), a get or purge read, a bind
//! write on the destination and read on the source. Tags decide which
//! routes a user may call; these decide what it may do there, for
//! administrators too, as in RabbitMQ.

use super::auth::Caller;
use super::error::{ApiError, ApiResult};
use super::AppState;
use crate::auth::access::{Perm, Resource};
use crate::protocol::AmqpError;

/// A refusal as the API answers it: 401 with RabbitMQ's text.
pub fn refused(e: AmqpError) -> ApiError {
    let text = e.text.split_once(" - ").map_or(e.text.as_str(), |(_, t)| t);
    ApiError::not_authorised(text)
}

/// `perm` on the `kind` named `name` in `vhost`.
pub fn allow(
    s: &AppState,
    c: &Caller,
    vhost: &str,
    perm: Perm,
    kind: Resource,
    name: &str,
) -> ApiResult<()> {
    s.broker
        .access
        .check(&c.name, vhost, perm, kind, name)
        .map_err(refused)
}

/// A bind or unbind: write on the destination, read on the source (and
/// the topic read permission on a topic exchange's key).
pub fn allow_bind(
    s: &AppState,
    c: &Caller,
    vhost: &str,
    dest: (Resource, &str),
    source: &str,
    key: &str,
) -> ApiResult<()> {
    allow(s, c, vhost, Perm::Write, dest.0, dest.1)?;
    allow(s, c, vhost, Perm::Read, Resource::Exchange, source)?;
    let is_topic = s
        .broker
        .vhost(vhost)
        .is_some_and(|v| v.is_topic_exchange(source));
    match is_topic {
        true => s
            .broker
            .access
            .check_topic(&c.name, vhost, source, key, Perm::Read)
            .map_err(refused),
        false => Ok(()),
    }
}
