//! A shovel's missing queues, declared as RabbitMQ's shovel declares them:
//! durable, not exclusive, not auto-delete, with `dest-queue-args` /
//! `src-queue-args`; the destination first. A queue that exists is used
//! as it is (its arguments are not compared).

use std::sync::Arc;

use amq_protocol::protocol::queue;
use amq_protocol::types::ShortString;
use serde_json::{Map, Value};

use super::definition::{Dest, ShovelDef};
use crate::broker::{Broker, VHost};
use crate::management::json::json_to_table;

/// Declare the destination queue and the source queue if missing; the
/// highest metadata sync round their declarations need (0: none), or why
/// one could not be declared.
pub fn missing_queues(broker: &Arc<Broker>, def: &ShovelDef) -> Result<u64, String> {
    let mut ticket = 0;
    if let Dest::Queue(q) = &def.dest {
        ticket = ticket.max(ensure(broker, &def.dest_vhost, q, &def.dest_queue_args)?);
    }
    // An exchange source's queue is the shovel's own, declared per run.
    if let Some(q) = def.src.queue() {
        ticket = ticket.max(ensure(broker, &def.src_vhost, q, &def.src_queue_args)?);
    }
    Ok(ticket)
}

fn ensure(
    broker: &Arc<Broker>,
    vhost: &str,
    name: &str,
    args: &Map<String, Value>,
) -> Result<u64, String> {
    let v: Arc<VHost> = broker
        .vhost(vhost)
        .ok_or_else(|| format!("vhost '{vhost}' not found"))?;
    if v.find_queue(name).is_some() {
        return Ok(0);
    }
    let arguments = json_to_table(&Value::Object(args.clone()))?;
    let declare = queue::Declare {
        queue: ShortString::from(name),
        passive: false,
        durable: true,
        exclusive: false,
        auto_delete: false,
        nowait: false,
        arguments,
    };
    let info = v
        .declare_queue(&declare, broker.next_connection_id())
        .map_err(|e| format!("cannot declare queue '{name}' in vhost '{vhost}': {e}"))?;
    tracing::info!(vhost, queue = name, "a shovel declared its missing queue");
    Ok(info.ticket)
}
