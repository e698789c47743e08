/* What the CUDA kernels of minillm share: -inf, warp reductions, vector loads, the dropout bits.
 *
 * The sources are compiled at run time by NVRTC (through CuPy), which has no system headers: no
 * math.h (so no INFINITY macro) and no stdint.h. Everything here uses only CUDA built-ins.
 * minillm/kernels/cuda/__init__.py pastes this file in place of `#include "common.cuh"`, so a
 * change here reaches CuPy's kernel cache (which keys on the source text) like any other change.
 */
#ifndef MINILLM_COMMON_CUH
#define MINILLM_COMMON_CUH

#define MINILLM_NEG_INF __int_as_float(0xff800000)  /* -inf, bit pattern of IEEE float */
#define WARP 32
#define FULL_MASK 0xffffffffu

/* Sum and max over groups of WIDTH consecutive lanes (WIDTH a power of two <= 32): after the
 * butterfly every lane of the group holds the group's result. */
template <int WIDTH = WARP>
__device__ __forceinline__ float group_sum(float v)
{
#pragma unroll
    for (int offset = WIDTH / 2; offset > 0; offset /= 2)
        v += __shfl_xor_sync(FULL_MASK, v, offset, WIDTH);
    return v;
}

template <int WIDTH = WARP>
__device__ __forceinline__ float group_max(float v)
{
#pragma unroll
    for (int offset = WIDTH / 2; offset > 0; offset /= 2)
        v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, offset, WIDTH));
    return v;
}

/* VEC consecutive floats from p into v, and back: one 16-byte access when VEC is 4 (p must then be
 * 16-byte aligned; the host checks), else one float. Row kernels take VEC = 4 when the row length
 * is a multiple of 4 and every pointer is aligned, which is the usual case, and VEC = 1 otherwise. */
template <int VEC>
__device__ __forceinline__ void load(const float* p, float (&v)[VEC])
{
    if constexpr (VEC == 4) {
        const float4 t = *reinterpret_cast<const float4*>(p);
        v[0] = t.x; v[1] = t.y; v[2] = t.z; v[3] = t.w;
    } else {
#pragma unroll
        for (int k = 0; k < VEC; ++k) v[k] = p[k];
    }
}

template <int VEC>
__device__ __forceinline__ void store(float* p, const float (&v)[VEC])
{
    if constexpr (VEC == 4) {
        *reinterpret_cast<float4*>(p) = make_float4(v[0], v[1], v[2], v[3]);
    } else {
#pragma unroll
        for (int k = 0; k < VEC; ++k) p[k] = v[k];
    }
}

/* The counter-based dropout mask, bit for bit as minillm/kernels/dropout.py (read it for the
 * scheme): element `index` is kept iff these 32 bits reach threshold = floor(p * 2^32). The
 * threshold is 64-bit so that p = 1 can say 2^32, which no 32-bit value reaches. */
__device__ __forceinline__ unsigned int dropout_bits(unsigned long long seed, unsigned long long index)
{
    unsigned long long z = seed + (index + 1ull) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z = z ^ (z >> 31);
    return (unsigned int)(z >> 32);
}

__device__ __forceinline__ bool dropout_keep(unsigned long long seed, unsigned long long index,
                                             unsigned long long threshold)
{
    return dropout_bits(seed, index) >= threshold;
}

#endif
