"""Attention over a variable-length batch: the sequences' rows one after another, no padding.

    q, k, v: (N, E), E = H * D      the rows of B sequences, sequence b in rows cu_seqlens[b] : cu_seqlens[b + 1]
    out: (N, E)                     each row attends to its own sequence's keys only
    lse: (H, N)                     log sum_j exp(s_ij) per head and row, for the backward

``cu_seqlens`` (B + 1,) holds the cumulative lengths (0, n_0, n_0 + n_1, ..., N), as in
FlashAttention's varlen functions. ``key_mask`` (N,) bool, True where a row may be attended as a key,
masks rows kept as queries only (a labelled padding position). ``seeds`` (B,): sequence b drops its
(H, n_b, n_b) probabilities with the mask of kernels/dropout.py under seeds[b].

The definition, the NumPy twin below, is the attention kernel (kernels/attention.py) on each
sequence in turn, viewed as a batch of one: (1, H, n_b, D) in place of the sequence's rows. The
compiled twin (csrc/attention.pyx, forward_varlen) runs every (sequence, head) pair as one task of
one parallel region, reading its rows in place (row stride E), where the twin makes a call per
sequence: no copy, no zeros, no mask for padding, and each sequence costs its own n_b^2. On a GPU
the twin's per-sequence calls run the CUDA attention kernel: B launches where a varlen CUDA kernel
would make one (not written yet).
"""
import numpy

from .. import backend
from . import blas, dispatch, dropout
from .attention import (_block, _dropout_args, _key_bias, _scale, attention_backward, attention_forward, check_saved,
                        zero_at_zero_scale)


def _heads(rows, lo, hi, heads):
    """Rows lo:hi of (N, E) as a batch of one, (1, H, n, D): a view."""
    return rows[lo:hi].reshape(1, hi - lo, heads, -1).transpose(0, 2, 1, 3)


def _rows(part):
    """(1, H, n, D) -> (n, E)."""
    return part[0].transpose(1, 0, 2).reshape(part.shape[2], -1)


def _sequences(cu_seqlens):
    """(b, lo, hi) for every sequence that has rows."""
    return [(b, int(lo), int(hi)) for b, (lo, hi) in enumerate(zip(cu_seqlens[:-1], cu_seqlens[1:])) if hi > lo]


def _key_mask(key_mask, lo, hi):
    return None if key_mask is None else key_mask[None, lo:hi]


def attention_varlen_forward_numpy(q, k, v, cu_seqlens, heads, key_mask=None, scale=None, dropout_p=0.0, seeds=None):
    """Returns (out, lse)."""
    xp = backend.array_module(q)
    out, lse = xp.zeros_like(q), xp.full((heads, q.shape[0]), -numpy.inf, q.dtype)
    for b, lo, hi in _sequences(cu_seqlens):
        seed = 0 if seeds is None else int(seeds[b])
        part, part_lse = attention_forward(*(_heads(t, lo, hi, heads) for t in (q, k, v)), _key_mask(key_mask, lo, hi),
                                           None, scale, dropout_p, seed)
        out[lo:hi], lse[:, lo:hi] = _rows(part), part_lse[0]
    return out, lse


def attention_varlen_backward_numpy(q, k, v, out, lse, grad, cu_seqlens, heads, key_mask=None, scale=None,
                                    dropout_p=0.0, seeds=None):
    """Returns (dq, dk, dv) from the forward's inputs, out, lse and g = dL/dout."""
    xp = backend.array_module(q)
    dq, dk, dv = (xp.zeros_like(q) for _ in range(3))
    for b, lo, hi in _sequences(cu_seqlens):
        seed = 0 if seeds is None else int(seeds[b])
        grads = attention_backward(*(_heads(t, lo, hi, heads) for t in (q, k, v, out)), lse[None, :, lo:hi],
                                   _heads(grad, lo, hi, heads), _key_mask(key_mask, lo, hi), None, scale,
                                   dropout_p, seed)
        for whole, part in zip((dq, dk, dv), grads):
            whole[lo:hi] = _rows(part)
    return dq, dk, dv


