"""Compiled kernels (csrc/) against their NumPy twins, against torch, and under gradcheck:
softmax, layer norm, GELU and matmul. Attention is in test_kernels_attention.py.

Hypothesis draws odd shapes: empty and length-1 axes, odd sizes, non-contiguous views, masks that
broadcast, all-masked rows. Every comparison runs in float32 and float64."""
import contextlib

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import minillm as mm
import minillm.nn.functional as F
from minillm import kernels
from minillm.kernels.dropout import apply_dropout, apply_dropout_numpy, keep_mask
from minillm.kernels.gelu import gelu_backward, gelu_backward_numpy, gelu_forward, gelu_forward_numpy
from minillm.kernels.layer_norm import (add_layer_norm_forward, add_layer_norm_forward_numpy, layer_norm_backward,
                                        layer_norm_backward_numpy, layer_norm_forward, layer_norm_forward_numpy)
from minillm.kernels.matmul import matmul, matmul_numpy
from minillm.kernels.softmax import _mask_rows, softmax_backward, softmax_backward_numpy, softmax_forward, \
    softmax_forward_numpy
from minillm.testing import gradcheck

DTYPES = [np.float32, np.float64]
many_examples = settings(max_examples=60)  # an example takes milliseconds: explore more odd shapes
TOL = {np.float32: dict(rtol=2e-5, atol=2e-6), np.float64: dict(rtol=1e-12, atol=1e-13)}


pytestmark = pytest.mark.usefixtures("compiled_kernels")  # conftest.py: the compiled twins, whatever MINILLM_KERNELS says
COMPILED = {"MINILLM_KERNELS": "compiled"}  # and so in the probes' own processes


@contextlib.contextmanager
def openmp_threads(n):
    openmp = kernels.load("threads")
    previous = openmp.max_threads()
    openmp.set_threads(n)
    try:
        yield
    finally:
        openmp.set_threads(previous)


def close(actual, expected, dtype, scale=1.0):
    tol = TOL[np.dtype(dtype).type]
    np.testing.assert_allclose(actual, expected, rtol=tol["rtol"], atol=tol["atol"] * scale)


def layouts(draw, shape, dtype, low=-3.0, high=3.0):
    """An array of ``shape``: C-contiguous, a transposed view, a strided (every other column) view,
    or a view with its rows reversed (negative strides)."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    layout = draw(st.sampled_from(["c", "transposed", "strided", "reversed"])) if len(shape) >= 1 else "c"
    if layout == "transposed" and len(shape) >= 2:
        return rng.uniform(low, high, shape[::-1]).astype(dtype).T
    if layout == "reversed" and len(shape) >= 2:
        return rng.uniform(low, high, shape).astype(dtype)[..., ::-1, :]
    if layout == "strided":
        return rng.uniform(low, high, shape[:-1] + (2 * shape[-1],)).astype(dtype)[..., ::2]
    return rng.uniform(low, high, shape).astype(dtype)


def test_every_kernel_is_compiled():
    info = kernels.info()
    assert all(info[name] == "compiled" for name in ("softmax", "layer_norm", "gelu", "matmul", "attention",
                                                     "dropout")), info
    assert info["threads"] >= 1


_BLAS_PROBE = """
import json, os, sys, time, numpy
if sys.argv[1] == "scipy first":
    import scipy.linalg  # loads scipy's OpenBLAS before minillm can set its timeout
import minillm
from minillm import kernels
from minillm.kernels import blas
at_import = os.environ.get("OPENBLAS_THREAD_TIMEOUT")
kernels.set_threads(2)
a = numpy.random.default_rng(0).standard_normal((2048, 512), dtype=numpy.float32)
product = kernels.matmul(a, a, False, True)
after_product = blas.threads()
start = time.process_time()
time.sleep(0.3)
idle = time.process_time() - start  # CPU time of every thread while none has work
q = a[:256].reshape(2, 4, 128, 128)
kernels.attention_forward(q, q, q)
print(json.dumps(dict(threaded=blas.threaded_products(), info=kernels.info()["blas_threads"], after_product=after_product,
                      after_attention=blas.threads(), idle=idle, at_import=at_import,
                      env=os.environ.get("OPENBLAS_THREAD_TIMEOUT"), error=float(abs(product - a @ a.T).max()))))
