//! Who is calling: HTTP Basic credentials checked against the broker's
//! users, and RabbitMQ's tag rules (any of administrator, monitoring,
//! policymaker, management lets a user in; some routes need more).

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use base64::Engine;

use super::error::ApiError;
use super::AppState;
use crate::auth::attempts::AuthProtocol;

/// The tags RabbitMQ's management plugin knows.
const MANAGEMENT_TAGS: &[&str] = &["administrator", "monitoring", "policymaker", "management"];

/// An authenticated management user.
#[derive(Clone, Debug)]
pub struct Caller {
    /// User name.
    pub name: String,
    /// Its tags.
    pub tags: Vec<String>,
}

impl Caller {
    fn has(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
    }

    /// Whether the user is an administrator.
    pub fn is_admin(&self) -> bool {
        self.has("administrator")
    }

    /// Administrators manage users, vhosts, permissions and definitions.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        match self.has("administrator") {
            true => Ok(()),
            false => Err(ApiError::not_authorised("Not administrator user")),
        }
    }

    /// Monitoring users (and administrators) see every connection and
    /// node statistics.
    pub fn is_monitor(&self) -> bool {
        self.has("administrator") || self.has("monitoring")
    }

    /// Policymakers (and administrators) set policies and parameters.
    pub fn require_policymaker(&self) -> Result<(), ApiError> {
        match self.has("administrator") || self.has("policymaker") {
            true => Ok(()),
            false => Err(ApiError::not_authorised("Not policymaker user")),
        }
    }

    /// Whether this user may see an object owned by `user` (a
    /// connection, a channel): monitors see all, others their own.
    pub fn may_see_user(&self, user: &str) -> bool {
        self.is_monitor() || self.name == user
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let (user, password) = basic_credentials(parts).ok_or_else(login_failed)?;
        let access = &state.broker.access;
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>();
        let address = peer.map_or(IpAddr::from([0, 0, 0, 0]), |p| p.0.ip().to_canonical());
        let login = access.login(&user, &password, address.is_loopback());
        access
            .attempts
            .record(AuthProtocol::Http, login.is_ok(), &user, address);
        match login {
            Ok(()) => {}
            Err("loopback-only user") => {
                return Err(ApiError::unauthorized("User can only log in via localhost"))
            }
            Err(why) => {
                tracing::info!(user = %user, %address, why, "management login refused");
                return Err(login_failed());
            }
        }
        let tags = access.tags(&user).unwrap_or_default();
        if !tags.iter().any(|t| MANAGEMENT_TAGS.contains(&t.as_str())) {
            return Err(ApiError::not_authorised("Not management user"));
        }
        Ok(Caller { name: user, tags })
    }
}

fn login_failed() -> ApiError {
    ApiError::unauthorized("Login failed")
}

/// User and password from an `Authorization: Basic` header.
fn basic_credentials(parts: &Parts) -> Option<(String, String)> {
    let header = parts.headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = header.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}
