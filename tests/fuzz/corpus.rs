//! The seed corpus of the fuzz targets: real inputs, made with the same
//! encoders the broker and its clients use (frames from `FrameWriter`,
//! records from `record::encode`, ack files from `AckWriter`, definitions
//! from serde), plus hand-built deeply nested tables for the regressions.

use amq_protocol::protocol::{basic, channel, confirm, connection, exchange, queue, tx, AMQPClass};
use amq_protocol::types::{
    AMQPValue, ByteArray, DecimalValue, FieldArray, FieldTable, LongString, ShortString,
};
use std::sync::Arc;
use warren::broker::message::{encode_properties, Message};
use warren::protocol::output::FrameWriter;
use warren::store::acks::{self, AckKind, AckWriter};
use warren::store::definitions::{BindingDef, ExchangeDef, QueueDef};
use warren::store::record::{self, RecordMeta, FLAG_PERSISTENT};
use warren::store::{Definitions, VhostDefinitions};

use super::targets::{self, FRAME_MAX, SEGMENT_ID};

/// The seed inputs of the target called `name`.
pub fn for_target(name: &str) -> Vec<Vec<u8>> {
    match name {
        "frame" => frame_streams(),
        "method" => methods().iter().map(method_payload).collect(),
        "content_header" => properties().into_iter().map(|p| p.to_vec()).collect(),
        "field_table" => tables().iter().map(encode_table).collect(),
        "sasl" => sasl_responses(),
        "store_record" => segment_bodies(),
        "ack_file" => ack_files(),
        "definitions" => vec![
            definitions_json(),
            b"{\"version\":1,\"vhosts\":{}}".to_vec(),
        ],
        other => panic!("no corpus for target {other}"),
    }
}

fn s(v: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(v))
}

fn table(pairs: Vec<(&str, AMQPValue)>) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert(ShortString::from(k), v);
    }
    t
}

/// One value of every type a table may hold, nested a few levels.
fn every_type() -> FieldTable {
    let inner = table(vec![("n", AMQPValue::LongInt(-7)), ("s", s("deep"))]);
    let array = FieldArray::from(vec![
        AMQPValue::ShortShortUInt(1),
        s("two"),
        AMQPValue::FieldTable(inner.clone()),
        AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::Boolean(false)])),
    ]);
    table(vec![
        ("bool", AMQPValue::Boolean(true)),
        ("i8", AMQPValue::ShortShortInt(-3)),
        ("u8", AMQPValue::ShortShortUInt(200)),
        ("i16", AMQPValue::ShortInt(-300)),
        ("u16", AMQPValue::ShortUInt(60_000)),
        ("i32", AMQPValue::LongInt(-70_000)),
        ("u32", AMQPValue::LongUInt(4_000_000_000)),
        ("i64", AMQPValue::LongLongInt(i64::MIN)),
        ("f32", AMQPValue::Float(1.5)),
        ("f64", AMQPValue::Double(-2.25e100)),
        (
            "dec",
            AMQPValue::DecimalValue(DecimalValue {
                scale: 2,
                value: 12345,
            }),
        ),
        ("str", s("a long string")),
        ("array", AMQPValue::FieldArray(array)),
        ("time", AMQPValue::Timestamp(1_700_000_000)),
        ("table", AMQPValue::FieldTable(inner)),
        (
            "bytes",
            AMQPValue::ByteArray(ByteArray::from(vec![0, 1, 0xCE, 0xFF])),
        ),
        ("void", AMQPValue::Void),
    ])
}

fn queue_arguments() -> FieldTable {
    table(vec![
        ("x-message-ttl", AMQPValue::LongInt(60_000)),
        ("x-expires", AMQPValue::LongLongInt(3_600_000)),
        ("x-max-length", AMQPValue::ShortShortUInt(10)),
        ("x-max-priority", AMQPValue::ShortShortUInt(9)),
        ("x-dead-letter-exchange", s("dlx")),
        ("x-dead-letter-routing-key", s("dead")),
        ("x-overflow", s("reject-publish")),
        ("x-queue-type", s("quorum")),
        ("x-single-active-consumer", AMQPValue::Boolean(true)),
        ("x-custom", AMQPValue::FieldTable(every_type())),
    ])
}

