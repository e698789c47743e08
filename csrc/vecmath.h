/* Vectorizable math for the compiled kernels: the few things Cython cannot say.
 *
 * GCC turns a loop into SIMD code only when every call in it has a vector version. libm's expf
 * and erfcf have none here (glibc declares its vector versions only under -ffast-math, which we
 * refuse because it breaks -inf masks), so the float32 exp and normal CDF (GELU's erfc) below are
 * short polynomials that GCC inlines and vectorizes. A float reduction (sum, max) is vectorized
 * only if the compiler may reorder it, which -ffast-math would grant everywhere: the row reductions
 * are here for that, written in vectors of their own (MLL_ROW_REDUCE below), and layer norm's
 * backward sums, one loop under `#pragma omp simd reduction`, which grants it for that loop.
 * float64 kernels call libm's exp and erfc instead: exact, and not the fast path (training runs
 * in float32).
 */
#ifndef MINILLM_VECMATH_H
#define MINILLM_VECMATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

/* exp(x) for float32 within 1.3 ulp of libm's double exp (every float32 x with a normal result), as
 * Cephes' expf: x = n ln2 + r with |r| <= ln2/2, exp(r) by a degree-6 polynomial, then times 2^n,
 * written straight into the exponent bits as two halves, 2^(n/2) 2^(n - n/2): both are normal
 * floats for every n from -150 to 128, so the product rounds once and, with no test on x, gives what
 * libm and NumPy give at the ends: subnormal results below FLT_MIN (x < -87.34, down to 1.4e-45 at
 * x = -103.97), 0 below that, and inf from x = 88.72 on. (An earlier version took 0 below FLT_MIN
 * and inf from 88.376, in one scale: but 0 and 1e-40 differ once multiplied by an inf, NaN and inf,
 * as in a softmax backward with an infinite gradient.) exp(-inf) = 0, exp(inf) = inf, NaN stays NaN. */
#define MLL_EXP_LO -104.0f /* exp rounds to 0 below this */
#define MLL_EXP_HI 89.0f    /* and overflows above this */

