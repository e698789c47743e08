# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Fused scaled-dot-product attention, compiled twin of minillm/kernels/attention.py (read that
first: the shapes, and the backward's math, are there).

Each (batch, head) pair is one task of an OpenMP prange. A task walks its L query rows in blocks
of `block` rows; per block it computes the block's (block, S) scores with one BLAS call into a
per-thread scratch, masks them, exponentiates them row by row, multiplies by V with a second BLAS
call and divides each output row by its sum of exponentials. The forward keeps only
lse = log sum_j exp(s_ij) per row; the backward recomputes each block's probabilities as
exp(s - lse) and accumulates dK and dV over the blocks. So memory beyond the inputs and outputs
is threads * 2 * block * S scratch values: it grows with S, never with L * S (the FlashAttention
scheme, with whole key rows per block, since a row of S scores fits in cache on a CPU). The
masked keys at the end of a padded sequence are skipped where _keys_to_compute() finds that exact.

Dropout on the probabilities (training) follows the same rule: no (L, S) mask is ever stored. While
a block's probabilities sit in the scratch, each one is kept or zeroed by a hash of (seed, its
logical index), csrc/dropout_mask.h; the backward hashes the same indices again and gets the same
mask (minillm/kernels/dropout.py says why this scheme).

Threads: BLAS calls are single-threaded inside the prange (see minillm/kernels/blas.py), so all
cores work on different (batch, head) pairs and no two thread pools compete.

Every operand may be strided on its batch, head and row axes (the wrapper makes the last axis
contiguous): BERT's heads, q = x.reshape(B, L, H, D).transpose(0, 2, 1, 3), are read in place.
"""
from cython.parallel cimport prange, threadid
from libc.float cimport DBL_MAX, FLT_MAX
from libc.math cimport INFINITY, fabs, log, logf
from libc.stdint cimport int64_t, uint64_t

from blas cimport gemm
from vecmath cimport real, row_add_max, row_dot, row_exp_sum, row_max, vexp


cdef extern from "dropout_mask.h" nogil:
    bint mll_dropout_keep(uint64_t seed, uint64_t index, uint64_t threshold)


cdef struct Dropout:  # the mask of minillm/kernels/dropout.py
    bint on  # False: no dropout, the rows are left as they are
    uint64_t seed
    uint64_t threshold  # keep iff bits >= threshold = floor(p * 2^32)
    double scale  # 1 / (1 - p), 0 when p = 1


cdef Dropout _dropout(tuple dropout):
    """The Dropout for the kernel from the wrapper's None or (seed, threshold, scale)."""
    cdef Dropout drop
    drop.on = dropout is not None
    drop.seed, drop.threshold, drop.scale = dropout if drop.on else (0, 0, 1.0)
    return drop


cdef inline void _drop_row(real* row, Py_ssize_t n, Dropout drop, uint64_t first) noexcept nogil:
    """row[j] *= m_j = keep_j / (1 - p), for the row whose first element has logical index `first`."""
    cdef real scale = <real>drop.scale
    cdef Py_ssize_t j
    for j in range(n):
        row[j] = row[j] * (scale if mll_dropout_keep(drop.seed, first + j, drop.threshold) else 0)


cdef inline void _drop_grad_row(real* p, real* dp, Py_ssize_t n, real delta, Dropout drop,
                                uint64_t first) noexcept nogil:
    """The backward through dropout of one row, with m_j = keep_j / (1 - p) regenerated:
    dp <- ds = p * (dp * m - delta) (dropout's backward, then softmax's), and p <- p * m (for dV)."""
    cdef real scale = <real>drop.scale, m
    cdef Py_ssize_t j
    for j in range(n):
        m = scale if mll_dropout_keep(drop.seed, first + j, drop.threshold) else 0
        dp[j] = p[j] * (dp[j] * m - delta)
        p[j] = p[j] * m


cdef inline real _log(real x) noexcept nogil:
    if real is float:
        return logf(x)
    else:
        return log(x)