fn headers_binding() -> FieldTable {
    table(vec![
        ("x-match", s("any-with-x")),
        ("format", s("pdf")),
        ("n", AMQPValue::LongLongInt(1)),
        ("x-k", AMQPValue::Void),
    ])
}

fn client_properties() -> FieldTable {
    let caps = table(vec![
        ("publisher_confirms", AMQPValue::Boolean(true)),
        ("consumer_cancel_notify", AMQPValue::Boolean(true)),
        ("authentication_failure_close", AMQPValue::Boolean(true)),
        ("basic.nack", AMQPValue::Boolean(true)),
    ]);
    table(vec![
        ("product", s("lapin")),
        ("version", s("4.0.0")),
        ("platform", s("rust")),
        ("information", s("https://github.com/amqp-rs/lapin")),
        ("capabilities", AMQPValue::FieldTable(caps)),
    ])
}

/// The `x-death` header RabbitMQ clients see on dead-lettered messages.
fn x_death() -> FieldTable {
    let death = table(vec![
        ("count", AMQPValue::LongLongInt(2)),
        ("reason", s("expired")),
        ("queue", s("work")),
        ("time", AMQPValue::Timestamp(1_700_000_000)),
        ("exchange", s("")),
        (
            "routing-keys",
            AMQPValue::FieldArray(FieldArray::from(vec![s("work")])),
        ),
    ]);
    table(vec![
        (
            "x-death",
            AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::FieldTable(death)])),
        ),
        ("x-first-death-reason", s("expired")),
        ("x-delivery-count", AMQPValue::LongLongInt(1)),
    ])
}

fn tables() -> Vec<FieldTable> {
    vec![
        FieldTable::default(),
        every_type(),
        queue_arguments(),
        headers_binding(),
        client_properties(),
        x_death(),
    ]
}

fn encode_table(t: &FieldTable) -> Vec<u8> {
    let gen = amq_protocol::types::generation::gen_field_table(t);
    cookie_factory::gen_simple(gen, Vec::new()).expect("tables encode")
}

fn sstr(v: &str) -> ShortString {
    ShortString::from(v)
}

/// Methods clients send, and a few the server sends (a client may send
/// those too, and the decoder parses them all).
fn methods() -> Vec<AMQPClass> {
    let mut m = connection_methods();
    m.extend(topology_methods());
    m.extend(basic_methods());
    m
}

fn connection_methods() -> Vec<AMQPClass> {
    use connection::AMQPMethod as C;
    vec![
        AMQPClass::Connection(C::Start(connection::Start {
            version_major: 0,
            version_minor: 9,
            server_properties: client_properties(),
            mechanisms: LongString::from("PLAIN AMQPLAIN"),
            locales: LongString::from("en_US"),
        })),
        AMQPClass::Connection(C::StartOk(connection::StartOk {
            client_properties: client_properties(),
            mechanism: sstr("PLAIN"),
            response: LongString::from("\0guest\0guest"),
            locale: sstr("en_US"),
        })),
        AMQPClass::Connection(C::TuneOk(connection::TuneOk {
            channel_max: 2047,
            frame_max: FRAME_MAX,
            heartbeat: 60,
        })),
        AMQPClass::Connection(C::Open(connection::Open {
            virtual_host: sstr("/"),
        })),
        AMQPClass::Connection(C::Close(connection::Close {
            reply_code: 200,
            reply_text: sstr("Goodbye"),
            class_id: 0,
            method_id: 0,
        })),
        AMQPClass::Connection(C::CloseOk(connection::CloseOk {})),
        AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
        AMQPClass::Channel(channel::AMQPMethod::Flow(channel::Flow { active: false })),
        AMQPClass::Channel(channel::AMQPMethod::Close(channel::Close {
            reply_code: 406,
            reply_text: sstr("PRECONDITION_FAILED"),
            class_id: 50,
            method_id: 10,
        })),
        AMQPClass::Confirm(confirm::AMQPMethod::Select(confirm::Select {
            nowait: false,
        })),
        AMQPClass::Tx(tx::AMQPMethod::Select(tx::Select {})),
        AMQPClass::Tx(tx::AMQPMethod::Commit(tx::Commit {})),
    ]
}

