"""Scaled dot-product attention, forward and backward, in the FlashAttention scheme.

    q: (B, H, L, D), k and v: (B, H, S, D)
    s = q k^T * scale + bias + mask        (B, H, L, S) scores
    p = softmax(s) over S                   attention probabilities
    pd = p * m                              dropout (training): m = keep / (1 - dropout_p)
    out = pd v                              (B, H, L, D)

``key_mask`` (B, S) is boolean, True where a key may be attended (a padding mask); masked keys
get -inf. ``bias`` (L, S) is an optional additive float mask (e.g. causal -inf above the diagonal).
Without dropout (dropout_p = 0) m = 1 and pd = p. With it, ``keep`` is the counter-based mask of
kernels/dropout.py, a function of (seed, element index) only, so the backward regenerates it.

The forward keeps only ``lse`` = log sum_j exp(s_ij) per query row (B, H, L), not p nor m. The
backward recomputes p = exp(s - lse) and m, and then, with g = dL/dout:
    dv = pd^T g
    dpd = g v^T
    dp = dpd * m                                                  (dropout backward)
    ds = p * (dp - rowsum(dp * p)) = p * (dp - rowsum(g * out))   (softmax backward)
    dq = ds k * scale,   dk = ds^T q * scale
rowsum(dp * p) = rowsum(dpd * pd) = rowsum(g * out) holds with dropout too, since out = pd v.
A query row whose keys are all masked attends to nothing: out = 0, lse = -inf, gradients 0.
NaN and inf go where torch's attention puts them: the masks are added (a NaN score stays NaN; a
row with a +inf or NaN score is NaN), q k^T * 0 is NaN for an inf in q or k, and at scale 0 dq and
dk are 0 (torch's BLAS multiplies by alpha = 0 without reading ds).
The backward's lse must be the forward's for the same inputs: exp(s - lse) is then a probability,
and exactly the forward's when the same twin recomputes s. Another lse gives the gradients of no
function, which the twins need not agree on (at large scores exp(s - lse) is their rounding of s).
The NumPy twin below builds whole (L, S) matrices: clear, but memory grows with L^2; the compiled
twin (csrc/attention.pyx, after the input checks here) walks key blocks so memory grows with L only,
and so does the CUDA twin (csrc/cuda/attention.cu, through minillm/kernels/cuda/attention.py).
"""
import numpy

from .. import backend
from . import blas, dispatch, dropout
from .softmax import stable_softmax


def attention_forward_numpy(q, k, v, key_mask=None, bias=None, scale=None, dropout_p=0.0, seed=0,
                            return_probs=False):
    """Returns (out, lse) or, with return_probs, (out, lse, p); p is before dropout."""
    xp = backend.array_module(q)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    s = _scores(q, k, key_mask, bias, scale)
    p, total, row_max = stable_softmax(s)
    with backend.numpy.errstate(divide="ignore"):
        lse = (xp.log(total) + row_max)[..., 0]
    m = _dropout_scale(p, dropout_p, seed)
    out = xp.matmul(p if m is None else p * m, v)
    return (out, lse, p) if return_probs else (out, lse)


def attention_backward_numpy(q, k, v, out, lse, grad, key_mask=None, bias=None, scale=None,
                             dropout_p=0.0, seed=0):
    """Returns (dq, dk, dv) from the forward's inputs, out, lse and g = dL/dout."""
    xp = backend.array_module(q)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    s = _scores(q, k, key_mask, bias, scale)
    dead = (lse == -xp.inf)[..., None]  # fully masked rows: p = 0 (a NaN lse, a NaN row's, stays NaN)
    p = xp.where(dead, 0, xp.exp(s - xp.where(dead, 0, lse[..., None])))
    m = _dropout_scale(p, dropout_p, seed)
    dv = xp.matmul(xp.swapaxes(p if m is None else p * m, -1, -2), grad)
    dp = xp.matmul(grad, xp.swapaxes(v, -1, -2))
    if m is not None:
        dp = dp * m
    ds = p * (dp - (grad * out).sum(axis=-1, keepdims=True))
    return _gemm(ds, k, scale), _gemm(xp.swapaxes(ds, -1, -2), q, scale), dv


def _gemm(a, b, alpha):
    """alpha (a b) as torch's attention backward gives it (BLAS's gemm): exactly 0 when alpha is 0 or
    the inner axis is empty (no queries, no keys), where NumPy's product times alpha would be
    0 * inf = NaN for an inf or NaN in a or b, or an infinite alpha."""
    xp = backend.array_module(a)
    product = xp.matmul(a, b)
    if alpha == 0 or a.shape[-1] == 0:
        return xp.zeros_like(product)
    return product * a.dtype.type(alpha)


