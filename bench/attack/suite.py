"""The attack suite (run it through bench/attack/run.sh, see README.md).

Starts the scriptable origin (origin.py), the real edge (release binary) with a config of its
own on 127.0.0.1, and for the DNS attack geodns; then runs each attack while sampling the
target's RSS and CPU and running the normal client (prober.py), and prints one Markdown table
row per attack with a PASS/FAIL verdict against the attack's expectation."""

import argparse
import asyncio
import datetime
import os
import random
import resource
import secrets
import shutil
import subprocess
import sys
import threading
import time
import traceback
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from common import LOOPBACK, body_bytes, client_tls, h1_exchange, h1_get, h2_get  # noqa: E402
from lib import (CONTINUATION, END_HEADERS, END_STREAM, HEADERS, PING,  # noqa: E402
                 RST, SETTINGS, Monitor, Prober, Proc, RawH2, frame, free_port,
                 http_get_local, log, request_block, settings_payload, stop_all)

MB = 1024 * 1024
PROBE_SIZE = 16384
FIRST_BYTE_LIMIT = 5.0      # listen.header_read_timeout in the suite's config
ORIGIN_TIMEOUT = 3.0        # origin.first_byte_timeout and idle_body_timeout


class Outcome:
    def __init__(self, sent, ok, notes="", verdict=None):
        self.sent, self.ok, self.notes, self.verdict = sent, ok, notes, verdict


class Attack:
    def __init__(self, name, fn, group, gate_client=True, prober=True, target="edge",
                 expect_restart=False, rss_limit_mb=None, growth_limit_mb=None, setup=None,
                 teardown=None, fresh=False):
        self.name, self.fn, self.group = name, fn, group
        self.fresh = fresh  # restart the edge first (absolute RSS limits)
        self.setup, self.teardown = setup, teardown
        self.gate_client, self.prober, self.target = gate_client, prober, target
        self.expect_restart = expect_restart
        self.rss_limit_mb, self.growth_limit_mb = rss_limit_mb, growth_limit_mb


ATTACKS = []


def attack(name, group="held", **kw):
    def deco(fn):
        ATTACKS.append(Attack(name, fn, group, **kw))
        return fn
    return deco


def toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


class Edge:
    def __init__(self, ctx):
        self.ctx = ctx
        self.proc = None
        self.starts = 0
        self.cache_dir = os.path.join(ctx.work, "cache")
        self.overrides = {}

    def config_text(self, overrides):
        c = self.ctx
        o = f"http://127.0.0.1:{c.origin_port}"
        sections = {
            "listen": {"https": f"127.0.0.1:{c.https_port}", "http": f"127.0.0.1:{c.http_port}",
                       "admin": f"127.0.0.1:{c.admin_port}",
                       "header_read_timeout": f"{int(FIRST_BYTE_LIMIT)}s",
                       "shutdown_grace": "2s"},
            "tls": {"dev_cert_dir": os.path.join(c.work, "tls")},
            "cache": {"dir": self.cache_dir},
            "origin": {"connect_timeout": "2s", "first_byte_timeout": f"{int(ORIGIN_TIMEOUT)}s",
                       "idle_body_timeout": f"{int(ORIGIN_TIMEOUT)}s"},
            "log": {"filter": "warn", "access_log": False},
        }
        if "listen.first_request_timeout" in c.edge_keys:
            # Newer edges cut silent connections after their own first-request limit; the suite
            # uses the same 5 s for it as for header_read_timeout (older edges: unknown key).
            sections["listen"]["first_request_timeout"] = f"{int(FIRST_BYTE_LIMIT)}s"
        for sec, kv in overrides.items():
            sections.setdefault(sec, {}).update(kv)
        out = ['name = "attack-edge"', ""]
        for sec, kv in sections.items():
            out.append(f"[{sec}]")
            out += [f"{k} = {toml_value(v)}" for k, v in kv.items()]
            out.append("")
        sites = [
            (["main.test", "localhost", "127.0.0.1"], o, False),
            (["sch.test"], o, False),
            (["fwd.test"], o + "/fwd", True),
            (["fwd2.test"], o + "/fwd2", True),
            (["jail.test"], o + "/jail", False),
        ]
        for hosts, origin, fwd in sites:
            out += ["[[site]]", f"hosts = {toml_value(hosts)}", f"origin = {toml_value(origin)}"]
            if fwd:
                out.append("forward_host = true")
            out.append("")
        return "\n".join(out)

    @property
    def pid(self):
        return self.proc.pid if self.proc and self.proc.alive() else None

    def alive(self):
        return self.proc is not None and self.proc.alive()

    def start(self, overrides=None, cache_dir=None):
        if cache_dir:
            self.cache_dir = cache_dir
        self.overrides = overrides or {}
        self.starts += 1
        cfg = os.path.join(self.ctx.work, f"edge-{self.starts}.toml")
        with open(cfg, "w") as f:
            f.write(self.config_text(self.overrides))
        env = {k: v for k, v in os.environ.items() if k != "RUST_LOG"}
        self.proc = Proc("edge", [self.ctx.edge_bin, "-c", cfg],
                         os.path.join(self.ctx.work, f"edge-{self.starts}.log"), env).start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if not self.proc.alive():
                raise RuntimeError("edge exited at start: " + " | ".join(self.proc.tail(8)))
            st, _ = http_get_local(f"http://127.0.0.1:{self.ctx.admin_port}/health", 1)
            if st == 200:
                return
            time.sleep(0.1)
        raise RuntimeError("edge did not answer /health within 30 s")

    def stop(self):
        if self.proc:
            self.proc.stop()

    def restart(self, overrides=None, cache_dir=None):
        self.stop()
        self.start(overrides, cache_dir)

    def death_note(self):
        rc = self.proc.returncode() if self.proc else None
        how = f"signal {-rc}" if rc is not None and rc < 0 else f"exit {rc}"
        keys = ("overflow", "panick", "abort", "fatal", "error", "SIG")
        lines = [ln.strip() for ln in self.proc.tail(40) if any(k in ln for k in keys)]
        return f"edge died ({how}): " + (" | ".join(lines[-2:])[:300] if lines else "no message")


class Ctx:
    pass


def uniq(ctx, tag):
    ctx.counter += 1
    return f"{tag}-{ctx.run}-{ctx.counter}"


def ostats(ctx, prefix):
    import json
    st, body = http_get_local(f"http://127.0.0.1:{ctx.origin_port}/_ctl/stats?prefix="
                              + urllib.parse.quote(prefix))
    return json.loads(body) if st == 200 else {"bytes": {}, "count": {}}


def olog(ctx, contains):
    import json
    st, body = http_get_local(f"http://127.0.0.1:{ctx.origin_port}/_ctl/log?since=0", 10)
    if st != 200:
        return []
    return [e for e in json.loads(body) if contains in e["target"]]


def cache_status(resp):
    return resp.header("cache-status", "") if resp else ""


def short(resp):
    if resp is None:
        return "no response"
    cs = cache_status(resp).replace("attack-edge; ", "")
    return f"{resp.status}" + (f" [{cs}]" if cs else "")


def srcs(block, n=50):
    return [f"127.0.{block}.{i}" for i in range(1, n + 1)]


def pct(values, q):
    v = sorted(values)
    if not v:
        return None
    return v[min(len(v) - 1, max(0, int(len(v) * q + 0.999999) - 1))]


def n_(ctx, full, quick):
    return quick if ctx.quick else full


# ---- group 1: findings being fixed -------------------------------------------------------

