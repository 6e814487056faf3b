# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Recurrent kernels: RNN, LSTM and GRU forward over a sequence and BPTT.

The whole time loop runs here without the GIL. Per step: one small product
with W_hh (hand-written, rnn_kernels.h), then the gate arithmetic (rnn_kernels.h, vectorised C).
Outside the loop: the input projection for all steps is one GEMM, and the
weight gradients and dL/dx are one GEMM each over all steps.
Arrays arrive validated by fastnn.ops.rnn (C-contiguous, one float dtype,
shapes checked), so only raw pointers are taken here.
"""

include "_threads.pxi"

cimport numpy as cnp
from libc.stdlib cimport malloc, calloc, free
from libc.string cimport memcpy, memset
from scipy.linalg.cython_blas cimport sgemm, dgemm
from cython.parallel cimport prange

cnp.import_array()

ctypedef fused real:
    float
    double

cdef extern from "rnn_kernels.h" nogil:
    ctypedef Py_ssize_t fnn_idx
    void fnn_rnn_act_f(float *a, fnn_idx n, int relu)
    void fnn_rnn_act_d(double *a, fnn_idx n, int relu)
    void fnn_rnn_delta_f(const float *go, const float *grec, const float *h, float *d, fnn_idx n, int relu)
    void fnn_rnn_delta_d(const double *go, const double *grec, const double *h, double *d, fnn_idx n, int relu)
    void fnn_lstm_cell_f(float *z, const float *c_prev, float *c, float *h, fnn_idx B, fnn_idx H)
    void fnn_lstm_cell_d(double *z, const double *c_prev, double *c, double *h, fnn_idx B, fnn_idx H)
    void fnn_lstm_delta_f(const float *go, const float *grec, float *gamma, const float *gates,
                          const float *c, const float *c_prev, float *d, fnn_idx B, fnn_idx H)
    void fnn_lstm_delta_d(const double *go, const double *grec, double *gamma, const double *gates,
                          const double *c, const double *c_prev, double *d, fnn_idx B, fnn_idx H)
    void fnn_gru_cell_f(float *gi, const float *gh, const float *bhh, const float *h_prev, float *hn,
                        float *h, fnn_idx B, fnn_idx H)
    void fnn_gru_cell_d(double *gi, const double *gh, const double *bhh, const double *h_prev, double *hn,
                        double *h, fnn_idx B, fnn_idx H)
    void fnn_gru_delta_f(const float *go, float *grec, const float *gates, const float *hn,
                         const float *h_prev, float *w, fnn_idx B, fnn_idx H)
    void fnn_gru_delta_d(const double *go, double *grec, const double *gates, const double *hn,
                         const double *h_prev, double *w, fnn_idx B, fnn_idx H)
    void fnn_colsum_f(const float *a, fnn_idx rows, fnn_idx cols, fnn_idx ld, float *out)
    void fnn_colsum_d(const double *a, fnn_idx rows, fnn_idx cols, fnn_idx ld, double *out)
    void fnn_fill_bias_f(float *out, fnn_idx rows, fnn_idx cols, const float *b1, const float *b2)
    void fnn_fill_bias_d(double *out, fnn_idx rows, fnn_idx cols, const double *b1, const double *b2)
    void fnn_gemm_acc_f(const float *A, fnn_idx ars, fnn_idx aks, const float *Bt, fnn_idx ldb, float *C,
                        fnn_idx ldc, fnn_idx M, fnn_idx N, fnn_idx K)
    void fnn_gemm_acc_d(const double *A, fnn_idx ars, fnn_idx aks, const double *Bt, fnn_idx ldb, double *C,
                        fnn_idx ldc, fnn_idx M, fnn_idx N, fnn_idx K)
    void fnn_transpose_f(const float *A, fnn_idx M, fnn_idx N, float *Bt)
    void fnn_gemm_nt_f(const float *A, fnn_idx lda, const float *Bn, fnn_idx ldb, float *C, fnn_idx ldc,
                       fnn_idx M, fnn_idx N, fnn_idx K)
    void fnn_gemm_nt_d(const double *A, fnn_idx lda, const double *Bn, fnn_idx ldb, double *C, fnn_idx ldc,
                       fnn_idx M, fnn_idx N, fnn_idx K)
    void fnn_transpose_d(const double *A, fnn_idx M, fnn_idx N, double *Bt)


# ---------------------------------------------------------------------------
# small helpers over the fused type
# ---------------------------------------------------------------------------

cdef inline void gemm(bint ta, bint tb, int M, int N, int K, real alpha, const real *A, int lda,
                      const real *B, int ldb, real beta, real *C, int ldc) noexcept nogil:
    """Row-major C = alpha op(A) op(B) + beta C (BLAS is column-major: compute Cᵀ = op(B)ᵀ op(A)ᵀ)."""
    cdef char ca = b'T' if ta else b'N'
    cdef char cb = b'T' if tb else b'N'
    if M == 0 or N == 0:
        return
    if real is float:
        sgemm(&cb, &ca, &N, &M, &K, &alpha, <float*>B, &ldb, <float*>A, &lda, &beta, C, &ldc)
    else:
        dgemm(&cb, &ca, &N, &M, &K, &alpha, <double*>B, &ldb, <double*>A, &lda, &beta, C, &ldc)


cdef inline void step_gemm(const real *A, fnn_idx lda, const real *Bt, fnn_idx ldb, real *C, fnn_idx ldc,
                           fnn_idx M, fnn_idx N, fnn_idx K) noexcept nogil:
    """C += A·Bt for one time step (hand-written: BLAS set-up costs more than these small products)."""
    if real is float:
        fnn_gemm_acc_f(A, lda, 1, Bt, ldb, C, ldc, M, N, K)
    else:
        fnn_gemm_acc_d(A, lda, 1, Bt, ldb, C, ldc, M, N, K)


cdef inline void gemm_tn_acc(const real *A, fnn_idx lda, const real *Bm, fnn_idx ldb, real *C, fnn_idx ldc,
                             fnn_idx M, fnn_idx N, fnn_idx K) noexcept nogil:
    """C += Aᵀ·Bm with A (K, M), Bm (K, N) row-major (the weight gradients, K = T·B rows)."""
    if real is float:
        fnn_gemm_acc_f(A, 1, lda, Bm, ldb, C, ldc, M, N, K)
    else:
        fnn_gemm_acc_d(A, 1, lda, Bm, ldb, C, ldc, M, N, K)


cdef inline real *transposed(const real *w, fnn_idx rows, fnn_idx cols) noexcept nogil:
    """A malloc'ed copy of wᵀ (cols, rows), or NULL when out of memory."""
    cdef real *wt = <real*>malloc(rows * cols * sizeof(real))
    if wt != NULL:
        if real is float:
            fnn_transpose_f(w, rows, cols, wt)
        else:
            fnn_transpose_d(w, rows, cols, wt)
    return wt


