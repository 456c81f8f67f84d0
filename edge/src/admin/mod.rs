//! The admin listener: `/metrics` (Prometheus text), `/health`, `/config` (the config in
//! effect, as TOML) and `POST /reload`. Bound to loopback by default: metrics reveal traffic
//! and are not for the public. Also the client side that `edge reload` and
//! `edge --check-config` use.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use http_body_util::BodyExt as _;
use shared::admin::AdminResponse;
use shared::reload::Reloader;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::reload::EdgeReload;
use crate::service::Service;

/// Serves admin requests until `shutdown` turns true.
pub(crate) async fn serve(
    listener: TcpListener,
    service: Arc<Service>,
    reload: Arc<EdgeReload>,
    reloader: Arc<Reloader>,
    shutdown: watch::Receiver<bool>,
) {
    shared::admin::serve(
        listener,
        move |path| answer(&service, &reload, path),
        Some(reloader),
        shutdown,
    )
    .await;
}

fn answer(service: &Service, reload: &EdgeReload, path: &str) -> AdminResponse {
    match path {
        "/metrics" => AdminResponse::metrics(service.metrics().render()),
        "/health" => {
            let (status, text) = service.health_report();
            AdminResponse::text(status, &text)
        }
        "/config" => match shared::config::render(&reload.running()) {
            Ok(text) => AdminResponse::text(http::StatusCode::OK, text),
            Err(e) => AdminResponse::text(http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        },
        _ => AdminResponse::not_found(),
    }
}

/// One request to a running edge's admin listener: its status and body.
pub async fn request(
    addr: SocketAddr,
    method: http::Method,
    path: &str,
) -> anyhow::Result<(http::StatusCode, String)> {
    let stream = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tokio::net::TcpStream::connect(addr),
    )
    .await
    .map_err(|_| anyhow::anyhow!("timed out"))
    .and_then(|r| Ok(r?))
    .with_context(|| format!("cannot reach the admin listener at {addr}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, addr.to_string())
        .body(http_body_util::Empty::<bytes::Bytes>::new())?;
    // A reload waits for one under way; 60 s is far more than one takes.
    let response =
        tokio::time::timeout(std::time::Duration::from_secs(60), sender.send_request(req))
            .await
            .map_err(|_| anyhow::anyhow!("no answer from {addr} within 60 s"))??;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}
