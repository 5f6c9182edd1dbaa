"""The lab stack launcher tests and benchmarks share: a whole stack of real processes (DB file, private
Redis, the host's workers, the ASGI server) and the clients that drive it (the service processes
themselves, and waiting for them: tests/servers.py)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis
from pytest_django import Settings

from tests.processes import stop_process
from tests.servers import ROOT, VENV_BIN, celery_worker, free_port, private_redis, wait_for

# --- A whole lab stack for end-to-end tests: DB file, private Redis, host agent worker, ASGI server.

LAB_SLUG = "relay-check"


def write_test_lab(content_dir: Path, slug: str = LAB_SLUG) -> str:
    """A two-step lab on the `tiny` profile, written as content/labs/<slug>; returns the slug."""
    import yaml

    lab = content_dir / "labs" / slug
    (content_dir / "docs" / "en").mkdir(parents=True, exist_ok=True)
    steps = {
        "01-hello": ("/root/hello.txt exists", "test -f /root/hello.txt", "echo hi > /root/hello.txt"),
        "02-world": ("it contains 'world'", "grep -q world /root/hello.txt", "echo world >> /root/hello.txt"),
    }
    meta = {
        "slug": slug, "title": {"en": "Relay check", "zh": "中继检查"},
        "summary": {"en": "Make a file.", "zh": "创建一个文件。"}, "duration_min": 5,
        "difficulty": "intro", "profile": "tiny", "docs": [], "steps": list(steps),
    }  # fmt: skip
    lab.mkdir(parents=True, exist_ok=True)
    (lab / "lab.yaml").write_text(yaml.safe_dump(meta, allow_unicode=True))
    for name, (what, check, solution) in steps.items():
        step = lab / "steps" / name
        step.mkdir(parents=True, exist_ok=True)
        (step / "en.md").write_text(f"Make sure {what}.\n")
        (step / "zh.md").write_text(f"确保 {what}。\n")
        data = {
            "title": {"en": f"Step {name}", "zh": f"步骤 {name}"},
            "setup": ["mkdir -p /root && echo set-up >> /tmp/setup.log"],
            "check": [{"guest": {"run": check}, "message": {"en": f"{what}: not yet", "zh": f"{what} 还没有"}}],
            "hints": {"en": [f"Try: `{solution}`"], "zh": [f"试试 `{solution}`"]},
            "solution": [solution],
        }
        (step / "step.yaml").write_text(yaml.safe_dump(data, allow_unicode=True))
    return slug


def lab_env(tmp: Path, redis_url: str, **extra: str) -> dict[str, str]:
    """Environment for every process of a test stack: its own DB file, Redis, host name, id prefix,
    and var directory with a secret key (what scripts/setup.sh prepares; settings write nothing)."""
    tag = os.urandom(3).hex()
    var = Path(extra.get("VIRTLAB_VAR_DIR", tmp / "var"))
    var.mkdir(parents=True, exist_ok=True)
    if not (var / "secret_key").exists():
        (var / "secret_key").write_text(os.urandom(32).hex())
    return {
        "VIRTLAB_VAR_DIR": str(var),
        "DATABASE_URL": f"sqlite:///{tmp / 'virtlab.sqlite3'}",
        "REDIS_URL": redis_url,
        "CELERY_BROKER_URL": redis_url,
        "CELERY_RESULT_BACKEND": redis_url,
        "VIRTLAB_CONTENT_DIR": str(tmp / "content"),
        "VIRTLAB_HOST_NAME": f"test-{tag}",
        "LABS_ID_PREFIX": f"t{tag}-",
        "LABS_POOL_SIZES": "tiny=0",
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "STATIC_ROOT": str(tmp / "static"),
        **extra,
    }


def manage(env: dict[str, str], *args: str) -> str:
    """Run manage.py with the stack's environment; returns stdout."""
    result = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True,
        check=True, timeout=120,
    )  # fmt: skip
    return result.stdout


