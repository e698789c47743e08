"""The fused attention kernel (csrc/attention.pyx) against its NumPy twin, against torch's
scaled_dot_product_attention, and under gradcheck; forward (out, lse, probabilities) and backward.

Odd cases drawn by hypothesis: B = 0, L or S = 1, D = 1, L not a multiple of the query block
(the block is also forced down to 1-5 rows), transposed-heads and strided inputs, key masks with
all-masked rows, -inf in the additive bias, dropout on the probabilities (p = 0 to 1; the twins
must drop the same elements: tests/test_attention_dropout.py tests the mask itself)."""
import unittest.mock

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import minillm.nn.functional as F
from minillm import kernels
from minillm.kernels import attention as attention_module
from minillm.kernels.attention import (attention_backward, attention_backward_numpy, attention_forward,
                                       attention_forward_numpy)
from minillm.testing import gradcheck

many_examples = settings(max_examples=60)  # an example takes milliseconds: explore more odd shapes
TOL = {np.float32: dict(rtol=1e-4, atol=1e-5), np.float64: dict(rtol=1e-10, atol=1e-11)}


pytestmark = pytest.mark.usefixtures("compiled_kernels")  # conftest.py: the compiled twins, whatever MINILLM_KERNELS says


def close(actual, expected, dtype):
    np.testing.assert_allclose(actual, expected, **TOL[np.dtype(dtype).type])


def heads(rng, shape, dtype, layout):
    """A (B, H, L, D) array: contiguous, BERT's transposed heads, strided or reversed rows."""
    b, h, n, d = shape
    if layout == "transposed":
        return rng.normal(size=(b, n, h, d)).astype(dtype).transpose(0, 2, 1, 3)
    if layout == "strided":
        return rng.normal(size=(b, h, 2 * n, d)).astype(dtype)[:, :, ::2]
    if layout == "reversed":
        return rng.normal(size=shape).astype(dtype)[:, ::-1, ::-1]
    return rng.normal(size=shape).astype(dtype)


