//! A small HTTP/1.1 admin listener (`/metrics`, `/health`, `POST /reload`): each binary
//! supplies the answers and, if it reloads, its [`Reloader`].

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::reload::{Reloader, Trigger};

/// One admin answer.
#[derive(Debug, Clone)]
pub struct AdminResponse {
    pub status: StatusCode,
    pub content_type: &'static str,
    pub body: String,
}

impl AdminResponse {
    pub fn text(status: StatusCode, body: impl Into<String>) -> Self {
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
        }
    }

    /// Prometheus text exposition.
    pub fn metrics(body: String) -> Self {
        Self {
            status: StatusCode::OK,
            content_type: "application/openmetrics-text; version=1.0.0; charset=utf-8",
            body,
        }
    }

    pub fn not_found() -> Self {
        Self::text(
            StatusCode::NOT_FOUND,
            "not found: try /metrics or /health\n",
        )
    }
}

/// Serves `answer(path)` for every request until `shutdown` turns true; `POST /reload` runs
/// `reloader` (200 with its summary, 422 with the reason the new config was rejected).
pub async fn serve<F>(
    listener: TcpListener,
    answer: F,
    reloader: Option<Arc<Reloader>>,
    mut shutdown: watch::Receiver<bool>,
) where
    F: Fn(&str) -> AdminResponse + Send + Sync + 'static,
{
    let answer = Arc::new(answer);
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(_) => continue,
            },
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        let (answer, builder, reloader) = (answer.clone(), builder.clone(), reloader.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: hyper::Request<_>| {
                // Answered at once, or (`/reload` with a reloader) after the reload.
                let now = match (req.uri().path(), &reloader) {
                    ("/reload", Some(r)) => Err((r.clone(), req.method() == http::Method::POST)),
                    (path, _) => Ok(answer(path)),
                };
                async move {
                    let a = match now {
                        Ok(a) => a,
                        Err((reloader, post)) => reload_answer(&reloader, post).await,
                    };
                    Ok::<_, Infallible>(to_response(a))
                }
            });
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// `POST /reload`: 200 with what was applied, 422 with why the new config was rejected.
async fn reload_answer(reloader: &Reloader, post: bool) -> AdminResponse {
    if !post {
        return AdminResponse::text(StatusCode::METHOD_NOT_ALLOWED, "reload: use POST\n");
    }
    match reloader.reload(Trigger::Request).await {
        Ok(summary) => AdminResponse::text(StatusCode::OK, format!("reloaded: {summary}\n")),
        Err(e) => AdminResponse::text(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("reload rejected, the running configuration stays in use: {e:#}\n"),
        ),
    }
}

fn to_response(a: AdminResponse) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(a.body)));
    *response.status_mut() = a.status;
    if let Ok(v) = a.content_type.parse() {
        response.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    response
}
