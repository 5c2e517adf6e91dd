//! Users, vhosts, permissions, policies, limits and global parameters as the metadata log stores them
//! (RabbitMQ's definitions shapes), and what they add up to after
//! recovery. No plain-text password is ever stored: a user has RabbitMQ's
//! salted hash and its algorithm's name.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserDef {
    /// Login name.
    pub name: String,
    /// RabbitMQ's password hash (base64 of salt and digest); empty: the
    /// user cannot log in with a password.
    pub password_hash: String,
    /// RabbitMQ's name of the hash's algorithm.
    pub hashing_algorithm: String,
    /// Tags (administrator, monitoring, policymaker, management, ...).
    pub tags: Vec<String>,
}

/// A vhost.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VhostDef {
    /// Name.
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
}

/// A user's permissions in a vhost: regexes on resource names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PermissionDef {
    /// The user.
    pub user: String,
    /// The vhost.
    pub vhost: String,
    /// Which resources the user may declare and delete.
    pub configure: String,
    /// Which resources the user may publish to (and bind queues from).
    pub write: String,
    /// Which resources the user may consume from (and bind to).
    pub read: String,
}

/// A user's topic permissions on one exchange of a vhost: regexes on
/// routing keys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicPermissionDef {
    /// The user.
    pub user: String,
    /// The vhost.
    pub vhost: String,
    /// The topic exchange.
    pub exchange: String,
    /// Routing keys the user may publish with.
    pub write: String,
    /// Routing keys the user may bind with.
    pub read: String,
}

/// A policy or an operator policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PolicyDef {
    /// Its vhost.
    pub vhost: String,
    /// Name.
    pub name: String,
    /// Regex on object names.
    pub pattern: String,
    /// `all`, `queues`, `exchanges`, `classic_queues`, `quorum_queues`,
    /// `streams`.
    #[serde(rename = "apply-to")]
    pub apply_to: String,
    /// Highest wins.
    pub priority: i64,
    /// The keys it sets.
    pub definition: Value,
    /// An operator policy (else a user policy).
    #[serde(default)]
    pub operator: bool,
}

/// Every user, vhost, permission and policy.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AccessDefs {
    /// The config seeded this data directory (or a later version wrote
    /// access records): its users and vhosts are no longer read from the
    /// config.
    pub seeded: bool,
    /// By name.
    pub users: BTreeMap<String, UserDef>,
    /// By name.
    pub vhosts: BTreeMap<String, VhostDef>,
    /// By (user, vhost).
    pub permissions: BTreeMap<(String, String), PermissionDef>,
    /// By (user, vhost, exchange).
    pub topic_permissions: BTreeMap<(String, String, String), TopicPermissionDef>,
    /// By (vhost, name, operator).
    pub policies: BTreeMap<(String, String, bool), PolicyDef>,
    /// Vhost limits (`max-connections`, `max-queues`), by vhost and name.
    pub vhost_limits: BTreeMap<String, BTreeMap<String, i64>>,
    /// User limits (`max-connections`, `max-channels`), by user and name.
    pub user_limits: BTreeMap<String, BTreeMap<String, i64>>,
    /// Global parameters (`cluster_name`, `internal_cluster_id`, ...), by
    /// name.
    pub global_parameters: BTreeMap<String, Value>,
    /// Vhosts' runtime parameters of components (`shovel`), by (vhost,
    /// component, name). Vhost limits are kept in `vhost_limits`.
    pub parameters: BTreeMap<(String, String, String), Value>,
}

/// What a limit applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitScope {
    /// A vhost's limits.
    Vhost,
    /// A user's limits.
    User,
}

impl LimitScope {
    /// The limit names RabbitMQ knows for this scope.
    pub fn names(self) -> &'static [&'static str] {
        match self {
            LimitScope::Vhost => &["max-connections", "max-queues"],
            LimitScope::User => &["max-connections", "max-channels"],
        }
    }
}

impl AccessDefs {
    /// The limits of one scope.
    pub fn limits(&self, scope: LimitScope) -> &BTreeMap<String, BTreeMap<String, i64>> {
        match scope {
            LimitScope::Vhost => &self.vhost_limits,
            LimitScope::User => &self.user_limits,
        }
    }

    /// The limits of one scope, to change.
    pub fn limits_mut(
        &mut self,
        scope: LimitScope,
    ) -> &mut BTreeMap<String, BTreeMap<String, i64>> {
        match scope {
            LimitScope::Vhost => &mut self.vhost_limits,
            LimitScope::User => &mut self.user_limits,
        }
    }
}
