//! One task per client connection: the handshake, then a loop that reads
//! frames, applies methods to the broker, takes deliveries from queues, and
//! writes everything produced in one pass as a single socket write.
//!
//! The connection task owns all per-connection and per-channel state (no
//! locks); it calls into the broker synchronously and never holds a broker
//! lock across an `.await`.

mod backpressure;
mod basic;
mod channel;
mod channel_life;
mod consumer_timeout;
mod content;
mod handshake;
mod held;
mod io;
mod permissions;
mod publish;
mod queue_exchange;
mod session;
mod stats;
mod tx_confirm;
mod unacked;
mod unacked_report;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::broker::connections::{NewConnection, TlsInfo};
use crate::broker::Broker;
use crate::config::AmqpListener;
use crate::tls::{self, PeerCert, Stream};

/// An AMQPS listener's TLS: its endpoint and how certificates name users.
#[derive(Debug)]
pub struct Amqps {
    /// The current certificates.
    pub endpoint: Arc<tls::Endpoint>,
    /// `[tls]`'s EXTERNAL settings.
    pub login: AmqpListener,
}

/// Serve one accepted TCP connection until it closes; with `amqps`, the
/// TLS handshake comes first (in this task, so it stalls no one else).
pub async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    broker: Arc<Broker>,
    shutdown: CancellationToken,
    amqps: Option<Arc<Amqps>>,
) {
    let _ = stream.set_nodelay(true);
    let (stream, cert, verifies) = match amqps {
        None => (Stream::Tcp(stream), None, false),
        Some(amqps) => match amqps.endpoint.accept(stream).await {
            Ok(tls) => {
                let cert = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .and_then(|der| tls::peer_cert(der, &amqps.login));
                (
                    Stream::Tls(Box::new(tls)),
                    cert,
                    amqps.endpoint.verifies_peers(),
                )
            }
            Err(e) => {
                tracing::info!(%peer, error = %e, "TLS handshake failed");
                return;
            }
        },
    };
    serve_stream(stream, (cert, verifies), peer, broker, shutdown).await
}

/// The session info the API shows for a TLS stream.
fn tls_info(stream: &Stream, cert: Option<&PeerCert>) -> Option<TlsInfo> {
    let session = stream.tls()?;
    let protocol = match session.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "tlsv1.3",
        Some(rustls::ProtocolVersion::TLSv1_2) => "tlsv1.2",
        _ => "unknown",
    };
    Some(TlsInfo {
        protocol: protocol.to_string(),
        cipher_suite: session
            .negotiated_cipher_suite()
            .and_then(|s| s.suite().as_str())
            .unwrap_or("unknown")
            .to_string(),
        peer_subject: cert.map(|c| c.subject.clone()),
        peer_issuer: cert.map(|c| c.issuer.clone()),
        peer_validity: cert.map(|c| c.validity.clone()),
    })
}

/// Serve a connection whose stream is set up. `cert` is the client's
/// verified certificate, if it sent one, and whether the listener verifies
/// peers (which makes EXTERNAL available).
async fn serve_stream(
    stream: Stream,
    (cert, verifies): (Option<PeerCert>, bool),
    peer: SocketAddr,
    broker: Arc<Broker>,
    shutdown: CancellationToken,
) {
    let id = broker.next_connection_id();
    let span = tracing::info_span!("conn", id, %peer, user = tracing::field::Empty, vhost = tracing::field::Empty);
    let _enter = span.enter();
    drop(_enter);
    use tracing::Instrument;
    async move {
        // Until tune-ok, frames are limited to the spec's minimum frame
        // size, as RabbitMQ does: an unauthenticated peer cannot make
        // Warren buffer more.
        let mut io = io::FrameIo::new(stream, crate::protocol::frame::FRAME_MIN_SIZE);
        let external = match (&cert, verifies) {
            (Some(cert), _) => handshake::External::Certificate(cert),
            (None, true) => handshake::External::NoCertificate,
            (None, false) => handshake::External::Off,
        };
        let timeout = std::time::Duration::from_millis(broker.config.handshake_timeout_ms);
        let handshake = handshake::handshake(&mut io, id, peer, &broker, external);
        let opened = match tokio::time::timeout(timeout, handshake).await {
            Ok(Ok(Some(opened))) => Some(opened),
            Ok(Ok(None)) => None,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "handshake failed");
                None
            }
            Err(_) => {
                tracing::info!("handshake timed out");
                None
            }
        };
        let Some(opened) = opened else {
            broker.connections.forget_admission(id);
            io.close_tls().await;
            return;
        };
        tracing::Span::current().record("user", opened.user.as_str());
        tracing::Span::current().record("vhost", &*opened.vhost.name);
        tracing::info!("connection opened");
        let close = shutdown.child_token();
        let (unacked_queries, queries) =
            tokio::sync::mpsc::channel(crate::broker::unacked_view::QUERY_CAPACITY);
        let entry = broker.connections.register(NewConnection {
            id,
            peer,
            local: io.stream.tcp().local_addr().unwrap_or(peer),
            user: opened.user.clone(),
            vhost: opened.vhost.name.clone(),
            client_properties: opened.client_properties.clone(),
            channel_max: opened.channel_max,
            frame_max: io.frame_max,
            heartbeat_s: opened.heartbeat_s,
            auth_mechanism: opened.auth_mechanism.clone(),
            tls: tls_info(&io.stream, cert.as_ref()),
            close: close.clone(),
            unacked_queries,
        });
        let registry = broker.clone();
        let totals = session::Session::new(id, io, broker, opened, entry, queries)
            .run(close)
            .await;
        registry.connections.deregister(id, &totals);
        tracing::info!("connection closed");
    }
    .instrument(span)
    .await
}
