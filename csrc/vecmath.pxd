# cython: language_level=3
"""Shared by the kernels: the `real` fused type (float32 or float64) and the vectorizable math of
vecmath.h (read its comment: why exp, the normal CDF and the row reductions live in C)."""
from libc.math cimport exp, erfc

ctypedef fused real:
    float
    double


cdef extern from "vecmath.h" nogil:
    float mll_expf(float x)
    float mll_gauss_f(float x)
    float mll_normal_cdf_f(float x, float gauss)
    float mll_max_f(const float* x, Py_ssize_t n)
    double mll_max_d(const double* x, Py_ssize_t n)
    float mll_shifted_sum_f(const float* x, float c, Py_ssize_t n)
    double mll_shifted_sum_d(const double* x, double c, Py_ssize_t n)
    float mll_shifted_sumsq_f(const float* x, float c, Py_ssize_t n)
    double mll_shifted_sumsq_d(const double* x, double c, Py_ssize_t n)
    float mll_add_max_f(float* y, const float* x, const float* add, Py_ssize_t n)
    double mll_add_max_d(double* y, const double* x, const double* add, Py_ssize_t n)
    float mll_exp_sum_f(float* y, const float* x, float c, Py_ssize_t n)
    double mll_exp_sum_d(double* y, const double* x, double c, Py_ssize_t n)
    float mll_dot_f(const float* x, const float* y, Py_ssize_t n)
    double mll_dot_d(const double* x, const double* y, Py_ssize_t n)
    void mll_layer_norm_sums_f(const float* g, const float* x, const float* w, float mu, float r,
                               float* dw, float* db, float* dxhat_row, Py_ssize_t n, float* sums)
    void mll_layer_norm_sums_d(const double* g, const double* x, const double* w, double mu, double r,
                               double* dw, double* db, double* dxhat_row, Py_ssize_t n, double* sums)


cdef inline real vexp(real x) noexcept nogil:
    if real is float:
        return mll_expf(x)
    else:
        return exp(x)


cdef inline real vgauss(real x) noexcept nogil:
    """exp(-x^2 / 2), what vnormal_cdf takes (and sqrt(2 pi) times the normal density)."""
    if real is float:
        return mll_gauss_f(x)
    else:
        return exp(-0.5 * x * x)


cdef inline real vnormal_cdf(real x, real gauss) noexcept nogil:
    """Phi(x) = erfc(-x / sqrt 2) / 2, given gauss = vgauss(x): float32 builds on it (vecmath.h),
    float64 calls libm's erfc and ignores it (float64 is gradcheck's dtype, not the fast path)."""
    if real is float:
        return mll_normal_cdf_f(x, gauss)
    else:
        return 0.5 * erfc(x * -0.7071067811865476)  # -x / sqrt 2


cdef inline real row_max(const real* x, Py_ssize_t n) noexcept nogil:
    """max_j x[j]; -inf for an empty or all -inf row."""
    if real is float:
        return mll_max_f(x, n)
    else:
        return mll_max_d(x, n)


cdef inline real row_add_max(real* y, const real* x, const real* add, Py_ssize_t n) noexcept nogil:
    """y[j] = x[j] + add[j] (y may be x); returns max_j y[j], -inf for an empty or all -inf row."""
    if real is float:
        return mll_add_max_f(y, x, add, n)
    else:
        return mll_add_max_d(y, x, add, n)


cdef inline real row_exp_sum(real* y, const real* x, real c, Py_ssize_t n) noexcept nogil:
    """y[j] = exp(x[j] - c) (y may be x); returns sum_j y[j]."""
    if real is float:
        return mll_exp_sum_f(y, x, c, n)
    else:
        return mll_exp_sum_d(y, x, c, n)


cdef inline real row_shifted_sum(const real* x, real c, Py_ssize_t n) noexcept nogil:
    """sum_j (x[j] - c)."""
    if real is float:
        return mll_shifted_sum_f(x, c, n)
    else:
        return mll_shifted_sum_d(x, c, n)


cdef inline real row_shifted_sumsq(const real* x, real c, Py_ssize_t n) noexcept nogil:
    """sum_j (x[j] - c)^2."""
    if real is float:
        return mll_shifted_sumsq_f(x, c, n)
    else:
        return mll_shifted_sumsq_d(x, c, n)


cdef inline real row_dot(const real* x, const real* y, Py_ssize_t n) noexcept nogil:
    if real is float:
        return mll_dot_f(x, y, n)
    else:
        return mll_dot_d(x, y, n)


cdef inline void layer_norm_sums(const real* g, const real* x, const real* w, real mu, real r, real* dw,
                                 real* db, real* dxhat_row, Py_ssize_t n, real* sums) noexcept nogil:
    """dw += g xhat, db += g; sums = (sum of dxhat, sum of dxhat xhat); with a w, dxhat_row = g w:
    vecmath.h, one pass."""
    if real is float:
        mll_layer_norm_sums_f(g, x, w, mu, r, dw, db, dxhat_row, n, sums)
    else:
        mll_layer_norm_sums_d(g, x, w, mu, r, dw, db, dxhat_row, n, sums)
