//! One change to durable metadata and how it is laid out in the metadata
//! log and its snapshots.
//!
//! ```text
//! file    = magic:8 version:u32 id:u32 record*        (little-endian)
//! record  = len:u32 crc:u32 payload[len]
//! crc     = CRC-32 (IEEE) of payload
//! payload = one MetaOp as JSON (always starts with '{')
//! ```
//! JSON keeps entries readable with standard tools and lets later
//! versions add fields; argument tables inside are their AMQP wire
//! encoding in hex (see `definitions/stored_table.rs`), so values come
//! back exactly. A snapshot holds only `put_*` records.

use serde::{Deserialize, Serialize};

use crate::store::access::{
    LimitScope, PermissionDef, PolicyDef, TopicPermissionDef, UserDef, VhostDef,
};
use crate::store::definitions::{BindingDef, ExchangeDef, QueueDef};
use crate::store::segment::FILE_HEADER_LEN;

/// Magic bytes of a metadata log file.
pub const LOG_MAGIC: &[u8; 8] = b"WARRENML";
/// Magic bytes of a metadata snapshot file.
pub const SNAPSHOT_MAGIC: &[u8; 8] = b"WARRENMS";
/// Bytes before a payload: length and checksum.
const HEADER_LEN: usize = 8;
/// Largest payload read back: an entry holds one object, whose argument
/// table is bounded by the frame size it arrived in.
const MAX_PAYLOAD: usize = 16 << 20;

/// One change to durable metadata.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum MetaOp {
    /// A durable exchange was declared.
    PutExchange {
        /// Its vhost.
        vhost: String,
        /// The exchange.
        def: ExchangeDef,
    },
    /// A durable exchange was deleted (with every binding from or to it).
    DeleteExchange {
        /// Its vhost.
        vhost: String,
        /// Its name.
        name: String,
    },
    /// A durable queue was declared.
    PutQueue {
        /// Its vhost.
        vhost: String,
        /// The queue.
        def: QueueDef,
    },
    /// A durable queue was deleted (with every binding to it).
    DeleteQueue {
        /// Its vhost.
        vhost: String,
        /// Its name.
        name: String,
    },
    /// A binding between durable ends was added.
    PutBinding {
        /// Its vhost.
        vhost: String,
        /// The binding.
        def: BindingDef,
    },
    /// A binding between durable ends was removed.
    DeleteBinding {
        /// Its vhost.
        vhost: String,
        /// The binding.
        def: BindingDef,
    },
    /// Users and vhosts were seeded from the config (a fresh data
    /// directory): from now on they live here.
    Seeded,
    /// A vhost was created or changed.
    PutVhost {
        /// The vhost.
        def: VhostDef,
    },
    /// A vhost was deleted (with its permissions and policies; its
    /// objects' own records come before).
    DeleteVhost {
        /// Its name.
        name: String,
    },
    /// A user was created or changed.
    PutUser {
        /// The user.
        def: UserDef,
    },
    /// A user was deleted (with its permissions).
    DeleteUser {
        /// Its name.
        name: String,
    },
    /// Permissions were set.
    PutPermission {
        /// The permissions.
        def: PermissionDef,
    },
    /// Permissions were cleared.
    DeletePermission {
        /// The user.
        user: String,
        /// The vhost.
        vhost: String,
    },
    /// Topic permissions were set.
    PutTopicPermission {
        /// The permissions.
        def: TopicPermissionDef,
    },
    /// Topic permissions were cleared.
    DeleteTopicPermission {
        /// The user.
        user: String,
        /// The vhost.
        vhost: String,
        /// The exchange.
        exchange: String,
    },
    /// A policy was set.
    PutPolicy {
        /// The policy.
        def: PolicyDef,
    },
    /// A vhost or user limit was set.
    PutLimit {
        /// Vhost or user.
        scope: LimitScope,
        /// The vhost's or user's name.
        target: String,
        /// `max-connections`, `max-queues`, `max-channels`.
        name: String,
        /// The limit (negative: none).
        value: i64,
    },
    /// A vhost or user limit was cleared.
    DeleteLimit {
        /// Vhost or user.
        scope: LimitScope,
        /// The vhost's or user's name.
        target: String,
        /// The limit's name.
        name: String,
    },
    /// A global parameter was set.
    PutGlobalParameter {
        /// Its name.
        name: String,
        /// Any JSON.
        value: serde_json::Value,
    },
    /// A global parameter was cleared.
    DeleteGlobalParameter {
        /// Its name.
        name: String,
    },
    /// A vhost's runtime parameter of a component (`shovel`) was set.
    PutParameter {
        /// Its vhost.
        vhost: String,
        /// Its component.
        component: String,
        /// Its name.
        name: String,
        /// Its value (JSON, as the API took it).
        value: serde_json::Value,
    },
    /// A vhost's runtime parameter was cleared.
    DeleteParameter {
        /// Its vhost.
        vhost: String,
        /// Its component.
        component: String,
        /// Its name.
        name: String,
    },
    /// A policy was cleared.
    DeletePolicy {
        /// Its vhost.
        vhost: String,
        /// Its name.
        name: String,
        /// An operator policy.
        operator: bool,
    },
}

