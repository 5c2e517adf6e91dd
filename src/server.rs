//! The listener: binds, accepts connections (bounded by a semaphore, with a
//! back-off on accept errors; a client met when descriptors run out is
//! refused at once), spawns one task per connection, and shuts
//! down on a cancellation token, telling every client with
//! Connection.Close 320 before the process exits.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker::Broker;
use crate::config::Config;
use crate::connection;
use crate::management::{self, AppState, Listener};

/// A bound, not yet running server.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    /// The management API's listener (None: turned off).
    management: Option<TcpListener>,
    /// The Prometheus listener (None: turned off).
    prometheus: Option<TcpListener>,
    broker: Arc<Broker>,
    shutdown: CancellationToken,
}

impl Server {
    /// Open the data directory (recovering what it holds) and bind the
    /// configured address. The error says which of the two failed.
    pub async fn bind(config: Config) -> Result<Self, String> {
        let addr = (config.bind, config.port);
        let http = (
            config.management_bind,
            config.management_port,
            config.prometheus_port,
        );
        let broker = Arc::new(Broker::open(config)?);
        if let Err(e) = management::load_definitions(&broker) {
            broker.store.close();
            return Err(e);
        }
        let bound = async {
            let listener = listen(addr).await?;
            let (ip, management_port, prometheus_port) = http;
            let management = match management_port {
                0 => None,
                port => Some(listen((ip, port)).await?),
            };
            let prometheus = match prometheus_port {
                0 => None,
                port => Some(listen((ip, port)).await?),
            };
            Ok::<_, String>((listener, management, prometheus))
        };
        let (listener, management, prometheus) = match bound.await {
            Ok(l) => l,
            Err(e) => {
                broker.store.close();
                return Err(e);
            }
        };
        Ok(Server {
            listener,
            management,
            prometheus,
            broker,
            shutdown: CancellationToken::new(),
        })
    }

    /// Where the management API listens, if it does.
    pub fn management_addr(&self) -> Option<SocketAddr> {
        self.management.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Where the Prometheus endpoint listens, if it does.
    pub fn prometheus_addr(&self) -> Option<SocketAddr> {
        self.prometheus.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The node's listeners as the management API lists them.
    fn listeners(&self) -> Vec<Listener> {
        let mut out = Vec::new();
        let mut add = |protocol, addr: Option<SocketAddr>| {
            if let Some(addr) = addr {
                out.push(Listener { protocol, addr });
            }
        };
        add("amqp", self.local_addr().ok());
        add("http", self.management_addr());
        add("prometheus", self.prometheus_addr());
        out
    }

    /// Start the HTTP listeners (they stop with the server).
    fn start_http(&mut self, tracker: &TaskTracker) {
        let listeners = Arc::new(self.listeners());
        if let Some(l) = self.management.take() {
            let state = AppState {
                broker: self.broker.clone(),
                listeners,
                sampler: Default::default(),
            };
            tracker.spawn(management::serve(l, state, self.shutdown.clone()));
        }
        if let Some(l) = self.prometheus.take() {
            let broker = self.broker.clone();
            tracker.spawn(management::prometheus::serve(
                l,
                broker,
                self.shutdown.clone(),
            ));
        }
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// A token that stops the server when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Accept connections until shutdown, then wait for them to close.
    pub async fn run(mut self) {
        let tracker = TaskTracker::new();
        self.start_http(&tracker);
        let limit = Arc::new(Semaphore::new(self.broker.config.max_connections));
        let mut backoff = Duration::from_millis(5);
        let mut reserve = FdReserve::new();
        loop {
            let permit = tokio::select! {
                _ = self.shutdown.cancelled() => break,
                p = limit.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let accepted = tokio::select! {
                _ = self.shutdown.cancelled() => break,
                a = self.listener.accept() => a,
            };
            match accepted {
                Ok((stream, peer)) => {
                    backoff = Duration::from_millis(5);
                    let broker = self.broker.clone();
                    let shutdown = self.shutdown.clone();
                    tracker.spawn(async move {
                        connection::serve(stream, peer, broker, shutdown).await;
                        drop(permit);
                    });
                }
                Err(e) if out_of_descriptors(&e) && reserve.refuse_one(&self.listener).await => {
                    tracing::warn!(error = %e, "out of file descriptors: a new client was refused");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed; backing off");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
        tracker.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await;
        // Last sync round (delivery marks, buffered writes), then unlock.
        self.broker.close();
    }
}

/// Bind a listener; the error names the address.
async fn listen(addr: (std::net::IpAddr, u16)) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {}:{}: {e}", addr.0, addr.1))
}

/// Whether an accept failed for lack of file descriptors (EMFILE, ENFILE).
fn out_of_descriptors(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(23 | 24))
}

/// A descriptor held in reserve for running out of them: accept() then
/// fails and would leave the client waiting, unanswered, for as long as
/// the shortage lasts. Giving the reserve up for a moment lets the server
/// accept that client and close it at once: it sees the connection end
/// (a clear refusal) and the listener keeps going.
struct FdReserve(Option<std::fs::File>);

impl FdReserve {
    fn new() -> Self {
        FdReserve(std::fs::File::open("/dev/null").ok())
    }

    /// Accept one waiting client with the reserve's descriptor and close
    /// it; false if there was no reserve or no client to refuse.
    async fn refuse_one(&mut self, listener: &TcpListener) -> bool {
        if self.0.take().is_none() {
            *self = Self::new();
            return false;
        }
        let wait = Duration::from_millis(50);
        let refused = matches!(
            tokio::time::timeout(wait, listener.accept()).await,
            Ok(Ok(_))
        );
        *self = Self::new();
        refused
    }
}

/// A server running on the current tokio runtime, for tests and embedding.
#[derive(Debug)]
pub struct RunningServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The broker it serves (to inspect or drive it, e.g. its alarms).
    pub broker: Arc<Broker>,
    /// Where the management API listens, if it does.
    pub management_addr: Option<SocketAddr>,
    /// Where the Prometheus endpoint listens, if it does.
    pub prometheus_addr: Option<SocketAddr>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl RunningServer {
    /// Bind and start serving in a background task.
    pub async fn start(config: Config) -> std::io::Result<Self> {
        let server = Server::bind(config).await.map_err(std::io::Error::other)?;
        let addr = server.local_addr()?;
        let management_addr = server.management_addr();
        let prometheus_addr = server.prometheus_addr();
        let shutdown = server.shutdown_token();
        let broker = server.broker.clone();
        let task = tokio::spawn(server.run());
        Ok(RunningServer {
            addr,
            broker,
            management_addr,
            prometheus_addr,
            shutdown,
            task,
        })
    }

    /// An `amqp://` URL for this server as guest.
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@{}/%2f", self.addr)
    }

    /// Stop accepting, close every connection, and wait.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }
}
