//! Validation of x-arguments and how RabbitMQ names their types in error
//! texts (`signedint`, `longstr`, ...).

use amq_protocol::types::{AMQPValue, FieldTable};

use crate::protocol::AmqpError;

/// RabbitMQ's name for a field value's type.
pub fn type_name(v: &AMQPValue) -> &'static str {
    match v {
        AMQPValue::Boolean(_) => "bool",
        AMQPValue::ShortShortInt(_) => "byte",
        AMQPValue::ShortShortUInt(_) => "unsignedbyte",
        AMQPValue::ShortInt(_) => "short",
        AMQPValue::ShortUInt(_) => "unsignedshort",
        AMQPValue::LongInt(_) => "signedint",
        AMQPValue::LongUInt(_) => "unsignedint",
        AMQPValue::LongLongInt(_) => "long",
        AMQPValue::Float(_) => "float",
        AMQPValue::Double(_) => "double",
        AMQPValue::DecimalValue(_) => "decimal",
        AMQPValue::ShortString(_) | AMQPValue::LongString(_) => "longstr",
        AMQPValue::FieldArray(_) => "array",
        AMQPValue::Timestamp(_) => "timestamp",
        AMQPValue::FieldTable(_) => "table",
        AMQPValue::ByteArray(_) => "binary",
        AMQPValue::Void => "void",
    }
}

/// The value as an integer, if it is one of the integer types.
pub fn as_int(v: &AMQPValue) -> Option<i128> {
    Some(match v {
        AMQPValue::ShortShortInt(i) => *i as i128,
        AMQPValue::ShortShortUInt(i) => *i as i128,
        AMQPValue::ShortInt(i) => *i as i128,
        AMQPValue::ShortUInt(i) => *i as i128,
        AMQPValue::LongInt(i) => *i as i128,
        AMQPValue::LongUInt(i) => *i as i128,
        AMQPValue::LongLongInt(i) => *i as i128,
        _ => return None,
    })
}

/// The value as text, if it is a string type.
pub fn as_text(v: &AMQPValue) -> Option<String> {
    match v {
        AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        _ => None,
    }
}

/// The value shown as RabbitMQ shows it in texts ('10', 'abc').
pub fn show(v: &AMQPValue) -> String {
    if let Some(i) = as_int(v) {
        return i.to_string();
    }
    if let Some(s) = as_text(v) {
        return s;
    }
    match v {
        AMQPValue::Boolean(b) => b.to_string(),
        AMQPValue::Float(f) => f.to_string(),
        AMQPValue::Double(f) => f.to_string(),
        AMQPValue::Timestamp(t) => t.to_string(),
        other => format!("{other:?}"),
    }
}

enum Rule {
    NonNegative,
    Positive,
    Text,
    OneOf(&'static [&'static str]),
    Bool,
    Priority,
}

const QUEUE_ARG_RULES: &[(&str, Rule)] = &[
    ("x-message-ttl", Rule::NonNegative),
    ("x-expires", Rule::Positive),
    ("x-max-length", Rule::NonNegative),
    ("x-max-length-bytes", Rule::NonNegative),
    ("x-delivery-limit", Rule::NonNegative),
    ("x-consumer-timeout", Rule::Positive),
    ("x-max-priority", Rule::Priority),
    ("x-dead-letter-exchange", Rule::Text),
    ("x-dead-letter-routing-key", Rule::Text),
    (
        "x-overflow",
        Rule::OneOf(&["drop-head", "reject-publish", "reject-publish-dlx"]),
    ),
    ("x-queue-mode", Rule::OneOf(&["default", "lazy"])),
    // Quorum queues are accepted as Warren's own queues (one node, no
    // replication), with RabbitMQ's rules on their properties (see
    // `check_queue_type`); streams are `broker::stream`.
    (
        "x-queue-type",
        Rule::OneOf(&["classic", "quorum", "stream"]),
    ),
    ("x-single-active-consumer", Rule::Bool),
];

