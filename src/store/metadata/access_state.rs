//! The access half of the metadata state: what the user, vhost,
//! permission and policy records add up to, and the records a snapshot
//! keeps of it.

use super::record::MetaOp;
use crate::store::access::{AccessDefs, LimitScope};

/// Apply an access record; `op` back if it is not one.
pub fn apply(a: &mut AccessDefs, op: MetaOp) -> Option<MetaOp> {
    match op {
        MetaOp::Seeded => {}
        MetaOp::PutVhost { def } => {
            a.vhosts.insert(def.name.clone(), def);
        }
        MetaOp::DeleteVhost { name } => {
            a.vhosts.remove(&name);
            a.vhost_limits.remove(&name);
            a.permissions.retain(|(_, v), _| *v != name);
            a.topic_permissions.retain(|(_, v, _), _| *v != name);
            a.policies.retain(|(v, _, _), _| *v != name);
            a.parameters.retain(|(v, _, _), _| *v != name);
        }
        MetaOp::PutUser { def } => {
            a.users.insert(def.name.clone(), def);
        }
        MetaOp::DeleteUser { name } => {
            a.users.remove(&name);
            a.user_limits.remove(&name);
            a.permissions.retain(|(u, _), _| *u != name);
            a.topic_permissions.retain(|(u, _, _), _| *u != name);
        }
        MetaOp::PutPermission { def } => {
            a.permissions
                .insert((def.user.clone(), def.vhost.clone()), def);
        }
        MetaOp::DeletePermission { user, vhost } => {
            a.permissions.remove(&(user, vhost));
        }
        MetaOp::PutTopicPermission { def } => {
            let key = (def.user.clone(), def.vhost.clone(), def.exchange.clone());
            a.topic_permissions.insert(key, def);
        }
        MetaOp::DeleteTopicPermission {
            user,
            vhost,
            exchange,
        } => {
            a.topic_permissions.remove(&(user, vhost, exchange));
        }
        MetaOp::PutPolicy { def } => {
            let key = (def.vhost.clone(), def.name.clone(), def.operator);
            a.policies.insert(key, def);
        }
        MetaOp::DeletePolicy {
            vhost,
            name,
            operator,
        } => {
            a.policies.remove(&(vhost, name, operator));
        }
        MetaOp::PutLimit {
            scope,
            target,
            name,
            value,
        } => {
            a.limits_mut(scope)
                .entry(target)
                .or_default()
                .insert(name, value);
        }
        MetaOp::DeleteLimit {
            scope,
            target,
            name,
        } => {
            let limits = a.limits_mut(scope);
            if let Some(l) = limits.get_mut(&target) {
                l.remove(&name);
                if l.is_empty() {
                    limits.remove(&target);
                }
            }
        }
        MetaOp::PutGlobalParameter { name, value } => {
            a.global_parameters.insert(name, value);
        }
        MetaOp::DeleteGlobalParameter { name } => {
            a.global_parameters.remove(&name);
        }
        MetaOp::PutParameter {
            vhost,
            component,
            name,
            value,
        } => {
            a.parameters.insert((vhost, component, name), value);
        }
        MetaOp::DeleteParameter {
            vhost,
            component,
            name,
        } => {
            a.parameters.remove(&(vhost, component, name));
        }
        other => return Some(other),
    }
    a.seeded = true;
    None
}

/// The access records a snapshot keeps: the seed mark, then every object.
pub fn ops(a: &AccessDefs) -> Vec<MetaOp> {
    if !a.seeded {
        return Vec::new();
    }
    let mut out = vec![MetaOp::Seeded];
    out.extend(
        a.vhosts
            .values()
            .map(|d| MetaOp::PutVhost { def: d.clone() }),
    );
    out.extend(a.users.values().map(|d| MetaOp::PutUser { def: d.clone() }));
    out.extend(
        a.permissions
            .values()
            .map(|d| MetaOp::PutPermission { def: d.clone() }),
    );
    out.extend(
        a.topic_permissions
            .values()
            .map(|d| MetaOp::PutTopicPermission { def: d.clone() }),
    );
    out.extend(
        a.policies
            .values()
            .map(|d| MetaOp::PutPolicy { def: d.clone() }),
    );
    for scope in [LimitScope::Vhost, LimitScope::User] {
        for (target, limits) in a.limits(scope) {
            for (name, value) in limits {
                out.push(MetaOp::PutLimit {
                    scope,
                    target: target.clone(),
                    name: name.clone(),
                    value: *value,
                });
            }
        }
    }
    out.extend(
        a.global_parameters
            .iter()
            .map(|(name, value)| MetaOp::PutGlobalParameter {
                name: name.clone(),
                value: value.clone(),
            }),
    );
    out.extend(
        a.parameters
            .iter()
            .map(|((vhost, component, name), value)| MetaOp::PutParameter {
                vhost: vhost.clone(),
                component: component.clone(),
                name: name.clone(),
                value: value.clone(),
            }),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::access::{PermissionDef, UserDef, VhostDef};

    #[test]
    fn deleting_a_user_or_vhost_drops_its_permissions_and_snapshots_round_trip() {
        let mut a = AccessDefs::default();
        let user = |n: &str| MetaOp::PutUser {
            def: UserDef {
                name: n.into(),
                password_hash: String::new(),
                hashing_algorithm: "rabbit_password_hashing_sha256".into(),
                tags: vec![],
            },
        };
        let perm = |u: &str, v: &str| MetaOp::PutPermission {
            def: PermissionDef {
                user: u.into(),
                vhost: v.into(),
                configure: ".*".into(),
                write: ".*".into(),
                read: ".*".into(),
            },
        };
        for op in [
            MetaOp::PutVhost {
                def: VhostDef {
                    name: "a".into(),
                    ..Default::default()
                },
            },
            MetaOp::PutVhost {
                def: VhostDef {
                    name: "b".into(),
                    ..Default::default()
                },
            },
            user("u"),
            user("w"),
            perm("u", "a"),
            perm("u", "b"),
            perm("w", "a"),
            MetaOp::DeleteVhost { name: "b".into() },
            MetaOp::DeleteUser { name: "w".into() },
            MetaOp::PutGlobalParameter {
                name: "cluster_name".into(),
                value: "c".into(),
            },
            MetaOp::PutGlobalParameter {
                name: "gone".into(),
                value: serde_json::json!({"a": [1]}),
            },
            MetaOp::DeleteGlobalParameter {
                name: "gone".into(),
            },
            MetaOp::PutParameter {
                vhost: "a".into(),
                component: "shovel".into(),
                name: "move".into(),
                value: serde_json::json!({"src-queue": "q"}),
            },
        ] {
            assert!(apply(&mut a, op).is_none());
        }
        assert!(a.seeded);
        let keys: Vec<_> = a.permissions.keys().cloned().collect();
        assert_eq!(keys, [("u".to_string(), "a".to_string())]);
        let params: Vec<_> = a.global_parameters.keys().cloned().collect();
        assert_eq!(params, ["cluster_name"]);
        assert_eq!(a.parameters.len(), 1);
        let mut again = AccessDefs::default();
        for op in ops(&a) {
            assert!(apply(&mut again, op).is_none());
        }
        assert_eq!(again, a);
        assert!(apply(
            &mut a,
            MetaOp::DeleteQueue {
                vhost: "/".into(),
                name: "q".into()
            }
        )
        .is_some());
    }
}
