"""Benchmark the knowledge base: rendered-page throughput, search latency, rebuild time, memory.

    .venv/bin/python bench/docs.py [--quick] [--pages N] [--keep DIR] [--profile] [--duration 10] [--connections 32]
    DATABASE_URL=postgres://user:pw@host/db .venv/bin/python bench/docs.py ...   # on PostgreSQL

Builds content/docs into a throw-away database (full rebuild timed): a SQLite file, or with a
PostgreSQL DATABASE_URL a database created for the run on that server and dropped after it.
--pages N: a synthetic corpus instead, N pages per language made from the real pages (each copy
keeps a seeded random two thirds of its original's sections, and its own title), with the real
labs; a one-page edit is then rebuilt and timed. Times the golden search queries in-process (a
copy of a page counts as that page for golden_top3), starts the ASGI server as `make run` does (uvicorn with --workers,
default $WEB_WORKERS or 2, as in the Procfile) on a free loopback port, and drives it with `wrk`
(Debian package): every docs page over --connections keep-alive connections, then the golden
queries as search requests (results fragment) from --search-connections clients that open a new
connection per request, so that requests spread over the workers as many clients' would (4).
Loopback only; every load run is bounded by --duration. --quick: 4 s load runs and 2 in-process
rounds, well under a minute.
--keep DIR: the corpus and the database are kept (in DIR; on PostgreSQL, database
virtlab_bench_docs_keep) and reused by the next run with --keep DIR: a 2,000-page build costs ~10 min
of CPU, a rerun only the no-change rebuild (build_s=0 then); the edited page is put back after its
timing. --profile: cProfile's top functions over one in-process round of the golden queries.

The last line is machine-readable:
RESULT page_rps=… page_p95_ms=… search_p95_ms=… search_http_p95_ms=… golden_top3=… pages=… build_s=…
       edit_s=… web_rss_mib=… db=…
  page_rps, page_p95_ms   pages over HTTP (target: >= 500 req/s)
  search_p95_ms           search() called in-process: ranking, snippets, the database query
  search_cpu_p95_ms       the same in CPU time (SQLite: the query too), steadier on a shared host
  search_http_p95_ms      the same queries as HTTP requests through uvicorn and Django's middleware
  golden_top3             fraction of golden queries passing (page in the top 3, or nothing found)
  pages                   doc pages per language in the corpus
  build_s, edit_s         full build; rebuild after editing one page (--pages only, else 0)
  web_rss_mib             the largest uvicorn worker's resident memory after the load runs
  db                      sqlite or postgresql
The search target, p95 <= 20 ms, applies to both search numbers; at --pages 2000: web_rss_mib <= 250,
edit_s <= 5.
"""

from __future__ import annotations

import argparse
import os
import random
import re
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
# --keep decides where the database lives, which the settings read at import: parsed here already.
_keep = argparse.ArgumentParser(add_help=False)
_keep.add_argument("--keep", type=Path)
KEEP: Path | None = _keep.parse_known_args()[0].keep
if KEEP is not None:
    KEEP = KEEP.resolve()
    KEEP.mkdir(parents=True, exist_ok=True)
WORKDIR = KEEP or Path(tempfile.mkdtemp(prefix="virtlab-bench-docs-"))
SOURCE_DB = os.environ.get("DATABASE_URL", "")
BENCH_PG_DB = "virtlab_bench_docs_keep" if KEEP else f"virtlab_bench_docs_{os.getpid()}"


def _admin_pg(statement: str) -> None:
    """Run CREATE/DROP DATABASE on the server of SOURCE_DB (outside a transaction)."""
    import psycopg

    with psycopg.connect(SOURCE_DB.replace("postgres://", "postgresql://", 1), autocommit=True) as conn:
        conn.execute(statement)


# Settings read the environment at import: point the database at a throw-away one first.
ON_POSTGRES = SOURCE_DB.startswith(("postgres://", "postgresql://"))
if ON_POSTGRES:
    if KEEP is None or not (KEEP / "postgresql.built").exists():
        _admin_pg(f'DROP DATABASE IF EXISTS "{BENCH_PG_DB}"')
        _admin_pg(f'CREATE DATABASE "{BENCH_PG_DB}"')
    os.environ["DATABASE_URL"] = urllib.parse.urlsplit(SOURCE_DB)._replace(path=f"/{BENCH_PG_DB}").geturl()
