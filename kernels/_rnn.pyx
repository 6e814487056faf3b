# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Recurrent kernels: RNN, LSTM and GRU forward over a sequence and BPTT.

The whole time loop runs here without the GIL. Per step: one small product
with W_hh (hand-written, rnn_kernels.h), then the gate arithmetic (rnn_kernels.h, vectorised C).
The input projection, the weight gradients and dL/dx cover all steps at once:
for large problems one call each to fastnn's own GEMM (gemm.h, threaded
inside); for small ones the hand-written product, inside the one parallel
region of the forward (by batch rows) or backward pass (batch rows for the
time loop, then gate columns and rows of dL/dx).
Arrays arrive validated by fastnn.ops.rnn (C-contiguous, one float dtype,
shapes checked), so only raw pointers are taken here (read-only inputs are
fine: they are only read). Sizes and offsets are fnn_idx (ptrdiff_t); the few
that reach BLAS as C ints (its fallback in own_gemm) are T·B, I, H or G·H,
which fastnn.ops.rnn bounds by 2^31 - 1.
"""

include "_threads.pxi"

cimport numpy as cnp
from libc.stdlib cimport malloc, calloc, free
from libc.string cimport memcpy, memset
from scipy.linalg.cython_blas cimport sgemm, dgemm
from cython.parallel cimport parallel

cdef extern from *:
    """
    /* A parallel region whose threads take blocks from a shared counter. With
     * passive OpenMP waits a thread that waits at the region's closing barrier
     * goes to sleep, and waking it costs tens of µs on shared or virtual cores.
     * So blocks are handed out dynamically (the master starts at once, a worker
     * joins when it has woken up), and the master, when it runs out of blocks,
     * spins a bounded while for the others to finish, to reach the barrier last. */
    #include <time.h>
    #ifdef _OPENMP
    #include <omp.h>
    #endif
    static inline int fnn_claim(int *next) { return __atomic_fetch_add(next, 1, __ATOMIC_RELAXED); }
    static inline double fnn_clock(void) {
        struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
    }
    static inline void fnn_leave(int *arrived) {
    #ifdef _OPENMP
        int n = omp_get_num_threads();
        __atomic_fetch_add(arrived, 1, __ATOMIC_ACQ_REL);
        if (omp_get_thread_num() != 0) return;
        double t0 = fnn_clock();
        while (__atomic_load_n(arrived, __ATOMIC_ACQUIRE) < n) {
            if (fnn_clock() - t0 > 50e-6) return;  /* a long wait: sleeping costs little more */
    #if defined(__x86_64__) || defined(__i386__)
            __builtin_ia32_pause();
    #endif
        }
        /* the last worker has left its blocks and is entering the barrier: give it a moment */
        t0 = fnn_clock();
        while (fnn_clock() - t0 < 1e-6) { }
    #else
        (void)arrived;
    #endif
    }
    /* A barrier inside a region: count a finished block; wait until n are.
     * The waiter spins (both threads are awake by then and a block is short),
     * yielding the core after a while in case the other thread was preempted. */
    #include <sched.h>
    static inline void fnn_done(int *done) { __atomic_fetch_add(done, 1, __ATOMIC_RELEASE); }
    static inline void fnn_await(int *done, int n) {
        long spins = 0;
        while (__atomic_load_n(done, __ATOMIC_ACQUIRE) < n) {
            if (++spins > 20000) sched_yield();
    #if defined(__x86_64__) || defined(__i386__)
            else __builtin_ia32_pause();
    #endif
        }
    }
    """
    int fnn_claim(int *next) nogil
    void fnn_leave(int *arrived) nogil
    void fnn_done(int *done) nogil
    void fnn_await(int *done, int n) nogil

cnp.import_array()

# Multiply-adds from which work opens a parallel region of its own. fastnn
# runs OpenMP with passive waits (fastnn._config.prefer_passive_openmp), so
# a region pays for waking its worker: ~40 µs on a 2-core virtual machine,
# the time of ~5M multiply-adds here. The time loop's blocks are claimed
# dynamically, so the master starts at once and the worker joins when awake:
# the region gains once the serial work clearly exceeds the wake-up. Measured
# on the tanh RNN T=50 B=32 I=8 H=64 step (forward region 7.4M, backward
# 14.7M), 2 threads: 261 µs serial, 246 µs with the backward threaded,
# 217-230 µs with both; the LSTM T=100 B=64 H=128 (~250M per region) gains
# ~40% from a second thread.
cdef Py_ssize_t PAR_MIN_WORK = 6 << 20


def _set_parallel_min_work(n):
    """Set the multiply-adds from which work is split over threads; returns the old value (tests)."""
    global PAR_MIN_WORK
    old = PAR_MIN_WORK
    PAR_MIN_WORK = n
    return old


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
    void fnn_gemm_acc_f(const float *A, fnn_idx ars, fnn_idx aks, const float *Bt, fnn_idx ldb, float *C,
                        fnn_idx ldc, fnn_idx M, fnn_idx N, fnn_idx K)
    void fnn_gemm_acc_d(const double *A, fnn_idx ars, fnn_idx aks, const double *Bt, fnn_idx ldb, double *C,
                        fnn_idx ldc, fnn_idx M, fnn_idx N, fnn_idx K)
    void fnn_transpose_f(const float *A, fnn_idx M, fnn_idx N, float *Bt)
    void fnn_transpose_d(const double *A, fnn_idx M, fnn_idx N, double *Bt)

# fastnn's own GEMM (packing + AVX-512/AVX2 micro-kernels, threaded inside) for
# the large all-steps products.
cdef extern from "gemm.h" nogil:
    int fnn_sgemm(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const float *a, Py_ssize_t rsa, Py_ssize_t csa,
                  const float *b, Py_ssize_t rsb, Py_ssize_t csb, float *c, Py_ssize_t ldc, const float *bias,
                  int act, int nthreads)
    int fnn_dgemm(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const double *a, Py_ssize_t rsa, Py_ssize_t csa,
                  const double *b, Py_ssize_t rsb, Py_ssize_t csb, double *c, Py_ssize_t ldc, const double *bias,
                  int act, int nthreads)


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

    Those go to the hand-written kernels, split over the threads by output
    rows or columns: packing costs more than it saves there. Larger ones go to
    fastnn's own GEMM (gemm.h), whose packing then pays.
    """
    return elements <= (1 << 18)


