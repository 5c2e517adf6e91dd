//! The durable metadata a sequence of [`MetaOp`]s adds up to: what
//! recovery rebuilds from a snapshot and the log after it, and what
//! compaction writes out as the next snapshot. Each op costs O(1) here
//! (bindings are indexed by both ends, so deleting a queue or an exchange
//! drops its bindings without a scan), so recovery is linear in the ops.

use std::collections::BTreeMap;

use ahash::{AHashMap as HashMap, AHashSet as HashSet};

use serde::Deserialize;

use super::record::MetaOp;
use crate::store::access::AccessDefs;
use crate::store::definitions::{BindingDef, ExchangeDef, QueueDef};
use crate::store::{Definitions, VhostDefinitions};

/// Identity of a binding: source, destination, kind, key and arguments
/// (see [`binding_id`]).
type BindingId = String;

/// A binding's identity: its ends (each after its length, so that no two
/// bindings share one), kind and key, and, when it has arguments, its whole
/// stored encoding (rare; exact).
fn binding_id(def: &BindingDef) -> BindingId {
    use std::fmt::Write;
    let len = def.source.len() + def.destination.len() + def.routing_key.len() + 12;
    let mut id = String::with_capacity(len);
    let _ = write!(id, "{}:{}", def.source.len(), def.source);
    let _ = write!(id, "{}:{}", def.destination.len(), def.destination);
    id.push(if def.to_exchange { 'x' } else { 'q' });
    id.push_str(&def.routing_key);
    if !def.arguments.inner().is_empty() {
        id.push('\0');
        id.push_str(&serde_json::to_string(def).unwrap_or_default());
    }
    id
}

/// One vhost's objects.
#[derive(Debug, Default)]
struct VhostState {
    exchanges: HashMap<String, ExchangeDef>,
    queues: HashMap<String, QueueDef>,
    bindings: HashMap<BindingId, BindingDef>,
    /// Bindings by each end: (name, is an exchange). Built when a queue or
    /// an exchange is first deleted: a snapshot (puts only) is read
    /// without it.
    by_end: Option<HashMap<(String, bool), HashSet<BindingId>>>,
    /// Queues whose entry could not be decoded: their directories and the
    /// entries as read (a snapshot keeps them as they are).
    unloaded: HashMap<String, (String, Vec<u8>)>,
}

type EndIndex = HashMap<(String, bool), HashSet<BindingId>>;

fn ends(def: &BindingDef) -> [(String, bool); 2] {
    [
        (def.source.clone(), true),
        (def.destination.clone(), def.to_exchange),
    ]
}

fn index(by_end: &mut EndIndex, id: &str, def: &BindingDef) {
    for end in ends(def) {
        by_end.entry(end).or_default().insert(id.to_string());
    }
}

impl VhostState {
    fn put_binding(&mut self, def: BindingDef) {
        let id = binding_id(&def);
        if let Some(by_end) = &mut self.by_end {
            index(by_end, &id, &def);
        }
        self.bindings.insert(id, def);
    }

    fn delete_binding(&mut self, def: &BindingDef) {
        self.forget_binding(&binding_id(def));
    }

    fn forget_binding(&mut self, id: &str) {
        let Some(def) = self.bindings.remove(id) else {
            return;
        };
        let Some(by_end) = &mut self.by_end else {
            return;
        };
        for end in ends(&def) {
            if let Some(set) = by_end.get_mut(&end) {
                set.remove(id);
                if set.is_empty() {
                    by_end.remove(&end);
                }
            }
        }
    }

    /// Drop every binding with `end` at either side.
    fn drop_bindings_of(&mut self, end: (String, bool)) {
        let bindings = &self.bindings;
        let by_end = self.by_end.get_or_insert_with(|| {
            let mut by_end = EndIndex::default();
            for (id, def) in bindings {
                index(&mut by_end, id, def);
            }
            by_end
        });
        if let Some(ids) = by_end.remove(&end) {
            for id in ids {
                self.forget_binding(&id);
            }
        }
    }
}

