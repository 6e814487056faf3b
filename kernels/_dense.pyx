# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
# cython: binding=True, embedsignature=True
"""Matrix multiply and the dense layer (Cython backend).

GEMMs go to fastnn's own GEMM (the small-product kernel of fastmath.h or the
packed GEMM of gemm.h, which fuses bias and activation) or to BLAS, as the
policy of fastnn.gemm says. Sizes are Py_ssize_t; those that reach BLAS fit
its C int because fastnn.ops refuses dimensions above 2^31 - 1. The arrays
are only read through raw pointers, so read-only inputs are fine. Unfused bias and activation are applied in one
pass over the GEMM output (row-parallel when large), never inside a parallel
region that calls BLAS.
"""

include "_threads.pxi"
include "_fastmath.pxi"
include "_blas.pxi"

cimport numpy as cnp
from libc.string cimport memset

# fastnn's own GEMM (kernels/gemm.h) and the policy that picks it or BLAS by
# shape; fastnn.gemm keeps the policy current through _set_gemm_policy.
cdef extern from "gemm.h" nogil:
    int fnn_sgemm(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const float *a, Py_ssize_t rsa, Py_ssize_t csa,
                  const float *b, Py_ssize_t rsb, Py_ssize_t csb, float *c, Py_ssize_t ldc, const float *bias,
                  int act, int nthreads)
    int fnn_dgemm(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const double *a, Py_ssize_t rsa, Py_ssize_t csa,
                  const double *b, Py_ssize_t rsb, Py_ssize_t csb, double *c, Py_ssize_t ldc, const double *bias,
                  int act, int nthreads)

cdef int _gemm_mode = 2            # 0 auto (by shape), 1 own, 2 BLAS; set by fastnn.gemm
cdef double _own_limit32 = -1, _own_limit64 = -1
cdef int _own_min_n = 0
cdef double _own_min_flops = 0


def _set_gemm_policy(int mode, double limit32, double limit64, int min_n=0, double min_flops=0):
    """Mode (0 auto, 1 own, 2 BLAS); in auto the own GEMM runs N >= min_n, min_flops <= M*N*K <= limit."""
    global _gemm_mode, _own_limit32, _own_limit64, _own_min_n, _own_min_flops
    _gemm_mode, _own_limit32, _own_limit64, _own_min_n, _own_min_flops = mode, limit32, limit64, min_n, min_flops


cdef inline bint _use_own(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, bint f32) noexcept nogil:
    if _gemm_mode == 1:
        return True
    if _gemm_mode == 2:
        return False
    cdef double volume = <double>m * n * k
    return n >= _own_min_n and _own_min_flops <= volume <= (_own_limit32 if f32 else _own_limit64)


cdef bint _mm(bint trans_a, bint trans_b, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, const floating_t* a,
              const floating_t* b, floating_t* c, const floating_t* bias, int act) noexcept nogil:
    """Row-major C = op(A) op(B) by the own GEMM or BLAS; True when bias/act were fused (packed own GEMM).

    The own GEMM is two kernels: products of at most _SMALL_GEMM_MAX
    multiply-adds go to the small register-blocked kernel (no packing), larger
    ones to the packed BLIS-style GEMM (when the policy picks it for the
    shape), which also fuses bias and activation.
    """
    cdef Py_ssize_t rsa = 1 if trans_a else k, csa = m if trans_a else 1
    cdef Py_ssize_t rsb = 1 if trans_b else n, csb = k if trans_b else 1
    cdef int rc
    # "auto" and "own": small products always take the small kernel (faster than
    # BLAS at every shape measured, narrow outputs included; see fastnn.gemm)
    if _gemm_mode != 2 and _gemm_small[floating_t](trans_a, trans_b, m, n, k, a, b, c):
        return False
    if m > 0 and n > 0 and k > 0 and _use_own(m, n, k, floating_t is float):
        if floating_t is float:
            rc = fnn_sgemm(m, n, k, a, rsa, csa, b, rsb, csb, c, n, bias, act, _fastnn_num_threads)
        else:
            rc = fnn_dgemm(m, n, k, a, rsa, csa, b, rsb, csb, c, n, bias, act, _fastnn_num_threads)
        if rc == 0:
            return True
    _gemm_blas[floating_t](trans_a, trans_b, m, n, k, a, b, 0, c)
    return False


