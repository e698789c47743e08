/* Fused attention, forward and backward, in the FlashAttention-2 scheme: the CUDA twin of
 * minillm/kernels/attention.py, whose docstring has the math (and the NumPy twin, the definition).
 *
 * q: (B, H, L, D), k and v: (B, H, S, D), each with any strides for (b, h, row) in elements and a
 * unit stride along D (out, dq laid out by their own strides as well). A block owns one tile of
 * TILE rows of one (b, h) and walks the other side's tiles through shared memory, so no (L, S)
 * matrix ever exists: besides inputs and outputs, memory is the (B, H, L) lse and delta.
 *
 *   attention_forward_*     a block = 64 queries; per 64-key tile: s = q k^T * scale + bias, an
 *                           online softmax (running max m and sum l per row, earlier partial
 *                           outputs rescaled by exp(m_old - m_new)), out += p v. Saves
 *                           lse = m + log l per row.
 *   attention_backward_dot  delta_i = rowsum(g_i * out_i), one warp per query row.
 *   attention_backward_dq_*   a block = 64 queries; per key tile: p = exp(s - lse) recomputed,
 *                           dp = g v^T, ds = p * (dp - delta), dq += ds k * scale.
 *   attention_backward_dkdv_* a block = 64 keys; per query tile: p^T recomputed, dv += p^T g,
 *                           dp^T = v g^T, ds^T, dk += ds^T q * scale.
 * dq and dk, dv come from two kernels that each recompute p, rather than one kernel adding into dq
 * with atomics: more arithmetic, but no atomics and the same bits on every run.
 *
 * Dropout (dropout_p > 0, training) drops the probabilities after the softmax by the counter-based
 * mask of common.cuh, element (b, h, i, j) numbered ((b H + h) L + i) S + j: the backward
 * regenerates the forward's mask from the seed instead of storing it. lse is the softmax's, before
 * dropout; delta = rowsum(g * out) stays right with dropout (kernels/dropout.py).
 *
 * Threads. A block is TY x TX threads; thread (ty, tx) owns tile rows ty + TY i (i < ROWS = 4),
 * of a (TILE, TILE) score tile the columns tx + TX j (j < COLS = TILE / TX), and of a
 * (TILE, D_TILE) output tile OUT = D_TILE / TX columns, in chunks of 4 (out_column). Head sizes up
 * to 32, 64 and 128 (D_TILE) run with TX = 8, 8 and 16 threads across (128, 128, 256 threads a
 * block, 4, 8 and 8 output columns each); a D below its D_TILE is padded with zeros in shared
 * memory. The TX threads sharing a row are neighbouring lanes of one warp, so the row max and sum
 * of a score tile are shuffles.
 * Shared memory rows of a (TILE, D_TILE) tile are D_TILE + 4 floats apart, of a (TILE, TILE) tile
 * TILE + 4: 16-byte aligned for float4 loads, and 4 banks apart so that lanes reading the same
 * column of different rows hit different banks.
 */
#include "common.cuh"

#define TILE 64               /* query rows and keys per tile */
#define TY 16                 /* threads down a tile */
#define ROWS (TILE / TY)      /* tile rows per thread */
#define LDP (TILE + 4)        /* row stride of a (TILE, TILE) tile in shared memory */

template <int D_TILE>
struct Shape {
    static constexpr int TX = D_TILE <= 64 ? 8 : 16;  /* threads across */
    static constexpr int THREADS = TY * TX;
    static constexpr int COLS = TILE / TX;            /* score columns per thread */
    static constexpr int OUT = D_TILE / TX;           /* output columns per thread, in float4 chunks */
    static constexpr int LD = D_TILE + 4;             /* row stride of a (TILE, D_TILE) tile */
};

/* The output column of a thread's k-th value (k < OUT) in a (TILE, D_TILE) tile: chunks of 4
 * columns, the TX threads across covering 4 TX contiguous columns per chunk. */
template <int D_TILE>
__device__ __forceinline__ int out_column(int tx, int k)
{
    return 4 * (Shape<D_TILE>::TX * (k / 4) + tx) + k % 4;
}

/* tile[r][d] = src[(first + r) * row_stride + d], zero past `count` rows or D columns. */
template <int D_TILE>
__device__ void load_tile(float* tile, const float* __restrict__ src, long long row_stride, int first, int count, int D)
{
    for (int e = threadIdx.x; e < TILE * D_TILE; e += Shape<D_TILE>::THREADS) {
        const int r = e / D_TILE, d = e % D_TILE;
        tile[r * Shape<D_TILE>::LD + d] =
            first + r < count && d < D ? src[(long long)(first + r) * row_stride + d] : 0.0f;
    }
}

