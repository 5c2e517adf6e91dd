//! A vhost's policies: replaced whole when one is set or cleared, then
//! applied to every queue (new queues get theirs at declare). Lock order:
//! topology → policies; the policy lock is never held while a queue's is
//! taken.

use std::sync::Arc;

use super::VHost;
use crate::broker::exchange::Exchange;
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
            q.apply_policy(self.policies_for_queue(&q.name, q.is_stream()));
        }
        for x in self.exchanges() {
            self.apply_exchange_policy(&x);
        }
    }

    /// Give `x` the alternate exchange of the policy matching it.
    pub(super) fn apply_exchange_policy(&self, x: &Exchange) {
        let matched = self.policies.read().matching(Target::Exchange, &x.name);
        let alternate = matched
            .definition()
            .get("alternate-exchange")
            .and_then(|v| v.as_str())
            .map(Arc::from);
        x.apply_policy(matched.policy.map(|p| p.name), alternate);
    }

    /// The policies matching the queue `name` (a stream's, if `stream`).
    pub(super) fn policies_for_queue(&self, name: &str, stream: bool) -> Matched {
        let target = match stream {
            true => Target::Stream,
            false => Target::Queue,
        };
        self.policies.read().matching(target, name)
    }
}