"""


@pytest.mark.parametrize("case, preset", [("minillm first", {}), ("scipy first", {}),
                                          ("scipy first", {"OPENBLAS_THREAD_TIMEOUT": "30"})])
def test_one_product_runs_on_blas_threads_that_sleep_when_done(case, preset):
    """kernels/blas.py's scheme, in a fresh process each: imported before scipy's BLAS loads, minillm
    sets OPENBLAS_THREAD_TIMEOUT=4 until it has (and removes it), one big product runs on BLAS's 2
    threads, they use no CPU once it is done, and attention runs BLAS single-threaded after it. With
    scipy's BLAS loaded first and no timeout set, products stay single-threaded BLAS calls in OpenMP's
    pool; a timeout the user set is theirs: products are threaded, and with 2^30 cycles the idle
    worker spins through the sleep (what the setting spares the kernels beside it)."""
    import json
    import os
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_THREAD_TIMEOUT", "GOTO_THREAD_TIMEOUT")}
    done = subprocess.run([sys.executable, "-c", _BLAS_PROBE, case], env={**env, **COMPILED, **preset},
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    r = json.loads(done.stdout.splitlines()[-1])
    assert r["error"] < 1e-2, r
    if r["info"] is None:  # scipy's BLAS is not an OpenBLAS whose threads minillm can set: no threaded products
        assert not r["threaded"] and r["after_attention"] is None, r
        return
    assert r["after_attention"] == 1, r
    assert r["env"] == preset.get("OPENBLAS_THREAD_TIMEOUT"), r  # the environment as the user left it
    if preset:
        assert r["threaded"] and r["after_product"] == 2 and r["idle"] > 0.05, r
    elif case == "minillm first":
        assert r["at_import"] == "4" and r["threaded"] and r["info"] == r["after_product"] == 2, r
        assert r["idle"] < 0.03, r
    else:
        assert not r["threaded"] and r["info"] == r["after_product"] == 1 and r["idle"] < 0.03, r


# ---------------------------------------------------------------- softmax

@st.composite
def softmax_inputs(draw):
    dtype = draw(st.sampled_from(DTYPES))
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=7))
    x = layouts(draw, shape, dtype, -8, 8)
    mask = None
    if draw(st.booleans()):  # an additive mask of any shape broadcasting to x, with -inf entries
        mask_shape = draw(hnp.broadcastable_shapes(shape, min_dims=0, max_dims=len(shape), min_side=0)
                          .filter(lambda s: np.broadcast_shapes(s, shape) == shape))
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        mask = np.where(rng.random(mask_shape) < 0.4, -np.inf, rng.normal(size=mask_shape)).astype(dtype)
    return x, mask


@many_examples
@given(softmax_inputs(), st.integers(0, 2**32 - 1))
def test_softmax_matches_numpy_twin(inputs, seed):
    x, mask = inputs
    y = softmax_forward(x, mask)
    expected = softmax_forward_numpy(x, mask)
    assert y.shape == x.shape and y.dtype == x.dtype
    close(y, expected, x.dtype)
    if x.size and mask is not None:  # a row of all -inf is zeros, not NaN
        assert not np.isnan(y).any()
    g = np.random.default_rng(seed).normal(size=x.shape).astype(x.dtype)
    close(softmax_backward(y, g), softmax_backward_numpy(expected, g), x.dtype, scale=10)


def test_softmax_mask_is_not_broadcast_to_the_input():
    mask = np.zeros((4, 1, 1, 9), np.float32)
    values, offsets = _mask_rows(mask, (4, 3, 5, 9))
    assert values.size == 4 * 9 and offsets.shape == (4 * 3 * 5,)
    assert offsets.reshape(4, 15).tolist() == [[9 * b] * 15 for b in range(4)]


def test_softmax_rows_across_threads_and_all_masked_rows():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(301, 33)).astype(np.float32)
    mask = np.where(rng.random((301, 1)) < 0.1, -np.inf, 0).astype(np.float32)
    with openmp_threads(1):
        one = softmax_forward(x, mask)
    two = softmax_forward(x, mask)
    np.testing.assert_array_equal(one, two)
    masked = np.isinf(mask[:, 0])
    assert masked.any() and (two[masked] == 0).all()
    np.testing.assert_allclose(two[~masked].sum(axis=1), 1, rtol=1e-6)


@pytest.mark.parametrize("size", [4095, 4096 * 64 + 1, 65536 * 64 + 3])
def test_row_and_elementwise_kernels_cover_every_element_in_tasks(size):
    """csrc/tasks.pxd cuts the work into tasks of 4096 to 65536 elements: at sizes where the tasks
    are smallest, in between and largest, each with a last partial task, every output is the twin's
    (numpy.empty leaves what a missed task would not write)."""
    rng = np.random.default_rng(size)
    x = rng.normal(size=size).astype(np.float32)
    close(gelu_forward(x), gelu_forward_numpy(x), np.float32, 2)
    rows = x[: size - size % 128].reshape(-1, 128)
    close(softmax_forward(rows), softmax_forward_numpy(rows), np.float32)
    w, b = rng.normal(size=128).astype(np.float32), rng.normal(size=128).astype(np.float32)
    for got, want in zip(layer_norm_forward(rows, w, b, 1e-12), layer_norm_forward_numpy(rows, w, b, 1e-12)):
        close(got, want, np.float32, 4)


def test_softmax_extreme_values():
    x = np.array([[0, -np.inf, 80, -80, 1e-30], [np.nan, 0, 1, 2, 3]], np.float32)
    y = softmax_forward(x)
    assert y[0, 1] == 0 and y[0, 2] == pytest.approx(1.0)
    assert np.isnan(y[1]).all()  # a NaN spreads through its row's sum, as in torch


def test_softmax_matches_torch(torch):
    rng = np.random.default_rng(1)
    for dtype in DTYPES:
        x = rng.normal(size=(3, 5, 129)).astype(dtype) * 4
        g = rng.normal(size=x.shape).astype(dtype)
        t = torch.tensor(x, requires_grad=True)
        expected = torch.softmax(t, -1)
        expected.backward(torch.tensor(g))
        y = softmax_forward(x)
        close(y, expected.detach().numpy(), dtype)
        close(softmax_backward(y, g), t.grad.numpy(), dtype, scale=10)


def test_softmax_gradcheck_on_compiled_kernel():
    rng = np.random.default_rng(2)
    gradcheck(lambda x: F.softmax(x, dim=-1), [rng.normal(size=(2, 3, 5))])
    gradcheck(lambda x: F.softmax(x, dim=0), [rng.normal(size=(4, 3))])  # a non-last axis: strided input


# ---------------------------------------------------------------- layer norm

@st.composite
def layer_norm_inputs(draw):
    dtype = draw(st.sampled_from(DTYPES))
    rows, n = draw(st.integers(0, 40)), draw(st.sampled_from([1, 2, 3, 7, 16, 33, 100]))
    x = layouts(draw, (rows, n), dtype) * draw(st.sampled_from([1e-3, 1, 50])) + draw(st.sampled_from([0, 5]))
    weight = layouts(draw, (n,), dtype) if draw(st.booleans()) else None
    bias = layouts(draw, (n,), dtype) if draw(st.booleans()) else None
    return x, weight, bias, draw(st.sampled_from([1e-12, 1e-5, 0.1]))


@many_examples
@given(layer_norm_inputs(), st.integers(0, 2**32 - 1))
def test_layer_norm_matches_numpy_twin(inputs, seed):
    x, weight, bias, eps = inputs
    y, mean, rstd = layer_norm_forward(x, weight, bias, eps)
    ey, emean, erstd = layer_norm_forward_numpy(x, weight, bias, eps)
    g = np.random.default_rng(seed).normal(size=x.shape).astype(x.dtype)
    dx, dw, db = layer_norm_backward(g, x, weight, mean, rstd)
    edx, edw, edb = layer_norm_backward_numpy(g, x, weight, emean, erstd)
    # rounding in the mean is amplified by |x| * rstd (x = 5 + 1e-3 noise: 5000x); scale by it
    cond = max(1.0, float(np.abs(x).max(initial=0) * erstd.max(initial=0)))
    w = float(np.abs(weight).max(initial=1)) if weight is not None else 1.0
    close(mean, emean, x.dtype, float(np.abs(x).max(initial=1)))
    close(rstd, erstd, x.dtype, cond * float(erstd.max(initial=1)))
    close(y, ey, x.dtype, 10 * cond * w + float(np.abs(ey).max(initial=0)))
    close(dx, edx, x.dtype, 10 * cond * w * float(erstd.max(initial=1) * np.abs(g).max(initial=1)))
    close(dw, edw, x.dtype, 10 * cond * (len(x) + 1))
    close(db, edb, x.dtype, len(x) + 1)


@many_examples
@given(layer_norm_inputs(), st.data())
def test_add_layer_norm_matches_numpy_twin(inputs, data):
    """The compiled Add & Norm gives the twin's sum exactly and layer_norm_forward's outputs of it."""
    x, weight, bias, eps = inputs
    residual = layouts(data.draw, x.shape, x.dtype)
    y, mean, rstd, total = add_layer_norm_forward(x, residual, weight, bias, eps)
    ey, emean, erstd, etotal = add_layer_norm_forward_numpy(x, residual, weight, bias, eps)
    assert np.array_equal(total, etotal)
    for got, want in zip((y, mean, rstd), layer_norm_forward(etotal, weight, bias, eps)):
        assert np.array_equal(got, want)  # the same row loop over the same sum: the same bits
    cond = max(1.0, float(np.abs(etotal).max(initial=0) * erstd.max(initial=0)))
    w = float(np.abs(weight).max(initial=1)) if weight is not None else 1.0
    close(y, ey, x.dtype, 10 * cond * w + float(np.abs(ey).max(initial=0)))


def test_add_layer_norm_matches_torch(torch):
    """LayerNorm(x + residual) and its four gradients, the op on the compiled kernel against torch's."""
    rng = np.random.default_rng(5)
    for dtype in DTYPES:
        x, residual, g = (rng.normal(size=(3, 4, 65)).astype(dtype) for _ in range(3))
        w, b = rng.normal(size=65).astype(dtype), rng.normal(size=65).astype(dtype)
        norm = mm.nn.LayerNorm(65, eps=1e-12)
        norm.to(dtype)
        norm.weight.data[...], norm.bias.data[...] = w, b
        ours = [mm.tensor(x, requires_grad=True), mm.tensor(residual, requires_grad=True), norm.weight, norm.bias]
        theirs = [torch.tensor(a, requires_grad=True) for a in (x, residual, w, b)]
        out = norm(ours[0], residual=ours[1])
        (out * mm.tensor(g)).sum().backward()
        expected = torch.nn.functional.layer_norm(theirs[0] + theirs[1], (65,), theirs[2], theirs[3], 1e-12)
        (expected * torch.tensor(g)).sum().backward()
        close(out.numpy(), expected.detach().numpy(), dtype, 10)
        for a, t in zip(ours, theirs):
            close(a.grad.numpy(), t.grad.numpy(), dtype, 100)


