//! Policies applied to a live queue: its behaviour recomputed from its
//! arguments and the policies that match it, and what changes at once
//! (a lower length limit trims the queue, an `expires` starts counting;
//! TTLs apply to messages published from then on, as in RabbitMQ).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::Queue;
use crate::broker::policy::Matched;
use crate::broker::queue_policy::Overflow;

impl Queue {
    /// Apply `matched` (the policies that now match this queue).
    pub fn apply_policy(self: &Arc<Self>, matched: Matched) {
        let mut st = self.state.lock();
        if st.deleted || st.applied == matched {
            return;
        }
        st.policy = matched.apply(&self.declared);
        if let Some(s) = &self.stream {
            s.apply_policy(self, &self.arguments, st.policy.max_length_bytes, &matched);
            st.applied = matched;
            return;
        }
        st.applied = matched;
        self.has_delivery_limit
            .store(st.policy.delivery_limit.is_some(), Ordering::Relaxed);
        if st.policy.overflow == Overflow::DropHead {
            self.drop_over_limit(&mut st);
        }
        let now = crate::broker::message::now_ms();
        st.last_used_ms = now;
        self.schedule_unused_check(&mut st, now);
        self.after_change(&mut st);
        self.update_saturation(&st);
    }

    /// The policies applied (for the API).
    pub fn applied_policy(&self) -> Matched {
        self.state.lock().applied.clone()
    }

    /// Where dead letters go: exchange and routing key (None: dropped).
    pub fn dead_letter_target(&self) -> (Option<String>, Option<String>) {
        let st = self.state.lock();
        (
            st.policy.dead_letter_exchange.clone(),
            st.policy.dead_letter_routing_key.clone(),
        )
    }

    /// Drop (or dead-letter) messages from the head while over a length
    /// limit.
    pub(super) fn drop_over_limit(&self, st: &mut super::QueueState) {
        while st
            .policy
            .over_limit(st.ready.len() as u64, st.ready.body_bytes())
        {
            let Some(head) = st.ready.pop() else {
                break;
            };
            self.drop_message(st, head, crate::broker::dead_letter::Reason::Maxlen);
        }
    }
}
