//! The HTTP/1.1 listener the API and the metrics endpoint run on: hyper
//! with the limits a hostile or broken client cannot get round, which
//! `axum::serve` does not set. At most [`HttpLimits::max_connections`]
//! connections are served at once (the rest wait in the kernel's backlog);
//! a request's head must arrive within `header_read_timeout` (a client
//! that sends a byte a minute, or opens a socket and says nothing, is cut
//! off) and is at most `max_head_bytes`; bodies are bounded by the API's
//! own limits (size in [`super::Body`], read time likewise).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::tls::Endpoint;

/// What one HTTP listener allows a client.
#[derive(Clone, Copy, Debug)]
pub struct HttpLimits {
    /// Connections served at once.
    pub max_connections: usize,
    /// Time for a request's line and headers to arrive, counted from the
    /// connection's start or the previous response (so an idle keep-alive
    /// connection is closed after it too).
    pub header_read_timeout: Duration,
    /// Bytes of a request's line and headers.
    pub max_head_bytes: usize,
    /// Time open connections get to finish at shutdown.
    pub shutdown_grace: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            // Tools poll with a handful of connections; a thousand is far
            // above any real use and bounds sockets and tasks.
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(30),
            max_head_bytes: 64 * 1024,
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// Serve `app` on `listener` until `shutdown`, over TLS with `tls`;
/// `what` names the listener in the log.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<Endpoint>>,
    app: Router,
    limits: HttpLimits,
    shutdown: CancellationToken,
    what: &'static str,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let tracker = TaskTracker::new();
    loop {
        let slot = tokio::select! {
            _ = shutdown.cancelled() => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, mostly: wait, don't spin.
                    tracing::warn!(listener = what, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let (app, shutdown, tls) = (app.clone(), shutdown.clone(), tls.clone());
        tracker.spawn(async move {
            // The handshake runs here, off the accept loop, within its
            // own timeout and holding the connection's slot.
            match tls {
                None => connection(stream, peer, app, limits, shutdown).await,
                Some(tls) => match tls.accept(stream).await {
                    Ok(stream) => connection(stream, peer, app, limits, shutdown).await,
                    Err(e) => {
                        tracing::debug!(listener = what, %peer, error = %e, "TLS handshake failed")
                    }
                },
            }
            drop(slot);
        });
    }
    tracker.close();
    tracker.wait().await;
}

/// Serve `app` on each listener (plain or TLS) until `shutdown`.
pub async fn serve_all(
    listeners: Vec<Bound>,
    app: Router,
    shutdown: CancellationToken,
    what: &'static str,
) {
    let tracker = TaskTracker::new();
    for (listener, tls) in listeners {
        let limits = HttpLimits::default();
        tracker.spawn(serve(
            listener,
            tls,
            app.clone(),
            limits,
            shutdown.clone(),
            what,
        ));
    }
    tracker.close();
    tracker.wait().await;
}

/// A bound listener and its TLS, if it serves HTTPS.
pub type Bound = (TcpListener, Option<Arc<Endpoint>>);

/// Serve one connection until the client closes it, a limit cuts it off,
/// or shutdown (which lets a request in flight finish, for a while).
async fn connection<S>(
    stream: S,
    peer: SocketAddr,
    app: Router,
    limits: HttpLimits,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        app.clone().oneshot(req)
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_head_bytes.max(8192))
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let done = tokio::select! {
        done = conn.as_mut() => done,
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            match tokio::time::timeout(limits.shutdown_grace, conn.as_mut()).await {
                Ok(done) => done,
                Err(_) => return,
            }
        }
    };
    if let Err(e) = done {
        tracing::debug!(%peer, error = %e, "http connection ended");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    async fn start(limits: HttpLimits) -> (SocketAddr, CancellationToken) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().route(
            "/",
            get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.ip().to_string() }),
        );
        let shutdown = CancellationToken::new();
        tokio::spawn(serve(listener, None, app, limits, shutdown.clone(), "test"));
        (addr, shutdown)
    }

    /// Everything the server sends until it closes the connection.
    async fn read_to_close(s: &mut TcpStream) -> String {
        let mut out = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
        assert!(
            read.is_ok(),
            "the server did not close the connection; got {:?}",
            String::from_utf8_lossy(&out)
        );
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn a_request_is_served_with_the_peer_address() {
        let (addr, shutdown) = start(HttpLimits::default()).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let reply = read_to_close(&mut s).await;
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        assert!(reply.ends_with("127.0.0.1"), "{reply}");
        shutdown.cancel();
    }

    #[tokio::test]
    async fn a_slow_or_silent_client_is_cut_off() {
        let limits = HttpLimits {
            header_read_timeout: Duration::from_millis(300),
            ..HttpLimits::default()
        };
        let (addr, shutdown) = start(limits).await;
        let mut silent = TcpStream::connect(addr).await.unwrap();
        let mut slow = TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n")
            .await
            .unwrap();
        let mut idle = TcpStream::connect(addr).await.unwrap();
        idle.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let _ = read_to_close(&mut silent).await;
        let _ = read_to_close(&mut slow).await;
        let served = read_to_close(&mut idle).await;
        assert!(served.starts_with("HTTP/1.1 200"), "{served}");
        shutdown.cancel();
    }

    #[tokio::test]
    async fn an_oversized_head_is_refused() {
        let (addr, shutdown) = start(HttpLimits::default()).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        let huge = format!("GET / HTTP/1.1\r\nx: {}\r\n\r\n", "a".repeat(1_000_000));
        let _ = s.write_all(huge.as_bytes()).await;
        let reply = read_to_close(&mut s).await;
        assert!(
            reply.is_empty() || reply.starts_with("HTTP/1.1 431"),
            "{reply}"
        );
        shutdown.cancel();
    }

    #[tokio::test]
    async fn connections_beyond_the_limit_wait_for_a_slot() {
        let limits = HttpLimits {
            max_connections: 1,
            ..HttpLimits::default()
        };
        let (addr, shutdown) = start(limits).await;
        let first = TcpStream::connect(addr).await.unwrap();
        let mut second = TcpStream::connect(addr).await.unwrap();
        second
            .write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut byte = [0u8; 1];
        let waited = tokio::time::timeout(Duration::from_millis(300), second.read(&mut byte)).await;
        assert!(waited.is_err(), "served while the only slot was taken");
        drop(first);
        let reply = read_to_close(&mut second).await;
        assert!(reply.contains("200 OK"), "{reply}");
        shutdown.cancel();
    }
}
