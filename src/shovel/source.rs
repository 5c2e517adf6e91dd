//! Where a shovel takes messages from: a queue (`src-queue`), or an
//! exchange (`src-exchange`, `src-exchange-key`) through a queue of the
//! shovel's own, as RabbitMQ's shovel does: server-named (`amq.gen-…`),
//! not durable, exclusive to the shovel, bound to the exchange, kept
//! while the shovel waits to try again (a destination that refused copies
//! finds them there), and deleted when the shovel stops or finishes. What
//! that queue holds then is lost with it (RabbitMQ's exclusive queue goes
//! the same way); what the shovel took from it is settled only at the
//! destination.

use std::sync::Arc;

use amq_protocol::protocol::queue;
use amq_protocol::types::{FieldTable, ShortString};
use serde_json::{Map, Value};

use crate::broker::exchange::Destination;
use crate::broker::queue::Queue;
use crate::broker::VHost;

/// Where a shovel takes messages from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// `src-queue`.
    Queue(String),
    /// `src-exchange`, bound with `src-exchange-key` ("" when absent).
    Exchange {
        /// The exchange.
        name: String,
        /// The binding key.
        key: String,
    },
}

impl Source {
    /// Read `src-queue` / `src-exchange` (checked by `queue_name` and
    /// `text`, the definition's own readers).
    pub(super) fn parse(
        v: &Map<String, Value>,
        queue_name: impl Fn(&Map<String, Value>, &str) -> Result<Option<String>, String>,
        text: impl Fn(&Map<String, Value>, &str) -> Result<Option<String>, String>,
    ) -> Result<Source, String> {
        // Checked whatever the source, as RabbitMQ checks each key.
        let key = text(v, "src-exchange-key")?;
        match (queue_name(v, "src-queue")?, text(v, "src-exchange")?) {
            (Some(_), Some(_)) => Err("Cannot specify 'src-exchange' and 'src-queue'".into()),
            (Some(q), None) => Ok(Source::Queue(q)),
            (None, Some(x)) => Ok(Source::Exchange {
                name: x,
                key: key.unwrap_or_default(),
            }),
            (None, None) => Err("Must specify 'src-exchange' or 'src-queue'".into()),
        }
    }

    /// The source queue's name, if it is a queue.
    pub fn queue(&self) -> Option<&str> {
        match self {
            Source::Queue(q) => Some(q),
            Source::Exchange { .. } => None,
        }
    }

    /// How status lines and errors name it.
    pub fn describe(&self) -> String {
        match self {
            Source::Queue(q) => format!("queue '{q}'"),
            Source::Exchange { name, .. } => format!("exchange '{name}'"),
        }
    }
}

/// The queue a shovel's run consumes from; for an exchange source, the
/// shovel's own queue, deleted when this is dropped.
pub struct SourceQueue {
    pub queue: Arc<Queue>,
    /// The connection id the shovel's consumer uses (its queue's owner).
    pub conn_id: u64,
    own: Option<Arc<VHost>>,
}

impl SourceQueue {
    /// Whether a later run may consume from it again: the shovel's own
    /// queue, still there (a source queue is looked up again each run).
    pub fn reusable(&self) -> bool {
        self.own.as_ref().is_some_and(|v| {
            v.find_queue(&self.queue.name)
                .is_some_and(|q| Arc::ptr_eq(&q, &self.queue))
        })
    }
}

impl Drop for SourceQueue {
    fn drop(&mut self) {
        if let Some(vhost) = self.own.take() {
            vhost.delete_exclusive_queues(self.conn_id);
        }
    }
}