/* acc[i][j] = sum_d a[ty + TY i][d] * b[tx + TX j][d]: this thread's part of the (TILE, TILE)
 * product a b^T of two (TILE, D_TILE) tiles in shared memory. */
template <int D_TILE>
__device__ __forceinline__ void tile_abt(const float* a, const float* b, float (&acc)[ROWS][Shape<D_TILE>::COLS])
{
    using S = Shape<D_TILE>;
    const int ty = threadIdx.x / S::TX, tx = threadIdx.x % S::TX;
#pragma unroll
    for (int i = 0; i < ROWS; ++i)
#pragma unroll
        for (int j = 0; j < S::COLS; ++j) acc[i][j] = 0.0f;
#pragma unroll 2
    for (int d = 0; d < D_TILE; d += 4) {
        float av[ROWS][4], bv[S::COLS][4];
#pragma unroll
        for (int i = 0; i < ROWS; ++i) load<4>(a + (ty + TY * i) * S::LD + d, av[i]);
#pragma unroll
        for (int j = 0; j < S::COLS; ++j) load<4>(b + (tx + S::TX * j) * S::LD + d, bv[j]);
#pragma unroll
        for (int i = 0; i < ROWS; ++i)
#pragma unroll
            for (int j = 0; j < S::COLS; ++j)
#pragma unroll
                for (int e = 0; e < 4; ++e) acc[i][j] += av[i][e] * bv[j][e];
    }
}

/* acc[i][k] += sum_j p[ty + TY i][j] * v[j][out_column(k)]: this thread's part of the (TILE, D_TILE)
 * product p v of a (TILE, TILE) tile p and a (TILE, D_TILE) tile v in shared memory. */
template <int D_TILE>
__device__ __forceinline__ void tile_ab(const float* p, const float* v, float (&acc)[ROWS][Shape<D_TILE>::OUT])
{
    using S = Shape<D_TILE>;
    const int ty = threadIdx.x / S::TX, tx = threadIdx.x % S::TX;
#pragma unroll 2
    for (int j = 0; j < TILE; j += 4) {
        float pv[ROWS][4];
#pragma unroll
        for (int i = 0; i < ROWS; ++i) load<4>(p + (ty + TY * i) * LDP + j, pv[i]);
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            float vv[S::OUT / 4][4];
#pragma unroll
            for (int c = 0; c < S::OUT / 4; ++c) load<4>(v + (j + e) * S::LD + 4 * (S::TX * c + tx), vv[c]);
#pragma unroll
            for (int i = 0; i < ROWS; ++i)
#pragma unroll
                for (int k = 0; k < S::OUT; ++k) acc[i][k] += pv[i][e] * vv[k / 4][k % 4];
        }
    }
}

/* What a kernel needs to know about the scores: s_ij = (q_i . k_j) * scale + bias[i][j], -inf where
 * key j is masked or past the end, and the dropout applied to p_ij. */
struct Scores {
    const bool* key_mask;  /* (B, S), true = attend; or null */
    const float* bias;     /* (L, S), C-contiguous; or null */
    int L, S;
    float scale;
    unsigned long long seed, threshold;  /* dropout: keep iff bits >= threshold (0: no dropout) */
    float keep_scale;                    /* 1 / (1 - dropout_p), 0 when dropout_p = 1 */

    __device__ __forceinline__ float score(float dot, int b, int i, int j) const
    {
        if (j >= S || (key_mask && !key_mask[(long long)b * S + j])) return MINILLM_NEG_INF;
        float s = dot * scale;
        if (bias && i < L) s += bias[(long long)i * S + j];
        return s;
    }

    /* The factor dropout puts on element (bh, i, j): keep_scale where kept, 0 where dropped. */
    __device__ __forceinline__ float dropout(int bh, int i, int j) const
    {
        const unsigned long long index = ((unsigned long long)bh * L + i) * S + j;
        return dropout_keep(seed, index, threshold) ? keep_scale : 0.0f;
    }
};

/* ---------------------------------------------------------------- forward */

