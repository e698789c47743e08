"""A counter-based dropout mask: element i is kept or dropped by a hash of (seed, i), nothing else.

Why not draw a random array, as dropout usually does? The fused attention never holds the (B, H, L, S)
probabilities at once (kernels/attention.py), so it cannot hold a mask that size either: that would
bring back the memory the fusion saves. Its backward needs the forward's mask again, and with a
counter-based generator it simply recomputes it: the mask is a pure function of the seed and each
element's index, so any twin (this NumPy one, the Cython kernel's csrc/dropout_mask.h, the CUDA
kernel), any block order and any thread count give the same bits. Only the seed, one integer, is kept
for the backward. (This is how FlashAttention and torch's fused attention drop on GPUs, with the
Philox generator; the hash here is smaller and enough for dropout.)

The scheme, all arithmetic on unsigned 64-bit integers, mod 2^64. For the probabilities p of shape
(B, H, L, S), element (b, h, i, j) has the logical index ((b H + h) L + i) S + j, which does not
depend on how p is laid out in memory, and
    z = seed + (index + 1) * 0x9E3779B97F4A7C15
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
    z = (z ^ (z >> 27)) * 0x94D049BB133111EB
    bits = (z ^ (z >> 31)) >> 32                   splitmix64's finalizer: 32 uniform bits
    kept  iff  bits >= floor(p * 2^32)              so P(dropped) = floor(p 2^32) / 2^32 ~ p
Kept values are scaled by 1 / (1 - p), as torch's dropout, so the expectation is unchanged. p = 1
keeps nothing (the threshold 2^32 is above every 32-bit value) and scales by 0, never by inf.

The Dropout op (minillm/ops/nn.py) drops with the same mask, ``apply_dropout`` below: its backward
hashes the same indices again instead of keeping a (T, E) mask from the forward, and the compiled
twin (csrc/dropout.pyx) makes the mask and applies it in one pass. On a GPU the NumPy twin runs in
CuPy: its elementwise ops are the kernel there.
"""
import numbers

import numpy

from .. import backend
from . import dispatch

_GOLDEN, _MIX1, _MIX2 = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB


def check(p, seed, caller="keep_mask"):
    """(p, seed) as float and int, or a TypeError/ValueError naming ``caller``: the dropout
    probability p must be in [0, 1], the seed an int in [0, 2^63)."""
    if isinstance(p, bool) or not isinstance(p, numbers.Real):
        raise TypeError(f"{caller}: the dropout probability must be a real number, got {type(p).__name__} {p!r}")
    if not 0 <= p <= 1:
        raise ValueError(f"{caller}: the dropout probability must be in [0, 1], got {p!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"{caller}: the dropout seed must be an int, got {type(seed).__name__} {seed!r}")
    if not 0 <= seed < 2**63:
        raise ValueError(f"{caller}: the dropout seed must be in [0, 2^63), got {seed}")
    return float(p), int(seed)


def threshold(p):
    """floor(p * 2^32): an element is kept iff its 32 bits are at least this (2^32 when p = 1)."""
    return int(p * 2**32)  # exact: p * 2^32 only shifts p's exponent


def keep_scale(p):
    """What a kept element is multiplied by: 1 / (1 - p), and 0 when p = 1 (nothing is kept)."""
    return 0.0 if p == 1 else 1 / (1 - p)


def keep_mask(seed, shape, p, xp=numpy):
    """The boolean mask (True = kept) of dropout with probability p over an array of ``shape``,
    e.g. (B, H, L, S), elements numbered in C order. xp: numpy or cupy, where the mask is made."""
    p, seed = check(p, seed)
    count = int(numpy.prod(shape, dtype=numpy.int64))
    z = xp.arange(1, count + 1, dtype=xp.uint64)  # index + 1; uint64 arrays wrap mod 2^64
    z *= xp.uint64(_GOLDEN)
    z += xp.uint64(seed)
    z ^= z >> xp.uint64(30)
    z *= xp.uint64(_MIX1)
    z ^= z >> xp.uint64(27)
    z *= xp.uint64(_MIX2)
    z ^= z >> xp.uint64(31)
    return ((z >> xp.uint64(32)) >= xp.uint64(threshold(p))).reshape(shape)


def apply_dropout_numpy(x, p, seed):
    xp = backend.array_module(x)
    return x * (keep_mask(seed, x.shape, p, xp) * x.dtype.type(keep_scale(p)))


@dispatch.kernel("dropout", numpy=apply_dropout_numpy, cuda=False)
def apply_dropout(x, p, seed):
    """x * m, elementwise: m = 1 / (1 - p) where keep_mask(seed, x.shape, p) keeps an element, 0 where
    it drops it (so a NaN stays NaN, as in torch's x * mask). x float32 or float64 of any shape. The
    backward of dropout is the same call on the gradient, with the same p and seed."""
    dispatch.check_float("dropout", "input", x)
    p, seed = check(p, seed, "dropout")
    return x, p, seed


@apply_dropout.compiled
def _apply_dropout_compiled(compiled, x, p, seed):
    flat = numpy.ascontiguousarray(x).reshape(-1)
    y = numpy.empty_like(flat)
    compiled.apply(flat, y, seed, threshold(p), keep_scale(p))
    return y.reshape(x.shape)
