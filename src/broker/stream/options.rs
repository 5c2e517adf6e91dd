//! A stream's arguments: retention and segment size at declare, and a
//! consumer's starting point, filter and offset tracking at consume, with
//! RabbitMQ's refusals.

use amq_protocol::types::{AMQPValue, FieldTable};

use crate::broker::arguments::{as_int, as_text, type_name};
use crate::protocol::AmqpError;

/// RabbitMQ's default `x-stream-max-segment-size-bytes`.
pub const DEFAULT_SEGMENT_BYTES: u64 = 500_000_000;
/// RabbitMQ's largest `x-stream-max-segment-size-bytes`.
pub const MAX_SEGMENT_BYTES: u64 = 3_000_000_000;

/// Arguments a stream refuses (they make sense for queues that settle
/// messages one by one).
const REFUSED_ARGS: &[&str] = &[
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-expires",
    "x-delivery-limit",
    "x-overflow",
    "x-single-active-consumer",
    "x-max-priority",
    "x-message-ttl",
    "x-max-length",
    "x-queue-mode",
    "x-queue-master-locator",
    "x-quorum-initial-group-size",
];

/// The arguments a redeclare of a stream compares (the refused ones are
/// ignored there, as RabbitMQ does).
pub const COMPARED_ARGS: &[&str] = &[
    "x-queue-type",
    "x-max-age",
    "x-max-length-bytes",
    "x-stream-max-segment-size-bytes",
    "x-initial-cluster-size",
    "x-queue-leader-locator",
];

/// Refuse the arguments a stream does not take (a new stream's declare
/// checks this before anything else).
pub fn check_refused(args: &FieldTable, queue: &str, vhost: &str) -> Result<(), AmqpError> {
    match REFUSED_ARGS.iter().find(|k| args.contains_key(k)) {
        Some(key) => Err(AmqpError::precondition_failed(format!(
            "invalid arg '{key}' for queue '{queue}' in vhost '{vhost}' of queue type rabbit_stream_queue"
        ))),
        None => Ok(()),
    }
}

/// Smallest segment Warren writes, whatever `x-stream-max-segment-size-bytes`
/// says (RabbitMQ accepts 0): a file per message would exhaust inodes.
pub const MIN_SEGMENT_BYTES: u64 = 64 * 1024;

/// How much a stream keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// x-max-length-bytes: total bytes of its segments.
    pub max_bytes: Option<u64>,
    /// x-max-age, ms.
    pub max_age_ms: Option<u64>,
    /// x-stream-max-segment-size-bytes.
    pub segment_bytes: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            max_bytes: None,
            max_age_ms: None,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
        }
    }
}

/// `x-max-age` and policy `max-age` text: digits then Y, M, D, h, m or s
/// (Y = 365 days, M = 30 days, as RabbitMQ); milliseconds, None if the
/// text does not parse or is zero.
pub fn parse_age(text: &str) -> Option<u64> {
    let unit = text.chars().last()?;
    let digits = &text[..text.len() - unit.len_utf8()];
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    let secs: u64 = match unit {
        'Y' => 365 * 86_400,
        'M' => 30 * 86_400,
        'D' => 86_400,
        'h' => 3_600,
        'm' => 60,
        's' => 1,
        _ => return None,
    };
    n.checked_mul(secs)?.checked_mul(1_000).filter(|ms| *ms > 0)
}

/// The retention of a stream declared with `args` under a policy whose
/// definition is `policy` (`max_bytes`: the lower of the argument's and
/// the policy's; for the age and the segment size the argument wins, as
/// in RabbitMQ).
pub fn retention_with_policy(
    args: &FieldTable,
    max_bytes: Option<u64>,
    policy: &serde_json::Map<String, serde_json::Value>,
) -> Retention {
    let declared = Retention::from_arguments(args, "", "").unwrap_or_default();
    let policy_age = policy
        .get("max-age")
        .and_then(|v| v.as_str())
        .and_then(parse_age);
    let policy_segment = policy
        .get("stream-max-segment-size-bytes")
        .and_then(|v| v.as_u64());
    let segment_arg = args.contains_key("x-stream-max-segment-size-bytes");
    Retention {
        max_bytes,
        max_age_ms: declared.max_age_ms.or(policy_age),
        segment_bytes: match (segment_arg, policy_segment) {
            (false, Some(b)) => b.clamp(MIN_SEGMENT_BYTES, MAX_SEGMENT_BYTES),
            _ => declared.segment_bytes,
        },
    }
}

