"""Every ```python block in docs/ and in the README runs, in order, one namespace per page, and every
file and name the pages place in minillm/ is there: the docs cannot rot."""
import ast
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


NAME = r"`([A-Za-z_][\w.]*)`"
PATH = r"`(minillm/[\w/]+\.py)`"
# "`A` in `minillm/x.py`", "`A.f` and `B` in `minillm/x.py`", "`A`, `B`, `C` in ...": every name listed
NAMES_IN_PATH = re.compile(NAME + r"((?:(?:,\s+and|,|\s+and)\s+" + NAME + r")*)\s+in\s+" + PATH)
# "`A` (`minillm/x.py`" and "`A` op (`minillm/x.py`": the name, at most one word, the path in parentheses
NAME_THEN_PATH = re.compile(NAME + r"(?:\s+\w+)?\s+\(" + PATH)
# "`minillm/x.py` (`A`": the path, then the name in parentheses
PATH_THEN_NAME = re.compile(PATH + r"\s+\(" + NAME)
ALL_PAGES = sorted((REPO / "docs").glob("*.md")) + [REPO / "README.md"]


def _definitions(path):
    """{name: set of its methods} for the classes, functions and assignments at the top of a module."""
    names = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
            names[node.name] = {n.name for n in node.body if isinstance(n, ast.FunctionDef)}
        elif isinstance(node, ast.Assign):
            names.update((t.id, set()) for t in node.targets if isinstance(t, ast.Name))
    return names


def _defined(name, path):
    """Whether ``name`` ("Class", "function", "Class.method" or "minillm.pkg.function") is defined in path."""
    names = _definitions(REPO / path)
    if name.startswith("minillm."):
        return name.rsplit(".", 1)[1] in names
    owner, _, method = name.partition(".")
    return owner in names and (not method or method in names[owner])


@pytest.mark.parametrize("page", ALL_PAGES, ids=[p.name for p in ALL_PAGES])
def test_named_files_exist_and_define_the_names(page):
    """Every `minillm/...py` a page names exists, and every name it places in one (the three forms
    above) is defined there, so a reader who opens the file finds it."""
    text = page.read_text()
    missing = [path for path in re.findall(PATH, text) if not (REPO / path).is_file()]
    assert not missing, f"{page.name} names files that do not exist: {missing}"
    placed = []
    for match in NAMES_IN_PATH.finditer(text):
        placed += [(name, match.group(4)) for name in [match.group(1)] + re.findall(NAME, match.group(2))]
    placed += NAME_THEN_PATH.findall(text) + [(name, path) for path, name in PATH_THEN_NAME.findall(text)]
    undefined = [f"{name} in {path}" for name, path in placed if not _defined(name, path)]
    assert not undefined, f"{page.name} places names where they are not defined: {undefined}"


def test_the_name_checker_reads_the_walkthrough_forms():
    text = ("`BertLayer.forward` in `minillm/models/bert.py`; `MultiHeadAttention.split_heads`\n"
            "and `check_inputs` in `minillm/nn/attention.py`, the `Attention` op (`minillm/ops/nn.py`)\n"
            "runs `minillm/kernels/attention.py` (`attention_forward_numpy` is its twin)")
    found = [(m.group(1), m.group(4), re.findall(NAME, m.group(2))) for m in NAMES_IN_PATH.finditer(text)]
    assert found == [("BertLayer.forward", "minillm/models/bert.py", []),
                     ("MultiHeadAttention.split_heads", "minillm/nn/attention.py", ["check_inputs"])]
    assert NAME_THEN_PATH.findall(text) == [("Attention", "minillm/ops/nn.py")]
    assert PATH_THEN_NAME.findall(text) == [("minillm/kernels/attention.py", "attention_forward_numpy")]
    assert _defined("BertLayer.forward", "minillm/models/bert.py")
    assert not _defined("BertLayer.backward", "minillm/models/bert.py")
    assert not _defined("BertConfig", "minillm/models/bert.py")  # imported there, defined elsewhere
