//! Headers-exchange matching, as RabbitMQ does it.
//!
//! A binding's arguments hold `x-match` (`all`, the default; `any`;
//! `all-with-x`; `any-with-x`) and the header values to compare. Keys starting
//! with `x-` are left out of the comparison unless the mode ends in
//! `-with-x`. A binding value of type void only asks that the header exists.
//! Integers of different widths compare equal; a byte array equals the same
//! bytes as a string; the string "1" does not equal the integer 1.

use amq_protocol::types::{AMQPValue, FieldTable};

use crate::broker::arguments::as_int as value_int;
use crate::protocol::AmqpError;

/// How the binding's headers must match the message's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatchMode {
    /// Every binding header must match.
    All,
    /// At least one must.
    Any,
    /// Like `All`, comparing `x-` headers too.
    AllWithX,
    /// Like `Any`, comparing `x-` headers too.
    AnyWithX,
}

/// A parsed headers binding.
#[derive(Clone, Debug, PartialEq)]
pub struct HeadersBinding {
    mode: MatchMode,
    args: Vec<(String, AMQPValue)>,
}

impl HeadersBinding {
    /// Parse binding arguments; a bad `x-match` is 406 as in RabbitMQ.
    pub fn parse(arguments: &FieldTable) -> Result<Self, AmqpError> {
        let mode = match arguments.inner().get("x-match") {
            None => MatchMode::All,
            Some(v) if value_bytes(v).is_none() => {
                return Err(AmqpError::precondition_failed(format!(
                    "Invalid x-match field type {} (value {}); expected longstr",
                    crate::broker::arguments::type_name(v),
                    crate::broker::arguments::show(v)
                )))
            }
            Some(v) => match value_bytes(v).as_deref() {
                Some(b"all") => MatchMode::All,
                Some(b"any") => MatchMode::Any,
                Some(b"all-with-x") => MatchMode::AllWithX,
                Some(b"any-with-x") => MatchMode::AnyWithX,
                _ => {
                    return Err(AmqpError::precondition_failed(format!(
                    "Invalid x-match field value {}; expected all, any, all-with-x, or any-with-x",
                    describe(v)
                )))
                }
            },
        };
        let with_x = matches!(mode, MatchMode::AllWithX | MatchMode::AnyWithX);
        let args = arguments
            .inner()
            .iter()
            .filter(|(k, _)| k.as_str() != "x-match" && (with_x || !k.as_str().starts_with("x-")))
            .map(|(k, v)| (k.as_str().to_string(), v.clone()))
            .collect();
        Ok(HeadersBinding { mode, args })
    }

    /// Whether a message with these headers matches.
    pub fn matches(&self, headers: Option<&FieldTable>) -> bool {
        let lookup = |k: &str| headers.and_then(|h| h.inner().get(k));
        let one = |(k, want): &(String, AMQPValue)| match lookup(k) {
            None => false,
            Some(_) if matches!(want, AMQPValue::Void) => true,
            Some(got) => values_equal(want, got),
        };
        match self.mode {
            MatchMode::All | MatchMode::AllWithX => self.args.iter().all(one),
            MatchMode::Any | MatchMode::AnyWithX => self.args.iter().any(one),
        }
    }
}

fn value_bytes(v: &AMQPValue) -> Option<Vec<u8>> {
    match v {
        AMQPValue::ShortString(s) => Some(s.as_str().as_bytes().to_vec()),
        AMQPValue::LongString(s) => Some(s.as_bytes().to_vec()),
        AMQPValue::ByteArray(b) => Some(b.as_slice().to_vec()),
        _ => None,
    }
}

/// Numbers compare by value whatever their width or kind (RabbitMQ uses
/// Erlang's `==`: 1 == 1.0, and a timestamp is an integer).
fn value_number(v: &AMQPValue) -> Option<f64> {
    match v {
        AMQPValue::Float(f) => Some(f64::from(*f)),
        AMQPValue::Double(d) => Some(*d),
        AMQPValue::Timestamp(t) => Some(*t as f64),
        other => value_int(other).map(|i| i as f64),
    }
}

