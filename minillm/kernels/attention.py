"""Scaled dot-product attention, forward and backward, in the FlashAttention scheme.

    q: (B, H, L, D), k and v: (B, H, S, D)
    s = q k^T * scale + bias + mask        (B, H, L, S) scores
    p = softmax(s) over S                   attention probabilities
    out = p v                               (B, H, L, D)

``key_mask`` (B, S) is boolean, True where a key may be attended (a padding mask); masked keys
get -inf. ``bias`` (L, S) is an optional additive float mask (e.g. causal -inf above the diagonal).

The forward keeps only ``lse`` = log sum_j exp(s_ij) per query row (B, H, L), not p. The backward
recomputes p = exp(s - lse) and then, with g = dL/dout:
    dv = p^T g
    dp = g v^T
    ds = p * (dp - rowsum(dp * p)) = p * (dp - rowsum(g * out))   (softmax backward)
    dq = ds k * scale,   dk = ds^T q * scale
A query row whose keys are all masked attends to nothing: out = 0, lse = -inf, gradients 0.
The NumPy twin below builds whole (L, S) matrices: clear, but memory grows with L^2; the compiled
twin walks key blocks so memory grows with L only.
"""
from .. import backend


def _scores(q, k, key_mask, bias, scale):
    xp = backend.array_module(q)
    s = xp.matmul(q, xp.swapaxes(k, -1, -2)) * q.dtype.type(scale)
    if bias is not None:
        s = s + bias
    if key_mask is not None:
        s = xp.where(key_mask[:, None, None, :], s, -xp.inf)
    return s


def attention_forward_numpy(q, k, v, key_mask=None, bias=None, scale=None, return_probs=False):
    """Returns (out, lse) or, with return_probs, (out, lse, p)."""
    xp = backend.array_module(q)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    s = _scores(q, k, key_mask, bias, scale)
    row_max = s.max(axis=-1, keepdims=True)
    row_max = xp.where(xp.isfinite(row_max), row_max, 0)
    e = xp.exp(s - row_max)
    total = e.sum(axis=-1, keepdims=True)
    p = e / xp.where(total == 0, 1, total)
    with backend.numpy.errstate(divide="ignore"):
        lse = (xp.log(total) + row_max)[..., 0]
    out = xp.matmul(p, v)
    return (out, lse, p) if return_probs else (out, lse)


def attention_backward_numpy(q, k, v, out, lse, grad, key_mask=None, bias=None, scale=None):
    """Returns (dq, dk, dv) from the forward's inputs, out, lse and g = dL/dout."""
    xp = backend.array_module(q)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    s = _scores(q, k, key_mask, bias, scale)
    finite = xp.isfinite(lse)[..., None]
    p = xp.where(finite, xp.exp(s - xp.where(finite, lse[..., None], 0)), 0)
    dv = xp.matmul(xp.swapaxes(p, -1, -2), grad)
    dp = xp.matmul(grad, xp.swapaxes(v, -1, -2))
    ds = p * (dp - (grad * out).sum(axis=-1, keepdims=True))
    dq = xp.matmul(ds, k) * q.dtype.type(scale)
    dk = xp.matmul(xp.swapaxes(ds, -1, -2), q) * q.dtype.type(scale)
    return dq, dk, dv


def attention_forward(q, k, v, key_mask=None, bias=None, scale=None, return_probs=False):
    return attention_forward_numpy(q, k, v, key_mask, bias, scale, return_probs)


def attention_backward(q, k, v, out, lse, grad, key_mask=None, bias=None, scale=None):
    return attention_backward_numpy(q, k, v, out, lse, grad, key_mask, bias, scale)