def test_layer_norm_backward_gives_the_same_bits_for_any_thread_count():
    rng = np.random.default_rng(3)
    x, g = rng.normal(size=(2, 999, 48)).astype(np.float32)
    w = rng.normal(size=48).astype(np.float32)
    _, mean, rstd = layer_norm_forward(x, w, None, 1e-5)
    with openmp_threads(1):
        one = layer_norm_backward(g, x, w, mean, rstd)
    for a, b in zip(one, layer_norm_backward(g, x, w, mean, rstd)):
        np.testing.assert_array_equal(a, b)


def test_layer_norm_matches_torch(torch):
    import torch.nn.functional as TF
    rng = np.random.default_rng(4)
    for dtype in DTYPES:
        x = (rng.normal(size=(37, 65)) * 3 + 2).astype(dtype)
        w, b = rng.normal(size=65).astype(dtype), rng.normal(size=65).astype(dtype)
        g = rng.normal(size=x.shape).astype(dtype)
        tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
        expected = TF.layer_norm(tx, (65,), tw, tb, 1e-12)
        expected.backward(torch.tensor(g))
        y, mean, rstd = layer_norm_forward(x, w, b, 1e-12)
        close(y, expected.detach().numpy(), dtype, 10)
        for ours, theirs in zip(layer_norm_backward(g, x, w, mean, rstd), (tx.grad, tw.grad, tb.grad)):
            close(ours, theirs.numpy(), dtype, 100)


