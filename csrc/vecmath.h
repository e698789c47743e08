/* Vectorizable math for the compiled kernels: the few things Cython cannot say.
 *
 * GCC turns a loop into SIMD code only when every call in it has a vector version. libm's expf
 * and erfcf have none here (glibc declares its vector versions only under -ffast-math, which we
 * refuse because it breaks -inf masks), so the float32 exp and erfc below are short polynomials
 * that GCC inlines and vectorizes. A float reduction (sum, max) is vectorized only if the compiler
 * may reorder it; `#pragma omp simd reduction` grants that for one loop, where -ffast-math would
 * grant it everywhere. float64 kernels call libm's exp and erfc instead: exact, and not the fast
 * path (training runs in float32).
 */
#ifndef MINILLM_VECMATH_H
#define MINILLM_VECMATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

/* exp(x) for float32 within 2 ulp, as Cephes' expf: x = n ln2 + r with |r| <= ln2/2, exp(r) by a
 * degree-7 polynomial, then times 2^n, written straight into the exponent bits as two halves,
 * 2^(n/2) 2^(n - n/2): both are normal floats for every n from -150 to 128, so the product rounds
 * once and, with no test on x, gives what libm and NumPy give at the ends: subnormal results below
 * FLT_MIN (x < -87.34, down to 1.4e-45 at x = -103.97), 0 below that, and inf from x = 88.72 on.
 * (An earlier version took 0 below FLT_MIN and inf from 88.376, in one scale: but 0 and 1e-40 differ
 * once multiplied by an inf, NaN and inf, as in a softmax backward with an infinite gradient.)
 * exp(-inf) = 0, exp(inf) = inf, NaN stays NaN. */
static inline float mll_expf(float x)
{
    const float lo = -104.0f, hi = 89.0f; /* exp rounds to 0 below lo and overflows above hi */
    float c = x < lo ? lo : (x > hi ? hi : x);
    /* n = round(c / ln2): adding and subtracting 1.5 * 2^23 rounds to an integer, in two vector
     * instructions on any x86-64 (roundps needs SSE4.1) */
    float n = (c * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = c - n * 0.693359375f + n * 2.12194440e-4f; /* ln2 in two parts (Cody-Waite) */
    /* exp(r) = 1 + r + r^2 (c0 + c1 r + ... + c5 r^5), the bracket by Estrin's scheme: pairs first,
     * so the dependency chain is 3 multiply-adds deep instead of Horner's 6 */
    float r2 = r * r, r4 = r2 * r2;
    float p = (5.0000001201e-1f + 1.6666665459e-1f * r) + (4.1665795894e-2f + 8.3334519073e-3f * r) * r2
              + (1.3981999507e-3f + 1.9875691500e-4f * r) * r4;
    float y = p * r2 + (r + 1.0f);
    int32_t k = (int32_t)n, half = k >> 1; /* k = half + (k - half), each in [-75, 64] */
    uint32_t bits1 = (uint32_t)(half + 127) << 23, bits2 = (uint32_t)(k - half + 127) << 23;
    float scale1, scale2;
    memcpy(&scale1, &bits1, 4);
    memcpy(&scale2, &bits2, 4);
    return y * scale1 * scale2;
}

/* erfc(z) for float32 and z >= 0, with relative error below 1.2e-7 in exact arithmetic
 * (Numerical Recipes' erfcc, a Chebyshev fit): it stays accurate deep in the tail, where
 * 1 - erf(z) would cancel to nothing. */
static inline float mll_erfcf_pos(float z)
{
    float t = 1.0f / (1.0f + 0.5f * z);
    /* the degree-9 polynomial in t by Estrin's scheme (4 multiply-adds deep, not 9) */
    float t2 = t * t, t4 = t2 * t2, t8 = t4 * t4;
    float p = ((-1.26551223f + 1.00002368f * t) + (0.37409196f + 0.09678418f * t) * t2)
              + ((-0.18628806f + 0.27886807f * t) + (-1.13520398f + 1.48851587f * t) * t2) * t4
              + (-0.82215223f + 0.17087277f * t) * t8;
    return t * mll_expf(p - z * z);
}

static inline float mll_erfcf(float x)
{
    float e = mll_erfcf_pos(fabsf(x));
    return x < 0 ? 2.0f - e : e;
}

/* Row reductions, vectorized by `omp simd` (a no-op pragma when built without OpenMP). */
#define MLL_REDUCTIONS(T, SUFFIX)                                                              \
    static inline T mll_max_##SUFFIX(const T *x, Py_ssize_t n)                                 \
    {                                                                                          \
        T m = -INFINITY;                                                                       \
        _Pragma("omp simd reduction(max:m)") for (Py_ssize_t i = 0; i < n; i++)                \
            m = x[i] > m ? x[i] : m;                                                           \
        return m;                                                                              \
    }                                                                                          \
    static inline T mll_sum_##SUFFIX(const T *x, Py_ssize_t n)                                 \
    {                                                                                          \
        T s = 0;                                                                               \
        _Pragma("omp simd reduction(+:s)") for (Py_ssize_t i = 0; i < n; i++) s += x[i];       \
        return s;                                                                              \
    }                                                                                          \
    static inline T mll_shifted_sum_##SUFFIX(const T *x, T c, Py_ssize_t n)                    \
    {                                                                                          \
        T s = 0;                                                                               \
        _Pragma("omp simd reduction(+:s)") for (Py_ssize_t i = 0; i < n; i++) s += x[i] - c;   \
        return s;                                                                              \
    }                                                                                          \
    static inline T mll_dot_##SUFFIX(const T *x, const T *y, Py_ssize_t n)                     \
    {                                                                                          \
        T s = 0;                                                                               \
        _Pragma("omp simd reduction(+:s)") for (Py_ssize_t i = 0; i < n; i++) s += x[i] * y[i]; \
        return s;                                                                              \
    }

MLL_REDUCTIONS(float, f)
MLL_REDUCTIONS(double, d)

#endif
