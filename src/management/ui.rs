//! The management web UI: plain HTML, CSS and JavaScript modules from
//! `ui/static/`, embedded in the binary at build time (no build step, no
//! network at run time) and served at `/` and `/ui/...` by the management
//! listener. The files are public, as RabbitMQ's are; everything they show
//! comes from the API, with the user's own credentials.

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use include_dir::{include_dir, Dir};

use super::AppState;

static FILES: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/ui/static");

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { file("index.html") }))
        .route(
            "/ui/{*path}",
            get(|Path(p): Path<String>| async move { file(&p) }),
        )
}

/// An embedded file with its content type, or a 404.
fn file(path: &str) -> Response {
    let Some(f) = FILES.get_file(path) else {
        return super::error::ApiError::not_found().into_response();
    };
    let kind = match path.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        _ => "text/plain; charset=utf-8",
    };
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, kind),
            // A new binary may serve new files under the same names.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        f.contents(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use axum::http::{header, StatusCode};

    #[test]
    fn files_are_served_with_their_types_and_others_are_404() {
        let index = super::file("index.html");
        assert_eq!(index.status(), StatusCode::OK);
        assert_eq!(
            index.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
        let js = super::file("pages/queue.js");
        assert_eq!(
            js.headers()[header::CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );
        assert_eq!(super::file("vendor/uPlot.min.css").status(), StatusCode::OK);
        assert_eq!(super::file("../Cargo.toml").status(), StatusCode::NOT_FOUND);
        assert_eq!(super::file("nope.js").status(), StatusCode::NOT_FOUND);
    }
}
