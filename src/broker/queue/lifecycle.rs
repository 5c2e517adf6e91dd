//! A queue's end of life: x-expires (uses noted, the housekeeping task's
//! check), and deletion, unconditional or if-unused / if-empty, which
//! cancels its consumers.

use std::sync::Arc;

use super::{DeleteRefused, Queue, QueueState};
use crate::broker::chores::Chore;
use crate::broker::consumer::ConnEvent;
use crate::broker::message::now_ms;

impl Queue {
    /// x-expires: note a use (declare, get, consumer coming or going) and
    /// make sure the housekeeping task will look at the queue again.
    pub fn touch(self: &Arc<Self>) {
        let mut st = self.state.lock();
        let now = now_ms();
        st.last_used_ms = now;
        self.schedule_unused_check(&mut st, now);
    }

    pub(super) fn schedule_unused_check(self: &Arc<Self>, st: &mut QueueState, from_ms: u64) {
        let (Some(expires), Some(chores)) = (st.policy.expires_ms, &self.ctx.chores) else {
            return;
        };
        if !st.unused_check_scheduled && !st.deleted {
            st.unused_check_scheduled = true;
            let _ = chores.send(Chore::ExpireQueue {
                at_ms: from_ms.saturating_add(expires),
                queue: Arc::downgrade(self),
            });
        }
    }

    /// The housekeeping task's x-expires check (called with the topology
    /// lock held, so the check and the delete are one step): delete the
    /// queue if it has gone unused for its x-expires, else schedule the
    /// next check. True when it was deleted.
    pub fn delete_if_expired(self: &Arc<Self>) -> bool {
        let mut st = self.state.lock();
        st.unused_check_scheduled = false;
        let Some(expires) = st.policy.expires_ms else {
            return false;
        };
        if st.deleted || !st.consumers.is_empty() {
            // In use: the removal of the last consumer schedules again.
            return false;
        }
        if now_ms() < st.last_used_ms.saturating_add(expires) {
            let from = st.last_used_ms;
            self.schedule_unused_check(&mut st, from);
            return false;
        }
        Self::delete_locked(&mut st);
        self.update_saturation(&st);
        true
    }

    /// Mark deleted, drop messages, and cancel consumers (each connection
    /// gets basic.cancel). Returns the number of messages dropped.
    pub fn mark_deleted(&self) -> u32 {
        if let Some(s) = &self.stream {
            s.mark_deleted();
            return 0;
        }
        let mut st = self.state.lock();
        let n = Self::delete_locked(&mut st);
        self.update_saturation(&st);
        n
    }

    /// Delete only if the conditions hold, checked and applied under the
    /// queue's lock so no consumer or message can slip in between.
    pub fn mark_deleted_if(&self, if_unused: bool, if_empty: bool) -> Result<u32, DeleteRefused> {
        if let Some(s) = &self.stream {
            // RabbitMQ deletes a stream whatever if-unused and if-empty say.
            s.mark_deleted();
            return Ok(0);
        }
        let mut st = self.state.lock();
        if if_unused && !st.consumers.is_empty() {
            return Err(DeleteRefused::InUse);
        }
        if if_empty && !st.ready.is_empty() {
            return Err(DeleteRefused::NotEmpty);
        }
        let n = Self::delete_locked(&mut st);
        self.update_saturation(&st);
        Ok(n)
    }

    pub(super) fn delete_locked(st: &mut QueueState) -> u32 {
        st.deleted = true;
        st.dead_letters.clear();
        let n = st.ready.remove() as u32;
        for c in st.consumers.drain() {
            let _ = c.conn.send(ConnEvent::ConsumerCancelled {
                channel: c.channel,
                consumer_id: c.id,
                consumer_tag: c.tag.clone(),
            });
        }
        n
    }
}
