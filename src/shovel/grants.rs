//! What the user a shovel URI names must be allowed to do in its vhost,
//! as RabbitMQ's shovel, logging in as that user, would need: read its
//! source (and bind from a source exchange), write to its destination,
//! configure the queues it declares. Warren's shovels run inside the
//! broker, so these are checked when a shovel is declared through the API
//! and again at the start of every run (a revoked permission or a changed
//! password stops it, as RabbitMQ's next login would); each copy's
//! exchange and routing key are checked as it is published (`mover.rs`).
//! Without this a policymaker who knows a user's password could read or
//! write what that user's permissions keep from them. A URI without a user
//! is RabbitMQ's direct connection, which has every permission.

use serde_json::{Map, Value};

use super::definition::{Dest, ShovelDef, Source};
use super::uri::{credentials, redact};
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
            .and_then(|()| declares(broker, vhost, q, &def.src_queue_args, user)),
        Source::Exchange { name, key } => {
            let key = if key.is_empty() { OWN_QUEUE } else { key };
            let own = |perm| access.check(user, vhost, perm, Resource::Queue, OWN_QUEUE);
            own(Perm::Configure)
                .and_then(|()| own(Perm::Write))
                .and_then(|()| own(Perm::Read))
                .and_then(|()| access.check(user, vhost, Perm::Read, Resource::Exchange, name))
                .and_then(|()| topic(broker, vhost, name, key, user, Perm::Read))
        }
    };
    checked.map_err(|e| e.text)
}

/// Whether `user` may put messages where the shovel sends them (as far as
/// the definition tells: the rest is checked per copy).
pub fn destination(broker: &Broker, def: &ShovelDef, user: &str) -> Result<(), String> {
    let vhost = def.dest_vhost.as_str();
    let checked = match &def.dest {
        Dest::Queue(q) => may_publish(broker, vhost, user, "", q)
            .and_then(|()| declares(broker, vhost, q, &def.dest_queue_args, user)),
        Dest::Exchange { name, key: Some(k) } => may_publish(broker, vhost, user, name, k),
        Dest::Exchange { name, key: None } => {
            broker
                .access
                .check(user, vhost, Perm::Write, Resource::Exchange, name)
        }
        // Each message goes to its own exchange: checked as it moves.
        Dest::AsPublished => Ok(()),
    };
    checked.map_err(|e| e.text)
}

/// A basic.publish's checks: write on the exchange, and the topic
/// permission on the routing key when it is a topic exchange.
pub fn may_publish(
    broker: &Broker,
    vhost: &str,
    user: &str,
    exchange: &str,
    key: &str,
) -> Result<(), AmqpError> {
    broker
        .access
        .check(user, vhost, Perm::Write, Resource::Exchange, exchange)?;
    topic(broker, vhost, exchange, key, user, Perm::Write)
}

/// Every check a run needs, for each side whose URI names a user: that
/// the user still logs in, opens the vhost, and has the grants above.
pub fn for_run(broker: &Broker, def: &ShovelDef) -> Result<(), String> {
    type Grants = fn(&Broker, &ShovelDef, &str) -> Result<(), String>;
    let sides: [(&str, &str, Grants); 2] = [
        (&def.src_uri, &def.src_vhost, source),
        (&def.dest_uri, &def.dest_vhost, destination),
    ];
    for (uri, vhost, grants) in sides {
        let Some((user, password)) = credentials(uri) else {
            continue;
        };
        if broker.access.login(&user, &password, true).is_err() {
            return Err(format!("user \"{user}\" of {} may not log in", redact(uri)));
        }
        if !broker.access.may_open(&user, vhost) {
            return Err(format!(
                "user \"{user}\" may not connect to vhost \"{vhost}\""
            ));
        }
        grants(broker, def, &user)?;
    }
    Ok(())
}

/// The topic permission, on topic exchanges only (as RabbitMQ checks it).
fn topic(
    broker: &Broker,
    vhost: &str,
    exchange: &str,
    key: &str,
    user: &str,
    perm: Perm,
) -> Result<(), AmqpError> {
    let is_topic = broker
        .vhost(vhost)
        .is_some_and(|v| v.is_topic_exchange(exchange));
    match is_topic {
        true => broker.access.check_topic(user, vhost, exchange, key, perm),
        false => Ok(()),
    }
}

/// queue.declare's checks on queue `q` if the shovel would declare it (it
/// is missing): configure, and with a dead-letter exchange in `args`,
/// read on the queue and write on that exchange.
fn declares(
    broker: &Broker,
    vhost: &str,
    q: &str,
    args: &Map<String, Value>,
    user: &str,
) -> Result<(), AmqpError> {
    if broker
        .vhost(vhost)
        .is_some_and(|v| v.find_queue(q).is_some())
    {
        return Ok(());
    }
    let args = crate::management::json::json_to_table(&Value::Object(args.clone()))
        .map_err(AmqpError::precondition_failed)?;
    broker.access.check_queue_declare(user, vhost, q, &args)
}
