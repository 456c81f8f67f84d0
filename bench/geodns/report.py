#!/usr/bin/env python3
"""Tables for the GeoDNS benchmark (Markdown, printed to stdout). Standard library only.

  report.py bench RESULTS_TSV
      Medians per (server, scenario) of run.sh's raw results, and geodns/gdnsd ratios.
  report.py compare POPS_CSV CLIENTS_CSV ANSWERS_TSV
      Per client network: each server's POP, the nearest POP by great-circle distance, and
      whether each server chose it. ANSWERS_TSV rows: subnet, ecs, geodns_pop, geodns_scope,
      gdnsd_pop, gdnsd_scope. Subnets not in CLIENTS_CSV expect the fallback POP (the first
      in POPS_CSV). Ends with a summary line of mismatches.
"""

import csv
import math
import statistics
import sys

EARTH_RADIUS_KM = 6371.0088
SERVERS = ["geodns", "gdnsd"]
SCENARIOS = ["plain", "ecs"]


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def bench(path):
    rows = list(csv.DictReader(open(path), delimiter="\t"))
    stats = {}
    for server in SERVERS:
        for scenario in SCENARIOS:
            runs = [r for r in rows if r["server"] == server and r["scenario"] == scenario]
            if not runs:
                continue
            qps = [float(r["qps"]) for r in runs]
            lat = [float(r["avg_latency_s"]) * 1000 for r in runs]
            cpu = [float(r["cpu_s"]) * 1e6 / max(int(r["completed"]), 1) for r in runs]
            lost = sum(int(r["lost"]) for r in runs)
            sent = sum(int(r["completed"]) + int(r["lost"]) for r in runs)
            stats[server, scenario] = dict(
                qps=median(qps), lat=median(lat), cpu=median(cpu), cpu_lo=min(cpu),
                cpu_hi=max(cpu), lost=lost, sent=sent, n=len(runs),
            )
    print("| server | scenario | qps | avg latency (ms) | server CPU µs/query (min–max) | lost |")
    print("|---|---|---:|---:|---:|---:|")
    for scenario in SCENARIOS:
        for server in SERVERS:
            s = stats.get((server, scenario))
            if not s:
                continue
            lost = f"{s['lost']} ({100 * s['lost'] / max(s['sent'], 1):.2f}%)"
            print(f"| {server} | {scenario} | {s['qps']:,.0f} | {s['lat']:.3f} | "
                  f"{s['cpu']:.2f} ({s['cpu_lo']:.2f}–{s['cpu_hi']:.2f}) | {lost} |")
    for scenario in SCENARIOS:
        a, b = stats.get(("geodns", scenario)), stats.get(("gdnsd", scenario))
        if a and b:
            print(f"| **geodns/gdnsd** | {scenario} | {a['qps'] / b['qps']:.2f}x | "
                  f"{a['lat'] / b['lat']:.2f}x | {a['cpu'] / b['cpu']:.2f}x | |")


def distance_km(a, b):
    lat1, lat2 = math.radians(a[0]), math.radians(b[0])
    dlat = lat2 - lat1
    dlon = math.radians(b[1] - a[1])
    h = math.sin(dlat / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin(dlon / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(math.sqrt(min(max(h, 0.0), 1.0)))


def compare(pops_path, clients_path, answers_path):
    pops = list(csv.DictReader(open(pops_path, newline="")))
    clients = {r["subnet"]: r for r in csv.DictReader(open(clients_path, newline=""))}
    answers = list(csv.reader(open(answers_path, newline=""), delimiter="\t"))
    print("| client network | ECS sent | city | geodns POP (scope) | gdnsd POP (scope) | "
          "nearest POP (km) | 2nd (km) | geodns nearest? | gdnsd nearest? |")
    print("|---|---|---|---|---|---|---|---|---|")
    bad = {s: [] for s in SERVERS}
    for subnet, ecs, g_pop, g_scope, d_pop, d_scope in answers:
        c = clients.get(subnet)
        if c:
            here = (float(c["lat"]), float(c["lon"]))
            ranked = sorted((distance_km(here, (float(p["lat"]), float(p["lon"]))), p["name"])
                            for p in pops)
            want = ranked[0][1]
            city = c["city"]
            nearest = f"{want} ({ranked[0][0]:,.0f})"
            second = f"{ranked[1][1]} ({ranked[1][0]:,.0f})"
        else:
            want = pops[0]["name"]
            city = "(not in DB)"
            nearest = f"{want} (fallback)"
            second = ""
        marks = {}
        for server, got in (("geodns", g_pop), ("gdnsd", d_pop)):
            marks[server] = "yes" if got == want else "**NO**"
            if got != want:
                bad[server].append(f"{subnet}: {got} (want {want})")
        print(f"| {subnet} | {ecs} | {city} | {g_pop} (/{g_scope}) | {d_pop} (/{d_scope}) | "
              f"{nearest} | {second} | {marks['geodns']} | {marks['gdnsd']} |")
    print()
    print(f"mismatches: geodns {len(bad['geodns'])}/{len(answers)}, "
          f"gdnsd {len(bad['gdnsd'])}/{len(answers)} not the expected POP")
    for server in SERVERS:
        for line in bad[server]:
            print(f"  {server}: {line}")


def main():
    if len(sys.argv) >= 3 and sys.argv[1] == "bench":
        bench(sys.argv[2])
    elif len(sys.argv) == 5 and sys.argv[1] == "compare":
        compare(*sys.argv[2:])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