@st.composite
def attention_inputs(draw):
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    b, h = draw(st.integers(0, 2)), draw(st.integers(1, 3))
    length, keys = draw(st.sampled_from([1, 2, 5, 9, 130])), draw(st.sampled_from([1, 3, 8, 17]))
    d = draw(st.sampled_from([1, 2, 5, 8]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    q, k, v, g = (heads(rng, (b, h, n, d), dtype, draw(st.sampled_from(["c", "transposed", "strided", "reversed"])))
                  for n in (length, keys, keys, length))
    key_mask = rng.random((b, keys)) < 0.7 if draw(st.booleans()) else None
    if key_mask is not None and b:
        key_mask[0] = False  # a sequence with every key masked
    bias = None
    if draw(st.booleans()):
        bias = rng.normal(size=(length, keys)).astype(dtype)
        bias[rng.random(bias.shape) < 0.2] = -np.inf
    scale = draw(st.sampled_from([None, 0.3]))
    block = draw(st.sampled_from([None, 1, 2, 5]))  # None: the kernel's own choice
    dropout = (draw(st.sampled_from([0.0, 0.1, 0.5, 1.0])), draw(st.integers(0, 2**63 - 1)))
    return q, k, v, g, key_mask, bias, scale, block, dropout


def query_block(block):
    """Force the kernel's query block size (None keeps its own)."""
    if block is None:
        return unittest.mock.patch.object(attention_module, "_block", attention_module._block)
    return unittest.mock.patch.object(attention_module, "_block", lambda keys: block)


@many_examples
@given(attention_inputs())
def test_attention_matches_numpy_twin(inputs):
    q, k, v, g, key_mask, bias, scale, block, dropout = inputs
    with query_block(block):
        out, lse, p = attention_forward(q, k, v, key_mask, bias, scale, *dropout, return_probs=True)
        grads = attention_backward(q, k, v, out, lse, g, key_mask, bias, scale, *dropout)
    eout, e_lse, ep = attention_forward_numpy(q, k, v, key_mask, bias, scale, *dropout, return_probs=True)
    egrads = attention_backward_numpy(q, k, v, eout, e_lse, g, key_mask, bias, scale, *dropout)
    assert out.shape == q.shape and lse.shape == q.shape[:3] and out.dtype == q.dtype
    np.testing.assert_array_equal(np.isneginf(lse), np.isneginf(e_lse))  # the fully masked rows
    close(np.where(np.isneginf(lse), 0, lse), np.where(np.isneginf(e_lse), 0, e_lse), q.dtype)
    close(out, eout, q.dtype)
    close(p, ep, q.dtype)
    for ours, expected, name in zip(grads, egrads, ("dq", "dk", "dv")):
        assert ours.shape == expected.shape, name
        close(ours, expected, q.dtype)
    dead = np.isneginf(lse)
    assert (out[dead] == 0).all() and (grads[0][dead] == 0).all()
    if dropout[0] == 1:  # everything dropped: zeros, not NaN
        assert (out == 0).all() and all((grad == 0).all() for grad in grads)


def test_padded_keys_skipped_by_the_compiled_twin_give_what_computing_them_gives():
    """The compiled kernel computes each (batch, head) pair over its keys up to the last unmasked
    one: a padded batch's masked keys at the end have p = 0 exactly. Against the NumPy twin, which
    computes every key, on a padded batch (one sequence unpadded, one of a single key, one with a
    masked key inside too), blocks of 2 query rows, strided heads, a bias, dropout and the
    probabilities: the same out, lse, probabilities (0 at the padded keys) and gradients, and the
    padded keys' rows of dk and dv 0 exactly though the outputs start as NaN (the kernel writes
    them itself). computed_keys() says the kernel did skip them; the padded odd cases (infinities,
    NaN, overflows) are computed in full, with the twin's probabilities."""
    rng = np.random.default_rng(9)
    q, k, v, g = (heads(rng, (3, 2, 5, 4), np.float32, "transposed") for _ in range(4))
    key_mask = np.ones((3, 5), bool)
    key_mask[0, 3:] = key_mask[2, 1:] = key_mask[0, 1] = False
    bias = rng.normal(size=(5, 5)).astype(np.float32)
    compiled = kernels.load("attention")
    key_bias = attention_module._key_bias(key_mask, q)
    assert compiled.computed_keys(q, k, v, key_bias, bias, 0.5) == [[3, 3], [5, 5], [1, 1]]
    with pytest.raises(ValueError, match=r"key_bias has shape \(2, 5\) where q and k give \(3, 5\)"):
        compiled.computed_keys(q, k, v, key_bias[:2], bias, 0.5)  # read unchecked, it would overrun
    nan_outputs = unittest.mock.patch.object(attention_module, "_empty_like", lambda x: np.full_like(x, np.nan))
    for dropout in ((0.0, 0), (0.3, 11)):
        with query_block(2), nan_outputs:
            out, lse, p = attention_forward(q, k, v, key_mask, bias, None, *dropout, return_probs=True)
            grads = attention_backward(q, k, v, out, lse, g, key_mask, bias, None, *dropout)
        eout, e_lse, ep = attention_forward_numpy(q, k, v, key_mask, bias, None, *dropout, return_probs=True)
        egrads = attention_backward_numpy(q, k, v, eout, e_lse, g, key_mask, bias, None, *dropout)
        for ours, expected in zip((out, lse, p) + tuple(grads), (eout, e_lse, ep) + tuple(egrads)):
            close(ours, expected, np.float32)
        assert (p[0, :, :, 3:] == 0).all() and (p[2, :, :, 1:] == 0).all()
        for grad in grads[1:]:  # dk, dv
            assert (grad[0, :, 3:] == 0).all() and (grad[2, :, 1:] == 0).all() and (grad[1] != 0).all()
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        for what, q, k, v, g, key_mask, bias, scale in _odd_attention_cases():
            if key_mask is None or key_mask[:, -1].any():  # the padded cases: each sequence's last key masked
                continue
            keys = compiled.computed_keys(q, k, v, attention_module._key_bias(key_mask, q), bias,
                                          q.shape[-1] ** -0.5 if scale is None else scale)
            # [[3], [1]]: both sequences skip their padded keys; 4 where an inf or NaN reaches the output
            # through them, so that sequence's keys are all computed
            full = {"NaN in a padded key": [[3], [4]], "+inf in a padded key's v": [[4], [1]],
                    "+inf bias on a padded key": [[4], [4]], "+inf in q": [[3], [4]],
                    "an infinite scale": [[4], [4]], "finite q and a padded k": [[4], [1]]}
            assert keys == next((n for start, n in full.items() if what.startswith(start)), [[3], [1]]), what
            _, _, p = attention_forward(q, k, v, key_mask, bias, scale, return_probs=True)
            np.testing.assert_allclose(p, attention_forward_numpy(q, k, v, key_mask, bias, scale, return_probs=True)[2],
                                       rtol=1e-5, atol=1e-6, err_msg=what)


@pytest.mark.parametrize("mode", kernels.MODES)
def test_attention_without_keys_or_queries(mode):
    with kernels.use(mode):
        _attention_without_keys_or_queries()


def _attention_without_keys_or_queries():
    rng = np.random.default_rng(0)
    q, k = rng.normal(size=(2, 3, 4, 5)), rng.normal(size=(2, 3, 0, 5))
    out, lse = attention_forward(q, k, k)
    assert (out == 0).all() and np.isneginf(lse).all()
    dq, dk, dv = attention_backward(q, k, k, out, lse, np.ones_like(q))
    assert (dq == 0).all() and dk.shape == dv.shape == k.shape
    q0, k1 = q[:, :, :0], rng.normal(size=(2, 3, 6, 5))
    out, lse = attention_forward(q0, k1, k1)
    dq, dk, dv = attention_backward(q0, k1, k1, out, lse, out)
    assert out.shape == q0.shape and (dk == 0).all() and (dv == 0).all()


def test_attention_output_and_gradients_keep_the_heads_layout():
    """q as (B, L, H, D) transposed to (B, H, L, D): out and dq come back in that layout, so the
    model's transpose back to (B, L, H*D) is free."""
    rng = np.random.default_rng(1)
    q, k, v = (rng.normal(size=(2, 7, 3, 4)).astype(np.float32).transpose(0, 2, 1, 3) for _ in range(3))
    out, lse = attention_forward(q, k, v)
    dq, _, _ = attention_backward(q, k, v, out, lse, out)
    assert out.transpose(0, 2, 1, 3).flags.c_contiguous and dq.transpose(0, 2, 1, 3).flags.c_contiguous


def test_attention_matches_torch(torch):
    import torch.nn.functional as TF
    rng = np.random.default_rng(2)
    for dtype in (np.float32, np.float64):
        b, h, length, keys, d = 2, 3, 131, 67, 8
        q, k, v, g = (heads(rng, (b, h, n, d), dtype, "transposed") for n in (length, keys, keys, length))
        key_mask = rng.random((b, keys)) < 0.8
        key_mask[:, 0] = True  # torch gives NaN for fully masked rows; compare the rest
        bias = np.triu(np.full((length, keys), -np.inf, dtype), 1)  # causal
        tq, tk, tv = (torch.tensor(np.ascontiguousarray(a), requires_grad=True) for a in (q, k, v))
        mask = torch.tensor(bias + np.where(key_mask, 0, -np.inf)[:, None, None, :].astype(dtype))
        expected = TF.scaled_dot_product_attention(tq, tk, tv, attn_mask=mask)
        expected.backward(torch.tensor(np.ascontiguousarray(g)))
        out, lse = attention_forward(q, k, v, key_mask, bias)
        close(out, expected.detach().numpy(), dtype)
        for ours, theirs in zip(attention_backward(q, k, v, out, lse, g, key_mask, bias), (tq, tk, tv)):
            close(ours, theirs.grad.numpy(), dtype)


def test_attention_probabilities_match_torch(torch):
    rng = np.random.default_rng(3)
    q, k = rng.normal(size=(1, 2, 5, 4)), rng.normal(size=(1, 2, 6, 4))
    _, lse, p = attention_forward(q, k, k, scale=0.7, return_probs=True)
    expected = torch.softmax(torch.tensor(q) @ torch.tensor(k).transpose(-1, -2) * 0.7, -1)
    close(p, expected.numpy(), np.float64)
    close(lse, torch.logsumexp(torch.tensor(q) @ torch.tensor(k).transpose(-1, -2) * 0.7, -1).numpy(), np.float64)


def test_attention_gradcheck_on_compiled_kernel():
    rng = np.random.default_rng(4)
    q, k, v = rng.normal(size=(2, 2, 3, 2)), rng.normal(size=(2, 2, 4, 2)), rng.normal(size=(2, 2, 4, 2))
    padding = np.array([[True, True, False, True], [False, False, False, False]])[:, None, None, :]
    gradcheck(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=padding), [q, k, v])
    causal = np.triu(np.full((3, 4), -np.inf), 1) + rng.normal(size=(3, 4))
    with unittest.mock.patch.object(attention_module, "_block", lambda keys: 2):  # two query blocks
        gradcheck(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=causal), [q, k, v])


