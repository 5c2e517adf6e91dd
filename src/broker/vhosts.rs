//! Vhosts created and deleted at run time, and policies set on them. These
//! changes are serialized by the broker's `admin` mutex (taken first,
//! before any vhost lock), so a vhost's map entry, its record and its
//! policies never disagree.
//!
//! A new vhost is built empty and
//! recorded in the access model; deleting one closes its connections,
//! deletes its queues (with their messages) and exchanges through the
//! same paths AMQP uses (so the metadata log records each), then forgets
//! the vhost and its permissions and policies.

use std::sync::Arc;

use super::{queue, Broker, VHost};
use crate::auth::access::AccessError;
use crate::store::access::{PolicyDef, VhostDef};

impl Broker {
    /// Create a vhost (or update its description and tags); the sync
    /// round that makes it durable, and whether it was created. Does file
    /// I/O: call it off the async workers.
    pub fn put_vhost(&self, def: VhostDef) -> Result<(u64, bool), AccessError> {
        if def.name.is_empty() || def.name.len() > 255 {
            return Err(AccessError::Invalid(
                "vhost names are 1 to 255 bytes".into(),
            ));
        }
        let _admin = self.admin.lock();
        // Built outside the map's lock (it opens its delayed-message
        // directory); the admin mutex keeps a second creator out.
        let created = self.vhost(&def.name).is_none();
        if created {
            let flow = queue::FlowLimits {
                high: self.config.flow_high_watermark,
                low: self.config.flow_low_watermark,
            };
            let vhost = VHost::new(&def.name, flow, self.store.clone(), None)
                .map_err(AccessError::Store)?;
            let vhost = Arc::new(vhost);
            vhost.start_housekeeping();
            self.vhosts.write().insert(def.name.clone(), vhost);
        }
        let name = def.name.clone();
        let ticket = self.access.put_vhost(def).inspect_err(|_| {
            if created {
                self.vhosts.write().remove(&name);
            }
        })?;
        tracing::info!(vhost = %name, created, "vhost stored");
        Ok((ticket, created))
    }

    /// Delete a vhost with everything in it; the sync round that makes it
    /// durable. Call it off the async workers.
    pub fn delete_vhost(&self, name: &str) -> Result<u64, AccessError> {
        let _admin = self.admin.lock();
        let Some(vhost) = self.vhosts.write().remove(name) else {
            return Err(AccessError::NotFound);
        };
        vhost.mark_deleted();
        self.shovels.stop_vhost(name);
        let reason = format!("vhost '{name}' is deleted");
        for c in self.connections.list().iter().filter(|c| &*c.vhost == name) {
            c.close(&reason);
        }
        let mut ticket = 0;
        for q in vhost.queues() {
            let owner = q.exclusive_owner.unwrap_or(0);
            if let Ok((_, t)) = vhost.delete_queue(&q.name, false, false, owner) {
                ticket = ticket.max(t);
            }
        }
        for x in vhost.exchanges() {
            if x.name.is_empty() || x.name.starts_with("amq.") {
                continue;
            }
            if let Ok(t) = vhost.delete_exchange(&x.name, false) {
                ticket = ticket.max(t);
            }
        }
        let t = self.access.delete_vhost(name)?;
        tracing::info!(vhost = %name, "vhost deleted");
        Ok(ticket.max(t))
    }

    /// Set a policy (or operator policy) and apply it to the vhost's
    /// queues at once; the sync round that makes it durable.
    pub fn put_policy(&self, def: PolicyDef) -> Result<u64, AccessError> {
        crate::broker::policy::validate(&def)
            .map_err(|why| AccessError::Invalid(format!("Validation failed\n\n{why}\n")))?;
        let _admin = self.admin.lock();
        let vhost = self.vhost(&def.vhost).ok_or(AccessError::NotFound)?;
        let ticket = self.access.put_policy(def)?;
        vhost.set_policies(&self.access.policies_of(&vhost.name));
        Ok(ticket)
    }

    /// Clear a policy and apply what remains at once.
    pub fn delete_policy(
        &self,
        vhost: &str,
        name: &str,
        operator: bool,
    ) -> Result<u64, AccessError> {
        let _admin = self.admin.lock();
        let v = self.vhost(vhost).ok_or(AccessError::NotFound)?;
        let ticket = self.access.delete_policy(vhost, name, operator)?;
        v.set_policies(&self.access.policies_of(vhost));
        Ok(ticket)
    }

    /// Close every connection of `user` (deleted, or its password changed).
    pub fn close_user_connections(&self, user: &str, reason: &str) {
        for c in self.connections.list().iter().filter(|c| c.user == user) {
            c.close(reason);
        }
    }
}