def test_layer_norm_gradcheck_on_compiled_kernel():
    rng = np.random.default_rng(5)
    x, w, b = rng.normal(size=(3, 2, 5)), rng.normal(size=5), rng.normal(size=5)
    gradcheck(lambda x, w, b: F.layer_norm(x, (5,), w, b, eps=1e-5), [x, w, b])
    gradcheck(lambda x: F.layer_norm(x, (5,)), [x])


# ---------------------------------------------------------------- GELU

@st.composite
def gelu_inputs(draw):
    dtype = draw(st.sampled_from(DTYPES))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=9))
    return layouts(draw, shape, dtype, -12, 12) if shape else np.asarray(draw(st.floats(-12, 12)), dtype)


@many_examples
@given(gelu_inputs(), st.sampled_from(["none", "tanh"]))
def test_gelu_matches_numpy_twin(x, approximate):
    y = gelu_forward(x, approximate)
    assert y.shape == x.shape and y.dtype == x.dtype
    close(y, gelu_forward_numpy(x, approximate), x.dtype, 2)
    g = np.linspace(-1, 1, x.size).reshape(x.shape).astype(x.dtype)
    close(gelu_backward(x, g, approximate), gelu_backward_numpy(x, g, approximate), x.dtype, 4)


def test_gelu_float32_against_float64():
    """The float32 kernel's own exp and normal CDF (csrc/vecmath.h): relative error within 1.5e-6 for
    |x| <= 3 (torch's: 2e-4 at x = -3, from 1 + erf cancelling) and 2e-5 out to x = -20."""
    x32 = np.linspace(-20, 20, 100_003).astype(np.float32)
    x, central = x32.astype(np.float64), np.abs(x32) <= 3
    for approximate in ("none", "tanh"):
        exact, slope = gelu_forward(x, approximate), gelu_backward(x, np.ones_like(x), approximate)
        y, dy = gelu_forward(x32, approximate), gelu_backward(x32, np.ones_like(x32), approximate)
        np.testing.assert_allclose(y[central], exact[central], rtol=1.5e-6, atol=1e-30)
        np.testing.assert_allclose(y, exact, rtol=2e-5, atol=1e-37)
        np.testing.assert_allclose(dy, slope, rtol=1e-6, atol=2e-6)


def test_gelu_special_values():
    x = np.array([0, np.inf, -np.inf, np.nan, -200, 200], np.float32)
    y = gelu_forward(x)
    assert y[0] == 0 and y[1] == np.inf and y[4] == 0 and y[5] == 200
    assert np.isnan(y[3])


def test_gelu_matches_torch(torch):
    import torch.nn.functional as TF
    x = np.linspace(-7, 7, 1001)
    for dtype in DTYPES:
        for approximate in ("none", "tanh"):
            t = torch.tensor(x.astype(dtype), requires_grad=True)
            expected = TF.gelu(t, approximate=approximate)
            expected.sum().backward()
            close(gelu_forward(x.astype(dtype), approximate), expected.detach().numpy(), dtype, 2)
            close(gelu_backward(x.astype(dtype), np.ones_like(x, dtype), approximate), t.grad.numpy(), dtype, 2)


def test_gelu_gradcheck_on_compiled_kernel():
    x = np.random.default_rng(6).normal(size=(3, 7)) * 2
    gradcheck(F.gelu, [x])
    gradcheck(lambda x: F.gelu(x, approximate="tanh"), [x])


# ---------------------------------------------------------------- matmul

@st.composite
def matmul_inputs(draw):
    dtype = draw(st.sampled_from(DTYPES))
    batch_a, batch_b = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=3, min_side=0, max_side=3)
                            ).input_shapes
    m, k, n = (draw(st.sampled_from([0, 1, 2, 3, 5, 17])) for _ in range(3))
    ta, tb = draw(st.booleans()), draw(st.booleans())
    a = layouts(draw, batch_a + ((k, m) if ta else (m, k)), dtype)
    b = layouts(draw, batch_b + ((n, k) if tb else (k, n)), dtype)
    bias = layouts(draw, (n,), dtype) if draw(st.booleans()) else None
    return a, b, ta, tb, bias


@many_examples
@given(matmul_inputs())
def test_matmul_matches_numpy_twin(inputs):
    a, b, ta, tb, bias = inputs
    c = matmul(a, b, ta, tb, bias=bias)
    expected = matmul_numpy(a, b, ta, tb, bias=bias)
    assert c.shape == expected.shape and c.dtype == a.dtype
    close(c, expected, a.dtype, 20)


