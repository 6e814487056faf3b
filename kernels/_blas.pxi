# The GEMM wrappers of the dense kernels: row-major GEMM over
# scipy.linalg.cython_blas (the BLAS scipy ships; threadpoolctl limits it)
# and the register-blocked small-product kernel of fastmath.h, which is part
# of fastnn's own GEMM: products too small for packing go there.
# Sizes are Py_ssize_t; BLAS takes C ints, which they fit because
# fastnn.ops (dense, matmul) refuses any dimension above 2^31 - 1.

from libc.string cimport memset
from scipy.linalg.cython_blas cimport sgemm, dgemm

cdef extern from "fastmath.h" nogil:
    int FNN_HAVE_SMALL_GEMM
    int fnn_gemm_small_f32(int, int, Py_ssize_t, Py_ssize_t, Py_ssize_t, const float*, const float*, float*)
    int fnn_gemm_small_f64(int, int, Py_ssize_t, Py_ssize_t, Py_ssize_t, const double*, const double*, double*)

# Products with at most this many multiply-adds (m n k) may take the small
# kernel: no packing, so its cost is the arithmetic plus one pass over B.
# Up to where the packed GEMM would use threads (FNN_PARALLEL_MIN_FLOPS),
# since both run on one thread below it. Measured from compiled code, 1
# thread, small kernel / packed GEMM: 128^3 0.79, 64x256x128 0.68, 160^3
# 0.80, 32x784x128 0.62; against OpenBLAS's AVX-512 kernels 0.49-0.81.
cdef long long _SMALL_GEMM_MAX = 192 * 192 * 192

ctypedef fused floating_t:
    float
    double


cdef inline bint _gemm_small(bint trans_a, bint trans_b, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                             const floating_t* a, const floating_t* b, floating_t* c) noexcept nogil:
    """C(m, n) = op(A) op(B) by the small-product kernel; False when it does not apply (too large)."""
    # the volume in double: m·n·k of three 31-bit sizes can pass 2^63
    if not FNN_HAVE_SMALL_GEMM or m <= 0 or n <= 0 or k <= 0 or <double>m * n * k > _SMALL_GEMM_MAX:
        return False
    if floating_t is float:
        return fnn_gemm_small_f32(trans_a, trans_b, m, n, k, <const float*>a, <const float*>b, <float*>c) == 0
    else:
        return fnn_gemm_small_f64(trans_a, trans_b, m, n, k, <const double*>a, <const double*>b, <double*>c) == 0


cdef void _gemm_blas(bint trans_a, bint trans_b, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, const floating_t* a,
                     const floating_t* b, floating_t beta, floating_t* c) noexcept nogil:
    """Row-major C(m, n) = op(A) op(B) + beta C by BLAS, op(A) (m, k), op(B) (k, n).

    BLAS is column-major: a row-major matrix is its transpose seen
    column-major, so C = op(A) op(B) is computed as Cᵀ = op(B)ᵀ op(A)ᵀ, i.e.
    gemm with the operands swapped and the same transpose flags.
    Never call this inside a prange region (BLAS runs its own threads).
    """
    cdef char ta = b'T' if trans_b else b'N'
    cdef char tb = b'T' if trans_a else b'N'
    cdef int im = <int>m, in_ = <int>n, ik = <int>k   # each <= 2^31 - 1 (fastnn.ops)
    cdef int ldb = ik if trans_b else in_   # row length of B as stored
    cdef int lda = im if trans_a else ik    # row length of A as stored
    cdef int ldc = in_
    cdef floating_t alpha = 1
    cdef Py_ssize_t i
    if m <= 0 or n <= 0:
        return
    if k <= 0:  # empty inner dimension: op(A) op(B) is zero (BLAS rejects ld = 0)
        if beta == 0:
            memset(c, 0, <size_t>m * n * sizeof(floating_t))
        else:
            for i in range(m * n):
                c[i] = beta * c[i]
        return
    if floating_t is float:
        sgemm(&ta, &tb, &in_, &im, &ik, &alpha, <float*>b, &ldb, <float*>a, &lda, &beta, c, &ldc)
    else:
        dgemm(&ta, &tb, &in_, &im, &ik, &alpha, <double*>b, &ldb, <double*>a, &lda, &beta, c, &ldc)
