/* Row softmax over the last axis, forward and backward: the CUDA twin of minillm/kernels/softmax.py
 * (its docstring has the math). x is (rows, n), C-contiguous.
 *
 * One warp per row, WARPS_PER_BLOCK rows a block, lanes striding along the row (float4 loads when
 * the host says the rows allow them). The forward reads its row twice: the first pass finds the
 * maximum m and the sum s = sum_j exp(x_j - m) together ("online" softmax: when a larger value
 * arrives, the sum so far is rescaled by exp(m_old - m_new)), the second writes exp(x_j - m) / s.
 * The second read mostly hits the L1 cache the first one filled. No shared memory: the warp's
 * partial results meet through shuffles.
 *
 * mask (optional) is additive: row r adds mask[mask_rows[r] + j], so a mask that broadcasts over
 * the leading axes is read in place at its own size (the host computes the row offsets). A row
 * whose values are all -inf (fully masked) gives zeros, not NaN, as the NumPy twin does.
 */
#include "common.cuh"

#define WARPS_PER_BLOCK 8

/* Take x into a running maximum m and sum s of exp(value - m). */
__device__ __forceinline__ void online_add(float& m, float& s, float x)
{
    if (x > m) {
        s = s * expf(m - x) + 1.0f;  /* m = -inf so far: s is 0 and exp(-inf) is 0 */
        m = x;
    } else if (x != MINILLM_NEG_INF) {
        s += expf(x - m);
    }
}

/* Merge another lane's (m2, s2) into (m, s). */
__device__ __forceinline__ void online_merge(float& m, float& s, float m2, float s2)
{
    const float top = fmaxf(m, m2);
    if (top == MINILLM_NEG_INF) return;  /* both saw only -inf: exp(-inf - -inf) would be NaN */
    s = s * expf(m - top) + s2 * expf(m2 - top);
    m = top;
}

/* v = x[j : j + VEC] (+ mask[j : j + VEC] when there is a mask): the scores both passes read. */
template <int VEC>
__device__ __forceinline__ void load_scores(const float* __restrict__ x, const float* __restrict__ mask, int j,
                                            float (&v)[VEC])
{
    load<VEC>(x + j, v);
    if (mask) {
        float add[VEC];
        load<VEC>(mask + j, add);
#pragma unroll
        for (int k = 0; k < VEC; ++k) v[k] += add[k];
    }
}

template <int VEC>
__device__ void softmax_row(const float* __restrict__ x, const float* __restrict__ mask,
                            float* __restrict__ y, int n, int lane)
{
    float m = MINILLM_NEG_INF, s = 0.0f;
    for (int j = lane * VEC; j < n; j += WARP * VEC) {
        float v[VEC];
        load_scores<VEC>(x, mask, j, v);
#pragma unroll
        for (int k = 0; k < VEC; ++k) online_add(m, s, v[k]);
    }
#pragma unroll
    for (int offset = WARP / 2; offset > 0; offset /= 2) {
        const float m2 = __shfl_xor_sync(FULL_MASK, m, offset), s2 = __shfl_xor_sync(FULL_MASK, s, offset);
        online_merge(m, s, m2, s2);
    }
    for (int j = lane * VEC; j < n; j += WARP * VEC) {
        float v[VEC];
        load_scores<VEC>(x, mask, j, v);
#pragma unroll
        for (int k = 0; k < VEC; ++k) v[k] = m == MINILLM_NEG_INF ? 0.0f : expf(v[k] - m) / s;
        store<VEC>(y + j, v);
    }
}

/* dx_j = y_j (g_j - sum_i g_i y_i): one pass for the dot product, one to write. */
template <int VEC>
__device__ void softmax_backward_row(const float* __restrict__ y, const float* __restrict__ g,
                                     float* __restrict__ dx, int n, int lane)
{
    float dot = 0.0f;
    for (int j = lane * VEC; j < n; j += WARP * VEC) {
        float yv[VEC], gv[VEC];
        load<VEC>(y + j, yv);
        load<VEC>(g + j, gv);
#pragma unroll
        for (int k = 0; k < VEC; ++k) dot += gv[k] * yv[k];
    }
    dot = group_sum(dot);
    for (int j = lane * VEC; j < n; j += WARP * VEC) {
        float yv[VEC], gv[VEC];
        load<VEC>(y + j, yv);
        load<VEC>(g + j, gv);
#pragma unroll
        for (int k = 0; k < VEC; ++k) yv[k] = yv[k] * (gv[k] - dot);
        store<VEC>(dx + j, yv);
    }
}

/* Rows are walked grid-stride, a whole warp on one row, so any row count fits any grid. vec4: every
 * row may be read as float4 (n % 4 == 0 and 16-byte aligned pointers). */
extern "C" __global__ void __launch_bounds__(WARPS_PER_BLOCK * WARP)
softmax_forward(const float* __restrict__ x, const float* __restrict__ mask, const long long* __restrict__ mask_rows,
                float* __restrict__ y, long long rows, int n, int vec4)
{
    const int lane = threadIdx.x % WARP;
    for (long long row = (long long)blockIdx.x * WARPS_PER_BLOCK + threadIdx.x / WARP; row < rows;
         row += (long long)gridDim.x * WARPS_PER_BLOCK) {
        const float* row_mask = mask ? mask + mask_rows[row] : nullptr;
        if (vec4)
            softmax_row<4>(x + row * n, row_mask, y + row * n, n, lane);
        else
            softmax_row<1>(x + row * n, row_mask, y + row * n, n, lane);
    }
}

extern "C" __global__ void __launch_bounds__(WARPS_PER_BLOCK * WARP)
softmax_backward(const float* __restrict__ y, const float* __restrict__ g, float* __restrict__ dx,
                 long long rows, int n, int vec4)
{
    const int lane = threadIdx.x % WARP;
    for (long long row = (long long)blockIdx.x * WARPS_PER_BLOCK + threadIdx.x / WARP; row < rows;
         row += (long long)gridDim.x * WARPS_PER_BLOCK) {
        if (vec4)
            softmax_backward_row<4>(y + row * n, g + row * n, dx + row * n, n, lane);
        else
            softmax_backward_row<1>(y + row * n, g + row * n, dx + row * n, n, lane);
    }
}
