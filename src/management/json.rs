//! JSON as the management API reads and writes it: AMQP field tables and
//! message properties to and from JSON, and the loose input types that
//! RabbitMQ's tools send (`"true"` for true, `"1"` for 1).

use amq_protocol::protocol::basic::AMQPProperties as BasicProperties;
use amq_protocol::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use base64::Engine;
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Number, Value};

/// Deepest JSON nesting turned into a field table (Warren's AMQP limit
/// applies to the same values when clients send them).
const MAX_DEPTH: usize = 64;

/// A field table as JSON (RabbitMQ shows arguments and headers so).
pub fn table_to_json(t: &FieldTable) -> Value {
    let mut m = Map::new();
    for (k, v) in t.inner() {
        m.insert(k.as_str().to_string(), value_to_json(v));
    }
    Value::Object(m)
}

fn value_to_json(v: &AMQPValue) -> Value {
    match v {
        AMQPValue::Boolean(b) => Value::Bool(*b),
        AMQPValue::ShortShortInt(i) => (*i).into(),
        AMQPValue::ShortShortUInt(i) => (*i).into(),
        AMQPValue::ShortInt(i) => (*i).into(),
        AMQPValue::ShortUInt(i) => (*i).into(),
        AMQPValue::LongInt(i) => (*i).into(),
        AMQPValue::LongUInt(i) => (*i).into(),
        AMQPValue::LongLongInt(i) => (*i).into(),
        AMQPValue::Float(f) => Number::from_f64(f64::from(*f)).map_or(Value::Null, Value::Number),
        AMQPValue::Double(f) => Number::from_f64(*f).map_or(Value::Null, Value::Number),
        AMQPValue::DecimalValue(d) => {
            Value::from(f64::from(d.value) / 10f64.powi(i32::from(d.scale)))
        }
        AMQPValue::ShortString(s) => Value::String(s.as_str().to_string()),
        AMQPValue::LongString(s) => {
            Value::String(String::from_utf8_lossy(s.as_bytes()).into_owned())
        }
        AMQPValue::FieldArray(a) => Value::Array(a.as_slice().iter().map(value_to_json).collect()),
        AMQPValue::Timestamp(t) => (*t).into(),
        AMQPValue::FieldTable(t) => table_to_json(t),
        AMQPValue::ByteArray(b) => {
            Value::String(base64::engine::general_purpose::STANDARD.encode(b.as_slice()))
        }
        AMQPValue::Void => Value::Null,
    }
}

/// A JSON object as a field table; an error text if it is not one, or
/// nests too deep.
pub fn json_to_table(v: &Value) -> Result<FieldTable, String> {
    match v {
        Value::Null => Ok(FieldTable::default()),
        Value::Object(m) => object_to_table(m, 0),
        _ => Err("arguments must be a JSON object".into()),
    }
}

fn object_to_table(m: &Map<String, Value>, depth: usize) -> Result<FieldTable, String> {
    let mut t = FieldTable::default();
    for (k, v) in m {
        if k.len() > 255 {
            return Err(format!("field name too long: {k:.40}…"));
        }
        t.insert(ShortString::from(k.as_str()), json_to_value(v, depth + 1)?);
    }
    Ok(t)
}

fn json_to_value(v: &Value, depth: usize) -> Result<AMQPValue, String> {
    if depth > MAX_DEPTH {
        return Err(format!("nested deeper than {MAX_DEPTH} levels"));
    }
    Ok(match v {
        Value::Null => AMQPValue::Void,
        Value::Bool(b) => AMQPValue::Boolean(*b),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => AMQPValue::LongLongInt(i),
            (None, Some(f)) => AMQPValue::Double(f),
            _ => return Err(format!("number out of range: {n}")),
        },
        Value::String(s) => AMQPValue::LongString(LongString::from(s.as_str())),
        Value::Array(a) => {
            let mut arr = FieldArray::default();
            for item in a {
                arr.push(json_to_value(item, depth + 1)?);
            }
            AMQPValue::FieldArray(arr)
        }
        Value::Object(m) => AMQPValue::FieldTable(object_to_table(m, depth)?),
    })
}

/// Message properties as RabbitMQ's API shows them (only those set).
pub fn properties_to_json(p: &BasicProperties) -> Value {
    let mut m = Map::new();
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            m.insert(k.to_string(), v);
        }
    };
    let s = |v: &Option<ShortString>| v.as_ref().map(|s| Value::from(s.as_str()));
    put("content_type", s(p.content_type()));
    put("content_encoding", s(p.content_encoding()));
    put("headers", p.headers().as_ref().map(table_to_json));
    put("delivery_mode", p.delivery_mode().map(Value::from));
    put("priority", p.priority().map(Value::from));
    put("correlation_id", s(p.correlation_id()));
    put("reply_to", s(p.reply_to()));
    put("expiration", s(p.expiration()));
    put("message_id", s(p.message_id()));
    put("timestamp", p.timestamp().map(Value::from));
    put("type", s(p.kind()));
    put("user_id", s(p.user_id()));
    put("app_id", s(p.app_id()));
    put("cluster_id", s(p.cluster_id()));
    Value::Object(m)
}