def matmul(cnp.ndarray a, cnp.ndarray b, bint trans_a, bint trans_b, cnp.ndarray out):
    """C = op(A) op(B), op = identity or transpose."""
    cdef Py_ssize_t m = cnp.PyArray_DIM(out, 0), n = cnp.PyArray_DIM(out, 1)
    cdef Py_ssize_t k = cnp.PyArray_DIM(a, 0) if trans_a else cnp.PyArray_DIM(a, 1)
    cdef void* pa = cnp.PyArray_DATA(a)
    cdef void* pb = cnp.PyArray_DATA(b)
    cdef void* pc = cnp.PyArray_DATA(out)
    if m == 0 or n == 0:
        return out
    if cnp.PyArray_TYPE(a) == cnp.NPY_FLOAT32:
        with nogil:
            _mm[float](trans_a, trans_b, m, n, k, <float*>pa, <float*>pb, <float*>pc, NULL, 0)
    else:
        with nogil:
            _mm[double](trans_a, trans_b, m, n, k, <double*>pa, <double*>pb, <double*>pc, NULL, 0)
    return out


cdef void _bias_act32(int act, float* y, const float* bias, Py_ssize_t rows, Py_ssize_t cols) noexcept nogil:
    """y[i, :] = act(y[i, :] + bias) in one pass, rows split over threads when large."""
    cdef fnn_unary32 fn = _fwd32(act)
    cdef Py_ssize_t r
    if bias == NULL:
        _run_unary32(fn, y, y, rows * cols, 0.0, _cheap_act(act))
    elif _parallel(rows * cols, _cheap_act(act)) and rows > 1:
        for r in prange(rows, num_threads=_fastnn_num_threads, schedule="dynamic"):
            fn(y + r * cols, bias, y + r * cols, cols, 0.0)
    else:
        for r in range(rows):
            fn(y + r * cols, bias, y + r * cols, cols, 0.0)


cdef void _bias_act64(int act, double* y, const double* bias, Py_ssize_t rows, Py_ssize_t cols) noexcept nogil:
    cdef fnn_unary64 fn = _fwd64(act)
    cdef Py_ssize_t r
    if bias == NULL:
        _run_unary64(fn, y, y, rows * cols, 0.0, _cheap_act(act))
    elif _parallel(rows * cols, _cheap_act(act)) and rows > 1:
        for r in prange(rows, num_threads=_fastnn_num_threads, schedule="dynamic"):
            fn(y + r * cols, bias, y + r * cols, cols, 0.0)
    else:
        for r in range(rows):
            fn(y + r * cols, bias, y + r * cols, cols, 0.0)


def dense_forward(cnp.ndarray x, cnp.ndarray weight, cnp.ndarray bias, activation, cnp.ndarray out):
    """y = act(x Wᵀ + b)."""
    cdef int act = _act_code(activation)
    cdef Py_ssize_t bsz = cnp.PyArray_DIM(x, 0), nin = cnp.PyArray_DIM(x, 1)
    cdef Py_ssize_t nout = cnp.PyArray_DIM(weight, 0)
    cdef void* px = cnp.PyArray_DATA(x)
    cdef void* pw = cnp.PyArray_DATA(weight)
    cdef void* pb = NULL if bias is None else cnp.PyArray_DATA(bias)
    cdef void* py = cnp.PyArray_DATA(out)
    cdef bint post = pb != NULL or act != ACT_IDENTITY
    # The own GEMM adds the bias and applies ReLU to each tile as it stores it;
    # sigmoid/tanh stay with the vectorised activation kernels (one pass after).
    cdef int fused_act = act if act == ACT_RELU else ACT_IDENTITY
    if bsz == 0 or nout == 0:   # nothing to write (the bias loop would still visit every row)
        return out
    if cnp.PyArray_TYPE(x) == cnp.NPY_FLOAT32:
        with nogil:
            if _mm[float](False, True, bsz, nout, nin, <float*>px, <float*>pw, <float*>py, <float*>pb, fused_act):
                if act != fused_act:
                    _bias_act32(act, <float*>py, NULL, bsz, nout)
            elif post:
                _bias_act32(act, <float*>py, <float*>pb, bsz, nout)
    else:
        with nogil:
            if _mm[double](False, True, bsz, nout, nin, <double*>px, <double*>pw, <double*>py, <double*>pb,
                           fused_act):
                if act != fused_act:
                    _bias_act64(act, <double*>py, NULL, bsz, nout)
            elif post:
                _bias_act64(act, <double*>py, <double*>pb, bsz, nout)
    return out


