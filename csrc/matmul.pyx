# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Batched, strided GEMM: C[i] = op(A)[i] @ op(B)[i], compiled twin of minillm/kernels/matmul.py.

The wrapper reduces every operand, however strided, transposed or broadcast, to a flat array, one
element offset per batch entry, and a (row, column) stride pair for op(A) or op(B) with one of the
two equal to 1: exactly what BLAS takes (a leading dimension and a transpose flag). Broadcast batch
axes have offset stride 0, so they are never copied.

Threads (minillm/kernels/blas.py says why): one product with chunks = 1 is one BLAS call, made
outside any parallel region, which BLAS splits over its own threads (the wrapper sets how many).
Otherwise one OpenMP prange over (batch entry, chunk) tasks, every BLAS call single-threaded (the
wrapper sets BLAS to one thread): a small batch is cut into `chunks` slabs of rows of C (or of
columns, when C is wider than tall) so that it still uses every core; tasks are handed out
dynamically, so a thread the OS pauses does not hold up the others.

Bias: C = op(A) @ op(B) + bias (one value per column, a Linear layer's) costs no pass of its own:
each task first copies the bias into its slab of C, then BLAS adds the product to it (beta = 1),
while the slab is still in cache (one BLAS call: the rows are filled in parallel first, which costs
what BLAS's own pass zeroing C for beta = 0 would). Added after the product instead, it would be a
read and a write of the whole of C, (T, N) floats per Linear.
"""
from cython.parallel cimport prange
from libc.string cimport memcpy
from openmp cimport omp_get_max_threads

from blas cimport gemm
from vecmath cimport real


cdef inline void _layout(Py_ssize_t row_stride, Py_ssize_t col_stride, bint* trans, int* ld) noexcept nogil:
    """BLAS's (transpose flag, leading dimension) for a matrix with these element strides."""
    trans[0] = col_stride != 1
    ld[0] = <int>(row_stride if col_stride == 1 else col_stride)


def gemm_batched(const real[::1] a, const Py_ssize_t[::1] a_offsets, Py_ssize_t a_rs, Py_ssize_t a_cs,
                 const real[::1] b, const Py_ssize_t[::1] b_offsets, Py_ssize_t b_rs, Py_ssize_t b_cs,
                 real[:, :, ::1] c, Py_ssize_t k, Py_ssize_t chunks, const real[::1] bias=None):
    """c[i] (M, N) = op(A)_i (M, K) @ op(B)_i (K, N) (+ bias (N,) on every row), with op(A)_i[r, j] =
    a[a_offsets[i] + r a_rs + j a_cs] and likewise for B. Sizes and strides are checked by the wrapper
    (int32 range, a unit stride, bias of length N)."""
    cdef Py_ssize_t batch = c.shape[0], m = c.shape[1], n = c.shape[2]
    cdef Py_ssize_t task, i, part, lo, hi, r
    cdef bint ta, tb, by_rows = m >= n, has_bias = bias is not None
    cdef real beta = 1 if has_bias else 0
    cdef int lda, ldb
    _layout(a_rs, a_cs, &ta, &lda)
    _layout(b_rs, b_cs, &tb, &ldb)
    if batch * chunks == 1:  # one BLAS call, on BLAS's threads
        with nogil:
            if has_bias:
                for r in prange(m, schedule="static", num_threads=1 if m * n < 65536 else omp_get_max_threads()):
                    memcpy(&c[0, r, 0], &bias[0], n * sizeof(real))
            gemm(ta, tb, <int>m, <int>n, <int>k, 1, &a[a_offsets[0]], lda, &b[b_offsets[0]], ldb, beta,
                 &c[0, 0, 0], <int>n)
        return
    with nogil:
        for task in prange(batch * chunks, schedule="dynamic"):
            i, part = task // chunks, task % chunks
            if by_rows:  # rows lo:hi of C come from rows lo:hi of op(A)
                lo, hi = part * m // chunks, (part + 1) * m // chunks
                if hi > lo:
                    if has_bias:
                        for r in range(lo, hi):
                            memcpy(&c[i, r, 0], &bias[0], n * sizeof(real))
                    gemm(ta, tb, <int>(hi - lo), <int>n, <int>k, 1, &a[a_offsets[i] + lo * a_rs], lda,
                         &b[b_offsets[i]], ldb, beta, &c[i, lo, 0], <int>n)
            else:  # columns lo:hi of C come from columns lo:hi of op(B)
                lo, hi = part * n // chunks, (part + 1) * n // chunks
                if hi > lo:
                    if has_bias:
                        for r in range(m):
                            memcpy(&c[i, r, lo], &bias[lo], (hi - lo) * sizeof(real))
                    gemm(ta, tb, <int>m, <int>(hi - lo), <int>k, 1, &a[a_offsets[i]], lda,
                         &b[b_offsets[i] + lo * b_cs], ldb, beta, &c[i, 0, lo], <int>n)
