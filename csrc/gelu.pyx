# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""GELU, compiled twin of minillm/kernels/gelu.py (read that first: same math, two rewrites).

Elementwise, so an OpenMP prange splits the flat array into blocks (csrc/tasks.pxd) and each
block's loop is vectorized (vecmath.h's exp and normal CDF). Two rewrites keep it accurate where the
twin's formulas lose digits in float32:
  exact:  Phi(x) = erfc(-x / sqrt 2) / 2, which keeps its relative accuracy for x << 0, where
          (1 + erf(x / sqrt 2)) / 2 cancels to nothing; vecmath.h computes it from
          gauss = exp(-x^2 / 2), which the backward reuses for phi(x) = gauss / sqrt(2 pi);
  tanh:   (1 + tanh(u)) / 2 = sigmoid(2u) = 1 / (1 + exp(-2u)), and 1 - tanh(u)^2 = 4 s (1 - s)
          with s = sigmoid(2u): one exp, no cancellation.
"""
from cython.parallel cimport prange

from tasks cimport rows_per_task
from vecmath cimport real, vexp, vgauss, vnormal_cdf

cdef double SQRT_2_OVER_PI = 0.7978845608028654
cdef double INV_SQRT_2PI = 0.3989422804014327
cdef double CUBIC = 0.044715


cdef inline real _sigmoid_2u(real x) noexcept nogil:
    """s = (1 + tanh(u)) / 2 with u = sqrt(2/pi) (x + 0.044715 x^3)."""
    cdef real u = <real>SQRT_2_OVER_PI * (x + <real>CUBIC * x * x * x)
    return 1 / (1 + vexp(-2 * u))


cdef void _forward(const real* x, real* y, Py_ssize_t n, bint tanh_form) noexcept nogil:
    cdef Py_ssize_t i
    if tanh_form:
        for i in range(n):
            y[i] = x[i] * _sigmoid_2u(x[i])
    else:
        for i in range(n):
            y[i] = x[i] * vnormal_cdf(x[i], vgauss(x[i]))


cdef void _backward(const real* x, const real* g, real* dx, Py_ssize_t n, bint tanh_form) noexcept nogil:
    cdef Py_ssize_t i
    cdef real s, gauss
    if tanh_form:  # s + x/2 (1 - t^2) u' = s + 2 x s (1 - s) sqrt(2/pi) (1 + 3 c x^2)
        for i in range(n):
            s = _sigmoid_2u(x[i])
            dx[i] = g[i] * (s + 2 * x[i] * s * (1 - s) * <real>SQRT_2_OVER_PI
                            * (1 + 3 * <real>CUBIC * x[i] * x[i]))
    else:  # Phi(x) + x phi(x), both from one exp
        for i in range(n):
            gauss = vgauss(x[i])
            dx[i] = g[i] * (vnormal_cdf(x[i], gauss) + x[i] * gauss * <real>INV_SQRT_2PI)


def forward(const real[::1] x, real[::1] y, bint tanh_form):
    """y = gelu(x) over flat arrays of equal size."""
    cdef Py_ssize_t start, n = x.shape[0], block = rows_per_task(n, 1)
    with nogil:
        for start in prange(0, n, block, schedule="dynamic"):
            _forward(&x[start], &y[start], min(block, n - start), tanh_form)


def backward(const real[::1] x, const real[::1] grad, real[::1] dx, bint tanh_form):
    """dx = grad * gelu'(x) over flat arrays of equal size."""
    cdef Py_ssize_t start, n = x.shape[0], block = rows_per_task(n, 1)
    with nogil:
        for start in prange(0, n, block, schedule="dynamic"):
            _backward(&x[start], &grad[start], &dx[start], min(block, n - start), tanh_form)
