"""A scriptable HTTP/1.1 origin for the attack suite (asyncio, loopback only).

What it answers depends on the path (a site's path prefix such as /jail or /fwd may come
first; the route is found by the first segment that names one):

  /obj/SIZE/NAME       SIZE deterministic bytes (common.body_bytes(NAME, SIZE)),
                       Cache-Control: max-age=3600, ETag, Last-Modified, single and multiple
                       Range (multipart/byteranges, naive: every range sent as asked), 416
                       with max-age=60, If-None-Match -> 304
  /vary/NAME           200, Vary: Accept-Encoding, max-age=60
  /scheme/NAME         X-Forwarded-Proto: http -> 301 to https (max-age=300); else 200 "secure"
  /chunked/SIZE/NAME   SIZE bytes chunked (64 KiB chunks), max-age=60, no validators
  /b304/NAME           200 ETag "b304-v1" Cache-Control: no-cache; with If-None-Match a bare
                       "304 Not Modified" (no ETag, no Cache-Control)
  /fault/KIND/NAME     hang-head, hang-body, short-cl, garbage, reset (see FAULTS)
  anything else        200 "routed" (no-store), after recording it
  /_ctl/log?since=N    JSON: the requests recorded from index N (method, raw target, Host
                       values, X-Forwarded-Proto, headers)
  /_ctl/stats?prefix=P JSON: body bytes sent and requests per path starting with P

Every request is recorded (bounded ring) before it is answered."""

import argparse
import asyncio
import json
import os
import socket
import struct
import sys
import time
import urllib.parse
import zlib
from collections import OrderedDict, deque

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import body_bytes  # noqa: E402

LOG = deque(maxlen=100_000)
LOG_BASE = [0]  # index of LOG[0]
BYTES = {}
COUNT = {}
BODIES = OrderedDict()
LAST_MODIFIED = "Tue, 01 Dec 2026 00:00:00 GMT"
HANG_LIMIT = 30.0  # a hanging answer gives up after this long (bounded)
CHUNK = 256 * 1024


def obj_body(name, size):
    key = (name, size)
    b = BODIES.get(key)
    if b is None:
        b = body_bytes(name, size)
        BODIES[key] = b
        total = sum(len(v) for v in BODIES.values())
        while total > 512 * 1024 * 1024 and len(BODIES) > 1:
            _, old = BODIES.popitem(last=False)
            total -= len(old)
    return b


def record(conn_id, method, target, headers, body_len):
    hosts = [v for k, v in headers if k == "host"]
    h = {}
    for k, v in headers:
        h.setdefault(k, v)
    LOG.append({
        "i": LOG_BASE[0] + len(LOG), "t": time.time(), "conn": conn_id, "method": method,
        "target": target, "path": urllib.parse.urlsplit(target).path if target.startswith("/")
        else target, "hosts": hosts, "xfp": h.get("x-forwarded-proto"),
        "te": h.get("transfer-encoding"), "cl": h.get("content-length"), "body_len": body_len,
        "headers": h,
    })
    if len(LOG) == LOG.maxlen:
        LOG_BASE[0] += 1


def route(path):
    """(kind, args) from the first segment naming a route, prefix segments skipped."""
    segs = path.split("/")[1:]
    for i, seg in enumerate(segs):
        if seg in ("obj", "vary", "scheme", "chunked", "b304", "fault", "_ctl"):
            return seg, segs[i + 1:]
    return "default", segs


def parse_ranges(spec, size):
    if not spec.startswith("bytes="):
        return None
    out = []
    for part in spec[6:].split(","):
        part = part.strip()
        a, dash, b = part.partition("-")
        if not dash:
            return None
        try:
            if a == "":
                n = int(b)
                if n == 0:
                    continue
                out.append((max(0, size - n), size - 1))
            else:
                start = int(a)
                end = int(b) if b else size - 1
                if start > end:
                    return None
                if start >= size:
                    continue
                out.append((start, min(end, size - 1)))
        except ValueError:
            return None
    return out


class Conn:
    ids = 0

    def __init__(self, reader, writer):
        Conn.ids += 1
        self.id = Conn.ids
        self.r = reader
        self.w = writer

    async def send(self, path, head, body=b"", count_as=None):
        self.w.write(head)
        sent = 0
        for i in range(0, len(body), CHUNK):
            piece = body[i:i + CHUNK]
            self.w.write(piece)
            sent += len(piece)
            BYTES[count_as or path] = BYTES.get(count_as or path, 0) + len(piece)
            await self.w.drain()
        await self.w.drain()
        return sent