def create_users(env: dict[str, str], password: str, *usernames: str, staff: tuple[str, ...] = ()) -> None:
    code = (
        "from django.contrib.auth.models import User\n"
        f"for name in {list(usernames)!r}:\n"
        f"    User.objects.create_user(name, name + '@example.com', {password!r}, is_staff=name in {list(staff)!r})\n"
    )
    manage(env, "shell", "-c", code)


def prepare(env: dict[str, str], *usernames: str, staff: tuple[str, ...] = (), password: str = "") -> None:
    """What a stack needs before its processes start: the DB migrated, this checkout's static files
    collected (not a stale collection) and its users, in ONE manage.py process: each process is a
    Django start-up, 1.5-3 s of CPU on a busy 2-core machine, paid by every stack of the suite."""
    code = (
        "from django.core.management import call_command\n"
        "from django.contrib.auth.models import User\n"
        "call_command('migrate', interactive=False, verbosity=0)\n"
        "call_command('collectstatic', interactive=False, verbosity=0)\n"
        f"for name in {list(usernames)!r}:\n"
        f"    User.objects.create_user(name, name + '@example.com', {password or STACK_PASSWORD!r},"
        f" is_staff=name in {list(staff)!r})\n"
    )
    manage(env, "shell", "-c", code)


@contextmanager
def host_agent(env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    """The stack's host as `make run` runs it: the host agent (a worker on host.<name> and web, with
    its relay and adverts) and the host's check worker (host.<name>.checks). Yields the agent."""
    host = env["VIRTLAB_HOST_NAME"]
    with (
        celery_worker(env, queues=f"host.{host}.checks", name=f"{host}-checks"),
        celery_worker(env, queues=f"host.{host},web", name=host) as agent,
    ):
        yield agent


def uvicorn_argv(env: dict[str, str], port: int, workers: int = 1) -> list[str]:
    """uvicorn serving portal.asgi on 127.0.0.1:`port` as the Procfile runs it (`workers` processes;
    1: one process, no supervisor)."""
    # The Procfile's websocket flags: a frame over the consumers' limit is refused by uvicorn itself,
    # and no compression (a few hundred compressed bytes inflate to a 64 KiB frame each, all queued).
    max_frame = env.get("LABS_WS_MAX_FRAME_BYTES")
    if max_frame is None:  # the settings' default (a bench process may not have configured Django yet)
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
        from django.conf import settings

        max_frame = str(settings.LABS_WS_MAX_FRAME_BYTES)
    return [str(VENV_BIN / "uvicorn"), "portal.asgi:application", "--host", "127.0.0.1", "--port", str(port),
            "--ws-max-size", max_frame, "--ws-per-message-deflate", "false",
            "--no-access-log", "--log-level", "warning",
            *(["--workers", str(workers)] if workers > 1 else [])]  # fmt: skip


@contextmanager
def asgi_server(env: dict[str, str], workers: int = 1) -> Iterator[str]:
    """uvicorn serving portal.asgi (HTTP and websockets), with `workers` processes as the Procfile's
    WEB_WORKERS (1: one process, no supervisor); yields its base URL."""
    import urllib.request

    port = free_port()
    proc = subprocess.Popen(uvicorn_argv(env, port, workers), cwd=ROOT, env={**os.environ, **env})
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: urllib.request.urlopen(base + "/accounts/login/", timeout=2).status == 200, 30, "uvicorn")  # noqa: S310
        yield base
    finally:
        stop_process(proc, 10)


def wait_for_advert(redis_url: str, host: str, timeout: float = 60) -> None:
    client = redis.Redis.from_url(redis_url)
    wait_for(lambda: client.exists(f"virtlab:host:{host}"), timeout, f"host advert of {host}")


