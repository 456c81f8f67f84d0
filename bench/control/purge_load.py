"""Sends URL purges to an edge's admin API at a fixed rate for a fixed time, over keep-alive
connections, and prints one JSON line: purges sent, answered 200, failed, the rate achieved,
and the p50/p99 of the API's answer time.

    python3 purge_load.py ADMIN_HOST:PORT RATE SECONDS URL_TEMPLATE [THREADS]

URL_TEMPLATE has one {} that takes a counter (e.g. localhost/p/{}), so each purge names
another object. Bounded: it stops after SECONDS, whatever the answers.
"""

import http.client
import json
import sys
import threading
import time


def worker(addr, rate, seconds, template, offset, step, out):
    host, port = addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    interval = 1.0 / rate
    start = time.monotonic()
    n = offset
    sent = ok = failed = 0
    times = []
    while True:
        due = start + sent * interval
        now = time.monotonic()
        if now - start >= seconds:
            break
        if due > now:
            time.sleep(due - now)
        body = json.dumps({"url": template.format(n)})
        n += step
        t0 = time.monotonic()
        try:
            conn.request("POST", "/purge", body, {"content-type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            if resp.status == 200:
                ok += 1
            else:
                failed += 1
        except (OSError, http.client.HTTPException):
            failed += 1
            conn.close()
            conn = http.client.HTTPConnection(host, int(port), timeout=5)
        times.append(time.monotonic() - t0)
        sent += 1
    out.append((sent, ok, failed, times, time.monotonic() - start))


def main():
    addr, rate, seconds, template = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
    threads = int(sys.argv[5]) if len(sys.argv) > 5 else 4
    out = []
    ts = [
        threading.Thread(target=worker, args=(addr, rate / threads, seconds, template, i, threads, out))
        for i in range(threads)
    ]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    sent = sum(o[0] for o in out)
    ok = sum(o[1] for o in out)
    failed = sum(o[2] for o in out)
    times = sorted(x for o in out for x in o[3])
    elapsed = max(o[4] for o in out)
    pct = lambda p: times[min(len(times) - 1, int(len(times) * p / 100))] * 1e3 if times else 0.0
    print("JSON " + json.dumps({
        "sent": sent, "ok": ok, "failed": failed, "rate": round(sent / elapsed, 1),
        "p50_ms": round(pct(50), 2), "p99_ms": round(pct(99), 2),
    }))


if __name__ == "__main__":
    main()
