"""Attention over a variable-length batch (kernels/attention_varlen.py): the compiled twin
(csrc/attention.pyx, forward_varlen / backward_varlen) against its NumPy twin, the attention kernel
on each sequence in turn, and both against torch's scaled_dot_product_attention on each sequence.

Odd cases drawn by hypothesis: empty sequences and batches, sequences of one row, rows that are
queries but not keys, every key of a sequence masked, dropout (p = 0 to 1, a seed per sequence),
the query block forced down to 1-3 rows."""
import unittest.mock

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from minillm import kernels
from minillm.kernels import attention_varlen as varlen
from minillm.kernels.attention_varlen import (attention_varlen_backward, attention_varlen_backward_numpy,
                                              attention_varlen_forward, attention_varlen_forward_numpy)

TOL = {np.float32: dict(rtol=1e-4, atol=1e-5), np.float64: dict(rtol=1e-10, atol=1e-11)}


pytestmark = pytest.mark.usefixtures("compiled_kernels")  # conftest.py: the compiled twins, whatever MINILLM_KERNELS says


@st.composite
def batches(draw):
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    lengths = draw(st.lists(st.integers(0, 9), min_size=0, max_size=5))
    heads, d = draw(st.integers(1, 3)), draw(st.integers(1, 4))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n = sum(lengths)
    q, k, v, g = (rng.normal(size=(n, heads * d)).astype(dtype) for _ in range(4))
    key_mask = rng.random(n) > 0.25 if draw(st.booleans()) else None
    p = draw(st.sampled_from([0.0, 0.3, 1.0]))
    seeds = rng.integers(0, 2**63, len(lengths)) if p else None
    cu_seqlens = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return dtype, q, k, v, g, cu_seqlens, heads, key_mask, p, seeds


@settings(max_examples=80, deadline=None)
@given(batches(), st.sampled_from([None, 1, 3]))
def test_varlen_matches_numpy_twin(batch, block):
    dtype, q, k, v, g, cu_seqlens, heads, key_mask, p, seeds = batch
    args = (cu_seqlens, heads, key_mask, None, p, seeds)
    with unittest.mock.patch.object(varlen, "_block", (lambda keys: block) if block else varlen._block):
        out, lse = attention_varlen_forward(q, k, v, *args)
        grads = attention_varlen_backward(q, k, v, out, lse, g, *args)
    with kernels.use("numpy"):  # the twin's per-sequence attention is the NumPy one too
        out_twin, lse_twin = attention_varlen_forward_numpy(q, k, v, *args)
        grads_twin = attention_varlen_backward_numpy(q, k, v, out_twin, lse_twin, g, *args)
    assert out.shape == q.shape and lse.shape == (heads, len(q)) and out.dtype == lse.dtype == dtype
    ours, twins = (out, lse) + tuple(grads), (out_twin, lse_twin) + tuple(grads_twin)
    for name, a, b in zip(("out", "lse", "dq", "dk", "dv"), ours, twins):
        np.testing.assert_allclose(a, b, err_msg=name, **TOL[dtype])


def test_varlen_matches_torch_on_each_sequence(torch):
    """Outputs and gradients against torch's attention of each sequence alone, its masked rows
    (queries that are not keys) excluded from the keys, float64; a sequence of one row and one whose
    first row is such a query."""
    import torch.nn.functional as TF

    lengths, heads, d = [5, 1, 7, 3], 2, 4
    rng = np.random.default_rng(0)
    n = sum(lengths)
    q, k, v, g = (rng.normal(size=(n, heads * d)) for _ in range(4))
    key_mask = np.ones(n, bool)
    key_mask[[6, 9]] = False  # the third sequence's first row and another: queries only
    cu_seqlens = np.concatenate([[0], np.cumsum(lengths)])
    out, lse = attention_varlen_forward(q, k, v, cu_seqlens, heads, key_mask)
    dq, dk, dv = attention_varlen_backward(q, k, v, out, lse, g, cu_seqlens, heads, key_mask)
    for lo, hi in zip(cu_seqlens[:-1], cu_seqlens[1:]):
        def heads_of(a):
            return torch.tensor(a[lo:hi].reshape(1, hi - lo, heads, d).transpose(0, 2, 1, 3), requires_grad=True)
        tq, tk, tv = heads_of(q), heads_of(k), heads_of(v)
        mask = torch.tensor(key_mask[lo:hi])[None, None, None, :]
        expected = TF.scaled_dot_product_attention(tq, tk, tv, attn_mask=mask)
        expected.backward(heads_of(g).detach())
        rows = lambda t: t.detach().numpy()[0].transpose(1, 0, 2).reshape(hi - lo, -1)  # noqa: E731
        np.testing.assert_allclose(out[lo:hi], rows(expected), rtol=1e-10, atol=1e-12)
        for ours, theirs in ((dq, tq), (dk, tk), (dv, tv)):
            np.testing.assert_allclose(ours[lo:hi], rows(theirs.grad), rtol=1e-10, atol=1e-12)


def test_varlen_drops_with_each_sequences_seed():
    """Sequence b's probabilities are dropped under seeds[b]: changing one sequence's seed changes
    that sequence's rows only."""
    rng = np.random.default_rng(1)
    q, k, v = (rng.normal(size=(12, 8)).astype(np.float32) for _ in range(3))
    cu_seqlens, seeds = np.array([0, 4, 12]), np.array([11, 22])
    out, _ = attention_varlen_forward(q, k, v, cu_seqlens, 2, None, None, 0.5, seeds)
    other, _ = attention_varlen_forward(q, k, v, cu_seqlens, 2, None, None, 0.5, np.array([11, 23]))
    assert np.array_equal(out[:4], other[:4]) and not np.allclose(out[4:], other[4:])


def test_varlen_bad_inputs_name_the_argument():
    q = np.ones((6, 4), np.float32)
    cases = [((q, q, q, [0, 6], 3), ValueError, "heads=3 must be positive and divide E = 4"),
             ((q, q, q, [0, 6], 2.0), TypeError, "heads must be an int"),
             ((q[:, :0], q[:, :0], q[:, :0], [0, 6], 1), ValueError, "heads of D >= 1"),
             ((q, q, q, [1, 6], 2), ValueError, r"cu_seqlens must run from 0 up to N = 6"),
             ((q, q, q, [0, 4, 2, 6], 2), ValueError, "nondecreasing"),
             ((q, q, q, np.array([0.0, 6.0]), 2), TypeError, "cu_seqlens must be a host array of integers"),
             ((q, q, q[:5], [0, 6], 2), ValueError, r"q, k, v must be \(N, H \* D\) arrays of one shape"),
             ((q, q, q.astype(np.float64), [0, 6], 2), TypeError, "v dtype float64 differs from q dtype float32"),
             ((q, q, q, [0, 6], 2, np.ones(5, bool)), ValueError, r"key_mask must have shape \(N,\) = \(6,\)"),
             ((q, q, q, [0, 6], 2, np.ones(6)), TypeError, "key_mask must be bool"),
             ((q, q, q, [0, 2, 6], 2, None, None, 0.1), ValueError, "seeds must be a host array of 2 ints"),
             ((q, q, q, [0, 2, 6], 2, None, None, 0.1, [1]), ValueError, "seeds must be a host array of 2 ints")]
    for args, error, match in cases:
        with pytest.raises(error, match=match):
            attention_varlen_forward(*args)
    out, lse = attention_varlen_forward(q, q, q, [0, 6], 2)
    with pytest.raises(ValueError, match=r"lse must be float32 of shape \(2, 6\)"):
        attention_varlen_backward(q, q, q, out, lse.T, q, [0, 6], 2)