/// Append the record of `op` to `out`.
pub fn encode(out: &mut Vec<u8>, op: &MetaOp) -> serde_json::Result<()> {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER_LEN]);
    if let Err(e) = serde_json::to_writer(&mut *out, op) {
        out.truncate(start);
        return Err(e);
    }
    let len = (out.len() - start - HEADER_LEN) as u32;
    let crc = crc32fast::hash(&out[start + HEADER_LEN..]);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// Append a record whose payload is `payload` as it was read.
pub fn encode_raw(out: &mut Vec<u8>, payload: &[u8]) {
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// One step of reading a file's records.
#[derive(Debug, PartialEq, Eq)]
pub enum Item<'a> {
    /// A record whose checksum matches: its payload.
    Record(&'a [u8]),
    /// Damaged bytes from `offset`, then a valid record again at `resumed_at`.
    Corrupt {
        /// Where the bad bytes start.
        offset: u64,
        /// Where the next valid record starts.
        resumed_at: u64,
    },
    /// Bytes up to the end that hold no valid record: a write torn by a
    /// crash (or damage at the end).
    Torn {
        /// Where the bad bytes start.
        offset: u64,
    },
}

/// The payload of the valid record at `pos`, if there is one.
fn valid_at(buf: &[u8], pos: usize) -> Option<&[u8]> {
    let head = buf.get(pos..pos + HEADER_LEN)?;
    let len = u32::from_le_bytes(head[..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(head[4..].try_into().ok()?);
    if len == 0 || len > MAX_PAYLOAD {
        return None;
    }
    let payload = buf.get(pos + HEADER_LEN..pos + HEADER_LEN + len)?;
    // The cheap check first: resyncing tries every offset.
    (payload[0] == b'{' && crc32fast::hash(payload) == crc).then_some(payload)
}

/// Every record of a file whose header was checked, in order. After a bad
/// record the scan looks for the next valid one byte by byte, so a damaged
/// length costs only the damaged record.
pub fn scan(buf: &[u8]) -> Vec<Item<'_>> {
    let mut items = Vec::new();
    let mut pos = FILE_HEADER_LEN as usize;
    while pos < buf.len() {
        if let Some(payload) = valid_at(buf, pos) {
            items.push(Item::Record(payload));
            pos += HEADER_LEN + payload.len();
            continue;
        }
        match (pos + 1..buf.len()).find(|&p| valid_at(buf, p).is_some()) {
            Some(next) => {
                items.push(Item::Corrupt {
                    offset: pos as u64,
                    resumed_at: next as u64,
                });
                pos = next;
            }
            None => {
                items.push(Item::Torn { offset: pos as u64 });
                break;
            }
        }
    }
    items
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::segment::file_header;

    fn op(name: &str) -> MetaOp {
        MetaOp::DeleteQueue {
            vhost: "/".into(),
            name: name.into(),
        }
    }

    #[test]
    fn records_read_back_and_damage_costs_one_record() {
        let mut buf = file_header(LOG_MAGIC, 1).to_vec();
        for n in ["a", "b", "c"] {
            encode(&mut buf, &op(n)).unwrap();
        }
        let names = |buf: &[u8]| -> Vec<MetaOp> {
            scan(buf)
                .into_iter()
                .filter_map(|i| match i {
                    Item::Record(p) => serde_json::from_slice(p).ok(),
                    _ => None,
                })
                .collect()
        };
        assert_eq!(names(&buf), [op("a"), op("b"), op("c")]);
        // Damage b's length: a and c still read, b is reported corrupt.
        let b_at = FILE_HEADER_LEN as usize + 8 + serde_json::to_vec(&op("a")).unwrap().len();
        let mut damaged = buf.clone();
        damaged[b_at] ^= 0x40;
        assert_eq!(names(&damaged), [op("a"), op("c")]);
        assert!(matches!(scan(&damaged)[1], Item::Corrupt { .. }));
        // A torn tail.
        let torn = &buf[..buf.len() - 3];
        assert_eq!(names(torn), [op("a"), op("b")]);
        assert!(matches!(scan(torn).last(), Some(Item::Torn { .. })));
    }
}
