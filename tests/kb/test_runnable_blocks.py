"""Every `sh runnable` block of every page (EN and ZH) runs in ONE real guest and exits 0."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from labs.hypervisor import VM
from portal.kb.content import page_files, parse_page
from portal.kb.markdown import render_markdown
from tests.hypervisor.conftest import boot_vm, guest_image, hv, libvirt_ready  # noqa: F401  (shared fixtures)

from .conftest import CONTENT

pytestmark = [pytest.mark.vm, pytest.mark.slow]
BLOCK_TIMEOUT_S = 120.0  # TCG on a shared 2-core host; the slowest block (qemu-img work) takes seconds


def runnable_blocks() -> list[tuple[str, str]]:
    """(id, script) for each runnable block, in page order."""
    blocks = []
    for (lang, slug), path in sorted(page_files(CONTENT).items()):
        src = parse_page(path, path.read_text(), lang)
        scripts = [b.code for b in render_markdown(src.body, lang=lang).code_blocks if b.runnable]
        blocks += [(f"{lang}/{slug}#{i}", code) for i, code in enumerate(scripts, 1)]
    return blocks


BLOCKS = runnable_blocks()


@pytest.fixture(scope="module")
def docs_vm(boot_vm: Callable[[str], VM]) -> VM:  # noqa: F811
    """One `vfio` guest for all blocks (boot_vm destroys it at the end of the module)."""
    return boot_vm("vfio")


def test_pages_have_runnable_blocks() -> None:
    assert len(BLOCKS) >= 30
    assert {b.split("/")[0] for b, _ in BLOCKS} == {"en", "zh"}


@pytest.mark.parametrize(("block_id", "script"), BLOCKS, ids=[b for b, _ in BLOCKS])
def test_runnable_block_exits_zero(docs_vm: VM, block_id: str, script: str) -> None:
    result = docs_vm.exec(["/bin/sh", "-c", script], timeout_s=BLOCK_TIMEOUT_S)
    out, err = (s.decode(errors="replace")[-3000:] for s in (result.stdout, result.stderr))
    assert result.exit_code == 0, f"{block_id} exited {result.exit_code}\n{script}\n--- out\n{out}\n--- err\n{err}"
