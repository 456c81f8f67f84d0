//! Authoritative behaviour and geo answers over UDP and TCP.

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, RecordType};

use crate::support::{Ask, FRA, FRA6, Fixture, IAD, SIN, addresses, ask, ecs, exchange_raw};

const UDP: Ask = Ask {
    tcp: false,
    edns: None,
    ecs: None,
};

fn with_ecs(subnet: &'static str, prefix: u8) -> Ask {
    Ask {
        ecs: Some((subnet, prefix)),
        ..UDP
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_client_subnet_gets_its_nearest_pop_with_an_ecs_scope() {
    let f = Fixture::start().await;
    for tcp in [false, true] {
        for (subnet, pop) in [
            ("10.1.2.0", FRA),
            ("10.2.7.0", IAD),
            ("10.3.0.0", SIN),
            ("10.4.1.0", FRA),
        ] {
            let how = Ask {
                tcp,
                ..with_ecs(subnet, 24)
            };
            let r = ask(f.addr(), "www.cdn.test.", RecordType::A, how).await;
            assert_eq!(r.metadata.response_code, ResponseCode::NoError);
            assert!(r.metadata.authoritative, "AA");
            assert_eq!(addresses(&r), [pop], "{subnet} tcp={tcp}");
            assert_eq!(r.answers[0].ttl, 30, "short geo TTL");
            assert_eq!(ecs(&r), Some((24, 16)), "scope = the database network");
        }
    }
    let r = ask(
        f.addr(),
        "www.cdn.test.",
        RecordType::AAAA,
        with_ecs("2001:db8:1:2::", 56),
    )
    .await;
    assert_eq!(addresses(&r), [FRA6]);
    assert_eq!(ecs(&r), Some((56, 48)));
    // Only Frankfurt has IPv6; the POP nearest to Singapore has none: NODATA for AAAA (the
    // client falls back to A), not Frankfurt's address from the other side of the world.
    let r = ask(
        f.addr(),
        "www.cdn.test.",
        RecordType::AAAA,
        with_ecs("10.3.0.0", 24),
    )
    .await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert!(r.answers.is_empty(), "{:?}", r.answers);
    let r = ask(
        f.addr(),
        "two.cdn.test.",
        RecordType::A,
        with_ecs("10.4.0.0", 24),
    )
    .await;
    assert_eq!(addresses(&r), [FRA, IAD], "answers = 2: nearest first");
    assert_eq!(r.answers[0].ttl, 20);
    f.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_ecs_the_resolver_address_locates_the_client() {
    let f = Fixture::start().await;
    // 127.0.0.1 is not in the database: the default order's first POP.
    let r = ask(f.addr(), "www.cdn.test.", RecordType::A, UDP).await;
    assert_eq!(addresses(&r), [IAD]);
    assert_eq!(ecs(&r), None, "no ECS asked, none answered");
    // An override beats the database.
    let r = ask(
        f.addr(),
        "www.cdn.test.",
        RecordType::A,
        with_ecs("10.9.1.0", 24),
    )
    .await;
    assert_eq!(addresses(&r), [SIN]);
    assert_eq!(ecs(&r), Some((24, 16)));
    // A client subnet the database does not know: the fallback POP, valid for that subnet
    // only (scope = source prefix), never for every client (scope 0).
    let r = ask(
        f.addr(),
        "www.cdn.test.",
        RecordType::A,
        with_ecs("192.0.2.0", 24),
    )
    .await;
    assert_eq!(addresses(&r), [IAD]);
    assert_eq!(ecs(&r), Some((24, 24)));
    // A static answer does not depend on the client: scope 0.
    let r = ask(
        f.addr(),
        "ns1.cdn.test.",
        RecordType::A,
        with_ecs("10.1.0.0", 24),
    )
    .await;
    assert_eq!(ecs(&r), Some((24, 0)));
    // Source prefix 0: the resolver asks us not to use client information.
    let r = ask(
        f.addr(),
        "www.cdn.test.",
        RecordType::A,
        with_ecs("0.0.0.0", 0),
    )
    .await;
    assert_eq!(addresses(&r), [IAD]);
    f.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_records_nxdomain_nodata_refused_and_case() {
    let f = Fixture::start().await;
    let a = f.addr();
    let r = ask(a, "ns1.cdn.test.", RecordType::A, UDP).await;
    assert_eq!(addresses(&r), ["192.0.2.53"]);
    let r = ask(a, "cdn.test.", RecordType::TXT, UDP).await;
    assert!(
        matches!(&r.answers[0].data, RData::TXT(t) if t.to_string() == "hello"),
        "{r:?}"
    );
    let r = ask(a, "cdn.test.", RecordType::MX, UDP).await;
    assert!(matches!(&r.answers[0].data, RData::MX(mx) if mx.preference == 10));
    let r = ask(a, "cdn.test.", RecordType::CAA, UDP).await;
    assert_eq!(r.answers.len(), 1);
    let r = ask(a, "cdn.test.", RecordType::SOA, UDP).await;
    assert!(matches!(&r.answers[0].data, RData::SOA(soa) if soa.serial == 7));
    let r = ask(a, "CDN.TEST.", RecordType::NS, UDP).await;
    assert_eq!(r.answers.len(), 1, "case-insensitive");
    let mut glue = r.clone();
    glue.answers = r.additionals.clone();
    assert_eq!(addresses(&glue), ["192.0.2.53"], "glue");

    let r = ask(a, "nope.cdn.test.", RecordType::A, UDP).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    assert!(r.metadata.authoritative);
    assert!(
        matches!(r.authorities[0].data, RData::SOA(_)),
        "SOA in authority"
    );
    assert_eq!(r.authorities[0].ttl, 60, "negative TTL = SOA minimum");

    let r = ask(a, "ns1.cdn.test.", RecordType::MX, UDP).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError, "NODATA");
    assert!(r.answers.is_empty());
    assert!(matches!(r.authorities[0].data, RData::SOA(_)));

    let r = ask(a, "example.org.", RecordType::A, UDP).await;
    assert_eq!(r.metadata.response_code, ResponseCode::Refused);
    assert!(!r.metadata.authoritative);

    let r = ask(a, "docs.cdn.test.", RecordType::A, with_ecs("10.3.0.0", 24)).await;
    assert!(matches!(r.answers[0].data, RData::CNAME(_)));
    assert_eq!(addresses(&r), [SIN], "CNAME followed to the geo name");

    let r = ask(a, "cdn.test.", RecordType::ANY, UDP).await;
    let types: std::collections::HashSet<_> = r.answers.iter().map(|r| r.record_type()).collect();
    assert_eq!(types.len(), 1, "RFC 8482: one RRset for ANY, got {types:?}");
    f.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_answers_truncate_over_udp_and_complete_over_tcp() {
    let f = Fixture::start().await;
    let plain = ask(f.addr(), "big.cdn.test.", RecordType::TXT, UDP).await;
    assert!(
        plain.metadata.truncation,
        "600+ bytes do not fit 512 without EDNS"
    );
    let tcp = ask(
        f.addr(),
        "big.cdn.test.",
        RecordType::TXT,
        Ask { tcp: true, ..UDP },
    )
    .await;
    assert!(!tcp.metadata.truncation);
    assert_eq!(tcp.answers.len(), 3, "the retry over TCP gets everything");
    let edns = ask(
        f.addr(),
        "big.cdn.test.",
        RecordType::TXT,
        Ask {
            edns: Some(1232),
            ..UDP
        },
    )
    .await;
    assert!(!edns.metadata.truncation, "EDNS 1232 is enough");
    assert_eq!(edns.answers.len(), 3);
    let edns = ask(
        f.addr(),
        "big.cdn.test.",
        RecordType::TXT,
        Ask {
            edns: Some(4096),
            ..UDP
        },
    )
    .await;
    assert_eq!(
        edns.edns.as_ref().unwrap().max_payload(),
        1232,
        "capped at 1232"
    );
    f.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_is_answered_formerr_or_dropped_and_the_server_carries_on() {
    let f = Fixture::start().await;
    // A valid header claiming one question, then junk.
    let mut junk = vec![0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0];
    junk.extend_from_slice(&[0xff; 7]);
    for tcp in [false, true] {
        let raw = exchange_raw(f.addr(), &junk, tcp)
            .await
            .expect("FORMERR reply");
        let reply = hickory_proto::op::Message::from_vec(&raw).unwrap();
        assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);
        assert_eq!(reply.metadata.id, 0x1234);
    }
    // Shorter than a header: nothing to answer to.
    assert!(
        exchange_raw(f.addr(), b"\x01\x02\x03", false)
            .await
            .is_none()
    );
    // A truncated question (name cut short).
    let q = crate::support::message("www.cdn.test.", RecordType::A, UDP)
        .to_vec()
        .unwrap();
    let cut = &q[..q.len() - 3];
    if let Some(raw) = exchange_raw(f.addr(), cut, false).await {
        let reply = hickory_proto::op::Message::from_vec(&raw).unwrap();
        assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);
    }
    // An ECS prefix longer than the address family: FORMERR (RFC 7871 7.1.2). hickory will
    // not encode one, so patch the SOURCE PREFIX-LENGTH byte of a /24 option.
    let mut q = crate::support::message("www.cdn.test.", RecordType::A, with_ecs("10.1.0.0", 24))
        .to_vec()
        .unwrap();
    let option = [0x00, 0x08, 0x00, 0x07, 0x00, 0x01, 24, 0];
    let at = q
        .windows(option.len())
        .position(|w| w == option)
        .expect("ECS option bytes");
    q[at + 6] = 33;
    let raw = exchange_raw(f.addr(), &q, false).await.expect("a reply");
    let reply = hickory_proto::op::Message::from_vec(&raw).unwrap();
    assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);
    let r = ask(
        f.addr(),
        "www.cdn.test.",
        RecordType::A,
        with_ecs("10.1.0.0", 24),
    )
    .await;
    assert_eq!(addresses(&r), [FRA], "still serving");
    f.server.shutdown().await;
}
