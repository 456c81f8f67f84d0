#!/usr/bin/env python3
"""DNS query files for dnsperf, and a small UDP probe. Standard library only.

  dnswire.py plain OUT
      dnsperf text input: the geo name without ECS plus static names.
  dnswire.py ecs CLIENTS_CSV OUT [--count N] [--seed S]
      dnsperf -B input: N raw DNS queries for www.cdn.test (3/4 A, 1/4 AAAA), each with an
      EDNS OPT record (UDP size 1232) carrying an EDNS Client Subnet option (RFC 7871) for a
      random /24 (IPv4) or /56 (IPv6) inside a random client network of CLIENTS_CSV.
      Framing as `man dnsperf` (-B) says: RFC 1035 4.2.2 TCP framing, i.e. each message is
      preceded by its length as 2 bytes in network byte order; dnsperf overwrites the first
      two bytes of each message (the ID).
  dnswire.py probe HOST PORT BINFILE [--count K]
      Sends the first K messages of a -B file over UDP one by one and checks each response:
      same ID, QR set, NOERROR, at least one answer, and an ECS option echoed with the
      query's address and source prefix. Prints a short summary; exits 1 on any failure.
      This checks that the file is framed and encoded the way servers expect.
"""

import argparse
import csv
import ipaddress
import random
import socket
import struct
import sys

GEO_NAME = "www.cdn.test."
PLAIN = [
    ("www.cdn.test", "A"),
    ("www.cdn.test", "AAAA"),
    ("cdn.test", "SOA"),
    ("cdn.test", "NS"),
    ("cdn.test", "TXT"),
    ("cdn.test", "MX"),
    ("ns1.cdn.test", "A"),
    ("api.cdn.test", "A"),
    ("api.cdn.test", "AAAA"),
]
QTYPE = {"A": 1, "NS": 2, "SOA": 6, "MX": 15, "TXT": 16, "AAAA": 28}
OPT, ECS = 41, 8


def encode_name(name):
    out = b""
    for label in name.rstrip(".").split("."):
        out += bytes([len(label)]) + label.encode("ascii")
    return out + b"\x00"


def ecs_option(net):
    """RFC 7871 6: FAMILY, SOURCE PREFIX-LENGTH, SCOPE PREFIX-LENGTH (0), ADDRESS truncated
    to the source prefix's octets."""
    family = 1 if net.version == 4 else 2
    nbytes = (net.prefixlen + 7) // 8
    addr = net.network_address.packed[:nbytes]
    data = struct.pack("!HBB", family, net.prefixlen, 0) + addr
    return struct.pack("!HH", ECS, len(data)) + data


def query(qid, name, qtype, subnet=None):
    header = struct.pack("!HHHHHH", qid, 0x0000, 1, 0, 0, 1 if subnet else 0)
    msg = header + encode_name(name) + struct.pack("!HH", QTYPE[qtype], 1)
    if subnet is not None:
        rdata = ecs_option(subnet)
        # OPT: root owner, type 41, CLASS = UDP payload size, TTL = ext-rcode/version/flags.
        msg += b"\x00" + struct.pack("!HHIH", OPT, 1232, 0, len(rdata)) + rdata
    return msg


def random_subnet(rng, net):
    """A random /24 (IPv4) or /56 (IPv6) inside net (or net itself when it is smaller)."""
    plen = 24 if net.version == 4 else 56
    if net.prefixlen >= plen:
        return net
    k = rng.randrange(1 << (plen - net.prefixlen))
    base = int(net.network_address) + (k << (net.max_prefixlen - plen))
    return ipaddress.ip_network((base, plen))


def read_clients(path):
    with open(path, newline="") as f:
        return [ipaddress.ip_network(row["subnet"]) for row in csv.DictReader(f)]


def cmd_plain(args):
    with open(args.out, "w") as f:
        for name, qtype in PLAIN:
            f.write(f"{name} {qtype}\n")


def cmd_ecs(args):
    rng = random.Random(args.seed)
    nets = read_clients(args.clients)
    with open(args.out, "wb") as f:
        for i in range(args.count):
            subnet = random_subnet(rng, rng.choice(nets))
            qtype = "AAAA" if rng.random() < 0.25 else "A"
            msg = query(i & 0xFFFF, GEO_NAME, qtype, subnet)
            f.write(struct.pack("!H", len(msg)) + msg)
    print(f"{args.out}: {args.count} ECS queries over {len(nets)} client networks", file=sys.stderr)


