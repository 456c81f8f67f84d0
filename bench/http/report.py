#!/usr/bin/env python3
"""Helpers and the table for bench/http/run.sh. Standard library only.

  report.py ports N
      N distinct ports on 127.0.0.1 that are free for both TCP and UDP (one per line).
  report.py cpu PID...
      Server CPU so far, in clock ticks: utime+stime+cutime+cstime summed over each PID and
      all its descendants (every thread is included in a process's figures; the c-fields hold
      children that already exited, so nothing is counted twice or lost).
  report.py pinned [--fix] CPU PID...
      Checks that every thread of each PID's process tree may run only on CPU; prints the
      tasks that may run elsewhere (nothing when all are pinned); exit status 0 either way.
      With --fix it also pins those tasks to CPU (a server that sets its own affinity).
  report.py show RESULTS_JSONL
      One progress line for the last measured run.
  report.py run RUSAGE_JSON -- CMD...
      Runs CMD, writes its CPU time (getrusage of the child) and wall time to RUSAGE_JSON,
      and exits with CMD's status. SIGTERM/SIGINT are passed on to CMD.
  report.py record --tool wrk|h2load|h3load --out FILE [--log FILE] --rusage FILE
                   --rep N --scenario S --server S --size BYTES --cpu-ticks N
      One JSON line on stdout for one measured run: the load generator's figures (checked:
      zero non-2xx/failed requests, h2 really negotiated), the server's CPU seconds and the
      client's CPU time.
  report.py table RESULTS_JSONL
      The Markdown table: medians over the repetitions per (scenario, server), ratios to the
      anchor measured in the same repetition, the miss path's added p50 latency.
"""

import json
import math
import os
import signal
import socket
import statistics
import subprocess
import sys
import time

SCENARIOS = [
    ("h1-1k", "h1 1 KiB"),
    ("h1-1m", "h1 1 MiB"),
    ("h2-1k", "h2+TLS 1 KiB"),
    ("h2-1m", "h2+TLS 1 MiB"),
    ("h3-1k", "h3 1 KiB"),
    ("h3-1m", "h3 1 MiB"),
    ("miss", "miss 1 KiB"),
]
SERVERS = [
    ("origin", "origin (nginx files)"),
    ("edge", "**quicdn edge**"),
    ("nginx", "nginx proxy_cache"),
    ("varnish", "Varnish"),
    ("caddy", "Caddy file_server"),
]
# The server every scenario is compared with (same run, same repetition).
ANCHOR = {"h1-1k": "nginx", "h1-1m": "nginx", "h2-1k": "nginx", "h2-1m": "nginx",
          "h3-1k": "caddy", "h3-1m": "caddy", "miss": "nginx"}


