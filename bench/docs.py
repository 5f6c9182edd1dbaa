"""Benchmark the knowledge base: rendered-page throughput, search latency, rebuild time.

    .venv/bin/python bench/docs.py [--quick] [--duration 10] [--connections 32] [--workers N]

Builds content/docs into a throw-away SQLite database (full rebuild timed), times the golden
search queries in-process, starts the ASGI server as `make run` does (uvicorn with --workers,
default $WEB_WORKERS or 2, as in the Procfile) on a free loopback port, and drives it with `wrk`
(Debian package): every docs page over --connections keep-alive connections, then the golden
queries as search requests (results fragment) from --search-connections clients that open a new
connection per request, so that requests spread over the workers as many clients' would (4).
Loopback only; every load run is bounded by --duration. --quick: 4 s load runs and 2 in-process
rounds, well under a minute.

The last line is machine-readable:
RESULT page_rps=… page_p95_ms=… search_p95_ms=… search_http_p95_ms=… golden_top3=…
  page_rps, page_p95_ms   pages over HTTP (target: >= 500 req/s)
  search_p95_ms           search() called in-process: ranking, snippets, the database query
  search_http_p95_ms      the same queries as HTTP requests through uvicorn and Django's middleware
  golden_top3             fraction of golden queries whose page ranks in the top 3
The search target, p95 <= 20 ms, applies to both search numbers.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
WORKDIR = Path(tempfile.mkdtemp(prefix="virtlab-bench-docs-"))
# Settings read the environment at import: point the database at the throw-away file first.
os.environ["DATABASE_URL"] = f"sqlite:///{WORKDIR / 'bench.sqlite3'}"
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402

from portal.kb.build import build_docs  # noqa: E402
from portal.kb.content import load_golden, page_files  # noqa: E402
from portal.kb.search import search  # noqa: E402

# wrk: rotate through the given paths; print p95 (wrk's own report stops at p99 buckets).
WRK_LUA = """
local paths = {}
for line in io.lines("%s") do paths[#paths + 1] = line end
local i = 0
request = function()
  i = i %% #paths + 1
  return wrk.format("GET", paths[i])
end
done = function(summary, latency, requests)
  io.write(string.format("BENCH requests=%%d duration_us=%%d p50_us=%%d p95_us=%%d errors=%%d status=%%d\\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(95),
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status))
end
"""


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - loopback URL we built
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"server not answering {url}")


def warm_up(base: str, paths: list[str], timeout: float = 60.0) -> None:
    """Until 16 requests in a row answer fast: every worker has loaded jieba and its caches."""
    deadline, fast, i = time.monotonic() + timeout, 0, 0
    while fast < 16 and time.monotonic() < deadline:
        started = time.monotonic()
        with urllib.request.urlopen(base + paths[i % len(paths)], timeout=30) as resp:  # noqa: S310 - loopback
            resp.read()
        fast = fast + 1 if time.monotonic() - started < 0.1 else 0
        i += 1


def run_wrk(
    base: str, paths: list[str], duration: int, connections: int, name: str, *, keep_alive: bool = True
) -> dict[str, float]:
    paths_file = WORKDIR / f"{name}.paths"
    paths_file.write_text("\n".join(paths) + "\n")
    script = WORKDIR / f"{name}.lua"
    script.write_text(WRK_LUA % paths_file)
    threads = 2
    proc = subprocess.run(
        [
            "wrk",
            "-t",
            str(threads),
            "-c",
            str(max(connections, threads)),
            "-d",
            f"{duration}s",
            "--timeout",
            "5s",
            *([] if keep_alive else ["-H", "Connection: close"]),
            "-s",
            str(script),
            base,
        ],
        capture_output=True,
        text=True,
        timeout=duration + 30,
        check=True,
    )
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH "))
    stats = {k: float(v) for k, v in (kv.split("=") for kv in line.split()[1:])}
    stats["rps"] = stats["requests"] / (stats["duration_us"] / 1e6)
    return stats


def measure_search(golden: list[dict[str, str]], rounds: int) -> tuple[float, float]:
    """(p95 ms of in-process search calls, fraction of golden queries with the page in the top 3)."""
    hits = sum(g["expect"] in [r.slug for r in search(g["q"], lang=g["lang"], limit=3)] for g in golden)
    timings = []
    for _ in range(rounds):
        for g in golden:
            started = time.perf_counter()
            search(g["q"], lang=g["lang"], limit=10)
            timings.append((time.perf_counter() - started) * 1000)
    return p95(timings), hits / len(golden)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short runs: finishes in under a minute")
    parser.add_argument("--duration", type=int, default=10, help="seconds of load per wrk run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument(
        "--workers",
        type=int,
        default=int(os.environ.get("WEB_WORKERS", "2")),
        help="uvicorn worker processes (default: $WEB_WORKERS or 2, as make run / the Procfile)",
    )
    parser.add_argument("--search-connections", type=int, default=4, help="concurrent search clients")
    args = parser.parse_args()
    duration = 4 if args.quick else args.duration
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (apt-get install wrk; listed in scripts/system-packages.txt)")

    call_command("migrate", verbosity=0)
    started = time.monotonic()
    report = build_docs()
    rebuild_s = time.monotonic() - started
    print(f"full rebuild: {len(report.rendered)} pages rendered and indexed in {rebuild_s:.2f}s")
    started = time.monotonic()
    build_docs()
    print(f"no-change rebuild: {time.monotonic() - started:.3f}s")

    golden = load_golden()
    search_p95, golden_top3 = measure_search(golden, rounds=2 if args.quick else 10)
    print(f"search in-process: p95 {search_p95:.2f} ms over {len(golden)} golden queries; top-3 {golden_top3:.3f}")

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    server = subprocess.Popen(
        [
            str(ROOT / ".venv/bin/uvicorn"),
            "portal.asgi:application",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(args.workers),
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
    )
    try:
        wait_http(base + "/docs/", 60)
        pages = [f"/docs/{lang}/{slug}/" for lang, slug in page_files()]
        search_paths = [
            "/docs/search/?" + urllib.parse.urlencode({"q": g["q"], "lang": g["lang"], "partial": "1"}) for g in golden
        ]
        print(f"server: uvicorn, {args.workers} worker(s), on {base}")
        # Warm every worker: jieba's dictionary and the per-build caches load on first use.
        run_wrk(base, pages + search_paths, 2, max(4, 2 * args.workers), "warm")
        warm_up(base, search_paths + pages)
        page_stats = run_wrk(base, pages, duration, args.connections, "pages")
        print(
            f"pages over HTTP: {page_stats['rps']:.0f} req/s, p50 {page_stats['p50_us'] / 1000:.1f} ms, "
            f"p95 {page_stats['p95_us'] / 1000:.1f} ms, errors {page_stats['errors']:.0f}+{page_stats['status']:.0f}"
            f" ({args.connections} connections, {duration}s, {len(pages)} pages)"
        )
        # A new connection per request: the kernel hands each to a worker, as with many clients. A
        # few keep-alive connections stay where they were accepted, and how 4 of them split over 2
        # workers is luck: 2/2 gave p95 13 ms, 3/1 18 ms, 4/0 20 ms at 290 req/s.
        search_stats = run_wrk(base, search_paths, duration, args.search_connections, "search", keep_alive=False)
        print(
            f"search over HTTP: {search_stats['rps']:.0f} req/s, p50 {search_stats['p50_us'] / 1000:.1f} ms, "
            f"p95 {search_stats['p95_us'] / 1000:.1f} ms, errors {search_stats['errors']:.0f}+"
            f"{search_stats['status']:.0f} ({args.search_connections} connections, one request each, {duration}s)"
        )
    finally:
        server.terminate()
        server.wait(15)
        shutil.rmtree(WORKDIR, ignore_errors=True)
    print(
        f"RESULT page_rps={page_stats['rps']:.0f} page_p95_ms={page_stats['p95_us'] / 1000:.1f} "
        f"search_p95_ms={search_p95:.2f} search_http_p95_ms={search_stats['p95_us'] / 1000:.1f} "
        f"golden_top3={golden_top3:.3f}"
    )


if __name__ == "__main__":
    main()