def test_attention_bad_inputs_name_the_argument():
    q = np.ones((2, 3, 4, 5), np.float32)
    k = np.ones((2, 3, 6, 5), np.float32)
    cases = [
        (TypeError, "k dtype", (q, k.astype(np.float64), k)),
        (TypeError, "q must be float32 or float64", (q.astype(np.int32), k, k)),
        (ValueError, "q must be", (q[0], k, k)),
        (ValueError, "do not fit", (q, k[:, :, :, :4], k[:, :, :, :4])),
        (ValueError, "do not fit", (q, k, k[:, :, :5])),
        (ValueError, r"key_mask must have shape \(B, S\) = \(2, 6\)", (q, k, k, np.ones((2, 4), bool))),
        (TypeError, "key_mask must be bool", (q, k, k, np.ones((2, 6), np.float32))),
        (ValueError, r"bias must have shape \(L, S\) = \(4, 6\)", (q, k, k, None, np.zeros((6, 4), np.float32))),
        (TypeError, "bias dtype", (q, k, k, None, np.zeros((4, 6)))),
        (ValueError, "head dimension D", (q[..., :0], k[..., :0], k[..., :0])),
        (ValueError, r"dropout probability must be in \[0, 1\], got 1.5", (q, k, k, None, None, None, 1.5)),
        (ValueError, "dropout probability", (q, k, k, None, None, None, float("nan"))),
        (TypeError, "dropout probability must be a real number", (q, k, k, None, None, None, "0.1")),
        (ValueError, r"dropout seed must be in \[0, 2\^63\), got -1", (q, k, k, None, None, None, 0.1, -1)),
        (ValueError, "dropout seed", (q, k, k, None, None, None, 0.1, 2**63)),
        (TypeError, "dropout seed must be an int", (q, k, k, None, None, None, 0.1, 1.0)),
    ]
    for error, match, args in cases:
        with pytest.raises(error, match=match):
            attention_forward(*args)
    out, lse = attention_forward(q, k, k)
    with pytest.raises(ValueError, match="lse must be"):
        attention_backward(q, k, k, out, lse[..., :2], out)
    with pytest.raises(ValueError, match="grad must be"):
        attention_backward(q, k, k, out, lse, out.astype(np.float64))


