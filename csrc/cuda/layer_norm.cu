/* Layer norm over the rows of x (R, N), forward and backward: the CUDA twin of
 * minillm/kernels/layer_norm.py (its docstring derives the backward term by term).
 *
 * forward   one warp per row, WARPS_PER_BLOCK rows a block: the mean, then the variance of the
 *           centered row (two passes, as the NumPy twin: steadier than E[x^2] - mean^2), then
 *           y = (x - mean) * rstd * w + b. mean and rstd are kept for the backward.
 * backward  dx is a reduction along each row: one warp per row again. dweight and dbias are
 *           reductions down each column: layer_norm_backward_columns gives each block 32 columns
 *           (a warp reads 128 contiguous bytes of a row) and one chunk of rows, 8 warps walking
 *           its rows, and writes one partial sum per chunk; layer_norm_backward_finish adds the
 *           chunks' sums in order. No atomics: every run gives the same bits.
 * All arrays are C-contiguous; weight and bias may be null (no affine transform).
 */
#include "common.cuh"

#define WARPS_PER_BLOCK 8
#define COLUMNS 32    /* columns per block of the column sums, one per lane */
#define ROW_WARPS 8   /* warps per block of the column sums, each on every 8th row of the chunk */

template <int VEC>
__device__ void layer_norm_row(const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ b,
                               float eps, float* __restrict__ y, float* __restrict__ mean_out,
                               float* __restrict__ rstd_out, int n, int lane)
{
    float sum = 0.0f;
    for (int j = lane * VEC; j < n; j += WARP * VEC) {
        float v[VEC];
        load<VEC>(x + j, v);
#pragma unroll
        for (int k = 0; k < VEC; ++k) sum += v[k];
    }
    const float mean = group_sum(sum) / n;
    float squares = 0.0f;
    for (int j = lane * VEC; j < n; j += WARP * VEC) {
        float v[VEC];
        load<VEC>(x + j, v);
#pragma unroll
        for (int k = 0; k < VEC; ++k) squares += (v[k] - mean) * (v[k] - mean);
    }
    const float rstd = 1.0f / sqrtf(group_sum(squares) / n + eps);
    for (int j = lane * VEC; j < n; j += WARP * VEC) {
        float v[VEC], wv[VEC], bv[VEC];
        load<VEC>(x + j, v);
        if (w) load<VEC>(w + j, wv);
        if (b) load<VEC>(b + j, bv);
#pragma unroll
        for (int k = 0; k < VEC; ++k) {
            v[k] = (v[k] - mean) * rstd;
            if (w) v[k] *= wv[k];
            if (b) v[k] += bv[k];
        }
        store<VEC>(y + j, v);
    }
    if (lane == 0) {
        *mean_out = mean;
        *rstd_out = rstd;
    }
}

/* dxhat = g * w (g without a weight) and xhat = (x - mean) * rstd at j .. j + VEC: what both passes
 * of the backward read. The product rounded (__fmul_rn, which nvcc never fuses into an FMA), so both
 * passes read the same dxhat: the second cancels it against mean(dxhat), and a g * w - mean_dxhat
 * fused there would leave g * w's rounding error times rstd (dx of a one-element row is 0 exactly),
 * or -inf where g * w overflows to inf in the first pass's sum (csrc/vecmath.h, the CPU twin). */
template <int VEC>
__device__ __forceinline__ void load_dxhat_xhat(const float* __restrict__ g, const float* __restrict__ x,
                                                const float* __restrict__ w, float mean, float rstd, int j,
                                                float (&dxhat)[VEC], float (&xhat)[VEC])
{
    load<VEC>(g + j, dxhat);
    load<VEC>(x + j, xhat);
    float wv[VEC];
    if (w) load<VEC>(w + j, wv);
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
        if (w) dxhat[k] = __fmul_rn(dxhat[k], wv[k]);
        xhat[k] = (xhat[k] - mean) * rstd;
    }
}

/* dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)), dxhat = g * w. */
template <int VEC>
__device__ void layer_norm_backward_row(const float* __restrict__ g, const float* __restrict__ x,
                                        const float* __restrict__ w, float mean, float rstd,
                                        float* __restrict__ dx, int n, int lane)
{
    float sum_dxhat = 0.0f, sum_dxhat_xhat = 0.0f;
    for (int j = lane * VEC; j < n; j += WARP * VEC) {
        float dxhat[VEC], xhat[VEC];
        load_dxhat_xhat<VEC>(g, x, w, mean, rstd, j, dxhat, xhat);
#pragma unroll
        for (int k = 0; k < VEC; ++k) {
            sum_dxhat += dxhat[k];
            sum_dxhat_xhat += dxhat[k] * xhat[k];
        }
    }
    const float mean_dxhat = group_sum(sum_dxhat) / n;           /* the gradient through the mean */
    const float mean_dxhat_xhat = group_sum(sum_dxhat_xhat) / n; /* ... and through rstd */
    for (int j = lane * VEC; j < n; j += WARP * VEC) {
        float dxhat[VEC], xhat[VEC];
        load_dxhat_xhat<VEC>(g, x, w, mean, rstd, j, dxhat, xhat);
#pragma unroll
        for (int k = 0; k < VEC; ++k) xhat[k] = rstd * (dxhat[k] - mean_dxhat - xhat[k] * mean_dxhat_xhat);
        store<VEC>(dx + j, xhat);
    }
}

