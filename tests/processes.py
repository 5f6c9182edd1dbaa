"""Processes started by tests and benchmarks: stopping them and their whole trees (/proc)."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 15) -> None:
    """SIGTERM, then SIGKILL the whole tree (a worker and its pool) if it has not exited in time."""
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        kill_process_tree(proc.pid)
        proc.wait()


def children_of() -> dict[int, list[int]]:
    """Parent pid -> child pids of every process, from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    return children


def descendants(pid: int) -> dict[int, str]:
    """pid -> command line of every process below `pid`."""
    tree, todo, children = {}, [pid], children_of()
    while todo:
        for child in children.get(todo.pop(), []):
            try:
                tree[child] = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            todo.append(child)
    return tree


def kill_process_tree(pid: int) -> None:
    """SIGKILL a process and its descendants (a worker and its pool), as a crash would."""
    for member in [pid, *descendants(pid)]:
        try:
            os.kill(member, signal.SIGKILL)
        except ProcessLookupError:
            continue