def _scores(q, k, key_mask, bias, scale):
    xp = backend.array_module(q)
    s = xp.matmul(q, xp.swapaxes(k, -1, -2)) * q.dtype.type(scale)
    if bias is not None:
        s = s + bias
    if key_mask is not None:  # added, as torch and the compiled twin add it: a NaN score stays NaN
        s = s + _key_bias(key_mask, q)[:, None, None, :]
    return s


def _key_bias(key_mask, q):
    """key_mask (B, S) bool as an additive bias (B, S) of q's dtype: 0 where True, -inf where False."""
    xp = backend.array_module(q)
    return None if key_mask is None else xp.where(key_mask, q.dtype.type(0), q.dtype.type(-xp.inf))


def _dropout_scale(p, dropout_p, seed):
    """m = keep / (1 - dropout_p), the same shape as p (B, H, L, S), or None without dropout."""
    if dropout_p == 0:
        return None
    xp = backend.array_module(p)
    keep = dropout.keep_mask(seed, p.shape, dropout_p, xp)
    return keep * p.dtype.type(dropout.keep_scale(dropout_p))


def check_shapes(q, k, v):
    """A ValueError naming the shapes unless they are (B, H, L, D), (B, H, S, D), (B, H, S, D), D >= 1."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.ndim != 4:
            raise ValueError(f"attention: {name} must be (B, H, L, D), got shape {t.shape}")
    if k.shape != v.shape or k.shape[:2] != q.shape[:2] or k.shape[3] != q.shape[3]:
        raise ValueError(f"attention: shapes q {q.shape}, k {k.shape}, v {v.shape} do not fit "
                         "(B, H, L, D), (B, H, S, D), (B, H, S, D)")
    if q.shape[3] == 0:
        raise ValueError(f"attention: the head dimension D must be at least 1, got shapes q {q.shape}, k {k.shape}")


def _check(q, k, v, key_mask, bias):
    """A TypeError or ValueError naming the argument unless q, k, v are float arrays of one dtype and
    fitting shapes, key_mask (B, S) bool and bias (L, S) of q's dtype (each or None), all in one place."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        dispatch.check_float("attention", name, t)
        if t.dtype != q.dtype:
            raise TypeError(f"attention: {name} dtype {t.dtype} differs from q dtype {q.dtype}")
    dispatch.one_place("attention", q, k=k, v=v, key_mask=key_mask, bias=bias)
    check_shapes(q, k, v)
    (batch, _, length, _), keys = q.shape, k.shape[2]
    if key_mask is not None:
        if key_mask.dtype != bool:
            raise TypeError(f"attention: key_mask must be bool (True = attend), got {key_mask.dtype}")
        if key_mask.shape != (batch, keys):
            raise ValueError(f"attention: key_mask must have shape (B, S) = {(batch, keys)}, got {key_mask.shape}")
    if bias is not None:
        if bias.dtype != q.dtype:
            raise TypeError(f"attention: bias dtype {bias.dtype} differs from q dtype {q.dtype}")
        if bias.shape != (length, keys):
            raise ValueError(f"attention: bias must have shape (L, S) = {(length, keys)}, got {bias.shape}")


@dispatch.kernel("attention", numpy=attention_forward_numpy)
def attention_forward(q, k, v, key_mask=None, bias=None, scale=None, dropout_p=0.0, seed=0,
                      return_probs=False):
    """Returns (out, lse) or, with return_probs, (out, lse, p), p before dropout. q: (B, H, L, D),
    k, v: (B, H, S, D); out is laid out in memory like q (a transposed-heads q gives a
    transposed-heads out). dropout_p in [0, 1] and seed in [0, 2^63): the dropout on p (training)."""
    dropout_p, seed = dropout.check(dropout_p, seed, "attention")
    _check(q, k, v, key_mask, bias)
    return q, k, v, key_mask, bias, _scale(q, scale), dropout_p, seed, return_probs


@dispatch.kernel("attention", numpy=attention_backward_numpy)
def attention_backward(q, k, v, out, lse, grad, key_mask=None, bias=None, scale=None, dropout_p=0.0,
                       seed=0):
    """Returns (dq, dk, dv) from the forward's inputs (dropout_p and seed included), out, lse and
    g = dL/dout; dq is laid out like q, dk like k, dv like v."""
    dropout_p, seed = dropout.check(dropout_p, seed, "attention backward")
    _check(q, k, v, key_mask, bias)
    check_saved("attention backward", q, out=(out, q.shape), lse=(lse, q.shape[:3]), grad=(grad, q.shape))
    return q, k, v, out, lse, grad, key_mask, bias, _scale(q, scale), dropout_p, seed


