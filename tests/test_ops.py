"""Every op in the table of op_cases.py: a hypothesis gradient check in float64, and (with the
`parity` extra) forward and backward against torch on the same inputs. Both run on the `device`
fixture's device (MINILLM_DEVICE=cuda: on the GPU, against torch on the host)."""
import numpy as np
import pytest
from hypothesis import given, settings

import minillm as mm
from minillm.testing import gradcheck
from op_cases import CASES


def flatten(inputs):
    """Float arrays of ``inputs`` (nested tuples allowed) and a function rebuilding the arguments
    with those arrays replaced by the given values."""
    arrays = []

    def walk(x):
        if isinstance(x, np.ndarray) and x.dtype.kind == "f":
            arrays.append(x)
            return ("array", len(arrays) - 1)
        if isinstance(x, tuple) and any(isinstance(e, np.ndarray) for e in x):
            return ("tuple", [walk(e) for e in x])
        return ("const", x)

    plan = [walk(x) for x in inputs]

    def rebuild(values, node=None):
        if node is None:
            return [rebuild(values, n) for n in plan]
        kind, payload = node
        if kind == "array":
            return values[payload]
        if kind == "tuple":
            return tuple(rebuild(values, n) for n in payload)
        return payload

    return arrays, rebuild


@pytest.mark.parametrize("name", sorted(CASES))
def test_gradcheck(name, device):
    strategy, fn, _ = CASES[name]

    @settings(max_examples=20)
    @given(strategy)
    def check(inputs):
        arrays, rebuild = flatten(inputs)
        gradcheck(lambda *ts: fn(*rebuild(ts)), arrays, device=device)

    check()


@pytest.mark.parametrize("name", sorted(n for n, c in CASES.items() if c[2] is not None))
def test_matches_torch(name, torch, device):
    strategy, fn, torch_fn = CASES[name]

    @settings(max_examples=15)
    @given(strategy)
    def check(inputs):
        arrays, rebuild = flatten(inputs)
        ours = [mm.tensor(a.astype(np.float32), device=device, requires_grad=True) for a in arrays]
        # torch computes in float64 on the same (float32) values: the oracle is the exact answer, not
        # torch's own float32 rounding (a 2-wide layer norm's input gradient cancels to a term in eps,
        # where torch's float32 is 0.6% off and ours is within 1e-7 of the float64 value)
        theirs = [torch.tensor(a.astype(np.float32).astype(np.float64), requires_grad=True) for a in arrays]
        out, expected = fn(*rebuild(ours)), torch_fn(torch, *rebuild(theirs))
        assert out.shape == tuple(expected.shape), f"{name}: shape {out.shape} vs torch {tuple(expected.shape)}"
        np.testing.assert_allclose(out.numpy(), expected.detach().numpy(), rtol=1e-5, atol=1e-5)
        upstream = np.random.default_rng(0).standard_normal(out.shape).astype(np.float32)
        if not arrays or out.numel() == 0:
            return
        out.backward(upstream)
        expected.backward(torch.tensor(upstream, dtype=expected.dtype))
        for i, (a, b) in enumerate(zip(ours, theirs)):
            want = b.grad.numpy() if b.grad is not None else np.zeros(a.shape)
            got = a.grad.numpy() if a.grad is not None else np.zeros(a.shape, np.float32)
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4, err_msg=f"{name}: gradient of input {i}")

    check()


def test_embedding_padding_row_gets_no_gradient_as_in_torch(torch):
    ids = np.array([[0, 2, 0], [1, 0, 3]])
    weight = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    ours = mm.tensor(weight, requires_grad=True)
    theirs = torch.tensor(weight, requires_grad=True)
    (mm.nn.functional.embedding(ids, ours, padding_idx=0) ** 2).sum().backward()
    (torch.nn.functional.embedding(torch.as_tensor(ids), theirs, padding_idx=0) ** 2).sum().backward()
    assert (ours.grad.numpy()[0] == 0).all()
    np.testing.assert_allclose(ours.grad.numpy(), theirs.grad.numpy(), rtol=1e-6)
