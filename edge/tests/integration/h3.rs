//! HTTP/3-specific behaviour: stream isolation on one connection and graceful shutdown.

use std::time::Duration;

use bytes::Bytes;
use http::Request;

use crate::support::edge::{Proto, TestEdge};
use crate::support::h3client::H3Client;
use crate::support::origin::{Reply, TestOrigin};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_the_client_abandons_does_not_hurt_the_others() {
    let origin = TestOrigin::start().await;
    origin.route(
        "/big",
        Reply::generated(16 << 20).header("cache-control", "max-age=60"),
    );
    origin.route(
        "/small",
        Reply::ok("still fine").header("cache-control", "max-age=60"),
    );
    let edge = TestEdge::start(&origin.url()).await;
    let client = H3Client::new(&edge.cert_der());
    let big = Request::get(edge.url(Proto::H3, "/big"))
        .body(Bytes::new())
        .unwrap();
    let mut abandoned = client.send(big).await.unwrap();
    assert_eq!(abandoned.parts.status, 200);
    assert!(abandoned.chunk().await.unwrap().is_some());
    // Dropping the stream mid-body sends STOP_SENDING for it alone.
    drop(abandoned);
    for _ in 0..3 {
        let small = Request::get(edge.url(Proto::H3, "/small"))
            .body(Bytes::new())
            .unwrap();
        let mut r = client.send(small).await.unwrap();
        assert_eq!(r.parts.status, 200);
        let mut body = Vec::new();
        while let Some(chunk) = r.chunk().await.unwrap() {
            body.extend_from_slice(&chunk);
        }
        assert_eq!(body, b"still fine");
    }
    // The abandoned fill still completed for the next viewer.
    let (_, len) = edge
        .client(Proto::H3)
        .get_streaming(&edge.url(Proto::H3, "/big"), |_| {})
        .await
        .unwrap();
    assert_eq!(len, 16 << 20);
    assert_eq!(origin.hits("/big"), 1);
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_in_flight_http3_requests_finish() {
    let origin = TestOrigin::start().await;
    origin.route(
        "/slow",
        Reply::generated(2 << 20)
            .header("cache-control", "max-age=60")
            .delay(Duration::from_millis(700)),
    );
    let edge = TestEdge::start(&origin.url()).await;
    let url = edge.url(Proto::H3, "/slow");
    let client = edge.client(Proto::H3);
    let in_flight = tokio::spawn(async move { client.get_streaming(&url, |_| {}).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let h3_addr = edge.running.h3_addr().unwrap();
    let cert = edge.cert_der();
    let started = std::time::Instant::now();
    edge.stop().await;
    let (head, len) = in_flight
        .await
        .unwrap()
        .expect("in-flight request completes");
    assert_eq!(head.status, 200);
    assert_eq!(len, 2 << 20);
    assert!(started.elapsed() < Duration::from_secs(5));
    // After shutdown the endpoint is closed: a new connection fails.
    let late = H3Client::new(&cert);
    let req = Request::get(format!("https://localhost:{}/slow", h3_addr.port()))
        .body(Bytes::new())
        .unwrap();
    let refused = tokio::time::timeout(Duration::from_secs(3), late.send(req)).await;
    assert!(
        !matches!(refused, Ok(Ok(_))),
        "no new requests after shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_datagrams_do_not_disturb_the_quic_endpoint() {
    let origin = TestOrigin::start().await;
    origin.route("/ok", Reply::ok("ok").header("cache-control", "max-age=60"));
    let edge = TestEdge::start(&origin.url()).await;
    let client = edge.client(Proto::H3);
    assert_eq!(client.get(&edge.url(Proto::H3, "/ok")).await.text(), "ok");
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let target = edge.running.h3_addr().unwrap();
    // Short junk, a fake long-header Initial with nonsense, and a max-size blob.
    let mut junk = vec![0xc3u8, 0, 0, 0, 1, 8];
    junk.extend(std::iter::repeat_n(0x5a, 1200));
    for datagram in [&b"hello"[..], &junk, &[0xffu8; 1500][..]] {
        socket.send_to(datagram, target).await.unwrap();
    }
    // The existing connection and a new one both keep working.
    assert_eq!(client.get(&edge.url(Proto::H3, "/ok")).await.text(), "ok");
    let fresh = edge.client(Proto::H3);
    assert_eq!(fresh.get(&edge.url(Proto::H3, "/ok")).await.text(), "ok");
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_does_not_hold_up_shutdown() {
    let origin = TestOrigin::start().await;
    let edge = TestEdge::start_with(&origin.url(), |c| {
        c.listen.shutdown_grace = Duration::from_secs(10);
    })
    .await;
    // A client that completes the QUIC handshake, then neither sends requests nor closes:
    // a load generator that was killed, a phone that went to sleep.
    let mut tls = crate::support::client::pinned_client_config(Some(&edge.cert_der()));
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let tls = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(std::sync::Arc::new(tls)));
    let conn = endpoint
        .connect(edge.running.h3_addr().unwrap(), "localhost")
        .unwrap()
        .await
        .expect("QUIC handshake");
    tokio::time::sleep(Duration::from_millis(200)).await;

    let started = std::time::Instant::now();
    edge.stop().await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "shutdown waited {took:?} for an idle client instead of closing it"
    );
    // The edge closed the connection itself, with H3_NO_ERROR (0x100).
    match tokio::time::timeout(Duration::from_secs(2), conn.closed()).await {
        Ok(quinn::ConnectionError::ApplicationClosed(close)) => {
            assert_eq!(close.error_code, quinn::VarInt::from_u32(0x100))
        }
        other => panic!("expected an application close, got {other:?}"),
    }
}