/// Message properties from the API's JSON; an error text naming a bad
/// field.
pub fn json_to_properties(v: &Value) -> Result<BasicProperties, String> {
    let m = match v {
        Value::Null => return Ok(BasicProperties::default()),
        Value::Object(m) => m,
        _ => return Err("properties must be a JSON object".into()),
    };
    let mut p = BasicProperties::default();
    for (k, v) in m {
        let text = || -> Result<ShortString, String> {
            match v {
                Value::String(s) if s.len() <= 255 => Ok(ShortString::from(s.as_str())),
                _ => Err(format!(
                    "property {k} must be a string of at most 255 bytes"
                )),
            }
        };
        let int = || -> Result<u64, String> {
            loose_u64(v).ok_or_else(|| format!("property {k} must be a non-negative integer"))
        };
        p = match k.as_str() {
            "content_type" => p.with_content_type(text()?),
            "content_encoding" => p.with_content_encoding(text()?),
            "headers" => p.with_headers(json_to_table(v)?),
            "delivery_mode" => p.with_delivery_mode(small(int()?, k)?),
            "priority" => p.with_priority(small(int()?, k)?),
            "correlation_id" => p.with_correlation_id(text()?),
            "reply_to" => p.with_reply_to(text()?),
            "expiration" => p.with_expiration(text()?),
            "message_id" => p.with_message_id(text()?),
            "timestamp" => p.with_timestamp(int()?),
            "type" => p.with_type(text()?),
            "user_id" => p.with_user_id(text()?),
            "app_id" => p.with_app_id(text()?),
            "cluster_id" => p.with_cluster_id(text()?),
            _ => return Err(format!("unknown property {k}")),
        };
    }
    Ok(p)
}

fn small(n: u64, k: &str) -> Result<u8, String> {
    u8::try_from(n).map_err(|_| format!("property {k} must be at most 255"))
}

/// A non-negative integer given as a number or a numeric string.
pub fn loose_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A boolean given as JSON true/false or "true"/"false" (rabbitmqadmin v1
/// sends strings); absent means false.
pub fn loose_bool<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(b),
        Some(Value::String(s)) if s == "true" => Ok(true),
        Some(Value::String(s)) if s == "false" || s.is_empty() => Ok(false),
        Some(other) => Err(serde::de::Error::custom(format!(
            "expected a boolean, got {other}"
        ))),
    }
}

/// A path segment percent-encoded (everything but unreserved characters),
/// as clients encode names in the API's URLs.
pub fn percent_encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Tags as a JSON array or a comma-separated string.
pub fn tags_of(v: &Value) -> Result<Vec<String>, String> {
    let tags: Vec<String> = match v {
        Value::Null => Vec::new(),
        Value::String(s) => s.split(',').map(|t| t.trim().to_string()).collect(),
        Value::Array(a) => a
            .iter()
            .map(|t| t.as_str().map(|s| s.trim().to_string()))
            .collect::<Option<_>>()
            .ok_or("tags must be strings")?,
        _ => return Err("tags must be a string or a list".into()),
    };
    Ok(tags.into_iter().filter(|t| !t.is_empty()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_round_trip_through_json() {
        let v = json!({"x-max-length": 10, "s": "a", "b": true, "l": [1, "x"], "t": {"k": 1.5}});
        let t = json_to_table(&v).unwrap();
        assert_eq!(table_to_json(&t), v);
        assert!(json_to_table(&json!([1])).is_err());
    }

    #[test]
    fn deep_json_is_refused() {
        let mut v = json!(1);
        for _ in 0..100 {
            v = json!({ "a": v });
        }
        assert!(json_to_table(&v).unwrap_err().contains("deeper"));
    }

    #[test]
    fn properties_round_trip_and_bad_ones_are_named() {
        let v = json!({"delivery_mode": 2, "headers": {"h": "v"}, "content_type": "text/plain", "priority": "3"});
        let p = json_to_properties(&v).unwrap();
        assert_eq!(p.delivery_mode(), &Some(2));
        assert_eq!(p.priority(), &Some(3));
        let back = properties_to_json(&p);
        assert_eq!(back["headers"], json!({"h": "v"}));
        assert!(json_to_properties(&json!({"delivery_mode": 300}))
            .unwrap_err()
            .contains("delivery_mode"));
        assert!(json_to_properties(&json!({"nope": 1}))
            .unwrap_err()
            .contains("nope"));
    }

    #[test]
    fn loose_inputs() {
        #[derive(Deserialize)]
        struct B {
            #[serde(default, deserialize_with = "loose_bool")]
            durable: bool,
        }
        let b: B = serde_json::from_value(json!({"durable": "true"})).unwrap();
        assert!(b.durable);
        let b: B = serde_json::from_value(json!({})).unwrap();
        assert!(!b.durable);
        assert!(serde_json::from_value::<B>(json!({"durable": 3})).is_err());
        assert_eq!(loose_u64(&json!("5")), Some(5));
        assert_eq!(
            tags_of(&json!("administrator, monitoring")).unwrap(),
            ["administrator", "monitoring"]
        );
        assert_eq!(tags_of(&json!(["management"])).unwrap(), ["management"]);
    }
}
