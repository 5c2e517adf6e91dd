//! A vhost's policies: replaced whole when one is set or cleared, then
//! applied to every queue (new queues get theirs at declare). Lock order:
//! topology → policies; the policy lock is never held while a queue's is
//! taken.

use super::VHost;
use crate::broker::policy::{Matched, PolicySet, Target};
use crate::store::access::PolicyDef;

impl VHost {
    /// Replace the policies (those of this vhost) and apply them to every
    /// queue.
    pub fn set_policies(&self, defs: &[PolicyDef]) {
        // Under the topology lock, as a declare picks its queue's policies:
        // a queue declared meanwhile gets either set, then this one.
        let _topo = self.topology.lock();
        *self.policies.write() = PolicySet::new(defs);
        for q in self.queues() {
            q.apply_policy(self.policies_for_queue(&q.name));
        }
    }

    /// The policies matching the queue `name`.
    pub(super) fn policies_for_queue(&self, name: &str) -> Matched {
        self.policies.read().matching(Target::Queue, name)
    }
}