cdef inline void colsum(const real *a, fnn_idx rows, fnn_idx cols, fnn_idx ld, real *out) noexcept nogil:
    if real is float:
        fnn_colsum_f(a, rows, cols, ld, out)
    else:
        fnn_colsum_d(a, rows, cols, ld, out)


cdef inline bint small(fnn_idx elements) noexcept nogil:
    """True when the operands of an all-steps product are small (<= 2^18 elements, 1 MB in float32).

    Those go to the hand-written kernels: besides set-up and packing, a BLAS
    call may wake its worker threads, which costs far more than such a product
    when the cores are shared (and never helps it).
    """
    return elements <= (1 << 18)


cdef inline void input_projection(const real *x, const real *w_ih, const real *b1, const real *b2,
                                  real *out, int TB, int I, int GH) noexcept nogil:
    """out = x·W_ihᵀ + b1 + b2 for all T·B rows at once."""
    cdef real beta = 0
    cdef real *wt = NULL
    if b1 != NULL or b2 != NULL:
        if real is float:
            fnn_fill_bias_f(out, TB, GH, b1, b2)
        else:
            fnn_fill_bias_d(out, TB, GH, b1, b2)
        beta = 1
    if small(<fnn_idx>TB * (I + GH)):
        wt = transposed(w_ih, GH, I)
    if wt != NULL:
        if beta == 0:
            memset(out, 0, <fnn_idx>TB * GH * sizeof(real))
        step_gemm(x, I, wt, GH, out, GH, TB, GH, I)
        free(wt)
    else:
        gemm(False, True, TB, GH, I, <real>1, x, I, w_ih, I, beta, out, GH)


cdef inline void input_grad(const real *d, int ld, const real *w_ih, real *gx, int TB, int I, int GH) noexcept nogil:
    """dL/dx = δ·W_ih for all T·B rows (δ with leading dimension ld)."""
    cdef real *wt = NULL
    if small(<fnn_idx>TB * (I + GH)):
        wt = transposed(w_ih, GH, I)
    if wt != NULL:
        if real is float:
            fnn_gemm_nt_f(d, ld, wt, GH, gx, I, TB, I, GH)
        else:
            fnn_gemm_nt_d(d, ld, wt, GH, gx, I, TB, I, GH)
        free(wt)
    else:
        gemm(False, False, TB, I, GH, <real>1, d, ld, w_ih, I, <real>0, gx, I)