else:
    os.environ["DATABASE_URL"] = f"sqlite:///{WORKDIR / 'bench.sqlite3'}"
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402

from portal.kb.build import build_docs  # noqa: E402
from portal.kb.content import GOLDEN_NOTHING, load_golden, page_files  # noqa: E402
from portal.kb.search import search  # noqa: E402
from portal.kb.text import jieba  # noqa: E402

SECTION_RE = re.compile(r"(?m)^(?=## )")

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


def synthetic_corpus(pages: int) -> Path:
    """WORKDIR/content: `pages` doc pages per language made from the real ones, the real labs,
    glossary and pictures. Copy k of page s is s--k: same section and links, its own title, a
    seeded random two thirds of the original's sections (so copies differ, as real pages do)."""
    real = ROOT / "content"
    out = WORKDIR / "content"
    marker = WORKDIR / "pages"
    if KEEP is not None and out.exists():
        if marker.read_text().strip() != str(pages):
            sys.exit(f"{KEEP} holds a corpus of {marker.read_text().strip()} pages per language, not {pages}")
        return out
    shutil.copytree(real / "labs", out / "labs")
    for part in ("glossary", "golden", "img"):
        if (real / "docs" / part).exists():
            shutil.copytree(real / "docs" / part, out / "docs" / part)
    rng = random.Random(14)
    for lang in ("en", "zh"):
        (out / "docs" / lang).mkdir(parents=True)
        originals = sorted((real / "docs" / lang).glob("*.md"))
        for path in originals:
            shutil.copy(path, out / "docs" / lang / path.name)
        for k in range(max(0, pages - len(originals))):
            src = originals[k % len(originals)]
            front, body = src.read_text().split("\n---\n", 1)
            slug = f"{src.stem}--{k}"
            front = re.sub(r"(?m)^slug: .*$", f"slug: {slug}", front)
            title = re.search(r'(?m)^title: "?(.*?)"?$', front)
            assert title is not None, src
            front = front.replace(title.group(0), f'title: "{title.group(1)} ({k})"', 1)
            front = re.sub(r"(?m)^order: .*$", f"order: {1000 + k}", front)
            intro, *sections = SECTION_RE.split(body)
            kept = [s for s in sections if rng.random() < 2 / 3] or sections[:1]
            (out / "docs" / lang / f"{slug}.md").write_text(front + "\n---\n" + intro + "".join(kept))
    marker.write_text(f"{pages}\n")
    return out


def golden_passes(g: dict[str, str], keys: list[str]) -> bool:
    """Top-3 keys pass for the expected page or a synthetic copy of it (s--k)."""
    if g["expect"] == GOLDEN_NOTHING:
        return not keys
    return any(key == g["expect"] or key.split("--")[0] == g["expect"] for key in keys)


def profile_search(golden: list[dict[str, str]]) -> None:
    """Where one round of the golden queries spends its time (--profile)."""
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    for g in golden:
        search(g["q"], lang=g["lang"] or None, limit=10)
    profiler.disable()
    pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)


def measure_search(golden: list[dict[str, str]], rounds: int) -> tuple[float, float, float]:
    """(p95 ms of in-process search calls, the same in CPU time, fraction of golden queries passing).
    CPU time (SQLite runs in the process) stays meaningful on a host whose cores are shared."""
    passed = sum(golden_passes(g, [r.key for r in search(g["q"], lang=g["lang"] or None, limit=3)]) for g in golden)
    timings, cpu = [], []
    for _ in range(rounds):
        for g in golden:
            started, started_cpu = time.perf_counter(), time.process_time()
            search(g["q"], lang=g["lang"] or None, limit=10)
            timings.append((time.perf_counter() - started) * 1000)
            cpu.append((time.process_time() - started_cpu) * 1000)
    return p95(timings), p95(cpu), passed / len(golden)


