//! The management HTTP API: RabbitMQ's routes and JSON on port 15672, so
//! rabbitmqadmin, KEDA, Flower and curl probes work unchanged; and the
//! Prometheus endpoint on 15692 ([`prometheus`]).
//!
//! Handlers read the broker's live objects (no statistics database): a
//! list takes the vhost's `names` read lock only to copy `Arc`s, then reads
//! each queue's counters and gauges. Writes go through the same vhost
//! methods AMQP uses, so their effects and errors are the same.
//!
//! Layout: [`auth`] (Basic auth and tags), [`error`] (JSON errors),
//! [`listing`] (sort, page, filter, columns), [`json`] (tables and
//! properties), then one module per resource.

pub mod auth;
mod authz;
mod bindings;
mod connections;
mod definitions;
mod delayed;
pub mod error;
mod exchanges;
mod format;
mod health;
pub mod http;
pub mod json;
mod limits;
pub mod listing;
mod messages;
mod node;
mod overview;
mod parameters;
mod policies;
pub mod prometheus;
mod queues;
pub mod sampler;
mod shovels;
mod ui;
mod unacked;
mod users;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Request};
use axum::http::{StatusCode, Uri};
use axum::Router;
use tokio_util::sync::CancellationToken;
use tower::Layer;

use crate::broker::Broker;
use error::{ApiError, ApiResult};

/// What every handler gets.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The broker served.
    pub broker: Arc<Broker>,
    /// The node's listeners (AMQP, the API, metrics), as bound.
    pub listeners: Arc<Vec<Listener>>,
    /// The rates' last readings.
    pub sampler: Arc<sampler::Sampler>,
}

/// A listening socket of the node, as `/api/overview` lists it.
#[derive(Clone, Copy, Debug)]
pub struct Listener {
    /// RabbitMQ's protocol name: `amqp`, `amqp/ssl`, `http`, `https`,
    /// `http/prometheus`, `https/prometheus`.
    pub protocol: &'static str,
    /// Where it listens.
    pub addr: SocketAddr,
}

/// The API's routes, under `/api`.
pub fn router(state: AppState) -> Router {
    let limit = state.broker.config.management_max_body_bytes;
    let api = Router::new()
        .merge(overview::routes())
        .merge(health::routes())
        .merge(queues::routes())
        .merge(exchanges::routes())
        .merge(delayed::routes())
        .merge(unacked::routes())
        .merge(bindings::routes())
        .merge(connections::routes())
        .merge(users::routes())
        .merge(definitions::routes())
        .merge(policies::routes())
        .merge(limits::routes())
        .merge(parameters::routes())
        .merge(shovels::routes())
        .merge(node::routes())
        .fallback(|| async { ApiError::not_found() })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() });
    Router::new()
        .nest("/api", api)
        .merge(ui::routes())
        .fallback(|| async { ApiError::not_found() })
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// Time a request's body has to arrive (its size is bounded by
/// `management_max_body_bytes`).
const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// A request's JSON body: no body reads as `{}`; malformed JSON is 400,
/// a body over `management_max_body_bytes` 413 and one slower than
/// [`BODY_READ_TIMEOUT`] 408, each with a JSON reason.
#[derive(Debug)]
pub struct Body(pub serde_json::Value);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let read = tokio::time::timeout(BODY_READ_TIMEOUT, Bytes::from_request(req, state));
        let bytes = read
            .await
            .map_err(|_| ApiError {
                status: StatusCode::REQUEST_TIMEOUT,
                error: "request_timeout",
                reason: format!(
                    "the body did not arrive within {} s",
                    BODY_READ_TIMEOUT.as_secs()
                ),
            })?
            .map_err(|e| ApiError {
                status: e.status(),
                error: match e.status() {
                    StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
                    _ => "bad_request",
                },
                reason: e.body_text(),
            })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Body(serde_json::Value::Object(Default::default())));
        }
        serde_json::from_slice(&bytes)
            .map(Body)
            .map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")))
    }
}

/// Import the `load_definitions` file, if one is configured (at boot,
/// before clients are served); the error names the file and what failed.
pub fn load_definitions(broker: &Broker) -> Result<(), String> {
    let path = &broker.config.load_definitions;
    if path.is_empty() {
        return Ok(());
    }
    let fail = |why: String| format!("invalid value for `load_definitions`: {path}: {why}");
    let bytes = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
    let body: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| fail(format!("not JSON: {e}")))?;
    definitions::import_all(broker, &body).map_err(|e| fail(e.reason))?;
    tracing::info!(file = %path, "definitions loaded");
    Ok(())
}

/// Run `f` on a blocking thread (it does file I/O or visits every queue
/// of a vhost), keeping the async workers free.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("the operation failed: {e}")))?
}

/// A declare's answer, as RabbitMQ's: 201 when it created the object, 204
/// when it already existed.
pub fn declared(existed: bool) -> StatusCode {
    match existed {
        true => StatusCode::NO_CONTENT,
        false => StatusCode::CREATED,
    }
}

/// Wait until the store has synced `ticket` (0: nothing to wait for), as
/// an AMQP reply to a durable change waits.
pub async fn wait_synced(state: &AppState, ticket: u64) -> Result<(), ApiError> {
    if ticket == 0 {
        return Ok(());
    }
    let mut status = state.broker.store.syncer.subscribe();
    let done = status
        .wait_for(|s| s.synced >= ticket || s.failed)
        .await
        .map(|s| s.synced >= ticket);
    match done {
        Ok(true) => Ok(()),
        _ => Err(ApiError::internal(format!(
            "the store could not write the change ({:?})",
            state.broker.store.health()
        ))),
    }
}

/// Serve the API on `listener` until `shutdown`, with the rate sampler.
pub async fn serve(listeners: Vec<http::Bound>, state: AppState, shutdown: CancellationToken) {
    let sampling = tokio::spawn(sampler::run(
        state.broker.clone(),
        state.sampler.clone(),
        shutdown.clone(),
    ));
    let app = Router::new().fallback_service(trim_trailing_slash().layer(router(state)));
    http::serve_all(listeners, app, shutdown, "management").await;
    let _ = sampling.await;
}

/// `/api/queues/` is served as `/api/queues`, as RabbitMQ's router drops
/// an empty last segment (Flower asks for the former).
fn trim_trailing_slash() -> tower::util::MapRequestLayer<fn(Request) -> Request> {
    fn trim(mut req: Request) -> Request {
        let path = req.uri().path();
        if path.len() > 1 && path.ends_with('/') {
            let trimmed = path.trim_end_matches('/');
            let trimmed = if trimmed.is_empty() { "/" } else { trimmed };
            let rebuilt = match req.uri().query() {
                Some(q) => format!("{trimmed}?{q}"),
                None => trimmed.to_string(),
            };
            if let Ok(uri) = rebuilt.parse::<Uri>() {
                *req.uri_mut() = uri;
            }
        }
        req
    }
    tower::util::MapRequestLayer::new(trim as fn(Request) -> Request)
}