fn topology_methods() -> Vec<AMQPClass> {
    use exchange::AMQPMethod as E;
    use queue::AMQPMethod as Q;
    vec![
        AMQPClass::Exchange(E::Declare(exchange::Declare {
            exchange: sstr("events"),
            kind: sstr("headers"),
            durable: true,
            arguments: table(vec![("alternate-exchange", s("ae"))]),
            ..Default::default()
        })),
        AMQPClass::Exchange(E::Bind(exchange::Bind {
            destination: sstr("dst"),
            source: sstr("events"),
            routing_key: sstr(""),
            nowait: false,
            arguments: headers_binding(),
        })),
        AMQPClass::Exchange(E::Unbind(exchange::Unbind {
            destination: sstr("dst"),
            source: sstr("events"),
            routing_key: sstr("a.*.b"),
            nowait: true,
            arguments: FieldTable::default(),
        })),
        AMQPClass::Exchange(E::Delete(exchange::Delete {
            exchange: sstr("events"),
            if_unused: true,
            nowait: false,
        })),
        AMQPClass::Queue(Q::Declare(queue::Declare {
            queue: sstr("work"),
            durable: true,
            arguments: queue_arguments(),
            ..Default::default()
        })),
        AMQPClass::Queue(Q::Bind(queue::Bind {
            queue: sstr("work"),
            exchange: sstr("events"),
            routing_key: sstr("#"),
            nowait: false,
            arguments: headers_binding(),
        })),
        AMQPClass::Queue(Q::Unbind(queue::Unbind {
            queue: sstr("work"),
            exchange: sstr("events"),
            routing_key: sstr("#"),
            arguments: headers_binding(),
        })),
        AMQPClass::Queue(Q::Purge(queue::Purge {
            queue: sstr("work"),
            nowait: false,
        })),
        AMQPClass::Queue(Q::Delete(queue::Delete {
            queue: sstr("work"),
            if_unused: false,
            if_empty: true,
            nowait: false,
        })),
    ]
}

fn basic_methods() -> Vec<AMQPClass> {
    use basic::AMQPMethod as B;
    vec![
        AMQPClass::Basic(B::Qos(basic::Qos {
            prefetch_count: 100,
            global: false,
        })),
        AMQPClass::Basic(B::Consume(basic::Consume {
            queue: sstr("work"),
            consumer_tag: sstr("ctag-1"),
            no_ack: false,
            exclusive: true,
            arguments: table(vec![
                ("x-priority", AMQPValue::ShortInt(5)),
                ("x-filter", AMQPValue::FieldTable(every_type())),
            ]),
            ..Default::default()
        })),
        AMQPClass::Basic(B::Publish(basic::Publish {
            exchange: sstr("events"),
            routing_key: sstr("a.b.c"),
            mandatory: true,
            immediate: false,
        })),
        AMQPClass::Basic(B::Get(basic::Get {
            queue: sstr("work"),
            no_ack: true,
        })),
        AMQPClass::Basic(B::Ack(basic::Ack {
            delivery_tag: u64::MAX,
            multiple: true,
        })),
        AMQPClass::Basic(B::Nack(basic::Nack {
            delivery_tag: 7,
            multiple: false,
            requeue: true,
        })),
        AMQPClass::Basic(B::Reject(basic::Reject {
            delivery_tag: 8,
            requeue: false,
        })),
        AMQPClass::Basic(B::Cancel(basic::Cancel {
            consumer_tag: sstr("ctag-1"),
            nowait: false,
        })),
        AMQPClass::Basic(B::Recover(basic::Recover { requeue: true })),
    ]
}

fn method_frame(channel: u16, m: &AMQPClass) -> Vec<u8> {
    let mut w = FrameWriter::new(FRAME_MAX);
    w.method(channel, m);
    w.take().to_vec()
}

/// A method frame's payload: what the `method` target takes.
fn method_payload(m: &AMQPClass) -> Vec<u8> {
    let frame = method_frame(1, m);
    frame[7..frame.len() - 1].to_vec()
}

