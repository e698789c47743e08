# cython: language_level=3
"""Row-major GEMM over scipy's BLAS (scipy.linalg.cython_blas), for matmul and attention.

BLAS is column-major (Fortran). A row-major (m, n) matrix with row stride ld is, read
column-major, its transpose (n, m) with leading dimension ld. So the row-major product
C = op(A) op(B) is computed as the column-major product C^T = op(B)^T op(A)^T: swap the operands
and the sizes m and n, keep each operand's transpose flag.
"""
from scipy.linalg.cython_blas cimport dgemm, sgemm

from vecmath cimport real


cdef inline void gemm(bint trans_a, bint trans_b, int m, int n, int k, real alpha,
                      const real* a, int lda, const real* b, int ldb, real beta,
                      real* c, int ldc) noexcept nogil:
    """C (m, n) = alpha op(A) op(B) + beta C, all row-major; op(A) = A^T when trans_a, in which
    case A is stored (k, m). lda, ldb, ldc: row strides in elements."""
    cdef char ta = b'T' if trans_a else b'N'
    cdef char tb = b'T' if trans_b else b'N'
    if real is float:
        sgemm(&tb, &ta, &n, &m, &k, &alpha, <float*>b, &ldb, <float*>a, &lda, &beta, c, &ldc)
    else:
        dgemm(&tb, &ta, &n, &m, &k, &alpha, <double*>b, &ldb, <double*>a, &lda, &beta, c, &ldc)