def head_bytes(status, reason, headers):
    lines = [f"HTTP/1.1 {status} {reason}"] + [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def read_body(r, headers):
    h = {}
    for k, v in headers:
        h.setdefault(k, v)
    if "chunked" in h.get("transfer-encoding", "").lower():
        total = 0
        while True:
            line = await r.readuntil(b"\r\n")
            n = int(line.split(b";")[0].strip(), 16)
            if n == 0:
                while (await r.readuntil(b"\r\n")) != b"\r\n":
                    pass
                return total
            await r.readexactly(n + 2)
            total += n
    if "content-length" in h:
        n = int(h["content-length"])
        await r.readexactly(n)
        return n
    return 0


async def handle(reader, writer):
    c = Conn(reader, writer)
    try:
        while True:
            try:
                raw = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                return
            lines = raw.decode("latin-1").split("\r\n")
            parts = lines[0].split(" ")
            if len(parts) != 3:
                writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                return
            method, target, _ = parts
            headers = []
            for line in lines[1:]:
                if not line:
                    continue
                k, _, v = line.partition(":")
                headers.append((k.strip().lower(), v.strip()))
            try:
                body_len = await read_body(reader, headers)
            except (ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                return
            record(c.id, method, target, headers, body_len)
            path = urllib.parse.urlsplit(target).path
            COUNT[path] = COUNT.get(path, 0) + 1
            keep = await respond(c, method, target, path, headers)
            close = any(k == "connection" and "close" in v.lower() for k, v in headers)
            if not keep or close:
                return
    except (ConnectionError, OSError):
        return
    finally:
        try:
            writer.close()
        except Exception:  # noqa: BLE001 - closing is best effort
            pass


async def respond(c, method, target, path, headers):
    h = {}
    for k, v in headers:
        h.setdefault(k, v)
    kind, args = route(path)
    send_body = method != "HEAD"

    def out(status, reason, hdrs, body=b""):
        hdrs = list(hdrs)
        if not any(k.lower() in ("content-length", "transfer-encoding") for k, _ in hdrs):
            hdrs.append(("Content-Length", str(len(body))))
        return c.send(path, head_bytes(status, reason, hdrs), body if send_body else b"")

    if kind == "_ctl":
        q = urllib.parse.parse_qs(urllib.parse.urlsplit(target).query)
        if args and args[0] == "log":
            since = int(q.get("since", ["0"])[0])
            data = [e for e in LOG if e["i"] >= since]
        elif args and args[0] == "stats":
            prefix = q.get("prefix", [""])[0]
            data = {"bytes": {k: v for k, v in BYTES.items() if k.startswith(prefix)},
                    "count": {k: v for k, v in COUNT.items() if k.startswith(prefix)},
                    "next": LOG_BASE[0] + len(LOG)}
        else:
            data = {"next": LOG_BASE[0] + len(LOG)}
        body = json.dumps(data).encode()
        await c.w.drain()
        c.w.write(head_bytes(200, "OK", [("Content-Type", "application/json"),
                                         ("Content-Length", str(len(body))),
                                         ("Cache-Control", "no-store")]) + body)
        await c.w.drain()
        return True

    if kind == "obj" and len(args) >= 2 and args[0].isdigit():
        size = int(args[0])
        name = "/".join(args[1:])
        body = obj_body(name, size)
        etag = f'"{size:x}-{zlib.crc32(name.encode()):x}"'
        base = [("Cache-Control", "max-age=3600"), ("ETag", etag),
                ("Last-Modified", LAST_MODIFIED), ("Accept-Ranges", "bytes"),
                ("Content-Type", "application/octet-stream")]
        if h.get("if-none-match") == etag:
            await out(304, "Not Modified", [("Cache-Control", "max-age=3600"), ("ETag", etag)])
            return True
        rng = h.get("range")
        if rng is not None:
            ranges = parse_ranges(rng, size)
            if ranges is not None:
                if not ranges:
                    await out(416, "Range Not Satisfiable",
                              [("Cache-Control", "max-age=60"), ("ETag", etag),
                               ("Content-Range", f"bytes */{size}")])
                    return True
                if len(ranges) == 1:
                    a, b = ranges[0]
                    await out(206, "Partial Content",
                              base + [("Content-Range", f"bytes {a}-{b}/{size}")],
                              body[a:b + 1])
                    return True
                boundary = "ATTACKBOUNDARY"
                ranges = ranges[:200]
                total = 0
                parts = []
                for a, b in ranges:
                    ph = (f"\r\n--{boundary}\r\nContent-Type: application/octet-stream\r\n"
                          f"Content-Range: bytes {a}-{b}/{size}\r\n\r\n").encode()
                    parts.append((ph, a, b))
                    total += len(ph) + b - a + 1
                tail = f"\r\n--{boundary}--\r\n".encode()
                total += len(tail)
                hdrs = [(k, v) for k, v in base if k != "Content-Type"] + [
                    ("Content-Type", f"multipart/byteranges; boundary={boundary}"),
                    ("Content-Length", str(total))]
                c.w.write(head_bytes(206, "Partial Content", hdrs))
                if send_body:
                    for ph, a, b in parts:
                        await c.send(path, b"", ph + body[a:b + 1])
                    await c.send(path, b"", tail)
                await c.w.drain()
                return True
        await out(200, "OK", base, body)
        return True

    if kind == "vary":
        await out(200, "OK", [("Cache-Control", "max-age=60"), ("Vary", "Accept-Encoding"),
                              ("Content-Type", "text/plain")], b"vary-ok\n")
        return True

    if kind == "scheme":
        if h.get("x-forwarded-proto", "").lower() == "http":
            loc = "https://sch.test" + path
            await out(301, "Moved Permanently",
                      [("Location", loc), ("Cache-Control", "max-age=300")], b"use https\n")
        else:
            await out(200, "OK", [("Cache-Control", "max-age=300"),
                                  ("Content-Type", "text/plain")], b"secure\n")
        return True

    if kind == "chunked" and len(args) >= 2 and args[0].isdigit():
        size = int(args[0])
        body = obj_body("/".join(args[1:]), size)
        c.w.write(head_bytes(200, "OK", [("Cache-Control", "max-age=60"),
                                         ("Transfer-Encoding", "chunked"),
                                         ("Content-Type", "application/octet-stream")]))
        if send_body:
            for i in range(0, size, 65536):
                piece = body[i:i + 65536]
                c.w.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                BYTES[path] = BYTES.get(path, 0) + len(piece)
                await c.w.drain()
            c.w.write(b"0\r\n\r\n")
        await c.w.drain()
        return True

    if kind == "b304":
        if "if-none-match" in h:
            c.w.write(b"HTTP/1.1 304 Not Modified\r\n\r\n")
            await c.w.drain()
            return True
        await out(200, "OK", [("ETag", '"b304-v1"'), ("Cache-Control", "no-cache"),
                              ("Content-Type", "text/plain")], b"bare-304 body v1\n")
        return True

    if kind == "fault" and args:
        return await fault(c, path, args[0])

    await out(200, "OK", [("Cache-Control", "no-store"), ("Content-Type", "text/plain")],
              b"routed\n")
    return True


async def wait_gone(c, limit=HANG_LIMIT):
    """Waits (bounded) for the peer to close or send something."""
    try:
        await asyncio.wait_for(c.r.read(1), limit)
    except (asyncio.TimeoutError, ConnectionError, OSError):
        pass


async def fault(c, path, kind):
    if kind == "hang-head":
        await wait_gone(c)
        return False
    if kind == "hang-body":
        c.w.write(head_bytes(200, "OK", [("Cache-Control", "max-age=60"),
                                         ("Content-Length", "1000000")]) + b"x" * 10000)
        BYTES[path] = BYTES.get(path, 0) + 10000
        await c.w.drain()
        await wait_gone(c)
        return False
    if kind == "short-cl":
        c.w.write(head_bytes(200, "OK", [("Cache-Control", "max-age=60"),
                                         ("Content-Length", "1000000")]) + b"x" * 10000)
        BYTES[path] = BYTES.get(path, 0) + 10000
        await c.w.drain()
        return False
    if kind == "garbage":
        c.w.write(b"HTJP/1.1 2x0 \x00\xff\xfe garbage\r\nCache-Control: max-age=60\r\n"
                  b"Content-Length: 5\r\n\r\nxxxxx")
        await c.w.drain()
        return False
    if kind == "reset":
        sock = c.w.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.w.transport.abort()
        return False
    await c.send(path, head_bytes(404, "Not Found", [("Content-Length", "0")]))
    return True


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    args = ap.parse_args()
    server = await asyncio.start_server(handle, args.host, args.port, limit=1 << 16,
                                        backlog=1024)
    print(f"origin listening on {args.host}:{args.port}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
