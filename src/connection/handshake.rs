//! The connection handshake: protocol header, Start/Start-Ok (SASL PLAIN or
//! AMQPLAIN), Tune/Tune-Ok, Open/Open-Ok.
//!
//! Failure behaviour follows RabbitMQ: a wrong protocol header gets the
//! supported header back; a refused login gets Connection.Close 403 when the
//! client advertises `authentication_failure_close`, otherwise the socket is
//! just closed; a bad Tune-Ok drops the socket; an unknown vhost gets 530.

use std::net::SocketAddr;
use std::sync::Arc;

use amq_protocol::protocol::{connection, AMQPClass};
use amq_protocol::types::{AMQPValue, FieldTable, LongString, ShortString};
use tokio::io::AsyncReadExt;
use tokio::io::AsyncWriteExt;

use super::io::{FrameIo, ReadError};
use crate::broker::{Broker, VHost};
use crate::protocol::{AmqpError, Frame};

/// The header every AMQP 0-9-1 client must send first.
pub const PROTOCOL_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";

/// What a completed handshake agreed on.
#[derive(Debug)]
pub struct Opened {
    pub user: String,
    pub vhost: Arc<VHost>,
    pub channel_max: u16,
    pub heartbeat_s: u16,
    /// The client understands server-sent basic.cancel.
    pub cancel_notify: bool,
}

/// Run the handshake. `Ok(None)` means the connection was refused and is
/// to be closed quietly.
pub async fn handshake(
    io: &mut FrameIo,
    peer: SocketAddr,
    broker: &Broker,
) -> Result<Option<Opened>, String> {
    let mut header = [0u8; 8];
    if io.stream.read_exact(&mut header).await.is_err() {
        return Ok(None);
    }
    if &header != PROTOCOL_HEADER {
        let _ = io.stream.write_all(PROTOCOL_HEADER).await;
        tracing::info!(?header, "bad protocol header");
        return Ok(None);
    }
    let cfg = &broker.config;
    send(
        io,
        AMQPClass::Connection(connection::AMQPMethod::Start(connection::Start {
            version_major: 0,
            version_minor: 9,
            server_properties: server_properties(),
            mechanisms: LongString::from("PLAIN AMQPLAIN"),
            locales: LongString::from("en_US"),
        })),
    )
    .await?;

    let start_ok = match expect_method(io).await? {
        AMQPClass::Connection(connection::AMQPMethod::StartOk(s)) => s,
        _ => return Ok(None),
    };
    let caps = match start_ok.client_properties.inner().get("capabilities") {
        Some(AMQPValue::FieldTable(t)) => t.clone(),
        _ => FieldTable::default(),
    };
    let cap = |k: &str| matches!(caps.inner().get(k), Some(AMQPValue::Boolean(true)));
    let Some((user, password)) =
        credentials(start_ok.mechanism.as_str(), start_ok.response.as_bytes())
    else {
        tracing::info!(mechanism = %start_ok.mechanism, "unsupported or malformed SASL response");
        return Ok(None);
    };
    let known = cfg.users.iter().find(|u| u.name == user);
    let refusal = match known {
        Some(u) if u.password != password => Some(format!(
            "Login was refused using authentication mechanism {}. For details see the broker logfile.",
            start_ok.mechanism
        )),
        None => Some(format!(
            "Login was refused using authentication mechanism {}. For details see the broker logfile.",
            start_ok.mechanism
        )),
        Some(u) if u.loopback_only && !peer.ip().is_loopback() => {
            Some(format!("user '{user}' can only connect via localhost"))
        }
        Some(_) => None,
    };
    if let Some(reason) = refusal {
        tracing::info!(user = %user, "login refused");
        if cap("authentication_failure_close") {
            close(io, AmqpError::access_refused(reason)).await;
        }
        return Ok(None);
    }

    send(
        io,
        AMQPClass::Connection(connection::AMQPMethod::Tune(connection::Tune {
            channel_max: cfg.channel_max,
            frame_max: cfg.frame_max,
            heartbeat: cfg.heartbeat_s,
        })),
    )
    .await?;
    let tune_ok = loop {
        match expect_method(io).await? {
            AMQPClass::Connection(connection::AMQPMethod::TuneOk(t)) => break t,
            AMQPClass::Connection(connection::AMQPMethod::SecureOk(_)) => continue,
            _ => return Ok(None),
        }
    };
    if tune_ok.channel_max == 0
        || tune_ok.channel_max > cfg.channel_max
        || tune_ok.frame_max == 0
        || tune_ok.frame_max > cfg.frame_max
        || tune_ok.frame_max < 4096
    {
        tracing::info!(?tune_ok, "refusing tune-ok outside the offered limits");
        return Ok(None);
    }
    io.frame_max = tune_ok.frame_max;
    io.out.set_frame_max(tune_ok.frame_max);

    let open = match expect_method(io).await? {
        AMQPClass::Connection(connection::AMQPMethod::Open(o)) => o,
        _ => return Ok(None),
    };
    let Some(vhost) = broker.vhost(open.virtual_host.as_str()) else {
        close(
            io,
            AmqpError::not_allowed(format!("vhost {} not found", open.virtual_host)).at(10, 40),
        )
        .await;
        return Ok(None);
    };
    send(
        io,
        AMQPClass::Connection(connection::AMQPMethod::OpenOk(connection::OpenOk {})),
    )
    .await?;
    Ok(Some(Opened {
        user,
        vhost,
        channel_max: tune_ok.channel_max,
        heartbeat_s: tune_ok.heartbeat,
        cancel_notify: cap("consumer_cancel_notify"),
    }))
}