def worker_rss_mib(server_pid: int) -> float:
    """The largest resident set among the server's processes (uvicorn's workers are its children)."""
    largest = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
            status = (proc / "status").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if int(proc.name) == server_pid or ppid == server_pid:
            m = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
            largest = max(largest, int(m.group(1)) if m else 0)
    return largest / 1024


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
    parser.add_argument("--pages", type=int, help="a synthetic corpus of N doc pages per language")
    parser.add_argument("--keep", type=Path, help="keep the corpus and database in DIR; reuse them if there")
    parser.add_argument("--profile", action="store_true", help="cProfile one in-process round of golden queries")
    args = parser.parse_args()
    duration = 4 if args.quick else args.duration
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (apt-get install wrk; listed in scripts/system-packages.txt)")

    try:
        run(args, duration)
    finally:
        connection.close()
        if KEEP is None:
            shutil.rmtree(WORKDIR, ignore_errors=True)
            if ON_POSTGRES:
                _admin_pg(f'DROP DATABASE IF EXISTS "{BENCH_PG_DB}"')


def run(args: argparse.Namespace, duration: int) -> None:
    call_command("migrate", verbosity=0)
    content = synthetic_corpus(args.pages) if args.pages else None
    if content is not None:
        # The server reads the same corpus (page fallbacks, the lab catalog).
        os.environ["VIRTLAB_CONTENT_DIR"] = str(content)
        settings.CONTENT_DIR = content
    started = time.monotonic()
    report = build_docs(content)
    build_s = time.monotonic() - started
    pages_per_lang = len(page_files(content)) // 2
    if KEEP is not None and not report.rendered:
        build_s = 0.0
        print(f"full build: reused from {KEEP} ({pages_per_lang} pages per language) on {connection.vendor}")
    else:
        print(
            f"full build: {len(report.rendered)} pages ({pages_per_lang} per language) rendered and indexed, "
            f"{len(report.labs_indexed)} lab pages, in {build_s:.2f}s on {connection.vendor}"
        )
    if KEEP is not None:
        (KEEP / f"{connection.vendor}.built").touch()
    started = time.monotonic()
    build_docs(content)
    print(f"no-change rebuild: {time.monotonic() - started:.3f}s")
    edit_s = 0.0
    if content is not None:
        edited = min((content / "docs" / "en").glob("*--0.md"))
        original = edited.read_text()
        jieba()  # loaded by a full build; a reused one has not, and its load is no part of an edit
        edited.write_text(original + "\n## Edited {#edited}\n\nOne more paragraph: zebrafishedit.\n")
        started = time.monotonic()
        edit_report = build_docs(content)
        edit_s = time.monotonic() - started
        assert edit_report.rendered == [f"en/{edited.stem}"], edit_report.rendered
        assert [r.slug for r in search("zebrafishedit", lang="en")] == [edited.stem]
        print(f"one-page edit rebuild: {edit_s:.2f}s")
        if KEEP is not None:  # the kept corpus stays as generated
            edited.write_text(original)
            build_docs(content)

    golden = load_golden(content)
    if args.profile:
        profile_search(golden)
    search_p95, search_cpu_p95, golden_top3 = measure_search(golden, rounds=2 if args.quick else 10)
    print(
        f"search in-process: p95 {search_p95:.2f} ms (CPU {search_cpu_p95:.2f} ms) over {len(golden)} golden queries;"
        f" top-3 {golden_top3:.3f}"
    )

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    # wrk is one address standing in for many readers: each client's share of a web process
    # (portal/client_share.py) would refuse nearly all of its requests.
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "WEB_ADDRESS_RATE": "0", "WEB_ADDRESS_CONCURRENCY": "1024"}
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
        wait_http(base + "/docs/", 120)
        pages = [f"/docs/{lang}/{slug}/" for lang, slug in page_files(content)]
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
        rss = worker_rss_mib(server.pid)
        print(f"web worker RSS after the load runs: {rss:.0f} MiB (largest of {args.workers})")
    finally:
        server.terminate()
        server.wait(15)
    print(
        f"RESULT page_rps={page_stats['rps']:.0f} page_p95_ms={page_stats['p95_us'] / 1000:.1f} "
        f"search_p95_ms={search_p95:.2f} search_cpu_p95_ms={search_cpu_p95:.2f} "
        f"search_http_p95_ms={search_stats['p95_us'] / 1000:.1f} "
        f"golden_top3={golden_top3:.3f} pages={pages_per_lang} build_s={build_s:.1f} edit_s={edit_s:.2f} "
        f"web_rss_mib={rss:.0f} db={connection.vendor}"
    )


if __name__ == "__main__":
    main()