cdef inline int weight_grads(const real *dx, const real *dh, int ld, const real *x, const real *h0,
                             const real *out, real *gw_ih, real *gw_hh, real *gb_ih, real *gb_hh,
                             int T, int B, int I, int H, int GH) noexcept nogil:
    """dW_ih = Σ δxᵀ x, dW_hh = Σ δhᵀ h_prev (h0, then out[:-1]), db = column sums.

    Small problems (operands within ~1 MB, i.e. in L2) use the hand-written
    product: with K = T·B long and M, N small, BLAS set-up and packing cost more
    than the arithmetic. Larger ones go to BLAS, whose packing then pays.
    dW_ih is built transposed, (I, G·H), so the wide dimension lies along the vectors.
    """
    cdef fnn_idx TB = <fnn_idx>T * B
    cdef real *wt
    if not small(TB * (ld + H + I)):
        gemm(True, False, GH, I, TB, <real>1, dx, ld, x, I, <real>0, gw_ih, I)
        gemm(True, False, GH, H, B, <real>1, dh, ld, h0, H, <real>0, gw_hh, H)
        if T > 1:
            gemm(True, False, GH, H, TB - B, <real>1, dh + <fnn_idx>B * ld, ld, out, H, <real>1, gw_hh, H)
    else:
        wt = <real*>calloc(<fnn_idx>I * GH, sizeof(real))
        if wt == NULL:
            return -1
        gemm_tn_acc(x, I, dx, ld, wt, GH, I, GH, TB)
        if real is float:
            fnn_transpose_f(wt, I, GH, gw_ih)
        else:
            fnn_transpose_d(wt, I, GH, gw_ih)
        free(wt)
        memset(gw_hh, 0, <fnn_idx>GH * H * sizeof(real))
        gemm_tn_acc(dh, ld, h0, H, gw_hh, H, GH, H, B)
        if T > 1:
            gemm_tn_acc(dh + <fnn_idx>B * ld, ld, out, H, gw_hh, H, GH, H, TB - B)
    if gb_ih != NULL:
        colsum(dx, TB, GH, ld, gb_ih)
    if gb_hh != NULL:
        colsum(dh, TB, GH, ld, gb_hh)
    return 0


cdef inline int row_chunk(int B, fnn_idx work) noexcept nogil:
    """Rows per thread for the time loop, or B (serial).

    The samples of a batch never interact in the recurrence (sample b's h_t
    depends on sample b alone), so the batch splits over the threads for the
    WHOLE time loop: one parallel region per call, no barrier per step. Small
    problems (``work`` = multiply-adds of the loop) stay serial. Chunks are
    multiples of 4 rows (the tile of the per-step product).
    """
    cdef int n = _fastnn_num_threads
    cdef int c
    if n <= 1 or work < (1 << 25) or B < 8:
        return B
    if n > B // 4:
        n = B // 4
    c = (B + n - 1) // n
    return (c + 3) // 4 * 4


cdef inline void *ptr(object a):
    """Data pointer of a validated ndarray, NULL for None."""
    if a is None:
        return NULL
    return cnp.PyArray_DATA(<cnp.ndarray>a)


cdef inline bint is_f32(object a):
    return cnp.PyArray_TYPE(<cnp.ndarray>a) == cnp.NPY_FLOAT32


# ---------------------------------------------------------------------------
# Elman RNN
# ---------------------------------------------------------------------------

cdef inline void rnn_fwd_rows(const real *hp, const real *wt, real *o, int relu, int r0, int r1,
                             int H) noexcept nogil:
    """Rows r0:r1 of one step: o += h_prev W_hhᵀ, then o = f(o)."""
    step_gemm(hp + <fnn_idx>r0 * H, H, wt, H, o + <fnn_idx>r0 * H, H, r1 - r0, H, H)
    if real is float:
        fnn_rnn_act_f(o + <fnn_idx>r0 * H, <fnn_idx>(r1 - r0) * H, relu)
    else:
        fnn_rnn_act_d(o + <fnn_idx>r0 * H, <fnn_idx>(r1 - r0) * H, relu)


cdef inline void rnn_bwd_rows(const real *go, real *grec, const real *h, real *d, const real *w_hh, int relu,
                              int r0, int r1, int H) noexcept nogil:
    """Rows r0:r1 of one backward step: δ = (go + g_rec) f'(h), then g_rec = δ W_hh."""
    cdef fnn_idx o = <fnn_idx>r0 * H
    cdef fnn_idx n = <fnn_idx>(r1 - r0) * H
    if real is float:
        fnn_rnn_delta_f(go + o, grec + o, h + o, d + o, n, relu)
    else:
        fnn_rnn_delta_d(go + o, grec + o, h + o, d + o, n, relu)
    memset(grec + o, 0, n * sizeof(real))
    step_gemm(d + o, H, w_hh, H, grec + o, H, r1 - r0, H, H)


cdef int rnn_fwd(const real *x, const real *h0, const real *w_ih, const real *w_hh, const real *b_ih,
                 const real *b_hh, int relu, real *out, int T, int B, int I, int H) noexcept nogil:
    cdef fnn_idx BH = <fnn_idx>B * H
    cdef real *wt = transposed(w_hh, H, H)
    if wt == NULL:
        return -1
    cdef int chunk = row_chunk(B, <fnn_idx>T * BH * H)
    cdef int c, nc = (B + chunk - 1) // chunk
    input_projection(x, w_ih, b_ih, b_hh, out, T * B, I, H)
    if nc == 1:
        rnn_fwd_block(h0, wt, out, relu, T, B, 0, B, H)
    else:
        for c in prange(nc, num_threads=nc, schedule="static"):
            rnn_fwd_block(h0, wt, out, relu, T, B, c * chunk, min(B, (c + 1) * chunk), H)
    free(wt)
    return 0