fn values_equal(a: &AMQPValue, b: &AMQPValue) -> bool {
    if let (Some(x), Some(y)) = (value_int(a), value_int(b)) {
        return x == y;
    }
    if let (Some(x), Some(y)) = (value_number(a), value_number(b)) {
        return x == y;
    }
    if let (Some(x), Some(y)) = (value_bytes(a), value_bytes(b)) {
        return x == y;
    }
    a == b
}

fn describe(v: &AMQPValue) -> String {
    match value_bytes(v) {
        Some(b) if b.is_empty() => "<<>>".to_string(),
        Some(b) => format!("<<\"{}\">>", String::from_utf8_lossy(&b)),
        None => format!("{v:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::types::{ByteArray, LongString, ShortString};

    fn table(pairs: &[(&str, AMQPValue)]) -> FieldTable {
        let mut t = FieldTable::default();
        for (k, v) in pairs {
            t.insert(ShortString::from(*k), v.clone());
        }
        t
    }

    fn s(v: &str) -> AMQPValue {
        AMQPValue::LongString(LongString::from(v))
    }

    #[test]
    fn all_requires_every_key() {
        let b = HeadersBinding::parse(&table(&[("a", s("1")), ("b", s("2"))])).unwrap();
        assert!(b.matches(Some(&table(&[("a", s("1")), ("b", s("2")), ("c", s("3"))]))));
        assert!(!b.matches(Some(&table(&[("a", s("1"))]))));
        assert!(!b.matches(None));
    }

    #[test]
    fn any_requires_one_key() {
        let b = HeadersBinding::parse(&table(&[
            ("x-match", s("any")),
            ("a", s("1")),
            ("b", s("2")),
        ]))
        .unwrap();
        assert!(b.matches(Some(&table(&[("b", s("2"))]))));
        assert!(!b.matches(Some(&table(&[("b", s("3"))]))));
    }

    #[test]
    fn empty_all_matches_everything_and_empty_any_nothing() {
        let all = HeadersBinding::parse(&table(&[])).unwrap();
        assert!(all.matches(None));
        let any = HeadersBinding::parse(&table(&[("x-match", s("any"))])).unwrap();
        assert!(!any.matches(Some(&table(&[("a", s("1"))]))));
    }

    #[test]
    fn integer_widths_compare_equal_but_not_strings() {
        let b = HeadersBinding::parse(&table(&[("n", AMQPValue::LongInt(1))])).unwrap();
        assert!(b.matches(Some(&table(&[("n", AMQPValue::ShortShortUInt(1))]))));
        assert!(b.matches(Some(&table(&[("n", AMQPValue::LongLongInt(1))]))));
        assert!(!b.matches(Some(&table(&[("n", s("1"))]))));
    }

    #[test]
    fn byte_array_equals_string() {
        let b = HeadersBinding::parse(&table(&[("k", s("v"))])).unwrap();
        let bytes = AMQPValue::ByteArray(ByteArray::from(b"v".to_vec()));
        assert!(b.matches(Some(&table(&[("k", bytes)]))));
    }

    #[test]
    fn x_keys_ignored_unless_with_x() {
        let b = HeadersBinding::parse(&table(&[("x-k", s("v"))])).unwrap();
        assert!(b.matches(None));
        let bx = HeadersBinding::parse(&table(&[("x-match", s("all-with-x")), ("x-k", s("v"))]))
            .unwrap();
        assert!(!bx.matches(None));
        assert!(bx.matches(Some(&table(&[("x-k", s("v"))]))));
        let ax = HeadersBinding::parse(&table(&[("x-match", s("any-with-x")), ("x-k", s("v"))]))
            .unwrap();
        assert!(ax.matches(Some(&table(&[("x-k", s("v"))]))));
    }

    #[test]
    fn void_means_present() {
        let b = HeadersBinding::parse(&table(&[("k", AMQPValue::Void)])).unwrap();
        assert!(b.matches(Some(&table(&[("k", AMQPValue::LongInt(7))]))));
        assert!(!b.matches(Some(&table(&[("j", AMQPValue::LongInt(7))]))));
    }

    #[test]
    fn bad_x_match_is_406() {
        let err = HeadersBinding::parse(&table(&[("x-match", s("ALL"))])).unwrap_err();
        assert_eq!(err.kind.code(), 406);
    }
}
