# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Row softmax, compiled twin of minillm/kernels/softmax.py (read that first: same math).

Rows are independent, so an OpenMP prange splits them across threads; each row is three passes
(max, exp and sum, scale) over contiguous memory that the C compiler vectorizes. Inputs are
checked by the Python wrapper; here the memoryview types check dtype and C-contiguity.
"""
from cython.parallel cimport prange
from libc.math cimport exp, expf, INFINITY

ctypedef fused real:
    float
    double


cdef inline real _exp(real v) noexcept nogil:
    if real is float:
        return expf(v)
    else:
        return exp(v)


cdef void _row_forward(const real* x, const real* mask, real* y, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t j
    cdef real row_max = -INFINITY
    cdef real total = 0, scale
    for j in range(n):
        y[j] = x[j] + mask[j] if mask != NULL else x[j]
        if y[j] > row_max:
            row_max = y[j]
    if row_max == -INFINITY:  # fully masked row: zeros, not NaN
        row_max = 0
    for j in range(n):
        y[j] = _exp(y[j] - row_max)
        total += y[j]
    scale = 1 / total if total > 0 else 0
    for j in range(n):
        y[j] *= scale


def forward(const real[:, ::1] x, const real[:, ::1] mask, real[:, ::1] y):
    """y[r] = softmax(x[r] + mask[r]); mask may be None. Shapes (R, N), checked by the wrapper."""
    cdef Py_ssize_t r, rows = x.shape[0], n = x.shape[1]
    cdef bint masked = mask is not None
    with nogil:
        for r in prange(rows, schedule="static"):
            _row_forward(&x[r, 0], &mask[r, 0] if masked else NULL, &y[r, 0], n)


def backward(const real[:, ::1] y, const real[:, ::1] grad, real[:, ::1] out):
    """out[r] = y[r] * (grad[r] - <grad[r], y[r]>). Shapes (R, N)."""
    cdef Py_ssize_t r, j, rows = y.shape[0], n = y.shape[1]
    cdef real dot
    with nogil:
        for r in prange(rows, schedule="static"):
            dot = 0
            for j in range(n):
                dot = dot + grad[r, j] * y[r, j]
            for j in range(n):
                out[r, j] = y[r, j] * (grad[r, j] - dot)