template <int D_TILE>
__device__ void attention_forward(const float* __restrict__ q, long long q_b, long long q_h, long long q_row,
                                  const float* __restrict__ k, long long k_b, long long k_h, long long k_row,
                                  const float* __restrict__ v, long long v_b, long long v_h, long long v_row,
                                  float* __restrict__ out, long long o_b, long long o_h, long long o_row,
                                  float* __restrict__ lse, int H, int D, const Scores sc)
{
    using S = Shape<D_TILE>;
    extern __shared__ float4 shared[];  /* float4: 16-byte alignment for the float4 loads */
    float* const qs = reinterpret_cast<float*>(shared);  /* (TILE, LD) this block's queries */
    float* const ks = qs + TILE * S::LD;                 /* (TILE, LD) the current keys */
    float* const vs = ks + TILE * S::LD;                 /* (TILE, LD) their values */
    float* const ps = vs + TILE * S::LD;                 /* (TILE, LDP) probabilities after dropout */

    const int tiles = (sc.L + TILE - 1) / TILE;
    const int bh = blockIdx.x / tiles, first = blockIdx.x % tiles * TILE;
    const int b = bh / H, h = bh % H;
    const int ty = threadIdx.x / S::TX, tx = threadIdx.x % S::TX;
    const float* const kh = k + b * k_b + h * k_h;
    const float* const vh = v + b * v_b + h * v_h;

    load_tile<D_TILE>(qs, q + b * q_b + h * q_h, q_row, first, sc.L, D);
    float m[ROWS], l[ROWS], acc[ROWS][S::OUT], s[ROWS][S::COLS];
#pragma unroll
    for (int i = 0; i < ROWS; ++i) {
        m[i] = MINILLM_NEG_INF;
        l[i] = 0.0f;
#pragma unroll
        for (int c = 0; c < S::OUT; ++c) acc[i][c] = 0.0f;
    }
    for (int key0 = 0; key0 < sc.S; key0 += TILE) {
        load_tile<D_TILE>(ks, kh, k_row, key0, sc.S, D);
        load_tile<D_TILE>(vs, vh, v_row, key0, sc.S, D);
        __syncthreads();
        tile_abt<D_TILE>(qs, ks, s);
#pragma unroll
        for (int i = 0; i < ROWS; ++i) {
            const int row = first + ty + TY * i;
            float tile_max = MINILLM_NEG_INF;
#pragma unroll
            for (int j = 0; j < S::COLS; ++j) {
                s[i][j] = sc.score(s[i][j], b, row, key0 + tx + S::TX * j);
                tile_max = fmaxf(tile_max, s[i][j]);
            }
            const float m_new = fmaxf(m[i], group_max<S::TX>(tile_max));
            const bool none = m_new == MINILLM_NEG_INF;  /* no key so far: keep p = 0, not exp(NaN) */
            const float alpha = none ? 1.0f : expf(m[i] - m_new);
            float sum = 0.0f;
#pragma unroll
            for (int j = 0; j < S::COLS; ++j) {
                const float p = none ? 0.0f : expf(s[i][j] - m_new);
                sum += p;
                const int col = key0 + tx + S::TX * j;
                ps[(ty + TY * i) * LDP + tx + S::TX * j] =
                    sc.threshold ? p * sc.dropout(bh, row, col) : p;
            }
            l[i] = l[i] * alpha + group_sum<S::TX>(sum);
            m[i] = m_new;
#pragma unroll
            for (int c = 0; c < S::OUT; ++c) acc[i][c] *= alpha;
        }
        __syncthreads();
        tile_ab<D_TILE>(ps, vs, acc);
        __syncthreads();  /* before the next tile overwrites ks, vs, ps */
    }
#pragma unroll
    for (int i = 0; i < ROWS; ++i) {
        const int row = first + ty + TY * i;
        if (row >= sc.L) continue;
        const float inv = l[i] > 0.0f ? 1.0f / l[i] : 0.0f;  /* every key masked: out = 0 */
        float* const o = out + b * o_b + h * o_h + row * o_row;
#pragma unroll
        for (int c = 0; c < S::OUT; ++c) {
            const int d = out_column<D_TILE>(tx, c);
            if (d < D) o[d] = acc[i][c] * inv;
        }
        if (tx == 0) lse[(long long)bh * sc.L + row] = l[i] > 0.0f ? m[i] + logf(l[i]) : MINILLM_NEG_INF;
    }
}

/* ---------------------------------------------------------------- backward */

