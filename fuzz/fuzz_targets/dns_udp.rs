//! geodns over UDP, end to end: the fast path (the query parser, the per-thread answer cache,
//! answers assembled from cache entries) and the hickory handler behind it, through a real
//! server started with `geodns::server::start` on loopback. The UDP module itself is private,
//! so this is the only way to reach it through the public API.
//!
//! Two servers run with the same config (src/lib.rs `geodns_config`): A as deployed, and B
//! with `log.query_log = true`, which sends every query to the handler (the fast path is off
//! while queries are logged). Every packet goes to both, twice to A (the second time usually
//! from A's cache), and all replies must be byte-identical: the cache promises to answer
//! exactly what the handler would. A panic in a server thread aborts the process, so it is
//! caught like one in the target.
//!
//! Input: up to 4 packets, each `u16 big-endian header, packet`. The header's low 15 bits
//! are the packet's length (the last packet takes whatever is left), bit 15 picks the source
//! address (127.0.0.1, located in the database, or 127.0.0.2, which has an override).
#![no_main]

use std::net::{SocketAddr, UdpSocket};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use geodns::server::RunningGeoDns;
use libfuzzer_sys::fuzz_target;

struct Harness {
    _runtime: tokio::runtime::Runtime,
    _servers: [RunningGeoDns; 2],
    /// [source][server]: sockets connected to A and B from each source address.
    clients: [[UdpSocket; 2]; 2],
    ping_id: u16,
}

fn harness() -> &'static Mutex<Harness> {
    static H: OnceLock<Mutex<Harness>> = OnceLock::new();
    H.get_or_init(|| {
        let db = quicdn_fuzz::write_city_db();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let start = |query_log: bool| {
            let mut config = quicdn_fuzz::geodns_config(&db);
            config.log.query_log = query_log;
            runtime
                .block_on(geodns::server::start(config, None))
                .expect("geodns starts")
        };
        let servers = [start(false), start(true)];
        let addrs: [SocketAddr; 2] = [servers[0].dns_addr(), servers[1].dns_addr()];
        let client = |src: [u8; 4], to: SocketAddr| {
            let s = UdpSocket::bind((std::net::Ipv4Addr::from(src), 0)).unwrap();
            s.connect(to).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s
        };
        let clients = [
            [
                client([127, 0, 0, 1], addrs[0]),
                client([127, 0, 0, 1], addrs[1]),
            ],
            [
                client([127, 0, 0, 2], addrs[0]),
                client([127, 0, 0, 2], addrs[1]),
            ],
        ];
        Mutex::new(Harness {
            _runtime: runtime,
            _servers: servers,
            clients,
            ping_id: 0,
        })
    })
}

/// `ping.cdn.test. A`, no EDNS: answered by every server, and in order after what was sent
/// before it on the same socket (one UDP thread per server answers in arrival order).
fn ping(id: u16) -> Vec<u8> {
    let mut p = id.to_be_bytes().to_vec();
    p.extend_from_slice(&[0x00, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in ["ping", "cdn", "test"] {
        p.push(label.len() as u8);
        p.extend_from_slice(label.as_bytes());
    }
    p.extend_from_slice(&[0, 0, 1, 0, 1]);
    p
}

impl Harness {
    /// Sends `packet` then a ping on `socket`; returns the replies that came before the ping's.
    fn exchange(socket: &UdpSocket, packet: &[u8], ping_id: u16) -> Vec<Vec<u8>> {
        // Sending an empty datagram is fine; the server reads a zero-length query and drops it.
        send(socket, packet);
        send(socket, &ping(ping_id));
        let mut replies = Vec::new();
        let mut buf = [0u8; 65536];
        loop {
            let n = match socket.recv(&mut buf) {
                Ok(n) => n,
                // libFuzzer's SIGALRM (its -timeout watchdog) interrupts a blocked recv.
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => panic!("geodns did not answer the ping within 10 s: {e}"),
            };
            let reply = &buf[..n];
            // Every reply carries its query's ID, and the packet's ID is never the ping's.
            if n >= 2 && reply[..2] == ping_id.to_be_bytes() {
                return replies;
            }
            replies.push(reply.to_vec());
            assert!(replies.len() <= 1, "more than one reply to one datagram");
        }
    }

    fn next_ping(&mut self, packet: &[u8]) -> u16 {
        self.ping_id = self.ping_id.wrapping_add(1);
        if packet.len() >= 2 && packet[..2] == self.ping_id.to_be_bytes() {
            self.ping_id = self.ping_id.wrapping_add(1);
        }
        self.ping_id
    }
}

fn send(socket: &UdpSocket, packet: &[u8]) {
    loop {
        match socket.send(packet) {
            Ok(_) => return,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => panic!("cannot send to geodns: {e}"),
        }
    }
}

/// The framed packets of an input.
fn packets(mut data: &[u8]) -> Vec<(usize, &[u8])> {
    let mut out = Vec::new();
    while data.len() >= 2 && out.len() < 4 {
        let head = u16::from_be_bytes([data[0], data[1]]);
        let src = usize::from(head >> 15);
        let len = usize::from(head & 0x7fff).min(data.len() - 2);
        out.push((src, &data[2..2 + len]));
        data = &data[2 + len..];
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let mut h = harness().lock().unwrap_or_else(|e| e.into_inner());
    let packets = packets(data);
    let mut first = Vec::with_capacity(packets.len());
    for &(src, packet) in &packets {
        let id = h.next_ping(packet);
        let a = Harness::exchange(&h.clients[src][0], packet, id);
        let id = h.next_ping(packet);
        let b = Harness::exchange(&h.clients[src][1], packet, id);
        assert_eq!(
            a, b,
            "fast path (A) and handler (B) differ for {packet:02x?} from source {src}"
        );
        first.push(b);
    }
    // Again to A: now an answer the first round cached comes from the cache.
    for (&(src, packet), b) in packets.iter().zip(&first) {
        let id = h.next_ping(packet);
        let again = Harness::exchange(&h.clients[src][0], packet, id);
        assert_eq!(
            &again, b,
            "cached answer differs from the handler's for {packet:02x?} from source {src}"
        );
    }
});
