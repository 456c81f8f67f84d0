"""Shared by the attack suite, its origin and its prober: deterministic bodies, a small raw
HTTP/1.1 response parser and client, and an HTTP/2 client on hyper-h2.

Everything here talks to loopback addresses only."""

import hashlib
import random
import socket
import ssl
import time
import zlib

LOOPBACK = "127.0.0.1"


def body_bytes(name, size):
    """The deterministic body of object `name` of `size` bytes (origin and clients agree)."""
    seed = zlib.crc32(name.encode()) ^ (size * 2654435761 & 0xFFFFFFFF)
    return random.Random(seed).randbytes(size)


def sha(data):
    return hashlib.sha256(data).hexdigest()[:16]


def client_tls(alpn=("http/1.1",)):
    """TLS client context for the edge's self-signed dev certificate (not verified: loopback)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(list(alpn))
    return ctx


class Response:
    def __init__(self, status, reason, headers, body, complete):
        self.status = status
        self.reason = reason
        self.headers = headers  # list of (lowercase name, value)
        self.body = body
        self.complete = complete  # framing said the body ended (not cut off)

    def header(self, name, default=None):
        name = name.lower()
        for k, v in self.headers:
            if k == name:
                return v
        return default

    def __repr__(self):
        return f"<{self.status} {len(self.body)}B complete={self.complete}>"


def parse_responses(data, eof, head_only=False):
    """Parses pipelined HTTP/1.1 responses from `data`. `eof`: the connection has closed, so
    a body without framing ends here. Returns (responses, garbage_or_None)."""
    out = []
    pos = 0
    while pos < len(data):
        end = data.find(b"\r\n\r\n", pos)
        if end < 0:
            if eof and data[pos:].strip():
                return out, data[pos : pos + 200]
            break
        head = data[pos:end].decode("latin-1")
        lines = head.split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            return out, data[pos : pos + 200]
        status = int(parts[1])
        reason = parts[2] if len(parts) > 2 else ""
        headers = []
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers.append((k.strip().lower(), v.strip()))
        hdr = dict(headers)
        bpos = end + 4
        if head_only or status in (204, 304) or 100 <= status < 200:
            out.append(Response(status, reason, headers, b"", True))
            pos = bpos
            continue
        if "chunked" in hdr.get("transfer-encoding", "").lower():
            body = bytearray()
            p = bpos
            done = False
            while True:
                le = data.find(b"\r\n", p)
                if le < 0:
                    break
                try:
                    n = int(data[p:le].split(b";")[0], 16)
                except ValueError:
                    return out, data[p : p + 200]
                if n == 0:
                    te = data.find(b"\r\n\r\n", le)
                    if te < 0:
                        break
                    p = te + 4
                    done = True
                    break
                if le + 2 + n + 2 > len(data):
                    break
                body += data[le + 2 : le + 2 + n]
                p = le + 2 + n + 2
            if not done:
                if eof:
                    out.append(Response(status, reason, headers, bytes(body), False))
                break
            out.append(Response(status, reason, headers, bytes(body), True))
            pos = p
        elif "content-length" in hdr:
            n = int(hdr["content-length"])
            if len(data) - bpos < n:
                if eof:
                    out.append(Response(status, reason, headers, data[bpos:], False))
                break
            out.append(Response(status, reason, headers, data[bpos : bpos + n], True))
            pos = bpos + n
        else:
            if not eof:
                break
            out.append(Response(status, reason, headers, data[bpos:], True))
            pos = len(data)
    return out, None


def h1_exchange(port, raw, *, tls=False, timeout=5.0, want=1, linger=0.0, src=None,
                head_only=False):
    """Sends `raw` bytes on a new connection and reads responses until `want` have arrived
    (then waits `linger` s for more), the peer closes, or `timeout`. Returns a dict with
    responses, closed (peer closed), reset, garbage, elapsed, first_byte."""
    start = time.monotonic()
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    if src:
        s.bind((src, 0))
    res = {"responses": [], "closed": False, "reset": False, "garbage": None,
           "elapsed": None, "first_byte": None, "error": None}
    try:
        s.connect((LOOPBACK, port))
        if tls:
            s = client_tls().wrap_socket(s, server_hostname="localhost")
        s.sendall(raw)
        data = b""
        deadline = start + timeout
        linger_until = None
        while True:
            now = time.monotonic()
            limit = deadline if linger_until is None else min(deadline, linger_until)
            if now >= limit:
                break
            s.settimeout(max(0.01, limit - now))
            try:
                chunk = s.recv(1 << 20)
            except socket.timeout:
                break
            except (ConnectionResetError, ssl.SSLError, OSError) as e:
                res["reset"] = True
                res["error"] = type(e).__name__
                res["closed"] = True
                break
            if not chunk:
                res["closed"] = True
                break
            if res["first_byte"] is None:
                res["first_byte"] = time.monotonic() - start
            data += chunk
            rs, _ = parse_responses(data, False, head_only)
            if len(rs) >= want and linger_until is None:
                if linger <= 0:
                    break
                linger_until = time.monotonic() + linger
        rs, garbage = parse_responses(data, res["closed"], head_only)
        res["responses"] = rs
        res["garbage"] = garbage
    except (OSError, ssl.SSLError) as e:
        res["error"] = f"{type(e).__name__}: {e}"
    finally:
        res["elapsed"] = time.monotonic() - start
        try:
            s.close()
        except OSError:
            pass
    return res


def h1_get(port, path, host, headers=(), tls=False, timeout=10.0, method="GET"):
    """One request with Connection: close; returns (Response or None, exchange dict)."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{k}: {v}" for k, v in headers]
    lines.append("Connection: close")
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    ex = h1_exchange(port, raw, tls=tls, timeout=timeout, head_only=(method == "HEAD"))
    return (ex["responses"][0] if ex["responses"] else None), ex