/// Content-header property lists, from empty to every property set.
fn properties() -> Vec<bytes::Bytes> {
    let full = basic::AMQPProperties::default()
        .with_content_type(sstr("application/json"))
        .with_content_encoding(sstr("gzip"))
        .with_headers(x_death())
        .with_delivery_mode(2)
        .with_priority(5)
        .with_correlation_id(sstr("corr"))
        .with_reply_to(sstr("amq.rabbitmq.reply-to"))
        .with_expiration(sstr("60000"))
        .with_message_id(sstr("id-1"))
        .with_timestamp(1_700_000_000)
        .with_type(sstr("kind"))
        .with_user_id(sstr("guest"))
        .with_app_id(sstr("app"))
        .with_cluster_id(sstr("cluster"));
    let list = [
        basic::AMQPProperties::default(),
        basic::AMQPProperties::default().with_delivery_mode(2),
        basic::AMQPProperties::default()
            .with_headers(every_type())
            .with_priority(9),
        full,
    ];
    list.iter()
        .map(|p| encode_properties(p).expect("properties encode"))
        .collect()
}

/// Streams of frames as a connection reads them: a handshake, publishes
/// with bodies split over several frames, deliveries, heartbeats.
fn frame_streams() -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = methods().iter().map(|m| method_frame(3, m)).collect();
    let mut w = FrameWriter::new(4096);
    for (i, props) in properties().iter().enumerate() {
        let publish = &basic_methods()[2];
        w.method(1, publish);
        let body: Vec<u8> = (0..i * 3000).map(|b| b as u8).collect();
        w.content(1, props, &body);
        out.push(w.take().to_vec());
    }
    w.deliver(2, "ctag-1", 42, true, "events", "a.b.c");
    w.content(2, &properties()[1], b"hello");
    w.heartbeat();
    out.push(w.take().to_vec());
    let handshake: Vec<u8> = connection_methods()[1..4]
        .iter()
        .flat_map(|m| method_frame(0, m))
        .collect();
    out.push(handshake);
    out
}

/// SASL responses, each after its mechanism-picking byte (see
/// `targets::sasl`).
fn sasl_responses() -> Vec<Vec<u8>> {
    let mut amqplain = encode_table(&table(vec![("LOGIN", s("guest")), ("PASSWORD", s("pw"))]));
    amqplain.drain(..4); // AMQPLAIN sends the table without its length.
    let with = |pick: u8, response: &[u8]| [&[pick][..], response].concat();
    vec![
        with(0, b"\0guest\0guest"),
        with(0, b"admin\0user\0secret"),
        with(1, &amqplain),
        with(2, b""),
    ]
}

fn message(exchange: &str, properties: bytes::Bytes, body: Vec<u8>) -> Message {
    Message {
        exchange: Arc::from(exchange),
        routing_key: Arc::from("a.b.c"),
        properties,
        body: body.into(),
        persistent: true,
        expiration_ms: None,
    }
}

/// Segment contents after the file header: one to four records each.
fn segment_bodies() -> Vec<Vec<u8>> {
    let props = properties();
    let mut records = Vec::new();
    for (i, p) in props.iter().enumerate() {
        let meta = RecordMeta {
            seq: i as u64 * 1000,
            flags: if i % 2 == 0 { FLAG_PERSISTENT } else { 0 },
            expires_at_ms: (i == 1).then_some(1_700_000_000_000),
            body_len: 0,
        };
        let mut out = Vec::new();
        let body = vec![b'x'; i * 40];
        record::encode(
            &mut out,
            &meta,
            &message(["", "events"][i % 2], p.clone(), body),
        );
        records.push(out);
    }
    let mut out = records.clone();
    out.push(records.concat());
    out
}

