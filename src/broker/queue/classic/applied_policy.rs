//! Policies applied to a live classic queue: its behaviour recomputed from
//! its arguments and the policies that match it, and what changes at once
//! (a lower length limit trims the queue, an `expires` starts counting;
//! TTLs apply to messages published from then on, as in RabbitMQ).

use std::sync::atomic::Ordering;

use super::{after_change, drop_over_limit, Call, ClassicQueue};
use crate::broker::policy::Matched;
use crate::broker::queue_policy::Overflow;

impl ClassicQueue {
    /// Apply `matched` (the policies that now match this queue).
    pub(super) fn apply_policy(&self, c: &mut Call<'_>, matched: Matched) {
        let mut st = self.state.lock();
        if st.deleted || st.applied == matched {
            return;
        }
        st.policy = matched.apply(&c.q.declared);
        st.applied = matched;
        self.has_delivery_limit
            .store(st.policy.delivery_limit.is_some(), Ordering::Relaxed);
        if st.policy.overflow == Overflow::DropHead {
            drop_over_limit(c.q, &mut st);
        }
        st.last_used_ms = c.now;
        super::lifecycle::schedule_unused_check(c, &mut st, c.now);
        after_change(c, &mut st);
        self.update_saturation(c.q, &st);
    }

    /// The policies applied (for the API).
    pub(super) fn applied_policy(&self) -> Matched {
        self.state.lock().applied.clone()
    }

    /// The consumer timeout in force, ms.
    pub(super) fn consumer_timeout_ms(&self) -> Option<u64> {
        self.state.lock().policy.consumer_timeout_ms
    }

    /// Where dead letters go: exchange and routing key (None: dropped).
    pub(super) fn dead_letter_target(&self) -> (Option<String>, Option<String>) {
        let st = self.state.lock();
        (
            st.policy.dead_letter_exchange.clone(),
            st.policy.dead_letter_routing_key.clone(),
        )
    }
}