class LabClient:
    """A logged-in learner talking to a live server: HTTP with cookies + CSRF, and websockets."""

    def __init__(self, base: str):
        import http.cookiejar
        import urllib.request

        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def cookie(self, name: str) -> str:
        return next((c.value or "" for c in self.jar if c.name == name), "")

    def request(self, method: str, path: str, body: Any = None, form: dict[str, str] | None = None) -> tuple[int, Any]:
        import json
        import urllib.error
        import urllib.parse
        import urllib.request

        if not self.cookie("csrftoken"):
            self.opener.open(self.base + "/accounts/login/", timeout=10).read()
        headers = {"X-CSRFToken": self.cookie("csrftoken"), "Referer": self.base + "/"}
        data = None
        if form is not None:
            data = urllib.parse.urlencode({**form, "csrfmiddlewaretoken": self.cookie("csrftoken")}).encode()
        elif body is not None:
            data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)  # noqa: S310  (http only: self.base)
        try:
            with self.opener.open(req, timeout=30) as resp:
                raw, status = resp.read(), resp.status
        except urllib.error.HTTPError as exc:
            raw, status = exc.read(), exc.code
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode(errors="replace")

    def login(self, username: str, password: str) -> None:
        status, _ = self.request("POST", "/accounts/login/", form={"username": username, "password": password})
        assert self.cookie("sessionid"), f"login of {username} failed ({status})"

    def websocket(self, path: str, origin: str | None = None) -> Any:
        from websockets.sync.client import connect

        cookies = "; ".join(f"{c.name}={c.value}" for c in self.jar)
        ws_url = self.base.replace("http://", "ws://") + path
        return connect(ws_url, additional_headers={"Cookie": cookies, "Origin": origin or self.base},
                       open_timeout=10, max_size=None)  # fmt: skip


def destroy_vms_with_prefix(prefix: str) -> list[str]:
    """Remove every VM a test stack created (its ids start with `prefix`), whatever state it is in,
    and then its clone templates (named with the same prefix; see labs/host/templates.py)."""
    from labs.hypervisor import DomainMissing, Hypervisor
    from labs.hypervisor.clones import remove_markers

    removed = []
    with Hypervisor.connect() as hv:
        for tagged in hv.list_tagged():
            if tagged.session_id.startswith(prefix):
                try:
                    hv.vm(tagged.session_id).destroy()
                except DomainMissing:
                    continue
                removed.append(tagged.session_id)
        for template in hv.templates():
            if prefix and template.key.startswith(prefix):  # never another deployment's
                hv.remove_template(template)
        remove_markers(hv.disks_root, prefix)
    return removed


def point_settings_at_redis(settings: Settings, url: str) -> None:
    """Make this test process's cache, channel layer, broker and adverts use the Redis at `url`."""
    from axes.handlers.proxy import AxesProxyHandler

    from portal.celery import app
    from portal.settings import channel_layers

    settings.REDIS_URL = url
    settings.CELERY_BROKER_URL = url
    # The Celery app read its broker at import and pools connections: repoint it (no worker listens).
    # Its pools are private caches that celery-types does not declare; emptying them is the only way
    # to make the next send open a connection to the new broker.
    app.conf["broker_url"] = url
    app._pool = None  # type: ignore[attr-defined]
    app.amqp._producer_pool = None  # type: ignore[attr-defined]
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": url}}
    settings.CHANNEL_LAYERS = channel_layers(url)
    AxesProxyHandler.implementation = None  # django-axes looks up the cache again on next use


def advertise_host(name: str, max_vms: int = 10, max_boots: int = 10, disk_free_mib: int = 100_000) -> None:
    """Publish a host advert as an agent would (for placement tests without a worker)."""
    from labs import host_registry

    host_registry.publish(host_registry.HostAdvert(name=name, libvirt_ok=True, accelerator="tcg", image_present=True,
                                   total_mem_mib=4096, free_mem_mib=4096, vm_count=0, max_vms=max_vms,
                                   cpus=2, max_boots=max_boots, disk_free_mib=disk_free_mib))  # fmt: skip


STACK_PASSWORD = "correct-horse-battery-staple"


