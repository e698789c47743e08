# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Row softmax, compiled twin of minillm/kernels/softmax.py (read that first: same math).

Rows are independent, so an OpenMP prange hands them to threads (in tasks of many rows, dynamically:
csrc/tasks.pxd, and minillm/kernels/blas.py on threads); each row is a few passes
(mask and max, exp and sum, scale) over contiguous memory, vectorized (see vecmath.h). The additive mask is
never broadcast to the input's size: row r reads mask[mask_rows[r] : mask_rows[r] + n], so a
(B, 1, 1, S) padding mask over (B, H, L, S) scores costs B*S floats and one offset per row.
Inputs are checked by the Python wrapper; here the memoryview types check dtype and contiguity.
"""
from cython.parallel cimport prange
from libc.math cimport INFINITY

from tasks cimport rows_per_task
from vecmath cimport real, row_add_max, row_dot, row_exp_sum, row_max


cdef void _row_forward(const real* x, const real* mask, real* y, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t j
    cdef real c, total
    if mask != NULL:
        c = row_add_max(y, x, mask, n)  # y = x + mask
        x = y
    else:
        c = row_max(x, n)
    if c == -INFINITY:  # fully masked row: exp(-inf - 0) = 0 gives zeros, not NaN
        c = 0
    total = row_exp_sum(y, x, c, n)
    total = 0 if total == 0 else 1 / total  # a NaN total stays NaN
    for j in range(n):
        y[j] = y[j] * total


def forward(const real[:, ::1] x, const real[::1] mask, const Py_ssize_t[::1] mask_rows, real[:, ::1] y):
    """y[r] = softmax(x[r] + mask[mask_rows[r]:][:n]); mask may be None. x, y: (R, N)."""
    cdef Py_ssize_t r, rows = x.shape[0], n = x.shape[1]
    cdef bint masked = mask is not None
    with nogil:
        for r in prange(rows, schedule="dynamic", chunksize=rows_per_task(rows, n)):
            _row_forward(&x[r, 0], &mask[mask_rows[r]] if masked else NULL, &y[r, 0], n)


cdef void _row_backward(const real* y, const real* g, real* out, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t j
    cdef real dot = row_dot(g, y, n)
    for j in range(n):
        out[j] = y[j] * (g[j] - dot)


def backward(const real[:, ::1] y, const real[:, ::1] grad, real[:, ::1] out):
    """out[r] = y[r] * (grad[r] - <grad[r], y[r]>). Shapes (R, N)."""
    cdef Py_ssize_t r, rows = y.shape[0], n = y.shape[1]
    with nogil:
        for r in prange(rows, schedule="dynamic", chunksize=rows_per_task(rows, n)):
            _row_backward(&y[r, 0], &grad[r, 0], &out[r, 0], n)
