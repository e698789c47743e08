"""Batched matrix product C = op(A) @ op(B), with op = identity or transpose of the last two axes
and NumPy broadcasting over the leading (batch) axes.   A: (..., M, K), B: (..., K, N) -> (..., M, N)

Transposes are flags, not copies: the backward of C = A @ B is dA = dC @ B^T and dB = A^T @ dC,
and a kernel that reads B^T in place spares a transpose copy per product.
"""
from .. import backend


def matmul_numpy(a, b, transpose_a=False, transpose_b=False):
    xp = backend.array_module(a)
    if transpose_a:
        a = xp.swapaxes(a, -1, -2)
    if transpose_b:
        b = xp.swapaxes(b, -1, -2)
    return xp.matmul(a, b)


def matmul(a, b, transpose_a=False, transpose_b=False):
    return matmul_numpy(a, b, transpose_a, transpose_b)