cdef void _colsum32(const float* d, float* gb, Py_ssize_t rows, Py_ssize_t cols) noexcept nogil:
    cdef Py_ssize_t r
    memset(gb, 0, cols * sizeof(float))
    for r in range(rows):
        fnn_add_f32(gb, d + r * cols, cols)


cdef void _colsum64(const double* d, double* gb, Py_ssize_t rows, Py_ssize_t cols) noexcept nogil:
    cdef Py_ssize_t r
    memset(gb, 0, cols * sizeof(double))
    for r in range(rows):
        fnn_add_f64(gb, d + r * cols, cols)


def dense_backward(cnp.ndarray grad_out, cnp.ndarray x, cnp.ndarray weight, cnp.ndarray y, activation,
                   cnp.ndarray grad_input, cnp.ndarray grad_weight, cnp.ndarray grad_bias):
    """δ = g ⊙ act'(y); dW = δᵀ x; db = Σ_batch δ; dx = δ W."""
    cdef int act = _act_code(activation)
    cdef Py_ssize_t bsz = cnp.PyArray_DIM(x, 0), nin = cnp.PyArray_DIM(x, 1)
    cdef Py_ssize_t nout = cnp.PyArray_DIM(weight, 0)
    cdef Py_ssize_t nd = bsz * nout
    cdef cnp.ndarray delta
    cdef void* pd
    cdef void* pg = cnp.PyArray_DATA(grad_out)
    cdef void* px = cnp.PyArray_DATA(x)
    cdef void* pw = cnp.PyArray_DATA(weight)
    cdef void* pgi = NULL if grad_input is None else cnp.PyArray_DATA(grad_input)
    cdef void* pgw = cnp.PyArray_DATA(grad_weight)
    cdef void* pgb = NULL if grad_bias is None else cnp.PyArray_DATA(grad_bias)
    cdef void* py = NULL
    cdef bint f32 = cnp.PyArray_TYPE(x) == cnp.NPY_FLOAT32
    if nd == 0:   # no sample or no output: every gradient is a sum over nothing
        for g in (grad_input, grad_weight, grad_bias):
            if g is not None:
                g.fill(0)
        return grad_input, grad_weight, grad_bias
    if act == ACT_IDENTITY:
        pd = pg
    else:
        delta = cnp.PyArray_EMPTY(2, cnp.PyArray_DIMS(grad_out), cnp.PyArray_TYPE(grad_out), 0)
        pd = cnp.PyArray_DATA(delta)
        py = cnp.PyArray_DATA(y)
    if f32:
        with nogil:
            if act != ACT_IDENTITY:
                _run_binary32(_bwd32(act), <float*>pg, <float*>py, <float*>pd, nd, 0.0)
            _mm[float](True, False, nout, nin, bsz, <float*>pd, <float*>px, <float*>pgw, NULL, 0)
            if pgb != NULL:
                _colsum32(<float*>pd, <float*>pgb, bsz, nout)
            if pgi != NULL:
                _mm[float](False, False, bsz, nin, nout, <float*>pd, <float*>pw, <float*>pgi, NULL, 0)
    else:
        with nogil:
            if act != ACT_IDENTITY:
                _run_binary64(_bwd64(act), <double*>pg, <double*>py, <double*>pd, nd, 0.0)
            _mm[double](True, False, nout, nin, bsz, <double*>pd, <double*>px, <double*>pgw, NULL, 0)
            if pgb != NULL:
                _colsum64(<double*>pd, <double*>pgb, bsz, nout)
            if pgi != NULL:
                _mm[double](False, False, bsz, nin, nout, <double*>pd, <double*>pw, <double*>pgi, NULL, 0)
    return grad_input, grad_weight, grad_bias