@attack("vary-connection-crash", group="finding")
def a_vary(ctx):
    path = "/vary/" + uniq(ctx, "vary")
    raw = (f"GET {path} HTTP/1.1\r\nHost: main.test\r\nAccept-Encoding: gzip\r\n"
           "Connection: accept-encoding\r\n\r\n").encode()
    ex = h1_exchange(ctx.http_port, raw, timeout=5)
    time.sleep(0.5)
    alive = ctx.edge.alive()
    r = ex["responses"][0] if ex["responses"] else None
    ok = alive and r is not None and 200 <= r.status < 300
    note = f"answer: {short(r)}" + ("" if r else f" ({ex['error'] or 'closed'})")
    if alive:
        ex2 = h1_exchange(ctx.http_port, raw, timeout=5)
        time.sleep(0.3)
        r2 = ex2["responses"][0] if ex2["responses"] else None
        ok = ok and ctx.edge.alive() and r2 is not None and r2.status == 200
        note += f"; again: {short(r2)}"
    return Outcome("2 h1 GETs (Accept-Encoding: gzip, Connection: accept-encoding)", ok, note)


@attack("mixed-versions", group="finding", prober=False, gate_client=False)
def a_mixed(ctx):
    return Outcome("-", None, "covered by bench/checker (another helper), not run here",
                   verdict="n/a")


@attack("range-416-poison", group="finding")
def a_r416(ctx):
    name = uniq(ctx, "r416")
    size = 100_000
    path = f"/obj/{size}/{name}"
    r1, _ = h1_get(ctx.http_port, path, "main.test", [("Range", "bytes=99999999999-")])
    r2, _ = h1_get(ctx.http_port, path, "main.test")
    st3, _, b3, e3 = h2_get(ctx.https_port, path, "main.test")
    want = body_bytes(name, size)
    ok = (r2 is not None and r2.status == 200 and r2.body == want and st3 == 200 and b3 == want)
    notes = f"range: {short(r1)}; plain h1: {short(r2)}; plain h2: {st3}{' ' + e3 if e3 else ''}"
    return Outcome("Range: bytes=99999999999- then 2 plain GETs", ok, notes)


def routed_site(target):
    for prefix, site in (("/fwd2/", "fwd2.test"), ("/fwd/", "fwd.test"), ("/jail/", "jail.test")):
        if target.startswith(prefix):
            return site
    return "main.test"


@attack("host-confusion", group="finding")
def a_host(ctx):
    u = uniq(ctx, "hc")
    results = []

    def judge(label, status, tag, allow=(400,)):
        seen = olog(ctx, tag)
        if not seen:
            ok = status in allow
            results.append((ok, f"{label}: {status}, not forwarded"))
            return
        e = seen[0]
        site = routed_site(e["target"])
        hosts = e["hosts"]
        ok = hosts == [site]
        results.append((ok, f"{label}: {status}, routed {site}, origin Host {hosts}"
                        + ("" if ok else " MISMATCH")))

    def h1(raw):
        ex = h1_exchange(ctx.http_port, raw.encode(), timeout=5)
        return ex["responses"][0].status if ex["responses"] else "closed"

    t = f"hc-a-{u}"
    judge("absolute-form http://fwd2.test/ + Host fwd.test",
          h1(f"GET http://fwd2.test/{t} HTTP/1.1\r\nHost: fwd.test\r\nConnection: close\r\n\r\n"),
          t)
    t = f"hc-b-{u}"
    judge("Host evil@fwd.test",
          h1(f"GET /{t} HTTP/1.1\r\nHost: evil@fwd.test\r\nConnection: close\r\n\r\n"), t,
          allow=(400, 421))
    t = f"hc-c-{u}"
    st = h1(f"GET /{t} HTTP/1.1\r\nHost: fwd.test\r\nHost: fwd2.test\r\nConnection: close\r\n\r\n")
    seen = olog(ctx, t)
    results.append((st == 400 and not seen,
                    f"two Host: {st}" + (f", origin Host {seen[0]['hosts']}" if seen else "")
                    + ("" if st == 400 else " (want 400)")))
    t = f"hc-d-{u}"
    st, _, _, err = h2_get(ctx.https_port, f"/{t}", "fwd2.test", headers=[("host", "fwd.test")])
    judge("h2 :authority fwd2.test + host fwd.test", st if st else err, t)
    ok = all(r[0] for r in results)
    return Outcome("4 requests (h1 x3, h2 x1)", ok, "; ".join(r[1] for r in results))


@attack("scheme-confusion", group="finding")
def a_scheme(ctx):
    path = "/scheme/" + uniq(ctx, "sch")
    r1, _ = h1_get(ctx.http_port, path, "sch.test")
    r2, _ = h1_get(ctx.https_port, path, "sch.test", tls=True)
    st3, h3, b3, e3 = h2_get(ctx.https_port, path, "sch.test")
    ok = (r2 is not None and r2.status == 200 and r2.body == b"secure\n" and st3 == 200
          and b3 == b"secure\n")
    return Outcome("GET over http, then https (h1 and h2)", ok,
                   f"http: {short(r1)}; https h1: {short(r2)}; https h2: {st3}"
                   + (f" {e3}" if e3 else ""))


# ---- silent and slow connections -----------------------------------------------------------

async def hold_connections(kind, n, port, sources, wait_after, concurrency=256, slow=False,
                           slow_head=b""):
    """Opens n connections of `kind` and records when the edge closes each."""
    sem = asyncio.Semaphore(concurrency)
    recs, writers, fails = [], [], {}

    async def watch(r, rec):
        try:
            while True:
                data = await r.read(65536)
                if not data:
                    rec[2] = rec[2] or "eof"
                    break
                rec[3] += len(data)
        except (ConnectionError, OSError) as e:
            rec[2] = type(e).__name__
        except asyncio.CancelledError:
            return
        rec[1] = time.monotonic()

    async def drip(w, rec):
        try:
            w.write(slow_head)
            await w.drain()
            while rec[1] is None:
                await asyncio.sleep(1.0)
                w.write(b"a")
                await w.drain()
        except (ConnectionError, OSError):
            pass
        except asyncio.CancelledError:
            return

    async def one(i):
        src = sources[i % len(sources)]
        async with sem:
            try:
                if kind.startswith("tls-idle"):
                    alpn = ("h2",) if kind.endswith("h2") else ("http/1.1",)
                    r, w = await asyncio.wait_for(asyncio.open_connection(
                        LOOPBACK, port, ssl=client_tls(alpn), server_hostname="localhost",
                        local_addr=(src, 0)), 15)
                else:
                    r, w = await asyncio.wait_for(asyncio.open_connection(
                        LOOPBACK, port, local_addr=(src, 0)), 15)
                    if kind == "h2-partial-preface":
                        w.write(b"PRI * HTTP/2.0\r\n\r\nSM")
            except Exception as e:  # noqa: BLE001 - counted
                k = type(e).__name__
                fails[k] = fails.get(k, 0) + 1
                return None
        rec = [time.monotonic(), None, None, 0]
        recs.append(rec)
        writers.append(w)
        tasks = [asyncio.ensure_future(watch(r, rec))]
        if slow:
            tasks.append(asyncio.ensure_future(drip(w, rec)))
        return tasks

    t0 = time.monotonic()
    opened = await asyncio.gather(*[one(i) for i in range(n)])
    connect_s = time.monotonic() - t0
    watchers = [t[0] for t in opened if t]
    others = [x for t in opened if t for x in t[1:]]
    last_open = max((r[0] for r in recs), default=time.monotonic())
    remaining = last_open + wait_after - time.monotonic()
    if watchers and remaining > 0:
        await asyncio.wait(watchers, timeout=remaining)
    for t in watchers + others:
        t.cancel()
    for w in writers:
        try:
            w.transport.abort()
        except Exception:  # noqa: BLE001
            pass
    await asyncio.sleep(0.2)
    closed = [r[1] - r[0] for r in recs if r[1] is not None]
    return {"opened": len(recs), "fails": fails, "closed": len(closed),
            "p50": pct(closed, 0.5), "max": max(closed) if closed else None,
            "connect_s": connect_s, "kinds": sorted({r[2] for r in recs if r[2]})}