cdef int rnn_bwd(const real *go, const real *ghn, const real *x, const real *h0, const real *w_ih,
                  const real *w_hh, const real *out, int relu, real *work, real *gx, real *gh0,
                  real *gw_ih, real *gw_hh, real *gb_ih, real *gb_hh, int T, int B, int I, int H) noexcept nogil:
    cdef fnn_idx BH = <fnn_idx>B * H
    cdef int t
    cdef int chunk = row_chunk(B, <fnn_idx>T * BH * H)
    cdef int c, nc = (B + chunk - 1) // chunk
    # gh0 doubles as the recurrent gradient g_rec = δ_{t+1}·W_hh: it ends as dL/dh0.
    if ghn != NULL:
        memcpy(gh0, ghn, BH * sizeof(real))
    else:
        memset(gh0, 0, BH * sizeof(real))
    if nc == 1:
        rnn_bwd_block(go, gh0, out, work, w_hh, relu, T, B, 0, B, H)
    else:
        for c in prange(nc, num_threads=nc, schedule="static"):
            rnn_bwd_block(go, gh0, out, work, w_hh, relu, T, B, c * chunk, min(B, (c + 1) * chunk), H)
    if weight_grads(work, work, H, x, h0, out, gw_ih, gw_hh, gb_ih, gb_hh, T, B, I, H, H) != 0:
        return -1
    if gx != NULL:
        input_grad(work, H, w_ih, gx, T * B, I, H)
    return 0


def rnn_forward(x, h0, weight_ih, weight_hh, bias_ih, bias_hh, nonlinearity, out):
    """h_t = f(x_t W_ihᵀ + b_ih + h_{t-1} W_hhᵀ + b_hh) for all t."""
    cdef int T = x.shape[0], B = x.shape[1], I = x.shape[2], H = h0.shape[1]
    cdef int relu = nonlinearity == "relu"
    cdef int rc
    cdef void *px = ptr(x)
    cdef void *ph0 = ptr(h0)
    cdef void *pwi = ptr(weight_ih)
    cdef void *pwh = ptr(weight_hh)
    cdef void *pbi = ptr(bias_ih)
    cdef void *pbh = ptr(bias_hh)
    cdef void *po = ptr(out)
    if is_f32(x):
        with nogil:
            rc = rnn_fwd[float](<float*>px, <float*>ph0, <float*>pwi, <float*>pwh, <float*>pbi, <float*>pbh,
                           relu, <float*>po, T, B, I, H)
    else:
        with nogil:
            rc = rnn_fwd[double](<double*>px, <double*>ph0, <double*>pwi, <double*>pwh, <double*>pbi,
                            <double*>pbh, relu, <double*>po, T, B, I, H)
    if rc != 0:
        raise MemoryError("rnn_forward: out of memory")
    return out


def rnn_backward(grad_out, grad_hn, x, h0, weight_ih, weight_hh, out, nonlinearity, work,
                 grad_x, grad_h0, grad_weight_ih, grad_weight_hh, grad_bias_ih, grad_bias_hh):
    """BPTT: δ_t = (dL/dh_t)·f'(a_t), g_{t-1} = δ_t W_hh; weight grads one GEMM each."""
    cdef int T = x.shape[0], B = x.shape[1], I = x.shape[2], H = h0.shape[1]
    cdef int relu = nonlinearity == "relu"
    cdef void *p[15]
    cdef int k, rc
    args = (grad_out, grad_hn, x, h0, weight_ih, weight_hh, out, work, grad_x, grad_h0,
            grad_weight_ih, grad_weight_hh, grad_bias_ih, grad_bias_hh)
    for k in range(14):
        p[k] = ptr(args[k])
    if is_f32(x):
        with nogil:
            rc = rnn_bwd[float](<float*>p[0], <float*>p[1], <float*>p[2], <float*>p[3], <float*>p[4],
                           <float*>p[5], <float*>p[6], relu, <float*>p[7], <float*>p[8], <float*>p[9],
                           <float*>p[10], <float*>p[11], <float*>p[12], <float*>p[13], T, B, I, H)
    else:
        with nogil:
            rc = rnn_bwd[double](<double*>p[0], <double*>p[1], <double*>p[2], <double*>p[3], <double*>p[4],
                            <double*>p[5], <double*>p[6], relu, <double*>p[7], <double*>p[8], <double*>p[9],
                            <double*>p[10], <double*>p[11], <double*>p[12], <double*>p[13], T, B, I, H)
    if rc != 0:
        raise MemoryError("out of memory in the recurrent backward pass")
    return grad_x, grad_h0, grad_weight_ih, grad_weight_hh, grad_bias_ih, grad_bias_hh


