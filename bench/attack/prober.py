"""The normal client of the attack suite: while an attack runs, GET a cached object again and
again, over HTTP/1.1 (plain port) and HTTP/2 (TLS port, ALPN h2), each request on a new
connection from 127.0.0.1 (attacks come from other loopback addresses), one after another
per protocol, every --interval s. A request fails if it takes longer than --timeout, or the
status is not 200, or the body is not the expected bytes.

Stops at SIGTERM or after --max-duration s (bounded either way) and writes a JSON summary."""

import argparse
import json
import os
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import body_bytes, h1_get, h2_get  # noqa: E402

STOP = threading.Event()


def loop(proto, args, expect, results):
    deadline = time.monotonic() + args.max_duration
    n = 0
    while not STOP.is_set() and time.monotonic() < deadline and n < args.max_requests:
        n += 1
        t0 = time.monotonic()
        err = None
        try:
            if proto == "h1":
                resp, ex = h1_get(args.h1_port, args.path, args.host, timeout=args.timeout)
                if resp is None:
                    err = ex["error"] or ("closed" if ex["closed"] else "no response")
                elif resp.status != 200:
                    err = f"status {resp.status}"
                elif resp.body != expect:
                    err = f"body {len(resp.body)}B"
            else:
                status, _, body, e = h2_get(args.h2_port, args.path, args.host,
                                            timeout=args.timeout)
                if e:
                    err = e
                elif status != 200:
                    err = f"status {status}"
                elif body != expect:
                    err = f"body {len(body)}B"
        except Exception as e:  # noqa: BLE001 - any failure is a failed request
            err = f"{type(e).__name__}: {e}"
        dt = time.monotonic() - t0
        if err is None and dt > args.timeout:
            err = "slow"
        results.append((time.time(), proto, err is None, dt * 1000.0, err))
        rest = args.interval - (time.monotonic() - t0)
        if rest > 0:
            STOP.wait(rest)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--h1-port", type=int, required=True)
    ap.add_argument("--h2-port", type=int, required=True)
    ap.add_argument("--host", default="main.test")
    ap.add_argument("--path", required=True)
    ap.add_argument("--name", required=True, help="object name for the expected body")
    ap.add_argument("--size", type=int, required=True)
    ap.add_argument("--interval", type=float, default=0.1)
    ap.add_argument("--timeout", type=float, default=5.0)
    ap.add_argument("--max-duration", type=float, default=120.0)
    ap.add_argument("--max-requests", type=int, default=5000)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    expect = body_bytes(args.name, args.size)
    signal.signal(signal.SIGTERM, lambda *_: STOP.set())
    signal.signal(signal.SIGINT, lambda *_: STOP.set())
    results = []
    threads = [threading.Thread(target=loop, args=(p, args, expect, results), daemon=True)
               for p in ("h1", "h2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(args.max_duration + args.timeout + 5)
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(results, f)
    os.replace(tmp, args.out)


if __name__ == "__main__":
    main()
