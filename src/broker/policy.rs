//! Policies as RabbitMQ applies them: which policy and operator policy
//! match an object (pattern on the name, `apply-to`, highest priority),
//! which keys each may set, and how their values combine with a queue's
//! x-arguments (RabbitMQ's precedence for classic queues: `expires`,
//! `message-ttl`, `max-length`, `max-length-bytes` take the lowest;
//! `dead-letter-exchange`, `dead-letter-routing-key`, `overflow` take the
//! argument's; an operator policy's numbers win when lower, its `overflow`
//! always; `delivery-limit` the lowest).

use regex::Regex;
use serde_json::Value;

use super::queue_policy::{Overflow, QueuePolicy};
use crate::store::access::PolicyDef;

/// Keys a (user) policy may set on queues and exchanges.
pub const POLICY_KEYS: &[&str] = &[
    "message-ttl",
    "expires",
    "max-length",
    "max-length-bytes",
    "overflow",
    "dead-letter-exchange",
    "dead-letter-routing-key",
    "dead-letter-strategy",
    "delivery-limit",
    "alternate-exchange",
    "consumer-timeout",
    "max-age",
    "stream-max-segment-size-bytes",
    "queue-mode",
    "queue-version",
    "queue-leader-locator",
    "ha-mode",
    "ha-params",
    "ha-sync-mode",
];

/// Keys an operator policy may set (RabbitMQ's list).
pub const OPERATOR_POLICY_KEYS: &[&str] = &[
    "expires",
    "message-ttl",
    "max-length",
    "max-length-bytes",
    "max-in-memory-length",
    "max-in-memory-bytes",
    "delivery-limit",
    "queue-version",
    "overflow",
];

/// What kind of object a policy is matched against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// A classic queue.
    Queue,
    /// A stream queue.
    Stream,
    /// An exchange.
    Exchange,
}

/// Check a policy's fields as RabbitMQ does; the reason if it is refused.
pub fn validate(p: &PolicyDef) -> Result<(), String> {
    if ![
        "all",
        "queues",
        "exchanges",
        "classic_queues",
        "quorum_queues",
        "streams",
    ]
    .contains(&p.apply_to.as_str())
    {
        return Err(format!("'{}' is not a valid apply-to value", p.apply_to));
    }
    crate::auth::access::validate_regex(&p.pattern).map_err(|e| match e {
        crate::auth::access::AccessError::Invalid(why) => why,
        other => format!("{other:?}"),
    })?;
    let Value::Object(def) = &p.definition else {
        return Err("definition must be a JSON object".into());
    };
    if def.is_empty() {
        return Err("definition must not be empty".into());
    }
    if depth(&p.definition) > MAX_DEFINITION_DEPTH {
        return Err(format!(
            "definition nests deeper than {MAX_DEFINITION_DEPTH} levels"
        ));
    }
    let allowed = if p.operator {
        OPERATOR_POLICY_KEYS
    } else {
        POLICY_KEYS
    };
    let unknown: Vec<&str> = def
        .keys()
        .map(String::as_str)
        .filter(|k| !allowed.contains(k))
        .collect();
    if !unknown.is_empty() {
        return Err(format!(
            "[{}] are not recognised policy settings",
            unknown.join(", ")
        ));
    }
    for (k, v) in def {
        validate_value(k, v)?;
    }
    Ok(())
}

/// Deepest nesting a policy definition may have (its values are flat in
/// RabbitMQ; the bound keeps stored records well inside what the metadata
/// log decodes).
const MAX_DEFINITION_DEPTH: usize = 8;

fn depth(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        Value::Object(m) => 1 + m.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

fn validate_value(key: &str, v: &Value) -> Result<(), String> {
    let int = |min: i64| match v.as_i64() {
        Some(n) if n >= min => Ok(()),
        _ => Err(format!(
            "{key} must be an integer of at least {min}, got {v}"
        )),
    };
    match key {
        "message-ttl" | "max-length" | "max-length-bytes" | "consumer-timeout" => int(0),
        "expires" => int(1),
        "stream-max-segment-size-bytes" => int(1),
        "max-age" => match v.as_str().and_then(super::stream::options::parse_age) {
            Some(_) => Ok(()),
            None => Err(format!("{v} is not a valid max-age")),
        },
        "delivery-limit" => v
            .as_i64()
            .map(|_| ())
            .ok_or_else(|| format!("delivery-limit must be an integer, got {v}")),
        "overflow" => match v.as_str() {
            Some("drop-head" | "reject-publish" | "reject-publish-dlx") => Ok(()),
            _ => Err(format!("{v} is not a valid overflow value")),
        },
        "dead-letter-exchange" | "dead-letter-routing-key" | "alternate-exchange" => {
            match v.as_str() {
                Some(s) if s.len() <= 255 => Ok(()),
                _ => Err(format!(
                    "{key} must be a string of at most 255 bytes, got {v}"
                )),
            }
        }
        _ => Ok(()),
    }
}

/// A policy with its pattern compiled.
#[derive(Debug)]
struct Compiled {
    def: PolicyDef,
    pattern: Option<Regex>,
}

impl Compiled {
    fn applies(&self, target: Target, name: &str) -> bool {
        let kind = matches!(
            (target, self.def.apply_to.as_str()),
            (_, "all")
                | (Target::Queue, "queues" | "classic_queues")
                | (Target::Stream, "queues" | "streams")
                | (Target::Exchange, "exchanges")
        );
        kind && self.pattern.as_ref().is_some_and(|p| p.is_match(name))
    }
}

/// The policies of one vhost.
#[derive(Debug, Default)]
pub struct PolicySet {
    user: Vec<Compiled>,
    operator: Vec<Compiled>,
}

/// The policies matched to one object (for an exchange only `policy`:
/// operator policies do not apply to exchanges).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Matched {
    /// The user policy, if any.
    pub policy: Option<PolicyDef>,
    /// The operator policy, if any.
    pub operator: Option<PolicyDef>,
}