class LabStack:
    """A running stack: base URL, the environment every process shares, and the lab's slug."""

    def __init__(self, base: str, env: dict[str, str], slug: str, redis_url: str):
        self.base, self.env, self.slug, self.redis_url = base, env, slug, redis_url
        self.host = env["VIRTLAB_HOST_NAME"]

    def client(self, username: str) -> LabClient:
        client = LabClient(self.base)
        client.login(username, STACK_PASSWORD)
        return client

    def shell(self, code: str) -> str:
        return manage(self.env, "shell", "-c", code)


@contextmanager
def lab_stack(tmp: Path, agent: bool = True, **extra_env: str) -> Iterator[LabStack]:
    """Private Redis, a migrated SQLite file, users alice/bob/staffer, a host agent and uvicorn.
    Every VM the stack made is destroyed on exit."""
    with private_redis() as redis_url:
        env = lab_env(tmp, redis_url, **extra_env)
        slug = write_test_lab(Path(env["VIRTLAB_CONTENT_DIR"]))
        prepare(env, "alice", "bob", "staffer", staff=("staffer",))
        try:
            with asgi_server(env) as base:
                if agent:
                    with host_agent(env):
                        wait_for_advert(redis_url, env["VIRTLAB_HOST_NAME"])
                        yield LabStack(base, env, slug, redis_url)
                else:
                    yield LabStack(base, env, slug, redis_url)
        finally:
            destroy_vms_with_prefix(env["LABS_ID_PREFIX"])


def wait_for_state(client: LabClient, session_id: str, states: set[str], timeout: float) -> dict[str, Any]:
    """Poll the API until the session is in one of `states`; returns the session."""
    deadline = time.monotonic() + timeout
    body: Any = None
    while time.monotonic() < deadline:
        _status, body = client.request("GET", f"/api/sessions/{session_id}")
        if body.get("state") in states:
            return dict(body)
        time.sleep(0.2)
    raise AssertionError(f"session {session_id} never reached {states}: {body}")


def lab_templates(stack: LabStack, slug: str = "") -> list[str]:
    """Keys of the complete templates of the stack's lab (or lab `slug`) on this host (built for
    the stack only: their keys carry its pool prefix; see labs/host/templates.py)."""
    from labs.hypervisor.clones import list_templates
    from labs.hypervisor.disks import DEFAULT_DISKS_ROOT

    prefix = f"{stack.env['LABS_ID_PREFIX']}pool-{slug or stack.slug}."
    return [t.key for t in list_templates(DEFAULT_DISKS_ROOT) if t.key.startswith(prefix)]


def snapshots_of(vm_id: str) -> list[str]:
    from labs.hypervisor import Hypervisor

    with Hypervisor.connect() as hv:
        return hv.vm(vm_id).list_snapshots()


def domain_exists(vm_id: str) -> bool:
    from labs.hypervisor import DomainMissing, Hypervisor

    with Hypervisor.connect() as hv:
        try:
            return hv.vm(vm_id).is_running()
        except DomainMissing:
            return False


# Driving a session over its websockets (what a learner's page does), for tests and benchmarks.


def next_event(ws: Any, predicate: Callable[[dict[str, Any]], bool], timeout: float) -> dict[str, Any]:
    """The first JSON message on `ws` that satisfies `predicate`."""
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while time.monotonic() < deadline:
        try:
            raw = ws.recv(timeout=max(0.1, deadline - time.monotonic()))
        except TimeoutError:
            break
        if isinstance(raw, bytes):
            continue
        message = json.loads(raw)
        session = message.get("session", {})
        error = f" ({session['error']})" if session.get("error") else ""
        seen.append(str(session.get("state") or message.get("stage")) + error)
        if predicate(message):
            return dict(message)
    raise AssertionError(f"no matching event within {timeout}s; saw {seen}")


def read_until(ws: Any, pattern: re.Pattern[bytes], timeout: float) -> bytes:
    deadline = time.monotonic() + timeout
    buffer = b""
    while not pattern.search(buffer):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"{pattern.pattern!r} not seen; terminal showed {buffer[-400:]!r}")
        try:
            frame = ws.recv(timeout=remaining)
        except TimeoutError:
            continue
        if isinstance(frame, bytes):
            buffer += frame
    return buffer