/// Everything durable, by vhost.
#[derive(Debug, Default)]
pub struct State {
    vhosts: BTreeMap<String, VhostState>,
    /// Users, vhosts, permissions, policies.
    access: AccessDefs,
    /// Ops applied, for logs.
    pub ops: u64,
    /// Records skipped because they did not decode.
    pub skipped: u64,
}

/// The fields of a `put_queue` record that keep its messages when the
/// rest does not decode.
#[derive(Deserialize)]
struct QueueDirOnly {
    op: String,
    vhost: String,
    def: DirOnly,
}

#[derive(Deserialize)]
struct DirOnly {
    name: String,
    dir: String,
}

impl State {
    /// Apply one record's payload. One that does not decode is logged and
    /// skipped (a queue's directory is still noted, so that its messages
    /// are set aside rather than deleted).
    pub fn apply_payload(&mut self, payload: &[u8]) {
        self.apply_decoded(payload, serde_json::from_slice::<MetaOp>(payload));
    }

    /// Apply one record's payload, already decoded (`decoded`).
    pub fn apply_decoded(&mut self, payload: &[u8], decoded: serde_json::Result<MetaOp>) {
        match decoded {
            Ok(op) => self.apply(op),
            Err(error) => {
                self.skipped += 1;
                let text: String = String::from_utf8_lossy(payload).chars().take(200).collect();
                tracing::error!(%error, entry = %text, "skipping a metadata entry that cannot be loaded");
                if let Ok(q) = serde_json::from_slice::<QueueDirOnly>(payload) {
                    if q.op == "put_queue" {
                        let v = self.vhosts.entry(q.vhost).or_default();
                        v.queues.remove(&q.def.name);
                        v.unloaded.insert(q.def.name, (q.def.dir, payload.to_vec()));
                    }
                }
            }
        }
    }

    /// Apply one op.
    pub fn apply(&mut self, op: MetaOp) {
        self.ops += 1;
        let Some(op) = super::access_state::apply(&mut self.access, op) else {
            return;
        };
        match op {
            MetaOp::PutExchange { vhost, def } => {
                let v = self.vhosts.entry(vhost).or_default();
                v.exchanges.insert(def.name.clone(), def);
            }
            MetaOp::DeleteExchange { vhost, name } => {
                let v = self.vhosts.entry(vhost).or_default();
                v.exchanges.remove(&name);
                v.drop_bindings_of((name, true));
            }
            MetaOp::PutQueue { vhost, def } => {
                let v = self.vhosts.entry(vhost).or_default();
                v.unloaded.remove(&def.name);
                v.queues.insert(def.name.clone(), def);
            }
            MetaOp::DeleteQueue { vhost, name } => {
                let v = self.vhosts.entry(vhost).or_default();
                v.queues.remove(&name);
                v.unloaded.remove(&name);
                v.drop_bindings_of((name, false));
            }
            MetaOp::PutBinding { vhost, def } => {
                self.vhosts.entry(vhost).or_default().put_binding(def);
            }
            MetaOp::DeleteBinding { vhost, def } => {
                self.vhosts.entry(vhost).or_default().delete_binding(&def);
            }
            // Access records were taken above.
            _ => {}
        }
    }

    /// Add the objects a legacy `definitions.json` held (the caller takes
    /// care of its unloaded queue directories).
    pub fn load_definitions(&mut self, defs: Definitions) {
        for (vhost, v) in defs.vhosts {
            for def in v.exchanges {
                self.apply(MetaOp::PutExchange {
                    vhost: vhost.clone(),
                    def,
                });
            }
            for def in v.queues {
                self.apply(MetaOp::PutQueue {
                    vhost: vhost.clone(),
                    def,
                });
            }
            for def in v.bindings {
                self.apply(MetaOp::PutBinding {
                    vhost: vhost.clone(),
                    def,
                });
            }
        }
    }

