"""The CUDA kernels (csrc/cuda/, launched by minillm/kernels/cuda/) against their NumPy twins run on
the same CuPy arrays: float32 within 1e-5 relative elementwise (attention 1e-4), AdamW bit for bit,
the attention's dropout mask bit for bit with kernels.dropout.keep_mask, attention memory O(L).

Hypothesis draws odd shapes: length-1 and odd axes, rows not a multiple of a warp or a tile, head
sizes between the compiled tiles, transposed and strided layouts, broadcast masks, all-masked rows.
AdamW is held to adamw_update, the update as minillm/optim/adamw.py writes it.
These tests need a GPU: the `cupy` fixture skips without one. tests/test_cuda_sources.py checks the
sources on any machine with nvcc."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from minillm import kernels
from minillm.kernels import cuda
from minillm.kernels.adamw import adamw_step
from minillm.kernels.attention import attention_backward_numpy, attention_forward_numpy
from minillm.kernels.cuda import attention as cuda_attention, gelu as cuda_gelu
from minillm.kernels.dropout import keep_mask
from minillm.kernels.gelu import gelu_backward, gelu_backward_numpy, gelu_forward, gelu_forward_numpy
from minillm.kernels.layer_norm import (add_layer_norm_forward, add_layer_norm_forward_numpy, layer_norm_backward,
                                        layer_norm_backward_numpy, layer_norm_forward, layer_norm_forward_numpy)
from minillm.kernels.softmax import softmax_backward, softmax_backward_numpy, softmax_forward, softmax_forward_numpy
from minillm.optim.adamw import adamw_update

seeds = st.integers(0, 2**32 - 1)


pytestmark = pytest.mark.usefixtures("compiled_kernels")  # conftest.py: the compiled twins, whatever MINILLM_KERNELS says


def close(actual, expected, rtol=1e-5, atol=1e-6):
    assert actual.shape == expected.shape and actual.dtype == expected.dtype == np.float32
    np.testing.assert_allclose(actual.get(), expected.get(), rtol=rtol, atol=atol)


def on_gpu(cupy, rng, shape, layout="c", scale=1.0):
    """A float32 CuPy array of ``shape``: C-contiguous, a transposed view or every other column."""
    if layout == "transposed" and len(shape) >= 2:
        return cupy.asarray(rng.normal(size=shape[::-1]).astype(np.float32) * scale).T
    if layout == "strided":
        return cupy.asarray(rng.normal(size=shape[:-1] + (2 * shape[-1],)).astype(np.float32) * scale)[..., ::2]
    return cupy.asarray(rng.normal(size=shape).astype(np.float32) * scale)


@pytest.fixture
def launched(monkeypatch):
    """The names of the CUDA kernels launched during a test."""
    names, launch = [], cuda.Kernel.__call__

    def counting(self, *args):
        names.append(self.name)
        return launch(self, *args)

    monkeypatch.setattr(cuda.Kernel, "__call__", counting)
    return names


def test_dispatch_sends_float32_gpu_arrays_to_the_cuda_kernels(cupy, launched):
    x = cupy.ones((4, 8), np.float32)
    softmax_forward(x)
    assert launched == ["softmax_forward"]
    softmax_forward(x.astype(np.float64))  # float64 (gradcheck) runs the NumPy twin on the GPU
    with kernels.use("numpy"):
        y = softmax_forward(x)
    assert launched == ["softmax_forward"] and isinstance(y, cupy.ndarray)
    layer_norm_forward(x, None, None, 1e-5)
    gelu_forward(x)
    adamw_step(x, cupy.ones_like(x), cupy.zeros_like(x), cupy.zeros_like(x), decay=1.0, beta1=0.9, beta2=0.999,
               step_size=0.1, bias_correction2_sqrt=1.0, eps=1e-8)
    assert launched[1:] == ["layer_norm_forward", "gelu_forward", "adamw_step"]


def test_mixed_devices_are_errors_naming_the_argument(cupy):
    x = cupy.ones((2, 3), np.float32)
    with pytest.raises(TypeError, match="mask is a host array"):
        softmax_forward(x, np.zeros(3, np.float32))
    with pytest.raises(TypeError, match="weight is a host array"):
        layer_norm_forward(x, np.ones(3, np.float32), None, 1e-5)
    with pytest.raises(TypeError, match="grad is a host array"):
        gelu_backward(x, np.ones((2, 3), np.float32))
    with pytest.raises(TypeError, match="k is a host array"):
        cuda_attention.attention_forward(x[None, None], np.ones((1, 1, 2, 3), np.float32), x[None, None])


# ---------------------------------------------------------------- softmax

@st.composite
def softmax_inputs(draw):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=7))
    shape = shape[:-1] + (draw(st.sampled_from([shape[-1], 1, 4, 31, 128, 129, 1000])),)
    mask_shape = None
    if draw(st.booleans()):  # an additive mask of any shape broadcasting to x
        mask_shape = draw(hnp.broadcastable_shapes(shape, min_dims=0, max_dims=len(shape), min_side=1)
                          .filter(lambda s: np.broadcast_shapes(s, shape) == shape))
    return shape, mask_shape, draw(st.sampled_from(["c", "transposed", "strided"])), draw(seeds)


@given(softmax_inputs())
def test_softmax_matches_numpy_twin(cupy, inputs):
    shape, mask_shape, layout, seed = inputs
    rng = np.random.default_rng(seed)
    x, g = on_gpu(cupy, rng, shape, layout, 4.0), on_gpu(cupy, rng, shape)
    mask = None
    if mask_shape is not None:
        mask = np.where(rng.random(mask_shape) < 0.4, -np.inf, rng.normal(size=mask_shape)).astype(np.float32)
        mask.reshape(-1, mask.shape[-1] if mask.ndim else 1)[0] = -np.inf  # a fully masked row
        mask = cupy.asarray(mask)
    y = softmax_forward(x, mask)
    expected = softmax_forward_numpy(x, mask)
    close(y, expected, atol=1e-7)
    assert not cupy.isnan(y).any()  # a row of all -inf is zeros, not NaN
    close(softmax_backward(y, g), softmax_backward_numpy(expected, g))


# ---------------------------------------------------------------- layer norm

@given(st.sampled_from([0, 1, 3, 64, 301]), st.sampled_from([1, 3, 4, 33, 384, 1000]), st.booleans(), st.booleans(),
       st.sampled_from([1e-12, 1e-5]), st.sampled_from(["c", "transposed"]), seeds)
def test_layer_norm_matches_numpy_twin(cupy, rows, n, affine, with_bias, eps, layout, seed):
    rng = np.random.default_rng(seed)
    x, g = on_gpu(cupy, rng, (rows, n), layout, 2.0) + 0.5, on_gpu(cupy, rng, (rows, n))
    weight = on_gpu(cupy, rng, (n,)) if affine else None
    bias = on_gpu(cupy, rng, (n,)) if with_bias else None
    y, mean, rstd = layer_norm_forward(x, weight, bias, eps)
    ey, emean, erstd = layer_norm_forward_numpy(x, weight, bias, eps)
    close(mean, emean)
    close(rstd, erstd)
    close(y, ey, atol=1e-5)
    dx, dw, db = layer_norm_backward(g, x, weight, mean, rstd)
    edx, edw, edb = layer_norm_backward_numpy(g, x, weight, emean, erstd)
    # dx against the float64 answer: for a row of a few values it is a small difference of large
    # terms, where two float32 evaluations can differ by 1e-4 relative while both are near it
    f64 = [None if a is None else a.astype(np.float64) for a in (g, x, weight)]
    _, mean64, rstd64 = layer_norm_forward_numpy(f64[1], f64[2], None, eps)
    close(dx, layer_norm_backward_numpy(f64[0], f64[1], f64[2], mean64, rstd64)[0].astype(np.float32), atol=1e-5)
    close(dw, edw, atol=1e-6 * (rows + 1))  # sums over the rows, added in another order
    close(db, edb, atol=1e-6 * (rows + 1))


@given(st.sampled_from([0, 1, 64, 301]), st.sampled_from([1, 33, 384]), st.sampled_from(["c", "transposed"]), seeds)
def test_add_layer_norm_matches_numpy_twin(cupy, rows, n, layout, seed):
    rng = np.random.default_rng(seed)
    x, residual = on_gpu(cupy, rng, (rows, n), layout), on_gpu(cupy, rng, (rows, n))
    weight, bias = on_gpu(cupy, rng, (n,)), on_gpu(cupy, rng, (n,))
    got = add_layer_norm_forward(x, residual, weight, bias, 1e-12)
    expected = add_layer_norm_forward_numpy(x, residual, weight, bias, 1e-12)
    assert bool((got[3] == expected[3]).all())  # the sum: one rounded add in both
    for a, b in zip(got[:3], expected[:3]):
        close(a, b, atol=1e-5)


def test_layer_norm_backward_gives_the_same_bits_every_run(cupy):
    rng = np.random.default_rng(3)
    x, g = on_gpu(cupy, rng, (5000, 48)), on_gpu(cupy, rng, (5000, 48))
    w = on_gpu(cupy, rng, (48,))
    _, mean, rstd = layer_norm_forward(x, w, None, 1e-5)
    first = layer_norm_backward(g, x, w, mean, rstd)
    for a, b in zip(first, layer_norm_backward(g, x, w, mean, rstd)):
        assert (a == b).all()


def test_layer_norm_backward_of_one_element_rows_is_zero(cupy):
    """dx of a one-element row is 0 exactly at any rstd, as the twins give it (test_kernels.py's
    test_layer_norm_backward_cancels_the_dxhat_it_summed): both passes read the rounded g w."""
    rng = np.random.default_rng(3)
    x, g = on_gpu(cupy, rng, (64, 1)), on_gpu(cupy, rng, (64, 1), scale=30)
    w = cupy.asarray(np.float32([-1.481868]))
    _, mean, rstd = layer_norm_forward(x, w, None, 1e-12)
    assert (rstd == np.float32(1e6)).all()
    assert (layer_norm_backward(g, x, w, mean, rstd)[0] == 0).all()


# ---------------------------------------------------------------- GELU

@given(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=9), st.sampled_from([None, 1, 4, 1536]),
       st.sampled_from(["none", "tanh"]), st.booleans(), seeds)
def test_gelu_matches_numpy_twin(cupy, shape, columns, approximate, with_bias, seed):
    shape = shape if columns is None else shape[:-1] + (columns,)
    rng = np.random.default_rng(seed)
    x, g = on_gpu(cupy, rng, shape, scale=3.0), on_gpu(cupy, rng, shape)
    if with_bias:  # the fused bias add: gelu(x + b), b along the last axis
        b = on_gpu(cupy, rng, shape[-1:])
        close(cuda_gelu.gelu_forward(x, approximate, b), gelu_forward_numpy(x + b, approximate))
        close(cuda_gelu.gelu_backward(x, g, approximate, b), gelu_backward_numpy(x + b, g, approximate), atol=1e-5)
    else:
        close(gelu_forward(x, approximate), gelu_forward_numpy(x, approximate))
        # gelu'(x) for x << 0 is a difference of two nearly equal terms: its float32 rounding is ~1e-6
        close(gelu_backward(x, g, approximate), gelu_backward_numpy(x, g, approximate), atol=1e-5)


# ---------------------------------------------------------------- AdamW

@pytest.mark.parametrize("n", [1, 3, 4, 1001, 4099])
@pytest.mark.parametrize("offset", [0, 1])  # 1: not 16-byte aligned, the one-float-at-a-time path
def test_adamw_matches_numpy_twin_bit_for_bit(cupy, n, offset):
    rng = np.random.default_rng(n)
    ours = [on_gpu(cupy, rng, (n + offset,))[offset:] for _ in range(3)]  # param, exp_avg, exp_avg_sq
    ours[2] *= ours[2]  # exp_avg_sq >= 0
    twin = [a.copy() for a in ours]
    for step in range(1, 4):
        grad = on_gpu(cupy, rng, (n,))
        scalars = dict(decay=1 - 1e-3 * 0.01, beta1=0.9, beta2=0.999, step_size=1e-3 / (1 - 0.9**step),
                       bias_correction2_sqrt=(1 - 0.999**step) ** 0.5, eps=1e-8)
        adamw_step(ours[0], grad, ours[1], ours[2], **scalars)
        adamw_update(twin[0], grad, twin[1], twin[2], *scalars.values())
        for a, b in zip(ours, twin):  # the kernel rounds each operation as the twin's CuPy kernels do
            np.testing.assert_array_equal(a.get(), b.get())


# ---------------------------------------------------------------- attention

def heads(cupy, rng, shape, layout):
    """A (B, H, N, D) float32 CuPy array: contiguous, BERT's transposed heads, strided or reversed rows."""
    b, h, n, d = shape
    if layout == "transposed":
        return cupy.asarray(rng.normal(size=(b, n, h, d)).astype(np.float32)).transpose(0, 2, 1, 3)
    if layout == "strided":
        return cupy.asarray(rng.normal(size=(b, h, 2 * n, d)).astype(np.float32))[:, :, ::2]
    if layout == "reversed":
        return cupy.asarray(rng.normal(size=shape).astype(np.float32))[:, ::-1, ::-1]
    return cupy.asarray(rng.normal(size=shape).astype(np.float32))