@pytest.mark.parametrize("ta, tb", [(False, False), (False, True), (True, False), (True, True)])
def test_matmul_big_products_split_across_threads(ta, tb):
    """Products big enough to be cut into slabs per thread (by rows, or by columns when wide)."""
    rng = np.random.default_rng(7)
    for m, k, n in ((130, 70, 65), (65, 70, 130), (1, 300, 1000)):
        a = rng.normal(size=(k, m) if ta else (m, k))
        b = rng.normal(size=(n, k) if tb else (k, n))
        bias = rng.normal(size=n)  # copied into each slab of rows (or columns) before its product
        for threads in (kernels.load("threads").max_threads(), 1):
            with openmp_threads(threads):
                for added in (None, bias):
                    np.testing.assert_allclose(matmul(a, b, ta, tb, bias=added),
                                               matmul_numpy(a, b, ta, tb, bias=added), rtol=1e-12, atol=1e-11)


def test_matmul_reads_transposed_heads_without_copy():
    """q, k as BERT makes them, (B, L, H, D) viewed as (B, H, L, D): strided batches, handed to BLAS."""
    rng = np.random.default_rng(8)
    q, k = (rng.normal(size=(2, 9, 3, 4)).astype(np.float32).transpose(0, 2, 1, 3) for _ in range(2))
    close(matmul(q, k, transpose_b=True), q @ k.swapaxes(-1, -2), np.float32, 10)
    close(matmul(q[:, :1], k, transpose_b=True), q[:, :1] @ k.swapaxes(-1, -2), np.float32, 10)  # broadcast


def test_matmul_matches_torch(torch):
    rng = np.random.default_rng(9)
    for dtype in DTYPES:
        a, b = rng.normal(size=(2, 1, 5, 7)).astype(dtype), rng.normal(size=(3, 7, 4)).astype(dtype)
        close(matmul(a, b), torch.matmul(torch.tensor(a), torch.tensor(b)).numpy(), dtype, 10)
        x, w, bias = (rng.normal(size=shape).astype(dtype) for shape in ((6, 7), (5, 7), (5,)))
        addmm = torch.addmm(torch.tensor(bias), torch.tensor(x), torch.tensor(w).T).numpy()
        close(matmul(x, w, transpose_b=True, bias=bias), addmm, dtype, 10)


def test_matmul_gradcheck_on_compiled_kernel():
    rng = np.random.default_rng(10)
    gradcheck(mm.ops.matmul, [rng.normal(size=(2, 1, 3, 4)), rng.normal(size=(3, 4, 2))])
    gradcheck(F.linear, [rng.normal(size=(2, 3, 4)), rng.normal(size=(5, 4)), rng.normal(size=5)])


# ---------------------------------------------------------------- dropout

@many_examples
@given(gelu_inputs(), st.sampled_from([0.0, 0.1, 0.5, 0.9, 1.0]), st.integers(0, 2**63 - 1))
def test_dropout_is_keep_mask_in_both_twins(x, p, seed):
    """Both twins give x * keep_mask(seed, x.shape, p) / (1 - p) bit for bit, whatever x's layout
    (elements numbered in C order), on 1 and 2 threads."""
    expected = x * keep_mask(seed, x.shape, p) * (0 if p == 1 else x.dtype.type(1 / (1 - p)))
    for threads in (1, 2):
        with openmp_threads(threads):
            y = apply_dropout(x, p, seed)
        assert y.shape == x.shape and y.dtype == x.dtype
        np.testing.assert_array_equal(y, expected)
    np.testing.assert_array_equal(apply_dropout_numpy(x, p, seed), expected)


def test_dropout_keeps_nan_and_inf_where_torch_does(torch):
    """A dropped NaN or inf is NaN (x * 0), a kept one stays, as in torch's x * mask; with p = 1
    every finite element is 0."""
    x = np.array([np.nan, np.inf, -np.inf, 1.0] * 64, np.float32)
    keep = keep_mask(3, x.shape, 0.5)
    expected = torch.from_numpy(x) * torch.from_numpy(keep.astype(np.float32)) * 2
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(apply_dropout(x, 0.5, 3), expected.numpy())
        assert np.array_equal(apply_dropout(x, 1.0, 3), x * 0, equal_nan=True)


def test_dropout_op_backward_is_the_same_mask_and_keeps_no_mask():
    """The Dropout op's gradient is g * m with the forward's m, regenerated from the seed: the op
    saves p and the seed, not an array (it kept a float mask the size of x)."""
    x = mm.tensor(np.random.default_rng(0).standard_normal((64, 48)).astype(np.float32), requires_grad=True)
    mm.manual_seed(5)
    y = F.dropout(x, 0.3)
    assert not any(isinstance(s, np.ndarray) for s in y._ctx.saved), y._ctx.saved
    g = np.random.default_rng(1).standard_normal(x.shape).astype(np.float32)
    y.backward(mm.tensor(g))
    m = np.where(y.numpy() != 0, np.float32(1 / 0.7), np.float32(0))  # x has no zeros: y != 0 where kept
    np.testing.assert_array_equal(y.numpy(), x.numpy() * m)
    np.testing.assert_array_equal(x.grad.numpy(), g * m)
    assert abs((m == 0).mean() - 0.3) < 0.03


# ---------------------------------------------------------------- bad inputs

def _raises(error, match, fn, *args):
    with pytest.raises(error, match=match):
        fn(*args)


