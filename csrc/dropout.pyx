# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Dropout, compiled twin of minillm/kernels/dropout.py (read that first: the counter-based mask).

y = x * m with m_i = 1 / (1 - p) where element i is kept and 0 where it is dropped, kept by the hash
of (seed, i) in csrc/dropout_mask.h, the one the fused attention uses. The backward is the same call
on the gradient: it hashes the same indices again, so no mask is stored between the two. Elementwise,
so an OpenMP prange splits the flat array into blocks (csrc/tasks.pxd), and GCC vectorizes each
block's loop, the hash's 64-bit multiplies included (one instruction per 8 lanes at AVX-512).
Shapes and dtypes are checked by the Python wrapper.
"""
from cython.parallel cimport prange
from libc.stdint cimport uint64_t

from tasks cimport rows_per_task
from vecmath cimport real


cdef extern from "dropout_mask.h" nogil:
    bint mll_dropout_keep(uint64_t seed, uint64_t index, uint64_t threshold)


cdef void _apply(const real* x, real* y, Py_ssize_t start, Py_ssize_t n, uint64_t seed, uint64_t threshold,
                 real scale) noexcept nogil:
    """y[i] = x[i] * m for the n elements from logical index `start` on (x and y point at it)."""
    cdef Py_ssize_t i
    for i in range(n):
        y[i] = x[i] * (scale if mll_dropout_keep(seed, <uint64_t>(start + i), threshold) else 0)


def apply(const real[::1] x, real[::1] y, uint64_t seed, uint64_t threshold, double scale):
    """y = x * m over flat arrays of equal size; m from (seed, element index): kept iff its 32 bits
    reach threshold = floor(p 2^32), then scaled by scale = 1 / (1 - p) (0 when p = 1)."""
    cdef Py_ssize_t start, n = x.shape[0], block = rows_per_task(n, 1)
    with nogil:
        for start in prange(0, n, block, schedule="dynamic"):
            _apply(&x[start], &y[start], start, min(block, n - start), seed, threshold, <real>scale)
