//! The node's listeners and their lifetime: binds AMQP, AMQPS, the
//! management API and Prometheus (each over HTTP and, when configured,
//! HTTPS), runs an accept loop per AMQP listener (see `accept`), and shuts
//! down on a cancellation token, telling every client with
//! Connection.Close 320 before the process exits.

mod accept;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker::Broker;
use crate::config::Config;
use crate::connection::Amqps;
use crate::management::{self, http::Bound, AppState, Listener};
use crate::tls::{Endpoint, Reloader};

/// Why a server could not start.
#[derive(Debug, PartialEq, Eq)]
pub enum BindError {
    /// The configuration is unusable (a TLS file cannot be read, say); the
    /// text names the key.
    Config(String),
    /// Anything else: the data directory, a port in use.
    Other(String),
}

impl std::fmt::Display for BindError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BindError::Config(e) | BindError::Other(e) => f.write_str(e),
        }
    }
}

/// The bound sockets of a server.
#[derive(Debug, Default)]
struct Sockets {
    amqp: Option<TcpListener>,
    amqps: Option<(TcpListener, Arc<Amqps>)>,
    /// The management API's listeners, plain then TLS.
    management: Vec<Bound>,
    /// The Prometheus listeners, plain then TLS.
    prometheus: Vec<Bound>,
}

/// A bound, not yet running server.
#[derive(Debug)]
pub struct Server {
    sockets: Sockets,
    /// The listeners as bound, for the API and the accessors.
    listeners: Vec<Listener>,
    reloader: Reloader,
    broker: Arc<Broker>,
    shutdown: CancellationToken,
}

impl Server {
    /// Open the data directory (recovering what it holds), read the TLS
    /// files and bind the configured addresses. The error says which failed.
    pub async fn bind(config: Config) -> Result<Self, BindError> {
        let (amqp_tls, http_tls) = load_tls(&config).await?;
        let broker = Arc::new(Broker::open(config).map_err(BindError::Other)?);
        if let Err(e) = management::load_definitions(&broker) {
            broker.store.close();
            return Err(BindError::Other(e));
        }
        match bind_all(&broker.config, amqp_tls.clone(), http_tls.clone()).await {
            Ok(sockets) => {
                let mut reloader = Reloader::default();
                for endpoint in [amqp_tls, http_tls].into_iter().flatten() {
                    reloader.add(endpoint);
                }
                let listeners = listeners_of(&sockets);
                Ok(Server {
                    sockets,
                    listeners,
                    reloader,
                    broker,
                    shutdown: CancellationToken::new(),
                })
            }
            Err(e) => {
                broker.store.close();
                Err(BindError::Other(e))
            }
        }
    }

    /// Where a listener of `protocol` (RabbitMQ's names: `amqp`,
    /// `amqp/ssl`, `http`, `https`, `http/prometheus`, `https/prometheus`) is.
    pub fn addr_of(&self, protocol: &str) -> Option<SocketAddr> {
        addr_of(&self.listeners, protocol)
    }

    /// Where the management API listens over HTTP, if it does.
    pub fn management_addr(&self) -> Option<SocketAddr> {
        self.addr_of("http")
    }

    /// Where the Prometheus endpoint listens over HTTP, if it does.
    pub fn prometheus_addr(&self) -> Option<SocketAddr> {
        self.addr_of("http/prometheus")
    }

    /// The TLS endpoints, to reload their certificates (on SIGHUP).
    pub fn tls_reloader(&self) -> Reloader {
        self.reloader.clone()
    }

    /// The listeners as the management API lists them.
    pub fn listeners(&self) -> &[Listener] {
        &self.listeners
    }

    /// The AMQP address bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.addr_of("amqp")
            .ok_or_else(|| std::io::Error::other("not bound"))
    }

    /// A token that stops the server when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Start the HTTP listeners (they stop with the server).
    fn start_http(&mut self, tracker: &TaskTracker) {
        let management = std::mem::take(&mut self.sockets.management);
        if !management.is_empty() {
            let state = AppState {
                broker: self.broker.clone(),
                listeners: Arc::new(self.listeners.clone()),
                sampler: Default::default(),
            };
            tracker.spawn(management::serve(management, state, self.shutdown.clone()));
        }
        let prometheus = std::mem::take(&mut self.sockets.prometheus);
        if !prometheus.is_empty() {
            let broker = self.broker.clone();
            let serve = management::prometheus::serve(prometheus, broker, self.shutdown.clone());
            tracker.spawn(serve);
        }
    }

    /// Accept connections until shutdown, then wait for them to close.
    pub async fn run(mut self) {
        let tracker = TaskTracker::new();
        self.start_http(&tracker);
        self.broker
            .shovels
            .start_all(&self.broker, self.shutdown.child_token());
        let shared = accept::Shared {
            limit: Arc::new(Semaphore::new(self.broker.config.max_connections)),
            broker: self.broker.clone(),
            shutdown: self.shutdown.clone(),
            tracker: tracker.clone(),
        };
        let loops = TaskTracker::new();
        if let Some((listener, amqps)) = self.sockets.amqps.take() {
            loops.spawn(accept::run(listener, Some(amqps), shared.clone()));
        }
        if let Some(listener) = self.sockets.amqp.take() {
            loops.spawn(accept::run(listener, None, shared));
        }
        loops.close();
        loops.wait().await;
        tracker.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await;
        self.broker
            .shovels
            .wait_stopped(Duration::from_secs(5))
            .await;
        // Last sync round (delivery marks, buffered writes), then unlock.
        self.broker.close();
    }
}