cdef inline int own_gemm(fnn_idx M, fnn_idx N, fnn_idx K, const real *a, fnn_idx rsa, fnn_idx csa, const real *b,
                         fnn_idx rsb, fnn_idx csb, real *c, fnn_idx ldc, const real *bias) noexcept nogil:
    """C (M, N) = op(A)·op(B) (+ bias) by fastnn's own GEMM on the module's threads.

    A(i, p) = a[i*rsa + p*csa], B(p, j) = b[p*rsb + j*csb]. Falls back to BLAS
    (no bias) when the GEMM cannot get its packing buffers; returns -1 when
    that fallback cannot honour a bias either.
    """
    cdef int rc
    if M == 0 or N == 0:
        return 0
    if real is float:
        rc = fnn_sgemm(M, N, K, a, rsa, csa, b, rsb, csb, c, ldc, bias, 0, _fastnn_num_threads)
    else:
        rc = fnn_dgemm(M, N, K, a, rsa, csa, b, rsb, csb, c, ldc, bias, 0, _fastnn_num_threads)
    if rc == 0:
        return 0
    if bias != NULL:
        return -1
    # BLAS wants one unit stride per operand: the all-steps products here always have one.
    # Its int sizes: every size and stride here is T·B, I, H or at most 6·H, which
    # fastnn.ops.rnn bounds by 2^31 - 1.
    gemm(csa != 1, csb != 1, <int>M, <int>N, <int>K, <real>1, a, <int>(rsa if csa == 1 else csa), b,
         <int>(rsb if csb == 1 else csb), <real>0, c, <int>ldc)
    return 0


cdef inline int parts(fnn_idx n, fnn_idx step, fnn_idx work, bint region) noexcept nogil:
    """Blocks of ``step`` rows (or columns) to cut n into for the threads.

    1 (serial) below PAR_MIN_WORK multiply-adds, unless ``region``: the work
    joins a region that runs anyway (the backward time loop's). About two
    blocks per thread, taken dynamically (see fnn_leave): a worker that wakes
    late takes fewer.
    """
    cdef int nt = _fastnn_num_threads
    cdef fnn_idx blocks = (n + step - 1) // step
    if nt <= 1 or (work < PAR_MIN_WORK and not region):
        return 1
    return <int>(2 * nt if 2 * nt < blocks else blocks)


cdef inline int team(fnn_idx nblocks) noexcept nogil:
    """Threads for a region of nblocks blocks."""
    return _fastnn_num_threads if _fastnn_num_threads < nblocks else <int>nblocks


cdef inline fnn_idx part_size(fnn_idx n, int np, fnn_idx step) noexcept nogil:
    """Rows per block: n split in np blocks, rounded up to a multiple of ``step``."""
    cdef fnn_idx c = (n + np - 1) // np
    return (c + step - 1) // step * step


cdef inline void project_rows(const real *x, const real *wt, const real *bias, real *out, fnn_idx r0,
                              fnn_idx r1, fnn_idx I, fnn_idx GH) noexcept nogil:
    """Rows r0:r1 of out = x·W_ihᵀ + bias, W_ihᵀ given as wt (I, GH); bias (GH) or NULL."""
    cdef fnn_idx r, j
    if bias != NULL:
        for r in range(r0, r1):
            for j in range(GH):
                out[r * GH + j] = bias[j]
    else:
        memset(out + r0 * GH, 0, (r1 - r0) * GH * sizeof(real))
    step_gemm(x + r0 * I, I, wt, GH, out + r0 * GH, GH, r1 - r0, GH, I)


cdef inline int projection_setup(const real *x, const real *w_ih, const real *b1, const real *b2, real *out,
                                 fnn_idx TB, fnn_idx I, fnn_idx GH, real **wiT, real **bias) noexcept nogil:
    """The input projection out = x·W_ihᵀ + b1 + b2 for all T·B rows, or what it needs.

    Large problems: done here, by the own GEMM (threaded, packed), and *wiT
    is NULL. Small ones: *wiT = W_ihᵀ and *bias = b1 + b2 (or NULL) are made
    for project_block, which each thread runs on its batch rows inside the
    time-loop region (no region of its own). The caller frees both.
    """
    cdef fnn_idx j
    cdef int rc = 0
    wiT[0] = NULL
    bias[0] = NULL
    if b1 != NULL or b2 != NULL:
        bias[0] = <real*>malloc(GH * sizeof(real))
        if bias[0] == NULL:
            return -1
        for j in range(GH):
            bias[0][j] = (b1[j] if b1 != NULL else 0) + (b2[j] if b2 != NULL else 0)
    if not small(<fnn_idx>TB * (I + GH)):
        rc = own_gemm(TB, GH, I, x, I, 1, w_ih, 1, I, out, GH, bias[0])
    else:
        wiT[0] = transposed(w_ih, GH, I)
        if wiT[0] == NULL:
            rc = -1
    return rc


cdef inline void project_block(const real *x, const real *wiT, const real *bias, real *out, fnn_idx T, fnn_idx B,
                               fnn_idx r0, fnn_idx r1, fnn_idx I, fnn_idx GH) noexcept nogil:
    """Batch rows r0:r1 of the input projection for every step (nothing when it is done already)."""
    cdef fnn_idx t
    if wiT == NULL:
        return
    for t in range(T):
        project_rows(x, wiT, bias, out, <fnn_idx>t * B + r0, <fnn_idx>t * B + r1, I, GH)