# --- processes ---------------------------------------------------------------------------
def proc_stat(pid):
    """(ppid, utime+stime+cutime+cstime) of a process, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    # fields[0] is field 3 (state): ppid is field 4, utime..cstime fields 14..17.
    return int(fields[1]), sum(int(x) for x in fields[11:15])


def process_tree(roots):
    stats = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            s = proc_stat(int(name))
            if s:
                stats[int(name)] = s
    children = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    seen, todo = set(), [r for r in roots if r in stats]
    while todo:
        pid = todo.pop()
        if pid not in seen:
            seen.add(pid)
            todo.extend(children.get(pid, []))
    return seen, stats


def cmd_cpu(pids):
    tree, stats = process_tree([int(p) for p in pids])
    print(sum(stats[p][1] for p in tree))


def cmd_pinned(cpu, pids, fix=False):
    tree, _ = process_tree([int(p) for p in pids])
    want = str(cpu)
    for pid in sorted(tree):
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/status") as f:
                    status = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
            except OSError:
                continue
            allowed = status.get("Cpus_allowed_list", "?").strip()
            if allowed != want:
                what = f"{status.get('Name', '?')} pid {pid} tid {tid}: CPUs {allowed}"
                if fix:
                    try:
                        os.sched_setaffinity(int(tid), {int(cpu)})
                        what += f", re-pinned to {cpu}"
                    except OSError as e:
                        what += f", could not re-pin: {e}"
                print(what)


def cmd_ports(n):
    ports, held = [], []
    while len(ports) < n:
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        t.bind(("127.0.0.1", 0))
        port = t.getsockname()[1]
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            u.bind(("127.0.0.1", port))
        except OSError:
            t.close()
            continue
        held += [t, u]
        ports.append(port)
    for s in held:
        s.close()
    print("\n".join(map(str, ports)))


def cmd_run(rusage_path, cmd):
    start = time.monotonic()
    child = subprocess.Popen(cmd)

    def forward(signum, _frame):
        child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    while True:
        try:
            _, status, ru = os.wait4(child.pid, 0)
            break
        except InterruptedError:
            continue
    wall = time.monotonic() - start
    rc = os.waitstatus_to_exitcode(status)
    with open(rusage_path, "w") as f:
        json.dump({"client_cpu_s": ru.ru_utime + ru.ru_stime, "wall_s": wall, "rc": rc}, f)
    sys.exit(rc if rc >= 0 else 128 - rc)


# --- parsing the load generators -----------------------------------------------------------
def percentile(sorted_xs, p):
    if not sorted_xs:
        return float("nan")
    k = max(0, min(len(sorted_xs) - 1, math.ceil(p / 100 * len(sorted_xs)) - 1))
    return sorted_xs[k]


def parse_wrk(out, _log):
    line = next((l for l in open(out) if l.startswith("JSON ")), None)
    if line is None:
        raise ValueError("no JSON line in wrk's output")
    w = json.loads(line[5:])
    dur = w["duration_us"] / 1e6
    problems = []
    for key in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts"):
        if w[key]:
            problems.append(f"{w[key]} {key.replace('_', ' ')}")
    return {
        "requests": w["requests"], "duration_s": dur, "req_per_s": w["requests"] / dur,
        "p50_ms": w["p50_us"] / 1e3, "p99_ms": w["p99_us"] / 1e3, "max_ms": w["max_us"] / 1e3,
        "bytes_per_req": w["bytes"] / max(w["requests"], 1),
        "errors": w["status_errors"] + w["connect_errors"] + w["read_errors"]
        + w["write_errors"] + w["timeouts"],
        "problems": problems, "proto": "http/1.1",
    }


def parse_h2load(out, log):
    text = open(out).read()
    r = {"problems": []}
    proto = None
    for line in text.splitlines():
        parts = line.replace(",", "").split()
        if line.startswith("Application protocol:"):
            proto = parts[2]
        elif line.startswith("finished in"):
            r["duration_s"] = float(parts[2].rstrip("s"))
        elif line.startswith("requests:"):
            # requests: N total, N started, N done, N succeeded, N failed, N errored, N timeout
            nums = dict(zip(parts[2::2], map(int, parts[1::2])))
            r["requests"] = nums["succeeded"]
            r["failed"] = nums["failed"] + nums["errored"] + nums["timeout"]
        elif line.startswith("status codes:"):
            codes = dict(zip(parts[3::2], map(int, parts[2::2])))
            r["non2xx"] = codes["3xx"] + codes["4xx"] + codes["5xx"]
            r["ok2xx"] = codes["2xx"]
    if "duration_s" not in r or "requests" not in r or "non2xx" not in r:
        raise ValueError("h2load's output has no summary")
    r["proto"] = proto or "?"
    if proto != "h2":
        r["problems"].append(f"negotiated {proto!r}, not h2")
    if r["non2xx"] or r["failed"]:
        r["problems"].append(f"{r['non2xx']} non-2xx, {r['failed']} failed/errored/timed out")
    r["errors"] = r.pop("non2xx") + r.pop("failed")
    r.pop("ok2xx", None)
    r["req_per_s"] = r["requests"] / r["duration_s"]
    # Per-request latencies from --log-file: start_us, status, duration_us.
    lat = []
    with open(log) as f:
        for line in f:
            cols = line.split("\t")
            if len(cols) >= 3:
                lat.append(int(cols[2]))
    lat.sort()
    r["p50_ms"] = percentile(lat, 50) / 1e3
    r["p99_ms"] = percentile(lat, 99) / 1e3
    r["max_ms"] = (lat[-1] if lat else float("nan")) / 1e3
    return r


def parse_h3load(out, _log):
    text = open(out).read().strip()
    start = text.find("{")
    if start < 0:
        raise ValueError("no JSON in h3load's output")
    h = json.loads(text[start:text.rindex("}") + 1])
    r = {
        "requests": h["requests"], "duration_s": h["duration_s"], "req_per_s": h["req_per_s"],
        "p50_ms": h["p50_ms"], "p99_ms": h["p99_ms"], "max_ms": h.get("max_ms"),
        "errors": h["errors"], "problems": [], "proto": "h3",
        "h3_client_cpu_us_per_req": h.get("client_cpu_us_per_req"),
        "h3_client_cpu_util": h.get("client_cpu_util"),
    }
    if h["requests"]:
        r["bytes_per_req"] = h.get("body_bytes", 0) / h["requests"]
    if h["errors"]:
        r["problems"].append(f"{h['errors']} errors {json.dumps(h.get('errors_by_kind', {}))}")
    return r


def cmd_record(args):
    opts = dict(zip(args[0::2], args[1::2]))
    parser = {"wrk": parse_wrk, "h2load": parse_h2load, "h3load": parse_h3load}[opts["--tool"]]
    rec = {"rep": int(opts["--rep"]), "scenario": opts["--scenario"], "server": opts["--server"],
           "tool": opts["--tool"], "size": int(opts["--size"])}
    try:
        rec.update(parser(opts["--out"], opts.get("--log")))
    except (OSError, ValueError, KeyError, StopIteration) as e:
        rec.update({"requests": 0, "errors": 1, "problems": [f"unreadable output: {e}"]})
    ru = {}
    try:
        ru = json.load(open(opts["--rusage"]))
    except (OSError, ValueError):
        rec["problems"].append("no rusage")
    if ru.get("rc"):
        rec["problems"].append(f"{opts['--tool']} exited with {ru['rc']}")
    rec["client_cpu_s"] = ru.get("client_cpu_s")
    rec["server_cpu_s"] = int(opts["--cpu-ticks"]) / os.sysconf("SC_CLK_TCK")
    if rec["size"] and rec.get("bytes_per_req") is not None and rec["requests"]:
        # wrk counts headers too, h3load only bodies: either way at least the object.
        if rec["bytes_per_req"] < rec["size"]:
            rec["problems"].append(f"{rec['bytes_per_req']:.0f} bytes per response < {rec['size']}")
    rec["ok"] = not rec["problems"] and rec["requests"] > 0
    print(json.dumps(rec))


def cmd_show(path):
    with open(path) as f:
        r = json.loads(f.readlines()[-1])
    us = r["server_cpu_s"] * 1e6 / r["requests"] if r.get("requests") else float("nan")
    line = (f"  {r['scenario']:6} {r['server']:8} rep {r['rep']}: "
            f"{r.get('req_per_s', 0):9,.0f} req/s  p50 {r.get('p50_ms', float('nan')):7.2f} ms  "
            f"server {us:8.1f} µs/req")
    if not r["ok"]:
        line += "  REJECTED: " + "; ".join(r["problems"])
    print(line, file=sys.stderr)


# --- the table -----------------------------------------------------------------------------
def med(xs):
    xs = [x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return statistics.median(xs) if xs else None


def fmt(x, digits=0, suffix=""):
    if x is None:
        return ""
    if digits == 0:
        return f"{x:,.0f}{suffix}"
    return f"{x:,.{digits}f}{suffix}"


def fmt_lat(ms):
    if ms is None:
        return ""
    return f"{ms:.2f}" if ms < 10 else f"{ms:.1f}" if ms < 100 else f"{ms:.0f}"


def fmt_cpu(us):
    if us is None:
        return ""
    return f"{us:.1f}" if us < 100 else f"{us:,.0f}"


def cmd_table(path):
    recs = [json.loads(l) for l in open(path) if l.strip()]
    by = {}
    for r in recs:
        by.setdefault((r["scenario"], r["server"]), []).append(r)

    def per_req_us(r):
        return r["server_cpu_s"] * 1e6 / r["requests"] if r.get("requests") else None

    def rep_value(scenario, server, rep, fn):
        for r in by.get((scenario, server), []):
            if r["rep"] == rep and r["ok"]:
                return fn(r)
        return None

    print("| scenario | server | req/s | p50 ms | p99 ms | MB/s | server CPU µs/req (min–max) "
          "| CPU × anchor | MB per server CPU-s | client CPU µs/req (util) | p50 added ms | notes |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for scenario, slabel in SCENARIOS:
        anchor = ANCHOR[scenario]
        for server, label in SERVERS:
            runs = by.get((scenario, server))
            if not runs:
                continue
            ok = [r for r in runs if r["ok"]]
            notes = []
            bad = [r for r in runs if not r["ok"]]
            if bad:
                notes.append(f"{len(bad)}/{len(runs)} runs rejected: "
                             + "; ".join(sorted({p for r in bad for p in r["problems"]})))
            if server == anchor:
                notes.append("anchor")
            if server == "origin" and scenario != "miss":
                notes.append("ceiling")
            if scenario == "miss":
                notes.append("origin direct (baseline)" if server == "origin"
                             else "unique URLs; CPU excludes the origin's")
            if not ok:
                print(f"| {slabel} | {label} | | | | | | | | | | {'; '.join(notes)} |")
                continue
            rps = med([r["req_per_s"] for r in ok])
            p50 = med([r["p50_ms"] for r in ok])
            p99 = med([r["p99_ms"] for r in ok])
            mbs = med([r["req_per_s"] * r["size"] / 1e6 for r in ok])
            cpu = [per_req_us(r) for r in ok]
            cpu_m = med(cpu)
            cpu_txt = fmt_cpu(cpu_m)
            if len(cpu) > 1:
                cpu_txt += f" ({fmt_cpu(min(cpu))}–{fmt_cpu(max(cpu))})"
            ratios = []
            for r in ok:
                a = rep_value(scenario, anchor, r["rep"], per_req_us)
                if a:
                    ratios.append(per_req_us(r) / a)
            baseline = scenario == "miss" and server == "origin"
            ratio = f"{med(ratios):.2f}" if ratios and server != anchor and not baseline else ""
            gb = ""
            if scenario.endswith("1m"):
                per_cpu = med([r["size"] / (u * 1e-6) / 1e6 for r, u in zip(ok, cpu) if u])
                gb = fmt(per_cpu)
            # Client CPU: h3load's own figure for h3, else the tool's rusage over its requests.
            if scenario.startswith("h3") and any(r.get("h3_client_cpu_us_per_req") for r in ok):
                c_us = med([r.get("h3_client_cpu_us_per_req") for r in ok])
                c_util = med([r.get("h3_client_cpu_util") for r in ok])
            else:
                c_us = med([r["client_cpu_s"] * 1e6 / r["requests"] for r in ok
                            if r.get("client_cpu_s") is not None])
                c_util = med([r["client_cpu_s"] / r["duration_s"] for r in ok
                              if r.get("client_cpu_s") is not None and r.get("duration_s")])
            client = fmt_cpu(c_us)
            if c_util is not None:
                client += f" ({100 * c_util:.0f}%)"
            added = ""
            if scenario == "miss" and server != "origin":
                diffs = []
                for r in ok:
                    o = rep_value("miss", "origin", r["rep"], lambda x: x["p50_ms"])
                    if o is not None:
                        diffs.append(r["p50_ms"] - o)
                if diffs:
                    added = f"{med(diffs):+.3f}"
            print(f"| {slabel} | {label} | {fmt(rps)} | {fmt_lat(p50)} | {fmt_lat(p99)} | "
                  f"{fmt(mbs)} | {cpu_txt} | {ratio} | {gb} | {client} | {added} | "
                  f"{'; '.join(notes)} |")


def main():
    argv = sys.argv[1:]
    if not argv:
        sys.exit(__doc__)
    cmd, rest = argv[0], argv[1:]
    if cmd == "ports" and len(rest) == 1:
        cmd_ports(int(rest[0]))
    elif cmd == "cpu" and rest:
        cmd_cpu(rest)
    elif cmd == "pinned" and len(rest) >= 3 and rest[0] == "--fix":
        cmd_pinned(rest[1], rest[2:], fix=True)
    elif cmd == "pinned" and len(rest) >= 2:
        cmd_pinned(rest[0], rest[1:])
    elif cmd == "show" and len(rest) == 1:
        cmd_show(rest[0])
    elif cmd == "run" and len(rest) >= 3 and rest[1] == "--":
        cmd_run(rest[0], rest[2:])
    elif cmd == "record":
        cmd_record(rest)
    elif cmd == "table" and len(rest) == 1:
        cmd_table(rest[0])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