def read_framed(path):
    data = open(path, "rb").read()
    pos = 0
    while pos + 2 <= len(data):
        (n,) = struct.unpack_from("!H", data, pos)
        yield data[pos + 2 : pos + 2 + n]
        pos += 2 + n
    if pos != len(data):
        raise ValueError(f"{path}: trailing {len(data) - pos} bytes: bad framing")


def skip_name(msg, pos):
    while True:
        n = msg[pos]
        if n == 0:
            return pos + 1
        if n & 0xC0 == 0xC0:
            return pos + 2
        pos += 1 + n


def parse_response(msg):
    """(id, flags, rcode, answer addresses, ecs (family, source, scope, addr) or None)."""
    qid, flags, qd, an, ns, ar = struct.unpack_from("!HHHHHH", msg, 0)
    pos = 12
    for _ in range(qd):
        pos = skip_name(msg, pos) + 4
    addrs, ecs, ext_rcode = [], None, 0
    for section, count in (("an", an), ("ns", ns), ("ar", ar)):
        for _ in range(count):
            pos = skip_name(msg, pos)
            rtype, rclass, ttl, rdlen = struct.unpack_from("!HHIH", msg, pos)
            pos += 10
            rdata = msg[pos : pos + rdlen]
            pos += rdlen
            if section == "an" and rtype in (1, 28):
                addrs.append(str(ipaddress.ip_address(rdata)))
            if rtype == OPT:
                ext_rcode = ttl >> 24
                p = 0
                while p + 4 <= len(rdata):
                    code, olen = struct.unpack_from("!HH", rdata, p)
                    body = rdata[p + 4 : p + 4 + olen]
                    p += 4 + olen
                    if code == ECS:
                        fam, src, scope = struct.unpack_from("!HBB", body, 0)
                        raw = body[4:]
                        size = 4 if fam == 1 else 16
                        addr = ipaddress.ip_address(raw + b"\x00" * (size - len(raw)))
                        ecs = (fam, src, scope, str(addr))
    rcode = (ext_rcode << 4) | (flags & 0xF)
    return qid, flags, rcode, addrs, ecs


def parse_query_ecs(msg):
    """The ECS (family, source, addr) of one of our own queries."""
    _, _, _, _, ecs = parse_response(msg)
    return ecs


def cmd_probe(args):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(2.0)
    sock.connect((args.host, args.port))
    ok = bad = 0
    scopes = {}
    for i, msg in enumerate(read_framed(args.file)):
        if i >= args.count:
            break
        qid = 0x4000 + i
        msg = struct.pack("!H", qid) + msg[2:]
        want = parse_query_ecs(msg)
        sock.send(msg)
        try:
            resp = sock.recv(4096)
        except socket.timeout:
            print(f"probe {args.host}:{args.port}: query {i}: no response", file=sys.stderr)
            bad += 1
            continue
        rid, flags, rcode, addrs, ecs = parse_response(resp)
        problems = []
        if rid != qid or not flags & 0x8000:
            problems.append(f"id/QR wrong (id {rid}, flags {flags:#06x})")
        if rcode != 0:
            problems.append(f"rcode {rcode}")
        if not addrs:
            problems.append("no answer")
        if ecs is None:
            problems.append("no ECS option in the response")
        elif want is not None and (ecs[0], ecs[1], ecs[3]) != (want[0], want[1], want[3]):
            problems.append(f"ECS {ecs} does not echo the query's {want}")
        if problems:
            bad += 1
            print(f"probe {args.host}:{args.port}: query {i} ECS {want}: {'; '.join(problems)}",
                  file=sys.stderr)
        else:
            ok += 1
            scopes[ecs[2]] = scopes.get(ecs[2], 0) + 1
    scope_text = ", ".join(f"/{s}: {n}" for s, n in sorted(scopes.items()))
    print(f"probe {args.host}:{args.port}: {ok} ok, {bad} bad; ECS scopes answered: {scope_text}")
    sys.exit(1 if bad or not ok else 0)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("plain")
    a.add_argument("out")
    a.set_defaults(func=cmd_plain)
    a = sub.add_parser("ecs")
    a.add_argument("clients")
    a.add_argument("out")
    a.add_argument("--count", type=int, default=20000)
    a.add_argument("--seed", type=int, default=1)
    a.set_defaults(func=cmd_ecs)
    a = sub.add_parser("probe")
    a.add_argument("host")
    a.add_argument("port", type=int)
    a.add_argument("file")
    a.add_argument("--count", type=int, default=50)
    a.set_defaults(func=cmd_probe)
    args = p.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
