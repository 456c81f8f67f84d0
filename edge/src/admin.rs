//! The admin listener: `/metrics` (Prometheus text) and `/health`. Bound to loopback by
//! default: metrics reveal traffic and are not for the public.

use std::sync::Arc;

use shared::admin::AdminResponse;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::service::Service;

/// Serves admin requests until `shutdown` turns true.
pub async fn serve(listener: TcpListener, service: Arc<Service>, shutdown: watch::Receiver<bool>) {
    shared::admin::serve(listener, move |path| answer(&service, path), shutdown).await;
}

fn answer(service: &Service, path: &str) -> AdminResponse {
    match path {
        "/metrics" => AdminResponse::metrics(service.metrics().render()),
        "/health" => {
            let (status, text) = service.health_report();
            AdminResponse::text(status, &text)
        }
        _ => AdminResponse::not_found(),
    }
}