impl PolicySet {
    /// The set of `defs` (those of one vhost).
    pub fn new<'a>(defs: impl IntoIterator<Item = &'a PolicyDef>) -> Self {
        let mut set = PolicySet::default();
        for d in defs {
            let c = Compiled {
                def: d.clone(),
                pattern: Regex::new(&d.pattern).ok(),
            };
            match d.operator {
                true => set.operator.push(c),
                false => set.user.push(c),
            }
        }
        // Highest priority first; equal priorities by name, so the choice
        // is stable (RabbitMQ leaves it unspecified).
        for list in [&mut set.user, &mut set.operator] {
            list.sort_by(|a, b| (b.def.priority, &a.def.name).cmp(&(a.def.priority, &b.def.name)));
        }
        set
    }

    /// The policies that apply to the object `name`.
    pub fn matching(&self, target: Target, name: &str) -> Matched {
        let first = |list: &[Compiled]| {
            list.iter()
                .find(|c| c.applies(target, name))
                .map(|c| c.def.clone())
        };
        Matched {
            policy: first(&self.user),
            operator: first(&self.operator),
        }
    }
}

impl Matched {
    /// The keys in effect from the policies (operator merged in), as the
    /// API's `effective_policy_definition`.
    pub fn definition(&self) -> serde_json::Map<String, Value> {
        let mut out = serde_json::Map::new();
        if let Some(Value::Object(p)) = self.policy.as_ref().map(|p| &p.definition) {
            out.extend(p.clone());
        }
        if let Some(Value::Object(o)) = self.operator.as_ref().map(|p| &p.definition) {
            for (k, v) in o {
                let merged = match (out.get(k), k.as_str()) {
                    (Some(_), "overflow" | "queue-version") => v.clone(),
                    (Some(u), "delivery-limit") => merge_delivery_limit(u, v),
                    (Some(u), _) => lowest(u, v),
                    (None, _) => v.clone(),
                };
                out.insert(k.clone(), merged);
            }
        }
        out
    }

    /// A queue's behaviour: its declared arguments combined with these
    /// policies.
    pub fn apply(&self, declared: &QueuePolicy) -> QueuePolicy {
        let def = self.definition();
        let int = |k: &str| def.get(k).and_then(Value::as_i64);
        let uint = |k: &str| int(k).and_then(|n| u64::try_from(n).ok());
        let text = |k: &str| def.get(k).and_then(Value::as_str).map(str::to_string);
        let min = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let overflow = match text("overflow").as_deref() {
            Some("reject-publish") => Some(Overflow::RejectPublish),
            Some("reject-publish-dlx") => Some(Overflow::RejectPublishDlx),
            Some("drop-head") => Some(Overflow::DropHead),
            _ => None,
        };
        let operator_overflow = self
            .operator
            .as_ref()
            .and_then(|o| o.definition.get("overflow"))
            .is_some();
        QueuePolicy {
            message_ttl_ms: min(declared.message_ttl_ms, uint("message-ttl")),
            expires_ms: min(declared.expires_ms, uint("expires")),
            consumer_timeout_ms: min(
                declared.consumer_timeout_ms,
                uint("consumer-timeout").filter(|ms| *ms > 0),
            ),
            max_length: min(declared.max_length, uint("max-length")),
            max_length_bytes: min(declared.max_length_bytes, uint("max-length-bytes")),
            dead_letter_exchange: declared
                .dead_letter_exchange
                .clone()
                .or_else(|| text("dead-letter-exchange")),
            dead_letter_routing_key: declared
                .dead_letter_routing_key
                .clone()
                .or_else(|| text("dead-letter-routing-key")),
            overflow: match (declared.overflow_declared, overflow, operator_overflow) {
                (_, Some(o), true) => o,
                (true, _, _) => declared.overflow,
                (false, Some(o), _) => o,
                (false, None, _) => declared.overflow,
            },
            delivery_limit: match int("delivery-limit") {
                Some(n) if n < 0 => declared.delivery_limit,
                Some(n) => min(declared.delivery_limit, Some(n as u64)),
                None => declared.delivery_limit,
            },
            ..declared.clone()
        }
    }
}