cdef inline void input_grad_rows(const real *d, fnn_idx ld, const real *w_ih, real *gx, fnn_idx r0, fnn_idx r1,
                                 fnn_idx I, fnn_idx GH) noexcept nogil:
    """Rows r0:r1 (of all T·B) of dL/dx = δ·W_ih: the narrow product, I columns (a vector or less)."""
    if r1 <= r0:
        return
    memset(gx + r0 * I, 0, (r1 - r0) * I * sizeof(real))
    step_gemm(d + r0 * ld, ld, w_ih, I, gx + r0 * I, I, r1 - r0, I, GH)


cdef inline void weight_grad_cols(const real *dx, const real *dh, fnn_idx ld, const real *x, const real *h0,
                                  const real *out, real *wt, real *gw_hh, real *gb_ih, real *gb_hh,
                                  fnn_idx m0, fnn_idx m1, fnn_idx T, fnn_idx B, fnn_idx I, fnn_idx H,
                                  fnn_idx GH) noexcept nogil:
    """Gate columns m0:m1 of the weight and bias gradients (the small-problem path).

    wt (I, GH) receives dW_ihᵀ, gw_hh (GH, H) dW_hh; each gate column is
    computed whole by one thread, so the split does not change the rounding.
    """
    cdef fnn_idx TB = <fnn_idx>T * B
    cdef fnn_idx n = m1 - m0
    gemm_tn_acc(x, I, dx + m0, ld, wt + m0, GH, I, n, TB)
    memset(gw_hh + m0 * H, 0, n * H * sizeof(real))
    gemm_tn_acc(dh + m0, ld, h0, H, gw_hh + m0 * H, H, n, H, B)
    if T > 1:
        gemm_tn_acc(dh + <fnn_idx>B * ld + m0, ld, out, H, gw_hh + m0 * H, H, n, H, TB - B)
    if gb_ih != NULL:
        colsum(dx + m0, TB, n, ld, gb_ih + m0)
    if gb_hh != NULL and (dh != dx or gb_ih == NULL):
        colsum(dh + m0, TB, n, ld, gb_hh + m0)


cdef inline int grads_setup(fnn_idx T, fnn_idx B, fnn_idx ld, fnn_idx I, fnn_idx H, fnn_idx GH, real **wt,
                            fnn_idx *chunk, bint region) noexcept nogil:
    """Blocks of gate columns for weight_grad_cols in the backward region; 0 for the large path, -1 out of memory.

    Small problems (operands within ~1 MB, i.e. in L2) use the hand-written
    product: with K = T·B long and M, N small, packing costs more than the
    arithmetic. *wt gets a zeroed (I, G·H) buffer for dW_ihᵀ (the wide
    dimension along the vectors).
    """
    cdef fnn_idx TB = <fnn_idx>T * B
    cdef int nw
    wt[0] = NULL
    if not small(TB * (ld + H + I)):
        return 0
    wt[0] = <real*>calloc(<fnn_idx>I * GH, sizeof(real))
    if wt[0] == NULL:
        return -1
    nw = parts(GH, 4, TB * GH * (H + I), region)
    chunk[0] = part_size(GH, nw, 4)
    return <int>((GH + chunk[0] - 1) // chunk[0])


cdef inline int grads_finish(const real *dx, const real *dh, fnn_idx ld, const real *x, const real *h0,
                             const real *out, const real *w_ih, real *wt, real *gx, bint gx_done, real *gw_ih,
                             real *gw_hh, real *gb_ih, real *gb_hh, fnn_idx T, fnn_idx B, fnn_idx I, fnn_idx H,
                             fnn_idx GH) noexcept nogil:
    """What the backward region left: dW_ih from wt (small problems), or all
    weight gradients by the own GEMM (large ones), then dL/dx if not done yet.

    Large: dW_hh over out[:-1] (one strided operand), then the h0 term added
    by the hand-written product.
    """
    cdef fnn_idx TB = <fnn_idx>T * B
    if wt != NULL:
        if real is float:
            fnn_transpose_f(wt, I, GH, gw_ih)
        else:
            fnn_transpose_d(wt, I, GH, gw_ih)
        free(wt)
    else:
        if own_gemm(GH, I, TB, dx, 1, ld, x, I, 1, gw_ih, I, <const real*>NULL) != 0:
            return -1
        if T > 1:
            if own_gemm(GH, H, TB - B, dh + B * ld, 1, ld, out, H, 1, gw_hh, H,
                        <const real*>NULL) != 0:
                return -1
        else:
            memset(gw_hh, 0, <fnn_idx>GH * H * sizeof(real))
        gemm_tn_acc(dh, ld, h0, H, gw_hh, H, GH, H, B)
        if gb_ih != NULL:
            colsum(dx, TB, GH, ld, gb_ih)
        if gb_hh != NULL and (dh != dx or gb_ih == NULL):
            colsum(dh, TB, GH, ld, gb_hh)
    # The RNN and LSTM share one δ for both biases: their gradients are equal.
    if gb_ih != NULL and gb_hh != NULL and dh == dx:
        memcpy(gb_hh, gb_ih, GH * sizeof(real))
    if gx != NULL and not gx_done:
        return own_gemm(TB, I, GH, dx, ld, 1, w_ih, I, 1, gx, I, <const real*>NULL)
    return 0


cdef inline real *small_input_grad(real *gx, fnn_idx TB, fnn_idx I, fnn_idx GH) noexcept nogil:
    """gx when dL/dx is small enough for input_grad_rows in the backward region, else NULL."""
    return gx if small(<fnn_idx>TB * (I + GH)) else NULL


cdef inline fnn_idx row_chunk(fnn_idx B, fnn_idx work) noexcept nogil:
    """Rows per block of the time loop, or B (serial).

    The samples of a batch never interact in the recurrence (sample b's h_t
    depends on sample b alone), so the batch splits over the threads for the
    WHOLE time loop: one parallel region per call, no barrier per step. Small
    problems (``work`` = multiply-adds of the region: the loop and what joins
    it) stay serial. About four
    blocks per thread, taken dynamically; blocks are multiples of 4 rows (the
    tile of the per-step product).
    """
    cdef int n = _fastnn_num_threads
    cdef fnn_idx c
    if n <= 1 or work < PAR_MIN_WORK or B < 8:
        return B
    c = (B + 2 * n - 1) // (2 * n)
    return (c + 3) // 4 * 4


def _empty_grads(grad_h0, grad_hn, *sums):
    """The gradients of a call with no time step or no sample: dL/dh0 = grad_hn, weight sums zero.

    fastnn.ops answers such calls itself; the layers may call the kernels
    directly, so the kernels must not run their loops on them either.
    """
    if grad_h0 is not None:
        grad_h0[...] = 0 if grad_hn is None else grad_hn
    for a in sums:
        if a is not None:
            a.fill(0)


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

cdef inline void rnn_fwd_rows(const real *hp, const real *wt, real *o, int relu, fnn_idx r0, fnn_idx r1,
                             fnn_idx H) noexcept nogil:
    """Rows r0:r1 of one step: o += h_prev W_hhᵀ, then o = f(o)."""
    step_gemm(hp + <fnn_idx>r0 * H, H, wt, H, o + <fnn_idx>r0 * H, H, r1 - r0, H, H)
    if real is float:
        fnn_rnn_act_f(o + <fnn_idx>r0 * H, <fnn_idx>(r1 - r0) * H, relu)
    else:
        fnn_rnn_act_d(o + <fnn_idx>r0 * H, <fnn_idx>(r1 - r0) * H, relu)


cdef inline void rnn_bwd_rows(const real *go, real *grec, const real *h, real *d, const real *w_hh, int relu,
                              fnn_idx r0, fnn_idx r1, fnn_idx H) noexcept nogil:
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
                 const real *b_hh, int relu, real *out, fnn_idx T, fnn_idx B, fnn_idx I, fnn_idx H) noexcept nogil:
    cdef fnn_idx BH = <fnn_idx>B * H
    cdef fnn_idx chunk = row_chunk(B, <fnn_idx>T * BH * (H + I))
    cdef fnn_idx c = 0, nc = (B + chunk - 1) // chunk
    cdef int nxt, arrived
    cdef real *wiT
    cdef real *bias
    cdef real *wt = transposed(w_hh, H, H)
    if wt == NULL:
        return -1
    if projection_setup(x, w_ih, b_ih, b_hh, out, T * B, I, H, &wiT, &bias) != 0:
        free(wt)
        free(wiT)
        free(bias)
        return -1
    if nc == 1:
        project_block(x, wiT, bias, out, T, B, 0, B, I, H)
        rnn_fwd_block(h0, wt, out, relu, T, B, 0, B, H)
    else:
        nxt = 0
        arrived = 0
        with parallel(num_threads=team(nc)):
            c = fnn_claim(&nxt)
            while c < nc:
                project_block(x, wiT, bias, out, T, B, c * chunk, min(B, (c + 1) * chunk), I, H)
                rnn_fwd_block(h0, wt, out, relu, T, B, c * chunk, min(B, (c + 1) * chunk), H)
                c = fnn_claim(&nxt)
            fnn_leave(&arrived)
    free(wt)
    free(wiT)
    free(bias)
    return 0


