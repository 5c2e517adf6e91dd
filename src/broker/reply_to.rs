//! Direct reply-to (RabbitMQ's `amq.rabbitmq.reply-to`): an RPC client
//! consumes (no-ack) from the pseudo-queue `amq.rabbitmq.reply-to` and
//! publishes requests with that name as `reply_to`; the broker rewrites it
//! to a name of its own (`amq.rabbitmq.reply-to.<token>`), and a reply
//! published to the default exchange with that routing key goes straight to
//! the requester's channel, with no queue in between. A reply to a name
//! nobody holds (any more) is dropped silently, as in RabbitMQ.

use ahash::AHashMap as HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use rand::Rng;

use super::consumer::{ConnEvent, ConnHandle, Delivery};
use super::message::{Message, QueuedMessage};

/// The pseudo-queue RPC clients consume replies from.
pub const REPLY_QUEUE: &str = "amq.rabbitmq.reply-to";

/// Where replies for one name go.
#[derive(Debug)]
pub struct ReplyTarget {
    /// The requester's connection.
    pub conn: ConnHandle,
    /// Its channel.
    pub channel: u16,
    /// The reply consumer's tag.
    pub consumer_tag: Arc<str>,
    /// The reply consumer's registration id.
    pub consumer_id: u64,
}

/// A vhost's reply names.
#[derive(Debug, Default)]
pub struct ReplyTargets(Mutex<HashMap<String, ReplyTarget>>);

impl ReplyTargets {
    /// A fresh reply name for `target`.
    pub fn register(&self, target: ReplyTarget) -> String {
        let mut map = self.0.lock();
        loop {
            let token: String = rand::thread_rng()
                .sample_iter(&rand::distributions::Alphanumeric)
                .take(24)
                .map(char::from)
                .collect();
            let name = format!("{REPLY_QUEUE}.{token}");
            if !map.contains_key(&name) {
                map.insert(name.clone(), target);
                return name;
            }
        }
    }

    /// The reply consumer went away.
    pub fn unregister(&self, name: &str) {
        self.0.lock().remove(name);
    }

    /// Whether `routing_key` names a reply (whether or not it is held).
    pub fn is_reply_name(routing_key: &str) -> bool {
        routing_key
            .strip_prefix(REPLY_QUEUE)
            .is_some_and(|rest| rest.starts_with('.'))
    }

    /// Hand a reply to the requester's connection, returned so that the
    /// replier can be held back while it is not reading; None when nobody
    /// holds the name.
    pub fn deliver(&self, name: &str, message: Arc<Message>) -> Option<ConnHandle> {
        let map = self.0.lock();
        let t = map.get(name)?;
        let delivery = Delivery {
            channel: t.channel,
            consumer_id: t.consumer_id,
            consumer_tag: t.consumer_tag.clone(),
            queue: None,
            message: QueuedMessage::unqueued(message),
            credit: None,
        };
        t.conn.send(ConnEvent::Deliver(delivery)).ok()?;
        Some(t.conn.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_names_are_recognised() {
        assert!(ReplyTargets::is_reply_name("amq.rabbitmq.reply-to.abc"));
        assert!(!ReplyTargets::is_reply_name("amq.rabbitmq.reply-to"));
        assert!(!ReplyTargets::is_reply_name("amq.rabbitmq.reply-tox"));
    }
}
