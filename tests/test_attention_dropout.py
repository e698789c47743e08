"""Dropout inside the fused attention: the counter-based mask (minillm/kernels/dropout.py) against
its formula and its statistics, the compiled kernel's mask bit for bit against the NumPy one, out
and gradients against torch's autograd through the same mask, gradcheck, the attention module in
training (its seed comes from minillm's generator), and memory: no (B, H, L, S) array is kept."""
import tracemalloc
import unittest.mock

import numpy as np
import pytest

import minillm as mm
from minillm import kernels, ops, random
from minillm.kernels import attention as attention_module
from minillm.kernels.attention import attention_backward, attention_forward, attention_backward_numpy
from minillm.kernels.dropout import keep_mask
from minillm.nn.attention import MultiHeadAttention
from minillm.tensor import Tensor
from minillm.testing import gradcheck

TOL = {np.float32: dict(rtol=1e-4, atol=1e-5), np.float64: dict(rtol=1e-10, atol=1e-11)}


pytestmark = pytest.mark.usefixtures("compiled_kernels")  # conftest.py: the compiled twins, whatever MINILLM_KERNELS says


def splitmix_bits(seed, index):
    """The spec's 32 bits, in Python integers (no NumPy wrap-around to trust)."""
    mask64 = 2**64 - 1
    z = (seed + (index + 1) * 0x9E3779B97F4A7C15) & mask64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask64
    return (z ^ (z >> 31)) >> 32


def test_keep_mask_is_the_formula():
    shape, seed, p = (2, 3, 4, 5), 2**63 - 7, 0.3
    expected = np.array([splitmix_bits(seed, i) >= int(p * 2**32) for i in range(120)]).reshape(shape)
    np.testing.assert_array_equal(keep_mask(seed, shape, p), expected)
    assert keep_mask(seed, shape, 0.0).all() and not keep_mask(seed, shape, 1.0).any()


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_kept_fraction_is_one_minus_p(p):
    n = 2**22
    kept = keep_mask(12345, (4, 8, 256, 512), p)
    sigma = (p * (1 - p) / n) ** 0.5
    assert abs(kept.mean() - (1 - p)) < 5 * sigma
    # no pattern along the key axis or between heads: each column and head keeps 1 - p too
    assert abs(kept.mean(axis=(0, 1, 2)) - (1 - p)).max() < 6 * (p * (1 - p) / (n / 512)) ** 0.5
    assert abs(kept.mean(axis=(0, 2, 3)) - (1 - p)).max() < 6 * (p * (1 - p) / (n / 8)) ** 0.5


def test_different_seeds_give_independent_masks():
    p, shape = 0.5, (2, 4, 128, 128)
    a, b = keep_mask(0, shape, p), keep_mask(1, shape, p)
    n = a.size
    assert abs((a == b).mean() - 0.5) < 5 * (0.25 / n) ** 0.5  # agree as often as two coin flips
    assert not (keep_mask(0, shape, p) ^ a).any()  # the same seed, the same mask


def mask_of_compiled_kernel(q, seed, p, key_mask=None, block=None):
    """The keep mask the compiled kernel used, read off its forward and its backward.

    k = 0 makes every probability 1/S (or 1/kept keys), and v = g = identity (L = S = D) makes
    out = p * m and dv = (p * m)^T: an element is kept iff it is nonzero there."""
    b, h, n, d = q.shape
    assert n == d
    eye = np.broadcast_to(np.eye(n, dtype=q.dtype), q.shape)
    k = np.zeros_like(q)
    own_block = attention_module._block
    with unittest.mock.patch.object(attention_module, "_block", lambda keys: block or own_block(keys)):
        out, lse = attention_forward(q, k, eye, key_mask, dropout_p=p, seed=seed)
        _, _, dv = attention_backward(q, k, eye, out, lse, eye, key_mask, dropout_p=p, seed=seed)
    return out != 0, np.swapaxes(dv, -1, -2) != 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("block", [None, 3])
def test_compiled_kernel_drops_exactly_keep_mask(dtype, block):
    rng = np.random.default_rng(0)
    shape, seed, p = (2, 3, 19, 19), 987654321987, 0.4
    q = rng.normal(size=shape).astype(dtype)
    forward, backward = mask_of_compiled_kernel(q, seed, p, block=block)
    expected = keep_mask(seed, shape, p)
    np.testing.assert_array_equal(forward, expected)
    np.testing.assert_array_equal(backward, expected)
    key_mask = rng.random((2, 19)) < 0.6
    forward, backward = mask_of_compiled_kernel(q, seed, p, key_mask, block)
    np.testing.assert_array_equal(forward, expected & key_mask[:, None, None, :])
    np.testing.assert_array_equal(backward, expected & key_mask[:, None, None, :])