# ---------------------------------------------------------------------------
# LSTM
# ---------------------------------------------------------------------------

cdef inline void lstm_fwd_rows(const real *hp, const real *cp, const real *wt, real *z, real *c, real *h,
                              int r0, int r1, int H) noexcept nogil:
    """Rows r0:r1 of one step: z += h_prev W_hhᵀ, then the gates, c_t and h_t."""
    cdef fnn_idx o = <fnn_idx>r0 * H
    step_gemm(hp + o, H, wt, 4 * H, z + 4 * o, 4 * H, r1 - r0, 4 * H, H)
    if real is float:
        fnn_lstm_cell_f(z + 4 * o, cp + o, c + o, h + o, r1 - r0, H)
    else:
        fnn_lstm_cell_d(z + 4 * o, cp + o, c + o, h + o, r1 - r0, H)


cdef inline void lstm_bwd_rows(const real *go, real *grec, real *gamma, const real *z, const real *c,
                               const real *cp, real *d, const real *w_hh, int r0, int r1, int H) noexcept nogil:
    """Rows r0:r1 of one backward step: δ and γ, then g_rec = δ W_hh."""
    cdef fnn_idx o = <fnn_idx>r0 * H
    if real is float:
        fnn_lstm_delta_f(go + o, grec + o, gamma + o, z + 4 * o, c + o, cp + o, d + 4 * o, r1 - r0, H)
    else:
        fnn_lstm_delta_d(go + o, grec + o, gamma + o, z + 4 * o, c + o, cp + o, d + 4 * o, r1 - r0, H)
    memset(grec + o, 0, <fnn_idx>(r1 - r0) * H * sizeof(real))
    step_gemm(d + 4 * o, 4 * H, w_hh, H, grec + o, H, r1 - r0, H, 4 * H)


cdef int lstm_fwd(const real *x, const real *h0, const real *c0, const real *w_ih, const real *w_hh,
                   const real *b_ih, const real *b_hh, real *out, real *cell, real *gates,
                   int T, int B, int I, int H) noexcept nogil:
    cdef fnn_idx BH = <fnn_idx>B * H
    cdef fnn_idx BG = 4 * BH
    cdef real *wt = transposed(w_hh, 4 * H, H)
    if wt == NULL:
        return -1
    cdef int chunk = row_chunk(B, <fnn_idx>T * BG * H)
    cdef int c, nc = (B + chunk - 1) // chunk
    input_projection(x, w_ih, b_ih, b_hh, gates, T * B, I, 4 * H)
    if nc == 1:
        lstm_fwd_block(h0, c0, wt, gates, cell, out, T, B, 0, B, H)
    else:
        for c in prange(nc, num_threads=nc, schedule="static"):
            lstm_fwd_block(h0, c0, wt, gates, cell, out, T, B, c * chunk, min(B, (c + 1) * chunk), H)
    free(wt)
    return 0


cdef int lstm_bwd(const real *go, const real *ghn, const real *gcn, const real *x, const real *h0,
                   const real *c0, const real *w_ih, const real *w_hh, const real *out, const real *cell,
                   const real *gates, real *work, real *gx, real *gh0, real *gc0, real *gw_ih, real *gw_hh,
                   real *gb_ih, real *gb_hh, int T, int B, int I, int H) noexcept nogil:
    cdef fnn_idx BH = <fnn_idx>B * H
    cdef fnn_idx BG = 4 * BH
    cdef int chunk = row_chunk(B, <fnn_idx>T * BG * H)
    cdef int c, nc = (B + chunk - 1) // chunk
    # gh0 carries g_rec and gc0 carries γ = dL/dc backwards; both end as the h0/c0 gradients.
    if ghn != NULL:
        memcpy(gh0, ghn, BH * sizeof(real))
    else:
        memset(gh0, 0, BH * sizeof(real))
    if gcn != NULL:
        memcpy(gc0, gcn, BH * sizeof(real))
    else:
        memset(gc0, 0, BH * sizeof(real))
    if nc == 1:
        lstm_bwd_block(go, gh0, gc0, gates, cell, c0, work, w_hh, T, B, 0, B, H)
    else:
        for c in prange(nc, num_threads=nc, schedule="static"):
            lstm_bwd_block(go, gh0, gc0, gates, cell, c0, work, w_hh, T, B, c * chunk, min(B, (c + 1) * chunk), H)
    if weight_grads(work, work, 4 * H, x, h0, out, gw_ih, gw_hh, gb_ih, gb_hh, T, B, I, H, 4 * H) != 0:
        return -1
    if gx != NULL:
        input_grad(work, 4 * H, w_ih, gx, T * B, I, 4 * H)
    return 0