def check_saved(kernel, q, **arrays):
    """A ValueError naming the first of ``arrays`` (name: (array, shape)), the forward's out and lse and
    the gradient, that is not of q's dtype and its shape; all where q is."""
    dispatch.one_place(kernel, q, **{name: array for name, (array, _) in arrays.items()})
    for name, (array, shape) in arrays.items():
        if array.dtype != q.dtype or array.shape != shape:
            raise ValueError(f"{kernel}: {name} must be {q.dtype} of shape {shape}, got {array.dtype} {array.shape}")


def _scale(q, scale):
    """The scores' scale: 1 / sqrt(D) unless given."""
    return q.shape[-1] ** -0.5 if scale is None else float(scale)


def _blas_readable(x):
    """Whether BLAS can read x's (rows, D) matrices in place: unit stride along D, a row stride of
    at least D items (reversed, broadcast or strided rows are not)."""
    row, item = x.strides[-2], x.itemsize
    return x.strides[-1] == item and row % item == 0 and x.shape[-1] <= row // item < 2**31


def _rows_contiguous(x):
    """x itself when BLAS can read it in place, else a C-contiguous copy."""
    return x if _blas_readable(x) else numpy.ascontiguousarray(x)


def _empty_like(x):
    """An output shaped like x and laid out like it (so a transposed-heads q gives a transposed-heads
    out), or C-contiguous where x's layout is no layout for an output (broadcast axes)."""
    out = numpy.empty_like(x)
    return out if _blas_readable(out) else numpy.empty(x.shape, x.dtype)


def _block(keys):
    """Query rows per block. Bigger blocks make bigger, faster GEMMs (128 rows run the backward 1.4x
    faster than 32 at L=128 and 512), but the scratch is 2 * rows * S values per thread: past
    S = 512 the rows shrink (to 32 at S = 2048, 14% slower than 128 there) so that it stays at
    128K values, 512 KiB in float32, and attention at L=2048 takes less memory than torch's."""
    return int(min(128, max(32, 2**16 // max(keys, 1))))


def _dropout_args(dropout_p, seed):
    """The compiled twin's dropout argument: None, or (seed, threshold, keep scale)."""
    if dropout_p == 0:
        return None
    return seed, dropout.threshold(dropout_p), dropout.keep_scale(dropout_p)




@attention_forward.compiled
def _attention_forward_compiled(compiled, q, k, v, key_mask, bias, scale, dropout_p, seed, return_probs):
    q, k, v = _rows_contiguous(q), _rows_contiguous(k), _rows_contiguous(v)
    key_bias, bias = _key_bias(key_mask, q), None if bias is None else numpy.ascontiguousarray(bias)
    (batch, heads, length, _), keys = q.shape, k.shape[2]
    out = _empty_like(q)
    lse = numpy.empty((batch, heads, length), q.dtype)
    probs = numpy.zeros((batch, heads, length, keys), q.dtype) if return_probs else None
    if out.size == 0 or keys == 0:  # nothing to do, or no keys: every row fully masked
        out[...], lse[...] = 0, -numpy.inf
    else:
        block = _block(keys)
        scratch = numpy.empty((dispatch.threads(), block * (keys + 1)), q.dtype)  # scores, row scales
        blas.use_threads(1)  # one BLAS call per (batch, head) pair, inside OpenMP's pool
        compiled.forward(q, k, v, key_bias, bias, scale, _dropout_args(dropout_p, seed), out, lse, probs,
                         scratch, block)
    return (out, lse, probs) if return_probs else (out, lse)


@attention_backward.compiled
def _attention_backward_compiled(compiled, q, k, v, out, lse, grad, key_mask, bias, scale, dropout_p, seed):
    q, k, v = _rows_contiguous(q), _rows_contiguous(k), _rows_contiguous(v)
    key_bias, bias = _key_bias(key_mask, q), None if bias is None else numpy.ascontiguousarray(bias)
    out, grad, lse = _rows_contiguous(out), _rows_contiguous(grad), numpy.ascontiguousarray(lse)
    dq, dk, dv = _empty_like(q), _empty_like(k), _empty_like(v)
    if dq.size == 0 or dk.size == 0:  # no queries or no keys: no gradient flows
        dq[...], dk[...], dv[...] = 0, 0, 0
    else:
        block = _block(k.shape[2])
        scratch = numpy.empty((dispatch.threads(), 2 * block * k.shape[2]), q.dtype)
        blas.use_threads(1)
        compiled.backward(q, k, v, out, lse, grad, key_bias, bias, scale, _dropout_args(dropout_p, seed),
                          dq, dk, dv, scratch, block)
        zero_at_zero_scale(scale, dq, dk)
    return dq, dk, dv


def zero_at_zero_scale(scale, dq, dk):
    """The twin's _gemm for the compiled backward: dq = dk = 0 at scale 0, where scipy's OpenBLAS
    computes 0 * NaN = NaN for alpha = 0 on small products."""
    if scale == 0:
        dq[...], dk[...] = 0, 0