def h2_get(port, path, authority, headers=(), tls=True, timeout=10.0, extra=None):
    """One HTTP/2 GET on a new connection (TLS with ALPN h2, or prior knowledge).
    Returns (status, headers list, body, error)."""
    import h2.config
    import h2.connection
    import h2.events

    s = socket.create_connection((LOOPBACK, port), timeout=timeout)
    try:
        if tls:
            s = client_tls(("h2",)).wrap_socket(s, server_hostname="localhost")
            if s.selected_alpn_protocol() != "h2":
                return None, [], b"", "no h2 by ALPN"
        # No client-side checks: the attacks send what a careful client would not.
        conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=True, header_encoding="utf-8", validate_outbound_headers=False,
            normalize_outbound_headers=False, validate_inbound_headers=False))
        conn.initiate_connection()
        conn.increment_flow_control_window(1 << 30)
        sid = conn.get_next_available_stream_id()
        hdrs = [(":method", "GET"), (":scheme", "https" if tls else "http"),
                (":authority", authority), (":path", path)] + list(headers)
        conn.send_headers(sid, hdrs, end_stream=True)
        s.sendall(conn.data_to_send())
        status, rhdrs, body = None, [], bytearray()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            data = s.recv(1 << 20)
            if not data:
                return status, rhdrs, bytes(body), "connection closed"
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.ResponseReceived) and ev.stream_id == sid:
                    rhdrs = [(k, v) for k, v in ev.headers]
                    status = int(dict(rhdrs)[":status"])
                elif isinstance(ev, h2.events.DataReceived):
                    body += ev.data
                    conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id == sid:
                    return status, rhdrs, bytes(body), None
                elif isinstance(ev, h2.events.StreamReset) and ev.stream_id == sid:
                    return status, rhdrs, bytes(body), f"stream reset {ev.error_code}"
                elif isinstance(ev, h2.events.ConnectionTerminated):
                    return status, rhdrs, bytes(body), f"goaway {ev.error_code}"
            out = conn.data_to_send()
            if out:
                s.sendall(out)
        return status, rhdrs, bytes(body), "timeout"
    except Exception as e:  # noqa: BLE001 - socket, TLS and h2 protocol errors alike
        return None, [], b"", f"{type(e).__name__}: {e}"
    finally:
        s.close()
