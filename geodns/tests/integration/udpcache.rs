//! The UDP answer cache answers exactly what the handler does: every query shape is asked
//! over UDP several times (a miss, then cached hits) and over TCP (always the handler), and
//! the replies must agree; hits are counted in the metrics like misses.

use std::time::Duration;

use hickory_proto::op::Message;
use hickory_proto::rr::RecordType;

use crate::support::{Ask, Fixture, ask, counter, http_get};

fn asks() -> Vec<Ask> {
    let plain = Ask::default();
    let ecs = |s: &'static str, p| Ask {
        ecs: Some((s, p)),
        ..plain
    };
    vec![
        plain,
        Ask {
            edns: Some(1232),
            ..plain
        },
        // Above max_udp_payload: clamped.
        Ask {
            edns: Some(4096),
            ..plain
        },
        ecs("10.1.0.0", 24),
        ecs("10.2.7.0", 24),
        ecs("10.3.0.0", 16),
        // In no database network: scoped to the source prefix.
        ecs("10.77.1.0", 24),
        // The override (10.9.0.0/16 -> sin1).
        ecs("10.9.4.0", 24),
        ecs("2001:db8:1::", 56),
        // Source prefix 0: locate the resolver, no ECS in the answer.
        ecs("0.0.0.0", 0),
    ]
}

/// The parts of a reply that must agree (the ID is per query; TC only over UDP).
fn normalise(mut m: Message) -> String {
    m.metadata.id = 0;
    m.metadata.truncation = false;
    format!("{m:?}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_udp_answers_equal_the_handlers_tcp_answers() {
    // One UDP thread, so every repeat meets the cache its first query filled.
    let f = Fixture::start_with(|c| c.listen.udp_threads = 1).await;
    let names = [
        "www.cdn.test.",
        "WwW.Cdn.TEST.",
        "two.cdn.test.",
        "cdn.test.",
        "docs.cdn.test.",
        "ns1.cdn.test.",
        "missing.cdn.test.",
        "other.example.",
    ];
    let types = [
        RecordType::A,
        RecordType::AAAA,
        RecordType::TXT,
        RecordType::MX,
        RecordType::SOA,
        RecordType::NS,
    ];
    let mut compared = 0;
    for name in names {
        for qtype in types {
            for how in asks() {
                let tcp = ask(f.addr(), name, qtype, Ask { tcp: true, ..how }).await;
                let want = normalise(tcp);
                for round in 0..3 {
                    let udp = ask(f.addr(), name, qtype, how).await;
                    assert_eq!(
                        normalise(udp),
                        want,
                        "{name} {qtype} {how:?}, UDP round {round}"
                    );
                    compared += 1;
                }
            }
        }
    }
    assert_eq!(compared, 8 * 6 * 10 * 3);
    // Two of every three UDP rounds are cache hits (or all three, for names sharing a key).
    let metrics = http_get(f.server.admin_addr().unwrap(), "/metrics").await;
    let hits = counter(&metrics, |l| l.starts_with("geodns_udp_cache_hits"));
    let misses = counter(&metrics, |l| l.starts_with("geodns_udp_cache_misses"));
    eprintln!("udp cache: {hits} hits, {misses} misses");
    assert!(
        hits >= (compared * 2 / 3) as f64,
        "hits {hits}, misses {misses}"
    );
    assert!(
        misses > 0.0 && misses <= (compared / 3) as f64,
        "hits {hits}, misses {misses}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_hits_are_counted_and_follow_health_changes() {
    let f = Fixture::start().await;
    let admin = f.server.admin_addr().unwrap();
    let fra_client = Ask {
        ecs: Some(("10.1.0.0", 24)),
        ..Ask::default()
    };
    let www = |l: &str| l.contains("name=\"www.cdn.test.\"") && l.contains("qtype=\"A\"");
    let before = counter(&http_get(admin, "/metrics").await, www);
    for _ in 0..20 {
        let m = ask(f.addr(), "www.cdn.test.", RecordType::A, fra_client).await;
        assert_eq!(crate::support::addresses(&m), [crate::support::FRA]);
    }
    let after = counter(&http_get(admin, "/metrics").await, www);
    assert_eq!(after - before, 20.0, "every query counted, cached or not");

    // fra1 goes down: the cached fra1 answer must not outlive the health change.
    f.health[0].set_up(false);
    let moved = crate::support::eventually(Duration::from_secs(5), async || {
        let m = ask(f.addr(), "www.cdn.test.", RecordType::A, fra_client).await;
        crate::support::addresses(&m) != [crate::support::FRA]
    })
    .await;
    assert!(moved, "the answer still names the down POP");
    f.health[0].set_up(true);
    let back = crate::support::eventually(Duration::from_secs(5), async || {
        let m = ask(f.addr(), "www.cdn.test.", RecordType::A, fra_client).await;
        crate::support::addresses(&m) == [crate::support::FRA]
    })
    .await;
    assert!(back, "the answer did not return to fra1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_queries_is_answered_in_full_and_in_kind() {
    // One UDP thread: the burst queues up on one socket and is read and answered in batches.
    let f = Fixture::start_with(|c| c.listen.udp_threads = 1).await;
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let pops = [
        ("10.1", crate::support::FRA),
        ("10.2", crate::support::IAD),
        ("10.3", crate::support::SIN),
    ];
    // Two passes over 80 subnets: the first fills the caches, the second is answered from them.
    let mut expected = std::collections::HashMap::new();
    for pass in 0..2u16 {
        for i in 0..80u16 {
            let (net, pop) = pops[usize::from(i % 3)];
            let subnet: &'static str = format!("{net}.{i}.0").leak();
            let ask = Ask {
                ecs: Some((subnet, 24)),
                ..Ask::default()
            };
            let mut m = crate::support::message("www.cdn.test.", RecordType::A, ask);
            let id = pass * 1000 + i;
            m.metadata.id = id;
            expected.insert(id, pop);
            sock.send_to(&m.to_vec().unwrap(), f.addr()).await.unwrap();
            if i % 20 == 0 {
                // Junk in the middle of the burst gets no answer and costs the others nothing.
                sock.send_to(&[0xde, 0xad, 0xbe], f.addr()).await.unwrap();
            }
        }
    }
    let mut buf = vec![0u8; 4096];
    while !expected.is_empty() {
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), sock.recv_from(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("{} queries unanswered", expected.len()))
            .unwrap();
        let reply = Message::from_vec(&buf[..n]).unwrap();
        let pop = expected
            .remove(&reply.metadata.id)
            .unwrap_or_else(|| panic!("unexpected or repeated reply {}", reply.metadata.id));
        assert_eq!(
            crate::support::addresses(&reply),
            [pop],
            "query {}",
            reply.metadata.id
        );
    }
    // The junk datagrams are not answered, not even late.
    let late = tokio::time::timeout(Duration::from_millis(300), sock.recv_from(&mut buf)).await;
    assert!(late.is_err(), "an answer to junk: {:?}", &buf[..8]);
}