/// The lower of two numbers (values that are not numbers: the second).
fn lowest(a: &Value, b: &Value) -> Value {
    match (a.as_i64(), b.as_i64()) {
        (Some(x), Some(y)) => Value::from(x.min(y)),
        _ => b.clone(),
    }
}

/// RabbitMQ's delivery-limit merge: the lower, unless one is negative
/// (unlimited), then the higher.
fn merge_delivery_limit(a: &Value, b: &Value) -> Value {
    match (a.as_i64(), b.as_i64()) {
        (Some(x), Some(y)) if x < 0 || y < 0 => Value::from(x.max(y)),
        (Some(x), Some(y)) => Value::from(x.min(y)),
        _ => b.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(
        name: &str,
        pattern: &str,
        priority: i64,
        definition: Value,
        operator: bool,
    ) -> PolicyDef {
        PolicyDef {
            vhost: "/".into(),
            name: name.into(),
            pattern: pattern.into(),
            apply_to: "queues".into(),
            priority,
            definition,
            operator,
        }
    }

    #[test]
    fn highest_priority_matching_policy_wins() {
        let defs = [
            policy("low", "^orders", 1, json!({"max-length": 10}), false),
            policy("high", "^orders\\.eu", 5, json!({"max-length": 20}), false),
            policy("op", ".*", 0, json!({"max-length": 15}), true),
        ];
        let set = PolicySet::new(&defs);
        let m = set.matching(Target::Queue, "orders.eu");
        assert_eq!(m.policy.as_ref().map(|p| p.name.as_str()), Some("high"));
        assert_eq!(m.operator.as_ref().map(|p| p.name.as_str()), Some("op"));
        assert_eq!(
            m.definition()["max-length"],
            15,
            "operator's lower value wins"
        );
        let m = set.matching(Target::Queue, "orders.us");
        assert_eq!(m.definition()["max-length"], 10);
        assert!(set.matching(Target::Exchange, "orders.eu").policy.is_none());
    }

    #[test]
    fn precedence_against_arguments_is_rabbitmqs() {
        let mut declared = QueuePolicy {
            max_length: Some(5),
            dead_letter_exchange: Some("arg-dlx".into()),
            overflow: Overflow::DropHead,
            overflow_declared: true,
            ..Default::default()
        };
        let m = Matched {
            policy: Some(policy(
                "p",
                ".*",
                0,
                json!({"max-length": 100, "message-ttl": 1000,
                "dead-letter-exchange": "policy-dlx", "overflow": "reject-publish"}),
                false,
            )),
            operator: None,
        };
        let q = m.apply(&declared);
        assert_eq!(q.max_length, Some(5), "the lower");
        assert_eq!(q.message_ttl_ms, Some(1000), "only the policy sets it");
        assert_eq!(
            q.dead_letter_exchange.as_deref(),
            Some("arg-dlx"),
            "argument wins"
        );
        assert_eq!(q.overflow, Overflow::DropHead, "argument wins");
        declared.overflow_declared = false;
        assert_eq!(m.apply(&declared).overflow, Overflow::RejectPublish);
        let with_operator = Matched {
            operator: Some(policy(
                "o",
                ".*",
                0,
                json!({"overflow": "reject-publish-dlx"}),
                true,
            )),
            ..m
        };
        assert_eq!(
            with_operator.apply(&declared).overflow,
            Overflow::RejectPublishDlx
        );
    }

    #[test]
    fn invalid_policies_are_refused_with_reasons() {
        let ok = policy("p", "^q", 0, json!({"max-length": 1}), false);
        assert!(validate(&ok).is_ok());
        for (bad, why) in [
            (
                policy("p", "(", 0, json!({"max-length": 1}), false),
                "regex",
            ),
            (
                policy("p", ".*", 0, json!({"nope": 1}), false),
                "not recognised",
            ),
            (
                policy("p", ".*", 0, json!({"max-length": -1}), false),
                "max-length",
            ),
            (
                policy("p", ".*", 0, json!({"overflow": "sideways"}), false),
                "overflow",
            ),
            (
                policy("p", ".*", 0, json!({"dead-letter-exchange": "x"}), true),
                "not recognised",
            ),
            (policy("p", ".*", 0, json!({}), false), "empty"),
        ] {
            let e = validate(&bad).unwrap_err();
            assert!(e.contains(why), "{e}");
        }
    }
}