/// Check the queue arguments RabbitMQ validates, with its error texts.
pub fn validate_queue_arguments(
    args: &FieldTable,
    queue: &str,
    vhost: &str,
) -> Result<(), AmqpError> {
    for (key, rule) in QUEUE_ARG_RULES {
        let Some(v) = args.inner().get(*key) else {
            continue;
        };
        let problem = match rule {
            Rule::NonNegative | Rule::Positive | Rule::Priority => match as_int(v) {
                None => Some(format!("\"expected integer, got {}\"", type_name(v))),
                Some(i) if i < 0 => Some(format!("{{value_negative,{i}}}")),
                Some(0) if matches!(rule, Rule::Positive) => Some("{value_zero,0}".to_string()),
                Some(i) if matches!(rule, Rule::Priority) && i > 255 => {
                    Some(format!("{{value_too_large,{i},255}}"))
                }
                _ => None,
            },
            Rule::Text => match as_text(v) {
                None => Some(format!("{{unacceptable_type,{}}}", type_name(v))),
                Some(_) => None,
            },
            Rule::OneOf(allowed) => match as_text(v) {
                Some(s) if allowed.contains(&s.as_str()) => None,
                // RabbitMQ's own text for this one.
                Some(s) if *key == "x-queue-type" => {
                    Some(format!("\"unsupported queue type '{s}'\""))
                }
                Some(s) => Some(format!("{{unacceptable_value,<<\"{s}\">>}}")),
                None => Some(format!("{{unacceptable_type,{}}}", type_name(v))),
            },
            Rule::Bool => match v {
                AMQPValue::Boolean(_) => None,
                _ => Some(format!("{{unacceptable_type,{}}}", type_name(v))),
            },
        };
        if let Some(p) = problem {
            return Err(AmqpError::precondition_failed(format!(
                "invalid arg '{key}' for queue '{queue}' in vhost '{vhost}': {p}"
            )));
        }
    }
    if args.contains_key("x-dead-letter-routing-key")
        && !args.contains_key("x-dead-letter-exchange")
    {
        return Err(AmqpError::precondition_failed(
            "Key x-dead-letter-routing-key should be specified together with x-dead-letter-exchange",
        ));
    }
    Ok(())
}

/// Whether the arguments declare a stream queue.
pub fn is_stream(args: &FieldTable) -> bool {
    args.inner()
        .get("x-queue-type")
        .and_then(as_text)
        .as_deref()
        == Some("stream")
}

/// A quorum queue or a stream must be durable, not exclusive, not
/// auto-delete (406 with RabbitMQ's texts).
pub fn check_queue_type(
    args: &FieldTable,
    durable: bool,
    exclusive: bool,
    auto_delete: bool,
    queue: &str,
    vhost: &str,
) -> Result<(), AmqpError> {
    let quorum = args
        .inner()
        .get("x-queue-type")
        .and_then(as_text)
        .as_deref()
        == Some("quorum")
        || is_stream(args);
    let bad = match () {
        _ if !quorum => None,
        _ if !durable => Some("non-durable"),
        _ if exclusive => Some("exclusive-owner"),
        _ if auto_delete => Some("auto-delete"),
        _ => None,
    };
    match bad {
        Some(p) => Err(AmqpError::precondition_failed(format!(
            "invalid property '{p}' for queue '{queue}' in vhost '{vhost}'"
        ))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::types::LongString;

    fn args(k: &str, v: AMQPValue) -> FieldTable {
        let mut t = FieldTable::default();
        t.insert(k.into(), v);
        t
    }

    #[test]
    fn integer_args_reject_strings_and_negatives() {
        let e = validate_queue_arguments(
            &args(
                "x-max-length",
                AMQPValue::LongString(LongString::from("ten")),
            ),
            "q",
            "/",
        )
        .unwrap_err();
        assert_eq!(
            e.text,
            "PRECONDITION_FAILED - invalid arg 'x-max-length' for queue 'q' in vhost '/': \"expected integer, got longstr\""
        );
        let e = validate_queue_arguments(&args("x-max-length", AMQPValue::LongInt(-1)), "q", "/")
            .unwrap_err();
        assert!(e.text.ends_with("{value_negative,-1}"));
        assert!(validate_queue_arguments(
            &args("x-max-length", AMQPValue::ShortShortUInt(3)),
            "q",
            "/"
        )
        .is_ok());
    }

    #[test]
    fn expires_must_be_positive() {
        assert!(
            validate_queue_arguments(&args("x-expires", AMQPValue::LongInt(0)), "q", "/").is_err()
        );
        assert!(
            validate_queue_arguments(&args("x-expires", AMQPValue::LongInt(1)), "q", "/").is_ok()
        );
    }

    #[test]
    fn unknown_args_pass() {
        assert!(
            validate_queue_arguments(&args("x-whatever", AMQPValue::LongInt(-5)), "q", "/").is_ok()
        );
    }
}
