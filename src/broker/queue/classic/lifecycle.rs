//! A classic queue's end of life: x-expires (uses noted, the housekeeping
//! task's check), and deletion, unconditional or if-unused / if-empty,
//! which cancels its consumers.

use super::{Call, ClassicQueue, QueueState};
use crate::broker::queue::kind::{Effect, Effects};
use crate::broker::queue::DeleteRefused;

impl ClassicQueue {
    /// x-expires: note a use (declare, get, consumer coming or going) and
    /// make sure the housekeeping task will look at the queue again.
    pub(super) fn touch(&self, now: u64, fx: &mut Effects) {
        let mut st = self.state.lock();
        st.last_used_ms = now;
        schedule_check(&mut st, now, fx);
    }

    /// The housekeeping task's x-expires check (called with the topology
    /// lock held, so the check and the delete are one step): delete the
    /// queue if it has gone unused for its x-expires, else schedule the
    /// next check. True when it was deleted.
    pub(super) fn delete_if_expired(&self, now: u64, fx: &mut Effects) -> bool {
        let mut st = self.state.lock();
        st.unused_check_scheduled = false;
        let Some(expires) = st.policy.expires_ms else {
            return false;
        };
        if st.deleted || !st.consumers.is_empty() {
            // In use: the removal of the last consumer schedules again.
            return false;
        }
        if now < st.last_used_ms.saturating_add(expires) {
            let from = st.last_used_ms;
            schedule_check(&mut st, from, fx);
            return false;
        }
        delete_locked(&mut st, fx);
        self.saturated
            .store(false, std::sync::atomic::Ordering::Relaxed);
        true
    }

    /// Delete only if the conditions hold, checked and applied under the
    /// queue's lock so no consumer or message can slip in between.
    /// Consumers are cancelled (each connection gets basic.cancel).
    pub(super) fn delete(
        &self,
        if_unused: bool,
        if_empty: bool,
        fx: &mut Effects,
    ) -> Result<u32, DeleteRefused> {
        let mut st = self.state.lock();
        if if_unused && !st.consumers.is_empty() {
            return Err(DeleteRefused::InUse);
        }
        if if_empty && !st.ready.is_empty() {
            return Err(DeleteRefused::NotEmpty);
        }
        let n = delete_locked(&mut st, fx);
        // A deleted queue holds no publisher back.
        self.saturated
            .store(false, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }

    pub(super) fn is_deleted(&self) -> bool {
        self.state.lock().deleted
    }
}

/// Have the housekeeping task check x-expires at `from_ms` + x-expires.
pub(super) fn schedule_unused_check(c: &mut Call<'_>, st: &mut QueueState, from_ms: u64) {
    if c.q.ctx.chores.is_some() {
        schedule_check(st, from_ms, c.fx);
    }
}

fn schedule_check(st: &mut QueueState, from_ms: u64, fx: &mut Effects) {
    let Some(expires) = st.policy.expires_ms else {
        return;
    };
    if !st.unused_check_scheduled && !st.deleted {
        st.unused_check_scheduled = true;
        fx.push(Effect::CheckUnusedAt(from_ms.saturating_add(expires)));
    }
}

fn delete_locked(st: &mut QueueState, fx: &mut Effects) -> u32 {
    st.deleted = true;
    st.dead_letters.clear();
    let n = st.ready.remove() as u32;
    for c in st.consumers.drain() {
        fx.push(Effect::Cancel(c));
    }
    n
}
