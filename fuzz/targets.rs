//! The fuzz targets: one function per decoder of untrusted bytes, shared by
//! `tests/fuzz.rs` (a bounded, seeded mutation loop on stable, run by
//! `cargo test`) and the cargo-fuzz binaries in `fuzz/fuzz_targets/` (long,
//! coverage-guided runs on nightly).
//!
//! A target feeds its input to Warren's public decoders and to the code that
//! consumes what they decode. A decoder refusing the input is fine; a target
//! panics only when a decoder panics or an invariant listed in it breaks.

use amq_protocol::protocol::{connection, AMQPClass};
use amq_protocol::types::generation::gen_field_table;
use amq_protocol::types::parsing::parse_field_table;
use amq_protocol::types::{AMQPValue, FieldTable, LongString, ShortString};
use bytes::{Bytes, BytesMut};
use warren::auth::sasl;
use warren::broker::arguments;
use warren::broker::headers::HeadersBinding;
use warren::broker::message;
use warren::protocol::frame::{decode_frame, Frame, FRAME_OVERHEAD};
use warren::protocol::output::FrameWriter;
use warren::protocol::{nesting, DecodeError};
use warren::store::definitions::QueueDef;
use warren::store::metadata::record as meta_record;
use warren::store::metadata::state::State;
use warren::store::{acks, definitions, record, segment, Definitions, VhostDefinitions};

/// The frame_max Warren offers; frames are also decoded at the smallest
/// one a client may pick.
pub const FRAME_MAX: u32 = 131_072;
const FRAME_MIN: u32 = 4096;
/// The segment and ack-file id the store targets read as.
pub const SEGMENT_ID: u32 = 1;

/// A target: takes any bytes, panics only on a bug.
pub type Target = fn(&[u8]);

/// Every target by name (the names of the cargo-fuzz binaries too).
pub const TARGETS: &[(&str, Target)] = &[
    ("frame", frame),
    ("method", method),
    ("content_header", content_header),
    ("field_table", field_table),
    ("sasl", sasl),
    ("store_record", store_record),
    ("ack_file", ack_file),
    ("definitions", definitions),
];

/// A byte stream from a client, decoded frame by frame as the connection
/// does, at both ends of the frame_max range.
pub fn frame(data: &[u8]) {
    for frame_max in [FRAME_MIN, FRAME_MAX] {
        let mut buf = BytesMut::from(data);
        // The first error closes the connection, so decoding stops there.
        while let Ok(Some(f)) = decode_checked(&mut buf, frame_max) {
            check_frame(&f);
        }
    }
}

/// A method frame's payload (class id, method id, arguments).
pub fn method(data: &[u8]) {
    let mut buf = BytesMut::from(&framed(1, data)[..]);
    if let Ok(Some(f)) = decode_checked(&mut buf, FRAME_MAX) {
        check_frame(&f);
    }
}

/// A content header's property flags and values, as a publisher sends them.
pub fn content_header(data: &[u8]) {
    let mut w = FrameWriter::new(FRAME_MAX);
    w.content(1, data, &[]);
    let mut buf = BytesMut::from(&w.take()[..]);
    match decode_checked(&mut buf, u32::MAX) {
        Ok(Some(Frame::Header { properties, .. })) => {
            assert_eq!(
                properties, data,
                "header properties must pass through untouched"
            );
            check_properties(&properties);
        }
        // Too short for the property flags.
        Err(_) if data.len() < 2 => {}
        // Headers nested too deep are refused at the frame; the decoder
        // used for stored properties refuses them too.
        Err(DecodeError::Close(e)) if nesting::check_properties(data).is_err() => {
            assert_eq!(e.kind.code(), 502, "{e:?}");
            assert!(message::decode_properties(&Bytes::copy_from_slice(data)).is_none());
        }
        other => panic!("a content header frame did not decode: {other:?}"),
    }
}

/// A field table with its length prefix, as it appears in a method.
pub fn field_table(data: &[u8]) {
    // As the broker does: too deep a table never reaches the recursive
    // parser. What passes the check must parse without overflowing.
    if nesting::check_table(data).is_err() {
        return;
    }
    let Ok((_, table)) = parse_field_table(data) else {
        return;
    };
    check_table(&table);
    let once = encode_table(&table);
    let (_, again) = parse_field_table(&once[..]).expect("an encoded table must decode");
    assert_eq!(
        encode_table(&again),
        once,
        "table re-encoding is not stable"
    );
}

