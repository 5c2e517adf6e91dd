//! Declaring exchanges and queues: the checks RabbitMQ makes (reserved
//! names, types, argument validity), a redeclare's equivalence check with
//! RabbitMQ's texts, and registering what is new.

use std::sync::Arc;

use amq_protocol::protocol::{exchange, queue};
use amq_protocol::types::{AMQPValue, FieldTable};
use rand::Rng;

use super::{QueueInfo, VHost};
use crate::broker::arguments::{self, as_int, show, type_name, validate_queue_arguments};
use crate::broker::exchange::{Exchange, ExchangeKind, DELAYED_TYPE};
use crate::broker::queue::{Queue, QueueDef};
use crate::broker::queue_policy::QueuePolicy;
use crate::broker::ready::ReadyMessages;
use crate::broker::reply_to::REPLY_QUEUE;
use crate::protocol::AmqpError;
use crate::store::QueueLog;

/// The queue arguments RabbitMQ compares on redeclare.
const COMPARED_QUEUE_ARGS: &[&str] = &[
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-expires",
    "x-max-length",
    "x-max-length-bytes",
    "x-max-in-memory-length",
    "x-max-in-memory-bytes",
    "x-max-priority",
    "x-message-ttl",
    "x-overflow",
    "x-queue-mode",
    "x-queue-type",
    "x-queue-master-locator",
    "x-single-active-consumer",
    "x-delivery-limit",
    "x-quorum-initial-group-size",
    "x-max-age",
];

impl VHost {
    /// exchange.declare; the sync round that makes it durable (0: none).
    pub fn declare_exchange(&self, d: &exchange::Declare) -> Result<u64, AmqpError> {
        let name = d.exchange.as_str();
        if name.is_empty() {
            return Err(Self::default_exchange_refused());
        }
        let mut topo = self.topology.lock();
        self.check_live()?;
        if d.passive {
            return match topo.has_exchange(name) {
                true => Ok(self.store.metadata.last_ticket()),
                false => Err(self.no_exchange(name)),
            };
        }
        if d.kind.as_str() == DELAYED_TYPE
            && ExchangeKind::of_declared(DELAYED_TYPE, &d.arguments).is_none()
        {
            // The delayed-message plugin's text.
            return Err(AmqpError::precondition_failed(
                "Invalid argument, 'x-delayed-type' must be an existing exchange type",
            ));
        }
        let Some((kind, delayed)) = ExchangeKind::of_declared(d.kind.as_str(), &d.arguments) else {
            let what = if d.kind.as_str().is_empty() {
                "invalid"
            } else {
                "unknown"
            };
            return Err(AmqpError::command_invalid(format!(
                "{what} exchange type '{}'",
                d.kind
            )));
        };
        crate::broker::dedup::Settings::parse(&d.arguments)?;
        if kind == ExchangeKind::ConsistentHash {
            crate::broker::exchange::hash_ring::HashOn::parse(&d.arguments)?;
        }
        if let Some(ae) = d.arguments.inner().get("alternate-exchange") {
            if arguments::as_text(ae).is_none() {
                return Err(AmqpError::precondition_failed(format!(
                    "invalid type '{}' for arg 'alternate-exchange' in exchange '{name}' in vhost '{}'",
                    type_name(ae),
                    self.name
                )));
            }
        }
        if let Some(x) = topo.exchange(name) {
            let ae = |args: &FieldTable| args.inner().get("alternate-exchange").cloned();
            let diff = |arg: &str, received: String, current: String| {
                AmqpError::precondition_failed(format!(
                    "inequivalent arg '{arg}' for exchange '{name}' in vhost '{}': received '{received}' but current is '{current}'",
                    self.name
                ))
            };
            if x.kind != kind || x.delayed != delayed {
                return Err(diff("type", d.kind.to_string(), x.type_name().into()));
            }
            if x.durable != d.durable {
                return Err(diff(
                    "durable",
                    d.durable.to_string(),
                    x.durable.to_string(),
                ));
            }
            if x.auto_delete != d.auto_delete {
                return Err(diff(
                    "auto_delete",
                    d.auto_delete.to_string(),
                    x.auto_delete.to_string(),
                ));
            }
            if x.internal != d.internal {
                return Err(diff(
                    "internal",
                    d.internal.to_string(),
                    x.internal.to_string(),
                ));
            }
            if ae(&x.arguments) != ae(&d.arguments) {
                return Err(diff(
                    "alternate-exchange",
                    describe_arg(ae(&d.arguments).as_ref()),
                    describe_arg(ae(&x.arguments).as_ref()),
                ));
            }
            return Ok(self.store.metadata.last_ticket());
        }
        if name.starts_with("amq.") {
            return Err(AmqpError::access_refused(format!(
                "exchange name '{name}' contains reserved prefix 'amq.*'"
            )));
        }
        let mut exchange = Exchange::new(
            name,
            kind,
            d.durable,
            d.auto_delete,
            d.internal,
            d.arguments.clone(),
        );
        exchange.delayed = delayed;
        self.apply_exchange_policy(&exchange);
        self.note_dedup(exchange.reads_ids());
        topo.insert_exchange(exchange);
        // Not stored means not declared.
        self.commit(&mut topo)
            .inspect_err(|_| topo.forget_exchange(name))
    }