def silent_outcome(what, res, limit):
    grace = 2.0
    ok = res["opened"] > 0 and res["closed"] == res["opened"] and res["max"] is not None \
        and res["max"] <= limit + grace
    fmt = (lambda v: "-" if v is None else f"{v:.1f}")
    note = (f"opened {res['opened']} in {res['connect_s']:.1f}s"
            + (f" (failed {res['fails']})" if res["fails"] else "")
            + f"; edge closed {res['closed']}/{res['opened']}, after p50 {fmt(res['p50'])}s max "
            f"{fmt(res['max'])}s (limit {limit:.0f}s)")
    if res["closed"] < res["opened"]:
        note += f"; {res['opened'] - res['closed']} still open when the suite gave up"
    return Outcome(what, ok, note)


@attack("silent-tcp", group="finding")
def a_silent(ctx):
    n = n_(ctx, 10_000, 2_000)
    res = asyncio.run(hold_connections("silent", n, ctx.http_port, srcs(1),
                                       FIRST_BYTE_LIMIT + 10))
    return silent_outcome(f"{n} TCP conns to the plain port, nothing sent", res,
                          FIRST_BYTE_LIMIT)


@attack("silent-h2-preface", group="finding")
def a_silent_preface(ctx):
    n = n_(ctx, 10_000, 2_000)
    res = asyncio.run(hold_connections("h2-partial-preface", n, ctx.http_port, srcs(2),
                                       FIRST_BYTE_LIMIT + 10))
    return silent_outcome(f"{n} plain conns sending 18 of the 24 h2 preface bytes", res,
                          FIRST_BYTE_LIMIT)


@attack("silent-tls-no-hello", group="finding")
def a_silent_tls(ctx):
    n = n_(ctx, 10_000, 2_000)
    res = asyncio.run(hold_connections("silent", n, ctx.https_port, srcs(3),
                                       FIRST_BYTE_LIMIT + 10))
    return silent_outcome(f"{n} TCP conns to the TLS port, no ClientHello", res,
                          FIRST_BYTE_LIMIT)


@attack("silent-tls-idle", group="finding")
def a_silent_tls_idle(ctx):
    n = n_(ctx, 1_000, 300)

    async def both():
        return await asyncio.gather(
            hold_connections("tls-idle-h1", n, ctx.https_port, srcs(4), FIRST_BYTE_LIMIT + 10,
                             concurrency=32),
            hold_connections("tls-idle-h2", n, ctx.https_port, srcs(5), FIRST_BYTE_LIMIT + 10,
                             concurrency=32))
    h1r, h2r = asyncio.run(both())
    merged = {"opened": h1r["opened"] + h2r["opened"], "closed": h1r["closed"] + h2r["closed"],
              "fails": {**h1r["fails"], **h2r["fails"]},
              "connect_s": max(h1r["connect_s"], h2r["connect_s"]),
              "p50": h1r["p50"] if h1r["p50"] is not None else h2r["p50"],
              "max": max([v for v in (h1r["max"], h2r["max"]) if v is not None], default=None)}
    out = silent_outcome(f"{2 * n} TLS conns (half ALPN http/1.1, half h2), nothing after the "
                         "handshake", merged, FIRST_BYTE_LIMIT)
    fmt = (lambda v: "-" if v is None else f"{v:.1f}s")
    out.notes += (f" [http/1.1: closed {h1r['closed']}/{h1r['opened']} max {fmt(h1r['max'])};"
                  f" h2: closed {h2r['closed']}/{h2r['opened']} max {fmt(h2r['max'])}]")
    out.ok = out.ok and h1r["closed"] == h1r["opened"] and h2r["closed"] == h2r["opened"]
    return out


@attack("slowloris")
def a_slowloris(ctx):
    n = n_(ctx, 2_000, 300)
    head = b"GET /obj/16384/slow HTTP/1.1\r\nHost: main.test\r\nX-Slow: "
    res = asyncio.run(hold_connections("slow", n, ctx.http_port, srcs(6), FIRST_BYTE_LIMIT + 10,
                                       slow=True, slow_head=head))
    return silent_outcome(f"{n} h1 conns, one header byte per second", res, FIRST_BYTE_LIMIT)


# ---- HTTP/3 ---------------------------------------------------------------------------------

def run_h3idle(ctx, args, timeout, sources):
    """h3idle from `sources` (a list of local addresses); its probes come from 127.0.0.1."""
    import json
    cmd = [ctx.h3idle_bin, "--connect", f"127.0.0.1:{ctx.https_port}", "--server-name",
           "localhost", "--probe-url", f"https://main.test{ctx.probe_path}",
           "--probe-interval", "1", "--bind", ",".join(sources)] + args
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"h3idle failed: {p.stderr.strip()[-300:]}")
    return json.loads(p.stdout)


def h3_notes(rep):
    pr = rep["probes"]
    cb = rep["closed_by_server"]
    note = (f"established {rep['established']}/{rep['requested']} in {rep['setup_s']:.1f}s"
            + (f" (failed: {rep['failures']})" if rep["failed"] else "")
            + f"; held {rep['hold_s']:.0f}s; edge closed {cb['count']}"
            + (f" (after {cb['min_s']:.0f}-{cb['max_s']:.0f}s, {rep['close_reasons']})"
               if cb["count"] else "")
            + f"; open at end {rep['open_at_end']}"
            + f"; new h3 clients: {pr['ok']}/{pr['attempts']} ok"
            + (f" p99 {pr['p99_ms']:.0f}ms" if pr["ok"] else "")
            + (f" errors {pr['errors']}" if pr["errors"] else ""))
    return note


@attack("idle-h3", group="finding", rss_limit_mb=200, fresh=True)
def a_idle_h3(ctx):
    n = n_(ctx, 10_000, 1_000)
    hold = n_(ctx, 40, 5)
    rep = run_h3idle(ctx, ["-c", str(n), "--hold", str(hold)], 300, srcs(12))
    probes_ok = rep["probes"]["attempts"] > 0 and rep["probes"]["ok"] == rep["probes"]["attempts"]
    return Outcome(f"{n} QUIC handshakes from 50 addresses, then nothing for {hold}s", probes_ok,
                   h3_notes(rep))


@attack("idle-h3-one-source", group="finding", rss_limit_mb=200, fresh=True)
def a_idle_h3_one(ctx):
    n = n_(ctx, 10_000, 1_000)
    hold = 5
    rep = run_h3idle(ctx, ["-c", str(n), "--hold", str(hold), "--connect-timeout", "2"], 300,
                     ["127.0.13.1"])
    probes_ok = rep["probes"]["attempts"] > 0 and rep["probes"]["ok"] == rep["probes"]["attempts"]
    return Outcome(f"{n} QUIC handshakes from one address, then nothing for {hold}s", probes_ok,
                   h3_notes(rep))


@attack("idle-h3-partial-headers", group="finding", rss_limit_mb=200, fresh=True)
def a_idle_h3_partial(ctx):
    n = n_(ctx, 1_000, 200)
    streams = 10
    hold = n_(ctx, 20, 5)
    rep = run_h3idle(ctx, ["-c", str(n), "--hold", str(hold), "--mode", "partial-headers",
                           "--streams", str(streams)], 300, srcs(14))
    ok = rep["probes"]["attempts"] > 0 and rep["probes"]["ok"] == rep["probes"]["attempts"]
    se = rep["streams_ended_by_server"]
    note = (h3_notes(rep) + f"; partial streams {rep['streams_opened']}, ended by edge "
            f"{se['count']}" + (f" after {se['min_s']:.1f}-{se['max_s']:.1f}s "
                                f"{rep['stream_end_kinds']}" if se["count"] else ""))
    return Outcome(f"{n} h3 conns x {streams} streams with 16 of 256 HEADERS bytes, "
                   f"held {hold}s", ok, note)