def _check(kernel, q, k, v, cu_seqlens, heads, key_mask, dropout_p, seeds):
    """A TypeError or ValueError naming the argument unless q, k, v are (N, H * D) float arrays of one
    dtype, cu_seqlens a host integer array (0, ..., N), nondecreasing, key_mask (N,) bool or None and,
    with dropout, seeds one host integer in [0, 2^63) per sequence. Returns cu_seqlens (int64), the
    dropout probability and the seeds (uint64, or None without dropout)."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        dispatch.check_float(kernel, name, t)
        if t.dtype != q.dtype:
            raise TypeError(f"{kernel}: {name} dtype {t.dtype} differs from q dtype {q.dtype}")
        if t.ndim != 2 or t.shape != q.shape:
            raise ValueError(f"{kernel}: q, k, v must be (N, H * D) arrays of one shape, got q {q.shape}, {name} {t.shape}")
    dispatch.one_place(kernel, q, k=k, v=v, key_mask=key_mask)
    if isinstance(heads, bool) or not isinstance(heads, (int, numpy.integer)):
        raise TypeError(f"{kernel}: heads must be an int, got {type(heads).__name__} {heads!r}")
    if heads < 1 or q.shape[1] % heads or q.shape[1] == 0:
        raise ValueError(f"{kernel}: heads={heads} must be positive and divide E = {q.shape[1]} into heads of D >= 1")
    if backend.on_device(cu_seqlens) or numpy.asarray(cu_seqlens).dtype.kind not in "iu":
        raise TypeError(f"{kernel}: cu_seqlens must be a host array of integers, got {type(cu_seqlens).__name__}")
    cu_seqlens = numpy.asarray(cu_seqlens, numpy.int64)
    if cu_seqlens.ndim != 1 or len(cu_seqlens) < 1 or cu_seqlens[0] != 0 or cu_seqlens[-1] != q.shape[0] \
            or (numpy.diff(cu_seqlens) < 0).any():
        raise ValueError(f"{kernel}: cu_seqlens must run from 0 up to N = {q.shape[0]}, nondecreasing, got "
                         f"{cu_seqlens.tolist() if cu_seqlens.size <= 10 else cu_seqlens.shape}")
    if key_mask is not None and key_mask.dtype != bool:
        raise TypeError(f"{kernel}: key_mask must be bool (True = attend), got {key_mask.dtype}")
    if key_mask is not None and key_mask.shape != (q.shape[0],):
        raise ValueError(f"{kernel}: key_mask must have shape (N,) = {(q.shape[0],)}, got {key_mask.shape}")
    dropout_p, _ = dropout.check(dropout_p, 0, kernel)
    if dropout_p == 0:
        return cu_seqlens, dropout_p, None
    sequences = len(cu_seqlens) - 1
    host = None if seeds is None or backend.on_device(seeds) else numpy.asarray(seeds)
    if host is None or host.dtype.kind not in "iu" or host.shape != (sequences,) \
            or (host.size and (int(host.min()) < 0 or int(host.max()) >= 2**63)):
        raise ValueError(f"{kernel}: with dropout, seeds must be a host array of {sequences} ints in [0, 2^63), "
                         f"one per sequence, got {seeds if seeds is None else getattr(seeds, 'shape', seeds)}")
    return cu_seqlens, dropout_p, host.astype(numpy.uint64)


@dispatch.kernel("attention", numpy=attention_varlen_forward_numpy, cuda=False)
def attention_varlen_forward(q, k, v, cu_seqlens, heads, key_mask=None, scale=None, dropout_p=0.0, seeds=None):
    """Returns (out, lse): out (N, E) like q, lse (H, N). See the module docstring."""
    cu_seqlens, dropout_p, seeds = _check("attention_varlen", q, k, v, cu_seqlens, heads, key_mask, dropout_p, seeds)
    return q, k, v, cu_seqlens, int(heads), key_mask, _scale_of(q, heads, scale), dropout_p, seeds


@dispatch.kernel("attention", numpy=attention_varlen_backward_numpy, cuda=False)
def attention_varlen_backward(q, k, v, out, lse, grad, cu_seqlens, heads, key_mask=None, scale=None, dropout_p=0.0,
                              seeds=None):
    """Returns (dq, dk, dv), each (N, E), from the forward's inputs, out, lse and g = dL/dout."""
    kernel = "attention_varlen backward"
    cu_seqlens, dropout_p, seeds = _check(kernel, q, k, v, cu_seqlens, heads, key_mask, dropout_p, seeds)
    check_saved(kernel, q, out=(out, q.shape), lse=(lse, (heads, q.shape[0])), grad=(grad, q.shape))
    return q, k, v, out, lse, grad, cu_seqlens, int(heads), key_mask, _scale_of(q, heads, scale), dropout_p, seeds


def _scale_of(q, heads, scale):
    """1 / sqrt(D), D = E / H, unless given."""
    return (q.shape[1] // heads) ** -0.5 if scale is None else _scale(q, scale)


def _compiled_args(q, cu_seqlens, key_mask, dropout_p, seeds, scratch_rows):
    """key_bias (N,), the dropout tuple, scratch and block for csrc/attention.pyx's varlen kernels."""
    longest = int(numpy.diff(cu_seqlens).max(initial=0))
    block = _block(longest)
    key_bias = _key_bias(key_mask, q)
    drop = _dropout_args(dropout_p, 0)
    scratch = numpy.empty((dispatch.threads(), block * (scratch_rows * longest + 1)), q.dtype)
    blas.use_threads(1)  # one BLAS call per (sequence, head) pair, inside OpenMP's pool
    return key_bias, drop, seeds, scratch, block


@attention_varlen_forward.compiled
def _forward_compiled(compiled, q, k, v, cu_seqlens, heads, key_mask, scale, dropout_p, seeds):
    q, k, v = (numpy.ascontiguousarray(t) for t in (q, k, v))
    out, lse = numpy.empty_like(q), numpy.empty((heads, q.shape[0]), q.dtype)  # every row is a sequence's
    if q.size:
        key_bias, drop, seeds, scratch, block = _compiled_args(q, cu_seqlens, key_mask, dropout_p, seeds, 1)
        compiled.forward_varlen(q, k, v, cu_seqlens, key_bias, heads, scale, drop, seeds, out, lse, scratch, block)
    return out, lse


@attention_varlen_backward.compiled
def _backward_compiled(compiled, q, k, v, out, lse, grad, cu_seqlens, heads, key_mask, scale, dropout_p, seeds):
    q, k, v, out, lse, grad = (numpy.ascontiguousarray(t) for t in (q, k, v, out, lse, grad))
    dq, dk, dv = (numpy.empty_like(q) for _ in range(3))
    if q.size:
        key_bias, drop, seeds, scratch, block = _compiled_args(q, cu_seqlens, key_mask, dropout_p, seeds, 2)
        compiled.backward_varlen(q, k, v, out, lse, grad, cu_seqlens, key_bias, heads, scale, drop, seeds,
                                 dq, dk, dv, scratch, block)
        zero_at_zero_scale(scale, dq, dk)
    return dq, dk, dv
