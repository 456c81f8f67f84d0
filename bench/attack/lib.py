"""Process, monitoring and raw-protocol helpers of the attack suite (see suite.py).

Everything started here is recorded in PROCS and stopped by its own PID (SIGTERM, then
SIGKILL after a bounded wait); nothing is stopped by name."""

import asyncio
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from common import LOOPBACK, client_tls  # noqa: E402

PROCS = []
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(msg):
    print(f"[attack {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Proc:
    """A child process started by the suite, stopped by PID only."""

    def __init__(self, name, argv, logfile, env=None):
        self.name = name
        self.argv = argv
        self.logfile = logfile
        self.env = env
        self.p = None

    def start(self):
        out = open(self.logfile, "ab")
        self.p = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, env=self.env,
                                  start_new_session=True)
        out.close()
        PROCS.append(self)
        return self

    @property
    def pid(self):
        return self.p.pid if self.p else None

    def alive(self):
        return self.p is not None and self.p.poll() is None

    def returncode(self):
        return None if self.p is None else self.p.poll()

    def stop(self, timeout=8.0):
        if self.p is None:
            return
        if self.p.poll() is None:
            try:
                os.kill(self.p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.kill(self.p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.p.wait(5)
        if self in PROCS:
            PROCS.remove(self)

    def kill9(self):
        if self.alive():
            os.kill(self.p.pid, signal.SIGKILL)
            self.p.wait(5)

    def tail(self, n=20):
        try:
            with open(self.logfile, "rb") as f:
                lines = f.read().decode("utf-8", "replace").splitlines()
            return lines[-n:]
        except OSError:
            return []


def stop_all():
    for p in list(reversed(PROCS)):
        try:
            p.stop()
        except Exception as e:  # noqa: BLE001 - keep stopping the others
            log(f"stopping {p.name} (pid {p.pid}) failed: {e}")


def free_port(udp=False):
    """A port free on 127.0.0.1 for TCP (and UDP when asked)."""
    for _ in range(200):
        t = socket.socket()
        t.bind((LOOPBACK, 0))
        port = t.getsockname()[1]
        ok = True
        if udp:
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                u.bind((LOOPBACK, port))
            except OSError:
                ok = False
            u.close()
        t.close()
        if ok:
            return port
    raise RuntimeError("no free port")


def http_get_local(url, timeout=5.0):
    """(status, body) of a plain GET to a loopback URL; (None, error) on failure."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except Exception as e:  # noqa: BLE001
        return None, str(e).encode()


def read_rss_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def read_cpu_ticks(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
        return int(rest[11]) + int(rest[12])
    except (OSError, IndexError, ValueError):
        return None


class Monitor:
    """Samples VmRSS of the process `pid_fn()` names (it may change: restarts) every 100 ms,
    and sums its CPU ticks (utime + stime) over the sampling window."""

    def __init__(self, pid_fn, interval=0.1):
        self.pid_fn = pid_fn
        self.interval = interval
        self.base_kb = None
        self.peak_kb = 0
        self.ticks = 0
        self.last = {}
        self.stop_ev = threading.Event()
        self.thread = None
        self.series = []

    def sample(self):
        pid = self.pid_fn()
        if pid is None:
            return
        rss = read_rss_kb(pid)
        if rss is not None:
            self.peak_kb = max(self.peak_kb, rss)
            if self.base_kb is None:
                self.base_kb = rss
            self.series.append((time.monotonic(), rss))
        t = read_cpu_ticks(pid)
        if t is not None:
            if pid in self.last:
                self.ticks += max(0, t - self.last[pid])
            elif self.started:
                # A process that appeared during the window: all its CPU counts.
                self.ticks += t
            self.last[pid] = t

    def start(self):
        self.started = False
        self.sample()
        self.started = True
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()
        return self

    def run(self):
        while not self.stop_ev.wait(self.interval):
            self.sample()

    def stop(self):
        self.stop_ev.set()
        if self.thread:
            self.thread.join(5)
        self.sample()

    def current_kb(self):
        pid = self.pid_fn()
        return read_rss_kb(pid) if pid else None

    @property
    def cpu_s(self):
        return self.ticks / CLK_TCK

    @property
    def growth_mb(self):
        if self.base_kb is None:
            return 0.0
        return (self.peak_kb - self.base_kb) / 1024.0


class Prober:
    """The normal client (prober.py) as a child process; results on stop()."""

    def __init__(self, work, python, h1_port, h2_port, path, name, size, tag, max_duration):
        self.out = os.path.join(work, f"prober-{tag}.json")
        self.proc = Proc(f"prober-{tag}", [
            python, os.path.join(HERE, "prober.py"), "--h1-port", str(h1_port),
            "--h2-port", str(h2_port), "--path", path, "--name", name, "--size", str(size),
            "--out", self.out, "--max-duration", str(max_duration),
        ], os.path.join(work, f"prober-{tag}.log"))

    def start(self):
        self.proc.start()
        time.sleep(0.3)
        return self

    def stop(self):
        self.proc.stop(timeout=15)
        try:
            with open(self.out) as f:
                results = json.load(f)
        except (OSError, ValueError):
            results = []
        return summarize(results)


def summarize(results):
    """results: [(t, proto, ok, ms, err)] -> dict(n, ok, rate, p99, errors)."""
    n = len(results)
    ok = [r for r in results if r[2]]
    lat = sorted(r[3] for r in ok)
    errors = {}
    for r in results:
        if not r[2]:
            key = f"{r[1]} {r[4]}"[:80]
            errors[key] = errors.get(key, 0) + 1
    p99 = lat[min(len(lat) - 1, max(0, int(len(lat) * 0.99 + 0.999999) - 1))] if lat else None
    return {"n": n, "ok": len(ok), "rate": (len(ok) / n * 100.0) if n else None,
            "p99": p99, "max": lat[-1] if lat else None, "errors": errors}


# ---- HTTP/2 frames by hand -------------------------------------------------------------

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST, SETTINGS, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 0, 1, 3, 4, 6, 7, 8, 9
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4


def frame(ftype, flags, sid, payload=b""):
    return len(payload).to_bytes(3, "big") + bytes([ftype, flags]) + sid.to_bytes(4, "big") + \
        payload


def settings_payload(pairs):
    return b"".join(k.to_bytes(2, "big") + v.to_bytes(4, "big") for k, v in pairs)


def request_block(path, authority="main.test", scheme="https"):
    import hpack
    return hpack.Encoder().encode([(":method", "GET"), (":scheme", scheme),
                                   (":authority", authority), (":path", path)])


class RawH2:
    """An HTTP/2 connection over TLS (ALPN h2) driven frame by frame (asyncio)."""

    def __init__(self, port, src=None, settings=(), read=True, auto_ack=True):
        self.port, self.src, self.settings = port, src, list(settings)
        self.read, self.auto_ack = read, auto_ack
        self.counts = {}
        self.data_bytes = 0
        self.rx_bytes = 0
        self.goaway = None
        self.closed_at = None
        self.opened_at = None
        self.remote_settings = asyncio.Event()
        self.reader_task = None
        self.w = None
        self.close_how = None

    async def open(self):
        self.r, self.w = await asyncio.wait_for(asyncio.open_connection(
            LOOPBACK, self.port, ssl=client_tls(("h2",)), server_hostname="localhost",
            local_addr=(self.src, 0) if self.src else None), 10)
        alpn = self.w.get_extra_info("ssl_object").selected_alpn_protocol()
        if alpn != "h2":
            raise RuntimeError(f"ALPN {alpn!r}, not h2")
        self.opened_at = time.monotonic()
        self.w.write(PREFACE + frame(SETTINGS, 0, 0, settings_payload(self.settings)))
        await self.w.drain()
        if self.read:
            self.reader_task = asyncio.ensure_future(self._reader())
        return self

    async def _reader(self):
        buf = b""
        try:
            while True:
                chunk = await self.r.read(1 << 16)
                if not chunk:
                    self.close_how = "eof"
                    break
                self.rx_bytes += len(chunk)
                buf += chunk
                while len(buf) >= 9:
                    n = int.from_bytes(buf[0:3], "big")
                    if len(buf) < 9 + n:
                        break
                    ftype, flags = buf[3], buf[4]
                    payload = buf[9:9 + n]
                    buf = buf[9 + n:]
                    self.counts[ftype] = self.counts.get(ftype, 0) + 1
                    if ftype == DATA:
                        self.data_bytes += n
                    elif ftype == GOAWAY and self.goaway is None:
                        self.goaway = (int.from_bytes(payload[0:4], "big") & 0x7FFFFFFF,
                                       int.from_bytes(payload[4:8], "big"))
                    elif ftype == SETTINGS and not flags & ACK:
                        self.remote_settings.set()
                        if self.auto_ack:
                            self.w.write(frame(SETTINGS, ACK, 0))
                    elif ftype == PING and not flags & ACK and self.auto_ack:
                        self.w.write(frame(PING, ACK, 0, payload))
        except (ConnectionError, OSError, ssl.SSLError) as e:
            self.close_how = type(e).__name__
        except asyncio.CancelledError:
            return
        self.closed_at = time.monotonic()

    async def send(self, data, timeout=10.0):
        self.w.write(data)
        await asyncio.wait_for(self.w.drain(), timeout)

    def close(self):
        if self.reader_task:
            self.reader_task.cancel()
        if self.w:
            try:
                self.w.transport.abort()
            except Exception:  # noqa: BLE001
                pass
