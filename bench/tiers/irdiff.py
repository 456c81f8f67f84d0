"""Where two callgrind dumps differ, per request: runs callgrind_annotate on each (exclusive
instructions per function, every function) and prints the difference (B minus A) by kind of
work (functions grouped by name, GROUPS) and the TOP functions that differ most, as Markdown.

    python3 irdiff.py TOP A.callgrind:REQUESTS B.callgrind:REQUESTS
"""

import re
import subprocess
import sys

LINE = re.compile(r"^\s*([\d,]+)\s+(?:\([^)]*\)\s+)?(\S.*?)\s*$")


def per_request(spec):
    path, requests = spec.rsplit(":", 1)
    out = subprocess.run(
        ["callgrind_annotate", "--inclusive=no", "--threshold=100", "--auto=no", path],
        check=True, capture_output=True, text=True,
    ).stdout
    costs = {}
    total = None
    in_table = False
    for line in out.splitlines():
        if line.rstrip().endswith("PROGRAM TOTALS"):
            total = int(line.split()[0].replace(",", ""))
        if line.strip().startswith("Ir") and "file:function" in line:
            in_table = True
            continue
        if not in_table or line.startswith("-"):
            continue
        m = LINE.match(line)
        if not m:
            if costs:
                break
            continue
        ir = int(m.group(1).replace(",", ""))
        if total and ir >= 0.5 * total:
            # The thread's frames that were live when the counters were zeroed (the worker
            # loop, clone, start_thread) are shown with about the whole total: not their own cost.
            continue
        name = re.sub(r"\s*\[[^\]]*\]$", "", m.group(2))
        name = re.sub(r"^[^:]*:", "", name, count=1) if not name.startswith("<") else name
        costs[name] = costs.get(name, 0) + ir / int(requests)
    return costs


# (kind of work, pattern on the function name), first match wins.
GROUPS = [
    ("parsing the request head (httparse, hyper's h1 parse, header names)",
     r"httparse|Http1Transaction>::parse|header::name::|HeaderName|StandardHeader"),
    ("the request's header map (insert, hash, reserve, drop)",
     r"HeaderMap|header::map::|drop_in_place<\[http::header"),
    ("loop detection (Via and CDN-Loop scanned for this edge's name)",
     r"LoopDetect|Iterator::try_fold|CharSearcher|memrchr|via_contains|cdn_loop"),
    ("the Host (target, authority)", r"edge::target|uri::authority"),
    ("allocator and byte buffers", r"^mi_|_mi_|bytes::bytes"),
]


def short(name, width=110):
    name = re.sub(r"::h[0-9a-f]{16}$", "", name)
    return name if len(name) <= width else name[: width - 1] + "…"


def main():
    top = int(sys.argv[1])
    a, b = per_request(sys.argv[2]), per_request(sys.argv[3])
    diff = sorted(((b.get(n, 0) - a.get(n, 0), n) for n in set(a) | set(b)),
                  key=lambda d: -abs(d[0]))
    total = sum(b.values()) - sum(a.values())
    print(f"Where B costs more than A, per request (exclusive instructions by function, all "
          f"functions together: {total:+.0f}):")
    print()
    groups = {g: 0.0 for g, _ in GROUPS}
    other = 0.0
    for d, n in diff:
        g = next((g for g, pat in GROUPS if re.search(pat, n)), None)
        if g is None:
            other += d
        else:
            groups[g] += d
    print("| kind of work | B - A per request |")
    print("|---|---|")
    for g, d in groups.items():
        print(f"| {g} | {d:+.0f} |")
    print(f"| everything else | {other:+.0f} |")
    print()
    print("| function | A | B | B - A |")
    print("|---|---|---|---|")
    for d, n in diff[:top]:
        print(f"| `{short(n)}` | {a.get(n, 0):.0f} | {b.get(n, 0):.0f} | {d:+.0f} |")


main()
