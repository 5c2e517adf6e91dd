//! One listener's accept loop: connections bounded by the node-wide
//! semaphore, a back-off on accept errors, and a client met when file
//! descriptors run out refused at once. Each connection (and, on AMQPS,
//! its TLS handshake) runs in its own task.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker::Broker;
use crate::connection::{self, Amqps};

/// What an accept loop shares with the others.
#[derive(Clone)]
pub struct Shared {
    /// Node-wide connection slots (`max_connections`).
    pub limit: Arc<Semaphore>,
    /// The broker.
    pub broker: Arc<Broker>,
    /// Stops the loop and every connection.
    pub shutdown: CancellationToken,
    /// Tracks connection tasks, to wait for them at shutdown.
    pub tracker: TaskTracker,
}

/// Accept on `listener` until shutdown; with `amqps`, clients speak TLS.
pub async fn run(listener: TcpListener, amqps: Option<Arc<Amqps>>, shared: Shared) {
    let mut backoff = Duration::from_millis(5);
    let mut reserve = FdReserve::new();
    loop {
        let permit = tokio::select! {
            _ = shared.shutdown.cancelled() => break,
            p = shared.limit.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            _ = shared.shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = Duration::from_millis(5);
                let broker = shared.broker.clone();
                let shutdown = shared.shutdown.clone();
                let amqps = amqps.clone();
                shared.tracker.spawn(async move {
                    connection::serve(stream, peer, broker, shutdown, amqps).await;
                    drop(permit);
                });
            }
            Err(e) if out_of_descriptors(&e) && reserve.refuse_one(&listener).await => {
                tracing::warn!(error = %e, "out of file descriptors: a new client was refused");
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed; backing off");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
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