# ---- HTTP/2 floods ---------------------------------------------------------------------------

@attack("h2-zero-window", group="finding", growth_limit_mb=64)
def a_zero_window(ctx):
    conns = 12
    streams = 256
    hold = n_(ctx, 30, 8)
    path = ctx.big_path

    async def run():
        hs = []
        for i in range(conns):
            h = RawH2(ctx.https_port, src=f"127.0.7.{i + 1}", settings=[(0x4, 0), (0x2, 0)])
            await h.open()
            hs.append(h)
        for h in hs:
            try:
                await asyncio.wait_for(h.remote_settings.wait(), 5)
            except asyncio.TimeoutError:
                pass
        block = request_block(path)
        for h in hs:
            data = b"".join(frame(HEADERS, END_HEADERS | END_STREAM, 2 * k + 1, block)
                            for k in range(streams))
            await h.send(data)
        await asyncio.sleep(hold)
        res = {"headers": sum(h.counts.get(HEADERS, 0) for h in hs),
               "data": sum(h.data_bytes for h in hs),
               "rst": sum(h.counts.get(RST, 0) for h in hs),
               "goaway": [h.goaway for h in hs if h.goaway],
               "closed": sum(1 for h in hs if h.closed_at)}
        for h in hs:
            h.close()
        return res
    res = asyncio.run(run())
    return Outcome(f"{conns} h2 conns x {streams} streams of the cached 8 MiB object, "
                   f"INITIAL_WINDOW_SIZE=0, {hold}s", True,
                   f"edge sent {res['headers']} response "
                   f"heads, {res['data']} DATA bytes, {res['rst']} RST_STREAM, goaway "
                   f"{res['goaway'][:2]}, closed {res['closed']}/{conns}")


@attack("h2-rapid-reset", growth_limit_mb=64)
def a_rapid_reset(ctx):
    conns = 4
    per = n_(ctx, 20_000, 3_000)
    limit_s = n_(ctx, 15, 5)

    async def one(i):
        h = RawH2(ctx.https_port, src=f"127.0.8.{i + 1}")
        await h.open()
        block = request_block(ctx.probe_path)
        sent = 0
        deadline = time.monotonic() + limit_s
        sid = 1
        try:
            while sent < per and time.monotonic() < deadline and h.closed_at is None:
                batch = []
                for _ in range(200):
                    batch.append(frame(HEADERS, END_HEADERS | END_STREAM, sid, block))
                    batch.append(frame(RST, 0, sid, (8).to_bytes(4, "big")))
                    sid += 2
                    sent += 1
                await h.send(b"".join(batch), timeout=max(0.1, deadline - time.monotonic()))
        except (ConnectionError, OSError, asyncio.TimeoutError):
            pass
        await asyncio.sleep(0.5)
        h.close()
        return sent, h.goaway, h.closed_at is not None

    async def run():
        return await asyncio.gather(*[one(i) for i in range(conns)])
    t0 = time.monotonic()
    res = asyncio.run(run())
    took = time.monotonic() - t0
    sent = sum(r[0] for r in res)
    goaways = [r[1] for r in res if r[1]]
    return Outcome(f"{conns} h2 conns, up to {per} HEADERS+RST_STREAM each ({sent} sent in "
                   f"{took:.1f}s)", True,
                   f"edge sent GOAWAY on {len(goaways)}/{conns} {goaways[:1]} and closed "
                   f"{sum(1 for r in res if r[2])}/{conns} connections")


@attack("h2-continuation-flood", growth_limit_mb=64)
def a_continuation(ctx):
    limit_bytes = n_(ctx, 64 * MB, 16 * MB)
    limit_s = n_(ctx, 10, 5)

    async def run():
        h = RawH2(ctx.https_port, src="127.0.9.1")
        await h.open()
        block = request_block(ctx.probe_path)
        # Two literal header fields (no indexing, new name) of 8000-byte values per frame:
        # 16,024 bytes, under the default SETTINGS_MAX_FRAME_SIZE of 16,384.
        field = b"\x00\x07x-flood" + hpack_int(8000, 7) + b"a" * 8000
        piece = field * 2
        sent = 0
        await h.send(frame(HEADERS, 0, 1, block))
        deadline = time.monotonic() + limit_s
        try:
            while sent < limit_bytes and time.monotonic() < deadline and h.closed_at is None:
                data = b"".join(frame(CONTINUATION, 0, 1, piece) for _ in range(16))
                await h.send(data, timeout=max(0.1, deadline - time.monotonic()))
                sent += len(data)
        except (ConnectionError, OSError, asyncio.TimeoutError):
            pass
        await asyncio.sleep(0.5)
        res = (sent, h.goaway, h.closed_at is not None, h.close_how)
        h.close()
        return res
    sent, goaway, closed, how = asyncio.run(run())
    return Outcome(f"1 h2 stream, HEADERS then CONTINUATION frames ({sent // 1024} KiB sent)",
                   True, f"edge: goaway {goaway}, closed={closed} ({how})")