/* exp(c) for c already in [MLL_EXP_LO, MLL_EXP_HI] (or NaN): the callers below clamp. */
static inline float mll_exp_clamped_f(float c)
{
    /* n = round(c / ln2): adding and subtracting 1.5 * 2^23 rounds to an integer, in two vector
     * instructions on any x86-64 (roundps needs SSE4.1) */
    float n = (c * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = c - n * 0.693359375f + n * 2.12194440e-4f; /* ln2 in two parts (Cody-Waite) */
    /* exp(r) = 1 + r + r^2 (c0 + c1 r + ... + c4 r^4), minimax in relative error: 3e-9, below
     * float32's rounding (Cephes' degree 7 gains nothing in float32: 1.3 ulp either way); the bracket
     * by Horner's scheme, the fewest operations (the normal CDF's comment below says why) */
    float r2 = r * r;
    float p = 1.3814612128e-3f;
    p = p * r + 8.3687101336e-3f;
    p = p * r + 4.1668387400e-2f;
    p = p * r + 1.6666520687e-1f;
    p = p * r + 4.9999993451e-1f;
    float y = p * r2 + (r + 1.0f);
    int32_t k = (int32_t)n, half = k >> 1; /* k = half + (k - half), each in [-75, 64] */
    uint32_t bits1 = (uint32_t)(half + 127) << 23, bits2 = (uint32_t)(k - half + 127) << 23;
    float scale1, scale2;
    memcpy(&scale1, &bits1, 4);
    memcpy(&scale2, &bits2, 4);
    return y * scale1 * scale2;
}

static inline float mll_expf(float x)
{
    return mll_exp_clamped_f(x < MLL_EXP_LO ? MLL_EXP_LO : (x > MLL_EXP_HI ? MLL_EXP_HI : x));
}

/* exp(-x^2 / 2), GELU's gauss below: the argument is never above 0, so one bound, a compare and a
 * mask where the two-sided clamp that keeps NaN is a ten-instruction blend. GELU on (4096 * 1536,)
 * float32, 2 threads, AMD EPYC Zen 3, AVX2: forward 3.83 -> 3.62 ms, backward 4.52 -> 4.20 ms.
 * A NaN x gives exp(MLL_EXP_LO) = 0, not NaN; the NaN reaches Phi(x) through t instead. */
static inline float mll_gauss_f(float x)
{
    float a = -0.5f * x * x;
    return mll_exp_clamped_f(a > MLL_EXP_LO ? a : MLL_EXP_LO);
}

/* The standard normal distribution in float32, for GELU: Phi(x) = erfc(-x / sqrt 2) / 2, its CDF,
 * from gauss = exp(-x^2 / 2), which the caller computes once (mll_gauss_f) and GELU's backward reuses
 * for the density phi(x) = gauss / sqrt(2 pi): one exp per element in the backward, not two.
 *
 * The tail Phi(-|x|) = t R(t) exp(-x^2 / 2) with t = 1 / (1 + b |x|), b = 0.4 / sqrt 2, and R a
 * degree-8 polynomial in t, fitted (Lawson's weighted least squares, minimax in relative error) to
 * erfc(z) exp(z^2) / (2 t) on all of 0 < t <= 1, i.e. 0 <= |x| < inf: relative error 1.3e-7 in exact
 * arithmetic, 3e-7 evaluated in float32 (Numerical Recipes' erfcc has the same form with exp(P(t))
 * for R, an exp more per element). A relative error, so it stays accurate deep in the left tail, where
 * 1 + erf(x / sqrt 2) cancels to nothing (torch's float32 GELU is 2e-4 off at x = -3); the caller's
 * exp(-x^2 / 2) adds |x^2 / 2| * 6e-8 for the rounding of x^2 (1e-5 at x = -20). The right half is
 * 1 - Phi(-x), where the subtraction loses nothing (Phi(-x) <= 1/2).
 * NaN stays NaN; at x = +-inf, t = 0 and gauss = 0, so Phi = 1 and 0.
 * Both polynomials, exp's and R, by Horner's scheme. A loop over independent
 * elements is bound by how many operations it issues, not by one element's chain of dependent
 * multiply-adds: out-of-order execution overlaps the chains of successive vectors. Estrin's scheme
 * (pairs first: 4 multiply-adds deep instead of 8) added 4 multiplies for the powers of t and r:
 * GELU's forward on (1024 * 3072,) float32, AMD EPYC Zen 4, zmm, one thread, 1.99 -> 1.80 ms
 * with Horner's (two threads 1.01 -> 0.92), the same error (exp 1.27 -> 1.26 ulp at most over every
 * float32 with a normal result; Phi 4e-6 relative at most on [-13, 8], x^2's rounding). */
static inline float mll_normal_cdf_f(float x, float gauss)
{
    float t = 1.0f / (1.0f + 0.282842712f * fabsf(x));
    /* R(t) by Horner's scheme: 8 multiply-adds */
    float r = 0.0251310674f;
    r = r * t - 0.0914507519f;
    r = r * t + 0.0845427446f;
    r = r * t - 0.0028037909f;
    r = r * t + 0.070715727f;
    r = r * t + 0.0842709866f;
    r = r * t + 0.10392135f;
    r = r * t + 0.112834799f;
    r = r * t + 0.112837931f;
    float tail = t * r * gauss;
    return x < 0 ? tail : 1.0f - tail;
}

/* Declares T s = COMBINE of TERM(T, i) over i < n, from INIT (the caller returns it), with four
 * running values of one register each, GCC's vector extension: a zmm (16 floats) at AVX-512, a ymm
 * (8) below it (a 64-byte vector at AVX2, two ymm, compiled to slower code: layer norm's forward
 * took twice the time). TERM(V, i) is the term at index i as V, a Vector or a T (MLL_LOAD reads
 * either); VCOMBINE combines Vectors, COMBINE Ts. The four chains of dependent adds overlap, where
 * one running sum waits out each add's latency (4 cycles), and at the end the four are combined
 * vector by vector, then the lanes in a tree, log2(lanes) deep.
 * Layer norm's forward, two such sums per row, was bound by those chains: a row of 384 floats was a
 * chain of 24 adds at AVX-512 and 48 at AVX2 (Intel Xeon, family 6 model 167, (4096, 384) float32:
 * one thread at AVX-512 0.61 -> 0.48 ms, two at AVX2 0.55 -> 0.40 ms). And `omp simd reduction`,
 * which the other reductions used, folds its lanes one by one through memory at the end of each
 * row: 16 dependent adds for every row of attention's 128 scores, as many as the row's own work. */
#ifdef __AVX512F__
#define MLL_VECTOR_BYTES 64
#else
#define MLL_VECTOR_BYTES 32
#endif
#define MLL_LOAD(V, p) __extension__({ V loaded_; memcpy(&loaded_, (p), sizeof loaded_); loaded_; })
#define MLL_ROW_REDUCE(T, INIT, TERM, VCOMBINE, COMBINE)                                       \
    typedef T Vector __attribute__((vector_size(MLL_VECTOR_BYTES)));                           \
    enum { LANES = sizeof(Vector) / sizeof(T) };                                               \
    Vector a0 = (Vector){0} + (T)(INIT), a1 = a0, a2 = a0, a3 = a0;                            \
    Py_ssize_t i = 0;                                                                          \
    for (; i + 4 * LANES <= n; i += 4 * LANES) {                                               \
        a0 = VCOMBINE(a0, TERM(Vector, i));                                                    \
        a1 = VCOMBINE(a1, TERM(Vector, i + LANES));                                            \
        a2 = VCOMBINE(a2, TERM(Vector, i + 2 * LANES));                                        \
        a3 = VCOMBINE(a3, TERM(Vector, i + 3 * LANES));                                        \
    }                                                                                          \
    for (; i + LANES <= n; i += LANES)                                                         \
        a0 = VCOMBINE(a0, TERM(Vector, i));                                                    \
    a0 = VCOMBINE(VCOMBINE(a0, a1), VCOMBINE(a2, a3));                                         \
    T lane[LANES];                                                                             \
    memcpy(lane, &a0, sizeof lane);                                                            \
    for (int width = LANES / 2; width > 0; width /= 2)                                         \
        for (int l = 0; l < width; l++)                                                        \
            lane[l] = COMBINE(lane[l], lane[l + width]);                                       \
    T s = lane[0];                                                                             \
    for (; i < n; i++)                                                                         \
        s = COMBINE(s, TERM(T, i));
#define MLL_ADD(a, b) ((a) + (b))
/* max as `b > a ? b : a`, so a NaN term is passed over, as libm's fmax does; for Vectors a blend
 * (C has no ?: on vectors), the comparison's lanes being all ones or all zeros */
#define MLL_MAX(a, b) ((b) > (a) ? (b) : (a))
#define MLL_VMAX(a, b)                                                                         \
    __extension__({                                                                            \
        __typeof__(a) a_ = (a), b_ = (b);                                                      \
        __typeof__(b_ > a_) more_ = b_ > a_;                                                   \
        (__typeof__(a_))((more_ & (__typeof__(more_))b_) | (~more_ & (__typeof__(more_))a_));   \
    })
#define MLL_PLAIN(V, i) MLL_LOAD(V, x + (i))
#define MLL_SHIFTED(V, i) (MLL_LOAD(V, x + (i)) - c)
#define MLL_SHIFTED_SQUARE(V, i) (MLL_SHIFTED(V, i) * MLL_SHIFTED(V, i))
#define MLL_PRODUCT(V, i) (MLL_LOAD(V, x + (i)) * MLL_LOAD(V, y + (i)))

/* Row reductions, and the two steps of a softmax row, each a write and a reduction of what it wrote
 * (still in cache): y = x + add and its max (a masked row's scores), then y = exp(x - c) and its
 * sum; y may be x. The scale by 1 / sum is the caller's:
 * softmax makes its third pass, attention scales its (rows, D) output, not its (rows, S)
 * probabilities. EXP is vecmath's float32 exp, or libm's exp for float64. */
#define MLL_REDUCTIONS(T, SUFFIX, EXP)                                                         \
    static inline T mll_max_##SUFFIX(const T *x, Py_ssize_t n)                                 \
    {                                                                                          \
        MLL_ROW_REDUCE(T, -INFINITY, MLL_PLAIN, MLL_VMAX, MLL_MAX)                             \
        return s;                                                                              \
    }                                                                                          \
    static inline T mll_sum_##SUFFIX(const T *x, Py_ssize_t n)                                 \
    {                                                                                          \
        MLL_ROW_REDUCE(T, 0, MLL_PLAIN, MLL_ADD, MLL_ADD)                                      \
        return s;                                                                              \
    }                                                                                          \
    static inline T mll_shifted_sum_##SUFFIX(const T *x, T c, Py_ssize_t n)                    \
    {                                                                                          \
        MLL_ROW_REDUCE(T, 0, MLL_SHIFTED, MLL_ADD, MLL_ADD)                                    \
        return s;                                                                              \
    }                                                                                          \
    static inline T mll_shifted_sumsq_##SUFFIX(const T *x, T c, Py_ssize_t n)                  \
    {                                                                                          \
        MLL_ROW_REDUCE(T, 0, MLL_SHIFTED_SQUARE, MLL_ADD, MLL_ADD)                             \
        return s;                                                                              \
    }                                                                                          \
    static inline T mll_dot_##SUFFIX(const T *x, const T *y, Py_ssize_t n)                     \
    {                                                                                          \
        MLL_ROW_REDUCE(T, 0, MLL_PRODUCT, MLL_ADD, MLL_ADD)                                    \
        return s;                                                                              \
    }                                                                                          \
    static inline T mll_add_max_##SUFFIX(T *y, const T *x, const T *add, Py_ssize_t n)        \
    {                                                                                          \
        for (Py_ssize_t i = 0; i < n; i++)                                                     \
            y[i] = x[i] + add[i];                                                              \
        return mll_max_##SUFFIX(y, n);                                                         \
    }                                                                                          \
    static inline T mll_exp_sum_##SUFFIX(T *y, const T *x, T c, Py_ssize_t n)                 \
    {                                                                                          \
        for (Py_ssize_t i = 0; i < n; i++)                                                     \
            y[i] = EXP(x[i] - c);                                                              \
        return mll_sum_##SUFFIX(y, n);                                                         \
    }

MLL_REDUCTIONS(float, f, mll_expf)
MLL_REDUCTIONS(double, d, exp)


/* Layer norm's backward over one row, the part with sums (minillm/kernels/layer_norm.py derives it),
 * in one pass: with xhat = (x - mu) r and dxhat = g w (g where w is NULL), adds g xhat into dw and g
 * into db, and returns in sums[0], sums[1] the row sums of dxhat and dxhat xhat that dx needs. With a
 * w, dxhat is also stored in dxhat_row (the caller's dx row; xhat the caller recomputes): the dx pass
 * must take the very dxhat that was summed, since dx = r (dxhat - mean(dxhat) - ...) cancels it
 * against its mean. Recomputed there, g w - mean(dxhat) became one fused multiply-add, which keeps
 * the product unrounded: on a row of one element (dx = 0 exactly, as the NumPy twin gives) dx was
 * r times g w's rounding error (1.4 at rstd 1e6), and where g w overflows, 1e60 - inf = -inf, not NaN.
 * The store keeps the product rounded: GCC fuses a product only where all its uses are adds. dx must
 * not overlap g or x (this pass writes it before the dx pass reads them; the wrapper's dx is new).
 * One loop, so `omp simd` may vectorize both sums (the reason this is C). */
#define MLL_LAYER_NORM_SUMS(T, SUFFIX)                                                                \
    static inline void mll_layer_norm_sums_##SUFFIX(const T *g, const T *x, const T *w, T mu, T r,  \
                                                     T *dw, T *db, T *dxhat_row, Py_ssize_t n,      \
                                                     T *sums)                                       \
    {                                                                                               \
        T s1 = 0, s2 = 0;                                                                           \
        if (w != NULL) {                                                                            \
            _Pragma("omp simd reduction(+:s1, s2)") for (Py_ssize_t i = 0; i < n; i++) {            \
                T xhat = (x[i] - mu) * r, dxhat = g[i] * w[i];                                      \
                dxhat_row[i] = dxhat;                                                               \
                dw[i] += g[i] * xhat;                                                               \
                db[i] += g[i];                                                                      \
                s1 += dxhat;                                                                        \
                s2 += dxhat * xhat;                                                                 \
            }                                                                                       \
        } else {                                                                                    \
            _Pragma("omp simd reduction(+:s1, s2)") for (Py_ssize_t i = 0; i < n; i++) {            \
                T xhat = (x[i] - mu) * r;                                                           \
                dw[i] += g[i] * xhat;                                                               \
                db[i] += g[i];                                                                      \
                s1 += g[i];                                                                         \
                s2 += g[i] * xhat;                                                                  \
            }                                                                                       \
        }                                                                                           \
        sums[0] = s1;                                                                               \
        sums[1] = s2;                                                                               \
    }

MLL_LAYER_NORM_SUMS(float, f)
MLL_LAYER_NORM_SUMS(double, d)

#endif