cdef int rnn_bwd(const real *go, const real *ghn, const real *x, const real *h0, const real *w_ih,
                  const real *w_hh, const real *out, int relu, real *work, real *gx, real *gh0,
                  real *gw_ih, real *gw_hh, real *gb_ih, real *gb_hh, fnn_idx T, fnn_idx B, fnn_idx I,
                  fnn_idx H) noexcept nogil:
    cdef fnn_idx BH = <fnn_idx>B * H
    cdef fnn_idx chunk = row_chunk(B, <fnn_idx>T * BH * 2 * (H + I))
    cdef fnn_idx c = 0, nc = (B + chunk - 1) // chunk
    cdef int nxt, nxt2, done, arrived
    cdef real *gxs = small_input_grad(gx, T * B, I, H)
    cdef real *wt
    cdef fnn_idx TB = <fnn_idx>T * B, xc = 0
    cdef fnn_idx nx
    cdef fnn_idx wc = 0
    cdef fnn_idx nw = grads_setup[real](T, B, H, I, H, H, &wt, &wc, nc > 1)
    if nw < 0:
        return -1
    nx = parts(TB, 8, TB * I * H, nc > 1) if gxs != NULL else 0
    # gh0 doubles as the recurrent gradient g_rec = δ_{t+1}·W_hh: it ends as dL/dh0.
    if ghn != NULL:
        memcpy(gh0, ghn, BH * sizeof(real))
    else:
        memset(gh0, 0, BH * sizeof(real))
    if nx > 0:
        xc = part_size(TB, nx, 8)
        nx = (TB + xc - 1) // xc   # rounding xc up may leave fewer blocks than asked
    if nc == 1 and nw <= 1 and nx <= 1:
        rnn_bwd_block(go, gh0, out, work, w_hh, relu, T, B, 0, B, H)
        if gxs != NULL:
            input_grad_rows(work, H, w_ih, gxs, 0, TB, I, H)
        if nw == 1:
            weight_grad_cols(work, work, H, x, h0, out, wt, gw_hh, gb_ih, gb_hh, 0, H, T, B, I, H, H)
    else:
        # One region: the time loop by batch rows, then (all δ done) the weight gradients by gate
        # columns and dL/dx by rows.
        nxt = 0
        nxt2 = 0
        done = 0
        arrived = 0
        with parallel(num_threads=team(nc if nc > nw + nx else nw + nx)):
            c = fnn_claim(&nxt)
            while c < nc:
                rnn_bwd_block(go, gh0, out, work, w_hh, relu, T, B, c * chunk, min(B, (c + 1) * chunk), H)
                fnn_done(&done)
                c = fnn_claim(&nxt)
            if nw + nx > 0:
                fnn_await(&done, nc)
                c = fnn_claim(&nxt2)
                while c < nw + nx:
                    if c >= nw:
                        input_grad_rows(work, H, w_ih, gxs, (c - nw) * xc, min(TB, (c - nw + 1) * xc), I, H)
                    else:
                        weight_grad_cols(work, work, H, x, h0, out, wt, gw_hh, gb_ih, gb_hh, c * wc,
                                         min(H, (c + 1) * wc), T, B, I, H, H)
                    c = fnn_claim(&nxt2)
            fnn_leave(&arrived)
    return grads_finish(work, work, H, x, h0, out, w_ih, wt, gx, gxs != NULL, gw_ih, gw_hh, gb_ih, gb_hh,
                        T, B, I, H, H)


