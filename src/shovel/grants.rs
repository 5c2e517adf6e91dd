//! What the user a shovel URI names must be allowed to do in its vhost,
//! as RabbitMQ's shovel, logging in as that user, would need: read its
//! source (and bind from a source exchange), write to its destination,
//! configure the queues it declares. Warren's shovels run inside the
//! broker, so these are checked when a shovel is declared through the
//! API; without this a policymaker who knows a user's password could read
//! what that user's permissions keep from them.

use super::definition::{Dest, ShovelDef, Source};
use crate::auth::access::{Perm, Resource};
use crate::broker::Broker;
use crate::protocol::error::AmqpError;

/// A name for the queue an exchange source declares: it is server-named
/// (`amq.gen-…`), so permissions are matched against one of that form.
const OWN_QUEUE: &str = "amq.gen-shovel";

/// Whether `user` may take messages from the shovel's source; the
/// refusal's text if not.
pub fn source(broker: &Broker, def: &ShovelDef, user: &str) -> Result<(), String> {
    let (access, vhost) = (&broker.access, def.src_vhost.as_str());
    let checked = match &def.src {
        Source::Queue(q) => access
            .check(user, vhost, Perm::Read, Resource::Queue, q)
            .and_then(|()| declares(broker, vhost, q, user)),
        Source::Exchange { name, key } => {
            let key = if key.is_empty() { OWN_QUEUE } else { key };
            access
                .check(user, vhost, Perm::Configure, Resource::Queue, OWN_QUEUE)
                .and_then(|()| access.check(user, vhost, Perm::Write, Resource::Queue, OWN_QUEUE))
                .and_then(|()| access.check(user, vhost, Perm::Read, Resource::Exchange, name))
                .and_then(|()| access.check_topic(user, vhost, name, key, Perm::Read))
        }
    };
    checked.map_err(|e| e.text)
}

/// Whether `user` may put messages where the shovel sends them.
pub fn destination(broker: &Broker, def: &ShovelDef, user: &str) -> Result<(), String> {
    let (access, vhost) = (&broker.access, def.dest_vhost.as_str());
    let checked = match &def.dest {
        Dest::Queue(q) => access
            .check(user, vhost, Perm::Write, Resource::Exchange, "")
            .and_then(|()| declares(broker, vhost, q, user)),
        Dest::Exchange { name, key } => access
            .check(user, vhost, Perm::Write, Resource::Exchange, name)
            .and_then(|()| match key {
                Some(k) => access.check_topic(user, vhost, name, k, Perm::Write),
                None => Ok(()),
            }),
        // Each message goes to its own exchange: known only as it moves.
        Dest::AsPublished => Ok(()),
    };
    checked.map_err(|e| e.text)
}

/// Configure on queue `q` if the shovel would declare it (it is missing).
fn declares(broker: &Broker, vhost: &str, q: &str, user: &str) -> Result<(), AmqpError> {
    let exists = broker
        .vhost(vhost)
        .is_some_and(|v| v.find_queue(q).is_some());
    match exists {
        true => Ok(()),
        false => broker
            .access
            .check(user, vhost, Perm::Configure, Resource::Queue, q),
    }
}