@st.composite
def attention_inputs(draw):
    b, h = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    length, keys = draw(st.sampled_from([1, 5, 64, 65, 130])), draw(st.sampled_from([1, 3, 64, 67, 129]))
    d = draw(st.sampled_from([1, 5, 32, 33, 64, 100, 128]))
    return ((b, h, length, keys, d), draw(st.sampled_from(["c", "transposed", "strided", "reversed"])),
            draw(st.booleans()), draw(st.booleans()), draw(st.sampled_from([0.0, 0.1, 0.5])), draw(seeds))


@settings(max_examples=40)
@given(attention_inputs())
def test_attention_matches_numpy_twin(cupy, inputs):
    (b, h, length, keys, d), layout, masked, biased, dropout_p, seed = inputs
    rng = np.random.default_rng(seed)
    q, g = heads(cupy, rng, (b, h, length, d), layout), heads(cupy, rng, (b, h, length, d), "transposed")
    k, v = heads(cupy, rng, (b, h, keys, d), layout), heads(cupy, rng, (b, h, keys, d), "c")
    key_mask = bias = None
    if masked:
        key_mask = rng.random((b, keys)) < 0.7
        key_mask[0] = False  # a sequence with every key masked: out = 0, lse = -inf, no gradient
        key_mask = cupy.asarray(key_mask)
    if biased:
        bias = rng.normal(size=(length, keys)).astype(np.float32)
        bias[:, 0] = -np.inf
        bias = cupy.asarray(bias)
    args = dict(key_mask=key_mask, bias=bias, scale=None, dropout_p=dropout_p, seed=int(rng.integers(2**63)))
    out, lse = cuda_attention.attention_forward(q, k, v, **args)
    expected_out, expected_lse = attention_forward_numpy(q, k, v, **args)
    close(out, expected_out, rtol=1e-4, atol=1e-5)
    close(lse, expected_lse, rtol=1e-4, atol=1e-5)
    if layout == "transposed":  # out is laid out like q (strides along length-1 axes aside)
        assert all(a == b for a, b, n in zip(out.strides, q.strides, q.shape) if n > 1)
    grads = cuda_attention.attention_backward(q, k, v, out, lse, g, **args)
    expected = attention_backward_numpy(q, k, v, expected_out, expected_lse, g, **args)
    for ours, theirs in zip(grads, expected):
        close(ours, theirs, rtol=1e-4, atol=1e-5)


