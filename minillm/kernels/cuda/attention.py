"""Fused attention on the GPU: csrc/cuda/attention.cu, FlashAttention-2 forward and backward.

Same API as minillm/kernels/attention.py (whose docstring has the math). A block of threads owns
one 64-row tile of one (b, h) and walks the other side's tiles through shared memory, so memory
beyond inputs and outputs is the (B, H, L) lse and delta only, never (L, S). The kernels read q,
k, v, out and grad in place with any (b, h, row) strides (BERT's transposed heads included) as
long as D is contiguous; outputs are laid out like the input they belong to.

Head sizes up to 128 run the kernels (compiled for head-size tiles of 32, 64 and 128); larger
ones, and ``return_probs`` (whose (B, H, L, S) output is quadratic anyway), run the NumPy twin on
the GPU. The dispatcher (kernels/attention.py) has checked shapes, dtypes and the dropout arguments;
the wrappers here check only that each array is float32 (key_mask bool) on the GPU.
"""
import math

import numpy

from ... import backend
from .. import dropout
from ..attention import _scale, attention_backward_numpy, attention_forward_numpy
from . import NULL, Kernel, check

TILE = 64          # rows of a tile: TILE in attention.cu
HEAD_TILES = (32, 64, 128)  # the D_TILE each kernel is compiled for


def _threads(d_tile):
    return 16 * (8 if d_tile <= 64 else 16)  # TY * TX of attention.cu's Shape


def _shared(d_tile, head_tiles, vectors=0):
    """Bytes of shared memory: ``head_tiles`` (TILE, D_TILE + 4) tiles, one (TILE, TILE + 4) tile and
    ``vectors`` (TILE,) vectors of floats, as each kernel lays them out."""
    return 4 * (head_tiles * TILE * (d_tile + 4) + TILE * (TILE + 4) + vectors * TILE)


_forward = {d: Kernel("attention", f"attention_forward_{d}", _shared(d, 3)) for d in HEAD_TILES}
_backward_dq = {d: Kernel("attention", f"attention_backward_dq_{d}", _shared(d, 4)) for d in HEAD_TILES}
_backward_dkdv = {d: Kernel("attention", f"attention_backward_dkdv_{d}", _shared(d, 4, 2)) for d in HEAD_TILES}
_backward_dot = Kernel("attention", "attention_backward_dot")


def _on_gpu(kernel, **arrays):
    """A TypeError naming the first of the arrays (None skipped) that is not float32 on the GPU (a
    key_mask: bool): what the kernels read. The dispatcher (kernels/attention.py) has checked shapes."""
    for name, a in arrays.items():
        if a is not None:
            check(kernel, name, a, numpy.bool_ if name == "key_mask" else numpy.float32)


def _contiguous(a):
    return None if a is None else backend.cupy.ascontiguousarray(a)


def _rows_contiguous(x):
    """x itself when its rows of D values are contiguous (any other strides will do), else a copy."""
    return x if x.shape[3] <= 1 or x.strides[3] == x.itemsize else backend.cupy.ascontiguousarray(x)