def test_attention_copies_what_blas_cannot_read():
    """Reversed rows, strided D, zero-stride (broadcast) rows: copied, never misread; a broadcast
    head axis is read in place."""
    rng = np.random.default_rng(5)
    q = rng.normal(size=(1, 2, 6, 4))
    k = np.broadcast_to(rng.normal(size=(1, 1, 5, 4)), (1, 2, 5, 4))
    repeated = np.broadcast_to(q[:, :, :1], q.shape)
    for name, qq, kk in (("reversed", q[:, :, ::-1], k), ("strided D", q[..., ::2], k[..., ::2]),
                         ("zero row stride", repeated, k), ("reversed keys", q, k[:, :, ::-1])):
        out, lse = attention_forward(qq, kk, kk)
        eout, e_lse = attention_forward_numpy(qq, kk, kk)
        close(out, eout, np.float64)
        grads = attention_backward(qq, kk, kk, out, lse, eout)
        for ours, expected in zip(grads, attention_backward_numpy(qq, kk, kk, eout, e_lse, eout)):
            close(ours, expected, np.float64)


def _odd_attention_cases():
    """(what, q, k, v, g, key_mask, bias, scale): float32 inputs with one odd thing each."""
    rng = np.random.default_rng(6)
    q, k, v, g = (rng.normal(size=(2, 1, 4, 3)).astype(np.float32) for _ in range(4))
    bias = np.zeros((4, 4), np.float32)
    cases = []

    def case(what, q=q, k=k, v=v, g=g, key_mask=None, bias=None, scale=None):
        cases.append((what, q, k, v, g, key_mask, bias, scale))

    def put(array, index, value):
        array = array.copy()
        array[index] = value
        return array

    case("+inf in q (its row's scores are +-inf: a NaN row)", q=put(q, (0, 0, 1, 0), np.inf))
    case("-inf in k", k=put(k, (1, 0, 2, 1), -np.inf))
    case("NaN in k", k=put(k, (0, 0, 3, 2), np.nan))
    case("+inf in v", v=put(v, (0, 0, 1, 0), np.inf))
    case("-inf in the gradient", g=put(g, (1, 0, 2, 1), -np.inf))
    case("a bias row of -inf (fully masked), -inf and +inf in others",
         bias=put(put(put(bias, 1, -np.inf), (2, 0), -np.inf), (3, 3), np.inf))
    case("NaN in the bias", bias=put(bias, (0, 1), np.nan))
    case("a fully masked sequence, and a key masked in the other",
         key_mask=np.array([[False] * 4, [True, False, True, True]]))
    case("NaN in a masked key (the mask is added: NaN - inf is NaN)", k=put(k, (1, 0, 1, 0), np.nan),
         key_mask=np.array([[True] * 4, [True, False, True, True]]))
    padded = np.array([[True, True, True, False], [True, False, False, False]])  # masked keys at the end
    case("padded sequences (the compiled twin skips the keys at the end)", key_mask=padded, bias=bias - 1)
    case("NaN in a padded key at the end", k=put(k, (1, 0, 3, 2), np.nan), key_mask=padded)
    case("+inf in a padded key's v (p = 0 times inf is NaN)", v=put(v, (0, 0, 3, 1), np.inf), key_mask=padded)
    case("+inf bias on a padded key", bias=put(bias, (2, 3), np.inf), key_mask=padded)
    case("-inf in the gradient, with padded keys", g=put(g, (1, 0, 2, 1), -np.inf), key_mask=padded)
    case("+inf in an unmasked key's v, with padded keys (out is inf or NaN)", v=put(v, (0, 0, 0, 1), np.inf),
         key_mask=padded)
    case("NaN in the bias on an unmasked key, with padded keys", bias=put(bias, (1, 0), np.nan), key_mask=padded)
    case("+inf in q, with padded keys", q=put(q, (1, 0, 2, 0), np.inf), key_mask=padded)
    case("an infinite scale, with padded keys", scale=np.inf, key_mask=padded)
    case("finite q and a padded k whose product overflows to +inf", q=put(q, (0, 0, 1, 0), 1e20),
         k=put(k, (0, 0, 3, 0), 1e20), key_mask=padded)
    case("finite g and a padded v whose product overflows in the backward", g=put(g, (1, 0, 2, 0), 1e20),
         v=put(v, (1, 0, 3, 0), 1e20), key_mask=padded)
    case("scale 0 with an inf in k: q k^T * 0 is NaN", k=put(k, (0, 0, 0, 0), np.inf), scale=0.0)
    case("an infinite scale", scale=np.inf)
    # p = exp(-95) = 5.5e-42, a subnormal float32, times an inf in g: inf in dv, not 0 * inf = NaN
    case("subnormal probabilities meeting an inf", bias=put(bias, (1, slice(1, None)), -95), g=put(g, (0, 0, 1, 0), np.inf))
    return cases