    /// Every object as a `put_*` op, exchanges and queues before the
    /// bindings between them: a snapshot's content.
    pub fn ops(&self) -> impl Iterator<Item = MetaOp> + '_ {
        let access = super::access_state::ops(&self.access);
        access
            .into_iter()
            .chain(self.vhosts.iter().flat_map(|(vhost, v)| {
                let exchanges = v.exchanges.values().map(|def| MetaOp::PutExchange {
                    vhost: vhost.clone(),
                    def: def.clone(),
                });
                let queues = v.queues.values().map(|def| MetaOp::PutQueue {
                    vhost: vhost.clone(),
                    def: def.clone(),
                });
                let bindings = v.bindings.values().map(|def| MetaOp::PutBinding {
                    vhost: vhost.clone(),
                    def: def.clone(),
                });
                exchanges.chain(queues).chain(bindings)
            }))
    }

    /// Directories of queues whose entries did not load.
    pub fn unloaded_dirs(&self) -> Vec<String> {
        let dirs = self.vhosts.values().flat_map(|v| v.unloaded.values());
        dirs.map(|(dir, _)| dir.clone()).collect()
    }

    /// The entries of queues that did not decode, as read: a snapshot
    /// keeps them, so their directories stay known.
    pub fn unloaded_entries(&self) -> impl Iterator<Item = &[u8]> {
        let entries = self.vhosts.values().flat_map(|v| v.unloaded.values());
        entries.map(|(_, payload)| payload.as_slice())
    }

    /// The objects per vhost, as the broker restores them.
    pub fn into_definitions(self) -> Definitions {
        let mut defs = Definitions {
            version: crate::store::definitions::VERSION,
            unloaded_queue_dirs: self.unloaded_dirs(),
            access: self.access,
            ..Default::default()
        };
        for (name, v) in self.vhosts {
            let entry = VhostDefinitions {
                exchanges: v.exchanges.into_values().collect(),
                queues: v.queues.into_values().collect(),
                bindings: v.bindings.into_values().collect(),
            };
            let empty =
                entry.exchanges.is_empty() && entry.queues.is_empty() && entry.bindings.is_empty();
            if !empty {
                defs.vhosts.insert(name, entry);
            }
        }
        defs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::types::FieldTable;

    fn queue(name: &str) -> MetaOp {
        MetaOp::PutQueue {
            vhost: "/".into(),
            def: QueueDef {
                name: name.into(),
                dir: format!("d-{name}"),
                auto_delete: false,
                arguments: FieldTable::default(),
            },
        }
    }

    fn binding(source: &str, dest: &str, key: &str) -> BindingDef {
        BindingDef {
            source: source.into(),
            destination: dest.into(),
            to_exchange: false,
            routing_key: key.into(),
            arguments: FieldTable::default(),
        }
    }

    #[test]
    fn deleting_a_queue_drops_its_bindings_and_a_redeclare_does_not_bring_them_back() {
        let mut s = State::default();
        s.apply(queue("q"));
        s.apply(queue("r"));
        for (d, k) in [("q", "a"), ("q", "b"), ("r", "a")] {
            s.apply(MetaOp::PutBinding {
                vhost: "/".into(),
                def: binding("amq.topic", d, k),
            });
        }
        s.apply(MetaOp::DeleteBinding {
            vhost: "/".into(),
            def: binding("amq.topic", "q", "b"),
        });
        s.apply(MetaOp::DeleteQueue {
            vhost: "/".into(),
            name: "q".into(),
        });
        s.apply(queue("q"));
        let defs = s.into_definitions();
        let v = &defs.vhosts["/"];
        assert_eq!(v.queues.len(), 2);
        assert_eq!(v.bindings, [binding("amq.topic", "r", "a")]);
    }

    #[test]
    fn an_undecodable_queue_entry_keeps_its_directory() {
        let mut s = State::default();
        s.apply_payload(br#"{"op":"put_queue","vhost":"/","def":{"name":"q","dir":"q9","auto_delete":false,"arguments":7}}"#);
        s.apply_payload(b"{not json");
        assert_eq!(s.skipped, 2);
        assert_eq!(s.unloaded_dirs(), ["q9"]);
    }
}
