//! The API's one error type: an HTTP status with RabbitMQ's JSON body
//! `{"error": ..., "reason": ...}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::protocol::{AmqpError, ErrorKind};

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// RabbitMQ's error type (`not_found`, `bad_request`, ...).
    pub error: &'static str,
    /// Human text.
    pub reason: String,
}

/// What handlers return.
pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    /// 400 with a reason.
    pub fn bad_request(reason: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            error: "bad_request",
            reason: reason.into(),
        }
    }

    /// 404, as RabbitMQ words it.
    pub fn not_found() -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            error: "Object Not Found",
            reason: "Not Found".into(),
        }
    }

    /// 404 for a parameter of a vhost that does not exist, as RabbitMQ
    /// words it.
    pub fn vhost_not_found() -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            error: "not_found",
            reason: "vhost_not_found".into(),
        }
    }

    /// 401 with a reason.
    pub fn unauthorized(reason: &str) -> Self {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            error: "not_authorized",
            reason: reason.into(),
        }
    }

    /// 401 for a user that lacks a tag or a vhost's permissions
    /// (RabbitMQ spells this one `not_authorised`).
    pub fn not_authorised(reason: &str) -> Self {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            error: "not_authorised",
            reason: reason.into(),
        }
    }

    /// 405 for a method a route does not take.
    pub fn method_not_allowed() -> Self {
        ApiError {
            status: StatusCode::METHOD_NOT_ALLOWED,
            error: "method_not_allowed",
            reason: "method not allowed".into(),
        }
    }

    /// 500 (the store failed).
    pub fn internal(reason: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            error: "internal_error",
            reason: reason.into(),
        }
    }
}

impl From<AmqpError> for ApiError {
    /// A broker refusal as the API reports it: RabbitMQ answers a failed
    /// declare or delete with 400 and the AMQP error text, a missing
    /// object with 404.
    fn from(e: AmqpError) -> Self {
        match e.kind {
            ErrorKind::NotFound => ApiError {
                status: StatusCode::NOT_FOUND,
                error: "not_found",
                reason: e.text,
            },
            ErrorKind::AccessRefused => ApiError {
                status: StatusCode::FORBIDDEN,
                error: "access_refused",
                reason: e.text,
            },
            ErrorKind::InternalError => ApiError::internal(e.text),
            _ => ApiError::bad_request(e.text),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({"error": self.error, "reason": self.reason}));
        (self.status, body).into_response()
    }
}
