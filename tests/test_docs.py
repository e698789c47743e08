"""Every ```python block in docs/ and in the README runs, in order, one namespace per page: the docs
cannot rot."""
import os
import re

import pytest

from conftest import REPO

CHAPTERS = sorted(p for p in (REPO / "docs").glob("*.md") if p.name != "README.md")
PAGES = CHAPTERS + [REPO / "README.md"]


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_every_code_block_runs(page, tmp_path, monkeypatch, request):
    blocks = re.findall(r"```python\n(.*?)```", page.read_text(), re.S)
    assert blocks, f"{page.name} has no python block"
    if any('"all-MiniLM-L6-v2"' in block for block in blocks):  # the page loads the pretrained model
        request.getfixturevalue("minilm_dir")  # the pretrained model, or a skip (a failure in CI)
    monkeypatch.chdir(tmp_path)  # files a page writes land in a scratch folder
    namespace = {"__name__": f"docs_{page.stem}"}
    for i, block in enumerate(blocks):
        try:
            exec(compile(block, f"{page.name} block {i + 1}", "exec"), namespace)
        except Exception as err:
            raise AssertionError(f"{page.name}, python block {i + 1} failed: {err!r}") from err


def test_docs_exist_for_each_chapter():
    names = {p.stem for p in CHAPTERS}
    assert {"walkthrough", "autograd", "broadcasting", "custom_ops", "kernels", "optim", "tools"} <= names, names
    assert os.path.isfile(REPO / "docs" / "README.md")
