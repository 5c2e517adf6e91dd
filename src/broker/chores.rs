//! Work a queue hands to its vhost's housekeeping task because it cannot be
//! done under the queue's lock: waking up when the head message expires,
//! and routing dead letters (which takes the topology lock, and the lock
//! order is topology → queue).

use std::sync::Weak;

use tokio::sync::mpsc::UnboundedSender;

use super::queue::Queue;

/// A request from a queue.
#[derive(Debug)]
pub enum Chore {
    /// Expire the queue's head at this time (Unix milliseconds).
    Expire {
        /// When.
        at_ms: u64,
        /// Which queue.
        queue: Weak<Queue>,
    },
    /// The queue has dead letters to route.
    DeadLetters(Weak<Queue>),
    /// Route the delayed messages due at this time (Unix milliseconds).
    FireDelayed {
        /// When.
        at_ms: u64,
    },
    /// Check at this time whether the queue has been unused for its
    /// x-expires (and delete it if so).
    ExpireQueue {
        /// When.
        at_ms: u64,
        /// Which queue.
        queue: Weak<Queue>,
    },
}

/// Where queues send chores.
pub type ChoreSender = UnboundedSender<Chore>;
