//! Vhost and user limits, enforced as RabbitMQ enforces them: a vhost's
//! `max-connections` and a user's `max-connections` at connection.open
//! (530), a user's `max-channels` at channel.open (530, closing the
//! connection), a vhost's `max-queues` when a declare would create a
//! queue (406, see `vhost/limits.rs`). Changes go through here so they
//! take effect at once. A negative limit means none; the counts are of
//! open connections and channels at the moment of the check (connections
//! admitted but not yet open count too, so concurrent opens cannot pass a
//! limit together).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use super::Broker;
use crate::auth::access::{AccessError, LimitUpdate};
use crate::protocol::AmqpError;
use crate::store::access::LimitScope;

impl Broker {
    /// Set limits of a vhost or user, in effect once this returns; the
    /// metadata log's sync ticket.
    pub fn put_limits(
        &self,
        scope: LimitScope,
        target: &str,
        limits: &BTreeMap<String, i64>,
        update: LimitUpdate,
    ) -> Result<u64, AccessError> {
        // One change at a time, so the vhost gets the last one stored.
        let _admin = self.admin.lock();
        let ticket = self.access.put_limits(scope, target, limits, update)?;
        self.apply_limits(scope, target);
        Ok(ticket)
    }

    /// Clear a limit (all of the target's when `name` is None).
    pub fn delete_limit(
        &self,
        scope: LimitScope,
        target: &str,
        name: Option<&str>,
    ) -> Result<u64, AccessError> {
        let _admin = self.admin.lock();
        let ticket = self.access.delete_limit(scope, target, name)?;
        self.apply_limits(scope, target);
        Ok(ticket)
    }

    /// Hand a vhost its queue limit (connection and channel limits are
    /// read from the access model at each check).
    pub(super) fn apply_limits(&self, scope: LimitScope, target: &str) {
        if scope == LimitScope::Vhost {
            if let Some(v) = self.vhost(target) {
                v.set_max_queues(self.limit(scope, target, "max-queues"));
            }
        }
    }

    /// One limit, if set to a value that limits (not negative).
    fn limit(&self, scope: LimitScope, target: &str, name: &str) -> Option<i64> {
        let limits = self.access.limits_of(scope, target)?;
        limits.get(name).copied().filter(|l| *l >= 0)
    }

    /// Admit connection `id` of `user` to `vhost` if neither's
    /// `max-connections` is reached; the admission counts as a connection
    /// until it is registered or forgotten (see `Connections::admit`).
    pub fn admit_connection(&self, id: u64, user: &str, vhost: &Arc<str>) -> Result<(), AmqpError> {
        let vhost_max = self.limit(LimitScope::Vhost, vhost, "max-connections");
        let user_max = self.limit(LimitScope::User, user, "max-connections");
        if vhost_max.is_none() && user_max.is_none() {
            return Ok(());
        }
        self.connections.admit(id, user, vhost, |in_vhost, of_user| {
            if let Some(max) = vhost_max.filter(|max| in_vhost as i64 >= *max) {
                return Err(AmqpError::not_allowed(format!(
                    "access to vhost '{vhost}' refused for user '{user}': connection limit ({max}) is reached"
                )));
            }
            if let Some(max) = user_max.filter(|max| of_user as i64 >= *max) {
                return Err(AmqpError::not_allowed(format!(
                    "connection refused for user '{user}': user connection limit ({max}) is reached"
                )));
            }
            Ok(())
        })
    }

    /// Whether `user` may open one more channel (on any connection).
    pub fn check_channel_limit(&self, user: &str) -> Result<(), AmqpError> {
        let Some(max) = self.limit(LimitScope::User, user, "max-channels") else {
            return Ok(());
        };
        let open: u64 = self.connections.sum_matching(
            |c| c.user == user,
            |c| u64::from(c.open_channels.load(Relaxed)),
        );
        if open as i64 >= max {
            return Err(AmqpError::not_allowed(format!(
                "number of channels opened for user '{user}' has reached the maximum allowed user limit of ({max})"
            )));
        }
        Ok(())
    }
}
