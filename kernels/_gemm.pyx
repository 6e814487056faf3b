# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""fastnn's own GEMM (BLIS-style C kernels in gemm.h) and the fused dense layer."""

from cython cimport floating
from libc.math cimport exp, tanh
from scipy.linalg.cython_blas cimport sgemm as blas_sgemm, dgemm as blas_dgemm

include "_threads.pxi"
include "_blas.pxi"

cdef extern from "gemm.h" nogil:
    int fnn_sgemm(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const float *a, Py_ssize_t rsa, Py_ssize_t csa,
                  const float *b, Py_ssize_t rsb, Py_ssize_t csb, float *c, Py_ssize_t ldc, const float *bias,
                  int act, int nthreads)
    int fnn_dgemm(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const double *a, Py_ssize_t rsa, Py_ssize_t csa,
                  const double *b, Py_ssize_t rsb, Py_ssize_t csb, double *c, Py_ssize_t ldc, const double *bias,
                  int act, int nthreads)
    int fnn_gemm_isa()
    int fnn_gemm_set_isa(int level)

cdef extern from *:
    """
    #include <time.h>
    static double fnn_now(void) {
        struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
    }
    """
    double fnn_now() nogil

#: Activation codes shared with the C kernels.
ACTIVATIONS = {"identity": 0, "relu": 1, "sigmoid": 2, "tanh": 3}
ISA_NAMES = ("generic", "avx2", "avx512")


def isa():
    """The kernel set the GEMM runs: "generic", "avx2" or "avx512"."""
    return ISA_NAMES[fnn_gemm_isa()]


def set_isa(name):
    """Force a kernel set (capped at what the CPU supports); "auto" picks the best."""
    level = -1 if name == "auto" else ISA_NAMES.index(name)
    return ISA_NAMES[fnn_gemm_set_isa(level)]


cdef inline Py_ssize_t _elem_stride(Py_ssize_t stride_bytes, Py_ssize_t size, Py_ssize_t itemsize) except? -1:
    if size <= 1:
        return 0
    if stride_bytes % itemsize:
        raise ValueError("array strides must be whole elements")
    return stride_bytes // itemsize


cdef inline void _zero_epilogue(floating[:, :] out, const floating[:] bias, int has_bias, int act) noexcept nogil:
    # K == 0: op(A)·op(B) is all zeros, the epilogue still applies.
    cdef Py_ssize_t i, j
    cdef floating v
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            v = bias[j] if has_bias else 0
            if act == 1:
                v = 0 if v <= 0 else v
            elif act == 2:
                v = 1 / (1 + exp(-v))
            elif act == 3:
                v = tanh(v)
            out[i, j] = v


def gemm(const floating[:, :] a, const floating[:, :] b, bint trans_a, bint trans_b, floating[:, :] out,
         const floating[:] bias=None, int act=0):
    """out = act(op(a)·op(b) + bias); any strides for a and b, out with unit column stride.

    The own GEMM indexes with ptrdiff_t, so any size is fine here.
    """
    cdef Py_ssize_t M = out.shape[0], N = out.shape[1]
    cdef Py_ssize_t K = a.shape[0] if trans_a else a.shape[1]
    cdef Py_ssize_t isz = sizeof(floating)
    cdef Py_ssize_t rsa, csa, rsb, csb, ldc
    cdef int has_bias = bias is not None
    cdef int rc = 0
    if (a.shape[1] if trans_a else a.shape[0]) != M or (b.shape[1] if trans_b else b.shape[0]) != K \
            or (b.shape[0] if trans_b else b.shape[1]) != N:
        raise ValueError("gemm: shapes do not agree")
    if has_bias and bias.shape[0] != N:
        raise ValueError("gemm: bias must have one entry per output column")
    if M == 0 or N == 0:
        return out
    if N > 1 and out.strides[1] != isz:
        raise ValueError("gemm: out needs unit column stride")
    ldc = out.strides[0] // isz if M > 1 else N
    if K == 0:
        with nogil:
            _zero_epilogue(out, bias, has_bias, act)
        return out
    if has_bias and N > 1 and bias.strides[0] != isz:
        raise ValueError("gemm: bias must be contiguous")
    rsa = _elem_stride(a.strides[0], a.shape[0], isz)
    csa = _elem_stride(a.strides[1], a.shape[1], isz)
    rsb = _elem_stride(b.strides[0], b.shape[0], isz)
    csb = _elem_stride(b.strides[1], b.shape[1], isz)
    if trans_a:
        rsa, csa = csa, rsa
    if trans_b:
        rsb, csb = csb, rsb
    with nogil:
        if floating is float:
            rc = fnn_sgemm(M, N, K, &a[0, 0], rsa, csa, &b[0, 0], rsb, csb, &out[0, 0], ldc,
                           &bias[0] if has_bias else NULL, act, _fastnn_num_threads)
        else:
            rc = fnn_dgemm(M, N, K, &a[0, 0], rsa, csa, &b[0, 0], rsb, csb, &out[0, 0], ldc,
                           &bias[0] if has_bias else NULL, act, _fastnn_num_threads)
    if rc != 0:
        raise MemoryError("gemm: could not allocate packing buffers")
    return out