impl Retention {
    /// Check and read a stream's declare arguments.
    pub fn from_arguments(args: &FieldTable, queue: &str, vhost: &str) -> Result<Self, AmqpError> {
        let invalid = |key: &str, what: String| {
            AmqpError::precondition_failed(format!(
                "invalid arg '{key}' for queue '{queue}' in vhost '{vhost}': {what}"
            ))
        };
        check_refused(args, queue, vhost)?;
        let mut r = Retention::default();
        if let Some(v) = args.inner().get("x-max-age") {
            let text = as_text(v).ok_or_else(|| {
                invalid(
                    "x-max-age",
                    format!("{{unacceptable_type,{}}}", type_name(v)),
                )
            })?;
            let ms =
                parse_age(&text).ok_or_else(|| invalid("x-max-age", "invalid_max_age".into()))?;
            r.max_age_ms = Some(ms);
        }
        if let Some(v) = args.inner().get("x-stream-max-segment-size-bytes") {
            match as_int(v) {
                Some(n) if n < 0 => {
                    return Err(invalid(
                        "x-stream-max-segment-size-bytes",
                        format!("{{value_negative,{n}}}"),
                    ))
                }
                Some(n) if n as u64 > MAX_SEGMENT_BYTES => {
                    return Err(AmqpError::precondition_failed(
                        "Exceeded max value for x-stream-max-segment-size-bytes",
                    ))
                }
                Some(n) => r.segment_bytes = (n as u64).max(MIN_SEGMENT_BYTES),
                None => {
                    return Err(invalid(
                        "x-stream-max-segment-size-bytes",
                        format!("\"expected integer, got {}\"", type_name(v)),
                    ))
                }
            }
        }
        if let Some(v) = args.inner().get("x-initial-cluster-size") {
            match as_int(v) {
                Some(0) => return Err(invalid("x-initial-cluster-size", "{value_zero,0}".into())),
                Some(n) if n < 0 => {
                    return Err(invalid(
                        "x-initial-cluster-size",
                        format!("{{value_negative,{n}}}"),
                    ))
                }
                Some(_) => {}
                None => {
                    return Err(invalid(
                        "x-initial-cluster-size",
                        format!("\"expected integer, got {}\"", type_name(v)),
                    ))
                }
            }
        }
        if let Some(v) = args.inner().get("x-queue-leader-locator") {
            let ok = as_text(v).is_some_and(|s| {
                ["client-local", "balanced", "random", "least-leaders"].contains(&s.as_str())
            });
            if !ok {
                return Err(invalid(
                    "x-queue-leader-locator",
                    "invalid_queue_locator_arg".into(),
                ));
            }
        }
        // Checked (non-negative integer) by the classic queues' rules.
        r.max_bytes = args
            .inner()
            .get("x-max-length-bytes")
            .and_then(as_int)
            .and_then(|n| u64::try_from(n).ok());
        Ok(r)
    }
}

/// Where a consumer starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// The oldest message kept.
    First,
    /// The newest message.
    Last,
    /// Only messages published from now on.
    Next,
    /// This offset (or the oldest kept, if it is older).
    Offset(u64),
    /// The first message appended at or after this time (Unix ms).
    Time(u64),
}

/// What a consumer of a stream asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumeOptions {
    /// Where it starts when it has no tracked offset (or asked for one).
    pub start: Start,
    /// `x-stream-offset` was given.
    pub explicit_start: bool,
    /// Only messages whose `x-stream-filter-value` is one of these.
    pub filter: Option<Vec<String>>,
    /// With a filter: messages without a filter value match too.
    pub match_unfiltered: bool,
    /// Its offsets are stored under its consumer tag, and it resumes
    /// after the last one it acked.
    pub track: bool,
}

