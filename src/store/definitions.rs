//! The durable objects of a vhost (exchanges, queues, bindings) as they are
//! stored, and the `definitions.json` file in which versions before the
//! metadata log kept them whole (rewritten on each change). That file is
//! read once, when such a data directory is first opened, and converted
//! (see [`super::metadata`]).

mod stored_table;

use std::collections::BTreeMap;

use amq_protocol::types::FieldTable;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// File name in the data directory.
pub const FILE_NAME: &str = "definitions.json";
/// The legacy file's format version.
pub const VERSION: u32 = 1;

/// Everything durable, per vhost.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Definitions {
    /// Format version.
    pub version: u32,
    /// By vhost name.
    pub vhosts: BTreeMap<String, VhostDefinitions>,
    /// Directories of queues whose entries could not be loaded: their
    /// messages are set aside at start, never deleted (not saved).
    #[serde(skip)]
    pub unloaded_queue_dirs: Vec<String>,
    /// Users, vhosts, permissions and policies (metadata log only).
    #[serde(skip)]
    pub access: crate::store::access::AccessDefs,
}

/// One vhost's durable entities.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct VhostDefinitions {
    /// Durable exchanges (the predeclared ones excluded).
    pub exchanges: Vec<ExchangeDef>,
    /// Durable queues.
    pub queues: Vec<QueueDef>,
    /// Bindings whose both ends are durable.
    pub bindings: Vec<BindingDef>,
}

/// A durable exchange.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExchangeDef {
    /// Name.
    pub name: String,
    /// Type as declared ("direct", "topic", ...).
    pub kind: String,
    /// auto-delete flag.
    pub auto_delete: bool,
    /// internal flag.
    pub internal: bool,
    /// Declare arguments.
    #[serde(with = "stored_table")]
    pub arguments: FieldTable,
}

/// A durable queue.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QueueDef {
    /// Name.
    pub name: String,
    /// Its directory under `queues/`.
    pub dir: String,
    /// auto-delete flag.
    pub auto_delete: bool,
    /// Declare arguments.
    #[serde(with = "stored_table")]
    pub arguments: FieldTable,
}

/// A binding between durable ends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BindingDef {
    /// Source exchange.
    pub source: String,
    /// Destination name.
    pub destination: String,
    /// The destination is an exchange (else a queue).
    pub to_exchange: bool,
    /// Binding key.
    pub routing_key: String,
    /// Binding arguments.
    #[serde(with = "stored_table")]
    pub arguments: FieldTable,
}

/// The file as written, each entry left unparsed until it is read on its
/// own: one entry that cannot be loaded is skipped, not the whole file.
#[derive(Deserialize)]
struct RawDefinitions<'a> {
    version: u32,
    #[serde(borrow)]
    vhosts: BTreeMap<String, RawVhost<'a>>,
}

#[derive(Deserialize)]
struct RawVhost<'a> {
    #[serde(borrow, default)]
    exchanges: Vec<&'a RawValue>,
    #[serde(borrow, default)]
    queues: Vec<&'a RawValue>,
    #[serde(borrow, default)]
    bindings: Vec<&'a RawValue>,
}

/// Decode a definitions file. Only a file that is not a definitions
/// document at all is an error; an entry that does not decode (damaged by
/// hand, or nested past serde_json's recursion limit) is logged and left
/// out, as the store does with a corrupt record.
pub fn parse(bytes: &[u8]) -> Result<Definitions, serde_json::Error> {
    let raw: RawDefinitions = serde_json::from_slice(bytes)?;
    let mut defs = Definitions {
        version: raw.version,
        ..Default::default()
    };
    for (name, v) in raw.vhosts {
        // A queue entry that does not load still names its directory,
        // which must not be taken for a deleted queue's.
        for r in &v.queues {
            if serde_json::from_str::<QueueDef>(r.get()).is_err() {
                if let Ok(d) = serde_json::from_str::<DirOnly>(r.get()) {
                    defs.unloaded_queue_dirs.push(d.dir);
                }
            }
        }
        let entries = VhostDefinitions {
            exchanges: entries(&name, "exchange", &v.exchanges),
            queues: entries(&name, "queue", &v.queues),
            bindings: entries(&name, "binding", &v.bindings),
        };
        defs.vhosts.insert(name, entries);
    }
    Ok(defs)
}

/// The one field of a queue entry needed to keep its messages.
#[derive(Deserialize)]
struct DirOnly {
    dir: String,
}

fn entries<T: for<'de> Deserialize<'de>>(vhost: &str, what: &str, raw: &[&RawValue]) -> Vec<T> {
    raw.iter()
        .filter_map(|r| match serde_json::from_str(r.get()) {
            Ok(entry) => Some(entry),
            Err(error) => {
                let text: String = r.get().chars().take(200).collect();
                tracing::error!(vhost, kind = what, %error, entry = %text, "skipping a durable definition that cannot be loaded");
                None
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_that_cannot_load_is_skipped_not_fatal() {
        // The second queue's arguments nest past serde_json's recursion
        // limit; the binding has a field of the wrong type.
        let deep = format!(
            "{}{}{}",
            r#"{"FieldTable":{"k":"#.repeat(100),
            r#"{"FieldTable":{}}"#,
            "}}".repeat(100)
        );
        let text = format!(
            r#"{{"version":1,"vhosts":{{"/":{{"exchanges":[],
              "queues":[{{"name":"ok","dir":"q1","auto_delete":false,"arguments":{{}}}},
                        {{"name":"deep","dir":"q2","auto_delete":false,"arguments":{{"x":{deep}}}}}],
              "bindings":[{{"source":7}}]}}}}}}"#
        );
        let defs = parse(text.as_bytes()).unwrap();
        let vhost = &defs.vhosts["/"];
        let names: Vec<&str> = vhost.queues.iter().map(|q| q.name.as_str()).collect();
        assert_eq!(names, ["ok"]);
        assert_eq!(defs.unloaded_queue_dirs, ["q2"]);
        assert!(vhost.bindings.is_empty());
    }
}
