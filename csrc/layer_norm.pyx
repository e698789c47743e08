# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Layer norm over rows, compiled twin of minillm/kernels/layer_norm.py (read that first: the
derivation of the backward is there, term by term; the names below follow it).

Rows are independent, so an OpenMP prange hands them to threads in tasks of many rows (csrc/tasks.pxd;
minillm/kernels/blas.py on threads). The backward's dL/dw and
dL/db are sums over all rows: each fixed chunk of rows adds into its own row of a (chunks, N)
buffer (no locks, no races) and the wrapper sums those few rows at the end.
"""
from cython.parallel cimport prange
from libc.math cimport isfinite, sqrt

from tasks cimport rows_per_task
from vecmath cimport layer_norm_sums, real, row_shifted_sum, row_shifted_sumsq


cdef void _row_forward(const real* x, const real* w, const real* b, real eps, real* y,
                       real* mean, real* rstd, Py_ssize_t n) noexcept nogil:
    """Three passes over x: the mean, the variance about it (two passes: no cancellation in
    E[x^2] - mu^2), then y, with x - mu recomputed rather than stored and read back."""
    cdef Py_ssize_t j
    cdef real shift = x[0] if isfinite(x[0]) else 0  # the twin's mean, x0 + mean(x - x0): see _mean there
    cdef real mu = shift + row_shifted_sum(x, shift, n) / n
    cdef real r = 1 / sqrt(row_shifted_sumsq(x, mu, n) / n + eps)
    mean[0], rstd[0] = mu, r
    if w != NULL and b != NULL:
        for j in range(n):
            y[j] = (x[j] - mu) * r * w[j] + b[j]
    else:
        for j in range(n):
            y[j] = (x[j] - mu) * r * (w[j] if w != NULL else 1) + (b[j] if b != NULL else 0)


def forward(const real[:, ::1] x, const real[::1] weight, const real[::1] bias, double eps,
            real[:, ::1] y, real[::1] mean, real[::1] rstd):
    """y = (x - mean) * rstd * weight + bias per row. x, y: (R, N); weight, bias: (N,) or None."""
    cdef Py_ssize_t r, rows = x.shape[0], n = x.shape[1]
    cdef const real* w = &weight[0] if weight is not None else NULL
    cdef const real* b = &bias[0] if bias is not None else NULL
    with nogil:
        for r in prange(rows, schedule="dynamic", chunksize=rows_per_task(rows, n)):
            _row_forward(&x[r, 0], w, b, <real>eps, &y[r, 0], &mean[r], &rstd[r], n)


def add_forward(const real[:, ::1] x, const real[:, ::1] residual, const real[::1] weight,
                const real[::1] bias, double eps, real[:, ::1] total, real[:, ::1] y, real[::1] mean,
                real[::1] rstd):
    """total = x + residual, then forward's y, mean, rstd of total, a row at a time: the row of
    total just written is normalized while it is still in cache. x, residual, total, y: (R, N)."""
    cdef Py_ssize_t j, r, rows = x.shape[0], n = x.shape[1]
    cdef const real* w = &weight[0] if weight is not None else NULL
    cdef const real* b = &bias[0] if bias is not None else NULL
    with nogil:
        for r in prange(rows, schedule="dynamic", chunksize=rows_per_task(rows, n)):
            for j in range(n):
                total[r, j] = x[r, j] + residual[r, j]
            _row_forward(&total[r, 0], w, b, <real>eps, &y[r, 0], &mean[r], &rstd[r], n)


cdef void _row_backward(const real* g, const real* x, const real* w, real mu, real r, real* dx,
                        real* dw, real* db, Py_ssize_t n) noexcept nogil:
    """Two passes over the row: the sums (and dw, db; dxhat = g w into dx), then dx = r (dxhat -
    mean(dxhat) - xhat mean(dxhat xhat)), xhat recomputed (vecmath.h says why dxhat is not). dx must
    overlap neither g nor x."""
    cdef Py_ssize_t j
    cdef real sums[2]
    cdef real mean_dxhat, mean_dxhat_xhat
    layer_norm_sums(g, x, w, mu, r, dw, db, dx, n, sums)
    mean_dxhat, mean_dxhat_xhat = sums[0] / n, sums[1] / n
    if w != NULL:
        for j in range(n):
            dx[j] = r * (dx[j] - mean_dxhat - (x[j] - mu) * r * mean_dxhat_xhat)
    else:
        for j in range(n):
            dx[j] = r * (g[j] - mean_dxhat - (x[j] - mu) * r * mean_dxhat_xhat)


def backward(const real[:, ::1] grad, const real[:, ::1] x, const real[::1] weight,
             const real[::1] mean, const real[::1] rstd, real[:, ::1] dx,
             real[:, ::1] dweight_parts, real[:, ::1] dbias_parts):
    """dx per row, and the sums for dw and db in parts: the rows are cut into C = len(dweight_parts)
    fixed chunks, and chunk c adds its rows into dweight_parts[c] and dbias_parts[c] (zeroed). Which
    thread runs a chunk does not change what it adds, so the wrapper's sum over parts gives the
    same bits on every run and for any thread count.
    grad, x, dx: (R, N); mean, rstd: (R,); parts: (C, N)."""
    cdef Py_ssize_t c, r, rows = x.shape[0], n = x.shape[1], chunks = dweight_parts.shape[0]
    cdef const real* w = &weight[0] if weight is not None else NULL
    with nogil:
        for c in prange(chunks, schedule="dynamic"):
            for r in range(c * rows // chunks, (c + 1) * rows // chunks):
                _row_backward(&grad[r, 0], &x[r, 0], w, mean[r], rstd[r], &dx[r, 0],
                              &dweight_parts[c, 0], &dbias_parts[c, 0], n)