    /// queue.declare.
    pub fn declare_queue(&self, d: &queue::Declare, conn_id: u64) -> Result<QueueInfo, AmqpError> {
        let requested = d.queue.as_str();
        if d.passive && requested == REPLY_QUEUE {
            // As RabbitMQ: the pseudo-queue exists, with one consumer.
            return Ok(QueueInfo {
                name: requested.to_string(),
                message_count: 0,
                consumer_count: 1,
                ticket: 0,
            });
        }
        if d.passive {
            let queue = self.queue(requested, conn_id)?;
            // A declare, passive too, counts as a use for x-expires.
            queue.touch();
            return Ok(QueueInfo {
                name: requested.to_string(),
                message_count: queue.message_count(),
                consumer_count: queue.consumer_count(),
                ticket: self.store.metadata.last_ticket(),
            });
        }
        if requested.starts_with("amq.") {
            return Err(AmqpError::access_refused(format!(
                "queue name '{requested}' contains reserved prefix 'amq.*'"
            )));
        }
        let mut topo = self.topology.lock();
        self.check_live()?;
        self.queues_declared
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let durable = d.durable && !d.exclusive;
        let name = if requested.is_empty() {
            loop {
                let candidate = generated_name("amq.gen-");
                if !topo.has_queue(&candidate) {
                    break candidate;
                }
            }
        } else {
            requested.to_string()
        };
        let existing = topo.queue(&name);
        if existing.is_none() && arguments::is_stream(&d.arguments) {
            crate::broker::stream::options::check_refused(&d.arguments, &name, &self.name)?;
        }
        validate_queue_arguments(&d.arguments, &name, &self.name)?;
        crate::broker::dedup::Settings::parse(&d.arguments)?;
        if existing.is_none() {
            // An existing queue's properties are compared instead (below).
            arguments::check_queue_type(
                &d.arguments,
                d.durable,
                d.exclusive,
                d.auto_delete,
                &name,
                &self.name,
            )?;
        }
        if let Some(q) = existing {
            self.check_owner(&q, conn_id)?;
            if q.exclusive_owner.is_some() != d.exclusive {
                return Err(self.locked(&name));
            }
            self.check_queue_equivalent(&q, d)?;
            q.touch();
            return Ok(QueueInfo {
                name,
                message_count: q.message_count(),
                consumer_count: q.consumer_count(),
                ticket: self.store.metadata.last_ticket(),
            });
        }
        self.check_queue_limit(&name)?;
        if arguments::is_stream(&d.arguments) {
            return self.declare_stream(&mut topo, &name, d);
        }
        let (disk_dir, log) = match durable {
            true => {
                let dir = self.store.new_queue_dir();
                let path = self.store.queue_path(&dir);
                let log = QueueLog::create(&path, true, self.store.segment_bytes).map_err(|e| {
                    tracing::error!(queue = %name, path = %path.display(), error = %e, "cannot create queue directory");
                    AmqpError::new(
                        crate::protocol::ErrorKind::InternalError,
                        format!("cannot create the store of queue '{name}': {e}"),
                    )
                })?;
                (Some(dir), Some((log, Default::default())))
            }
            false => (None, None),
        };
        let def = QueueDef {
            name: &name,
            vhost: &self.name,
            disk_dir,
            exclusive_owner: d.exclusive.then_some(conn_id),
            auto_delete: d.auto_delete,
            arguments: d.arguments.clone(),
        };
        let max_priority = QueuePolicy::from_arguments(&d.arguments).max_priority;
        let ready = ReadyMessages::new(self.store.clone(), log, max_priority).map_err(|e| {
            tracing::error!(queue = %name, error = %e, "cannot open the store of a queue");
            AmqpError::new(
                crate::protocol::ErrorKind::InternalError,
                format!("cannot create the store of queue '{name}': {e}"),
            )
        })?;
        let queue = Queue::new(def, ready, self.queue_context());
        self.note_dedup(queue.dedup.is_some());
        let queue = Arc::new(queue);
        queue.apply_policy(self.policies_for_queue(&name, false));
        queue.touch();
        topo.insert_queue(queue);
        // Not stored means not declared: a queue missing from the
        // definitions would lose its messages at the next start.
        let ticket = self.commit(&mut topo).inspect_err(|_| {
            if let Some(q) = topo.unregister_queue(&name) {
                q.mark_deleted();
            }
            topo.journal.clear();
        })?;
        Ok(QueueInfo {
            name,
            message_count: 0,
            consumer_count: 0,
            ticket,
        })
    }

