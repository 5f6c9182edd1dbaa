"""Benchmark clones: capturing a template and restoring VMs from it (labs/hypervisor/clones.py).

    .venv/bin/python bench/clones.py [--quick] [--clones 30] [--parallel 3] [--cold-start]

Measures: template capture (boot excluded: virDomainSave plus freezing the disks), one clone's
restore until it is usable (restored, agent answering, clock set, RNG reseeded; p50/p95 over
sequential restores), N clones restored `--parallel` at a time until every shell answers, and
the idle RSS per clone. `--cold-start` also runs a private stack (bench/labs.py's) with no warm
pool and times click → prompt for a lab's first start (a boot; the template is built after it)
and for a start once its template exists (a clone). `--quick` (< 60 s on an idle host): 3 single restores.
Last line: RESULT template_s=… restore_p50_s=… restore_p95_s=… clones30_ready_s=…
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.vm import DEFAULT_IMAGE, p95, summary
from labs.hypervisor import VM, Hypervisor
from labs.hypervisor import clones as cl
from labs.hypervisor.naming import DOMAIN_PREFIX

# Generous: on a loaded 2-core TCG host a boot has taken over 120 s.
BOOT_TIMEOUT_S = 600.0


def bench_id(kind: str) -> str:
    return f"bench-{kind}-{uuid.uuid4().hex[:8]}"


def restore_one(template: cl.Template, image: Path) -> tuple[str, float]:
    """(session id, seconds until the clone's shell answers), on this thread's own connection."""
    session_id = bench_id("clone")
    started = time.monotonic()
    with Hypervisor.connect() as hv:
        vm = hv.restore_clone(template, session_id, image, BOOT_TIMEOUT_S)
        assert vm.exec("true").ok
    return session_id, time.monotonic() - started


def destroy(session_id: str) -> None:
    with Hypervisor.connect() as hv:
        hv.vm(session_id).destroy()


def rss_mib(vm: VM) -> float:
    pid = int(Path(f"/run/libvirt/qemu/{vm.name}.pid").read_text())
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cold_starts() -> tuple[float, float]:
    """Click → prompt for a lab's first start (a boot) and for one once its template exists."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")  # lab_stack reads a default or two
    from bench import labs
    from tests import lab_stack, servers

    with tempfile.TemporaryDirectory() as tmp_name, servers.private_redis() as redis_url:
        tmp = Path(tmp_name)
        env = lab_stack.lab_env(tmp, redis_url, LABS_START_RATE="1000")
        slug = lab_stack.write_test_lab(Path(env["VIRTLAB_CONTENT_DIR"]))
        lab_stack.manage(env, "migrate", "--noinput")
        lab_stack.manage(env, "collectstatic", "--noinput")
        lab_stack.create_users(env, lab_stack.STACK_PASSWORD, "bench")
        try:
            with lab_stack.asgi_server(env) as base, labs.agent(env, concurrency=2, pool=""):
                client = lab_stack.LabClient(base)
                client.login("bench", lab_stack.STACK_PASSWORD)
                sid, booted, term = labs.start_to_prompt(client, slug)
                labs.stop(client, sid, term, wait=True)
                prefix = f"{env['LABS_ID_PREFIX']}pool-{slug}."
                with Hypervisor.connect() as hv:
                    servers.wait_for(lambda: any(t.key.startswith(prefix) for t in hv.templates()), 600, "template")
                sid, cloned, term = labs.start_to_prompt(client, slug)
                labs.stop(client, sid, term, wait=True)
        finally:
            lab_stack.destroy_vms_with_prefix(env["LABS_ID_PREFIX"])
    return booted, cloned


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 single restores: < 60 s on an idle host")
    parser.add_argument("--clones", type=int, default=30, help="clones restored together (default 30)")
    parser.add_argument("--parallel", type=int, default=3, help="restores at once (default 3)")
    parser.add_argument("--runs", type=int, default=10, help="single restores timed (default 10)")
    parser.add_argument("--cold-start", action="store_true", help="also time a cold start, booted and cloned")
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    args = parser.parse_args()
    args.image = args.image.resolve()  # one image throughout, even if `current` is switched meanwhile
    runs = 3 if args.quick else args.runs
    t0 = time.monotonic()
    made: list[str] = []
    with Hypervisor.connect() as hv:
        source = hv.create_vm(bench_id("tpl"), "tiny", args.image, clonable=True)
        try:
            boot = source.wait_ready(BOOT_TIMEOUT_S)
            started = time.monotonic()
            template = hv.capture_template(source, cl.templates_root(hv.disks_root) / bench_id("template"), {})
            capture_s = time.monotonic() - started
        except BaseException:
            source.destroy()
            raise
        try:
            singles = []
            for _ in range(runs):
                session_id, seconds = restore_one(template, args.image)
                made.append(session_id)
                singles.append(seconds)
            started = time.monotonic()
            with ThreadPoolExecutor(max_workers=args.parallel) as pool:
                batch = list(pool.map(lambda _: restore_one(template, args.image), range(args.clones)))
            all_ready_s = time.monotonic() - started
            made += [session_id for session_id, _ in batch]
            time.sleep(2 if args.quick else 10)  # idle: the guests settle after their restore
            rss = [rss_mib(hv.vm(session_id)) for session_id in made]
        finally:
            # Every clone, also those of a failed batch; in parallel (each waits on libvirt).
            with ThreadPoolExecutor(max_workers=args.parallel) as pool:
                list(pool.map(destroy, [name.removeprefix(DOMAIN_PREFIX) for name in hv.template_users(template)]))
            hv.remove_template(template)
    print(f"template VM boot (not counted) {boot:.2f} s; capture {capture_s:.2f} s")
    print(summary("one clone restored+usable", singles, "s"))
    print(summary(f"{args.clones} clones, {args.parallel} at once", [s for _, s in batch], "s"))
    print(f"{args.clones} clones all usable after {all_ready_s:.2f} s")
    print(summary("idle RSS per clone", rss, "MiB"), flush=True)
    cold = cold_starts() if args.cold_start else None
    if cold is not None:
        print(f"cold start click->prompt: booted {cold[0]:.2f} s, cloned {cold[1]:.2f} s")
    print(f"total {time.monotonic() - t0:.1f}s")
    print(
        f"RESULT template_s={capture_s:.2f} restore_p50_s={statistics.median(singles):.2f} "
        f"restore_p95_s={p95(singles):.2f} clones{args.clones}_ready_s={all_ready_s:.2f}"
        + (f" cold_boot_s={cold[0]:.2f} cold_clone_s={cold[1]:.2f}" if cold is not None else "")
    )


if __name__ == "__main__":
    main()
