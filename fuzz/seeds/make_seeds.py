#!/usr/bin/env python3
"""Writes the committed seed corpus (fuzz/seeds/<target>/): a few valid and edge-case inputs
per target, so each run starts from the interesting shapes instead of from nothing.
Run from anywhere: python3 fuzz/seeds/make_seeds.py"""

import os
import shutil
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def write(target, name, data):
    d = os.path.join(HERE, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("latin-1")
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# range: "total max_ranges max_overlaps slice_size seed method", request headers, "", stored.
DATE0 = "Tue, 14 Nov 2023 22:13:20 GMT"
DATE1 = "Tue, 14 Nov 2023 22:13:21 GMT"
MAX = 2**64 - 1
for name, text in {
    "single": "1000 16 2 100 1 0\nrange: bytes=0-499\n\ncontent-type: text/plain\ncontent-range: bytes 0-499/1000",
    "multi": "10000 16 2 4096 7 0\nrange: bytes=0-9, 100-199, -50\n\ncontent-type: video/mp4",
    "suffix-empty": "0 16 2 0 0 0\nrange: bytes=-5",
    "overlaps": "1000 16 2 100 1 0\nrange: bytes=0-0,0-0,0-0,1-1\n",
    "coalesce": "1000 16 2 100 1 0\nrange: bytes=0-9,50-59,500-,200-300\n",
    "if-range-etag": '1000 16 2 100 1 0\nrange: bytes=10-\nif-range: "v1"\n\netag: "v1"',
    "if-range-date": f"1000 16 2 100 1 0\nrange: bytes=5-9\nif-range: {DATE0}\n\nlast-modified: {DATE0}\ndate: {DATE1}",
    "huge": f"{MAX} 64 64 1048576 3 0\nrange: BYTES = {MAX - 2}-,0-1,-{MAX}\n\ncontent-range: bytes 0-{MAX - 2}/{MAX}",
    "two-lines": "1000 16 2 100 1 0\nrange: bytes=0-1\nrange: bytes=5-6\n\ncontent-range: bytes */1000",
    "head": "1000 16 2 100 1 1\nrange: bytes=0-1\n",
}.items():
    write("range", name, text)

# policy: "status request_ms response_ms now_ms fraction_permille heuristic_max_s method",
# authority, request headers, "", stored response headers, "", 304 headers.
T = "1700000000000 1700000000100 1700000030000"
for name, text in {
    "fresh": f"200 {T} 100 86400 0\nexample.com\ncache-control: max-age=10, min-fresh=5\n\n"
    f"cache-control: public, max-age=60, stale-while-revalidate=30, stale-if-error=300\n"
    f"date: {DATE0}\nage: 5\nvary: accept-encoding, Accept-Language\netag: W/\"x\"\n\n"
    f"etag: W/\"x\"\ncache-control: max-age=120\nconnection: x-drop\nx-drop: 1",
    "heuristic": f"200 {T} 100 86400 0\nexample.com\n\n\n"
    f"last-modified: Mon, 13 Nov 2023 22:13:20 GMT\ndate: {DATE0}\nexpires: Wed, 15 Nov 2023 22:13:20 GMT\n\n"
    f"last-modified: Mon, 13 Nov 2023 22:13:20 GMT",
    "invalidate": f"201 {T} 100 86400 2\nexample.com\nauthorization: x\npragma: no-cache\n"
    f"if-none-match: *\nif-modified-since: {DATE1}\n\nlocation: http://EXAMPLE.com/a?b#f\n"
    f"content-location: /c\ncache-control: s-maxage=\"5\", private=\"set-cookie\", no-cache\nvary: *",
    "stale": f"404 0 0 {MAX} 1000 {MAX} 1\nexample.com\ncache-control: max-stale, max-stale=3, max-age=abc\n\n"
    f"cache-control: must-understand, no-store, max-age=99999999999999999999\n"
    f"cache-control: max-age=1\nexpires: 0\nexpires: {DATE0}\nage: 1",
}.items():
    write("policy", name, text)

# meta: stored entries as the store writes them.
SRI = "sha256-ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0="
write("meta", "plain",
      '{"format":1,"key":"GET example.com /a","status":200,'
      '"headers":[["cache-control","max-age=60"],["content-type","text/plain"],["x-a","caf\\u00e9"]],'
      f'"request_time":1700000000000,"response_time":1700000000100,"body_len":3,'
      f'"chunks":[{{"sri":"{SRI}","len":3}}],"sliced":null}}')
write("meta", "sliced",
      '{"format":1,"key":"k","status":206,"headers":[["content-range","bytes 0-9/100"],'
      '["vary","accept"],["set-cookie","a=1"],["set-cookie","b=2"]],'
      f'"request_time":0,"response_time":{MAX},"body_len":100,"chunks":[],"sliced":1048576}}')
write("meta", "bad-header",
      '{"format":2,"key":"","status":999,"headers":[["bad name","v"],["x","\\u0100\\n"]],'
      '"request_time":5,"response_time":4,"body_len":0,"chunks":[]}')


# DNS packets.
def name_wire(name):
    out = b""
    for label in name.rstrip(".").split("."):
        if label:
            out += bytes([len(label)]) + label.encode()
    return out + b"\0"


def query(qname, qtype, qid=0x1234, flags=0x0000, edns=None, ecs=None, cookie=False):
    """edns: UDP payload size or None; ecs: (family, prefix, address bytes)."""
    ar = 1 if edns is not None else 0
    p = struct.pack(">HHHHHH", qid, flags, 1, 0, 0, ar)
    p += name_wire(qname) + struct.pack(">HH", qtype, 1)
    if edns is not None:
        opts = b""
        if ecs:
            fam, prefix, addr = ecs
            body = struct.pack(">HBB", fam, prefix, 0) + addr
            opts += struct.pack(">HH", 8, len(body)) + body
        if cookie:
            opts += struct.pack(">HH", 10, 8) + b"\x01" * 8
        p += b"\0" + struct.pack(">HHIH", 41, edns, 0, len(opts)) + opts
    return p


def frame(*packets):
    out = b""
    for src, p in packets:
        out += struct.pack(">H", (src << 15) | len(p)) + p
    return out


A, NS, CNAME, SOA, MX, TXT, AAAA, ANY, CAA, AXFR = 1, 2, 5, 6, 15, 16, 28, 255, 257, 252
udp = {
    "www-a": frame((0, query("www.cdn.test", A))),
    "www-aaaa-edns": frame((0, query("www.cdn.test", AAAA, edns=1232))),
    "ecs-v4": frame((0, query("www.cdn.test", A, edns=4096, ecs=(1, 24, bytes([10, 2, 0]))))),
    "ecs-v6": frame((1, query("two.cdn.test", AAAA, edns=1232, ecs=(2, 48, bytes.fromhex("20010db80001"))))),
    "ecs-zero": frame((0, query("two.cdn.test", A, edns=1232, ecs=(1, 0, b"")))),
    "ecs-bad": frame((0, query("www.cdn.test", A, edns=1232, ecs=(1, 33, bytes(5))))),
    "override": frame((1, query("eu.cdn.test", A)), (0, query("eu.cdn.test", A))),
    "case-0x20": frame((0, query("wWw.CdN.tEsT", A, flags=0x0100)), (0, query("www.cdn.test", A, flags=0x0100))),
    "big-txt": frame((0, query("big.cdn.test", TXT)), (0, query("big.cdn.test", TXT, edns=512)),
                     (0, query("big.cdn.test", TXT, edns=4096))),
    "nxdomain": frame((0, query("nope.cdn.test", A)), (0, query("deep.cdn.test", A))),
    "cname": frame((0, query("a.b.deep.cdn.test", A)), (0, query("out.cdn.test", AAAA))),
    "apex": frame((0, query("cdn.test", SOA)), (0, query("cdn.test", NS)), (0, query("cdn.test", ANY)),
                  (0, query("cdn.test", MX))),
    "sub": frame((0, query("sub.cdn.test", A, edns=1232)), (0, query("sub.cdn.test", CAA))),
    "refused": frame((0, query("example.org", A)), (0, query("cdn.test", AXFR))),
    "cookie": frame((0, query("www.cdn.test", A, edns=1232, cookie=True))),
    "notquery": frame((0, struct.pack(">HHHHHH", 1, 0x2800, 1, 0, 0, 0) + name_wire("cdn.test") + struct.pack(">HH", SOA, 1))),
    "short": frame((0, b"\x12\x34\x01")),
    "compressed": frame((0, struct.pack(">HHHHHH", 7, 0, 1, 0, 0, 0) + b"\xc0\x0c" + struct.pack(">HH", A, 1))),
    "edns-v1": frame((0, query("www.cdn.test", A, edns=1232)[:-7] + struct.pack(">HHBBHH", 41, 1232, 0, 1, 0, 0))),
}
for name, data in udp.items():
    write("dns_udp", name, data)

# dns_zone: qtype (u16), form byte (even text, odd wire), name.
for name, (qtype, form, qname) in {
    "text-www": (A, 0, b"www"),
    "text-abs": (AAAA, 0, b"two.cdn.test."),
    "wire-apex": (SOA, 1, name_wire("cdn.test")),
    "wire-cname": (A, 1, name_wire("a.b.deep.cdn.test")),
    "any-geo": (ANY, 0, b"www"),
    "cname-geo": (CNAME, 0, b"docs"),
    "sub": (A, 0, b"sub.cdn.test."),
    "nx": (TXT, 0, b"x.y"),
    "axfr": (AXFR, 0, b"cdn.test."),
}.items():
    write("dns_zone", name, struct.pack(">HB", qtype, form) + qname)

# Configs: the shipped examples, and the geodns test world the DNS targets serve.
os.makedirs(os.path.join(HERE, "edge_config"), exist_ok=True)
for f in ("edge.toml", "minimal.toml"):
    shutil.copy(os.path.join(ROOT, "edge/config/examples", f), os.path.join(HERE, "edge_config", f))
write("edge_config", "sizes",
      'name = "pop1"\n[listen]\nhttps = "[::]:8443"\nhttp = "0.0.0.0:8080"\n[cache]\n'
      'slice_size = "1025 KiB"\nheuristic_fraction = 0.5\n[origin]\nconnect_timeout = "250ms"\n'
      '[[site]]\nhosts = ["*.example.com", "a"]\norigin = "https://o.example:8443/prefix"\nforward_host = true\n')
os.makedirs(os.path.join(HERE, "geodns_config"), exist_ok=True)
shutil.copy(os.path.join(ROOT, "geodns/config/examples/geodns.toml"), os.path.join(HERE, "geodns_config", "example.toml"))
test_cfg = open(os.path.join(ROOT, "geodns/tests/data/test-config.toml")).read()
write("geodns_config", "test-config.toml",
      test_cfg.replace("[geoip]\n", '[geoip]\ndatabases = ["/nonexistent.mmdb"]\n', 1))
