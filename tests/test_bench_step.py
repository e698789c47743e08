"""bench/bert_step.py's arithmetic: the matrix products it counts in a BERT encoder step are the
ones torch's FlopCounterMode counts in transformers' BertModel, and its GEMM worker runs them."""
import importlib.machinery
import importlib.util
import sys

import numpy as np
import pytest

from conftest import REPO


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_no_bench_script_stands_in_for_an_installed_module():
    """A bench script runs with bench/ first on sys.path (tests put it there too), so a script named
    as a module that torch or transformers imports would replace that module in the process: a
    bench/kernels.py broke every transformers import once transformers 5.25 began importing its
    dependency `kernels`."""
    bench = (REPO / "bench").resolve()
    elsewhere = [p for p in sys.path if p and (REPO / p).resolve() != bench]
    scripts = sorted(path.stem for path in bench.glob("*.py"))
    assert scripts and [name for name in scripts if importlib.machinery.PathFinder.find_spec(name, elsewhere)] == []


sys.path.insert(0, str(REPO / "bench"))  # bert_step imports bench/machine.py by its bare name
bert_step = _load("bench_bert_step", REPO / "bench" / "bert_step.py")


@pytest.mark.parametrize("kind, batch, length", [("minilm", 2, 16), ("base", 1, 8)])
def test_the_counted_flops_are_torchs_flop_counter_on_transformers_bert(torch, transformers, kind, batch, length):
    sizes = bert_step.BASE_CONFIG if kind == "base" else dict(
        hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536)
    config = transformers.BertConfig(**{**sizes, "vocab_size": 100}, attn_implementation="eager")
    model = transformers.BertModel(config, add_pooling_layer=False).eval()  # the pooler is not the encoder
    ids = torch.zeros((batch, length), dtype=torch.long)
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(input_ids=ids)
    assert bert_step.flops(bert_step.encoder_products(kind, batch, length)) == counter.get_total_flops()


def test_the_gemm_worker_runs_the_dense_products_forward_and_backward(monkeypatch):
    calls = []
    monkeypatch.setattr("minillm.kernels.matmul", lambda a, b, ta=False, tb=False: calls.append(
        (a.shape, b.shape, ta, tb)) or np.zeros(1))
    bert_step.gemm_step("minilm", "train", 2, 4, threads=1)()
    t, e, i = 8, 384, 1536
    forward = [((t, e), (e, e), False, True)] * 24 + [((t, e), (i, e), False, True)] * 6 + \
        [((t, i), (e, i), False, True)] * 6
    assert sorted(c for c in calls if c[3]) == sorted(forward)
    assert len(calls) == 3 * len(forward)
    assert ((t, i), (i, e), False, False) in calls and ((t, i), (t, e), True, False) in calls  # dA, dW of E -> I
