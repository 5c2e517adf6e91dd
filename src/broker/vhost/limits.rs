//! The vhost's `max-queues` limit: set by the broker from the access
//! model's vhost limits (at start and whenever they change), checked when
//! a declare would create a queue, with RabbitMQ's refusal.

use std::sync::atomic::Ordering::Relaxed;

use super::VHost;
use crate::protocol::AmqpError;

impl VHost {
    /// Set (or, with None or a negative value, lift) the queue limit.
    pub fn set_max_queues(&self, limit: Option<i64>) {
        self.max_queues.store(limit.unwrap_or(-1), Relaxed);
    }

    /// Whether one more queue, `name`, may be created (called under the
    /// topology lock, so concurrent declares cannot both pass).
    pub(super) fn check_queue_limit(&self, name: &str) -> Result<(), AmqpError> {
        let max = self.max_queues.load(Relaxed);
        if max >= 0 && self.queue_count() as i64 >= max {
            return Err(AmqpError::precondition_failed(format!(
                "cannot declare queue '{name}': queue limit in vhost '{}' ({max}) is reached",
                self.name
            )));
        }
        Ok(())
    }
}