/* delta[bh * L + i] = sum_d g[b, h, i, d] * out[b, h, i, d], one warp per row. */
extern "C" __global__ void __launch_bounds__(256)
attention_backward_dot(const float* __restrict__ out, long long o_b, long long o_h, long long o_row,
                       const float* __restrict__ g, long long g_b, long long g_h, long long g_row,
                       float* __restrict__ delta, int H, int L, int D, long long rows)
{
    const int lane = threadIdx.x % WARP;
    const long long row = ((long long)blockIdx.x * blockDim.x + threadIdx.x) / WARP;
    if (row >= rows) return;
    const long long bh = row / L, i = row % L, b = bh / H, h = bh % H;
    const float* const o = out + b * o_b + h * o_h + i * o_row;
    const float* const gr = g + b * g_b + h * g_h + i * g_row;
    float sum = 0.0f;
    for (int d = lane; d < D; d += WARP) sum += gr[d] * o[d];
    sum = group_sum(sum);
    if (lane == 0) delta[row] = sum;
}

template <int D_TILE>
__device__ void attention_backward_dq(const float* __restrict__ q, long long q_b, long long q_h, long long q_row,
                                      const float* __restrict__ k, long long k_b, long long k_h, long long k_row,
                                      const float* __restrict__ v, long long v_b, long long v_h, long long v_row,
                                      const float* __restrict__ g, long long g_b, long long g_h, long long g_row,
                                      const float* __restrict__ lse, const float* __restrict__ delta,
                                      float* __restrict__ dq, long long dq_b, long long dq_h, long long dq_row,
                                      int H, int D, const Scores sc)
{
    using S = Shape<D_TILE>;
    extern __shared__ float4 shared[];
    float* const qs = reinterpret_cast<float*>(shared);  /* (TILE, LD) this block's queries */
    float* const gs = qs + TILE * S::LD;                 /* (TILE, LD) their output gradients */
    float* const ks = gs + TILE * S::LD;                 /* (TILE, LD) the current keys */
    float* const vs = ks + TILE * S::LD;                 /* (TILE, LD) their values */
    float* const ds = vs + TILE * S::LD;                 /* (TILE, LDP) ds */

    const int tiles = (sc.L + TILE - 1) / TILE;
    const int bh = blockIdx.x / tiles, first = blockIdx.x % tiles * TILE;
    const int b = bh / H, h = bh % H;
    const int ty = threadIdx.x / S::TX, tx = threadIdx.x % S::TX;
    const float* const kh = k + b * k_b + h * k_h;
    const float* const vh = v + b * v_b + h * v_h;

    load_tile<D_TILE>(qs, q + b * q_b + h * q_h, q_row, first, sc.L, D);
    load_tile<D_TILE>(gs, g + b * g_b + h * g_h, g_row, first, sc.L, D);
    float row_lse[ROWS], row_delta[ROWS], acc[ROWS][S::OUT], s[ROWS][S::COLS], dp[ROWS][S::COLS];
#pragma unroll
    for (int i = 0; i < ROWS; ++i) {
        const int row = first + ty + TY * i;
        row_lse[i] = row < sc.L ? lse[(long long)bh * sc.L + row] : MINILLM_NEG_INF;
        row_delta[i] = row < sc.L ? delta[(long long)bh * sc.L + row] : 0.0f;
#pragma unroll
        for (int c = 0; c < S::OUT; ++c) acc[i][c] = 0.0f;
    }
    for (int key0 = 0; key0 < sc.S; key0 += TILE) {
        load_tile<D_TILE>(ks, kh, k_row, key0, sc.S, D);
        load_tile<D_TILE>(vs, vh, v_row, key0, sc.S, D);
        __syncthreads();
        tile_abt<D_TILE>(qs, ks, s);
        tile_abt<D_TILE>(gs, vs, dp);
#pragma unroll
        for (int i = 0; i < ROWS; ++i) {
            const int row = first + ty + TY * i;
#pragma unroll
            for (int j = 0; j < S::COLS; ++j) {
                const int col = key0 + tx + S::TX * j;
                /* a fully masked row has lse = -inf and no probabilities */
                const float p =
                    row_lse[i] == MINILLM_NEG_INF ? 0.0f : expf(sc.score(s[i][j], b, row, col) - row_lse[i]);
                const float dpj = sc.threshold ? dp[i][j] * sc.dropout(bh, row, col) : dp[i][j];
                ds[(ty + TY * i) * LDP + tx + S::TX * j] = p * (dpj - row_delta[i]);
            }
        }
        __syncthreads();
        tile_ab<D_TILE>(ds, ks, acc);
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < ROWS; ++i) {
        const int row = first + ty + TY * i;
        if (row >= sc.L) continue;
        float* const o = dq + b * dq_b + h * dq_h + row * dq_row;
#pragma unroll
        for (int c = 0; c < S::OUT; ++c) {
            const int d = out_column<D_TILE>(tx, c);
            if (d < D) o[d] = acc[i][c] * sc.scale;
        }
    }
}

