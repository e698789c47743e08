"""Batched matrix product C = op(A) @ op(B), with op = identity or transpose of the last two axes
and NumPy broadcasting over the leading (batch) axes.   A: (..., M, K), B: (..., K, N) -> (..., M, N)

Transposes are flags, not copies: the backward of C = A @ B is dA = dC @ B^T and dB = A^T @ dC,
and a kernel that reads B^T in place spares a transpose copy per product.

The compiled twin (csrc/matmul.pyx) hands every product to BLAS. It takes each operand as it lies
in memory: a transposed or strided view becomes a BLAS transpose flag and leading dimension, a
broadcast batch axis a zero offset stride, so neither is copied. Only a matrix with no unit stride
on either axis (e.g. x[:, ::2]) or with a negative one (x[::-1]) is copied first.

On the GPU products go to cupy.matmul (cuBLAS), except while a CUDA graph is captured: CuPy refuses
to call cuBLAS then, and kernels/cuda/cublas.py makes the same call itself (kernels/cuda/matmul.py).
"""
import numpy

from .. import backend
from . import blas, dispatch

_INT32 = 2**31 - 1  # scipy's BLAS takes 32-bit sizes and strides


def matmul_numpy(a, b, transpose_a=False, transpose_b=False, bias=None):
    xp = backend.array_module(a)
    if transpose_a:
        a = xp.swapaxes(a, -1, -2)
    if transpose_b:
        b = xp.swapaxes(b, -1, -2)
    out = xp.matmul(a, b)
    if bias is not None:
        out += bias
    return out


def _sizes(a, b, transpose_a, transpose_b):
    """The output's batch shape and (M, K, N) of op(a) @ op(b), or a ValueError naming the shapes."""
    m, k = a.shape[-2:][::-1] if transpose_a else a.shape[-2:]
    k_b, n = b.shape[-2:][::-1] if transpose_b else b.shape[-2:]
    if k != k_b:
        raise ValueError(f"matmul: inner dimensions differ: op(a) is {m}x{k}, op(b) is {k_b}x{n} "
                         f"(a {a.shape}, b {b.shape}, transpose_a={transpose_a}, transpose_b={transpose_b})")
    if a.shape[:-2] == b.shape[:-2]:
        return a.shape[:-2], (m, k, n)
    try:
        return numpy.broadcast_shapes(a.shape[:-2], b.shape[:-2]), (m, k, n)
    except ValueError:
        raise ValueError(f"matmul: batch dimensions of a {a.shape} and b {b.shape} do not broadcast") from None


@dispatch.kernel("matmul", numpy=matmul_numpy)
def matmul(a, b, transpose_a=False, transpose_b=False, bias=None):
    """op(a) @ op(b) (+ bias), op(x) = x^T (last two axes) when its flag is set. a, b: (..., M, K),
    (..., K, N) after op, batch axes broadcast; bias: None or (N,), added to every row (torch's
    addmm, a Linear layer's b); float32 or float64, one dtype for all."""
    for name, x in (("a", a), ("b", b)):
        dispatch.check_float("matmul", name, x)
        if x.ndim < 2:
            raise ValueError(f"matmul: {name} must have at least 2 dimensions, got shape {x.shape}")
    dispatch.one_place("matmul", a, b=b, bias=bias)
    if a.dtype != b.dtype:
        raise TypeError(f"matmul: a and b must have the same dtype, got {a.dtype} and {b.dtype}")
    _, (_, _, n) = _sizes(a, b, transpose_a, transpose_b)
    if bias is not None:
        if bias.shape != (n,):
            raise ValueError(f"matmul: bias must have shape ({n},), one value per column of the product, "
                             f"got {bias.shape}")
        if bias.dtype != a.dtype:
            raise TypeError(f"matmul: bias must have the dtype of a and b, {a.dtype}, got {bias.dtype}")
    return a, b, transpose_a, transpose_b, bias


def _blas_operand(x, transpose, batch):
    """x as (flat view, batch offsets, row stride, column stride) of op(x), in elements, with a unit
    stride BLAS can use; x is copied only if neither of its last two axes has one."""
    rows, cols = x.shape[-2:][::-1] if transpose else x.shape[-2:]
    strides = [s // x.itemsize for s in x.strides]
    rs, cs = strides[-2:][::-1] if transpose else strides[-2:]
    if cols == 1:
        cs = 1  # a stride along a length-1 axis is never used: pick the one BLAS likes
    if rows == 1:
        rs = cols if cs == 1 else 1
    usable = (cs == 1 and rs >= cols) or (rs == 1 and cs >= rows)
    if not usable or any(s % x.itemsize or s < 0 for s, n in zip(x.strides, x.shape) if n > 1):
        return _blas_operand(numpy.ascontiguousarray(x), transpose, batch)
    offsets = numpy.zeros(batch, dtype=numpy.intp)
    for axis, (n, s) in enumerate(zip(x.shape[:-2], strides[:-2]), start=len(batch) - (x.ndim - 2)):
        if n > 1:  # a broadcast (length-1) axis adds nothing: offset stride 0
            offsets += (numpy.arange(n) * s).reshape((n,) + (1,) * (len(batch) - axis - 1))
    span = 1 + sum((n - 1) * s for n, s in zip(x.shape, strides))
    flat = numpy.lib.stride_tricks.as_strided(x, shape=(span,), strides=(x.itemsize,))
    if max(rs, cs) > _INT32:
        raise ValueError(f"matmul: an operand of shape {x.shape} has a row stride beyond BLAS's 32-bit range")
    return flat, offsets.reshape(-1), rs, cs


@matmul.compiled
def _matmul_compiled(compiled, a, b, transpose_a, transpose_b, bias):
    batch, (m, k, n) = _sizes(a, b, transpose_a, transpose_b)
    if max(m, k, n) > _INT32:
        raise ValueError(f"matmul: sizes {m}x{k} @ {k}x{n} exceed BLAS's 32-bit range")
    out = numpy.empty(batch + (m, n), dtype=a.dtype)
    if out.size == 0 or k == 0:
        out[...] = 0 if bias is None else bias
        return out
    a_flat, a_offsets, a_rs, a_cs = _blas_operand(a, transpose_a, batch)
    b_flat, b_offsets, b_rs, b_cs = _blas_operand(b, transpose_b, batch)
    count = len(a_offsets)
    # one product: one BLAS call on BLAS's threads, which share its packed operands (blas.py).
    # Else tasks in OpenMP's pool, single-threaded BLAS in each: about 4 per thread, so a thread the
    # OS pauses holds up a quarter of its share, not all of it (measured with another process busy on
    # one of 2 cores: 104 ms, not 140, for a MiniLM Linear forward + backward); small ones whole
    one_call = count == 1 and blas.threaded_products()
    chunks = 1 if one_call or m * n * k < 64**3 else -(-4 * dispatch.threads() // count)
    bias = None if bias is None else numpy.ascontiguousarray(bias)
    blas.use_threads(dispatch.threads() if one_call else 1)
    compiled.gemm_batched(a_flat, a_offsets, a_rs, a_cs, b_flat, b_offsets, b_rs, b_cs,
                          out.reshape(count, m, n), k, chunks, bias)
    return out

