"""The layering rules of DESIGN.md, checked on the source: imports flow one way, and never in a circle.

The graph is read from the source with `ast` (every import, at module level or inside a function),
so a rule broken on a path no test happens to execute still fails here.
"""

from __future__ import annotations

import ast
import graphlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("portal", "labs", "classes")
# The host side and what only it may load: a web process importing any of these could open libvirt.
HOST_ONLY = ("labs.host", "labs.hypervisor", "libvirt", "libvirt_qemu")
# Runs on a hypervisor host, not in the web tier: management commands (`doctor --local` probes the
# local libvirt) and the host package itself.
NOT_WEB = ("labs.host", "labs.hypervisor", "labs.management", "portal.management")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    files = (p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))
    return {module_name(p): p for p in files if "migrations" not in p.parts}


def imported_names(path: Path, module: str) -> set[str]:
    """Every module `path` imports, absolute and dotted (`from a import b` yields a.b when b is a module)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def import_graph() -> dict[str, set[str]]:
    """Project module -> the project modules (and outside top-level names) it imports."""
    modules = project_modules()
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        edges = set()
        names = imported_names(path, module)
        # Importing a.b.c runs a/__init__ and a/b/__init__ first: those are dependencies too.
        names |= {".".join(n.split(".")[:i]) for n in names for i in range(1, n.count(".") + 1)}
        for name in names:
            if name in modules:
                edges.add(name)
            elif name.split(".")[0] not in PACKAGES:
                edges.add(name)  # third party: kept so the one-way rule can see libvirt
        # A module's own packages are initialised before it by Python itself: not a dependency it chose.
        parts = module.split(".")
        edges -= {module, *(".".join(parts[:i]) for i in range(1, len(parts)))}
        graph[module] = edges
    return graph


def is_under(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def reachable(graph: dict[str, set[str]], start: str) -> dict[str, str]:
    """Every module reachable from `start`, with the module that first imported it (for messages)."""
    seen: dict[str, str] = {}
    todo = [start]
    while todo:
        current = todo.pop()
        for name in graph.get(current, ()):
            if name not in seen:
                seen[name] = current
                todo.append(name)
    return seen


def path_to(via: dict[str, str], start: str, end: str) -> str:
    chain = [end]
    while chain[-1] != start:
        chain.append(via[chain[-1]])
    return " -> ".join(reversed(chain))


def test_graph_sees_the_project_and_its_imports() -> None:
    """Guard for the rules below: an empty or blind graph would make them pass vacuously."""
    graph = import_graph()
    assert {"labs.views", "labs.api", "labs.consumers", "labs.host.vmwork", "portal.celery"} <= set(graph)
    assert "labs.hypervisor" in reachable(graph, "labs.host.vmwork")
    assert "libvirt" in reachable(graph, "labs.host.vmwork")
    assert "labs.task_calls" in graph["labs.services.sessions"]


def test_no_import_cycle_among_project_modules() -> None:
    graph = {m: {n for n in edges if n.split(".")[0] in PACKAGES} for m, edges in import_graph().items()}
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        pytest.fail(f"import cycle: {' -> '.join(exc.args[1])}")


def test_web_side_never_imports_the_host_side_or_libvirt() -> None:
    graph = import_graph()
    web = sorted(m for m in graph if not is_under(m, NOT_WEB))
    assert {"labs.views", "labs.api", "labs.consumers", "labs.services.sessions", "portal.asgi"} <= set(web)
    broken = []
    for module in web:
        via = reachable(graph, module)
        broken += [path_to(via, module, name) for name in via if is_under(name, HOST_ONLY)]
    assert not broken, "the web side reaches the host side:\n" + "\n".join(sorted(broken)[:20])


def test_labs_never_imports_classes() -> None:
    """Classes build on labs (a seat is a lab session taking a reserved VM), never the reverse:
    labs knows a class only as an opaque reservation key and the observer rules named in settings."""
    graph = import_graph()
    broken = [f"{m} imports {n}" for m, edges in graph.items() if is_under(m, ("labs",)) for n in edges
              if is_under(n, ("classes",))]  # fmt: skip
    assert not broken, "\n".join(sorted(broken))


def test_checker_catches_a_web_module_that_imports_the_host_side() -> None:
    """The rule's own test: a view importing the host package is reported with its path."""
    graph = import_graph()
    graph["labs.views"] = {*graph["labs.views"], "labs.host.vmwork"}
    via = reachable(graph, "labs.views")
    assert "labs.views -> labs.host.vmwork -> " in path_to(via, "labs.views", "libvirt")


def test_a_web_process_loads_no_libvirt_at_run_time() -> None:
    """What the ASGI app, URLs, consumers and the task calls import when a web process starts."""
    code = (
        "import django, sys; django.setup();"
        "import portal.asgi, portal.urls, labs.consumers, labs.tasks, labs.task_calls, labs.services.expiry;"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in {'libvirt', 'libvirt_qemu'}"
        " or m.split('.')[:2] in (['labs', 'host'], ['labs', 'hypervisor']));"
        "print(','.join(bad))"
    )
    env = {"DJANGO_SETTINGS_MODULE": "portal.settings", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"a web process loaded: {out.stdout.strip()}"