/// A SASL response; the first byte picks the mechanism. The response also
/// travels inside a start-ok frame, as on the wire.
pub fn sasl(data: &[u8]) {
    let Some((&pick, response)) = data.split_first() else {
        return;
    };
    let mechanism = ["PLAIN", "AMQPLAIN", "EXTERNAL"][usize::from(pick % 3)];
    let start_ok = AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
        client_properties: FieldTable::default(),
        mechanism: ShortString::from(mechanism),
        response: LongString::from(response.to_vec()),
        locale: ShortString::from("en_US"),
    }));
    let mut w = FrameWriter::new(FRAME_MAX);
    w.method(0, &start_ok);
    let mut buf = BytesMut::from(&w.take()[..]);
    let got = match decode_checked(&mut buf, u32::MAX) {
        Ok(Some(Frame::Method { method, .. })) => *method,
        other => panic!("a start-ok frame did not decode: {other:?}"),
    };
    assert_eq!(got, start_ok, "start-ok did not survive encoding");
    if let Ok(c) = sasl::parse(mechanism, response) {
        if mechanism == "PLAIN" {
            assert!(!c.user.contains('\0') && !c.password.contains('\0'));
        }
    }
}

/// Bytes of a segment file after its header: records as recovery scans
/// them, and the record decoders on the bytes as given.
pub fn store_record(data: &[u8]) {
    check_record_at_start(data);
    scan_segment(data);
    // Mutations almost always break a checksum, which hides the fields
    // behind it; repairing them lets the fuzzer reach the field decoding.
    let mut repaired = data.to_vec();
    repair_record_crcs(&mut repaired);
    scan_segment(&repaired);
}

/// An ack file, header included, read as segment [`SEGMENT_ID`]'s.
pub fn ack_file(data: &[u8]) {
    check_ack_file(data);
    let mut repaired = data.to_vec();
    repair_ack_crcs(&mut repaired);
    check_ack_file(&repaired);
}

/// A legacy `definitions.json`, read as at startup. Whatever loads must
/// go through the metadata log's records and load back unchanged, and its
/// arguments go through the same checks as a declare.
pub fn definitions(data: &[u8]) {
    let Ok(mut defs) = definitions::parse(data) else {
        return;
    };
    // Queues whose entries did not load are set aside at start and not
    // saved again: a save drops them by design.
    defs.unloaded_queue_dirs.clear();
    for vhost in defs.vhosts.values() {
        let tables = vhost
            .exchanges
            .iter()
            .map(|e| &e.arguments)
            .chain(vhost.queues.iter().map(|q| &q.arguments))
            .chain(vhost.bindings.iter().map(|b| &b.arguments));
        for t in tables {
            check_table(t);
        }
    }
    let loaded = save_and_load(&defs);
    if definitions_have(&defs, &is_nan) {
        // NaN is not equal to itself: loading back is what counts.
        assert!(loaded.is_ok(), "saved definitions do not load: {loaded:?}");
    } else {
        assert_eq!(
            loaded,
            Ok(normalized(&defs)),
            "definitions changed on a save"
        );
    }
}

/// Decode one frame, checking what it took from the buffer: nothing when
/// it needs more bytes, exactly the frame when it returns one.
fn decode_checked(buf: &mut BytesMut, frame_max: u32) -> Result<Option<Frame>, DecodeError> {
    let before = buf.len();
    let declared = buf
        .get(3..7)
        .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]));
    let out = decode_frame(buf, frame_max);
    match (&out, declared) {
        (Ok(None), _) => assert_eq!(buf.len(), before, "no frame, yet bytes were taken"),
        (Ok(Some(_)), Some(size)) => {
            assert!(size <= frame_max, "a frame over frame_max was accepted");
            let taken = size as usize + FRAME_OVERHEAD;
            assert_eq!(buf.len() + taken, before, "a frame took the wrong bytes");
        }
        (Ok(Some(f)), None) => panic!("a frame from under 7 bytes: {f:?}"),
        (Err(_), _) => {}
    }
    out
}