def test_bad_inputs_name_the_argument():
    f32, f64 = np.ones((2, 3), np.float32), np.ones((2, 3))
    _raises(TypeError, "input must be float32 or float64", softmax_forward, np.ones((2, 3), np.int64))
    _raises(TypeError, "mask dtype", softmax_forward, f32, f64)
    _raises(ValueError, r"mask of shape \(4, 3\)", softmax_forward, f32, np.zeros((4, 3), np.float32))
    _raises(ValueError, "grad", softmax_backward, f32, np.ones((3, 2), np.float32))
    _raises(ValueError, "weight must have shape", layer_norm_forward, f32, np.ones(2, np.float32), None, 1e-5)
    _raises(TypeError, "bias dtype", layer_norm_forward, f32, None, np.ones(3), 1e-5)
    _raises(ValueError, "x must be", layer_norm_forward, np.ones((2, 3, 4)), None, None, 1e-5)
    _raises(ValueError, "eps", layer_norm_forward, f64, None, None, -1.0)
    _raises(ValueError, "mean must have shape", layer_norm_backward, f64, f64, None, np.ones(3), np.ones(2))
    _raises(ValueError, "approximate", gelu_forward, f32, "erf")
    _raises(TypeError, "input must be float32", gelu_forward, np.ones(3, np.float16))
    _raises(ValueError, "grad", gelu_backward, f32, f64)
    _raises(TypeError, "dropout: input must be float32 or float64", apply_dropout, np.ones(3, np.int32), 0.1, 0)
    _raises(ValueError, r"dropout: the dropout probability must be in \[0, 1\], got 1.5", apply_dropout, f32, 1.5, 0)
    _raises(ValueError, r"dropout: the dropout seed must be in \[0, 2\^63\)", apply_dropout, f32, 0.1, -1)
    _raises(ValueError, "inner dimensions", matmul, f32, f32)
    _raises(TypeError, "same dtype", matmul, f32, f64.T)
    _raises(ValueError, "at least 2 dimensions", matmul, np.ones(3), np.ones((3, 2)))
    _raises(ValueError, "batch dimensions", matmul, np.ones((2, 3, 3)), np.ones((4, 3, 3)))


def test_softmax_of_rows_with_inf_or_nan_is_torchs_in_both_twins(torch):
    """A row whose maximum is +inf or NaN is all NaN (exp(inf - inf)), as torch's; only an all -inf
    row (fully masked) is zeros. The NumPy twin used to take +inf for a missing maximum: [0, NaN]
    for [0, +inf] (bench/fuzz.py's kernel target counted it)."""
    x = np.array([[0, np.inf], [1, -np.inf], [np.nan, 1], [np.inf, np.inf], [-np.inf, -np.inf]], np.float32)
    with np.errstate(invalid="ignore"):  # inf - inf is NaN on purpose here
        check_inf_and_nan_rows(torch, x)


def check_inf_and_nan_rows(torch, x):
    expected = torch.softmax(torch.tensor(x), -1).numpy()
    expected[-1] = 0  # torch: NaN for a fully masked row; minillm: zeros (its attention masks need them)
    np.testing.assert_array_equal(softmax_forward_numpy(x), expected)
    np.testing.assert_array_equal(softmax_forward(x), expected)
    rows = x[:4]  # log-softmax (x - logsumexp) too: NaN rows where torch's are
    np.testing.assert_array_equal(F.log_softmax(mm.tensor(rows), -1).numpy(),
                                  torch.log_softmax(torch.tensor(rows), -1).numpy())


def test_softmax_keeps_subnormal_probabilities_as_torch(torch):
    """exp(-95) = 5.5e-42 is a subnormal float32. The compiled exp (csrc/vecmath.h) took 0 below
    FLT_MIN (exp(x), x < -87.34), and a gradient of inf then made the whole row NaN (0 * inf in
    <g, y>) where torch and the NumPy twin give -inf and NaN. 0 from x = -103.97 on, as libm's."""
    x = np.array([[0, -95], [0, -87.5], [0, -103], [0, -110]], np.float32)
    g = np.array([1, np.inf], np.float32) * np.ones_like(x)
    tx = torch.tensor(x, requires_grad=True)
    expected = torch.softmax(tx, -1)
    expected.backward(torch.tensor(g))
    for y in (softmax_forward(x), softmax_forward_numpy(x)):
        np.testing.assert_allclose(y, expected.detach().numpy(), rtol=1e-6, atol=0)  # to 1e-45, not 1e-38
        with np.errstate(invalid="ignore"):  # inf - inf is NaN on purpose here
            for dx in (softmax_backward(y, g), softmax_backward_numpy(y, g)):
                np.testing.assert_array_equal(dx, tx.grad.numpy())  # NaN where torch's, the same infinities


def test_the_compiled_exp_underflows_where_numpys_does():
    """csrc/vecmath.h's float32 exp against np.exp on every float32 in [-87.5, -87.2] (the last
    normal results, then subnormals) and in [-104.5, -103.9] (the smallest subnormal, then 0 from
    ln(2^-150) = -103.97208 on), and at -200, -1e30 and -inf: 0 exactly where NumPy's is 0 (a 0 and
    a 1.4e-45 differ once an infinite gradient multiplies them: NaN against inf), within 2 ulp
    elsewhere. Read through the softmax of a row [0, x_1, ..., x_n] with every x_j <= -87: the sum
    is 1 + (less than 2^-25), which rounds to 1, so y_j is the kernel's exp(x_j) itself, from the
    vector loop and from its tail (a length that is no multiple of the vector width)."""
    def floats_between(lo, hi):  # every float32 in [lo, hi], lo < hi < 0: consecutive bit patterns
        return np.arange(np.float32(hi).view(np.int32), np.float32(lo).view(np.int32) + 1,
                         dtype=np.int32).view(np.float32)

    x = np.concatenate([floats_between(-87.5, -87.2), floats_between(-104.5, -103.9),
                        np.float32([-103.97208, -104, -200, -1e30, -np.inf])])
    assert (x <= -87).all()
    row = np.concatenate([np.float32([0]), x, np.full(12, -200, np.float32)])[None]  # 117,984 values
    got, expected = softmax_forward(row)[0, 1:len(x) + 1], np.exp(x)
    zero = expected == 0
    assert zero.sum() > 20_000 and (~zero).sum() > 20_000
    np.testing.assert_array_equal(got == 0, zero)
    ulps = np.abs(got[~zero].view(np.int32).astype(np.int64) - expected[~zero].view(np.int32))
    assert ulps.max() <= 2, x[~zero][ulps.argmax()]


