/* GELU, exact (erf) and tanh forms, forward and backward, with an optional fused bias add:
 * the CUDA twin of minillm/kernels/gelu.py (its docstring has the formulas).
 *
 *   forward   y = gelu(x + b)          backward  dx = g * gelu'(x + b)
 * x is C-contiguous with `columns` values a row; the bias b (columns,) is added along the rows,
 * as a Linear layer's bias before its activation, so the sum x + b never goes to memory. With
 * b, dx is also the gradient of the pre-activation; the bias's gradient is dx summed over rows.
 *
 * Elementwise: a grid-stride loop, each thread VEC = 4 consecutive values at a time (float4) when
 * the host says the data allows it (n and columns multiples of 4, aligned pointers), else 1.
 */
#include "common.cuh"

#define SQRT_HALF 0.70710678118654752f       /* 1 / sqrt(2) */
#define SQRT_2_OVER_PI 0.79788456080286536f  /* sqrt(2 / pi) */
#define INV_SQRT_2PI 0.39894228040143268f    /* 1 / sqrt(2 pi), the normal density's constant */
#define TANH_CUBIC 0.044715f

__device__ __forceinline__ float gelu(float x, bool tanh_form)
{
    if (tanh_form) return 0.5f * x * (1.0f + tanhf(SQRT_2_OVER_PI * (x + TANH_CUBIC * x * x * x)));
    return 0.5f * x * (1.0f + erff(x * SQRT_HALF));
}

/* d gelu / dx: Phi(x) + x phi(x) exactly; the tanh form's derivative by the chain rule. */
__device__ __forceinline__ float gelu_grad(float x, bool tanh_form)
{
    if (tanh_form) {
        const float t = tanhf(SQRT_2_OVER_PI * (x + TANH_CUBIC * x * x * x));
        return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * SQRT_2_OVER_PI * (1.0f + 3.0f * TANH_CUBIC * x * x);
    }
    return 0.5f * (1.0f + erff(x * SQRT_HALF)) + x * expf(-0.5f * x * x) * INV_SQRT_2PI;
}

/* x[i .. i + VEC) plus its bias, if any (the VEC values share a row: columns % VEC == 0). */
template <int VEC>
__device__ __forceinline__ void load_biased(const float* __restrict__ x, const float* __restrict__ bias,
                                            long long i, int columns, float (&v)[VEC])
{
    load<VEC>(x + i, v);
    if (bias) {
        float b[VEC];
        load<VEC>(bias + i % columns, b);
#pragma unroll
        for (int k = 0; k < VEC; ++k) v[k] += b[k];
    }
}

template <int VEC>
__device__ void gelu_forward_all(const float* __restrict__ x, const float* __restrict__ bias, float* __restrict__ y,
                                 long long n, int columns, bool tanh_form)
{
    const long long stride = (long long)gridDim.x * blockDim.x * VEC;
    for (long long i = ((long long)blockIdx.x * blockDim.x + threadIdx.x) * VEC; i < n; i += stride) {
        float v[VEC];
        load_biased<VEC>(x, bias, i, columns, v);
#pragma unroll
        for (int k = 0; k < VEC; ++k) v[k] = gelu(v[k], tanh_form);
        store<VEC>(y + i, v);
    }
}

template <int VEC>
__device__ void gelu_backward_all(const float* __restrict__ x, const float* __restrict__ bias,
                                  const float* __restrict__ g, float* __restrict__ dx,
                                  long long n, int columns, bool tanh_form)
{
    const long long stride = (long long)gridDim.x * blockDim.x * VEC;
    for (long long i = ((long long)blockIdx.x * blockDim.x + threadIdx.x) * VEC; i < n; i += stride) {
        float v[VEC], gv[VEC];
        load_biased<VEC>(x, bias, i, columns, v);
        load<VEC>(g + i, gv);
#pragma unroll
        for (int k = 0; k < VEC; ++k) v[k] = gv[k] * gelu_grad(v[k], tanh_form);
        store<VEC>(dx + i, v);
    }
}

extern "C" __global__ void
gelu_forward(const float* __restrict__ x, const float* __restrict__ bias, float* __restrict__ y,
             long long n, int columns, int tanh_form, int vec4)
{
    if (vec4)
        gelu_forward_all<4>(x, bias, y, n, columns, tanh_form);
    else
        gelu_forward_all<1>(x, bias, y, n, columns, tanh_form);
}

extern "C" __global__ void
gelu_backward(const float* __restrict__ x, const float* __restrict__ bias, const float* __restrict__ g,
              float* __restrict__ dx, long long n, int columns, int tanh_form, int vec4)
{
    if (vec4)
        gelu_backward_all<4>(x, bias, g, dx, n, columns, tanh_form);
    else
        gelu_backward_all<1>(x, bias, g, dx, n, columns, tanh_form);
}