/// Check a decoded frame: a method re-encodes to a method that decodes the
/// same; tables and properties go through their consumers.
fn check_frame(f: &Frame) {
    match f {
        Frame::Method {
            channel,
            class_id,
            method_id,
            method,
            ..
        } => {
            let once = encode_method(*channel, method);
            let Frame::Method {
                class_id: c,
                method_id: m,
                method: again,
                ..
            } = decode_method_frame(&once)
            else {
                panic!("a method re-encoded as another frame type");
            };
            assert_eq!((c, m), (*class_id, *method_id), "ids changed");
            let twice = encode_method(*channel, &again);
            assert_eq!(twice, once, "method re-encoding is not stable");
            method_tables(method).into_iter().for_each(check_table);
        }
        Frame::Header { properties, .. } => check_properties(properties),
        Frame::Body { .. } | Frame::Heartbeat { .. } => {}
    }
}

fn encode_method(channel: u16, method: &AMQPClass) -> Bytes {
    let mut w = FrameWriter::new(FRAME_MAX);
    w.method(channel, method);
    w.take()
}

fn decode_method_frame(bytes: &[u8]) -> Frame {
    let mut buf = BytesMut::from(bytes);
    match decode_frame(&mut buf, u32::MAX) {
        Ok(Some(f)) if buf.is_empty() => f,
        other => panic!("a re-encoded method did not decode: {other:?}"),
    }
}

/// A method frame around `payload`.
pub fn framed(channel: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![warren::protocol::frame::FRAME_METHOD];
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out.push(warren::protocol::frame::FRAME_END);
    out
}

/// The field tables a method carries.
fn method_tables(method: &AMQPClass) -> Vec<&FieldTable> {
    use amq_protocol::protocol::{basic, exchange, queue};
    match method {
        AMQPClass::Connection(connection::AMQPMethod::StartOk(m)) => vec![&m.client_properties],
        AMQPClass::Connection(connection::AMQPMethod::Start(m)) => vec![&m.server_properties],
        AMQPClass::Exchange(exchange::AMQPMethod::Declare(m)) => vec![&m.arguments],
        AMQPClass::Exchange(exchange::AMQPMethod::Bind(m)) => vec![&m.arguments],
        AMQPClass::Exchange(exchange::AMQPMethod::Unbind(m)) => vec![&m.arguments],
        AMQPClass::Queue(queue::AMQPMethod::Declare(m)) => vec![&m.arguments],
        AMQPClass::Queue(queue::AMQPMethod::Bind(m)) => vec![&m.arguments],
        AMQPClass::Queue(queue::AMQPMethod::Unbind(m)) => vec![&m.arguments],
        AMQPClass::Basic(basic::AMQPMethod::Consume(m)) => vec![&m.arguments],
        _ => Vec::new(),
    }
}

/// What the broker does with a table from a client: headers-exchange
/// bindings and matching, queue-argument validation, error texts. Then
/// the table must survive being stored in `definitions.json`.
fn check_table(t: &FieldTable) {
    if let Ok(binding) = HeadersBinding::parse(t) {
        binding.matches(Some(t));
        binding.matches(None);
    }
    let _ = arguments::validate_queue_arguments(t, "q", "/");
    let _ = arguments::check_queue_type(t, true, false, false, "q", "/");
    for v in t.inner().values() {
        arguments::show(v);
        arguments::type_name(v);
    }
    check_table_storable(t);
}

fn encode_table(t: &FieldTable) -> Vec<u8> {
    cookie_factory::gen_simple(gen_field_table(t), Vec::new()).expect("tables always encode")
}

/// A durable queue declared with these arguments is saved to
/// `definitions.json`; the broker must be able to read that file back.
fn check_table_storable(t: &FieldTable) {
    let mut vhost = VhostDefinitions::default();
    vhost.queues.push(QueueDef {
        name: "q".into(),
        dir: "q1".into(),
        auto_delete: false,
        arguments: t.clone(),
    });
    let mut defs = Definitions {
        version: 1,
        ..Default::default()
    };
    defs.vhosts.insert("/".into(), vhost);
    let loaded = save_and_load(&defs);
    assert!(loaded.is_ok(), "saved definitions do not load: {loaded:?}");
}