def rnn_forward(x, h0, weight_ih, weight_hh, bias_ih, bias_hh, nonlinearity, out):
    """h_t = f(x_t W_ihᵀ + b_ih + h_{t-1} W_hhᵀ + b_hh) for all t."""
    cdef fnn_idx T = x.shape[0], B = x.shape[1], I = x.shape[2], H = h0.shape[1]
    cdef int relu = nonlinearity == "relu"
    cdef int rc
    cdef void *px = ptr(x)
    cdef void *ph0 = ptr(h0)
    cdef void *pwi = ptr(weight_ih)
    cdef void *pwh = ptr(weight_hh)
    cdef void *pbi = ptr(bias_ih)
    cdef void *pbh = ptr(bias_hh)
    cdef void *po = ptr(out)
    if T == 0 or B == 0:   # nothing to run (a layer may call this directly with an empty batch)
        return out
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
    cdef fnn_idx T = x.shape[0], B = x.shape[1], I = x.shape[2], H = h0.shape[1]
    cdef int relu = nonlinearity == "relu"
    cdef void *p[15]
    cdef int k, rc
    args = (grad_out, grad_hn, x, h0, weight_ih, weight_hh, out, work, grad_x, grad_h0,
            grad_weight_ih, grad_weight_hh, grad_bias_ih, grad_bias_hh)
    for k in range(14):
        p[k] = ptr(args[k])
    if T == 0 or B == 0:   # nothing to run: sums over no steps or samples
        _empty_grads(grad_h0, grad_hn, grad_weight_ih, grad_weight_hh, grad_bias_ih, grad_bias_hh)
        return grad_x, grad_h0, grad_weight_ih, grad_weight_hh, grad_bias_ih, grad_bias_hh
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
                              fnn_idx r0, fnn_idx r1, fnn_idx H) noexcept nogil:
    """Rows r0:r1 of one step: z += h_prev W_hhᵀ, then the gates, c_t and h_t."""
    cdef fnn_idx o = <fnn_idx>r0 * H
    step_gemm(hp + o, H, wt, 4 * H, z + 4 * o, 4 * H, r1 - r0, 4 * H, H)
    if real is float:
        fnn_lstm_cell_f(z + 4 * o, cp + o, c + o, h + o, r1 - r0, H)
    else:
        fnn_lstm_cell_d(z + 4 * o, cp + o, c + o, h + o, r1 - r0, H)


cdef inline void lstm_bwd_rows(const real *go, real *grec, real *gamma, const real *z, const real *c,
                               const real *cp, real *d, const real *w_hh, fnn_idx r0, fnn_idx r1,
                               fnn_idx H) noexcept nogil:
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
                   fnn_idx T, fnn_idx B, fnn_idx I, fnn_idx H) noexcept nogil:
    cdef fnn_idx BH = <fnn_idx>B * H
    cdef fnn_idx BG = 4 * BH
    cdef fnn_idx chunk = row_chunk(B, <fnn_idx>T * BG * (H + I))
    cdef fnn_idx c = 0, nc = (B + chunk - 1) // chunk
    cdef int nxt, arrived
    cdef real *wiT
    cdef real *bias
    cdef real *wt = transposed(w_hh, 4 * H, H)
    if wt == NULL:
        return -1
    if projection_setup(x, w_ih, b_ih, b_hh, gates, T * B, I, 4 * H, &wiT, &bias) != 0:
        free(wt)
        free(wiT)
        free(bias)
        return -1
    if nc == 1:
        project_block(x, wiT, bias, gates, T, B, 0, B, I, 4 * H)
        lstm_fwd_block(h0, c0, wt, gates, cell, out, T, B, 0, B, H)
    else:
        nxt = 0
        arrived = 0
        with parallel(num_threads=team(nc)):
            c = fnn_claim(&nxt)
            while c < nc:
                project_block(x, wiT, bias, gates, T, B, c * chunk, min(B, (c + 1) * chunk), I, 4 * H)
                lstm_fwd_block(h0, c0, wt, gates, cell, out, T, B, c * chunk, min(B, (c + 1) * chunk), H)
                c = fnn_claim(&nxt)
            fnn_leave(&arrived)
    free(wt)
    free(wiT)
    free(bias)
    return 0