def hpack_int(value, prefix_bits, first=0):
    """RFC 7541 5.1 integer with a prefix of `prefix_bits` bits."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = [first | limit]
    value -= limit
    while value >= 128:
        out.append(value % 128 | 0x80)
        value //= 128
    out.append(value)
    return bytes(out)


def control_flood(ctx, ftype, payload_fn, count, label):
    limit_s = n_(ctx, 10, 4)

    async def one(read, src):
        h = RawH2(ctx.https_port, src=src, read=read, auto_ack=False)
        await h.open()
        sent = 0
        deadline = time.monotonic() + limit_s
        try:
            while sent < count and time.monotonic() < deadline and h.closed_at is None:
                data = b"".join(frame(ftype, 0, 0, payload_fn(sent + k)) for k in range(500))
                await h.send(data, timeout=max(0.1, deadline - time.monotonic()))
                sent += 500
        except (ConnectionError, OSError, asyncio.TimeoutError):
            pass
        await asyncio.sleep(0.3)
        res = (sent, h.rx_bytes, h.goaway, h.closed_at is not None or h.close_how)
        h.close()
        return res

    async def run():
        return await asyncio.gather(one(True, "127.0.10.1"), one(False, "127.0.10.2"))
    (s1, rx1, g1, c1), (s2, _, _, _) = asyncio.run(run())
    return Outcome(f"2 h2 conns x up to {count} {label} frames ({s1} sent on the reading "
                   f"one, {s2} on the one that never reads)", True,
                   f"reading conn got {rx1 // 1024} KiB back, goaway {g1}, closed {bool(c1)}")


@attack("h2-ping-flood", growth_limit_mb=64)
def a_ping(ctx):
    return control_flood(ctx, PING, lambda i: i.to_bytes(8, "big"), n_(ctx, 200_000, 50_000),
                         "PING")


@attack("h2-settings-flood", growth_limit_mb=64)
def a_settings(ctx):
    return control_flood(ctx, SETTINGS,
                         lambda i: settings_payload([(0x4, 65535 + (i & 1)), (0x1, 4096)]),
                         n_(ctx, 100_000, 30_000), "SETTINGS")


# ---- cache and origin behaviour ------------------------------------------------------------

def full_disk_setup(ctx):
    mnt = os.path.join(ctx.work, "tmpfs-cache")
    os.makedirs(mnt, exist_ok=True)
    m = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=50m", "tmpfs", mnt],
                       capture_output=True, text=True)
    if m.returncode != 0:
        ctx.skip = f"cannot mount a tmpfs: {m.stderr.strip()}"
        return
    ctx.mounted.append(mnt)
    ctx.edge.restart(cache_dir=mnt)


def full_disk_teardown(ctx):
    mnt = os.path.join(ctx.work, "tmpfs-cache")
    if mnt in ctx.mounted:
        ctx.edge.stop()
        subprocess.run(["umount", mnt], capture_output=True)
        ctx.mounted.remove(mnt)
        ctx.edge.start(cache_dir=os.path.join(ctx.work, "cache"))


@attack("full-disk", group="finding", setup=full_disk_setup, teardown=full_disk_teardown)
def a_full_disk(ctx):
    mnt = os.path.join(ctx.work, "tmpfs-cache")
    n = n_(ctx, 100, 70)
    whole, errors = 0, {}
    for i in range(n):
        name = uniq(ctx, "fd")
        r, ex = h1_get(ctx.http_port, f"/obj/{MB}/{name}", "main.test", timeout=20)
        if r is not None and r.status == 200 and r.complete and r.body == body_bytes(name, MB):
            whole += 1
        else:
            k = short(r) if r else (ex["error"] or "closed")
            k = k if r is None or r.status != 200 else f"200 body {len(r.body)}B"
            errors[k] = errors.get(k, 0) + 1
    df = shutil.disk_usage(mnt)
    st_admin, b_admin = http_get_local(f"http://127.0.0.1:{ctx.admin_port}/health")
    r_pub, _ = h1_get(ctx.http_port, "/.quicdn/health", "main.test")
    alive = ctx.edge.alive()
    health_reports = (st_admin != 200 or b_admin.strip() != b"ok")
    ok = alive and whole == n and health_reports
    note = (f"served whole {whole}/{n}" + (f" {errors}" if errors else "")
            + f"; tmpfs used {df.used // MB}/{df.total // MB} MiB; admin /health: {st_admin} "
            f"{b_admin.strip()[:40].decode('latin-1')!r}; public health: "
            f"{r_pub.status if r_pub else '-'}"
            + ("" if health_reports else " (health does not report the full disk)"))
    return Outcome(f"{n} distinct uncached 1 MiB GETs, cache on a 50 MiB tmpfs", ok, note)


def small_max_setup(ctx):
    ctx.edge.restart({"cache": {"max_object_size": "1 MiB"}})


def small_max_teardown(ctx):
    ctx.edge.restart()


@attack("chunked-over-max", group="finding", setup=small_max_setup,
        teardown=small_max_teardown)
def a_chunked(ctx):
    name = uniq(ctx, "ch")
    size = 3 * MB
    path = f"/chunked/{size}/{name}"
    want = body_bytes(name, size)
    got = []
    for _ in range(2):
        r, ex = h1_get(ctx.http_port, path, "main.test", timeout=20)
        got.append((r.status, len(r.body), r.complete, r.body == want) if r else
                   (ex["error"] or "closed",))
    st, _, b, e = h2_get(ctx.https_port, path, "main.test", timeout=20)
    got.append((st, len(b), e is None, b == want))
    ok = all(len(g) == 4 and g[0] == 200 and g[2] and g[3] for g in got)
    note = "; ".join(
        (f"{g[0]} {g[1]}B{'' if g[2] else ' cut'}{'' if g[3] else ' WRONG'}" if len(g) == 4
         else str(g[0])) for g in got)
    return Outcome("3 MiB chunked body, max_object_size 1 MiB: 2 h1 GETs + 1 h2 GET",
                   ok, note)


@attack("multi-range-amplification", group="finding")
def a_multirange(ctx):
    name = uniq(ctx, "mr")
    size = MB
    path = f"/obj/{size}/{name}"
    rng = "bytes=" + ",".join(["0-"] * 100)
    r, ex = h1_get(ctx.http_port, path, "main.test", [("Range", rng)], timeout=60)
    time.sleep(0.5)
    sent = ostats(ctx, path)["bytes"].get(path, 0)
    ok = sent <= size
    return Outcome("1 GET, Range: 100 x bytes=0- (1 MiB object, uncached)", ok,
                   f"client got {short(r)} {len(r.body) if r else 0} B; origin sent {sent} B "
                   f"({sent / size:.1f}x the object)")


@attack("bare-304", group="finding")
def a_bare304(ctx):
    path = "/b304/" + uniq(ctx, "b304")
    want = b"bare-304 body v1\n"
    rs = [h1_get(ctx.http_port, path, "main.test")[0] for _ in range(3)]
    ok = all(r is not None and r.status == 200 and r.body == want for r in rs)
    count = ostats(ctx, path)["count"].get(path, 0)
    return Outcome("3 GETs: 200 (ETag, no-cache), then revalidations answered by bare 304s", ok,
                   "; ".join(f"{short(r)} {len(r.body) if r else 0}B" for r in rs)
                   + f"; origin asked {count}x")


def normalize(path):
    """How a typical origin file server reads a path: percent-decoded, dot segments removed."""
    p = urllib.parse.unquote(path).replace("\\", "/")
    out = []
    for seg in p.split("/"):
        if seg == "..":
            if out:
                out.pop()
        elif seg not in (".", ""):
            out.append(seg)
    return "/" + "/".join(out)


def path_escape(ctx, probes, h2_probes, what):
    """GETs `probes` (h1) and `h2_probes` on jail.test (origin prefix /jail) and checks what
    the origin saw: percent-decoded with dot segments removed, it must stay under /jail/."""
    u = uniq(ctx, "pe")
    per = []
    for i, (label, t) in enumerate(probes):
        t = t.format(f"{u}-{i}")
        ex = h1_exchange(ctx.http_port, f"GET {t} HTTP/1.1\r\nHost: jail.test\r\nConnection: "
                         "close\r\n\r\n".encode(), timeout=5)
        per.append((label, f"{u}-{i}", ex["responses"][0].status if ex["responses"] else "closed"))
    for i, (label, t) in enumerate(h2_probes):
        tag = f"{u}-h2-{i}"
        st, _, _, e = h2_get(ctx.https_port, t.format(tag), "jail.test")
        per.append((label, tag, st or e))
    seen = {}
    for e in olog(ctx, f"secret-{u}"):
        seen.setdefault(e["target"].rsplit("secret-", 1)[1], []).append(e["target"])
    notes, escapes = [], 0
    for label, tag, status in per:
        got = seen.get(tag, [])
        bad = [t for t in got if not normalize(urllib.parse.urlsplit(t).path).startswith("/jail/")]
        escapes += bool(bad)
        if bad:
            notes.append(f"{label}: {status}, origin got {bad[0]} (ESCAPES)")
        elif got:
            notes.append(f"{label}: {status}, origin got {got[0]}")
        else:
            notes.append(f"{label}: {status}")
    return Outcome(f"{len(per)} GETs {what} to a site with origin prefix /jail", escapes == 0,
                   f"{escapes} escaped; " + "; ".join(notes))


@attack("path-escape", group="finding")
def a_path(ctx):
    return path_escape(ctx, [("/../", "/../secret-{}"), ("/%2e%2e/", "/%2e%2e/secret-{}"),
                             ("/a/%2E%2E/%2e%2e/", "/a/%2E%2E/%2e%2e/secret-{}"),
                             ("/.%2e/", "/.%2e/secret-{}"), ("/a/../../", "/a/../../secret-{}"),
                             ("//../", "//../secret-{}")],
                       [("h2 /../", "/../secret-{}"), ("h2 /%2e%2e/", "/%2e%2e/secret-{}")],
                       "with dot segments")


@attack("path-escape-encoded-slash", group="finding")
def a_path_slash(ctx):
    return path_escape(ctx, [("/..%2f", "/..%2fsecret-{}"), ("/%2e%2e%2f", "/%2e%2e%2fsecret-{}"),
                             ("/%2e%2e%2f%2e%2e%2f", "/%2e%2e%2f%2e%2e%2fsecret-{}"),
                             ("/..\\", "/..\\secret-{}"), ("/..%5c", "/..%5csecret-{}")],
                       [("h2 /..%2f", "/..%2fsecret-{}")],
                       "with encoded slashes or backslashes before dots")


# ---- request smuggling -------------------------------------------------------------------------

def smuggle_probes(u):
    def inner(tag):
        return f"GET /smuggled/{tag}-{u} HTTP/1.1\r\nHost: main.test\r\n\r\n"
    probes = {}
    s = inner("clte")
    body = "0\r\n\r\n" + s
    probes["CL+TE"] = (f"POST /obj/16/sm-clte-{u} HTTP/1.1\r\nHost: main.test\r\n"
                       f"Content-Length: {len(body)}\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
    s = inner("fold")
    body = "0\r\n\r\n" + s
    probes["TE obs-fold"] = (f"POST /obj/16/sm-fold-{u} HTTP/1.1\r\nHost: main.test\r\n"
                             f"Content-Length: {len(body)}\r\nTransfer-Encoding: x\r\n chunked\r\n"
                             "\r\n" + body)
    s = inner("dcl")
    probes["double CL"] = (f"POST /obj/16/sm-dcl-{u} HTTP/1.1\r\nHost: main.test\r\n"
                           f"Content-Length: 0\r\nContent-Length: {len(s)}\r\n\r\n" + s)
    s = inner("ovf")
    body = "10000000000000005\r\nhello\r\n0\r\n\r\n" + s
    probes["chunk-size overflow"] = (f"POST /obj/16/sm-ovf-{u} HTTP/1.1\r\nHost: main.test\r\n"
                                     "Transfer-Encoding: chunked\r\n\r\n" + body)
    s = inner("lf")
    body = "0\r\n\r\n" + s
    probes["bare LF"] = (f"POST /obj/16/sm-lf-{u} HTTP/1.1\r\nHost: main.test\r\n"
                         f"Content-Length: {len(body)}\r\nX-Pad: z\nTransfer-Encoding: chunked\r\n"
                         "\r\n" + body)
    s = inner("te2")
    body = "0\r\n\r\n" + s
    probes["TE: chunked, identity"] = (
        f"POST /obj/16/sm-te2-{u} HTTP/1.1\r\nHost: main.test\r\nContent-Length: {len(body)}\r\n"
        "Transfer-Encoding: chunked, identity\r\n\r\n" + body)
    return probes


@attack("h1-smuggling")
def a_smuggling(ctx):
    u = uniq(ctx, "sm")
    results = []
    for label, raw in smuggle_probes(u).items():
        ex = h1_exchange(ctx.http_port, raw.encode("latin-1"), timeout=5, want=1, linger=1.5)
        rs = ex["responses"]
        first = rs[0].status if rs else ("closed" if ex["closed"] else "no answer")
        results.append((label, first, len(rs), ex["closed"]))
    time.sleep(0.3)
    smuggled = olog(ctx, "/smuggled/")
    smuggled = [e["target"] for e in smuggled if u in e["target"]]
    bad = [r for r in results if r[2] >= 2]
    ok = not smuggled and not bad
    notes = "; ".join(f"{lab}: {first}{' +second answer' if n >= 2 else ''}"
                      f"{', closed' if closed else ', kept open'}"
                      for lab, first, n, closed in results)
    notes += f"; smuggled requests at origin: {len(smuggled)} {smuggled[:2]}"
    return Outcome(f"{len(results)} h1 desync probes", ok, notes)


# ---- faulty origins --------------------------------------------------------------------------

def faulty(ctx, kind, limit, head_ok):
    path = f"/fault/{kind}/" + uniq(ctx, "f")
    out = []
    for _ in range(2):
        t0 = time.monotonic()
        r, ex = h1_get(ctx.http_port, path, "main.test", timeout=ORIGIN_TIMEOUT + 15)
        out.append((r, time.monotonic() - t0, ex))
    count = ostats(ctx, path)["count"].get(path, 0)

    def good(r, dt):
        if dt > limit:
            return False
        if r is None:
            return False
        if r.status in (502, 504):
            return True
        return head_ok and r.status == 200 and not r.complete
    ok = all(good(r, dt) for r, dt, _ in out) and count == 2
    note = "; ".join(f"{short(r)}{'' if r is None or r.complete else ' body cut off'} in "
                     f"{dt:.1f}s" for r, dt, _ in out)
    note += f"; origin asked {count}x (2 = nothing stored); limit {limit:.0f}s"
    return Outcome(f"2 GETs, origin {kind}", ok, note)


@attack("origin-hang-head")
def a_f_head(ctx):
    return faulty(ctx, "hang-head", ORIGIN_TIMEOUT + 2, False)


@attack("origin-hang-body")
def a_f_body(ctx):
    return faulty(ctx, "hang-body", ORIGIN_TIMEOUT + 2, True)


@attack("origin-short-cl")
def a_f_short(ctx):
    return faulty(ctx, "short-cl", 2, True)


@attack("origin-garbage")
def a_f_garbage(ctx):
    return faulty(ctx, "garbage", 2, False)


@attack("origin-reset")
def a_f_reset(ctx):
    return faulty(ctx, "reset", 2, False)


# ---- crash and restart -----------------------------------------------------------------------

@attack("kill9-restart", gate_client=False, expect_restart=True)
def a_kill9(ctx):
    m = n_(ctx, 40, 15)
    rnd = random.Random(7)
    objs = []
    for i in range(m):
        size = rnd.choice([64 * 1024, 300 * 1024, MB, 2 * MB + 12345, 3 * MB])
        objs.append((f"/obj/{size}/" + uniq(ctx, "k9"), size))
    stop = threading.Event()
    stats = {"ok": 0, "bad": 0, "err": 0}

    def load(seed):
        order = list(objs)
        random.Random(seed).shuffle(order)
        for path, size in order * 3:
            if stop.is_set():
                return
            r, _ = h1_get(ctx.http_port, path, "main.test", timeout=10)
            name = path.split("/", 3)[3]
            if r is None or r.status != 200:
                stats["err"] += 1
            elif r.complete and r.body == body_bytes(name, size):
                stats["ok"] += 1
            elif not r.complete:
                stats["err"] += 1
            else:
                stats["bad"] += 1
    threads = [threading.Thread(target=load, args=(s,), daemon=True) for s in range(4)]
    for t in threads:
        t.start()
    time.sleep(n_(ctx, 2.0, 1.0))
    old = ctx.edge.proc.pid
    ctx.edge.proc.kill9()
    t0 = time.monotonic()
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join(15)
    try:
        ctx.edge.start()
        restart_s = time.monotonic() - t0
    except RuntimeError as e:
        return Outcome("kill -9 under load", False, f"restart failed: {e}")
    ctx.warm()
    corrupt, bad_status, hits = 0, {}, 0
    for path, size in objs:
        name = path.split("/", 3)[3]
        for _ in range(2):
            r, ex = h1_get(ctx.http_port, path, "main.test", timeout=20)
            if r is None or r.status != 200 or not r.complete:
                k = short(r) if r else (ex["error"] or "closed")
                bad_status[k] = bad_status.get(k, 0) + 1
            elif r.body != body_bytes(name, size):
                corrupt += 1
            elif "hit" in cache_status(r):
                hits += 1
    ok = corrupt == 0 and not bad_status and stats["bad"] == 0
    return Outcome(f"4 h1 loaders over {m} objects (64 KiB-3 MiB), kill -9 (pid {old}) after "
                   f"{n_(ctx, 2, 1)}s, restart on the same cache", ok,
                   f"before the kill: {stats['ok']} ok, {stats['err']} failed, {stats['bad']} "
                   f"wrong bodies; back in {restart_s:.1f}s; after: {2 * m} GETs, corrupt "
                   f"{corrupt}, errors {bad_status or 0}, hits {hits}")


# ---- DNS ---------------------------------------------------------------------------------------

def garbage_packets(rnd, n):
    import struct
    q = (struct.pack(">HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
         + b"\x03www\x03cdn\x04test\x00" + struct.pack(">HH", 1, 1))
    kinds = []
    for i in range(n):
        k = i % 6
        if k == 0:
            p = rnd.randbytes(rnd.randint(0, 512))
        elif k == 1:
            p = q[:rnd.randint(0, len(q) - 1)]
        elif k == 2:  # header claims many records that are not there
            p = struct.pack(">HHHHHH", rnd.getrandbits(16), 0x0100, 65535, 65535, 65535, 65535)
        elif k == 3:  # compression pointer loop
            p = struct.pack(">HHHHHH", rnd.getrandbits(16), 0x0100, 1, 0, 0, 0) + b"\xc0\x0c" + \
                struct.pack(">HH", 1, 1)
        elif k == 4:  # EDNS OPT with a bogus ECS option
            opt = b"\x00" + struct.pack(">HHIH", 41, 4096, 0, 8) + struct.pack(">HH", 8, 4) + \
                rnd.randbytes(4)
            p = struct.pack(">HHHHHH", rnd.getrandbits(16), 0x0100, 1, 0, 0, 1) + q[12:] + opt
        else:  # valid header, label longer than the packet
            p = q[:12] + b"\x3f" + rnd.randbytes(20)
        kinds.append(p)
    return kinds


@attack("dns-garbage", prober=False, gate_client=False, target="geodns")
def a_dns(ctx):
    n = n_(ctx, 100_000, 20_000)
    spread = n_(ctx, 10.0, 4.0)
    import socket as sk
    rnd = random.Random(11)
    packets = garbage_packets(rnd, n)
    dig_results = []
    stop = threading.Event()

    def dig_loop():
        while not stop.is_set():
            t0 = time.monotonic()
            p = subprocess.run(["dig", "@127.0.0.1", "-p", str(ctx.dns_port), "www.cdn.test", "A",
                                "+time=1", "+tries=1", "+short"], capture_output=True, text=True)
            dt = (time.monotonic() - t0) * 1000
            lines = [ln.strip() for ln in p.stdout.splitlines() if ln.strip()]
            # +short prints the address alone; a timed-out try prints ";; ... timed out".
            ok = lines == ["127.0.0.1"]
            dig_results.append((time.time(), "dns", ok, dt,
                                None if ok else (" ".join(lines)[:60] or "no answer")))
            stop.wait(0.2)
    t = threading.Thread(target=dig_loop, daemon=True)
    t.start()
    time.sleep(0.5)
    s = sk.socket(sk.AF_INET, sk.SOCK_DGRAM)
    s.bind(("127.0.11.1", 0))
    s.setblocking(False)
    t0 = time.monotonic()
    sent = 0
    batch = max(1, n // int(spread * 20))
    for i in range(0, n, batch):
        for p in packets[i:i + batch]:
            try:
                s.sendto(p, (LOOPBACK, ctx.dns_port))
                sent += 1
            except BlockingIOError:
                time.sleep(0.001)
            except OSError:
                pass
        target = t0 + (i + batch) / n * spread
        rest = target - time.monotonic()
        if rest > 0:
            time.sleep(rest)
    took = time.monotonic() - t0
    time.sleep(1.0)
    stop.set()
    t.join(5)
    s.close()
    from lib import summarize
    ctx.client_override = summarize(dig_results)
    alive = ctx.geodns.alive()
    cs = ctx.client_override
    ok = alive and cs["n"] > 0 and cs["ok"] == cs["n"]
    return Outcome(f"{sent} garbage UDP packets in {took:.1f}s (random, truncated, bad counts, "
                   "pointer loops, bad ECS, long labels)", ok,
                   f"geodns alive={alive}; dig www.cdn.test: {cs['ok']}/{cs['n']} answered"
                   + (f", slowest {cs['max']:.0f} ms" if cs["max"] else "")
                   + (f" {cs['errors']}" if cs["errors"] else ""))


ORDER = ["vary-connection-crash", "mixed-versions", "range-416-poison", "host-confusion",
         "scheme-confusion", "silent-tcp", "silent-h2-preface", "silent-tls-no-hello",
         "silent-tls-idle", "idle-h3", "idle-h3-one-source", "idle-h3-partial-headers",
         "h2-zero-window", "full-disk", "chunked-over-max", "multi-range-amplification",
         "bare-304", "path-escape", "path-escape-encoded-slash", "slowloris", "h2-rapid-reset",
         "h2-continuation-flood", "h2-ping-flood", "h2-settings-flood", "h1-smuggling",
         "origin-hang-head", "origin-hang-body", "origin-short-cl", "origin-garbage",
         "origin-reset", "kill9-restart", "dns-garbage"]
ATTACKS.sort(key=lambda a: ORDER.index(a.name))


# ---- runner --------------------------------------------------------------------------------------

def edge_keys(edge_bin):
    """The config keys ("section.key") this edge binary knows, from --print-config."""
    p = subprocess.run([edge_bin, "--print-config"], capture_output=True, text=True, timeout=30)
    keys, section = set(), ""
    for line in p.stdout.splitlines():
        line = line.strip()
        if line.startswith("[") and not line.startswith("[["):
            section = line.strip("[]")
        elif "=" in line and not line.startswith("#"):
            keys.add(f"{section}.{line.split('=', 1)[0].strip()}")
    return keys


def geodns_config(ctx):
    return f"""default_order = ["lo1"]