def lstm_forward(x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, out, cell, gates):
    """LSTM (gates i, f, g, o): c_t = f c_{t-1} + i g, h_t = o tanh(c_t) for all t."""
    cdef int T = x.shape[0], B = x.shape[1], I = x.shape[2], H = h0.shape[1]
    cdef void *p[10]
    cdef int k, rc
    args = (x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, out, cell, gates)
    for k in range(10):
        p[k] = ptr(args[k])
    if is_f32(x):
        with nogil:
            rc = lstm_fwd[float](<float*>p[0], <float*>p[1], <float*>p[2], <float*>p[3], <float*>p[4],
                            <float*>p[5], <float*>p[6], <float*>p[7], <float*>p[8], <float*>p[9], T, B, I, H)
    else:
        with nogil:
            rc = lstm_fwd[double](<double*>p[0], <double*>p[1], <double*>p[2], <double*>p[3], <double*>p[4],
                             <double*>p[5], <double*>p[6], <double*>p[7], <double*>p[8], <double*>p[9],
                             T, B, I, H)
    if rc != 0:
        raise MemoryError("lstm_forward: out of memory")
    return out, cell, gates


def lstm_backward(grad_out, grad_hn, grad_cn, x, h0, c0, weight_ih, weight_hh, out, cell, gates, work,
                  grad_x, grad_h0, grad_c0, grad_weight_ih, grad_weight_hh, grad_bias_ih, grad_bias_hh):
    """LSTM BPTT: δ = [δi, δf, δg, δo] per step, g_{t-1} = δ W_hh, γ_{t-1} = γ f."""
    cdef int T = x.shape[0], B = x.shape[1], I = x.shape[2], H = h0.shape[1]
    cdef void *p[19]
    cdef int k, rc
    args = (grad_out, grad_hn, grad_cn, x, h0, c0, weight_ih, weight_hh, out, cell, gates, work,
            grad_x, grad_h0, grad_c0, grad_weight_ih, grad_weight_hh, grad_bias_ih, grad_bias_hh)
    for k in range(19):
        p[k] = ptr(args[k])
    if is_f32(x):
        with nogil:
            rc = lstm_bwd[float](<float*>p[0], <float*>p[1], <float*>p[2], <float*>p[3], <float*>p[4],
                            <float*>p[5], <float*>p[6], <float*>p[7], <float*>p[8], <float*>p[9],
                            <float*>p[10], <float*>p[11], <float*>p[12], <float*>p[13], <float*>p[14],
                            <float*>p[15], <float*>p[16], <float*>p[17], <float*>p[18], T, B, I, H)
    else:
        with nogil:
            rc = lstm_bwd[double](<double*>p[0], <double*>p[1], <double*>p[2], <double*>p[3], <double*>p[4],
                             <double*>p[5], <double*>p[6], <double*>p[7], <double*>p[8], <double*>p[9],
                             <double*>p[10], <double*>p[11], <double*>p[12], <double*>p[13], <double*>p[14],
                             <double*>p[15], <double*>p[16], <double*>p[17], <double*>p[18], T, B, I, H)
    if rc != 0:
        raise MemoryError("out of memory in the recurrent backward pass")
    return grad_x, grad_h0, grad_c0, grad_weight_ih, grad_weight_hh, grad_bias_ih, grad_bias_hh


# ---------------------------------------------------------------------------
# GRU
# ---------------------------------------------------------------------------

cdef inline void gru_fwd_rows(const real *hp, const real *wt, real *gh, const real *zb, real *gi, real *hn,
                             real *h, int r0, int r1, int H) noexcept nogil:
    """Rows r0:r1 of one step: gh = h_prev W_hhᵀ, then r, z, n and h_t."""
    cdef fnn_idx o = <fnn_idx>r0 * H
    memset(gh + 3 * o, 0, <fnn_idx>(r1 - r0) * 3 * H * sizeof(real))
    step_gemm(hp + o, H, wt, 3 * H, gh + 3 * o, 3 * H, r1 - r0, 3 * H, H)
    if real is float:
        fnn_gru_cell_f(gi + 3 * o, gh + 3 * o, zb, hp + o, hn + o, h + o, r1 - r0, H)
    else:
        fnn_gru_cell_d(gi + 3 * o, gh + 3 * o, zb, hp + o, hn + o, h + o, r1 - r0, H)


cdef inline void gru_bwd_rows(const real *go, real *grec, const real *gates, const real *hn, const real *hp,
                              real *w, const real *w_hh, int r0, int r1, int H) noexcept nogil:
    """Rows r0:r1 of one backward step: δ^x, δ^h and g_rec = g z + δ^h W_hh."""
    cdef fnn_idx o = <fnn_idx>r0 * H
    if real is float:
        fnn_gru_delta_f(go + o, grec + o, gates + 3 * o, hn + o, hp + o, w + 6 * o, r1 - r0, H)
    else:
        fnn_gru_delta_d(go + o, grec + o, gates + 3 * o, hn + o, hp + o, w + 6 * o, r1 - r0, H)
    step_gemm(w + 6 * o + 3 * H, 6 * H, w_hh, H, grec + o, H, r1 - r0, H, 3 * H)


