/* AdamW over flat float32 buffers, in place: the CUDA twin of minillm/kernels/adamw.py (its
 * docstring has the update, with the bias corrections folded into scalars by the caller).
 *
 * One pass over memory: each thread reads p, g, m, v at VEC consecutive positions (float4 when
 * the host says all four are aligned and n % 4 == 0) and writes p, m, v, in a grid-stride loop.
 * The update is memory-bound; reading each value once is the whole speed-up over the twin's
 * eight passes.
 *
 * Each step is rounded exactly as the NumPy twin running on CuPy rounds it (there, one kernel per
 * NumPy operation, so no operation is ever fused with the next). __fmul_rn and friends keep the
 * compiler from fusing a * b + c into one fma here too, so kernel and twin agree bit for bit.
 */
#include "common.cuh"

template <int VEC>
__device__ void adamw_all(float* __restrict__ p, const float* __restrict__ g, float* __restrict__ m,
                          float* __restrict__ v, long long n, float decay, float one_minus_beta1, float beta2,
                          float one_minus_beta2, float step_size, float bias_correction2_sqrt, float eps)
{
    const long long stride = (long long)gridDim.x * blockDim.x * VEC;
    for (long long i = ((long long)blockIdx.x * blockDim.x + threadIdx.x) * VEC; i < n; i += stride) {
        float pv[VEC], gv[VEC], mv[VEC], vv[VEC];
        load<VEC>(p + i, pv);
        load<VEC>(g + i, gv);
        load<VEC>(m + i, mv);
        load<VEC>(v + i, vv);
#pragma unroll
        for (int k = 0; k < VEC; ++k) {
            pv[k] = __fmul_rn(pv[k], decay);                                              /* p <- p * decay */
            mv[k] = __fadd_rn(mv[k], __fmul_rn(one_minus_beta1, __fsub_rn(gv[k], mv[k])));  /* m += (1-b1)(g-m) */
            vv[k] = __fmul_rn(vv[k], beta2);                                              /* v <- b2 v ... */
            vv[k] = __fadd_rn(vv[k], __fmul_rn(__fmul_rn(one_minus_beta2, gv[k]), gv[k]));  /* ... + (1-b2) g g */
            const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vv[k]), bias_correction2_sqrt), eps);
            pv[k] = __fsub_rn(pv[k], __fdiv_rn(__fmul_rn(step_size, mv[k]), denom));
        }
        store<VEC>(p + i, pv);
        store<VEC>(m + i, mv);
        store<VEC>(v + i, vv);
    }
}

extern "C" __global__ void
adamw_step(float* __restrict__ p, const float* __restrict__ g, float* __restrict__ m, float* __restrict__ v,
           long long n, float decay, float one_minus_beta1, float beta2, float one_minus_beta2, float step_size,
           float bias_correction2_sqrt, float eps, int vec4)
{
    if (vec4)
        adamw_all<4>(p, g, m, v, n, decay, one_minus_beta1, beta2, one_minus_beta2, step_size,
                     bias_correction2_sqrt, eps);
    else
        adamw_all<1>(p, g, m, v, n, decay, one_minus_beta1, beta2, one_minus_beta2, step_size,
                     bias_correction2_sqrt, eps);
}

/* The same update with its scalars read from device memory, s = (decay, 1 - beta1, beta2, 1 - beta2,
 * step_size, bias_correction2_sqrt, eps): a CUDA graph replays each launch with the arguments it was
 * captured with, so the scalars that change every step (the learning rate in decay and step_size,
 * the step in the bias corrections) must be read from memory the host rewrites before each replay
 * (AdamW(capturable=True), minillm/optim/adamw.py). Every thread reads the same 7 floats. */
extern "C" __global__ void
adamw_step_scalars(float* __restrict__ p, const float* __restrict__ g, float* __restrict__ m,
                   float* __restrict__ v, long long n, const float* __restrict__ s, int vec4)
{
    if (vec4)
        adamw_all<4>(p, g, m, v, n, s[0], s[1], s[2], s[3], s[4], s[5], s[6]);
    else
        adamw_all<1>(p, g, m, v, n, s[0], s[1], s[2], s[3], s[4], s[5], s[6]);
}