/* Here the tile rows are keys and the score columns queries: the transposed view of the dq kernel. */
template <int D_TILE>
__device__ void attention_backward_dkdv(const float* __restrict__ q, long long q_b, long long q_h, long long q_row,
                                        const float* __restrict__ k, long long k_b, long long k_h, long long k_row,
                                        const float* __restrict__ v, long long v_b, long long v_h, long long v_row,
                                        const float* __restrict__ g, long long g_b, long long g_h, long long g_row,
                                        const float* __restrict__ lse, const float* __restrict__ delta,
                                        float* __restrict__ dk, long long dk_b, long long dk_h, long long dk_row,
                                        float* __restrict__ dv, long long dv_b, long long dv_h, long long dv_row,
                                        int H, int D, const Scores sc)
{
    using S = Shape<D_TILE>;
    extern __shared__ float4 shared[];
    float* const ks = reinterpret_cast<float*>(shared);  /* (TILE, LD) this block's keys */
    float* const vs = ks + TILE * S::LD;                 /* (TILE, LD) their values */
    float* const qs = vs + TILE * S::LD;                 /* (TILE, LD) the current queries */
    float* const gs = qs + TILE * S::LD;                 /* (TILE, LD) their output gradients */
    float* const pt = gs + TILE * S::LD;                 /* (TILE, LDP) p^T after dropout, then ds^T */
    float* const lse_s = pt + TILE * LDP;                /* (TILE,) the current queries' lse */
    float* const delta_s = lse_s + TILE;                 /* (TILE,) and delta */

    const int tiles = (sc.S + TILE - 1) / TILE;
    const int bh = blockIdx.x / tiles, first = blockIdx.x % tiles * TILE;
    const int b = bh / H, h = bh % H;
    const int ty = threadIdx.x / S::TX, tx = threadIdx.x % S::TX;
    const float* const qh = q + b * q_b + h * q_h;
    const float* const gh = g + b * g_b + h * g_h;

    load_tile<D_TILE>(ks, k + b * k_b + h * k_h, k_row, first, sc.S, D);
    load_tile<D_TILE>(vs, v + b * v_b + h * v_h, v_row, first, sc.S, D);
    float dk_acc[ROWS][S::OUT], dv_acc[ROWS][S::OUT], s[ROWS][S::COLS], dp[ROWS][S::COLS];
#pragma unroll
    for (int i = 0; i < ROWS; ++i)
#pragma unroll
        for (int c = 0; c < S::OUT; ++c) dk_acc[i][c] = dv_acc[i][c] = 0.0f;
    for (int query0 = 0; query0 < sc.L; query0 += TILE) {
        load_tile<D_TILE>(qs, qh, q_row, query0, sc.L, D);
        load_tile<D_TILE>(gs, gh, g_row, query0, sc.L, D);
        for (int r = threadIdx.x; r < TILE; r += S::THREADS) {
            const bool valid = query0 + r < sc.L;  /* past the end: lse = -inf, so p = 0 */
            lse_s[r] = valid ? lse[(long long)bh * sc.L + query0 + r] : MINILLM_NEG_INF;
            delta_s[r] = valid ? delta[(long long)bh * sc.L + query0 + r] : 0.0f;
        }
        __syncthreads();
        tile_abt<D_TILE>(ks, qs, s);   /* s^T */
        tile_abt<D_TILE>(vs, gs, dp);  /* dp^T = v g^T */
#pragma unroll
        for (int i = 0; i < ROWS; ++i) {
            const int key = first + ty + TY * i;
#pragma unroll
            for (int j = 0; j < S::COLS; ++j) {
                const int r = tx + S::TX * j, query = query0 + r;
                const float p = lse_s[r] == MINILLM_NEG_INF ? 0.0f : expf(sc.score(s[i][j], b, query, key) - lse_s[r]);
                const float drop = sc.threshold ? sc.dropout(bh, query, key) : 1.0f;
                pt[(ty + TY * i) * LDP + r] = p * drop;
                s[i][j] = p * (dp[i][j] * drop - delta_s[r]);  /* ds^T, kept until p^T is used */
            }
        }
        __syncthreads();
        tile_ab<D_TILE>(pt, gs, dv_acc);  /* dv += p^T g */
        __syncthreads();
#pragma unroll
        for (int i = 0; i < ROWS; ++i)
#pragma unroll
            for (int j = 0; j < S::COLS; ++j) pt[(ty + TY * i) * LDP + tx + S::TX * j] = s[i][j];
        __syncthreads();
        tile_ab<D_TILE>(pt, qs, dk_acc);  /* dk += ds^T q */
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < ROWS; ++i) {
        const int key = first + ty + TY * i;
        if (key >= sc.S) continue;
        float* const ok = dk + b * dk_b + h * dk_h + key * dk_row;
        float* const ov = dv + b * dv_b + h * dv_h + key * dv_row;
#pragma unroll
        for (int c = 0; c < S::OUT; ++c) {
            const int d = out_column<D_TILE>(tx, c);
            if (d < D) {
                ok[d] = dk_acc[i][c] * sc.scale;
                ov[d] = dv_acc[i][c];
            }
        }
    }
}