cdef int gru_fwd(const real *x, const real *h0, const real *w_ih, const real *w_hh, const real *b_ih,
                 const real *b_hh, real *out, real *gates, real *hidden_n,
                 int T, int B, int I, int H) noexcept nogil:
    cdef fnn_idx BH = <fnn_idx>B * H
    cdef fnn_idx BG = 3 * BH
    # gh: one step's h W_hhᵀ; zb: the hidden bias, zeros when there is none (keeps the C loop branch-free).
    cdef real *gh = <real*>malloc(BG * sizeof(real))
    cdef real *zb = <real*>calloc(3 * H, sizeof(real))
    cdef real *wt = transposed(w_hh, 3 * H, H)
    cdef int chunk = row_chunk(B, <fnn_idx>T * BG * H)
    cdef int c, nc = (B + chunk - 1) // chunk
    if gh == NULL or zb == NULL or wt == NULL:
        free(gh)
        free(zb)
        free(wt)
        return -1
    if b_hh != NULL:
        memcpy(zb, b_hh, 3 * H * sizeof(real))
    input_projection(x, w_ih, b_ih, <const real*>NULL, gates, T * B, I, 3 * H)
    if nc == 1:
        gru_fwd_block(h0, wt, gh, zb, gates, hidden_n, out, T, B, 0, B, H)
    else:
        for c in prange(nc, num_threads=nc, schedule="static"):
            gru_fwd_block(h0, wt, gh, zb, gates, hidden_n, out, T, B, c * chunk, min(B, (c + 1) * chunk), H)
    free(gh)
    free(zb)
    free(wt)
    return 0


cdef int gru_bwd(const real *go, const real *ghn, const real *x, const real *h0, const real *w_ih,
                  const real *w_hh, const real *out, const real *gates, const real *hidden_n, real *work,
                  real *gx, real *gh0, real *gw_ih, real *gw_hh, real *gb_ih, real *gb_hh,
                  int T, int B, int I, int H) noexcept nogil:
    cdef fnn_idx BH = <fnn_idx>B * H
    cdef fnn_idx BG = 3 * BH
    cdef fnn_idx BW = 6 * BH
    cdef int chunk = row_chunk(B, <fnn_idx>T * BG * H)
    cdef int c, nc = (B + chunk - 1) // chunk
    if ghn != NULL:
        memcpy(gh0, ghn, BH * sizeof(real))
    else:
        memset(gh0, 0, BH * sizeof(real))
    if nc == 1:
        gru_bwd_block(go, gh0, gates, hidden_n, h0, out, work, w_hh, T, B, 0, B, H)
    else:
        for c in prange(nc, num_threads=nc, schedule="static"):
            gru_bwd_block(go, gh0, gates, hidden_n, h0, out, work, w_hh, T, B, c * chunk, min(B, (c + 1) * chunk), H)
    if weight_grads(work, work + 3 * H, 6 * H, x, h0, out, gw_ih, gw_hh, gb_ih, gb_hh, T, B, I, H, 3 * H) != 0:
        return -1
    if gx != NULL:
        input_grad(work, 6 * H, w_ih, gx, T * B, I, 3 * H)
    return 0


def gru_forward(x, h0, weight_ih, weight_hh, bias_ih, bias_hh, out, gates, hidden_n):
    """GRU (gates r, z, n): n = tanh(x W_inᵀ + b_in + r (h W_hnᵀ + b_hn)), h_t = (1-z) n + z h_{t-1}."""
    cdef int T = x.shape[0], B = x.shape[1], I = x.shape[2], H = h0.shape[1]
    cdef void *p[9]
    cdef int k, rc
    args = (x, h0, weight_ih, weight_hh, bias_ih, bias_hh, out, gates, hidden_n)
    for k in range(9):
        p[k] = ptr(args[k])
    if is_f32(x):
        with nogil:
            rc = gru_fwd[float](<float*>p[0], <float*>p[1], <float*>p[2], <float*>p[3], <float*>p[4],
                                <float*>p[5], <float*>p[6], <float*>p[7], <float*>p[8], T, B, I, H)
    else:
        with nogil:
            rc = gru_fwd[double](<double*>p[0], <double*>p[1], <double*>p[2], <double*>p[3], <double*>p[4],
                                 <double*>p[5], <double*>p[6], <double*>p[7], <double*>p[8], T, B, I, H)
    if rc != 0:
        raise MemoryError("gru_forward: out of memory")
    return out, gates, hidden_n