impl ConsumeOptions {
    /// Read basic.consume's arguments for a stream; `now_ms` for interval
    /// offsets.
    pub fn parse(
        args: &FieldTable,
        tag: &str,
        now_ms: u64,
        queue: &str,
        vhost: &str,
    ) -> Result<Self, AmqpError> {
        let get = |k: &str| args.inner().get(k);
        for key in ["x-priority", "x-cancel-on-ha-failover"] {
            if get(key).is_some() {
                return Err(AmqpError::precondition_failed(format!(
                    "invalid arg '{key}' for queue '{queue}' in vhost '{vhost}' of queue type rabbit_stream_queue"
                )));
            }
        }
        let start = match get("x-stream-offset") {
            None => Start::Next,
            Some(v) => parse_start(v, now_ms).ok_or_else(|| {
                AmqpError::precondition_failed(format!(
                    "invalid arg 'x-stream-offset' for queue '{queue}' in vhost '{vhost}': {{invalid_stream_offset_arg,{{{},<<\"{}\">>}}}}",
                    type_name(v),
                    crate::broker::arguments::show(v)
                ))
            })?,
        };
        // A value of another type is ignored, as RabbitMQ 3.10 ignores it.
        let filter = match get("x-stream-filter") {
            Some(AMQPValue::FieldArray(a)) => {
                Some(a.as_slice().iter().filter_map(as_text).collect::<Vec<_>>())
            }
            Some(v) => as_text(v).map(|t| vec![t]),
            None => None,
        };
        let truthy = |k: &str| match get(k) {
            Some(AMQPValue::Boolean(b)) => *b,
            Some(v) => as_text(v).is_some_and(|s| s == "true"),
            None => false,
        };
        let track = match get("x-stream-automatic-offset-tracking") {
            Some(_) => truthy("x-stream-automatic-offset-tracking"),
            // LavinMQ's rule: a tag the client chose, and no offset asked
            // (tags a client library makes up per consumer do not count).
            None => get("x-stream-offset").is_none() && !generated_tag(tag),
        };
        Ok(ConsumeOptions {
            start,
            explicit_start: get("x-stream-offset").is_some(),
            filter,
            match_unfiltered: truthy("x-stream-match-unfiltered"),
            track,
        })
    }
}

/// Whether a consumer tag was made up by the server (`amq.ctag-…`) or by
/// a client library for one consumer (pika's `ctag<N>.<32 hex digits>`):
/// such a tag names no reader that comes back.
fn generated_tag(tag: &str) -> bool {
    if tag.starts_with("amq.ctag-") {
        return true;
    }
    let pika = tag.strip_prefix("ctag").and_then(|t| t.split_once('.'));
    pika.is_some_and(|(n, hex)| {
        n.bytes().all(|b| b.is_ascii_digit())
            && hex.len() == 32
            && hex.bytes().all(|b| b.is_ascii_hexdigit())
    })
}

/// `x-stream-offset`: first, last, next, an offset, a timestamp (seconds)
/// or an interval back from now ("1h").
fn parse_start(v: &AMQPValue, now_ms: u64) -> Option<Start> {
    if let Some(n) = as_int(v) {
        // RabbitMQ takes a negative offset too: the first kept.
        return Some(Start::Offset(u64::try_from(n).unwrap_or(0)));
    }
    if let AMQPValue::Timestamp(secs) = v {
        return Some(Start::Time(secs.saturating_mul(1_000)));
    }
    let text = match v {
        AMQPValue::ByteArray(b) => String::from_utf8_lossy(b.as_slice()).into_owned(),
        other => as_text(other)?,
    };
    Some(match text.as_str() {
        "first" => Start::First,
        "last" => Start::Last,
        "next" => Start::Next,
        other => Start::Time(now_ms.saturating_sub(parse_age(other)?)),
    })
}

/// What a stream refuses, with RabbitMQ's texts: `method` not supported
/// by stream queues (basic.get, queue.purge, ...).
pub fn unsupported(method: &str, queue: &str, vhost: &str) -> AmqpError {
    AmqpError::not_implemented(format!(
        "{method} not supported by stream queues queue '{queue}' in vhost '{vhost}'"
    ))
}

/// basic.consume on a stream needs a per-consumer prefetch, manual acks
/// and no channel-wide prefetch (checked in RabbitMQ's order).
pub fn check_consume(
    prefetch: u32,
    no_ack: bool,
    global_prefetch: u32,
    queue: &str,
    vhost: &str,
) -> Result<(), AmqpError> {
    let named = format!("queue '{queue}' in vhost '{vhost}'");
    if prefetch == 0 {
        return Err(AmqpError::precondition_failed(format!(
            "consumer prefetch count is not set for '{named}'"
        )));
    }
    if no_ack {
        return Err(AmqpError::not_implemented(format!(
            "automatic acknowledgement not supported by stream queues {named}"
        )));
    }
    if global_prefetch != 0 {
        return Err(AmqpError::not_implemented(format!(
            "{named} does not support global qos"
        )));
    }
    Ok(())
}