cdef int lstm_bwd(const real *go, const real *ghn, const real *gcn, const real *x, const real *h0,
                   const real *c0, const real *w_ih, const real *w_hh, const real *out, const real *cell,
                   const real *gates, real *work, real *gx, real *gh0, real *gc0, real *gw_ih, real *gw_hh,
                   real *gb_ih, real *gb_hh, fnn_idx T, fnn_idx B, fnn_idx I, fnn_idx H) noexcept nogil:
    cdef fnn_idx BH = <fnn_idx>B * H
    cdef fnn_idx BG = 4 * BH
    cdef fnn_idx chunk = row_chunk(B, <fnn_idx>T * BG * 2 * (H + I))
    cdef fnn_idx c = 0, nc = (B + chunk - 1) // chunk
    cdef int nxt, nxt2, done, arrived
    cdef real *gxs = small_input_grad(gx, T * B, I, 4 * H)
    cdef real *wt
    cdef fnn_idx TB = <fnn_idx>T * B, xc = 0
    cdef fnn_idx nx
    cdef fnn_idx wc = 0
    cdef fnn_idx nw = grads_setup[real](T, B, 4 * H, I, H, 4 * H, &wt, &wc, nc > 1)
    if nw < 0:
        return -1
    nx = parts(TB, 8, TB * I * 4 * H, nc > 1) if gxs != NULL else 0
    # gh0 carries g_rec and gc0 carries γ = dL/dc backwards; both end as the h0/c0 gradients.
    if ghn != NULL:
        memcpy(gh0, ghn, BH * sizeof(real))
    else:
        memset(gh0, 0, BH * sizeof(real))
    if gcn != NULL:
        memcpy(gc0, gcn, BH * sizeof(real))
    else:
        memset(gc0, 0, BH * sizeof(real))
    if nx > 0:
        xc = part_size(TB, nx, 8)
        nx = (TB + xc - 1) // xc   # rounding xc up may leave fewer blocks than asked
    if nc == 1 and nw <= 1 and nx <= 1:
        lstm_bwd_block(go, gh0, gc0, gates, cell, c0, work, w_hh, T, B, 0, B, H)
        if gxs != NULL:
            input_grad_rows(work, 4 * H, w_ih, gxs, 0, TB, I, 4 * H)
        if nw == 1:
            weight_grad_cols(work, work, 4 * H, x, h0, out, wt, gw_hh, gb_ih, gb_hh, 0, 4 * H, T, B, I, H, 4 * H)
    else:
        nxt = 0
        nxt2 = 0
        done = 0
        arrived = 0
        with parallel(num_threads=team(nc if nc > nw + nx else nw + nx)):
            c = fnn_claim(&nxt)
            while c < nc:
                lstm_bwd_block(go, gh0, gc0, gates, cell, c0, work, w_hh, T, B, c * chunk, min(B, (c + 1) * chunk), H)
                fnn_done(&done)
                c = fnn_claim(&nxt)
            if nw + nx > 0:
                fnn_await(&done, nc)
                c = fnn_claim(&nxt2)
                while c < nw + nx:
                    if c >= nw:
                        input_grad_rows(work, 4 * H, w_ih, gxs, (c - nw) * xc, min(TB, (c - nw + 1) * xc), I, 4 * H)
                    else:
                        weight_grad_cols(work, work, 4 * H, x, h0, out, wt, gw_hh, gb_ih, gb_hh, c * wc,
                                         min(4 * H, (c + 1) * wc), T, B, I, H, 4 * H)
                    c = fnn_claim(&nxt2)
            fnn_leave(&arrived)
    return grads_finish(work, work, 4 * H, x, h0, out, w_ih, wt, gx, gxs != NULL, gw_ih, gw_hh, gb_ih, gb_hh,
                        T, B, I, H, 4 * H)


def lstm_forward(x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, out, cell, gates):
    """LSTM (gates i, f, g, o): c_t = f c_{t-1} + i g, h_t = o tanh(c_t) for all t."""
    cdef fnn_idx T = x.shape[0], B = x.shape[1], I = x.shape[2], H = h0.shape[1]
    cdef void *p[10]
    cdef int k, rc
    args = (x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, out, cell, gates)
    for k in range(10):
        p[k] = ptr(args[k])
    if T == 0 or B == 0:   # nothing to run (a layer may call this directly with an empty batch)
        return out, cell, gates
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
    cdef fnn_idx T = x.shape[0], B = x.shape[1], I = x.shape[2], H = h0.shape[1]
    cdef void *p[19]
    cdef int k, rc
    args = (grad_out, grad_hn, grad_cn, x, h0, c0, weight_ih, weight_hh, out, cell, gates, work,
            grad_x, grad_h0, grad_c0, grad_weight_ih, grad_weight_hh, grad_bias_ih, grad_bias_hh)
    for k in range(19):
        p[k] = ptr(args[k])
    if T == 0 or B == 0:   # nothing to run: sums over no steps or samples
        _empty_grads(grad_h0, grad_hn, grad_weight_ih, grad_weight_hh, grad_bias_ih, grad_bias_hh)
        _empty_grads(grad_c0, grad_cn)
        return grad_x, grad_h0, grad_c0, grad_weight_ih, grad_weight_hh, grad_bias_ih, grad_bias_hh
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
                             real *h, fnn_idx r0, fnn_idx r1, fnn_idx H) noexcept nogil:
    """Rows r0:r1 of one step: gh = h_prev W_hhᵀ, then r, z, n and h_t."""
    cdef fnn_idx o = <fnn_idx>r0 * H
    memset(gh + 3 * o, 0, <fnn_idx>(r1 - r0) * 3 * H * sizeof(real))
    step_gemm(hp + o, H, wt, 3 * H, gh + 3 * o, 3 * H, r1 - r0, 3 * H, H)
    if real is float:
        fnn_gru_cell_f(gi + 3 * o, gh + 3 * o, zb, hp + o, hn + o, h + o, r1 - r0, H)
    else:
        fnn_gru_cell_d(gi + 3 * o, gh + 3 * o, zb, hp + o, hn + o, h + o, r1 - r0, H)