/// Write every object as a metadata log record, then read the records
/// back as recovery does.
pub fn save_and_load(defs: &Definitions) -> Result<Definitions, String> {
    let mut state = State::default();
    state.load_definitions(defs.clone());
    let mut file = segment::file_header(meta_record::LOG_MAGIC, 1).to_vec();
    for op in state.ops() {
        meta_record::encode(&mut file, &op).map_err(|e| e.to_string())?;
    }
    let mut loaded = State::default();
    for item in meta_record::scan(&file) {
        match item {
            meta_record::Item::Record(payload) => loaded.apply_payload(payload),
            other => return Err(format!("a record written does not read back: {other:?}")),
        }
    }
    Ok(sorted(loaded.into_definitions()))
}

/// `defs` as the metadata state holds them (one object per name, empty
/// vhosts left out), in a fixed order.
pub fn normalized(defs: &Definitions) -> Definitions {
    let mut state = State::default();
    state.load_definitions(defs.clone());
    sorted(state.into_definitions())
}

fn sorted(mut defs: Definitions) -> Definitions {
    fn by_json<T: serde::Serialize>(v: &mut [T]) {
        v.sort_by_cached_key(|x| serde_json::to_string(x).unwrap_or_default());
    }
    for v in defs.vhosts.values_mut() {
        by_json(&mut v.exchanges);
        by_json(&mut v.queues);
        by_json(&mut v.bindings);
    }
    defs
}

/// Whether any argument value in `defs`, at any depth, satisfies `pred`.
fn definitions_have(defs: &Definitions, pred: &dyn Fn(&AMQPValue) -> bool) -> bool {
    defs.vhosts.values().any(|v| {
        let mut tables = v
            .exchanges
            .iter()
            .map(|e| &e.arguments)
            .chain(v.queues.iter().map(|q| &q.arguments))
            .chain(v.bindings.iter().map(|b| &b.arguments));
        tables.any(|t| table_has(t, pred))
    })
}

fn table_has(t: &FieldTable, pred: &dyn Fn(&AMQPValue) -> bool) -> bool {
    t.inner().values().any(|v| value_has(v, pred))
}

fn value_has(v: &AMQPValue, pred: &dyn Fn(&AMQPValue) -> bool) -> bool {
    pred(v)
        || match v {
            AMQPValue::FieldTable(t) => table_has(t, pred),
            AMQPValue::FieldArray(a) => a.as_slice().iter().any(|v| value_has(v, pred)),
            _ => false,
        }
}

fn is_nan(v: &AMQPValue) -> bool {
    match v {
        AMQPValue::Float(f) => f.is_nan(),
        AMQPValue::Double(d) => d.is_nan(),
        _ => false,
    }
}

/// Content-header properties through every reader the broker has: the
/// full decoder and the hand-written scanners, which must agree with it.
fn check_properties(raw: &Bytes) {
    let well_formed = message::properties_well_formed(raw);
    let mode = message::delivery_mode(raw);
    let priority = message::priority(raw);
    let counted = message::with_delivery_count(raw, 3);
    let Some(props) = message::decode_properties(raw) else {
        assert_eq!(&counted, raw, "undecodable properties must pass unchanged");
        return;
    };
    assert_eq!(
        mode,
        props.delivery_mode().unwrap_or(0),
        "delivery_mode scan"
    );
    assert_eq!(priority, props.priority().unwrap_or(0), "priority scan");
    if raw[1] & 0b11 == 0 {
        assert!(well_formed, "decodable properties judged malformed");
    }
    let once = message::encode_properties(&props).expect("decoded properties encode");
    let again = message::decode_properties(&once).expect("encoded properties decode");
    let twice = message::encode_properties(&again).expect("decoded properties encode");
    assert_eq!(once, twice, "property re-encoding is not stable");
    let with_count = message::decode_properties(&counted).expect("x-delivery-count decodes");
    let count = with_count
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("x-delivery-count").cloned());
    assert_eq!(count, Some(AMQPValue::LongLongInt(3)));
    if let Some(headers) = props.headers() {
        check_table(headers);
    }
}

