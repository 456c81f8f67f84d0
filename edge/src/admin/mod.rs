//! The admin listener: `/metrics` (Prometheus text), `/health`, `/config` (the config in
//! effect, as TOML, secrets redacted), `POST /reload`, and the control API: `POST /purge` and
//! `POST /prewarm` ([`api`]), authorized by bearer tokens ([`auth`]). Bound to loopback by
//! default: metrics reveal traffic and are not for the public. Also the client side that
//! `edge reload`, `edge purge`, `edge prewarm` and `edge --check-config` use.
//!
//! - `api.rs`: the request bodies and the answers.
//! - `auth.rs`: the tokens, and the loopback rule when there are none.

pub mod api;
mod auth;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use http::{Method, StatusCode};
use http_body_util::BodyExt as _;
use shared::admin::{AdminRequest, AdminResponse};
use shared::reload::Reloader;
use tokio::net::TcpListener;
use tokio::sync::watch;

use self::auth::Scope;
pub(crate) use self::auth::{Tokens, error_json};
use crate::config::Verb;
use crate::control::Control;
use crate::reload::EdgeReload;
use crate::service::Service;

/// What the admin listener answers from.
pub(crate) struct Admin {
    pub service: Arc<Service>,
    pub reload: Arc<EdgeReload>,
    pub reloader: Arc<Reloader>,
    pub control: Arc<Control>,
}

/// Serves admin requests until `shutdown` turns true.
pub(crate) async fn serve(listener: TcpListener, admin: Admin, shutdown: watch::Receiver<bool>) {
    let admin = Arc::new(admin);
    shared::admin::serve(
        listener,
        move |req| {
            let admin = admin.clone();
            async move { admin.answer(req).await }
        },
        shutdown,
    )
    .await;
}

impl Admin {
    async fn answer(&self, req: AdminRequest) -> AdminResponse {
        match req.path.as_str() {
            "/metrics" => AdminResponse::metrics(self.service.metrics().render()),
            "/health" => {
                let (status, text) = self.service.health_report();
                AdminResponse::text(status, &text)
            }
            "/config" => match shared::config::render(&self.reload.running()) {
                Ok(text) => AdminResponse::text(StatusCode::OK, text),
                Err(e) => AdminResponse::text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            },
            "/reload" => {
                if let Some(refused) = self.limited(&req) {
                    return refused;
                }
                if let Err(refused) = self.authorize(&req, Verb::Reload, &Scope::Edge) {
                    return refused;
                }
                shared::admin::reload_answer(&self.reloader, &req.method).await
            }
            "/purge" => self.command(&req, Verb::Purge, api::purge).await,
            "/prewarm" => self.command(&req, Verb::Prewarm, api::prewarm).await,
            _ => AdminResponse::not_found(),
        }
    }

    /// `POST /purge` and `POST /prewarm`: checked, authorized, submitted, answered.
    async fn command(
        &self,
        req: &AdminRequest,
        verb: Verb,
        parse: fn(&[u8]) -> Result<api::Checked, String>,
    ) -> AdminResponse {
        if req.method != Method::POST {
            return AdminResponse::method_not_allowed(&req.path, Method::POST);
        }
        if let Some(refused) = self.limited(req) {
            return refused;
        }
        let checked = match parse(&req.body) {
            Ok(c) => c,
            Err(reason) => {
                return AdminResponse::json(StatusCode::BAD_REQUEST, error_json(&reason));
            }
        };
        let caller = match self.authorize(req, verb, &checked.scope) {
            Ok(caller) => caller,
            Err(refused) => return refused,
        };
        let (id, issued_ms) = (checked.command.id().to_owned(), checked.command.issued_ms());
        tracing::info!(%caller, verb = verb.as_str(), %id, command = ?checked.command, "control command accepted");
        let submitted = self.control.submit(checked.command, checked.wait).await;
        let answer = api::Answer::new(submitted, self.control.pop(), issued_ms);
        // 202: accepted, but not every POP has applied it yet. 503: the bus did not take it,
        // so only this POP applied it (the body says what it did).
        let status = match (&answer.error, answer.pending.is_empty()) {
            (Some(_), _) => StatusCode::SERVICE_UNAVAILABLE,
            (None, true) => StatusCode::OK,
            (None, false) => StatusCode::ACCEPTED,
        };
        match serde_json::to_string_pretty(&answer) {
            Ok(json) => AdminResponse::json(status, json + "\n"),
            Err(e) => AdminResponse::json(
                StatusCode::INTERNAL_SERVER_ERROR,
                error_json(&e.to_string()),
            ),
        }
    }

    /// `429` when the caller is over `[admin] rate_limit` (before its token is looked at).
    fn limited(&self, req: &AdminRequest) -> Option<AdminResponse> {
        let limit = self.service.admin_limit()?;
        let wait = limit.check(req.peer.ip())?;
        tracing::warn!(peer = %req.peer, path = %req.path, "admin call over its rate limit");
        let (text, headers) = limit.refusal_parts(wait, "admin calls");
        let refused = AdminResponse::text(StatusCode::TOO_MANY_REQUESTS, text);
        Some(
            headers
                .into_iter()
                .filter_map(|(name, value)| Some((name?, value)))
                .fold(refused, |r, (name, value)| r.with_header(name, value)),
        )
    }

    fn authorize(
        &self,
        req: &AdminRequest,
        verb: Verb,
        scope: &Scope,
    ) -> Result<auth::Caller, AdminResponse> {
        let tokens = self.reload.tokens();
        tokens.authorize(&req.headers, req.peer, verb, scope).map_err(|refusal| {
            tracing::warn!(peer = %req.peer, verb = verb.as_str(), reason = ?refusal, "admin request refused");
            refusal.response()
        })
    }
}

/// One request to a running edge's admin listener: its status and body.
pub async fn request(
    addr: SocketAddr,
    method: Method,
    path: &str,
) -> anyhow::Result<(StatusCode, String)> {
    request_with(
        addr,
        method,
        path,
        &[],
        bytes::Bytes::new(),
        Duration::from_secs(60),
    )
    .await
}

/// As [`request`], with headers and a body, waiting up to `timeout` for the answer.
pub async fn request_with(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(http::HeaderName, String)],
    body: bytes::Bytes,
    timeout: Duration,
) -> anyhow::Result<(StatusCode, String)> {
    let stream = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| anyhow::anyhow!("timed out"))
        .and_then(|r| Ok(r?))
        .with_context(|| format!("cannot reach the admin listener at {addr}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, addr.to_string());
    for (name, value) in headers {
        req = req.header(name, value);
    }
    if !body.is_empty() {
        req = req.header(http::header::CONTENT_TYPE, "application/json");
    }
    let req = req.body(http_body_util::Full::new(body))?;
    let secs = timeout.as_secs();
    let response = tokio::time::timeout(timeout, sender.send_request(req))
        .await
        .map_err(|_| anyhow::anyhow!("no answer from {addr} within {secs} s"))??;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}