cdef inline void gru_bwd_rows(const real *go, real *grec, const real *gates, const real *hn, const real *hp,
                              real *w, const real *w_hh, fnn_idx r0, fnn_idx r1, fnn_idx H) noexcept nogil:
    """Rows r0:r1 of one backward step: δ^x, δ^h and g_rec = g z + δ^h W_hh."""
    cdef fnn_idx o = <fnn_idx>r0 * H
    if real is float:
        fnn_gru_delta_f(go + o, grec + o, gates + 3 * o, hn + o, hp + o, w + 6 * o, r1 - r0, H)
    else:
        fnn_gru_delta_d(go + o, grec + o, gates + 3 * o, hn + o, hp + o, w + 6 * o, r1 - r0, H)
    step_gemm(w + 6 * o + 3 * H, 6 * H, w_hh, H, grec + o, H, r1 - r0, H, 3 * H)


cdef int gru_fwd(const real *x, const real *h0, const real *w_ih, const real *w_hh, const real *b_ih,
                 const real *b_hh, real *out, real *gates, real *hidden_n,
                 fnn_idx T, fnn_idx B, fnn_idx I, fnn_idx H) noexcept nogil:
    cdef fnn_idx BH = <fnn_idx>B * H
    cdef fnn_idx BG = 3 * BH
    # gh: one step's h W_hhᵀ; zb: the hidden bias, zeros when there is none (keeps the C loop branch-free).
    cdef real *gh = <real*>malloc(BG * sizeof(real))
    cdef real *zb = <real*>calloc(3 * H, sizeof(real))
    cdef real *wt = transposed(w_hh, 3 * H, H)
    cdef real *wiT = NULL
    cdef real *bias = NULL
    cdef fnn_idx chunk = row_chunk(B, <fnn_idx>T * BG * (H + I))
    cdef fnn_idx c = 0, nc = (B + chunk - 1) // chunk
    cdef int nxt, arrived
    cdef int rc = -1
    if gh == NULL or zb == NULL or wt == NULL:
        free(gh)
        free(zb)
        free(wt)
        return -1
    if b_hh != NULL:
        memcpy(zb, b_hh, 3 * H * sizeof(real))
    if projection_setup(x, w_ih, b_ih, <const real*>NULL, gates, T * B, I, 3 * H, &wiT, &bias) == 0:
        rc = 0
        if nc == 1:
            project_block(x, wiT, bias, gates, T, B, 0, B, I, 3 * H)
            gru_fwd_block(h0, wt, gh, zb, gates, hidden_n, out, T, B, 0, B, H)
        else:
            nxt = 0
            arrived = 0
            with parallel(num_threads=team(nc)):
                c = fnn_claim(&nxt)
                while c < nc:
                    project_block(x, wiT, bias, gates, T, B, c * chunk, min(B, (c + 1) * chunk), I, 3 * H)
                    gru_fwd_block(h0, wt, gh, zb, gates, hidden_n, out, T, B, c * chunk, min(B, (c + 1) * chunk), H)
                    c = fnn_claim(&nxt)
                fnn_leave(&arrived)
    free(gh)
    free(zb)
    free(wt)
    free(wiT)
    free(bias)
    return rc


cdef int gru_bwd(const real *go, const real *ghn, const real *x, const real *h0, const real *w_ih,
                  const real *w_hh, const real *out, const real *gates, const real *hidden_n, real *work,
                  real *gx, real *gh0, real *gw_ih, real *gw_hh, real *gb_ih, real *gb_hh,
                  fnn_idx T, fnn_idx B, fnn_idx I, fnn_idx H) noexcept nogil:
    cdef fnn_idx BH = <fnn_idx>B * H
    cdef fnn_idx BG = 3 * BH
    cdef fnn_idx chunk = row_chunk(B, <fnn_idx>T * BG * 2 * (H + I))
    cdef fnn_idx c = 0, nc = (B + chunk - 1) // chunk
    cdef int nxt, nxt2, done, arrived
    cdef real *gxs = small_input_grad(gx, T * B, I, 3 * H)
    cdef real *wt
    cdef fnn_idx TB = <fnn_idx>T * B, xc = 0
    cdef fnn_idx nx
    cdef fnn_idx wc = 0
    # work rows are [δ^x | δ^h] (6H): dW_ih from δ^x, dW_hh from δ^h.
    cdef fnn_idx nw = grads_setup[real](T, B, 6 * H, I, H, 3 * H, &wt, &wc, nc > 1)
    if nw < 0:
        return -1
    nx = parts(TB, 8, TB * I * 3 * H, nc > 1) if gxs != NULL else 0
    if ghn != NULL:
        memcpy(gh0, ghn, BH * sizeof(real))
    else:
        memset(gh0, 0, BH * sizeof(real))
    if nx > 0:
        xc = part_size(TB, nx, 8)
        nx = (TB + xc - 1) // xc   # rounding xc up may leave fewer blocks than asked
    if nc == 1 and nw <= 1 and nx <= 1:
        gru_bwd_block(go, gh0, gates, hidden_n, h0, out, work, w_hh, T, B, 0, B, H)
        if gxs != NULL:
            input_grad_rows(work, 6 * H, w_ih, gxs, 0, TB, I, 3 * H)
        if nw == 1:
            weight_grad_cols(work, work + 3 * H, 6 * H, x, h0, out, wt, gw_hh, gb_ih, gb_hh, 0, 3 * H,
                             T, B, I, H, 3 * H)
    else:
        nxt = 0
        nxt2 = 0
        done = 0
        arrived = 0
        with parallel(num_threads=team(nc if nc > nw + nx else nw + nx)):
            c = fnn_claim(&nxt)
            while c < nc:
                gru_bwd_block(go, gh0, gates, hidden_n, h0, out, work, w_hh, T, B, c * chunk, min(B, (c + 1) * chunk), H)
                fnn_done(&done)
                c = fnn_claim(&nxt)
            if nw + nx > 0:
                fnn_await(&done, nc)
                c = fnn_claim(&nxt2)
                while c < nw + nx:
                    if c >= nw:
                        input_grad_rows(work, 6 * H, w_ih, gxs, (c - nw) * xc, min(TB, (c - nw + 1) * xc), I, 3 * H)
                    else:
                        weight_grad_cols(work, work + 3 * H, 6 * H, x, h0, out, wt, gw_hh, gb_ih, gb_hh, c * wc,
                                         min(3 * H, (c + 1) * wc), T, B, I, H, 3 * H)
                    c = fnn_claim(&nxt2)
            fnn_leave(&arrived)
    return grads_finish(work, work + 3 * H, 6 * H, x, h0, out, w_ih, wt, gx, gxs != NULL, gw_ih, gw_hh,
                        gb_ih, gb_hh, T, B, I, H, 3 * H)