def test_mask_does_not_depend_on_memory_layout():
    """BERT's heads (a transposed view made by the module's split_heads) and a contiguous copy of
    them drop the same elements: the mask follows the logical index (b, h, i, j)."""
    rng = np.random.default_rng(1)
    b, n, heads = 2, 16, 4
    module = MultiHeadAttention(heads * n, heads)
    q = module.split_heads(Tensor(rng.normal(size=(b, n, heads * n)).astype(np.float32))).data
    assert not q.flags.c_contiguous
    transposed, _ = mask_of_compiled_kernel(q, 77, 0.3)
    contiguous, _ = mask_of_compiled_kernel(np.ascontiguousarray(q), 77, 0.3)
    np.testing.assert_array_equal(transposed, contiguous)
    np.testing.assert_array_equal(transposed, keep_mask(77, q.shape, 0.3))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_dropout_matches_torch_through_the_same_mask(torch, dtype):
    rng = np.random.default_rng(2)
    b, h, length, keys, d, p, seed, scale = 2, 3, 33, 21, 8, 0.3, 2024, 0.4
    q, g = (rng.normal(size=(b, length, h, d)).astype(dtype).transpose(0, 2, 1, 3) for _ in range(2))
    k, v = (rng.normal(size=(b, keys, h, d)).astype(dtype).transpose(0, 2, 1, 3) for _ in range(2))
    key_mask = rng.random((b, keys)) < 0.8
    key_mask[:, 0] = True  # no fully masked row (torch's softmax gives NaN there)
    keep = keep_mask(seed, (b, h, length, keys), p)
    tq, tk, tv = (torch.tensor(np.ascontiguousarray(a), requires_grad=True) for a in (q, k, v))
    additive = torch.tensor(np.where(key_mask, 0, -np.inf)[:, None, None, :].astype(dtype))
    probs = torch.softmax(tq @ tk.transpose(-1, -2) * scale + additive, -1)
    expected = probs * torch.tensor(keep) / (1 - p) @ tv
    expected.backward(torch.tensor(np.ascontiguousarray(g)))
    out, lse = attention_forward(q, k, v, key_mask, None, scale, p, seed)
    np.testing.assert_allclose(out, expected.detach().numpy(), **TOL[dtype])
    grads = attention_backward(q, k, v, out, lse, g, key_mask, None, scale, p, seed)
    for ours, theirs in zip(grads, (tq, tk, tv)):
        np.testing.assert_allclose(ours, theirs.grad.numpy(), **TOL[dtype])


def test_everything_dropped_gives_zeros():
    rng = np.random.default_rng(3)
    q, k, v, g = (rng.normal(size=(1, 2, 5, 4)) for _ in range(4))
    for mode in ("compiled", "numpy"):
        with kernels.use(mode):
            out, lse = attention_forward(q, k, v, dropout_p=1.0, seed=1)
            grads = attention_backward(q, k, v, out, lse, g, dropout_p=1.0, seed=1)
        assert (out == 0).all() and np.isfinite(lse).all(), mode
        assert all((grad == 0).all() for grad in grads), mode


def test_backward_validates_dropout_arguments():
    q = np.ones((1, 1, 2, 3))
    out, lse = attention_forward(q, q, q)
    for mode in ("compiled", "numpy"):
        with kernels.use(mode), pytest.raises(ValueError, match="attention backward: the dropout probability"):
            attention_backward(q, q, q, out, lse, q, dropout_p=-0.1)
        with kernels.use(mode), pytest.raises(TypeError, match="attention backward: the dropout seed"):
            attention_backward(q, q, q, out, lse, q, dropout_p=0.1, seed=None)
    with pytest.raises(ValueError, match="keep_mask: the dropout seed"):
        keep_mask(2**63, (2, 2), 0.1)


def test_gradcheck_with_dropout():
    """A fixed seed fixes the mask, and attention is then differentiable."""
    rng = np.random.default_rng(4)
    q, k, v = rng.normal(size=(2, 2, 5, 3)), rng.normal(size=(2, 2, 4, 3)), rng.normal(size=(2, 2, 4, 3))
    key_mask = np.array([[True, False, True, True], [True, True, True, True]])
    bias = rng.normal(size=(5, 4))
    gradcheck(lambda q, k, v: ops.attention(q, k, v, key_mask, bias, 0.6, dropout_p=0.3, seed=99), [q, k, v])
    with unittest.mock.patch.object(attention_module, "_block", lambda keys: 2):  # several query blocks
        gradcheck(lambda q, k, v: ops.attention(q, k, v, dropout_p=0.3, seed=7), [q, k, v])


