# The one BLAS wrapper of the Cython kernels: row-major GEMM over
# scipy.linalg.cython_blas (the BLAS scipy ships; threadpoolctl limits it).

from libc.string cimport memset
from scipy.linalg.cython_blas cimport sgemm, dgemm

ctypedef fused floating_t:
    float
    double


cdef void _gemm(bint trans_a, bint trans_b, int m, int n, int k, const floating_t* a, const floating_t* b,
                floating_t beta, floating_t* c) noexcept nogil:
    """Row-major C(m, n) = op(A) op(B) + beta C, op(A) (m, k), op(B) (k, n).

    BLAS is column-major: a row-major matrix is its transpose seen
    column-major, so C = op(A) op(B) is computed as Cᵀ = op(B)ᵀ op(A)ᵀ, i.e.
    gemm with the operands swapped and the same transpose flags.
    Never call this inside a prange region (BLAS runs its own threads).
    """
    cdef char ta = b'T' if trans_b else b'N'
    cdef char tb = b'T' if trans_a else b'N'
    cdef int ldb = k if trans_b else n     # row length of B as stored
    cdef int lda = m if trans_a else k     # row length of A as stored
    cdef int ldc = n
    cdef floating_t alpha = 1
    cdef Py_ssize_t i
    if m <= 0 or n <= 0:
        return
    if k <= 0:  # empty inner dimension: op(A) op(B) is zero (BLAS rejects ld = 0)
        if beta == 0:
            memset(c, 0, <size_t>m * n * sizeof(floating_t))
        else:
            for i in range(<Py_ssize_t>m * n):
                c[i] = beta * c[i]
        return
    if floating_t is float:
        sgemm(&ta, &tb, &n, &m, &k, &alpha, <float*>b, &ldb, <float*>a, &lda, &beta, c, &ldc)
    else:
        dgemm(&ta, &tb, &n, &m, &k, &alpha, <double*>b, &ldb, <double*>a, &lda, &beta, c, &ldc)
