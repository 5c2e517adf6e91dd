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

use super::io::{FrameIo, ReadError};
use crate::auth::attempts::AuthProtocol;
use crate::auth::sasl::{self, Credentials, SaslError};
use crate::broker::{Broker, VHost};
use crate::protocol::{AmqpError, DecodeError, Frame};
use crate::tls::PeerCert;

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
    /// The client understands connection.blocked / unblocked.
    pub blocked_notify: bool,
    /// What the client said of itself in start-ok.
    pub client_properties: FieldTable,
    /// The SASL mechanism it logged in with.
    pub auth_mechanism: String,
}

/// Whether SASL EXTERNAL is offered, and what it has to go on.
#[derive(Clone, Copy, Debug)]
pub enum External<'a> {
    /// Not offered: plain TCP, or TLS without `verify_peer`.
    Off,
    /// Offered (a TLS listener that verifies peers), but this client sent
    /// no certificate: EXTERNAL is refused, as RabbitMQ does.
    NoCertificate,
    /// The client's verified certificate.
    Certificate(&'a PeerCert),
}

/// Run the handshake of connection `id`. `Ok(None)` means the connection
/// was refused and is to be closed quietly. Under a connection limit, a
/// connection that gets open-ok is admitted (counted) until it registers;
/// the caller forgets the admission if the handshake fails.
pub async fn handshake(
    io: &mut FrameIo,
    id: u64,
    peer: SocketAddr,
    broker: &Broker,
    external: External<'_>,
) -> Result<Option<Opened>, String> {
    let mut header = [0u8; 8];
    if io.stream.read_exact(&mut header).await.is_err() {
        return Ok(None);
    }
    if &header != PROTOCOL_HEADER {
        let _ = io.write(PROTOCOL_HEADER).await;
        tracing::info!(?header, "bad protocol header");
        return Ok(None);
    }
    let offered = sasl::offered(
        &broker.config.auth_mechanisms,
        !matches!(external, External::Off),
    );
    send(
        io,
        AMQPClass::Connection(connection::AMQPMethod::Start(connection::Start {
            version_major: 0,
            version_minor: 9,
            server_properties: server_properties(),
            mechanisms: LongString::from(offered.join(" ")),
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
    let mechanism = start_ok.mechanism.as_str();
    if mechanism == "EXTERNAL" && offered.contains(&mechanism) {
        match check_external(external, peer, broker) {
            Ok(user) => return tune_and_open(io, id, broker, user, start_ok, caps).await,
            Err(reason) => {
                if cap("authentication_failure_close") {
                    close(io, AmqpError::access_refused(reason)).await;
                }
                return Ok(None);
            }
        }
    }
    let parsed = match offered.contains(&mechanism) {
        true => sasl::parse(mechanism, start_ok.response.as_bytes()),
        false => Err(SaslError::UnknownMechanism(mechanism.to_string())),
    };
    if parsed == Err(SaslError::TooDeep) {
        // Treated as the frame it came in: a clean 502, as for methods.
        close(io, crate::protocol::frame::too_deep().at(10, 11)).await;
        return Ok(None);
    }
    let login = parsed
        .map_err(|e| {
            tracing::info!(mechanism, error = %e, "login refused: bad SASL response");
            match e {
                SaslError::UnknownMechanism(_) => e.to_string(),
                SaslError::Malformed(_) | SaslError::TooDeep => login_refused(mechanism),
            }
        })
        .and_then(|creds| check_login(creds, mechanism, peer, broker));
    let user = match login {
        Ok(user) => user,
        Err(reason) => {
            if cap("authentication_failure_close") {
                close(io, AmqpError::access_refused(reason)).await;
            }
            return Ok(None);
        }
    };
    tune_and_open(io, id, broker, user, start_ok, caps).await
}

/// After a login: Tune/Tune-Ok, then Open/Open-Ok with the vhost's checks.
async fn tune_and_open(
    io: &mut FrameIo,
    id: u64,
    broker: &Broker,
    user: String,
    start_ok: connection::StartOk,
    caps: FieldTable,
) -> Result<Option<Opened>, String> {
    let cfg = &broker.config;
    let cap = |k: &str| matches!(caps.inner().get(k), Some(AMQPValue::Boolean(true)));
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
    if let Err(e) = broker.access.check_open(&user, &vhost.name) {
        tracing::info!(%user, vhost = %vhost.name, "connection refused: no permissions in the vhost");
        close(io, e.at(10, 40)).await;
        return Ok(None);
    }
    if let Err(e) = broker.admit_connection(id, &user, &vhost.name) {
        tracing::info!(%user, vhost = %vhost.name, reason = %e.text, "connection refused: limit");
        close(io, e.at(10, 40)).await;
        return Ok(None);
    }
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
        blocked_notify: cap("connection.blocked"),
        auth_mechanism: start_ok.mechanism.to_string(),
        client_properties: start_ok.client_properties,
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
            Err(ReadError::Protocol(DecodeError::Close(e))) => {
                // A malformed or too-deep frame: say why before closing.
                io.out.method(0, &close_method(&e));
                let _ = io.flush().await;
                return Err(e.to_string());
            }
            Err(ReadError::Protocol(e)) => return Err(format!("{e:?}")),
        }
    }
}

/// RabbitMQ's text for a refused login (it names no reason, so a client
/// cannot probe which users exist).
fn login_refused(mechanism: &str) -> String {
    format!(
        "Login was refused using authentication mechanism {mechanism}. For details see the broker logfile."
    )
}

/// The user name if `creds` may log in from `peer`, else the refusal text.
fn check_login(
    creds: Credentials,
    mechanism: &str,
    peer: SocketAddr,
    broker: &Broker,
) -> Result<String, String> {
    // An IPv4 client of a dual-stack listener shows as ::ffff:a.b.c.d.
    let loopback = peer.ip().to_canonical().is_loopback();
    let login = broker.access.login(&creds.user, &creds.password, loopback);
    let attempts = &broker.access.attempts;
    attempts.record(AuthProtocol::Amqp, login.is_ok(), &creds.user, peer.ip());
    match login {
        Ok(()) => Ok(creds.user),
        Err("loopback-only user") => {
            tracing::info!(user = %creds.user, %peer, "login refused: loopback-only user");
            Err(format!(
                "user '{}' can only connect via localhost",
                creds.user
            ))
        }
        Err(why) => {
            tracing::info!(user = %creds.user, %peer, why, "login refused");
            Err(login_refused(mechanism))
        }
    }
}

/// The user a verified client certificate names, if it may log in.
fn check_external(external: External, peer: SocketAddr, broker: &Broker) -> Result<String, String> {
    let refused = login_refused("EXTERNAL");
    let External::Certificate(cert) = external else {
        tracing::info!(%peer, "EXTERNAL login refused: no client certificate");
        return Err(refused);
    };
    let Some(user) = &cert.login else {
        tracing::info!(%peer, subject = %cert.subject, "EXTERNAL login refused: the certificate names no user");
        return Err(refused);
    };
    let loopback = peer.ip().to_canonical().is_loopback();
    let login = broker.access.login_external(user, loopback);
    let attempts = &broker.access.attempts;
    attempts.record(AuthProtocol::Amqp, login.is_ok(), user, peer.ip());
    match login {
        Ok(()) => Ok(user.clone()),
        Err("loopback-only user") => {
            tracing::info!(%user, %peer, "EXTERNAL login refused: loopback-only user");
            Err(format!("user '{user}' can only connect via localhost"))
        }
        Err(why) => {
            tracing::info!(%user, %peer, why, "EXTERNAL login refused");
            Err(refused)
        }
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
        "connection.blocked",
        "consumer_priorities",
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
