"""The origin and the load of bench/tiers/offload.sh.

    python3 offload.py origin PORT
        An origin that counts what it is asked. /o/ID answers ~1 KiB with an ETag, and by ID:
        ID % 20 == 7 `Cache-Control: no-store` (uncacheable), ID % 5 == 3 `max-age=SHORT`
        (SHORT from the env, default 2 s: revalidations, answered 304 when If-None-Match
        matches), else `max-age=3600`. GET /stats answers the counts as JSON (requests,
        by class, 304s); POST /reset zeroes them. Neither is counted.

    python3 offload.py load HOST_HEADER CHILD[,CHILD...] REQUESTS RATE SECONDS OBJECTS ZIPF_S SEED THREADS
        REQUESTS GETs of /o/ID, ID drawn Zipf-like (weight 1/(rank+1)^ZIPF_S over OBJECTS
        objects, rank = ID) from SEED, spread round-robin over the children (host:port), all
        with the same Host so that the children and the shield share one site and one key.
        Paced at RATE requests/s over THREADS threads (each with a keep-alive connection per
        child; a request is sent late, not skipped, when all are busy); stops after SECONDS
        whatever is left. Prints one JSON line: requests sent, answered 2xx, failed, seconds,
        requests by class.
"""

import http.client
import http.server
import itertools
import json
import os
import random
import sys
import threading
import time

SHORT = int(os.environ.get("SHORT", "2"))


def object_class(i):
    if i % 20 == 7:
        return "uncacheable"
    if i % 5 == 3:
        return "short"
    return "long"


def origin(port):
    lock = threading.Lock()
    counts = {"requests": 0, "not_modified": 0, "uncacheable": 0, "short": 0, "long": 0}
    body = b"o" * 1000

    class Origin(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            if self.path == "/stats":
                with lock:
                    data = json.dumps(counts).encode()
                return self.answer(200, {"content-type": "application/json"}, data)
            try:
                i = int(self.path.rsplit("/", 1)[1].split("?")[0])
            except ValueError:
                return self.answer(404, {}, b"")
            kind = object_class(i)
            etag = f'"o{i}"'
            cc = {"uncacheable": "no-store", "short": f"max-age={SHORT}", "long": "max-age=3600"}[kind]
            fresh = etag in self.headers.get("if-none-match", "")
            with lock:
                counts["requests"] += 1
                counts[kind] += 1
                counts["not_modified"] += fresh
            headers = {"cache-control": cc, "etag": etag, "content-type": "application/octet-stream"}
            if fresh:
                return self.answer(304, headers, None)
            self.answer(200, headers, body + str(i).encode())

        def do_POST(self):
            with lock:
                for k in counts:
                    counts[k] = 0
            self.answer(200, {}, b"")

        def answer(self, status, headers, data):
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            if data is not None:
                self.send_header("content-length", str(len(data)))
            self.end_headers()
            if data:
                self.wfile.write(data)

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Origin)
    server.daemon_threads = True
    server.serve_forever()


def load(host, children, requests, rate, seconds, objects, s, seed, threads):
    rng = random.Random(seed)
    weights = list(itertools.accumulate(1 / (k + 1) ** s for k in range(objects)))
    ids = rng.choices(range(objects), cum_weights=weights, k=requests)
    plan = [(children[n % len(children)], i) for n, i in enumerate(ids)]
    by_class = {"uncacheable": 0, "short": 0, "long": 0}
    for i in ids:
        by_class[object_class(i)] += 1
    # One schedule: request n is due RATE-paced at start + n / rate, so that both runs see the
    # same clock (the short max-ages expire on it) whatever their latency. Each thread keeps
    # a keep-alive connection per child.
    nxt = itertools.count()
    lock = threading.Lock()
    results = []

    def worker():
        conns = {}
        sent = ok = failed = 0
        while True:
            with lock:
                n = next(nxt)
            if n >= len(plan):
                break
            due = start + n / rate
            now = time.monotonic()
            if now - start >= seconds:
                break
            if due > now:
                time.sleep(due - now)
            child, i = plan[n]
            conn = conns.get(child)
            if conn is None:
                h, p = child.rsplit(":", 1)
                conn = conns[child] = http.client.HTTPConnection(h, int(p), timeout=10)
            sent += 1
            try:
                conn.request("GET", f"/o/{i}", headers={"host": host})
                r = conn.getresponse()
                r.read()
                ok += 200 <= r.status < 300
                failed += not 200 <= r.status < 300
            except (OSError, http.client.HTTPException):
                failed += 1
                conn.close()
                del conns[child]
        results.append((sent, ok, failed))

    start = time.monotonic()
    ts = [threading.Thread(target=worker) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    elapsed = time.monotonic() - start
    sent, ok, failed = (sum(r[k] for r in results) for k in range(3))
    print(json.dumps({"sent": sent, "ok": ok, "failed": failed, "seconds": round(elapsed, 2),
                      "planned": requests, "rate": rate, "by_class": by_class}))


def main():
    if sys.argv[1] == "origin":
        origin(int(sys.argv[2]))
    elif sys.argv[1] == "load":
        host, children = sys.argv[2], sys.argv[3].split(",")
        requests, rate, seconds = int(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6])
        objects, s = int(sys.argv[7]), float(sys.argv[8])
        seed, threads = int(sys.argv[9]), int(sys.argv[10])
        load(host, children, requests, rate, seconds, objects, s, seed, threads)
    else:
        sys.exit(__doc__)


main()
