"""The study tools: anomaly detection, memory report, profile, graph view, and the examples."""
import re
import runpy
import subprocess
import sys

import numpy as np
import pytest

import minillm as mm
import minillm.nn.functional as F
from conftest import REPO
from minillm import debug, nn, profile, viz


def test_detect_anomaly_names_the_op_and_the_users_line():
    x = mm.tensor([1.0, 2.0], requires_grad=True)
    with debug.detect_anomaly(), np.errstate(all="ignore"):
        with pytest.raises(debug.AnomalyError, match=r"log produced NaN.*shapes \(2,\).*test_tools.py, line \d+"):
            (x - 5).log()
        y = (x * 0).sqrt().sum()  # forward is finite (0) ...
        with pytest.raises(debug.AnomalyError, match=r"sqrt backward.*test_tools.py"):
            y.backward()  # ... but d sqrt(u)/du at u = 0 is inf


def test_detect_anomaly_lets_masked_inputs_through():
    x = mm.tensor([[0.0, -np.inf]], requires_grad=True)
    with debug.detect_anomaly():
        F.softmax(x, -1).sum().backward()  # -inf in, finite out: not an anomaly


def test_memory_report_attributes_saved_bytes_to_modules():
    model = nn.Module()
    model.first, model.second = nn.Linear(8, 16), nn.Linear(16, 4)
    x = mm.randn(32, 8)
    with debug.memory_report(model) as report:
        loss = model.second(model.first(x).tanh()).sum()
    # first saves its input rows (32x8), second tanh's output (32x16); their weights, which the model
    # holds anyway, are not counted
    assert report.by_module["first"] == 32 * 8 * 4
    assert report.by_module["second"] == 32 * 16 * 4
    assert report.by_op["tanh"] == 0 or report.by_op["tanh"] == 32 * 16 * 4
    assert report.peak == report.live == report.total
    with debug.memory_report(model) as during_backward:
        loss = model.second(model.first(x).tanh()).sum()
        loss.backward()
    assert during_backward.live == 0 and during_backward.peak > 0
    assert "first" in str(report)


def test_profile_counts_every_op():
    x = mm.randn(4, 4, requires_grad=True)
    with profile.profile() as prof:
        (x @ x).tanh().sum().backward()
    rows = {op: (calls, fwd, bwd) for op, calls, fwd, bwd in prof.table()}
    assert set(rows) == {"matmul", "tanh", "sum"}
    assert all(calls == 1 and bwd > 0 for calls, _, bwd in rows.values())
    assert "matmul" in str(prof)


def test_graph_dot_text_names_ops_shapes_and_parameters():
    layer = nn.Linear(3, 2)
    loss = layer(mm.randn(5, 3)).relu().sum()
    text = viz.graph(loss, dict(layer.named_parameters()))
    assert text.startswith("digraph") and text.rstrip().endswith("}")
    for label in ("linear", "relu", "sum", "weight", "(2, 3) float32", "(5, 2) float32"):
        assert label in text
    # one op -> output edge per op (3), one input -> op edge per input: sum 1, relu 1, linear 3 (x, W, b)
    assert len(re.findall(r"->", text)) == 3 + 5


def test_custom_op_example_passes_and_shows_a_failure():
    out = subprocess.run([sys.executable, str(REPO / "examples" / "custom_op.py")],
                         capture_output=True, text=True, check=True).stdout
    assert "gradcheck passed" in out
    assert re.search(r"BrokenSoftplus: gradcheck: input 0 .* analytic .* vs numeric", out)


def test_autograd_tour_example_runs():
    runpy.run_path(str(REPO / "examples" / "autograd_tour.py"), run_name="__main__")