def _torch_attention(torch, q, k, v, g, key_mask, bias, scale):
    """torch's (out, lse, dq, dk, dv): scaled_dot_product_attention (its flash kernel on the CPU, which
    gives a fully masked row 0, as minillm) with autograd, and that kernel's lse (0 for a fully masked
    row, where minillm's is -inf = log 0; torch.logsumexp's is -inf too, but +inf for a row with +inf)."""
    import torch.nn.functional as TF
    mask = np.zeros((q.shape[0], 1, q.shape[2], k.shape[2]), np.float32)
    if bias is not None:
        mask = mask + bias
    if key_mask is not None:
        mask = mask + np.where(key_mask, 0, -np.inf).astype(np.float32)[:, None, None, :]
    tq, tk, tv, tmask = (torch.tensor(a, requires_grad=a is not mask) for a in (q, k, v, mask))
    out = TF.scaled_dot_product_attention(tq, tk, tv, attn_mask=tmask, scale=scale)
    out.backward(torch.tensor(g))
    _, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(tq.detach(), tk.detach(), tv.detach(),
                                                                       attn_mask=tmask, scale=scale)
    scores = tq.detach() @ tk.detach().transpose(-1, -2) * (q.shape[-1] ** -0.5 if scale is None else scale) + tmask
    lse = torch.where((scores == -torch.inf).all(-1), -torch.inf, lse)  # fully masked rows
    return [t.numpy() for t in (out.detach(), lse, tq.grad, tk.grad, tv.grad)]


@pytest.mark.parametrize("mode", ["compiled", "numpy"])
def test_attention_of_inf_and_nan_and_masked_rows_is_torchs(torch, mode):
    """NaN where torch's attention has NaN, the same infinities, the same values elsewhere, in both
    twins. The kernel fuzz target found the twins apart here: the NumPy twin replaced masked scores
    by -inf (torch adds the mask: a NaN score stays NaN), took every non-finite lse for a fully
    masked row (a NaN row's gradients are NaN), and made dq, dk NaN at scale 0 (torch's BLAS gives 0);
    the compiled twin's BLAS skipped q k^T at scale 0, and its exp flushed subnormal probabilities to 0."""
    with kernels.use(mode), np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        for what, q, k, v, g, key_mask, bias, scale in _odd_attention_cases():
            expected = _torch_attention(torch, q, k, v, g, key_mask, bias, scale)
            out, lse = attention_forward(q, k, v, key_mask, bias, scale)
            ours = [out, lse, *attention_backward(q, k, v, out, lse, g, key_mask, bias, scale)]
            for name, a, b in zip(("out", "lse", "dq", "dk", "dv"), ours, expected):
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=f"{what}: {name}")
