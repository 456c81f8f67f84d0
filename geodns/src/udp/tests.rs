//! Unit tests of the UDP fast path: the query parser, and reading names in responses.

use super::cache::{skip_name, wire_name};
use super::query::Query;

fn query(name: &[&str], qtype: u16, opt: Option<&[u8]>) -> Vec<u8> {
    let mut q = vec![
        0x12,
        0x34,
        0x01,
        0x00,
        0,
        1,
        0,
        0,
        0,
        0,
        0,
        u8::from(opt.is_some()),
    ];
    for label in name {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&[0, 1]);
    if let Some(rdata) = opt {
        q.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0]);
        q.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        q.extend_from_slice(rdata);
    }
    q
}

#[test]
fn parses_the_common_shapes() {
    let q = query(&["WWW", "Cdn", "test"], 1, None);
    let p = Query::parse(&q).unwrap();
    assert_eq!(p.qname_lower, b"\x03www\x03cdn\x04test\x00");
    assert_eq!(p.question.len(), 14 + 4);
    assert!(p.edns.is_none());
    let ecs = [0, 8, 0, 7, 0, 1, 24, 0, 10, 1, 2];
    let q = query(&["www", "cdn", "test"], 28, Some(&ecs));
    let p = Query::parse(&q).unwrap();
    let e = p.edns.unwrap();
    assert_eq!(e.payload, 1232);
    let c = e.ecs.unwrap();
    assert_eq!((c.family, c.source, c.addr), (1, 24, &[10, 1, 2][..]));
}

#[test]
fn unusual_queries_go_to_the_slow_path() {
    let base = query(&["a", "test"], 1, None);
    let mut response = base.clone();
    response[2] |= 0x80;
    let mut notify = base.clone();
    notify[2] |= 4 << 3;
    let mut two = base.clone();
    two[5] = 2;
    let mut trailing = base.clone();
    trailing.push(0);
    let bad_scope = query(
        &["a", "test"],
        1,
        Some(&[0, 8, 0, 7, 0, 1, 24, 8, 10, 1, 2]),
    );
    let long_source = query(&["a", "test"], 1, Some(&[0, 8, 0, 5, 0, 1, 33, 0, 10]));
    let short_addr = query(&["a", "test"], 1, Some(&[0, 8, 0, 6, 0, 1, 24, 0, 10, 1]));
    let mut compressed = base.clone();
    compressed[12] = 0xC0;
    for (what, q) in [
        ("response", response),
        ("opcode", notify),
        ("two questions", two),
        ("trailing byte", trailing),
        ("ECS scope set", bad_scope),
        ("ECS source > 32", long_source),
        ("ECS address length", short_addr),
        ("compressed name", compressed),
        ("truncated", base[..14].to_vec()),
    ] {
        assert!(Query::parse(&q).is_none(), "{what}");
    }
}

#[test]
fn wire_names_read_back() {
    assert_eq!(wire_name(b"\x03www\x03cdn\x04test\x00"), "www.cdn.test.");
    assert_eq!(wire_name(b"\x00"), "");
}

#[test]
fn names_skip_labels_and_pointers() {
    let b = [3, b'w', b'w', b'w', 0xC0, 12, 0];
    assert_eq!(skip_name(&b, 0), Some(6));
    assert_eq!(skip_name(&[0], 0), Some(1));
    assert_eq!(skip_name(&[0x80], 0), None);
    assert_eq!(skip_name(&[5, b'a'], 0), None);
}