    fn check_queue_equivalent(&self, q: &Queue, d: &queue::Declare) -> Result<(), AmqpError> {
        let diff = |arg: &str, received: String, current: String| {
            AmqpError::precondition_failed(format!(
                "inequivalent arg '{arg}' for queue '{}' in vhost '{}': received {received} but current is {current}",
                q.name, self.name
            ))
        };
        if q.exclusive_owner.is_none() && q.durable != d.durable {
            return Err(diff(
                "durable",
                format!("'{}'", d.durable),
                format!("'{}'", q.durable),
            ));
        }
        if q.auto_delete != d.auto_delete {
            return Err(diff(
                "auto_delete",
                format!("'{}'", d.auto_delete),
                format!("'{}'", q.auto_delete),
            ));
        }
        let compared = match q.is_stream() {
            true => crate::broker::stream::options::COMPARED_ARGS,
            false => COMPARED_QUEUE_ARGS,
        };
        for key in compared {
            let have = q.arguments.inner().get(*key);
            let want = d.arguments.inner().get(*key);
            if !args_equal(have, want) {
                let (received, current) = match (want, have) {
                    (Some(w), Some(h)) => (format!("'{}'", show(w)), format!("'{}'", show(h))),
                    _ => (describe_typed(want), describe_typed(have)),
                };
                return Err(diff(key, received, current));
            }
        }
        Ok(())
    }
}

/// A server-generated name: the prefix and 22 random URL-safe base64
/// characters, as RabbitMQ makes them.
pub fn generated_name(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut rng = rand::thread_rng();
    let suffix: String = (0..22)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect();
    format!("{prefix}{suffix}")
}

fn args_equal(a: Option<&AMQPValue>, b: Option<&AMQPValue>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(x), Some(y)) => match (as_int(x), as_int(y)) {
            (Some(i), Some(j)) => i == j,
            _ => type_name(x) == type_name(y) && show(x) == show(y),
        },
        _ => false,
    }
}

fn describe_arg(v: Option<&AMQPValue>) -> String {
    v.map_or_else(|| "none".to_string(), show)
}

fn describe_typed(v: Option<&AMQPValue>) -> String {
    match v {
        None => "none".into(),
        Some(v) => format!("the value '{}' of type '{}'", show(v), type_name(v)),
    }
}
