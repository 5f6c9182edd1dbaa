"""Every `sh runnable` block of every page (EN and ZH) runs in ONE real guest and exits 0 (a script
that several pages share runs once).

Blocks run under errexit and pipefail, so any failing command fails the block, and they may not
bow out with `exit 0` when something is missing: the `vfio` guest has everything they need.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from labs.hypervisor import VM, ExecResult
from portal.kb.content import page_files, parse_page
from portal.kb.markdown import render_markdown
from tests.hypervisor.conftest import boot_vm, guest_image, hv, libvirt_ready  # noqa: F401  (shared fixtures)

from .conftest import CONTENT

pytestmark = [pytest.mark.vm, pytest.mark.slow]
BLOCK_TIMEOUT_S = 120.0  # TCG on a shared 2-core host; the slowest block (qemu-img work) takes seconds
SHELL = ("/bin/sh", "-e", "-o", "pipefail", "-c")  # busybox ash: any failing command ends the script


def runnable_blocks() -> list[tuple[str, str]]:
    """(id, script) for each runnable block, in page order."""
    blocks = []
    for (lang, slug), path in sorted(page_files(CONTENT).items()):
        src = parse_page(path, path.read_text(), lang)
        scripts = [b.code for b in render_markdown(src.body, lang=lang).code_blocks if b.runnable]
        blocks += [(f"{lang}/{slug}#{i}", code) for i, code in enumerate(scripts, 1)]
    return blocks


BLOCKS = runnable_blocks()


def distinct_scripts(blocks: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Each script once, in page order, under the ids of every block that holds it: a Chinese page
    mostly repeats its English page's commands, and running the same commands again in the same VM
    proves nothing more (~25 s of TCG per run). A block that differs in any byte still runs."""
    ids: dict[str, list[str]] = {}
    for block_id, script in blocks:
        ids.setdefault(script, []).append(block_id)
    return [("+".join(names), script) for script, names in ids.items()]


SCRIPTS = distinct_scripts(BLOCKS)


@pytest.fixture(scope="module")
def docs_vm(boot_vm: Callable[[str], VM]) -> VM:  # noqa: F811
    """One `vfio` guest for all blocks (boot_vm destroys it at the end of the module)."""
    return boot_vm("vfio")


def run_block(vm: VM, script: str) -> ExecResult:
    return vm.exec([*SHELL, script], timeout_s=BLOCK_TIMEOUT_S)


def test_pages_have_runnable_blocks() -> None:
    assert len(BLOCKS) >= 30
    assert {b.split("/")[0] for b, _ in BLOCKS} == {"en", "zh"}


@pytest.mark.parametrize(("block_id", "script"), BLOCKS, ids=[b for b, _ in BLOCKS])
def test_runnable_block_fails_loudly_for_readers_too(block_id: str, script: str) -> None:
    """A reader pasting the block gets errexit from its first line; nothing skips with success."""
    lines = [ln.strip() for ln in script.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    assert lines[0] == "set -e", f"{block_id}: start with `set -e`"
    assert not re.search(r"\bexit 0\b", script), f"{block_id}: a missing prerequisite must fail the block"


@pytest.mark.parametrize(
    "script",
    ["false\necho reached", "ls /no/such/file\necho reached", "false | cat\necho reached", "x=$(false)\necho reached"],
    ids=["command", "missing-file", "pipeline", "command-substitution"],
)
def test_a_failing_command_fails_the_block(docs_vm: VM, script: str) -> None:
    result = run_block(docs_vm, script)
    assert result.exit_code != 0
    assert b"reached" not in result.stdout


@pytest.mark.parametrize(("block_id", "script"), SCRIPTS, ids=[b for b, _ in SCRIPTS])
def test_runnable_block_exits_zero(docs_vm: VM, block_id: str, script: str) -> None:
    result = run_block(docs_vm, script)
    out, err = (s.decode(errors="replace")[-3000:] for s in (result.stdout, result.stderr))
    assert result.exit_code == 0, f"{block_id} exited {result.exit_code}\n{script}\n--- out\n{out}\n--- err\n{err}"