/// Open `source` in `vhost` for a run whose consumer is connection
/// `conn_id`: find the queue, or declare and bind the shovel's own.
pub fn open(vhost: &Arc<VHost>, source: &Source, conn_id: u64) -> Result<SourceQueue, String> {
    let (exchange, key) = match source {
        Source::Queue(name) => {
            let queue = vhost
                .find_queue(name)
                .ok_or_else(|| format!("no queue '{name}' in vhost '{}'", vhost.name))?;
            if queue.exclusive_owner.is_some() {
                // Publishing to one is allowed, as in AMQP; consuming not.
                return Err(format!("queue '{name}' is exclusive to another connection"));
            }
            return Ok(SourceQueue {
                queue,
                conn_id,
                own: None,
            });
        }
        Source::Exchange { name, key } => (name, key),
    };
    let declare = queue::Declare {
        queue: ShortString::from(""),
        passive: false,
        durable: false,
        exclusive: true,
        auto_delete: false,
        nowait: false,
        arguments: FieldTable::default(),
    };
    let info = vhost
        .declare_queue(&declare, conn_id)
        .map_err(|e| format!("cannot declare the shovel's queue: {}", e.text))?;
    let queue = vhost
        .find_queue(&info.name)
        .ok_or_else(|| format!("the queue for exchange '{exchange}' vanished"))?;
    // Deleted when dropped, on every path from here.
    let source = SourceQueue {
        queue,
        conn_id,
        own: Some(vhost.clone()),
    };
    // As RabbitMQ's shovel binds (queue.bind naming no queue): an empty key
    // is the queue's name.
    let key = if key.is_empty() { &info.name } else { key };
    let dest = Destination::Queue(Arc::from(info.name.as_str()));
    vhost
        .bind(exchange, dest, key, &FieldTable::default(), conn_id)
        .map_err(|e| format!("cannot bind to exchange '{exchange}': {}", e.text))?;
    Ok(source)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::definition::ShovelDef;
    use super::*;

    fn parse(v: serde_json::Value) -> Result<ShovelDef, String> {
        ShovelDef::parse(&v, "s")
    }

    #[test]
    fn an_exchange_source_binds_with_its_key_or_none() {
        let d = parse(json!({"src-uri": "amqp://", "src-exchange": "amq.topic",
            "src-exchange-key": "a.#", "dest-uri": "amqp://", "dest-queue": "d"}))
        .expect("valid");
        let topic = Source::Exchange {
            name: "amq.topic".into(),
            key: "a.#".into(),
        };
        assert_eq!(d.src, topic);
        let d = parse(json!({"src-uri": "amqp://", "src-exchange": "amq.fanout",
            "dest-uri": "amqp://", "dest-queue": "d", "src-delete-after": 5}))
        .expect("valid");
        assert_eq!(d.src.queue(), None);
        assert_eq!(d.src.describe(), "exchange 'amq.fanout'");
    }

    /// RabbitMQ 3.10.8's words for these (recorded by hand: see
    /// conformance/recordings/rabbitmq-shovel.md, section H).
    #[test]
    fn exchange_sources_are_refused_as_rabbitmq_refuses_them() {
        let both = json!({"src-uri": "amqp://", "src-exchange": "x", "src-queue": "q",
            "dest-uri": "amqp://"});
        assert_eq!(
            parse(both).unwrap_err(),
            "Cannot specify 'src-exchange' and 'src-queue'"
        );
        let number = json!({"src-uri": "amqp://", "src-exchange": 5, "dest-uri": "amqp://"});
        assert_eq!(
            parse(number).unwrap_err(),
            "src-exchange should be binary, actually was 5"
        );
        let key = json!({"src-uri": "amqp://", "src-exchange": "x", "src-exchange-key": 5,
            "dest-uri": "amqp://"});
        assert_eq!(
            parse(key).unwrap_err(),
            "src-exchange-key should be binary, actually was 5"
        );
        let typed = json!({"src-uri": "amqp://", "src-queue": "q", "src-exchange-key": 5,
            "dest-uri": "amqp://"});
        assert_eq!(
            parse(typed).unwrap_err(),
            "src-exchange-key should be binary, actually was 5"
        );
        // Warren's own: RabbitMQ takes these and then fails to start, or
        // moves messages round in a loop.
        let same = json!({"src-uri": "amqp://", "src-exchange": "x", "dest-uri": "amqp://",
            "dest-exchange": "x"});
        assert!(parse(same)
            .unwrap_err()
            .ends_with("would move messages in a loop"));
        let back = json!({"src-uri": "amqp://", "src-exchange": "x", "dest-uri": "amqp://"});
        assert!(parse(back)
            .unwrap_err()
            .ends_with("would move messages in a loop"));
        let elsewhere = json!({"src-uri": "amqp://", "src-exchange": "x",
            "dest-uri": "amqp:///other"});
        assert!(parse(elsewhere).is_ok());
        let length = json!({"src-uri": "amqp://", "src-exchange": "x", "dest-uri": "amqp://",
            "src-delete-after": "queue-length"});
        assert!(parse(length)
            .unwrap_err()
            .contains("an exchange has no length"));
    }
}