def test_layer_norm_of_constant_rows_is_torchs_in_both_twins(torch):
    """A constant float32 row, BERT's eps of 1e-12: the mean is the row's value exactly, rstd is
    1/sqrt(eps) and y is the bias, as torch's (a Welford mean). Both twins summed the row: n c
    rounds (rarely a float), the mean was an ulp off, the centered row an ulp, its variance an ulp
    squared, which is not small beside 1e-12: rstd fell to a quarter of 1/sqrt(eps) at |c| ~ 1 and to
    1/3000 at |c| ~ 1000, and y was bias +- w. Now each row is shifted by its first value first (x0 + mean(x - x0)). The
    backward's oracle is torch in float64: torch's float32 backward takes xhat = x rstd - mean rstd,
    two numbers near 1e9 whose rounding leaves xhat off by up to 64, not 0."""
    rng = np.random.default_rng(11)
    values = np.float32([1, 5, -3.3, 0.1, 7e-3, 1000.1, -31.7])
    for n in (1, 7, 33, 384, 1000):
        x = np.repeat(values[:, None], n, axis=1)
        w, b, g = rng.normal(size=n).astype(np.float32), rng.normal(size=n).astype(np.float32), \
            rng.normal(size=x.shape).astype(np.float32)
        ty, tmean, trstd = torch.native_layer_norm(torch.tensor(x), (n,), torch.tensor(w), torch.tensor(b), 1e-12)
        tx, tw, tb = (torch.tensor(a.astype(np.float64), requires_grad=True) for a in (x, w, b))
        torch.nn.functional.layer_norm(tx, (n,), tw, tb, float(np.float32(1e-12))).backward(torch.tensor(g, dtype=torch.float64))
        for forward, backward in ((layer_norm_forward, layer_norm_backward),
                                  (layer_norm_forward_numpy, layer_norm_backward_numpy)):
            y, mean, rstd = forward(x, w, b, 1e-12)
            np.testing.assert_array_equal(mean, values)
            np.testing.assert_array_equal(tmean.numpy()[:, 0], values)
            np.testing.assert_allclose(rstd, trstd.numpy()[:, 0], rtol=1e-6)
            np.testing.assert_allclose(y, ty.numpy(), rtol=1e-6, atol=1e-6)
            dx, dw, db = backward(g, x, w, mean, rstd)  # xhat = 0: dx = rstd (g w - mean(g w)), 1e6 x
            terms = float(rstd.max() * np.abs(g * w).max())  # (a 1-element row's dx is 0: torch's is 7e-12)
            np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-4, atol=1e-6 * terms)
            np.testing.assert_array_equal(dw, 0)  # sum g xhat, xhat = 0
            np.testing.assert_allclose(db, tb.grad.numpy(), rtol=1e-5, atol=1e-5)


def _one_element_rows():
    rng = np.random.default_rng(3)
    x, g = rng.normal(size=(64, 1)).astype(np.float32), (30 * rng.normal(size=(64, 1))).astype(np.float32)
    return x, g, np.float32([-1.481868])


def test_layer_norm_backward_of_one_element_rows_is_zero_in_float64_torch(torch):
    """The oracle of the next test: dx of a one-element row is 0 (within 1e-9 in float64; torch's
    float32 gives -1.0 on one of these 64 rows)."""
    x, g, w = _one_element_rows()
    tx = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    torch.nn.functional.layer_norm(tx, (1,), torch.tensor(w, dtype=torch.float64), None, 1e-12).backward(
        torch.tensor(g, dtype=torch.float64))
    assert np.abs(tx.grad.numpy()).max() < 1e-9


def test_layer_norm_backward_cancels_the_dxhat_it_summed():
    """dx = rstd (dxhat - mean(dxhat) - xhat mean(dxhat xhat)) with dxhat = g w: a row of one element
    has dx = 0, however large rstd, and both twins give 0 exactly, in float32 and float64; where g w
    overflows, dx is NaN where the NumPy twin's is (inf - inf). The compiled twin recomputed g w in
    its second pass, fused into g w - mean(dxhat) with the product unrounded: dx was rstd times g w's
    rounding error (up to 1.4 at rstd 1e6, found by bench/fuzz.py) and -inf where NumPy gives NaN."""
    for dtype in (np.float32, np.float64):
        x, g, w = (a.astype(dtype) for a in _one_element_rows())
        for forward, backward in ((layer_norm_forward, layer_norm_backward),
                                  (layer_norm_forward_numpy, layer_norm_backward_numpy)):
            _, mean, rstd = forward(x, w, None, 1e-12)
            np.testing.assert_allclose(rstd, 1e6, rtol=1e-6)
            np.testing.assert_array_equal(backward(g, x, w, mean, rstd)[0], 0)

    x = np.float32([[-8.444583, -32.808475, 29.326466, -41.267406]])  # the fuzz's row
    w, g = np.float32([-1e30, 5.568267, -15.200377, -16.150106]), np.float32([[-1e30, -1.369069, 0.195431, -0.875856]])
    with np.errstate(over="ignore", invalid="ignore"):
        dx = layer_norm_backward(g, x, w, *layer_norm_forward(x, w, None, 1e-5)[1:])[0]
        expected = layer_norm_backward_numpy(g, x, w, *layer_norm_forward_numpy(x, w, None, 1e-5)[1:])[0]
    assert np.isnan(expected[0, 0])
    np.testing.assert_array_equal(dx, expected)  # NaN and inf at the same places, nothing finite here