def _heads(x):
    """A (B, H, N, D) array as the kernels take it: x, then its b, h and row strides in elements."""
    return (x,) + tuple(numpy.int64(s // x.itemsize) for s in x.strides[:3])


def _empty_like(x):
    """An output shaped and laid out like x (a transposed-heads q gives a transposed-heads out), or
    C-contiguous where x's layout is no layout for an output."""
    out = backend.cupy.empty_like(x)
    return out if out.shape[3] <= 1 or out.strides[3] == out.itemsize else backend.cupy.empty(x.shape, x.dtype)


def _scores(q, k, key_mask, bias, scale, dropout_p, seed):
    """The kernels' trailing arguments: key_mask, bias, H, L, S, D, scale, seed, threshold, keep_scale."""
    (_, heads, length, d), keys = q.shape, k.shape[2]
    return (NULL if key_mask is None else key_mask, NULL if bias is None else bias,
            numpy.int32(heads), numpy.int32(length), numpy.int32(keys), numpy.int32(d), numpy.float32(scale),
            numpy.uint64(seed), numpy.uint64(dropout.threshold(dropout_p)),
            numpy.float32(dropout.keep_scale(dropout_p)))


def attention_forward(q, k, v, key_mask=None, bias=None, scale=None, dropout_p=0.0, seed=0, return_probs=False):
    """Returns (out, lse) or, with return_probs, (out, lse, p), p before dropout. q: float32 CuPy
    (B, H, L, D), k, v: (B, H, S, D); key_mask (B, S) bool; bias (L, S); dropout_p in [0, 1] and
    seed in [0, 2^63): dropout on p by the counter-based mask of kernels/dropout.py."""
    _on_gpu("attention", q=q, k=k, v=v, key_mask=key_mask, bias=bias)
    key_mask, bias, scale = _contiguous(key_mask), _contiguous(bias), _scale(q, scale)
    (batch, heads, length, d), keys = q.shape, k.shape[2]
    if return_probs or d > HEAD_TILES[-1]:
        return attention_forward_numpy(q, k, v, key_mask, bias, scale, dropout_p, seed, return_probs)
    cupy = backend.cupy
    q, k, v = _rows_contiguous(q), _rows_contiguous(k), _rows_contiguous(v)
    out = _empty_like(q)
    lse = cupy.empty((batch, heads, length), numpy.float32)
    if out.size == 0 or keys == 0:  # nothing to do, or no keys: every row fully masked
        out[...], lse[...] = 0, -numpy.inf
        return out, lse
    d_tile = next(t for t in HEAD_TILES if d <= t)
    _forward[d_tile]((batch * heads * math.ceil(length / TILE),), (_threads(d_tile),),
                     *_heads(q), *_heads(k), *_heads(v), *_heads(out), lse,
                     *_scores(q, k, key_mask, bias, scale, dropout_p, seed))
    return out, lse


def attention_backward(q, k, v, out, lse, grad, key_mask=None, bias=None, scale=None, dropout_p=0.0, seed=0):
    """Returns (dq, dk, dv) from the forward's inputs (dropout_p and seed included), its out and lse,
    and grad = dL/dout; dq is laid out like q, dk like k, dv like v."""
    _on_gpu("attention backward", q=q, k=k, v=v, out=out, lse=lse, grad=grad, key_mask=key_mask, bias=bias)
    key_mask, bias, scale = _contiguous(key_mask), _contiguous(bias), _scale(q, scale)
    (batch, heads, length, d), keys = q.shape, k.shape[2]
    if d > HEAD_TILES[-1]:
        return attention_backward_numpy(q, k, v, out, lse, grad, key_mask, bias, scale, dropout_p, seed)
    cupy = backend.cupy
    q, k, v, out, grad = (_rows_contiguous(t) for t in (q, k, v, out, grad))
    dq, dk, dv = _empty_like(q), _empty_like(k), _empty_like(v)
    if dq.size == 0 or dk.size == 0:  # no queries or no keys: no gradient flows
        dq[...], dk[...], dv[...] = 0, 0, 0
        return dq, dk, dv
    lse = cupy.ascontiguousarray(lse)
    rows = batch * heads * length
    delta = cupy.empty((batch, heads, length), numpy.float32)  # rowsum(grad * out), one warp a row
    _backward_dot((math.ceil(rows / 8),), (256,), *_heads(out), *_heads(grad), delta,
                  numpy.int32(heads), numpy.int32(length), numpy.int32(d), numpy.int64(rows))
    d_tile = next(t for t in HEAD_TILES if d <= t)
    inputs = _heads(q) + _heads(k) + _heads(v) + _heads(grad) + (lse, delta)
    scores = _scores(q, k, key_mask, bias, scale, dropout_p, seed)
    _backward_dq[d_tile]((batch * heads * math.ceil(length / TILE),), (_threads(d_tile),),
                         *inputs, *_heads(dq), *scores)
    _backward_dkdv[d_tile]((batch * heads * math.ceil(keys / TILE),), (_threads(d_tile),),
                           *inputs, *_heads(dk), *_heads(dv), *scores)
    return dq, dk, dv