/* ---------------------------------------------------------------- entry points
 * One extern "C" kernel per head-size tile: CuPy launches them by name. The host passes each
 * array as a pointer and its (b, h, row) strides in elements; grid = B * H * tiles blocks, with
 * TILE rows of one (b, h) each; dynamic shared memory as laid out in each kernel above. */

#define HEADS(x) const float* __restrict__ x, long long x##_b, long long x##_h, long long x##_row
#define OUT_HEADS(x) float* __restrict__ x, long long x##_b, long long x##_h, long long x##_row
#define SCORE_PARAMS const bool* __restrict__ key_mask, const float* __restrict__ bias, int H, int L, int S, int D, \
    float scale, unsigned long long seed, unsigned long long threshold, float keep_scale
#define SCORES Scores{key_mask, bias, L, S, scale, seed, threshold, keep_scale}

#define ATTENTION_KERNELS(D_TILE)                                                                             \
    extern "C" __global__ void __launch_bounds__(Shape<D_TILE>::THREADS)                                      \
    attention_forward_##D_TILE(HEADS(q), HEADS(k), HEADS(v), OUT_HEADS(out), float* __restrict__ lse,          \
                               SCORE_PARAMS)                                                                  \
    {                                                                                                         \
        attention_forward<D_TILE>(q, q_b, q_h, q_row, k, k_b, k_h, k_row, v, v_b, v_h, v_row,                 \
                                  out, out_b, out_h, out_row, lse, H, D, SCORES);                             \
    }                                                                                                         \
    extern "C" __global__ void __launch_bounds__(Shape<D_TILE>::THREADS)                                      \
    attention_backward_dq_##D_TILE(HEADS(q), HEADS(k), HEADS(v), HEADS(g), const float* __restrict__ lse,      \
                                   const float* __restrict__ delta, OUT_HEADS(dq), SCORE_PARAMS)              \
    {                                                                                                         \
        attention_backward_dq<D_TILE>(q, q_b, q_h, q_row, k, k_b, k_h, k_row, v, v_b, v_h, v_row,             \
                                      g, g_b, g_h, g_row, lse, delta, dq, dq_b, dq_h, dq_row, H, D, SCORES);  \
    }                                                                                                         \
    extern "C" __global__ void __launch_bounds__(Shape<D_TILE>::THREADS)                                      \
    attention_backward_dkdv_##D_TILE(HEADS(q), HEADS(k), HEADS(v), HEADS(g), const float* __restrict__ lse,    \
                                     const float* __restrict__ delta, OUT_HEADS(dk), OUT_HEADS(dv),           \
                                     SCORE_PARAMS)                                                            \
    {                                                                                                         \
        attention_backward_dkdv<D_TILE>(q, q_b, q_h, q_row, k, k_b, k_h, k_row, v, v_b, v_h, v_row,           \
                                        g, g_b, g_h, g_row, lse, delta, dk, dk_b, dk_h, dk_row,               \
                                        dv, dv_b, dv_h, dv_row, H, D, SCORES);                                \
    }

ATTENTION_KERNELS(32)
ATTENTION_KERNELS(64)
ATTENTION_KERNELS(128)