async fn send(io: &mut FrameIo, method: AMQPClass) -> Result<(), String> {
    io.out.method(0, &method);
    io.flush().await.map_err(|e| e.to_string())
}

/// Send Connection.Close and give the client a moment to answer Close-Ok.
async fn close(io: &mut FrameIo, err: AmqpError) {
    io.out.method(0, &close_method(&err));
    if io.flush().await.is_ok() {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), io.read_frame()).await;
    }
}

/// The Connection.Close method for an error.
pub fn close_method(err: &AmqpError) -> AMQPClass {
    AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
        reply_code: err.kind.code(),
        reply_text: ShortString::from(err.short_text()),
        class_id: err.class_id,
        method_id: err.method_id,
    }))
}

/// Next method frame on channel 0, skipping heartbeats.
async fn expect_method(io: &mut FrameIo) -> Result<AMQPClass, String> {
    loop {
        match io.read_frame().await {
            Ok(Frame::Heartbeat { .. }) => continue,
            Ok(Frame::Method { method, .. }) => return Ok(*method),
            Ok(other) => return Err(format!("unexpected frame during handshake: {other:?}")),
            Err(ReadError::Closed) => return Err("peer closed during handshake".into()),
            Err(ReadError::Protocol(e)) => return Err(format!("{e:?}")),
        }
    }
}

/// Extract (user, password) from a SASL response.
fn credentials(mechanism: &str, response: &[u8]) -> Option<(String, String)> {
    match mechanism {
        "PLAIN" => {
            let mut parts = response.split(|b| *b == 0);
            let _authzid = parts.next()?;
            let user = String::from_utf8(parts.next()?.to_vec()).ok()?;
            let pass = String::from_utf8(parts.next()?.to_vec()).ok()?;
            Some((user, pass))
        }
        "AMQPLAIN" => {
            // A field table without its length prefix.
            let mut framed = (response.len() as u32).to_be_bytes().to_vec();
            framed.extend_from_slice(response);
            let (_, table) = amq_protocol::types::parsing::parse_field_table(&framed[..]).ok()?;
            let text = |k: &str| match table.inner().get(k)? {
                AMQPValue::LongString(s) => String::from_utf8(s.as_bytes().to_vec()).ok(),
                AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
                _ => None,
            };
            Some((text("LOGIN")?, text("PASSWORD")?))
        }
        _ => None,
    }
}

fn server_properties() -> FieldTable {
    let mut caps = FieldTable::default();
    for cap in [
        "publisher_confirms",
        "exchange_exchange_bindings",
        "basic.nack",
        "consumer_cancel_notify",
        "per_consumer_qos",
        "authentication_failure_close",
        "direct_reply_to",
    ] {
        caps.insert(ShortString::from(cap), AMQPValue::Boolean(true));
    }
    let mut props = FieldTable::default();
    let s = |v: &str| AMQPValue::LongString(LongString::from(v));
    props.insert("product".into(), s("Warren"));
    props.insert("version".into(), s(env!("CARGO_PKG_VERSION")));
    props.insert("platform".into(), s("Rust"));
    props.insert("cluster_name".into(), s("warren"));
    props.insert("copyright".into(), s("The Warren authors"));
    props.insert(
        "information".into(),
        s("An AMQP 0-9-1 broker compatible with RabbitMQ clients"),
    );
    props.insert("capabilities".into(), AMQPValue::FieldTable(caps));
    props
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_credentials() {
        assert_eq!(
            credentials("PLAIN", b"\0guest\0secret"),
            Some(("guest".into(), "secret".into()))
        );
        assert_eq!(credentials("PLAIN", b"guest"), None);
        assert_eq!(credentials("EXTERNAL", b""), None);
    }

    #[test]
    fn amqplain_credentials() {
        // LOGIN: S "guest", PASSWORD: S "pw" without the table length.
        let mut body = Vec::new();
        for (k, v) in [("LOGIN", "guest"), ("PASSWORD", "pw")] {
            body.push(k.len() as u8);
            body.extend_from_slice(k.as_bytes());
            body.push(b'S');
            body.extend_from_slice(&(v.len() as u32).to_be_bytes());
            body.extend_from_slice(v.as_bytes());
        }
        assert_eq!(
            credentials("AMQPLAIN", &body),
            Some(("guest".into(), "pw".into()))
        );
    }
}