def test_layer_norm_of_rows_with_inf_or_nan_is_torchs_in_both_twins(torch):
    """A row with +inf, -inf or NaN normalizes to NaN (inf - inf), with rstd NaN, as torch's; its
    mean is +inf, -inf or NaN (torch's Welford mean is NaN for all three: inf - inf inside it)."""
    x = np.array([[np.inf, 1, 2, 3], [1, -np.inf, 2, 3], [1, 2, np.nan, 3], [1, 2, 3, 4]], np.float32)
    w, b = np.float32([1, 2, 3, 4]), np.float32([0, 1, 0, 1])
    ty, _, trstd = torch.native_layer_norm(torch.tensor(x), (4,), torch.tensor(w), torch.tensor(b), 1e-5)
    with np.errstate(invalid="ignore"):
        for y, mean, rstd in (layer_norm_forward(x, w, b, 1e-5), layer_norm_forward_numpy(x, w, b, 1e-5)):
            np.testing.assert_allclose(y, ty.numpy(), rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(rstd, trstd.numpy()[:, 0], rtol=1e-5)
            np.testing.assert_array_equal(mean, [np.inf, -np.inf, np.nan, 2.5])


def test_gelu_backward_at_infinities_and_far_in_the_tail_in_both_twins(torch):
    """At x = +-inf the derivative is NaN (inf * 0 in x phi(x), and in the tanh form's x (1 - t^2)), as
    torch's: the NumPy twin's tanh form gave the limits, 1 and 0. Far in the left tail the derivative
    is tiny but not 0, so a gradient of -inf gives +inf in both twins: the NumPy twin's 1 - t^2 had
    cancelled to 0 from x = -5.4 (NaN), and the compiled twin's exp flushed x phi(x) to 0 from
    x = -13.2 (NaN). Torch's float32 gives NaN there too (its derivative is 0 from x = -5.06 and
    -6.15), so the oracles of the tail are scipy's float64 ndtr (Phi) and torch's autograd of
    x sigmoid(2u) in float64, neither of which cancels there."""
    from scipy.special import ndtr

    special = np.array([np.inf, -np.inf, np.nan], np.float32)
    for approximate, tail in (("none", [-6, -9, -12, -13.5]), ("tanh", [-5.5, -6, -7.5, -9])):
        tail = np.array(tail, np.float32)
        expected = torch.ops.aten.gelu_backward(torch.ones(3), torch.tensor(special), approximate=approximate)
        x = tail.astype(np.float64)
        if approximate == "tanh":
            t = torch.tensor(x, requires_grad=True)
            (t * torch.sigmoid(2 * (2 / np.pi) ** 0.5 * (t + 0.044715 * t ** 3))).sum().backward()
            slope = t.grad.numpy()
        else:
            slope = ndtr(x) + x * np.exp(-x * x / 2) / np.sqrt(2 * np.pi)  # Phi(x) + x phi(x)
        assert (slope < 0).all() and (slope > -1e-6).all()  # tiny, negative, not 0 (nor a float32 0)
        with np.errstate(invalid="ignore", over="ignore"):
            for backward in (gelu_backward, gelu_backward_numpy):
                np.testing.assert_array_equal(backward(special, np.ones(3, np.float32), approximate), expected.numpy())
                # within 5%: the NumPy twin's Phi, (1 + erf(x / sqrt 2)) / 2, is 0 here, x phi(x) is 1/x^2 off
                np.testing.assert_allclose(backward(tail, np.ones_like(tail), approximate), slope, rtol=5e-2)
                np.testing.assert_array_equal(backward(tail, np.full_like(tail, -np.inf), approximate), np.inf)


@pytest.mark.parametrize("preset, spin_count", [({}, str(kernels.blas.SPIN_COUNT)), ({"GOMP_SPINCOUNT": "5"}, "5"),
                                                ({"OMP_WAIT_POLICY": "active"}, "30000000000")])
def test_openmp_threads_spin_briefly_unless_the_user_says_otherwise(preset, spin_count):
    """libgomp's own report of its settings (OMP_DISPLAY_ENV) once a kernel has loaded it: a spin
    count of 10,000 unless the user set one or a wait policy (kernels/blas.py says why); and the
    process's environment as it was, for torch's libgomp and child processes."""
    import json
    import os
    import subprocess
    import sys
    probe = ("import json, os, numpy, minillm; minillm.kernels.softmax_forward(numpy.ones((2, 3), numpy.float32)); "
             "print(json.dumps(os.environ.get('GOMP_SPINCOUNT')))")
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          env={**env, **COMPILED, **preset, "OMP_DISPLAY_ENV": "verbose"})
    assert done.returncode == 0, done.stderr
    assert f"GOMP_SPINCOUNT = '{spin_count}'" in done.stderr, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == preset.get("GOMP_SPINCOUNT")