def gru_backward(grad_out, grad_hn, x, h0, weight_ih, weight_hh, out, gates, hidden_n, work,
                 grad_x, grad_h0, grad_weight_ih, grad_weight_hh, grad_bias_ih, grad_bias_hh):
    """GRU BPTT: δ^x = [δr, δz, δn], δ^h = [δr, δz, δn r], g_{t-1} = g z + δ^h W_hh."""
    cdef int T = x.shape[0], B = x.shape[1], I = x.shape[2], H = h0.shape[1]
    cdef void *p[16]
    cdef int k, rc
    args = (grad_out, grad_hn, x, h0, weight_ih, weight_hh, out, gates, hidden_n, work,
            grad_x, grad_h0, grad_weight_ih, grad_weight_hh, grad_bias_ih, grad_bias_hh)
    for k in range(16):
        p[k] = ptr(args[k])
    if is_f32(x):
        with nogil:
            rc = gru_bwd[float](<float*>p[0], <float*>p[1], <float*>p[2], <float*>p[3], <float*>p[4],
                           <float*>p[5], <float*>p[6], <float*>p[7], <float*>p[8], <float*>p[9],
                           <float*>p[10], <float*>p[11], <float*>p[12], <float*>p[13], <float*>p[14],
                           <float*>p[15], T, B, I, H)
    else:
        with nogil:
            rc = gru_bwd[double](<double*>p[0], <double*>p[1], <double*>p[2], <double*>p[3], <double*>p[4],
                            <double*>p[5], <double*>p[6], <double*>p[7], <double*>p[8], <double*>p[9],
                            <double*>p[10], <double*>p[11], <double*>p[12], <double*>p[13], <double*>p[14],
                            <double*>p[15], T, B, I, H)
    if rc != 0:
        raise MemoryError("out of memory in the recurrent backward pass")
    return grad_x, grad_h0, grad_weight_ih, grad_weight_hh, grad_bias_ih, grad_bias_hh


# ---------------------------------------------------------------------------
# whole time loops over a block of batch rows (one thread's share)
# ---------------------------------------------------------------------------

cdef void rnn_fwd_block(const real *h0, const real *wt, real *out, int relu, int T, int B, int r0, int r1,
                        int H) noexcept nogil:
    """Rows r0:r1 of the whole forward time loop."""
    cdef fnn_idx BH = <fnn_idx>B * H
    cdef int t
    for t in range(T):
        rnn_fwd_rows(h0 if t == 0 else out + (t - 1) * BH, wt, out + t * BH, relu, r0, r1, H)


cdef void rnn_bwd_block(const real *go, real *gh0, const real *out, real *work, const real *w_hh, int relu,
                        int T, int B, int r0, int r1, int H) noexcept nogil:
    """Rows r0:r1 of the whole backward time loop."""
    cdef fnn_idx BH = <fnn_idx>B * H
    cdef int t
    for t in range(T - 1, -1, -1):
        rnn_bwd_rows(go + t * BH, gh0, out + t * BH, work + t * BH, w_hh, relu, r0, r1, H)


cdef void lstm_fwd_block(const real *h0, const real *c0, const real *wt, real *gates, real *cell, real *out,
                         int T, int B, int r0, int r1, int H) noexcept nogil:
    cdef fnn_idx BH = <fnn_idx>B * H
    cdef int t
    for t in range(T):
        lstm_fwd_rows(h0 if t == 0 else out + (t - 1) * BH, c0 if t == 0 else cell + (t - 1) * BH, wt,
                      gates + 4 * t * BH, cell + t * BH, out + t * BH, r0, r1, H)


cdef void lstm_bwd_block(const real *go, real *gh0, real *gc0, const real *gates, const real *cell,
                         const real *c0, real *work, const real *w_hh, int T, int B, int r0, int r1,
                         int H) noexcept nogil:
    cdef fnn_idx BH = <fnn_idx>B * H
    cdef int t
    for t in range(T - 1, -1, -1):
        lstm_bwd_rows(go + t * BH, gh0, gc0, gates + 4 * t * BH, cell + t * BH,
                      c0 if t == 0 else cell + (t - 1) * BH, work + 4 * t * BH, w_hh, r0, r1, H)


cdef void gru_fwd_block(const real *h0, const real *wt, real *gh, const real *zb, real *gates, real *hidden_n,
                        real *out, int T, int B, int r0, int r1, int H) noexcept nogil:
    cdef fnn_idx BH = <fnn_idx>B * H
    cdef int t
    for t in range(T):
        gru_fwd_rows(h0 if t == 0 else out + (t - 1) * BH, wt, gh, zb, gates + 3 * t * BH, hidden_n + t * BH,
                     out + t * BH, r0, r1, H)


cdef void gru_bwd_block(const real *go, real *gh0, const real *gates, const real *hidden_n, const real *h0,
                        const real *out, real *work, const real *w_hh, int T, int B, int r0, int r1,
                        int H) noexcept nogil:
    cdef fnn_idx BH = <fnn_idx>B * H
    cdef int t
    for t in range(T - 1, -1, -1):
        gru_bwd_rows(go + t * BH, gh0, gates + 3 * t * BH, hidden_n + t * BH,
                     h0 if t == 0 else out + (t - 1) * BH, work + 6 * t * BH, w_hh, r0, r1, H)