def gru_forward(x, h0, weight_ih, weight_hh, bias_ih, bias_hh, out, gates, hidden_n):
    """GRU (gates r, z, n): n = tanh(x W_inᵀ + b_in + r (h W_hnᵀ + b_hn)), h_t = (1-z) n + z h_{t-1}."""
    cdef fnn_idx T = x.shape[0], B = x.shape[1], I = x.shape[2], H = h0.shape[1]
    cdef void *p[9]
    cdef int k, rc
    args = (x, h0, weight_ih, weight_hh, bias_ih, bias_hh, out, gates, hidden_n)
    for k in range(9):
        p[k] = ptr(args[k])
    if T == 0 or B == 0:   # nothing to run (a layer may call this directly with an empty batch)
        return out, gates, hidden_n
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
    cdef fnn_idx T = x.shape[0], B = x.shape[1], I = x.shape[2], H = h0.shape[1]
    cdef void *p[16]
    cdef int k, rc
    args = (grad_out, grad_hn, x, h0, weight_ih, weight_hh, out, gates, hidden_n, work,
            grad_x, grad_h0, grad_weight_ih, grad_weight_hh, grad_bias_ih, grad_bias_hh)
    for k in range(16):
        p[k] = ptr(args[k])
    if T == 0 or B == 0:   # nothing to run: sums over no steps or samples
        _empty_grads(grad_h0, grad_hn, grad_weight_ih, grad_weight_hh, grad_bias_ih, grad_bias_hh)
        return grad_x, grad_h0, grad_weight_ih, grad_weight_hh, grad_bias_ih, grad_bias_hh
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

cdef void rnn_fwd_block(const real *h0, const real *wt, real *out, int relu, fnn_idx T, fnn_idx B, fnn_idx r0,
                        fnn_idx r1, fnn_idx H) noexcept nogil:
    """Rows r0:r1 of the whole forward time loop."""
    cdef fnn_idx BH = <fnn_idx>B * H
    cdef fnn_idx t
    for t in range(T):
        rnn_fwd_rows(h0 if t == 0 else out + (t - 1) * BH, wt, out + t * BH, relu, r0, r1, H)


cdef void rnn_bwd_block(const real *go, real *gh0, const real *out, real *work, const real *w_hh, int relu,
                        fnn_idx T, fnn_idx B, fnn_idx r0, fnn_idx r1, fnn_idx H) noexcept nogil:
    """Rows r0:r1 of the whole backward time loop."""
    cdef fnn_idx BH = <fnn_idx>B * H
    cdef fnn_idx t
    for t in range(T - 1, -1, -1):
        rnn_bwd_rows(go + t * BH, gh0, out + t * BH, work + t * BH, w_hh, relu, r0, r1, H)


cdef void lstm_fwd_block(const real *h0, const real *c0, const real *wt, real *gates, real *cell, real *out,
                         fnn_idx T, fnn_idx B, fnn_idx r0, fnn_idx r1, fnn_idx H) noexcept nogil:
    cdef fnn_idx BH = <fnn_idx>B * H
    cdef fnn_idx t
    for t in range(T):
        lstm_fwd_rows(h0 if t == 0 else out + (t - 1) * BH, c0 if t == 0 else cell + (t - 1) * BH, wt,
                      gates + 4 * t * BH, cell + t * BH, out + t * BH, r0, r1, H)


cdef void lstm_bwd_block(const real *go, real *gh0, real *gc0, const real *gates, const real *cell,
                         const real *c0, real *work, const real *w_hh, fnn_idx T, fnn_idx B, fnn_idx r0, fnn_idx r1,
                         fnn_idx H) noexcept nogil:
    cdef fnn_idx BH = <fnn_idx>B * H
    cdef fnn_idx t
    for t in range(T - 1, -1, -1):
        lstm_bwd_rows(go + t * BH, gh0, gc0, gates + 4 * t * BH, cell + t * BH,
                      c0 if t == 0 else cell + (t - 1) * BH, work + 4 * t * BH, w_hh, r0, r1, H)


cdef void gru_fwd_block(const real *h0, const real *wt, real *gh, const real *zb, real *gates, real *hidden_n,
                        real *out, fnn_idx T, fnn_idx B, fnn_idx r0, fnn_idx r1, fnn_idx H) noexcept nogil:
    cdef fnn_idx BH = <fnn_idx>B * H
    cdef fnn_idx t
    for t in range(T):
        gru_fwd_rows(h0 if t == 0 else out + (t - 1) * BH, wt, gh, zb, gates + 3 * t * BH, hidden_n + t * BH,
                     out + t * BH, r0, r1, H)


cdef void gru_bwd_block(const real *go, real *gh0, const real *gates, const real *hidden_n, const real *h0,
                        const real *out, real *work, const real *w_hh, fnn_idx T, fnn_idx B, fnn_idx r0, fnn_idx r1,
                        fnn_idx H) noexcept nogil:
    cdef fnn_idx BH = <fnn_idx>B * H
    cdef fnn_idx t
    for t in range(T - 1, -1, -1):
        gru_bwd_rows(go + t * BH, gh0, gates + 3 * t * BH, hidden_n + t * BH,
                     h0 if t == 0 else out + (t - 1) * BH, work + 6 * t * BH, w_hh, r0, r1, H)