/// The record decoders on the record at the start of `data`; `meta` and
/// `decode` are meant for verified payloads but must not panic on others.
fn check_record_at_start(data: &[u8]) {
    let payload = data.get(record::HEADER_LEN..).unwrap_or_default();
    let meta = record::meta(payload);
    let decoded = record::decode(payload);
    assert_eq!(
        meta,
        decoded.as_ref().map(|(m, _)| *m),
        "meta and decode disagree"
    );
    if let Some((meta, msg)) = decoded {
        assert_eq!(meta.body_len, msg.body.len() as u64);
        let mut out = Vec::new();
        let n = record::encode(&mut out, &meta, &msg);
        let (len, crc) = record::header(&out).expect("an encoded record has a header");
        assert_eq!(n, record::HEADER_LEN + len);
        let payload = &out[record::HEADER_LEN..];
        assert!(
            record::verify(payload, crc),
            "a re-encoded record fails to verify"
        );
        let (meta2, msg2) = record::decode(payload).expect("a re-encoded record decodes");
        assert_eq!(meta2, meta);
        assert_eq!((msg2.properties, msg2.body), (msg.properties, msg.body));
    }
}

/// Scan `data` as the records of segment [`SEGMENT_ID`]: the items must
/// tile the file, and each record must decode.
fn scan_segment(data: &[u8]) {
    let mut buf = segment::file_header(segment::MAGIC, SEGMENT_ID).to_vec();
    buf.extend_from_slice(data);
    let items = segment::scan(&buf);
    let mut pos = segment::FILE_HEADER_LEN;
    for (i, item) in items.iter().enumerate() {
        match *item {
            segment::ScanItem::Record { offset, len, meta } => {
                assert_eq!(offset, pos, "records must follow each other");
                let start = (offset as usize) + record::HEADER_LEN;
                let payload = &buf[start..(offset + len) as usize];
                let (decoded, _) = record::decode(payload).expect("a scanned record decodes");
                assert_eq!(decoded, meta);
                pos = offset + len;
            }
            segment::ScanItem::Corrupt { offset, resumed_at } => {
                assert_eq!(offset, pos);
                assert!(resumed_at > offset && resumed_at < buf.len() as u64);
                pos = resumed_at;
            }
            segment::ScanItem::Torn { offset } => {
                assert_eq!(offset, pos);
                assert_eq!(i, items.len() - 1, "a torn tail is the last item");
                pos = buf.len() as u64;
            }
        }
    }
    assert_eq!(
        pos,
        buf.len() as u64,
        "the scan must cover the whole segment"
    );
}

/// Recompute the checksum of every record whose length fits the buffer,
/// following the length fields from the start.
fn repair_record_crcs(data: &mut [u8]) {
    let mut pos = 0;
    while let Some((len, _)) = record::header(&data[pos..]) {
        let start = pos + record::HEADER_LEN;
        let Some(end) = start.checked_add(len).filter(|&e| e <= data.len()) else {
            return;
        };
        let crc = crc32fast::hash(&data[start..end]);
        data[pos + 4..start].copy_from_slice(&crc.to_le_bytes());
        pos = end;
    }
}

fn check_ack_file(data: &[u8]) {
    let parsed = acks::parse(data, SEGMENT_ID);
    let header_ok = segment::header_ok(data, acks::MAGIC, SEGMENT_ID);
    assert_eq!(
        parsed.is_some(),
        data.is_empty() || header_ok,
        "header check"
    );
    let Some(marks) = parsed else {
        return;
    };
    let entries = data.len().saturating_sub(segment::FILE_HEADER_LEN as usize) / 12;
    let counted = marks.settled.len()
        + marks.delivered.len()
        + marks.returned.len()
        + usize::from(marks.settled_from.is_some())
        + marks.bad_entries;
    assert!(counted <= entries, "{counted} marks from {entries} entries");
    for offset in [0, 16, u64::from(u32::MAX), u64::MAX] {
        marks.is_settled(offset);
    }
}

/// Give the ack file a valid header and every whole entry a valid checksum.
fn repair_ack_crcs(data: &mut [u8]) {
    let header = segment::file_header(acks::MAGIC, SEGMENT_ID);
    let n = header.len().min(data.len());
    data[..n].copy_from_slice(&header[..n]);
    for e in data[n..].chunks_exact_mut(12) {
        let crc = crc32fast::hash(&e[..8]);
        e[8..].copy_from_slice(&crc.to_le_bytes());
    }
}