/// Whether a message with filter value `value` passes `opts`' filter.
pub fn passes(opts: &ConsumeOptions, value: Option<&str>) -> bool {
    match (&opts.filter, value) {
        (None, _) => true,
        (Some(_), None) => opts.match_unfiltered,
        (Some(wanted), Some(v)) => wanted.iter().any(|w| w == v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::types::{FieldArray, LongString};

    fn table(pairs: &[(&str, AMQPValue)]) -> FieldTable {
        let mut t = FieldTable::default();
        for (k, v) in pairs {
            t.insert((*k).into(), v.clone());
        }
        t
    }

    fn text(s: &str) -> AMQPValue {
        AMQPValue::LongString(LongString::from(s))
    }

    #[test]
    fn ages_parse_as_rabbitmq_reads_them() {
        assert_eq!(parse_age("7D"), Some(7 * 86_400_000));
        assert_eq!(parse_age("12h"), Some(12 * 3_600_000));
        assert_eq!(parse_age("1Y"), Some(365 * 86_400_000));
        assert_eq!(parse_age("2M"), Some(60 * 86_400_000));
        for bad in ["0D", "D", "1X", "-1h", "1.5h", "", "h1"] {
            assert_eq!(parse_age(bad), None, "{bad}");
        }
    }

    #[test]
    fn starts_and_tracking_are_read() {
        let now = 10_000_000;
        let p = |args: &[(&str, AMQPValue)], tag: &str| {
            ConsumeOptions::parse(&table(args), tag, now, "q", "/").unwrap()
        };
        assert_eq!(p(&[], "amq.ctag-x").start, Start::Next);
        assert!(!p(&[], "amq.ctag-x").track);
        assert!(p(&[], "mine").track, "a chosen tag tracks");
        assert!(
            !p(&[], "ctag1.12c8e2314f6b42bf99ef283d7c8cc979").track,
            "pika's tag for one consumer does not"
        );
        let first = p(&[("x-stream-offset", text("first"))], "mine");
        assert_eq!((first.start, first.track), (Start::First, false));
        assert_eq!(
            p(&[("x-stream-offset", AMQPValue::LongLongInt(42))], "t").start,
            Start::Offset(42)
        );
        assert_eq!(
            p(&[("x-stream-offset", AMQPValue::Timestamp(5))], "t").start,
            Start::Time(5_000)
        );
        assert_eq!(
            p(&[("x-stream-offset", text("10s"))], "t").start,
            Start::Time(now - 10_000)
        );
        let tracked = p(
            &[
                ("x-stream-offset", text("first")),
                (
                    "x-stream-automatic-offset-tracking",
                    AMQPValue::Boolean(true),
                ),
            ],
            "amq.ctag-1",
        );
        assert!(tracked.track && tracked.explicit_start);
        assert_eq!(
            p(&[("x-stream-offset", AMQPValue::LongInt(-1))], "t").start,
            Start::Offset(0)
        );
        for bad in [text("bogus"), text("0s"), AMQPValue::Boolean(true)] {
            let e = ConsumeOptions::parse(&table(&[("x-stream-offset", bad)]), "t", now, "q", "/");
            assert!(e.unwrap_err().text.contains("invalid_stream_offset_arg"));
        }
    }

    #[test]
    fn filters_match_exactly() {
        let list = AMQPValue::FieldArray(FieldArray::from(vec![text("a"), text("b")]));
        let o =
            ConsumeOptions::parse(&table(&[("x-stream-filter", list)]), "t", 0, "q", "/").unwrap();
        assert!(passes(&o, Some("a")) && passes(&o, Some("b")));
        assert!(!passes(&o, Some("c")) && !passes(&o, None));
        let o = ConsumeOptions::parse(
            &table(&[
                ("x-stream-filter", text("a")),
                ("x-stream-match-unfiltered", AMQPValue::Boolean(true)),
            ]),
            "t",
            0,
            "q",
            "/",
        )
        .unwrap();
        assert!(passes(&o, None) && !passes(&o, Some("b")));
    }
}
