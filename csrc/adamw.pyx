# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
# distutils: extra_compile_args = -fno-math-errno
"""The AdamW update, compiled twin of minillm/kernels/adamw.py (read that first: same math).

Each element is independent, so one OpenMP prange splits the flat arrays across threads and the
loop body does the whole update with the element in registers: 4 loads and 3 stores per element
instead of the NumPy twin's many passes. The scalars arrive as Python floats (double) and are
rounded to the parameter's dtype once, as torch does, so the arithmetic is float32 for float32.
Shapes, dtypes and contiguity are checked by the Python wrapper.

-fno-math-errno (the line above) lets the compiler turn sqrtf into a vector instruction: with
errno semantics it must call into libm for each element, which stops vectorization and made this
loop compute-bound, three times slower than memory allows (30 ms vs 10 ms for MiniLM on 2 cores).
sqrt of a v >= 0 never sets errno, so nothing is lost.
"""
from cython.parallel cimport prange
from libc.math cimport sqrt, sqrtf

ctypedef fused real:
    float
    double

# Below this many elements a parameter (a bias, a LayerNorm weight) is updated on one thread:
# starting a parallel region costs more than the few microseconds of work.
cdef enum:
    PARALLEL_MIN = 32768


cdef inline real _sqrt(real v) noexcept nogil:
    if real is float:
        return sqrtf(v)
    else:
        return sqrt(v)


cdef inline void _update(real* p, const real* g, real* m, real* v, Py_ssize_t i, real decay, real one_minus_beta1,
                         real beta2, real one_minus_beta2, real step_size, real bc2_sqrt, real eps) noexcept nogil:
    cdef real grad = g[i]
    cdef real m_i = m[i] + one_minus_beta1 * (grad - m[i])
    cdef real v_i = v[i] * beta2 + one_minus_beta2 * grad * grad
    m[i] = m_i
    v[i] = v_i
    p[i] = p[i] * decay - step_size * m_i / (_sqrt(v_i) / bc2_sqrt + eps)


def step(real[::1] param, const real[::1] grad, real[::1] exp_avg, real[::1] exp_avg_sq,
         double decay, double beta1, double beta2, double step_size, double bias_correction2_sqrt, double eps):
    """One AdamW update of flat arrays of one length, in place."""
    cdef Py_ssize_t i, n = param.shape[0]
    cdef real c_decay = <real>decay, c_b1 = <real>(1 - beta1), c_b2 = <real>beta2, c_1mb2 = <real>(1 - beta2)
    cdef real c_step = <real>step_size, c_bc2 = <real>bias_correction2_sqrt, c_eps = <real>eps
    cdef real* p = &param[0]
    cdef const real* g = &grad[0]
    cdef real* m = &exp_avg[0]
    cdef real* v = &exp_avg_sq[0]
    with nogil:
        if n < PARALLEL_MIN:
            for i in range(n):
                _update(p, g, m, v, i, c_decay, c_b1, c_b2, c_1mb2, c_step, c_bc2, c_eps)
        else:
            for i in prange(n, schedule="static"):
                _update(p, g, m, v, i, c_decay, c_b1, c_b2, c_1mb2, c_step, c_bc2, c_eps)