def test_module_draws_each_seed_from_minillm_generator():
    """In training, each call drops with a fresh seed from minillm's generator: mm.manual_seed
    repeats it, and it is the seed the module passes to the kernel. Eval mode does not drop."""
    rng = np.random.default_rng(5)
    module = MultiHeadAttention(12, 3, dropout=0.2)
    x = Tensor(rng.normal(size=(2, 6, 12)).astype(np.float32))
    key_mask = np.array([[1, 1, 1, 1, 0, 0], [1] * 6])
    mm.manual_seed(0)
    first, _ = module(x, key_mask)
    second, _ = module(x, key_mask)
    assert not np.array_equal(first.numpy(), second.numpy())
    mm.manual_seed(0)
    seed = random.draw_seed()
    mm.manual_seed(0)
    np.testing.assert_array_equal(module(x, key_mask)[0].numpy(), first.numpy())
    q, k, v = (module.split_heads(proj(x)).data for proj in (module.query, module.key, module.value))
    expected, _ = attention_forward(q, k, v, key_mask != 0, None, 0.5, 0.2, seed)
    np.testing.assert_allclose(first.numpy(), expected.transpose(0, 2, 1, 3).reshape(2, 6, 12), rtol=1e-6)
    module.eval()
    state = random.get_state()
    plain, _ = module(x, key_mask)
    assert random.get_state() == state  # no dropout, no draw
    expected, _ = attention_forward(q, k, v, key_mask != 0, None, 0.5)
    np.testing.assert_allclose(plain.numpy(), expected.transpose(0, 2, 1, 3).reshape(2, 6, 12), rtol=1e-6)


def saved_arrays(tensor):
    """Every array that a Function in tensor's graph saved for backward."""
    seen, stack, arrays = set(), [tensor], []
    while stack:
        fn = stack.pop()._ctx
        if fn is None or id(fn) in seen:
            continue
        seen.add(id(fn))
        arrays += [a for a in fn.saved if hasattr(a, "nbytes")]
        stack += [t for t in fn.inputs if isinstance(t, Tensor)]
    return arrays


def test_training_keeps_no_attention_matrix():
    """BERT-style attention in training with dropout saves nothing of size (B, H, L, L) for backward."""
    b, heads, length, d = 2, 2, 256, 8
    module = MultiHeadAttention(heads * d, heads, dropout=0.1)
    x = Tensor(np.random.default_rng(6).normal(size=(b, length, heads * d)).astype(np.float32), requires_grad=True)
    context, _ = module(x)
    saved = saved_arrays(context)
    assert saved and max(a.size for a in saved) <= b * length * heads * d  # (B, L, E) at most
    context.sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape


def test_attention_with_dropout_never_allocates_the_matrix():
    """Forward + backward with dropout allocate less than one (B, H, L, L) float32 array (32 MiB
    here): the kernel's scratch is at most 512 KiB per thread, and no mask is stored."""
    b, heads, length, d = 1, 2, 2048, 8
    rng = np.random.default_rng(7)
    q, k, v = (Tensor(rng.normal(size=(b, heads, length, d)).astype(np.float32), requires_grad=True)
               for _ in range(3))
    g = np.ones((b, heads, length, d), np.float32)
    ops.attention(q, k, v, dropout_p=0.1, seed=3).backward(g)  # warm up: thread pool, BLAS buffers
    tracemalloc.start()
    try:
        ops.attention(q, k, v, dropout_p=0.1, seed=3).backward(g)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < b * heads * length * length * 4


def test_attention_on_a_gpu_drops_the_same(cupy):
    """keep_mask made by CuPy, and attention on CuPy arrays, drop what the host drops."""
    rng = np.random.default_rng(8)
    q, k, v, g = (rng.normal(size=(2, 2, 9, 4)).astype(np.float32) for _ in range(4))
    on_gpu = keep_mask(5, (2, 2, 9, 9), 0.25, cupy)
    np.testing.assert_array_equal(cupy.asnumpy(on_gpu), keep_mask(5, (2, 2, 9, 9), 0.25))
    out, lse = attention_forward(*(cupy.asarray(a) for a in (q, k, v)), dropout_p=0.25, seed=5)
    expected, e_lse = attention_forward(q, k, v, dropout_p=0.25, seed=5)
    np.testing.assert_allclose(cupy.asnumpy(out), expected, rtol=1e-4, atol=1e-5)
    grads = attention_backward(*(cupy.asarray(a) for a in (q, k, v)), out, lse, cupy.asarray(g),
                               dropout_p=0.25, seed=5)
    for ours, theirs in zip(grads, attention_backward_numpy(q, k, v, expected, e_lse, g, dropout_p=0.25, seed=5)):
        np.testing.assert_allclose(cupy.asnumpy(ours), theirs, rtol=1e-4, atol=1e-5)
