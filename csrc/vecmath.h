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

/* exp(x) for float32, within 2 ulp, with exp(-inf) = 0, exp(inf) = inf and NaN kept.
 * x = n ln2 + r with |r| <= ln2/2, exp(r) by Cephes' degree-7 polynomial, then times 2^n built in
 * the exponent bits (as 2^(n/2) * 2^(n - n/2), so that results near overflow or in the subnormal
 * range come out right). */
static inline float mll_expf(float x)
{
    const float lo = -104.0f, hi = 88.72283935546875f; /* exp(lo) rounds to 0, exp(hi) = FLT_MAX */
    float c = x < lo ? lo : (x > hi ? hi : x);
    /* n = round(c / ln2): adding and subtracting 1.5 * 2^23 rounds to an integer (floorf would
     * not vectorize without -fno-trapping-math) */
    float n = (c * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = c - n * 0.693359375f + n * 2.12194440e-4f; /* ln2 in two parts: r is exact */
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    float y = p * r * r + r + 1.0f;
    int32_t n1 = (int32_t)n / 2, n2 = (int32_t)n - n1;
    int32_t b1 = (n1 + 127) << 23, b2 = (n2 + 127) << 23;
    float s1, s2;
    memcpy(&s1, &b1, 4);
    memcpy(&s2, &b2, 4);
    y = y * s1 * s2;
    return x < lo ? 0.0f : (x > hi ? INFINITY : y);
}

/* erfc(z) for float32 and z >= 0, with relative error below 1.2e-7 in exact arithmetic
 * (Numerical Recipes' erfcc, a Chebyshev fit): it stays accurate deep in the tail, where
 * 1 - erf(z) would cancel to nothing. */
static inline float mll_erfcf_pos(float z)
{
    float t = 1.0f / (1.0f + 0.5f * z);
    float p = 0.17087277f;
    p = p * t - 0.82215223f;
    p = p * t + 1.48851587f;
    p = p * t - 1.13520398f;
    p = p * t + 0.27886807f;
    p = p * t - 0.18628806f;
    p = p * t + 0.09678418f;
    p = p * t + 0.37409196f;
    p = p * t + 1.00002368f;
    p = p * t - 1.26551223f;
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
    static inline T mll_dot_##SUFFIX(const T *x, const T *y, Py_ssize_t n)                     \
    {                                                                                          \
        T s = 0;                                                                               \
        _Pragma("omp simd reduction(+:s)") for (Py_ssize_t i = 0; i < n; i++) s += x[i] * y[i]; \
        return s;                                                                              \
    }

MLL_REDUCTIONS(float, f)
MLL_REDUCTIONS(double, d)

#endif