def test_attention_dropout_keeps_exactly_keep_mask(cupy):
    """With q = 0 every probability is 1/S, and with v = identity (S = D) out is the dropped
    probabilities themselves, so out != 0 is the forward's mask; with grad = identity (L = D), dv is
    the transposed dropped probabilities, the mask the backward regenerated."""
    b, h, n, p, seed = 2, 3, 64, 0.3, 2**62 + 12345
    q = cupy.zeros((b, h, n, n), np.float32)
    eye = cupy.broadcast_to(cupy.eye(n, dtype=np.float32), (b, h, n, n))
    out, lse = cuda_attention.attention_forward(q, q, eye, dropout_p=p, seed=seed)
    expected = keep_mask(seed, (b, h, n, n), p, cupy)
    assert 0.2 < float(expected.mean()) < 0.8
    assert ((out != 0) == expected).all()
    np.testing.assert_allclose(out[expected].get(), 1 / n / (1 - p), rtol=1e-6)
    _, _, dv = cuda_attention.attention_backward(q, q, eye, out, lse, eye, dropout_p=p, seed=seed)
    assert ((dv != 0) == expected.transpose(0, 1, 3, 2)).all()


def test_attention_memory_grows_with_length_not_its_square(cupy):
    b, h, n, d = 1, 4, 2048, 64
    rng = np.random.default_rng(5)
    q, k, v, g = (heads(cupy, rng, (b, h, n, d), "c") for _ in range(4))
    cuda_attention.attention_backward(q, k, v, *cuda_attention.attention_forward(q, k, v), g)  # compile, warm up
    pool = cupy.get_default_memory_pool()
    pool.free_all_blocks()
    held = pool.total_bytes()
    outputs = cuda_attention.attention_forward(q, k, v)
    outputs += cuda_attention.attention_backward(q, k, v, *outputs, g)
    cupy.cuda.Device().synchronize()
    extra = pool.total_bytes() - held  # the pool keeps what it allocated: its high-water mark
    needed = sum(a.nbytes for a in outputs) + b * h * n * 4  # out, lse, dq, dk, dv and the backward's delta
    assert extra <= needed + 2**20, (extra, needed)
    assert extra < b * h * n * n * 4 / 4  # a quarter of one (B, H, L, L) float32 matrix