cdef inline double _max_abs(const real* x, int ld, int rows, int cols) noexcept nogil:
    """max |x| over the (rows, cols) block at x (row stride ld): inf if it holds an inf or a NaN."""
    cdef Py_ssize_t i, j
    cdef double a, top = 0
    for i in range(rows):
        for j in range(cols):
            a = fabs(x[i * ld + j])
            if not a <= top:  # larger, or NaN
                top = INFINITY if a != a else a
    return top


cdef inline int _keys_to_compute(const real* key_bias, int s_len, const real* q, int ldq, int l_len,
                                 int d, const real* k, int ldk, const real* v, int ldv, const real* bias,
                                 real scale, double keep_scale, const real* g, int ldg, const real* out,
                                 int ldo) noexcept nogil:
    """How many leading keys to compute over. A padded sequence's masked keys at the end get p = 0
    exactly, and their terms are 0 in every output (0 v_j, 0 (dp_ij - delta_i)) as long as their
    scores s_ij = scale q_i k_j + bias_ij stay below +inf (torch adds the mask: inf - inf, NaN - inf
    are NaN) and v_j, dp_ij m_ij = (g_i v_j) m_ij and delta_i = <g_i, out_i> stay finite (0 inf is
    NaN). Bounds on |q|, |k|, |v|, |g|, |out| (in double) say so, or all S keys are computed; all S
    too where every key is masked (the fully masked rows' path) or none is. keep_scale: the Dropout's
    scale (1 / (1 - p), 1 without); the backward passes g and out, the forward NULL."""
    cdef int keys = s_len
    cdef Py_ssize_t i, j
    cdef double limit = (FLT_MAX if real is float else DBL_MAX) / 2, top_bias = 0, mq, mk, mv, mg, mo
    if key_bias == NULL:
        return s_len
    while keys > 0 and key_bias[keys - 1] == -INFINITY:
        keys -= 1
    if keys == 0 or keys == s_len:
        return s_len
    if bias != NULL:
        for i in range(l_len):
            for j in range(keys, s_len):
                if not bias[i * s_len + j] < INFINITY:  # +inf or NaN
                    return s_len
                top_bias = max(top_bias, bias[i * s_len + j])
    mq, mk = _max_abs(q, ldq, l_len, d), _max_abs(k + <Py_ssize_t>keys * ldk, ldk, s_len - keys, d)
    mv = _max_abs(v + <Py_ssize_t>keys * ldv, ldv, s_len - keys, d)
    if not (d * mq * mk * max(1.0, fabs(scale)) + top_bias < limit and mv < limit):  # NaN fails too
        return s_len
    if g != NULL:
        mg, mo = _max_abs(g, ldg, l_len, d), _max_abs(out, ldo, l_len, d)
        if not d * mg * (mv * max(1.0, keep_scale) + mo) < limit:
            return s_len
    return keys


def computed_keys(const real[:, :, :, :] q, const real[:, :, :, :] k, const real[:, :, :, :] v,
                  const real[:, ::1] key_bias, const real[:, ::1] bias, double scale):
    """How many keys forward() computes over for each (batch, head), as a (B, H) list of lists:
    S, or fewer where a padded sequence's masked keys at the end are skipped (for the tests, and
    for a reader checking that padding is skipped). Arguments as forward's, their shapes checked."""
    shapes = {"k": (k.shape[0], k.shape[1], k.shape[3]), "v": (v.shape[0], v.shape[1], v.shape[2], v.shape[3])}
    expected = {"k": (q.shape[0], q.shape[1], q.shape[3]), "v": (k.shape[0], k.shape[1], k.shape[2], k.shape[3])}
    if key_bias is not None:
        shapes["key_bias"], expected["key_bias"] = (key_bias.shape[0], key_bias.shape[1]), (q.shape[0], k.shape[2])
    if bias is not None:
        shapes["bias"], expected["bias"] = (bias.shape[0], bias.shape[1]), (q.shape[2], k.shape[2])
    for name in shapes:
        if shapes[name] != expected[name]:
            raise ValueError(f"computed_keys: {name} has shape {shapes[name]} where q and k give {expected[name]}")
    cdef int b, h, ldq = q.strides[2] // sizeof(real), ldk = k.strides[2] // sizeof(real)
    cdef int ldv = v.strides[2] // sizeof(real)
    cdef const real* mask_row = NULL
    cdef const real* bias_rows = &bias[0, 0] if bias is not None else NULL
    cdef int n
    keys = []
    for b in range(q.shape[0]):
        mask_row = &key_bias[b, 0] if key_bias is not None else NULL
        keys.append([])
        for h in range(q.shape[1]):
            n = _keys_to_compute(mask_row, k.shape[2], &q[b, h, 0, 0], ldq, q.shape[2], q.shape[3],
                                 &k[b, h, 0, 0], ldk, &v[b, h, 0, 0], ldv, bias_rows, <real>scale, 1.0,
                                 <const real*>NULL, 0, <const real*>NULL, 0)
            keys[b].append(n)
    return keys


