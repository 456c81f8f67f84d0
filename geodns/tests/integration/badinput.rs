//! Bad input is logged rate-limited: the binary under a stream of malformed EDNS options and
//! invalid ECS from one client writes a handful of lines with counts, not one per packet,
//! still answers each packet as before, and a second client's bad packet gets its own line.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};

use crate::support::{Binary, HealthServer, IAD, addresses, config, write_db};

/// `www.cdn.test. A` with an OPT record whose RDATA is `opt`.
fn query(id: u16, opt: &[u8]) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x00, 0x00, 0, 1, 0, 0, 0, 0, 0, 1]);
    for label in ["www", "cdn", "test"] {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    // OPT: root, type 41, payload 1232, no extended RCODE, version 0, no flags.
    q.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0]);
    q.extend_from_slice(&(opt.len() as u16).to_be_bytes());
    q.extend_from_slice(opt);
    q
}

/// A COOKIE option that claims 4 bytes and has 2: hickory drops the options (with a warning
/// per packet before) and answers as if there were none.
const MALFORMED: &[u8] = &[0, 10, 0, 4, 1, 2];
/// ECS with a scope prefix set in a query: FORMERR (RFC 7871 7.1.1).
const ECS_SCOPE: &[u8] = &[0, 8, 0, 7, 0, 1, 24, 8, 10, 1, 2];

/// The log lines about `client`'s bad queries.
fn bad_lines<'a>(log: &'a [String], client: &str) -> Vec<&'a String> {
    log.iter()
        .filter(|l| l.contains("bad_input") && l.contains(&format!("client={client} ")))
        .collect()
}

/// Bad queries the log accounts for from `client`: 1 per immediate line, the count of each
/// summary line.
fn accounted(log: &[String], client: &str) -> u64 {
    bad_lines(log, client)
        .iter()
        .map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("count="))
                .map_or(1, |n| n.parse::<u64>().unwrap())
        })
        .sum()
}

fn exchange(sock: &UdpSocket, packet: &[u8]) -> Vec<u8> {
    sock.send(packet).unwrap();
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).expect("geodns answers within 3 s");
    buf[..n].to_vec()
}

fn client(src: [u8; 4], server: SocketAddr) -> UdpSocket {
    let s = UdpSocket::bind((std::net::Ipv4Addr::from(src), 0)).unwrap();
    s.connect(server).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_queries_are_logged_once_per_client_per_interval_with_a_count() {
    let dir = tempfile::tempdir().unwrap();
    let db = write_db(dir.path());
    let h = HealthServer::three().await;
    let mut cfg = config(&db, [&h[0].url, &h[1].url, &h[2].url]);
    cfg.log.bad_input_interval = Duration::from_secs(1);
    // RUST_LOG=info lets hickory-proto's own warnings through: they must not appear either.
    let mut g = Binary::start(dir.path(), &cfg);
    let server = g.dns;

    let one = client([127, 0, 0, 1], server);
    // The answer to a query with a well-formed, empty OPT is what the malformed ones get.
    let clean = exchange(&one, &query(7, &[]));
    let reply = Message::from_vec(&clean).unwrap();
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert_eq!(addresses(&reply), [IAD]);
    assert!(reply.edns.is_some());

    const MALFORMED_N: u64 = 2000;
    const ECS_N: u64 = 50;
    for _ in 0..MALFORMED_N {
        assert_eq!(exchange(&one, &query(7, MALFORMED)), clean);
    }
    for i in 0..ECS_N {
        let reply = Message::from_vec(&exchange(&one, &query(i as u16, ECS_SCOPE))).unwrap();
        assert_eq!(reply.metadata.id, i as u16);
        assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);
    }
    let two = client([127, 0, 0, 2], server);
    let reply = Message::from_vec(&exchange(&two, &query(9, MALFORMED))).unwrap();
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);

    // Everything from the first client is accounted for within a few intervals.
    let want = MALFORMED_N + ECS_N;
    let start = Instant::now();
    while (accounted(&g.log, "127.0.0.1") < want || bad_lines(&g.log, "127.0.0.2").is_empty())
        && start.elapsed() < Duration::from_secs(15)
    {
        g.read(Duration::from_millis(200));
    }
    let log = g.log.join("\n");
    assert_eq!(accounted(&g.log, "127.0.0.1"), want, "log:\n{log}");
    let first = bad_lines(&g.log, "127.0.0.1");
    assert!(
        (2..=8).contains(&first.len()),
        "{} lines for one client's bad queries:\n{log}",
        first.len()
    );
    assert!(first[0].contains("EDNS options"), "{}", first[0]);
    assert!(
        first.iter().any(|l| l.contains("last_reason=ECS")),
        "the summary has the last reason:\n{log}"
    );
    // The second client: its own line, logged at once.
    let second = bad_lines(&g.log, "127.0.0.2");
    assert_eq!(second.len(), 1, "log:\n{log}");
    assert!(!second[0].contains("count="), "{}", second[0]);
    // hickory-proto's per-packet warning is not written.
    let hickory = g
        .log
        .iter()
        .filter(|l| l.contains("poorly formatted") && !l.contains("bad_input"))
        .count();
    assert_eq!(hickory, 0, "log:\n{log}");
    assert!(g.log.len() < 40, "{} log lines:\n{log}", g.log.len());
}
