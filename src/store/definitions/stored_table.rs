//! How argument tables are written in `definitions.json`: as the AMQP wire
//! encoding in hex (`"amqp:0000000f05..."`), which keeps every value exactly
//! as declared. serde_json's own form of a `FieldTable` loses values: a NaN
//! or infinite float becomes `null` (and then fails to load) and a double
//! may come back one unit in the last place off. Files written before this
//! format, with tables as JSON objects, are still read.

use amq_protocol::types::generation::gen_field_table;
use amq_protocol::types::parsing::parse_field_table;
use amq_protocol::types::FieldTable;
use serde::{Deserialize, Deserializer, Serializer};

use crate::protocol::nesting;

const PREFIX: &str = "amqp:";

/// Serialize `table` as its hex wire encoding.
pub fn serialize<S: Serializer>(table: &FieldTable, s: S) -> Result<S::Ok, S::Error> {
    let bytes = cookie_factory::gen_simple(gen_field_table(table), Vec::new())
        .map_err(|e| serde::ser::Error::custom(format!("cannot encode a field table: {e:?}")))?;
    let mut text = String::with_capacity(PREFIX.len() + 2 * bytes.len());
    text.push_str(PREFIX);
    for b in bytes {
        text.push_str(&format!("{b:02x}"));
    }
    s.serialize_str(&text)
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Stored {
    Wire(String),
    Json(FieldTable),
}

/// Read a table written by [`serialize`], or an older JSON object.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<FieldTable, D::Error> {
    match Stored::deserialize(d)? {
        Stored::Json(table) => Ok(table),
        Stored::Wire(text) => decode(&text).map_err(serde::de::Error::custom),
    }
}

fn decode(text: &str) -> Result<FieldTable, String> {
    let hex = text
        .strip_prefix(PREFIX)
        .ok_or("a stored table must start with \"amqp:\"")?;
    if hex.len() % 2 != 0 {
        return Err("odd number of hex digits in a stored table".into());
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2).unwrap_or("zz"), 16))
        .collect::<Result<Vec<u8>, _>>()
        .map_err(|_| "bad hex digit in a stored table")?;
    if nesting::check_table(&bytes).is_err() {
        return Err("stored table nested too deep".into());
    }
    match parse_field_table(&bytes[..]) {
        Ok((&[], table)) => Ok(table),
        _ => Err("stored table is not a valid field table".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::types::{AMQPValue, LongString};

    #[derive(serde::Serialize, Deserialize, Debug)]
    struct Holder {
        #[serde(with = "super")]
        t: FieldTable,
    }

    fn round_trip(t: FieldTable) -> FieldTable {
        let json = serde_json::to_string(&Holder { t }).unwrap();
        serde_json::from_str::<Holder>(&json).unwrap().t
    }

    #[test]
    fn non_finite_and_exact_floats_survive() {
        let mut t = FieldTable::default();
        t.insert("nan".into(), AMQPValue::Double(f64::NAN));
        t.insert("inf".into(), AMQPValue::Float(f32::NEG_INFINITY));
        t.insert("d".into(), AMQPValue::Double(-2.25e101));
        t.insert("s".into(), AMQPValue::LongString(LongString::from("x")));
        let back = round_trip(t);
        let get = |k: &str| back.inner().get(k).cloned();
        assert!(matches!(get("nan"), Some(AMQPValue::Double(d)) if d.is_nan()));
        assert_eq!(get("inf"), Some(AMQPValue::Float(f32::NEG_INFINITY)));
        assert_eq!(get("d"), Some(AMQPValue::Double(-2.25e101)));
        assert_eq!(get("s"), Some(AMQPValue::LongString(LongString::from("x"))));
    }

    #[test]
    fn old_json_tables_are_read() {
        let old = r#"{"t":{"x-max-length":{"LongInt":5}}}"#;
        let t = serde_json::from_str::<Holder>(old).unwrap().t;
        assert_eq!(t.inner().get("x-max-length"), Some(&AMQPValue::LongInt(5)));
    }

    #[test]
    fn damaged_wire_tables_are_errors() {
        for bad in [
            r#"{"t":"amqp:0"}"#,
            r#"{"t":"amqp:zz"}"#,
            r#"{"t":"amqp:00000005"}"#,
            r#"{"t":"x"}"#,
        ] {
            assert!(serde_json::from_str::<Holder>(bad).is_err(), "{bad}");
        }
    }
}