cdef inline void _scores(const real* q, int ldq, const real* k, int ldk, const real* bias, int ldb,
                         real scale, int rows, int keys, int d, real* s) noexcept nogil:
    """s (rows, keys) = scale q k^T + bias; q holds the block's rows, k the first keys keys, bias
    the block's bias rows (row stride ldb). The key mask is the caller's to add, in the pass that
    reads the scores next."""
    cdef Py_ssize_t i, j
    cdef real* row
    # BLAS returns C = 0 for alpha = 0 without reading q or k, where (q k^T) * 0 is NaN for an inf or
    # NaN in them, as torch and the NumPy twin give it: a scale of 0 (rare) multiplies afterwards
    gemm(False, True, rows, keys, d, scale if scale != 0 else 1, q, ldq, k, ldk, 0, s, keys)
    if scale == 0:
        for j in range(rows * keys):
            s[j] = s[j] * 0
    if bias == NULL:
        return
    for i in range(rows):
        row = s + i * keys
        for j in range(keys):
            row[j] = row[j] + bias[i * ldb + j]


cdef void _forward_pair(const real* q, int ldq, const real* k, int ldk, const real* v, int ldv,
                        const real* key_bias, const real* bias, real scale,
                        Dropout drop, uint64_t row0, real* out, int ldo, real* lse, real* probs,
                        int l_len, int s_len, int d, int block, real* s) noexcept nogil:
    """One (batch, head) pair; row0 = its first query row's logical number, (b H + h) L.
    s: the scratch, block * S scores, then block row scales 1 / sum_j exp(s_ij - c_i); only the
    first _keys_to_compute() columns are computed (the rest of probs is 0).

    Each row's softmax: the key mask added, the max, exp(s - max) and its sum (vecmath.h). The
    division by the sum waits until after the product with V: scaling the block's (rows, D) output
    costs D per row, the probabilities S (dropout's mask commutes with it). The product before the
    division is sum_j e_j v_j with e_j <= 1, up to S max |v|: an inf for |v| above FLT_MAX / S,
    where the probabilities' product would stay finite."""
    cdef Py_ssize_t n, i0, i  # Py_ssize_t: offsets like (i0 + i) * S may pass 2^31
    cdef int rows
    cdef Py_ssize_t j
    cdef real c, total
    cdef real* row
    cdef int keys = _keys_to_compute(key_bias, s_len, q, ldq, l_len, d, k, ldk, v, ldv, bias, scale, drop.scale,
                                     NULL, 0, NULL, 0)
    cdef real* inverse = s + <Py_ssize_t>block * s_len
    for n in range((l_len + block - 1) // block):  # query rows i0 : i0 + rows
        i0 = n * block
        rows = min(block, l_len - i0)
        _scores(q + i0 * ldq, ldq, k, ldk, bias + i0 * s_len if bias != NULL else NULL, s_len,
                scale, rows, keys, d, s)
        for i in range(rows):  # softmax of each row, keeping its log-sum-exp
            row = s + i * keys
            c = row_add_max(row, row, key_bias, keys) if key_bias != NULL else row_max(row, keys)
            if c == -INFINITY:  # every key masked: p = 0, so out = 0, and lse = log 0 = -inf
                c = 0
            total = row_exp_sum(row, row, c, keys)
            lse[i0 + i] = -INFINITY if total == 0 else c + _log(total)
            inverse[i] = 0 if total == 0 else 1 / total  # a NaN total stays NaN
            if probs != NULL:  # the probabilities before dropout
                for j in range(s_len):
                    probs[(i0 + i) * s_len + j] = row[j] * inverse[i] if j < keys else 0 * inverse[i]
            if drop.on:  # element j of the row keeps its logical index whatever keys is
                _drop_row(row, keys, drop, (row0 + i0 + i) * s_len)
        gemm(False, False, rows, d, keys, 1, s, keys, v, ldv, 0, out + i0 * ldo, ldo)
        for i in range(rows):
            row = out + (i0 + i) * ldo
            for j in range(d):
                row[j] = row[j] * inverse[i]


def forward(const real[:, :, :, :] q, const real[:, :, :, :] k, const real[:, :, :, :] v,
            const real[:, ::1] key_bias, const real[:, ::1] bias, double scale, tuple dropout,
            real[:, :, :, :] out, real[:, :, ::1] lse, real[:, :, :, ::1] probs,
            real[:, ::1] scratch, int block):
    """out = dropout(softmax(scale q k^T + bias + key_bias)) v per (batch, head), and lse per query
    row (of the softmax, before dropout).

    q, out: (B, H, L, D); k, v: (B, H, S, D), unit stride on D; key_bias: (B, S) of 0 and -inf, or
    None; bias: (L, S) or None; dropout: None or (seed, threshold, scale) (see Dropout); lse:
    (B, H, L); probs: (B, H, L, S) or None, written before dropout; scratch: at least
    (threads, block * (S + 1)). All checked by the wrapper."""
    cdef int nb = q.shape[0], nh = q.shape[1], l_len = q.shape[2], d = q.shape[3], s_len = k.shape[2]
    cdef int ldq = q.strides[2] // sizeof(real), ldk = k.strides[2] // sizeof(real)
    cdef int ldv = v.strides[2] // sizeof(real), ldo = out.strides[2] // sizeof(real)
    cdef bint masked = key_bias is not None, biased = bias is not None, keep = probs is not None
    cdef Dropout drop = _dropout(dropout)
    cdef int pair, b, h
    with nogil:
        for pair in prange(nb * nh, schedule="dynamic"):
            b, h = pair // nh, pair % nh
            _forward_pair(&q[b, h, 0, 0], ldq, &k[b, h, 0, 0], ldk, &v[b, h, 0, 0], ldv,
                          &key_bias[b, 0] if masked else NULL, &bias[0, 0] if biased else NULL,
                          <real>scale, drop, <uint64_t>pair * l_len, &out[b, h, 0, 0], ldo, &lse[b, h, 0],
                          &probs[b, h, 0, 0] if keep else NULL, l_len, s_len, d, block,
                          &scratch[threadid(), 0])


cdef void _backward_pair(const real* q, int ldq, const real* k, int ldk, const real* v, int ldv,
                         const real* out, int ldo, const real* lse, const real* g, int ldg,
                         const real* key_bias, const real* bias, real scale, Dropout drop, uint64_t row0,
                         real* dq, int lddq, real* dk, int lddk, real* dv, int lddv,
                         int l_len, int s_len, int d, int block, real* p, real* dp) noexcept nogil:
    """One (batch, head) pair; row0 as in _forward_pair. Over the first _keys_to_compute() keys, as
    the forward: the masked keys after them had p = 0, so their rows of dK and dV are 0."""
    cdef Py_ssize_t n, i0, i  # Py_ssize_t: offsets like (i0 + i) * S may pass 2^31
    cdef int rows, keys = _keys_to_compute(key_bias, s_len, q, ldq, l_len, d, k, ldk, v, ldv, bias, scale,
                                           drop.scale, g, ldg, out, ldo)
    cdef Py_ssize_t j
    cdef real delta, m
    cdef real* row
    cdef real* drow
    cdef real beta = 0  # the first block writes dK and dV, later ones add to them
    for j in range(keys, s_len):
        for i in range(d):
            dk[j * lddk + i] = 0
            dv[j * lddv + i] = 0
    for n in range((l_len + block - 1) // block):  # query rows i0 : i0 + rows
        i0 = n * block
        rows = min(block, l_len - i0)
        # p = exp(s - lse): the forward's probabilities, recomputed
        _scores(q + i0 * ldq, ldq, k, ldk, bias + i0 * s_len if bias != NULL else NULL, s_len,
                scale, rows, keys, d, p)
        for i in range(rows):
            row, m = p + i * keys, lse[i0 + i]
            if m == -INFINITY:  # a fully masked row had p = 0: it gets no gradient
                for j in range(keys):
                    row[j] = 0
            elif key_bias != NULL:
                for j in range(keys):
                    row[j] = vexp((row[j] + key_bias[j]) - m)
            else:
                for j in range(keys):
                    row[j] = vexp(row[j] - m)
        # dp = g v^T, then ds = p * (dp - delta) with delta_i = <g_i, out_i> = sum_j dp_ij p_ij
        gemm(False, True, rows, keys, d, 1, g + i0 * ldg, ldg, v, ldv, 0, dp, keys)
        for i in range(rows):
            row, drow = p + i * keys, dp + i * keys
            delta = row_dot(g + (i0 + i) * ldg, out + (i0 + i) * ldo, d)
            if drop.on:
                _drop_grad_row(row, drow, keys, delta, drop, (row0 + i0 + i) * s_len)
            else:
                for j in range(keys):
                    drow[j] = row[j] * (drow[j] - delta)
        # dV += pd^T g, pd = p (or with dropout p * m, which _drop_grad_row left in p)
        gemm(True, False, keys, d, rows, 1, p, keys, g + i0 * ldg, ldg, beta, dv, lddv)
        # dQ = scale ds k;  dK += scale ds^T q
        gemm(False, False, rows, d, keys, scale, dp, keys, k, ldk, 0, dq + i0 * lddq, lddq)
        gemm(True, False, keys, d, rows, scale, dp, keys, q + i0 * ldq, ldq, beta, dk, lddk)
        beta = 1


def backward(const real[:, :, :, :] q, const real[:, :, :, :] k, const real[:, :, :, :] v,
             const real[:, :, :, :] out, const real[:, :, ::1] lse, const real[:, :, :, :] grad,
             const real[:, ::1] key_bias, const real[:, ::1] bias, double scale, tuple dropout,
             real[:, :, :, :] dq, real[:, :, :, :] dk, real[:, :, :, :] dv,
             real[:, ::1] scratch, int block):
    """dq, dk, dv of attention from the forward's inputs, out and lse, and grad = dL/dout.
    Shapes as forward, dropout the forward's; grad and dq like q, dk and dv like k; L >= 1.
    scratch: at least (threads, 2 * block * S)."""
    cdef int nb = q.shape[0], nh = q.shape[1], l_len = q.shape[2], d = q.shape[3], s_len = k.shape[2]
    cdef int ldq = q.strides[2] // sizeof(real), ldk = k.strides[2] // sizeof(real)
    cdef int ldv = v.strides[2] // sizeof(real), ldo = out.strides[2] // sizeof(real)
    cdef int ldg = grad.strides[2] // sizeof(real), lddq = dq.strides[2] // sizeof(real)
    cdef int lddk = dk.strides[2] // sizeof(real), lddv = dv.strides[2] // sizeof(real)
    cdef bint masked = key_bias is not None, biased = bias is not None
    cdef Dropout drop = _dropout(dropout)
    cdef int pair, b, h
    cdef real* p
    with nogil:
        for pair in prange(nb * nh, schedule="dynamic"):
            b, h = pair // nh, pair % nh
            p = &scratch[threadid(), 0]
            _backward_pair(&q[b, h, 0, 0], ldq, &k[b, h, 0, 0], ldk, &v[b, h, 0, 0], ldv,
                           &out[b, h, 0, 0], ldo, &lse[b, h, 0], &grad[b, h, 0, 0], ldg,
                           &key_bias[b, 0] if masked else NULL, &bias[0, 0] if biased else NULL,
                           <real>scale, drop, <uint64_t>pair * l_len, &dq[b, h, 0, 0], lddq, &dk[b, h, 0, 0], lddk,
                           &dv[b, h, 0, 0], lddv, l_len, s_len, d, block, p, p + block * s_len)


# ---- variable-length batches: the sequences' rows one after another (minillm/kernels/attention_varlen.py)

cdef inline Dropout _seeded(Dropout drop, const uint64_t[::1] seeds, int b) noexcept nogil:
    """drop with sequence b's seed (seeds is None without dropout)."""
    if drop.on:
        drop.seed = seeds[b]
    return drop


def forward_varlen(const real[:, ::1] q, const real[:, ::1] k, const real[:, ::1] v,
                   const int64_t[::1] cu_seqlens, const real[::1] key_bias, int heads, double scale,
                   tuple dropout, const uint64_t[::1] seeds, real[:, ::1] out, real[:, ::1] lse,
                   real[:, ::1] scratch, int block):
    """forward's out and lse for sequence b's rows cu_seqlens[b] : cu_seqlens[b + 1] of q, k, v
    (N, H * D), head h in columns h D : (h + 1) D: one (sequence, head) pair per task, its rows read
    in place (row stride H D), attending to its own keys only. key_bias: (N,) of 0 and -inf, or
    None; dropout: None or (0, threshold, scale), sequence b's seed seeds[b], element (h, i, j) of
    its (H, n, n) probabilities numbered (h n + i) n + j; lse: (H, N); scratch: at least
    (threads, block * (S + 1)), S the longest sequence. Checked by the wrapper."""
    cdef int nb = cu_seqlens.shape[0] - 1, d = q.shape[1] // heads
    cdef int ldq = q.shape[1], ldo = out.shape[1]
    cdef bint masked = key_bias is not None
    cdef Dropout drop = _dropout(dropout)
    cdef int pair, b, h, n
    cdef int64_t start
    with nogil:
        for pair in prange(nb * heads, schedule="dynamic"):
            b, h = pair // heads, pair % heads
            start, n = cu_seqlens[b], <int>(cu_seqlens[b + 1] - cu_seqlens[b])
            if n == 0:
                continue
            _forward_pair(&q[start, h * d], ldq, &k[start, h * d], ldq, &v[start, h * d], ldq,
                          &key_bias[start] if masked else NULL, NULL, <real>scale,
                          _seeded(drop, seeds, b), <uint64_t>h * n, &out[start, h * d], ldo, &lse[h, start],
                          NULL, n, n, d, block, &scratch[threadid(), 0])


def backward_varlen(const real[:, ::1] q, const real[:, ::1] k, const real[:, ::1] v,
                    const real[:, ::1] out, const real[:, ::1] lse, const real[:, ::1] grad,
                    const int64_t[::1] cu_seqlens, const real[::1] key_bias, int heads, double scale,
                    tuple dropout, const uint64_t[::1] seeds, real[:, ::1] dq, real[:, ::1] dk,
                    real[:, ::1] dv, real[:, ::1] scratch, int block):
    """backward's dq, dk, dv (N, H * D) for forward_varlen's sequences; scratch: at least
    (threads, 2 * block * S)."""
    cdef int nb = cu_seqlens.shape[0] - 1, d = q.shape[1] // heads, ld = q.shape[1]
    cdef bint masked = key_bias is not None
    cdef Dropout drop = _dropout(dropout)
    cdef int pair, b, h, n
    cdef int64_t start
    cdef real* p
    with nogil:
        for pair in prange(nb * heads, schedule="dynamic"):
            b, h = pair // heads, pair % heads
            start, n = cu_seqlens[b], <int>(cu_seqlens[b + 1] - cu_seqlens[b])
            if n == 0:
                continue
            p = &scratch[threadid(), 0]
            _backward_pair(&q[start, h * d], ld, &k[start, h * d], ld, &v[start, h * d], ld,
                           &out[start, h * d], ld, &lse[h, start], &grad[start, h * d], ld,
                           &key_bias[start] if masked else NULL, NULL, <real>scale, _seeded(drop, seeds, b),
                           <uint64_t>h * n, &dq[start, h * d], ld, &dk[start, h * d], ld, &dv[start, h * d], ld,
                           n, n, d, block, p, p + block * n)

