//! TLS for the AMQPS and HTTPS listeners (rustls).
//!
//! An [`Endpoint`] holds one listener's current rustls config, built from
//! the files of its `[tls]` table; [`Endpoint::reload`] re-reads them (on
//! SIGHUP) and swaps the config in, so new handshakes use the new
//! certificate while open connections keep the session they have. A bad
//! file at reload is logged and the old config stays.
//!
//! Handshakes run in each connection's own task, never on the accept loop,
//! and are cut off after `handshake_timeout_ms`: a client that stalls its
//! handshake holds only its own socket. At most [`MAX_HANDSHAKES`] run at
//! once per endpoint (rustls buffers a handshake message of up to 64 KiB
//! for each); later ones wait, within their own timeout.

mod identity;
mod server_config;
mod stream;

use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use rustls::ServerConfig;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::config::TlsFiles;

pub use identity::{peer_cert, PeerCert};
pub use stream::Stream;

/// Handshakes in progress at once per endpoint: bounds what
/// unauthenticated peers hold (~67 KiB each at most, ~135 MiB in all).
pub const MAX_HANDSHAKES: usize = 2048;

/// One TLS listener's settings and its current rustls config.
#[derive(Debug)]
pub struct Endpoint {
    files: TlsFiles,
    handshakes: Semaphore,
    /// The config table's name, for errors: `tls` or `management.tls`.
    table: &'static str,
    current: RwLock<Arc<ServerConfig>>,
}

impl Endpoint {
    /// Read the files (on a blocking thread) and build the endpoint; the
    /// error names the config key at fault.
    pub async fn load(files: TlsFiles, table: &'static str) -> Result<Arc<Self>, String> {
        let config = build_off_thread(files.clone(), table).await?;
        Ok(Arc::new(Endpoint {
            files,
            handshakes: Semaphore::new(MAX_HANDSHAKES),
            table,
            current: RwLock::new(Arc::new(config)),
        }))
    }

    /// Re-read the files and use them for new handshakes; on an error the
    /// old config stays and the error is returned.
    pub async fn reload(&self) -> Result<(), String> {
        let config = build_off_thread(self.files.clone(), self.table).await?;
        *self.current.write() = Arc::new(config);
        Ok(())
    }

    /// Whether clients are asked for certificates (`verify_peer`).
    pub fn verifies_peers(&self) -> bool {
        self.files.verify_peer
    }

    /// The config table this endpoint was built from.
    pub fn table(&self) -> &'static str {
        self.table
    }

    /// Run the server side of a handshake on `tcp`, within the timeout
    /// (which covers waiting for a handshake slot).
    pub async fn accept(&self, tcp: TcpStream) -> Result<TlsStream<TcpStream>, String> {
        let limit = Duration::from_millis(self.files.handshake_timeout_ms);
        let handshake = async {
            let _slot = self.handshakes.acquire().await.map_err(|e| e.to_string())?;
            let acceptor = TlsAcceptor::from(self.current.read().clone());
            acceptor.accept(tcp).await.map_err(|e| e.to_string())
        };
        match tokio::time::timeout(limit, handshake).await {
            Ok(result) => result,
            Err(_) => Err(format!("no TLS handshake within {} ms", limit.as_millis())),
        }
    }
}

async fn build_off_thread(files: TlsFiles, table: &'static str) -> Result<ServerConfig, String> {
    tokio::task::spawn_blocking(move || server_config::build(&files, table))
        .await
        .map_err(|e| format!("TLS setup failed: {e}"))?
}

/// Every TLS endpoint of a server, reloaded together on SIGHUP.
#[derive(Clone, Debug, Default)]
pub struct Reloader(Vec<Arc<Endpoint>>);

impl Reloader {
    /// Add an endpoint.
    pub fn add(&mut self, endpoint: Arc<Endpoint>) {
        self.0.push(endpoint);
    }

    /// Reload every endpoint, logging each outcome; the number that failed.
    pub async fn reload(&self) -> usize {
        let mut failed = 0;
        for endpoint in &self.0 {
            match endpoint.reload().await {
                Ok(()) => tracing::info!(table = endpoint.table(), "TLS certificates reloaded"),
                Err(e) => {
                    failed += 1;
                    tracing::error!(table = endpoint.table(), error = %e,
                        "TLS reload failed; the previous certificates stay in use");
                }
            }
        }
        failed
    }
}
