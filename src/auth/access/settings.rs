//! The run-time settings kept with the access model that are not
//! permissions: vhost and user limits (stored and shown; enforcing them is
//! the limits issue's) and global parameters (RabbitMQ's
//! `cluster_name`, `internal_cluster_id`, or any JSON a user stores).

use std::collections::BTreeMap;

use serde_json::Value;

use super::{Access, AccessError};
use crate::store::access::LimitScope;
use crate::store::metadata::MetaOp;

/// Longest global parameter name accepted.
const MAX_PARAMETER_NAME_LEN: usize = 255;
/// Largest global parameter value accepted, as JSON (a metadata record
/// must stay well under the log's record limit).
const MAX_PARAMETER_VALUE_BYTES: usize = 1 << 20;
/// Most global parameters kept.
const MAX_GLOBAL_PARAMETERS: usize = 10_000;

/// What happens to the limits a change does not name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitUpdate {
    /// They keep their values (`/api/vhost-limits/{vhost}/{name}`).
    Merge,
    /// They are cleared (the `vhost-limits` parameter is the whole set).
    Replace,
}

impl Access {
    /// Set several limits of one vhost or user at once.
    pub fn put_limits(
        &self,
        scope: LimitScope,
        target: &str,
        limits: &BTreeMap<String, i64>,
        update: LimitUpdate,
    ) -> Result<u64, AccessError> {
        if let Some(name) = limits.keys().find(|n| !scope.names().contains(&n.as_str())) {
            return Err(AccessError::Invalid(format!("unknown limit '{name}'")));
        }
        let mut st = self.state.write();
        let exists = match scope {
            LimitScope::Vhost => st.defs.vhosts.contains_key(target),
            LimitScope::User => st.defs.users.contains_key(target),
        };
        if !exists {
            return Err(AccessError::NotFound);
        }
        let dropped = match update {
            LimitUpdate::Merge => Vec::new(),
            LimitUpdate::Replace => st
                .defs
                .limits(scope)
                .get(target)
                .into_iter()
                .flat_map(|l| l.keys())
                .filter(|n| !limits.contains_key(*n))
                .map(|n| MetaOp::DeleteLimit {
                    scope,
                    target: target.into(),
                    name: n.clone(),
                })
                .collect(),
        };
        let set = limits.iter().map(|(name, value)| MetaOp::PutLimit {
            scope,
            target: target.into(),
            name: name.clone(),
            value: *value,
        });
        let ops = dropped.into_iter().chain(set).collect();
        self.commit(&mut st, ops)
    }

    /// Clear a vhost or user limit (all of them when `name` is None).
    pub fn delete_limit(
        &self,
        scope: LimitScope,
        target: &str,
        name: Option<&str>,
    ) -> Result<u64, AccessError> {
        let mut st = self.state.write();
        let ops: Vec<MetaOp> = st
            .defs
            .limits(scope)
            .get(target)
            .into_iter()
            .flat_map(|l| l.keys())
            .filter(|n| name.is_none_or(|want| want == n.as_str()))
            .map(|n| MetaOp::DeleteLimit {
                scope,
                target: target.into(),
                name: n.clone(),
            })
            .collect();
        if ops.is_empty() {
            return Err(AccessError::NotFound);
        }
        self.commit(&mut st, ops)
    }

    /// The limits of one vhost or user, if it has any.
    pub fn limits_of(&self, scope: LimitScope, target: &str) -> Option<BTreeMap<String, i64>> {
        self.state.read().defs.limits(scope).get(target).cloned()
    }

    /// A global parameter's value.
    pub fn global_parameter(&self, name: &str) -> Option<Value> {
        self.state.read().defs.global_parameters.get(name).cloned()
    }

    /// Set a global parameter.
    pub fn put_global_parameter(&self, name: &str, value: Value) -> Result<u64, AccessError> {
        check_parameter(name, &value)?;
        let mut st = self.state.write();
        let params = &st.defs.global_parameters;
        if params.len() >= MAX_GLOBAL_PARAMETERS && !params.contains_key(name) {
            return Err(AccessError::Invalid(format!(
                "at most {MAX_GLOBAL_PARAMETERS} global parameters"
            )));
        }
        let op = MetaOp::PutGlobalParameter {
            name: name.into(),
            value,
        };
        self.commit(&mut st, vec![op])
    }

    /// Clear a global parameter.
    pub fn delete_global_parameter(&self, name: &str) -> Result<u64, AccessError> {
        let mut st = self.state.write();
        if !st.defs.global_parameters.contains_key(name) {
            return Err(AccessError::NotFound);
        }
        let op = MetaOp::DeleteGlobalParameter { name: name.into() };
        self.commit(&mut st, vec![op])
    }
}

/// A parameter's name and value within bounds (a metadata record must
/// stay well under the log's record limit).
fn check_parameter(name: &str, value: &Value) -> Result<(), AccessError> {
    if name.is_empty() || name.len() > MAX_PARAMETER_NAME_LEN {
        return Err(AccessError::Invalid(format!(
            "parameter names are 1 to {MAX_PARAMETER_NAME_LEN} bytes long"
        )));
    }
    let size = serde_json::to_vec(value).map_or(usize::MAX, |v| v.len());
    if size > MAX_PARAMETER_VALUE_BYTES {
        return Err(AccessError::Invalid(format!(
            "parameter values are at most {MAX_PARAMETER_VALUE_BYTES} bytes of JSON"
        )));
    }
    Ok(())
}

/// Most runtime parameters of components kept, over all vhosts.
const MAX_PARAMETERS: usize = 10_000;

impl Access {
    /// A vhost's runtime parameter of `component`.
    pub fn parameter(&self, vhost: &str, component: &str, name: &str) -> Option<Value> {
        let key = (vhost.to_string(), component.to_string(), name.to_string());
        self.state.read().defs.parameters.get(&key).cloned()
    }

    /// Every runtime parameter of components: (vhost, component, name)
    /// and value.
    pub fn parameters(&self) -> Vec<((String, String, String), Value)> {
        let st = self.state.read();
        st.defs
            .parameters
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Set a vhost's runtime parameter of `component` (checked by the
    /// component's owner first).
    pub fn put_parameter(
        &self,
        vhost: &str,
        component: &str,
        name: &str,
        value: Value,
    ) -> Result<u64, AccessError> {
        check_parameter(name, &value)?;
        let mut st = self.state.write();
        if !st.defs.vhosts.contains_key(vhost) {
            return Err(AccessError::NotFound);
        }
        let key = (vhost.to_string(), component.to_string(), name.to_string());
        if st.defs.parameters.len() >= MAX_PARAMETERS && !st.defs.parameters.contains_key(&key) {
            return Err(AccessError::Invalid(format!(
                "at most {MAX_PARAMETERS} parameters"
            )));
        }
        let op = MetaOp::PutParameter {
            vhost: key.0,
            component: key.1,
            name: key.2,
            value,
        };
        self.commit(&mut st, vec![op])
    }

    /// Clear a vhost's runtime parameter of `component`.
    pub fn delete_parameter(
        &self,
        vhost: &str,
        component: &str,
        name: &str,
    ) -> Result<u64, AccessError> {
        let mut st = self.state.write();
        let key = (vhost.to_string(), component.to_string(), name.to_string());
        if !st.defs.parameters.contains_key(&key) {
            return Err(AccessError::NotFound);
        }
        let op = MetaOp::DeleteParameter {
            vhost: key.0,
            component: key.1,
            name: key.2,
        };
        self.commit(&mut st, vec![op])
    }
}