[listen]
dns = "127.0.0.1:{ctx.dns_port}"
admin = "127.0.0.1:{ctx.dns_admin_port}"

[log]
filter = "warn"

[[pop]]
name = "lo1"
latitude = 50.0
longitude = 8.0
ipv4 = ["127.0.0.1"]

[[zone]]
name = "cdn.test."
ns = ["ns1.cdn.test."]

[zone.soa]
mname = "ns1.cdn.test."
rname = "hostmaster.cdn.test."
serial = 1

[[zone.record]]
name = "ns1"
type = "A"
value = "127.0.0.53"

[[zone.geo]]
name = "www"
"""


def start_geodns(ctx):
    cfg = os.path.join(ctx.work, "geodns.toml")
    with open(cfg, "w") as f:
        f.write(geodns_config(ctx))
    env = {k: v for k, v in os.environ.items() if k != "RUST_LOG"}
    ctx.geodns = Proc("geodns", [ctx.geodns_bin, "--config", cfg],
                      os.path.join(ctx.work, "geodns.log"), env).start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if not ctx.geodns.alive():
            raise RuntimeError("geodns exited: " + " | ".join(ctx.geodns.tail(5)))
        p = subprocess.run(["dig", "@127.0.0.1", "-p", str(ctx.dns_port), "www.cdn.test", "A",
                            "+time=1", "+tries=1", "+short"], capture_output=True, text=True)
        if "127.0.0.1" in p.stdout:
            return
        time.sleep(0.2)
    raise RuntimeError("geodns did not answer www.cdn.test within 20 s")


def warm(ctx):
    """Makes sure the prober's object (and the big object) are cached."""
    for path, host in ((ctx.probe_path, "main.test"), (ctx.big_path, "main.test")):
        for _ in range(3):
            r, _ = h1_get(ctx.http_port, path, host, timeout=20)
            if r is not None and r.status == 200 and "hit" in cache_status(r):
                break
            time.sleep(0.1)


