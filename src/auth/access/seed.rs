//! What a data directory starts with: the config's users and vhosts
//! (as RabbitMQ creates its default user on a new node) and the
//! `internal_cluster_id` global parameter RabbitMQ generates once.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as BASE64_URL;
use base64::Engine;
use serde_json::Value;

use super::super::password::{Algorithm, PasswordHash};
use crate::store::access::{AccessDefs, PermissionDef, UserDef, VhostDef};
use crate::store::metadata::MetaOp;

/// The global parameter naming this node's data, made once.
pub const CLUSTER_ID: &str = "internal_cluster_id";

/// The record giving the data directory its cluster id, if it has none
/// yet (RabbitMQ's format: `rabbitmq-cluster-id-` and 16 random bytes).
pub fn cluster_id(defs: &AccessDefs) -> Option<MetaOp> {
    if defs.global_parameters.contains_key(CLUSTER_ID) {
        return None;
    }
    let id: [u8; 16] = rand::random();
    Some(MetaOp::PutGlobalParameter {
        name: CLUSTER_ID.into(),
        value: Value::String(format!("rabbitmq-cluster-id-{}", BASE64_URL.encode(id))),
    })
}

/// The access records that seed a fresh data directory from the config:
/// its vhosts, its users (plain passwords hashed with a fresh salt), and
/// every user's full permissions in every vhost, as before the model was
/// run-time.
pub fn seed(config: &crate::config::Config) -> Vec<MetaOp> {
    let mut ops = vec![MetaOp::Seeded];
    for v in &config.vhosts {
        ops.push(MetaOp::PutVhost {
            def: VhostDef {
                name: v.clone(),
                ..Default::default()
            },
        });
    }
    for u in &config.users {
        let (password_hash, hashing_algorithm) = match (&u.password_hash, &u.password) {
            (Some(h), _) => (
                h.clone(),
                u.hashing_algorithm
                    .clone()
                    .unwrap_or_else(|| Algorithm::default().name().to_string()),
            ),
            (None, Some(p)) if !p.is_empty() => (
                PasswordHash::new(p, Algorithm::default()).encoded(),
                Algorithm::default().name().to_string(),
            ),
            _ => (String::new(), Algorithm::default().name().to_string()),
        };
        ops.push(MetaOp::PutUser {
            def: UserDef {
                name: u.name.clone(),
                password_hash,
                hashing_algorithm,
                tags: u.tags.clone(),
            },
        });
        for v in &config.vhosts {
            ops.push(MetaOp::PutPermission {
                def: PermissionDef {
                    user: u.name.clone(),
                    vhost: v.clone(),
                    configure: ".*".into(),
                    write: ".*".into(),
                    read: ".*".into(),
                },
            });
        }
    }
    ops
}