/// Read the TLS files of `[tls]` and `[management.tls]`, if configured.
async fn load_tls(
    config: &Config,
) -> Result<(Option<Arc<Endpoint>>, Option<Arc<Endpoint>>), BindError> {
    let load = |files: &crate::config::TlsFiles, table| {
        let files = files.clone();
        async move {
            match files.enabled() {
                true => Endpoint::load(files, table).await.map(Some),
                false => Ok(None),
            }
        }
    };
    let amqp = load(&config.tls.files, "tls")
        .await
        .map_err(BindError::Config)?;
    let http = load(&config.management.tls.files, "management.tls")
        .await
        .map_err(BindError::Config)?;
    Ok((amqp, http))
}

/// Bind every configured listener; the error names the address.
async fn bind_all(
    config: &Config,
    amqp_tls: Option<Arc<Endpoint>>,
    http_tls: Option<Arc<Endpoint>>,
) -> Result<Sockets, String> {
    let mut s = Sockets {
        amqp: Some(listen(config.bind, config.port).await?),
        ..Default::default()
    };
    if let Some(endpoint) = amqp_tls {
        let listener = listen(config.bind, config.tls.listener.port).await?;
        let login = config.tls.listener.clone();
        s.amqps = Some((listener, Arc::new(Amqps { endpoint, login })));
    }
    let ip = config.management_bind;
    let https = &config.management.tls.listener;
    for (plain, tls, out) in [
        (config.management_port, https.port, &mut s.management),
        (
            config.prometheus_port,
            https.prometheus_port,
            &mut s.prometheus,
        ),
    ] {
        if plain != 0 {
            out.push((listen(ip, plain).await?, None));
        }
        if let (Some(endpoint), true) = (&http_tls, tls != 0) {
            out.push((listen(ip, tls).await?, Some(endpoint.clone())));
        }
    }
    Ok(s)
}

/// The listeners with RabbitMQ's protocol names.
fn listeners_of(s: &Sockets) -> Vec<Listener> {
    let mut out = Vec::new();
    let mut add = |protocol, l: &TcpListener| {
        if let Ok(addr) = l.local_addr() {
            out.push(Listener { protocol, addr });
        }
    };
    if let Some(l) = &s.amqp {
        add("amqp", l);
    }
    if let Some((l, _)) = &s.amqps {
        add("amqp/ssl", l);
    }
    for (l, tls) in &s.management {
        add(if tls.is_some() { "https" } else { "http" }, l);
    }
    for (l, tls) in &s.prometheus {
        add(
            if tls.is_some() {
                "https/prometheus"
            } else {
                "http/prometheus"
            },
            l,
        );
    }
    out
}

fn addr_of(listeners: &[Listener], protocol: &str) -> Option<SocketAddr> {
    listeners
        .iter()
        .find(|l| l.protocol == protocol)
        .map(|l| l.addr)
}

/// Bind a listener; the error names the address.
async fn listen(ip: IpAddr, port: u16) -> Result<TcpListener, String> {
    TcpListener::bind((ip, port))
        .await
        .map_err(|e| format!("cannot listen on {ip}:{port}: {e}"))
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
    /// Every listener, with RabbitMQ's protocol names.
    pub listeners: Vec<Listener>,
    /// Reloads the TLS certificates, as SIGHUP does.
    pub tls_reloader: Reloader,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl RunningServer {
    /// Bind and start serving in a background task.
    pub async fn start(config: Config) -> std::io::Result<Self> {
        let server = Server::bind(config)
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let addr = server.local_addr()?;
        let management_addr = server.management_addr();
        let prometheus_addr = server.prometheus_addr();
        let listeners = server.listeners().to_vec();
        let tls_reloader = server.tls_reloader();
        let shutdown = server.shutdown_token();
        let broker = server.broker.clone();
        let task = tokio::spawn(server.run());
        Ok(RunningServer {
            addr,
            broker,
            management_addr,
            prometheus_addr,
            listeners,
            tls_reloader,
            shutdown,
            task,
        })
    }

    /// Where a listener of `protocol` (`amqp/ssl`, `https`, ...) is.
    pub fn addr_of(&self, protocol: &str) -> Option<SocketAddr> {
        addr_of(&self.listeners, protocol)
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