def fmt_row(name, out, mon, client, verdict):
    rss = (f"{mon.base_kb / 1024:.0f} → {mon.peak_kb / 1024:.0f}"
           if mon and mon.base_kb is not None else "-")
    cpu = f"{mon.cpu_s:.1f}" if mon else "-"
    if client and client.get("n"):
        cl = f"{client['rate']:.1f}% ({client['ok']}/{client['n']})"
        p99 = f"{client['p99']:.0f}" if client["p99"] is not None else "-"
    else:
        cl, p99 = "-", "-"
    notes = out.notes.replace("|", "/").replace("\n", " ")
    return f"| {name} | {out.sent} | {rss} | {cpu} | {cl} | {p99} | **{verdict}** | {notes} |"


HEADER = ("| attack | sent | edge RSS MB (start → peak) | CPU s | normal client ok "
          "| client p99 ms | verdict | notes |\n|---|---|---:|---:|---:|---:|---|---|")


def run_one(ctx, a):
    log(f"--- {a.name}")
    ctx.client_override = None
    ctx.skip = None
    if a.target == "edge" and not ctx.edge.alive():
        log("edge not running: restarting it")
        ctx.edge.start()
    if a.fresh:
        ctx.edge.restart()
    if a.setup:
        a.setup(ctx)
    if ctx.skip:
        if a.teardown:
            a.teardown(ctx)
        out = Outcome("-", None, ctx.skip, verdict="SKIP")
        log(f"SKIP {a.name}: {ctx.skip}")
        return fmt_row(a.name, out, None, None, "SKIP"), "SKIP"
    if a.target == "edge":
        ctx.warm()
    pid_fn = (lambda: ctx.edge.pid) if a.target == "edge" else (lambda: ctx.geodns.pid)
    mon = Monitor(pid_fn).start()
    ctx.monitor = mon
    prober = None
    if a.prober:
        prober = Prober(ctx.work, sys.executable, ctx.http_port, ctx.https_port, ctx.probe_path,
                        ctx.probe_name, PROBE_SIZE, a.name, 400).start()
    t0 = time.monotonic()
    try:
        out = a.fn(ctx)
    except Exception as e:  # noqa: BLE001 - an attack that breaks is a FAIL, not a crash
        traceback.print_exc()
        out = Outcome("-", False, f"attack tool error: {type(e).__name__}: {str(e)[:200]}")
    took = time.monotonic() - t0
    client = prober.stop() if prober else ctx.client_override
    mon.stop()
    verdict = out.verdict
    died = a.target == "edge" and not ctx.edge.alive() and not a.expect_restart
    if died:
        out.notes += "; " + ctx.edge.death_note()
        out.ok = False
    if verdict is None:
        ok = bool(out.ok)
        if a.gate_client and client and client.get("n"):
            if client["ok"] < client["n"]:
                ok = False
                errs = ", ".join(f"{k} x{v}" for k, v in list(client["errors"].items())[:3])
                out.notes += f"; normal client failed: {errs}"
        if a.rss_limit_mb:
            out.notes += f"; peak RSS {mon.peak_kb / 1024:.0f} MB (limit {a.rss_limit_mb})"
            if mon.peak_kb / 1024 >= a.rss_limit_mb:
                ok = False
        if a.growth_limit_mb:
            out.notes += f"; RSS growth {mon.growth_mb:.0f} MB (limit {a.growth_limit_mb})"
            if mon.growth_mb >= a.growth_limit_mb:
                ok = False
        verdict = "PASS" if ok else "FAIL"
    if a.target == "geodns":
        out.notes += " (RSS and CPU: geodns; client: the dig loop)"
    row = fmt_row(a.name, out, mon if out.verdict != "n/a" else None, client, verdict)
    log(f"{verdict} {a.name} ({took:.0f}s): {out.notes}")
    if died:
        log("restarting the edge after its death")
        try:
            ctx.edge.start()
        except RuntimeError as e:
            log(f"restart failed: {e}")
    if a.teardown:
        try:
            a.teardown(ctx)
        except RuntimeError as e:
            log(f"teardown of {a.name} failed: {e}")
    return row, verdict


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--only", help="comma-separated attack names")
    ap.add_argument("--quick", action="store_true", help="smaller counts (CI smoke run)")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--work", required=True)
    ap.add_argument("--edge-bin", required=True)
    ap.add_argument("--geodns-bin", required=True)
    ap.add_argument("--h3idle-bin", required=True)
    ap.add_argument("--results", help="write the table (Markdown) here too")
    ap.add_argument("--commit", default="?")
    args = ap.parse_args()
    if args.list:
        for a in ATTACKS:
            print(f"{a.name:28} {a.group}")
        return 0
    selected = ATTACKS
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in {a.name for a in ATTACKS}]
        if unknown:
            print(f"unknown attack(s): {', '.join(unknown)}; --list shows them", file=sys.stderr)
            return 2
        selected = [a for a in ATTACKS if a.name in names]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    ctx = Ctx()
    ctx.quick = args.quick
    ctx.work = args.work
    ctx.edge_bin, ctx.geodns_bin, ctx.h3idle_bin = args.edge_bin, args.geodns_bin, args.h3idle_bin
    ctx.run = secrets.token_hex(3)
    ctx.counter = 0
    ctx.mounted = []
    ctx.origin_port = free_port()
    ctx.http_port = free_port()
    ctx.https_port = free_port(udp=True)
    ctx.admin_port = free_port()
    ctx.dns_port = free_port(udp=True)
    ctx.dns_admin_port = free_port()
    ctx.probe_name = f"probe-{ctx.run}"
    ctx.probe_path = f"/obj/{PROBE_SIZE}/{ctx.probe_name}"
    ctx.big_path = f"/obj/{8 * MB}/big-{ctx.run}"
    ctx.warm = lambda: warm(ctx)
    ctx.geodns = None
    ctx.edge_keys = edge_keys(ctx.edge_bin)
    rows, verdicts = [], {}
    started = time.monotonic()
    try:
        origin = Proc("origin", [sys.executable, os.path.join(HERE, "origin.py"), "--port",
                                 str(ctx.origin_port)], os.path.join(ctx.work, "origin.log"))
        origin.start()
        deadline = time.monotonic() + 10
        while http_get_local(f"http://127.0.0.1:{ctx.origin_port}/_ctl/stats", 1)[0] != 200:
            if time.monotonic() > deadline or not origin.alive():
                raise RuntimeError("origin did not start: " + " | ".join(origin.tail(5)))
            time.sleep(0.1)
        ctx.edge = Edge(ctx)
        ctx.edge.start()
        if any(a.target == "geodns" for a in selected):
            start_geodns(ctx)
        log(f"work dir {ctx.work}; edge pid {ctx.edge.pid} http {ctx.http_port} https/h3 "
            f"{ctx.https_port} admin {ctx.admin_port}; origin {ctx.origin_port}; "
            f"dns {ctx.dns_port}")
        for a in selected:
            row, verdict = run_one(ctx, a)
            rows.append(row)
            verdicts[a.name] = verdict
    finally:
        for mnt in list(ctx.mounted):
            subprocess.run(["umount", mnt], capture_output=True)
        stop_all()
    took = time.monotonic() - started
    counts = {}
    for v in verdicts.values():
        counts[v] = counts.get(v, 0) + 1
    summary = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    today = datetime.date.today().isoformat()
    text = (f"Attack suite, {today}, commit `{args.commit}`, "
            f"{'--quick' if args.quick else 'full run'}"
            + (f", --only {args.only}" if args.only else "")
            + f", {took / 60:.1f} min: {summary}\n\n" + HEADER + "\n" + "\n".join(rows) + "\n")
    print()
    print(text)
    if args.results:
        with open(args.results, "w") as f:
            f.write(text)
        log(f"table written to {args.results}")
    return 1 if counts.get("FAIL") else 0


if __name__ == "__main__":
    sys.exit(main())