def act_backward_colsum(const floating[:, :] grad_out, const floating[:, :] y, int act, floating[:, :] delta,
                        floating[:] grad_bias=None):
    """delta = grad_out ⊙ act'(y) and grad_bias = Σ_rows delta, in one pass over grad_out."""
    cdef Py_ssize_t B = grad_out.shape[0], O = grad_out.shape[1], i, j
    cdef int has_bias = grad_bias is not None
    cdef floating g, v
    with nogil:
        if has_bias:
            for j in range(O):
                grad_bias[j] = 0
        for i in range(B):
            for j in range(O):
                g = grad_out[i, j]
                if act == 1:
                    v = y[i, j]
                    g = g if v > 0 else 0          # y = relu(z) > 0 exactly where z > 0
                elif act == 2:
                    v = y[i, j]
                    g = g * v * (1 - v)
                elif act == 3:
                    v = y[i, j]
                    g = g * (1 - v * v)
                delta[i, j] = g
                if has_bias:
                    grad_bias[j] += g
    return delta


def bench_loop(const floating[:, :] a, const floating[:, :] b, floating[:, :] out, int reps, bint blas):
    """Seconds per call of reps back-to-back C = A·B from compiled code, own GEMM or BLAS.

    The own GEMM is timed as the dense layers run it: products of at most
    192^3 multiply-adds by the small-product kernel, larger ones packed.
    """
    cdef int M, K, N, r, lda, ldb, ldc
    cdef char tr = b'N'
    cdef floating one = 1, zero = 0
    cdef double t0, t1
    if a.strides[1] != sizeof(floating) or b.strides[1] != sizeof(floating) or out.strides[1] != sizeof(floating):
        raise ValueError("bench_loop needs C-contiguous arrays")
    if b.shape[0] != a.shape[1] or out.shape[0] != a.shape[0] or out.shape[1] != b.shape[1]:
        raise ValueError("bench_loop: shapes do not agree")
    if max(a.shape[0], a.shape[1], b.shape[1], a.strides[0], b.strides[0], out.strides[0]) > 2**31 - 1:
        raise ValueError("bench_loop: sizes must fit BLAS's 32-bit ints")
    M, K, N = a.shape[0], a.shape[1], b.shape[1]
    lda, ldb = a.strides[0] // sizeof(floating), b.strides[0] // sizeof(floating)
    ldc = out.strides[0] // sizeof(floating)
    # the own GEMM as the dense layers run it: the small-product kernel, else the packed GEMM
    cdef bint small = lda == K and ldb == N and ldc == N
    with nogil:
        t0 = fnn_now()
        for r in range(reps):
            if blas:
                # row-major C = A·B is column-major Cᵀ = Bᵀ·Aᵀ
                if floating is float:
                    blas_sgemm(&tr, &tr, &N, &M, &K, &one, <float *>&b[0, 0], &ldb, <float *>&a[0, 0], &lda,
                               &zero, &out[0, 0], &ldc)
                else:
                    blas_dgemm(&tr, &tr, &N, &M, &K, &one, <double *>&b[0, 0], &ldb, <double *>&a[0, 0], &lda,
                               &zero, &out[0, 0], &ldc)
            elif small and _gemm_small(False, False, M, N, K, &a[0, 0], &b[0, 0], &out[0, 0]):
                pass
            else:
                if floating is float:
                    fnn_sgemm(M, N, K, &a[0, 0], lda, 1, &b[0, 0], ldb, 1, &out[0, 0], ldc, NULL, 0,
                              _fastnn_num_threads)
                else:
                    fnn_dgemm(M, N, K, &a[0, 0], lda, 1, &b[0, 0], ldb, 1, &out[0, 0], ldc, NULL, 0,
                              _fastnn_num_threads)
        t1 = fnn_now()
    return (t1 - t0) / max(reps, 1)
