//! Command-line options of warren-perf.

use amq_protocol::protocol::basic::AMQPProperties;
use amq_protocol::types::{AMQPValue, FieldTable, LongString, ShortString};
use bytes::Bytes;
use warren::broker::message::encode_properties;

use crate::roles::{AckSpec, PublishSpec};

pub const USAGE: &str = "\
Usage: warren-perf [OPTIONS]

Load generator for any AMQP 0-9-1 broker. Declares its own exchange and
queues (deleted at the end), runs producers and consumers on separate
connections, and prints rates, latency percentiles and its own CPU use.

Options:
  --url URL               broker (default amqp://guest:guest@127.0.0.1:5672/%2f);
                          amqps://... for TLS, with --tls-ca
  --tls-ca FILE           PEM CA certificates to trust for amqps://
  -x, --producers N       producer connections (default 1)
  -y, --consumers N       consumer connections (default 1)
  -s, --size BYTES        message body size, at least 8 (default 16)
  -z, --duration SECS     run time (default 10)
  --exchange-type TYPE    direct | fanout | topic | headers (default direct)
  --queues N              queues bound to the exchange (default 1); consumers
                          are spread over them
  --routing-key KEY       publish routing key (default perf.key)
  --binding-key KEY       binding key (default: the routing key; topic: perf.*)
  --extra-bindings N      N more bindings with * and # that match nothing
  --unrelated-bindings N  N more bindings under another first word
                          (unrelated.<i>.#): a large exchange whose size
                          routing should not feel
  --persistent            delivery_mode 2 and durable queues
  -c, --confirm WINDOW    publisher confirms with WINDOW unconfirmed at most
  -a, --autoack           consumers use no-ack mode
  -q, --prefetch N        prefetch per consumer with manual ack (default 100)
  --multi-ack N           ack every N messages with multiple=true (default 1)
  -r, --rate N            total publish rate limit, msg/s (default unlimited)
  --queue-arg K=V         queue argument (repeatable; integers and true/false typed)
  --consumer-arg K=V      basic.consume argument, typed the same way (repeatable),
                          e.g. x-stream-offset=first for a stream
                          (with x-queue-type=stream every consumer reads every
                          message: --backlog waits for published x consumers)
  --backlog N             publish N messages with no consumer, then drain them
  --publish-only          with --backlog: stop after publishing and leave the
                          queues and their messages in place (restart tests)
  --idle-connections N    open N connections that only heartbeat for the duration
  --heartbeat SECS        heartbeat for --idle-connections (default 10)
  --threads N             client runtime threads (default 2)
  --label TEXT            label copied into the JSON line
  --json                  print one JSON line instead of the summary
  --quiet                 no progress lines on stderr
  -h, --help              this help
";

#[derive(Clone, Debug)]
pub struct Options {
    pub url: String,
    /// CA file trusted for amqps:// URLs.
    pub tls_ca: Option<String>,
    pub producers: usize,
    pub consumers: usize,
    pub size: usize,
    pub duration_s: f64,
    pub exchange_type: String,
    pub queues: usize,
    pub routing_key: String,
    pub binding_key: Option<String>,
    pub extra_bindings: usize,
    /// Bindings under a first word no published key has.
    pub unrelated_bindings: usize,
    pub persistent: bool,
    pub confirm: Option<u32>,
    pub auto_ack: bool,
    pub prefetch: u16,
    pub multi_ack: u32,
    pub rate: Option<f64>,
    pub queue_args: FieldTable,
    pub consumer_args: FieldTable,
    pub backlog: Option<u64>,
    pub publish_only: bool,
    pub idle_connections: usize,
    pub heartbeat_s: u16,
    pub threads: usize,
    pub label: String,
    pub json: bool,
    pub quiet: bool,
    /// Prefix of the names this run declares.
    pub prefix: String,
}

impl Options {
    /// The queues are streams: each consumer reads every message.
    pub fn streams(&self) -> bool {
        matches!(
            self.queue_args.inner().get("x-queue-type"),
            Some(AMQPValue::LongString(t)) if t.as_bytes() == b"stream"
        )
    }

    pub fn ack_spec(&self) -> AckSpec {
        AckSpec {
            auto_ack: self.auto_ack,
            prefetch: self.prefetch,
            multi_ack: self.multi_ack,
        }
    }

    pub fn exchange(&self) -> String {
        format!("{}x", self.prefix)
    }

    pub fn binding_key(&self) -> String {
        match (&self.binding_key, self.exchange_type.as_str()) {
            (Some(k), _) => k.clone(),
            (None, "topic") => "perf.*".to_string(),
            (None, _) => self.routing_key.clone(),
        }
    }

    pub fn publish_spec(&self) -> PublishSpec {
        let mut props = AMQPProperties::default();
        if self.persistent {
            props = props.with_delivery_mode(2);
        }
        if self.exchange_type == "headers" {
            let mut h = FieldTable::default();
            h.insert(
                ShortString::from("perf"),
                AMQPValue::LongString(LongString::from("1")),
            );
            props = props.with_headers(h);
        }
        PublishSpec {
            exchange: self.exchange(),
            routing_key: self.routing_key.clone(),
            size: self.size.max(8),
            properties: encode_properties(&props).unwrap_or_else(|| Bytes::from_static(&[0, 0])),
            confirm_window: self.confirm,
            rate: self.rate.map(|r| r / self.producers.max(1) as f64),
            limit: None,
        }
    }
}

fn queue_arg(kv: &str) -> Result<(String, AMQPValue), String> {
    let (k, v) = kv
        .split_once('=')
        .ok_or_else(|| format!("--queue-arg needs KEY=VALUE, got {kv:?}"))?;
    let value = if let Ok(i) = v.parse::<i64>() {
        match i32::try_from(i) {
            Ok(small) => AMQPValue::LongInt(small),
            Err(_) => AMQPValue::LongLongInt(i),
        }
    } else if v == "true" || v == "false" {
        AMQPValue::Boolean(v == "true")
    } else {
        AMQPValue::LongString(LongString::from(v))
    };
    Ok((k.to_string(), value))
}

/// Parse arguments; `Ok(None)` means help was asked for.
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Option<Options>, String> {
    let mut o = Options {
        url: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
        tls_ca: None,
        producers: 1,
        consumers: 1,
        size: 16,
        duration_s: 10.0,
        exchange_type: "direct".into(),
        queues: 1,
        routing_key: "perf.key".into(),
        binding_key: None,
        extra_bindings: 0,
        unrelated_bindings: 0,
        persistent: false,
        confirm: None,
        auto_ack: false,
        prefetch: 100,
        multi_ack: 1,
        rate: None,
        queue_args: FieldTable::default(),
        consumer_args: FieldTable::default(),
        backlog: None,
        publish_only: false,
        idle_connections: 0,
        heartbeat_s: 10,
        threads: 2,
        label: String::new(),
        json: false,
        quiet: false,
        prefix: format!(
            "warren-perf-{}-{}-",
            std::process::id(),
            crate::stats::now_us() % 1_000_000
        ),
    };
    let mut args = args.into_iter();
    while let Some(flag) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        fn num<T: std::str::FromStr>(name: &str, v: String) -> Result<T, String> {
            v.parse()
                .map_err(|_| format!("invalid value for {name}: {v:?}"))
        }
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--url" => o.url = value("--url")?,
            "--tls-ca" => o.tls_ca = Some(value("--tls-ca")?),
            "-x" | "--producers" => o.producers = num("--producers", value("--producers")?)?,
            "-y" | "--consumers" => o.consumers = num("--consumers", value("--consumers")?)?,
            "-s" | "--size" => o.size = num("--size", value("--size")?)?,
            "-z" | "--duration" => o.duration_s = num("--duration", value("--duration")?)?,
            "--exchange-type" => o.exchange_type = value("--exchange-type")?,
            "--queues" => o.queues = num("--queues", value("--queues")?)?,
            "--routing-key" => o.routing_key = value("--routing-key")?,
            "--binding-key" => o.binding_key = Some(value("--binding-key")?),
            "--unrelated-bindings" => {
                o.unrelated_bindings = num("--unrelated-bindings", value("--unrelated-bindings")?)?
            }
            "--extra-bindings" => {
                o.extra_bindings = num("--extra-bindings", value("--extra-bindings")?)?
            }
            "--persistent" => o.persistent = true,
            "-c" | "--confirm" => o.confirm = Some(num("--confirm", value("--confirm")?)?),
            "-a" | "--autoack" => o.auto_ack = true,
            "-q" | "--prefetch" => o.prefetch = num("--prefetch", value("--prefetch")?)?,
            "--multi-ack" => o.multi_ack = num("--multi-ack", value("--multi-ack")?)?,
            "-r" | "--rate" => o.rate = Some(num("--rate", value("--rate")?)?),
            "--queue-arg" => {
                let (k, v) = queue_arg(&value("--queue-arg")?)?;
                o.queue_args.insert(ShortString::from(k), v);
            }
            "--consumer-arg" => {
                let (k, v) = queue_arg(&value("--consumer-arg")?)?;
                o.consumer_args.insert(ShortString::from(k), v);
            }
            "--backlog" => o.backlog = Some(num("--backlog", value("--backlog")?)?),
            "--idle-connections" => {
                o.idle_connections = num("--idle-connections", value("--idle-connections")?)?
            }
            "--heartbeat" => o.heartbeat_s = num("--heartbeat", value("--heartbeat")?)?,
            "--threads" => o.threads = num("--threads", value("--threads")?)?,
            "--label" => o.label = value("--label")?,
            "--json" => o.json = true,
            "--quiet" => o.quiet = true,
            "--publish-only" => o.publish_only = true,
            other => return Err(format!("unknown option {other:?} (see --help)")),
        }
    }
    if !matches!(
        o.exchange_type.as_str(),
        "direct" | "fanout" | "topic" | "headers"
    ) {
        return Err(format!(
            "--exchange-type must be direct, fanout, topic or headers, not {:?}",
            o.exchange_type
        ));
    }
    if o.producers == 0 && o.idle_connections == 0 {
        return Err("--producers must be at least 1".into());
    }
    if o.queues == 0 || o.threads == 0 || o.duration_s <= 0.0 {
        return Err("--queues, --threads and --duration must be positive".into());
    }
    if o.rate.is_some_and(|r| r <= 0.0) {
        return Err("--rate must be positive".into());
    }
    Ok(Some(o))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn flags_parse() {
        let o = parse(args(
            "-x 2 -y 3 -s 1024 --confirm 64 --queue-arg x-max-length=10 --exchange-type topic",
        ))
        .unwrap()
        .unwrap();
        assert_eq!(
            (o.producers, o.consumers, o.size, o.confirm),
            (2, 3, 1024, Some(64))
        );
        assert_eq!(o.binding_key(), "perf.*");
        assert_eq!(
            o.queue_args.inner().get("x-max-length"),
            Some(&AMQPValue::LongInt(10))
        );
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(parse(args("--size big")).is_err());
        assert!(parse(args("--exchange-type nope")).is_err());
        assert!(parse(args("--bogus")).is_err());
    }
}