/* vec4: rows may be read as float4 (n % 4 == 0 and 16-byte aligned pointers). */
extern "C" __global__ void __launch_bounds__(WARPS_PER_BLOCK * WARP)
layer_norm_forward(const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ b, float eps,
                   float* __restrict__ y, float* __restrict__ mean, float* __restrict__ rstd,
                   long long rows, int n, int vec4)
{
    const int lane = threadIdx.x % WARP;
    for (long long row = (long long)blockIdx.x * WARPS_PER_BLOCK + threadIdx.x / WARP; row < rows;
         row += (long long)gridDim.x * WARPS_PER_BLOCK) {
        if (vec4)
            layer_norm_row<4>(x + row * n, w, b, eps, y + row * n, mean + row, rstd + row, n, lane);
        else
            layer_norm_row<1>(x + row * n, w, b, eps, y + row * n, mean + row, rstd + row, n, lane);
    }
}

extern "C" __global__ void __launch_bounds__(WARPS_PER_BLOCK * WARP)
layer_norm_backward(const float* __restrict__ g, const float* __restrict__ x, const float* __restrict__ w,
                    const float* __restrict__ mean, const float* __restrict__ rstd, float* __restrict__ dx,
                    long long rows, int n, int vec4)
{
    const int lane = threadIdx.x % WARP;
    for (long long row = (long long)blockIdx.x * WARPS_PER_BLOCK + threadIdx.x / WARP; row < rows;
         row += (long long)gridDim.x * WARPS_PER_BLOCK) {
        if (vec4)
            layer_norm_backward_row<4>(g + row * n, x + row * n, w, mean[row], rstd[row], dx + row * n, n, lane);
        else
            layer_norm_backward_row<1>(g + row * n, x + row * n, w, mean[row], rstd[row], dx + row * n, n, lane);
    }
}

/* Block (COLUMNS, ROW_WARPS), grid (ceil(n / COLUMNS), chunks): partial sums over one chunk of rows
 * of dweight = sum_r g * xhat and dbias = sum_r g, written to row blockIdx.y of the (chunks, n) parts. */
extern "C" __global__ void __launch_bounds__(COLUMNS * ROW_WARPS)
layer_norm_backward_columns(const float* __restrict__ g, const float* __restrict__ x,
                            const float* __restrict__ mean, const float* __restrict__ rstd,
                            float* __restrict__ dweight_parts, float* __restrict__ dbias_parts,
                            long long rows, int n, long long rows_per_chunk)
{
    __shared__ float dweight[ROW_WARPS][COLUMNS], dbias[ROW_WARPS][COLUMNS];
    const int col = blockIdx.x * COLUMNS + threadIdx.x;
    const long long first = blockIdx.y * rows_per_chunk;
    const long long last = min(first + rows_per_chunk, rows);
    float sum_w = 0.0f, sum_b = 0.0f;
    if (col < n) {
        for (long long r = first + threadIdx.y; r < last; r += ROW_WARPS) {
            const float gv = g[r * n + col];
            sum_w += gv * ((x[r * n + col] - mean[r]) * rstd[r]);
            sum_b += gv;
        }
    }
    dweight[threadIdx.y][threadIdx.x] = sum_w;
    dbias[threadIdx.y][threadIdx.x] = sum_b;
    __syncthreads();
    if (threadIdx.y == 0 && col < n) {
        for (int k = 1; k < ROW_WARPS; ++k) {
            sum_w += dweight[k][threadIdx.x];
            sum_b += dbias[k][threadIdx.x];
        }
        dweight_parts[blockIdx.y * (long long)n + col] = sum_w;
        dbias_parts[blockIdx.y * (long long)n + col] = sum_b;
    }
}

/* One thread per column: the sum of the chunks' partial sums, in chunk order. */
extern "C" __global__ void
layer_norm_backward_finish(const float* __restrict__ dweight_parts, const float* __restrict__ dbias_parts,
                           float* __restrict__ dweight, float* __restrict__ dbias, int chunks, int n)
{
    const int col = blockIdx.x * blockDim.x + threadIdx.x;
    if (col >= n) return;
    float sum_w = 0.0f, sum_b = 0.0f;
    for (int k = 0; k < chunks; ++k) {
        sum_w += dweight_parts[(long long)k * n + col];
        sum_b += dbias_parts[(long long)k * n + col];
    }
    dweight[col] = sum_w;
    dbias[col] = sum_b;
}