/// Ack files as `AckWriter` writes them: one per kind of entry, and all.
fn ack_files() -> Vec<Vec<u8>> {
    let dir = std::env::temp_dir().join(format!("warren-fuzz-acks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let entries: &[&[(u64, AckKind, u32)]] = &[
        &[],
        &[(16, AckKind::Settled, 0), (120, AckKind::Delivered, 0)],
        &[(400, AckKind::SettledFrom, 0), (120, AckKind::Returned, 3)],
        &[
            (16, AckKind::Delivered, 0),
            (16, AckKind::Returned, 1),
            (16, AckKind::Returned, 0xFF_FFFF),
            (16, AckKind::Settled, 0),
            (u64::from(u32::MAX), AckKind::SettledFrom, 0),
        ],
    ];
    let files = entries
        .iter()
        .map(|list| {
            let _ = std::fs::remove_file(acks::path(&dir, SEGMENT_ID));
            let mut w = AckWriter::open(&dir, SEGMENT_ID).expect("open ack file");
            for &(offset, kind, count) in *list {
                w.push(offset, kind, count);
            }
            w.flush().expect("write ack file");
            std::fs::read(acks::path(&dir, SEGMENT_ID)).expect("read ack file")
        })
        .collect();
    let _ = std::fs::remove_dir_all(&dir);
    files
}

/// A `definitions.json` as `DefinitionsFile` writes it.
fn definitions_json() -> Vec<u8> {
    let vhost = VhostDefinitions {
        exchanges: vec![ExchangeDef {
            name: "events".into(),
            kind: "headers".into(),
            auto_delete: false,
            internal: false,
            arguments: table(vec![("alternate-exchange", s("ae"))]),
        }],
        queues: vec![QueueDef {
            name: "work".into(),
            dir: "q1".into(),
            auto_delete: false,
            arguments: queue_arguments(),
        }],
        bindings: vec![BindingDef {
            source: "events".into(),
            destination: "work".into(),
            to_exchange: false,
            routing_key: "".into(),
            arguments: headers_binding(),
        }],
    };
    let mut defs = Definitions {
        version: 1,
        ..Default::default()
    };
    defs.vhosts.insert("/".into(), vhost);
    serde_json::to_vec_pretty(&defs).expect("definitions serialize")
}

/// A field table holding `{"a": {"a": ... {}}}`, `depth` tables in all,
/// built as bytes (building the value would recurse as deep).
pub fn nested_tables(depth: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(depth * 7 + 4);
    // From the inside, table k holds 7 * k bytes: an entry ("a", 'F')
    // and table k - 1's bytes.
    for k in (1..depth).rev() {
        out.extend_from_slice(&((7 * k) as u32).to_be_bytes());
        out.extend_from_slice(&[1, b'a', b'F']);
    }
    out.extend_from_slice(&[0, 0, 0, 0]);
    out
}

/// A field table `{"a": [[[...[]]]]}` with `depth` arrays, as bytes.
pub fn table_of_nested_arrays(depth: usize) -> Vec<u8> {
    // From the inside, array value k takes 5 * k bytes: 'A', a length and
    // array value k - 1.
    let mut out = Vec::with_capacity(5 * depth + 6);
    out.extend_from_slice(&((2 + 5 * depth) as u32).to_be_bytes());
    out.extend_from_slice(&[1, b'a']);
    for k in (1..=depth).rev() {
        out.push(b'A');
        out.extend_from_slice(&((5 * (k - 1)) as u32).to_be_bytes());
    }
    out
}

/// A queue.declare frame whose arguments are `table`.
pub fn queue_declare_frame(table: &[u8]) -> Vec<u8> {
    let mut payload = vec![0, 50, 0, 10, 0, 0, 4];
    payload.extend_from_slice(b"deep");
    payload.push(0b10); // durable
    payload.extend_from_slice(table);
    targets::framed(1, &payload)
}

/// A start-ok frame whose client properties are `table`.
pub fn start_ok_frame(table: &[u8]) -> Vec<u8> {
    let mut payload = vec![0, 10, 0, 11];
    payload.extend_from_slice(table);
    payload.extend_from_slice(b"\x05PLAIN\x00\x00\x00\x0c\x00guest\x00guest\x05en_US");
    targets::framed(0, &payload)
}

/// A property list with only `headers`, which are `table`.
pub fn properties_with_headers(table: &[u8]) -> Vec<u8> {
    [&[0x20, 0x00][..], table].concat()
}
