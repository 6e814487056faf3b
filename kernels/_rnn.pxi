# Recurrent kernels: one driver runs the RNN, LSTM and GRU forward over a
# sequence and their BPTT, parameterised by the cell (gate blocks G, width of
# a backward work row, the step functions of rnn.h).
#
# The whole time loop runs here without the GIL. Per step: one small product
# with W_hh (packed once per sequence: gemm_prepacked), then the cell's
# elementwise work. The input projection, the
# weight gradients and dL/dx cover all steps at once: large ones are one
# product each (gemm_run, threaded inside); small ones run on the small
# kernel inside the one parallel region of the forward pass (by batch rows)
# or of the backward pass (batch rows for the time loop, then gate columns
# and rows of dL/dx). The samples of a batch never interact in the
# recurrence, so each thread runs the whole time loop on its rows: no
# barrier per step. Two independent sequences (the directions of a
# bidirectional layer) run at once on a team of two, one thread each, each
# whole (recurrent_pair; the backend's Python wrapper lowers BLAS to one thread
# around it, so that a product sent to BLAS runs on its sequence's thread, not
# on a second team over the same cores). Sizes that reach BLAS are T·B, I, H
# or G·H, which fastnn.ops.rnn bounds by 2^31 - 1.

cdef extern from *:
    """
    /* A parallel region whose threads take blocks from a shared counter. With
     * passive OpenMP waits a thread that waits at the region's closing barrier
     * sleeps, and waking it costs tens of µs on shared or virtual cores. So
     * blocks are handed out dynamically (the master starts at once, a worker
     * joins when it has woken up), and the master, when it runs out of blocks,
     * spins a bounded while for the others to finish, to reach the barrier last. */
    #include <sched.h>
    static inline int fnn_claim(int *next) { return __atomic_fetch_add(next, 1, __ATOMIC_RELAXED); }
    static inline void fnn_leave(int *arrived, double spin) {
    #ifdef _OPENMP
        int n = omp_get_num_threads();
        __atomic_fetch_add(arrived, 1, __ATOMIC_ACQ_REL);
        if (omp_get_thread_num() != 0) return;
        double t0 = fnn_clock();
        while (__atomic_load_n(arrived, __ATOMIC_ACQUIRE) < n) {
            if (fnn_clock() - t0 > spin) return;  /* a long wait: sleeping costs little more */
    #if defined(__x86_64__) || defined(__i386__)
            __builtin_ia32_pause();
    #endif
        }
        /* the last worker has left its blocks and is entering the barrier: give it a moment */
        t0 = fnn_clock();
        while (fnn_clock() - t0 < 1e-6) { }
    #else
        (void)arrived; (void)spin;
    #endif
    }
    /* A barrier inside a region: count a finished block; wait until n are. The
     * waiter spins (both threads are awake by then and a block is short),
     * yielding the core after a while in case the other thread was preempted. */
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
    void fnn_leave(int *arrived, double spin) nogil
    void fnn_done(int *done) nogil
    void fnn_await(int *done, int n) nogil


cdef enum:
    CELL_RNN = 0
    CELL_LSTM = 1
    CELL_GRU = 2

# Slots of a sequence's pointer table: the arrays of the def wrappers, then scratch.
cdef enum:
    S_X, S_H0, S_C0, S_W_IH, S_W_HH, S_B_IH, S_B_HH, S_OUT, S_CELL, S_GATES, S_HN, S_WORK
    S_GO, S_GHN, S_GCN, S_GX, S_GH0, S_GC0, S_GW_IH, S_GW_HH, S_GB_IH, S_GB_HH
    S_NARRAYS
    S_WP = S_NARRAYS   # the steps' B packed (gemm_prepacked): W_hhᵀ (H, G·H) forward, W_hh (G·H, H) backward
    S_WIT            # W_ihᵀ (I, G·H) for the input projection in the region, or NULL
    S_BIAS           # the projection's bias (G·H), or NULL
    S_GHS            # GRU: one step's h W_hhᵀ (B, 3H)
    S_ZB             # GRU: the hidden bias (3H), zeros when there is none
    S_DWT            # small backward: dW_ihᵀ (I, G·H)
    S_NSLOTS

_SLOT_NAMES = ("x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh", "out", "cell", "gates", "hn", "work",
               "go", "ghn", "gcn", "gx", "gh0", "gc0", "gw_ih", "gw_hh", "gb_ih", "gb_hh")

cdef struct Seq:
    int cell, relu
    int threads  # the team this sequence may use: the module's count, or 1 beside another sequence
    fnn_idx T, B, nin, H   # (nin: "I" is a macro of complex.h)
    fnn_idx G    # gate blocks: 1 (RNN), 4 (LSTM), 3 (GRU)
    fnn_idx W    # width of a backward work row: H (RNN), 4H (LSTM), 6H (GRU: [δ^x | δ^h])
    fnn_idx DH   # offset of δ^h in a work row: 3H for the GRU, 0 (δ^x = δ^h) otherwise


# ---- helpers ----

cdef inline void step_gemm(const real *a, fnn_idx lda, const real *bt, fnn_idx ldb, real *c, fnn_idx ldc,
                           fnn_idx m, fnn_idx n, fnn_idx k) noexcept nogil:
    """C += A Bt on the small kernel (the small all-steps products, by rows or columns)."""
    gemm_small(m, n, k, a, lda, 1, bt, ldb, 1, c, ldc, 1, <const real*>NULL, FNN_ACT_IDENTITY)


cdef inline real *packed(const real *b, fnn_idx k, fnn_idx n, fnn_idx rsb, fnn_idx csb) noexcept nogil:
    """op(B) (k, n), op(B)(p, j) = b[p*rsb + j*csb], packed once for the steps' products
    (gemm_prepacked) in a malloc'ed buffer, or NULL when out of memory."""
    cdef real *pb = <real*>malloc(gemm_prepacked_size(k, n, b) * sizeof(real))
    if pb != NULL:
        gemm_pack_b(k, n, b, rsb, csb, pb)
    return pb


cdef inline void gemm_tn_acc(const real *a, fnn_idx lda, const real *bm, fnn_idx ldb, real *c, fnn_idx ldc,
                             fnn_idx m, fnn_idx n, fnn_idx k) noexcept nogil:
    """C += Aᵀ Bm with A (K, M), Bm (K, N) row-major (the weight gradients, K = T·B rows)."""
    gemm_small(m, n, k, a, 1, lda, bm, ldb, 1, c, ldc, 1, <const real*>NULL, FNN_ACT_IDENTITY)


cdef inline real *transposed(const real *w, fnn_idx rows, fnn_idx cols) noexcept nogil:
    """A malloc'ed copy of wᵀ (cols, rows), or NULL when out of memory."""
    cdef real *wt = <real*>malloc(rows * cols * sizeof(real))
    if wt != NULL:
        transpose(w, rows, cols, wt)
    return wt


cdef inline bint small(fnn_idx elements) noexcept nogil:
    """Whether an all-steps product's operands are small enough for the small kernel
    inside the region (packing would cost more than it saves)."""
    return elements <= fnn_tune.rnn_small_elements


cdef inline int parts(const Seq *s, fnn_idx n, fnn_idx step, double work, bint region) noexcept nogil:
    """Blocks of `step` rows (or columns) to cut n into for the threads.

    1 (serial) below rnn_parallel_min_work multiply-adds, unless `region`:
    the work joins a region that runs anyway. About two blocks per thread,
    taken dynamically: a worker that wakes late takes fewer.
    """
    cdef fnn_idx blocks = (n + step - 1) // step
    if s.threads <= 1 or (work < fnn_tune.rnn_parallel_min_work and not region):
        return 1
    return <int>min(2 * s.threads, blocks)


cdef inline int team(const Seq *s, fnn_idx nblocks) noexcept nogil:
    """Threads for a region of nblocks blocks."""
    return <int>min(s.threads, nblocks)


cdef inline fnn_idx part_size(fnn_idx n, int np, fnn_idx step) noexcept nogil:
    """Rows per block: n split in np blocks, rounded up to a multiple of `step`."""
    cdef fnn_idx c = (n + np - 1) // np
    return (c + step - 1) // step * step


cdef inline fnn_idx row_chunk(const Seq *s, fnn_idx B, double work) noexcept nogil:
    """Batch rows per block of the time loop, or B (serial): about two blocks per
    thread, multiples of 4 rows, for regions of at least rnn_parallel_min_work."""
    cdef fnn_idx c
    if s.threads <= 1 or work < fnn_tune.rnn_parallel_min_work or B < 8:
        return B
    c = (B + 2 * s.threads - 1) // (2 * s.threads)
    return (c + 3) // 4 * 4


# ---- forward ----

cdef int projection_setup(const Seq *s, real **p) noexcept nogil:
    """The input projection x W_ihᵀ + biases for all T·B rows, or what the region needs for it.

    Large problems: done here by one product (threaded inside), and S_WIT stays
    NULL. Small ones: S_WIT = W_ihᵀ and S_BIAS = the summed biases (or NULL) for
    project_rows, run by each thread on its rows inside the time-loop region.
    The GRU's hidden bias stays out (it is inside r·(W_hn h + b_hn)).
    """
    cdef fnn_idx GH = s.G * s.H, TB = s.T * s.B, j
    cdef const real *b2 = NULL if s.cell == CELL_GRU else p[S_B_HH]
    cdef real *dest = p[S_OUT] if s.cell == CELL_RNN else p[S_GATES]
    if p[S_B_IH] != NULL or b2 != NULL:
        p[S_BIAS] = <real*>malloc(GH * sizeof(real))
        if p[S_BIAS] == NULL:
            return -1
        for j in range(GH):
            p[S_BIAS][j] = (p[S_B_IH][j] if p[S_B_IH] != NULL else 0) + (b2[j] if b2 != NULL else 0)
    if not small(TB * (s.nin + GH)):
        return gemm_run_on(TB, GH, s.nin, p[S_X], s.nin, 1, p[S_W_IH], 1, s.nin, dest, GH, p[S_BIAS],
                           FNN_ACT_IDENTITY, False, s.threads)
    p[S_WIT] = transposed(p[S_W_IH], GH, s.nin)
    return 0 if p[S_WIT] != NULL else -1


cdef inline void project_rows(const Seq *s, real **p, fnn_idx r0, fnn_idx r1) noexcept nogil:
    """Batch rows r0:r1 of the input projection for every step (nothing when it is done already)."""
    cdef fnn_idx GH = s.G * s.H, t, r, j, q0, q1
    cdef real *dest = p[S_OUT] if s.cell == CELL_RNN else p[S_GATES]
    if p[S_WIT] == NULL:
        return
    for t in range(s.T):
        q0 = t * s.B + r0
        q1 = t * s.B + r1
        if p[S_BIAS] != NULL:
            for r in range(q0, q1):
                memcpy(dest + r * GH, p[S_BIAS], GH * sizeof(real))
        else:
            memset(dest + q0 * GH, 0, (q1 - q0) * GH * sizeof(real))
        step_gemm(p[S_X] + q0 * s.nin, s.nin, p[S_WIT], GH, dest + q0 * GH, GH, q1 - q0, GH, s.nin)


cdef void step_forward(const Seq *s, real **p, fnn_idx t, fnn_idx r0, fnn_idx r1) noexcept nogil:
    """Rows r0:r1 of time step t: z += h_{t-1} W_hhᵀ, then the cell."""
    cdef fnn_idx H = s.H, GH = s.G * s.H, BH = s.B * s.H, o = r0 * H, n = r1 - r0
    cdef const real *hp = (p[S_H0] if t == 0 else p[S_OUT] + (t - 1) * BH) + o
    cdef real *h = p[S_OUT] + t * BH + o
    cdef real *z
    if s.cell == CELL_RNN:
        gemm_prepacked(n, H, H, hp, H, 1, p[S_WP], h, H, 1)
        rnn_act(h, n * H, s.relu)
    elif s.cell == CELL_LSTM:
        z = p[S_GATES] + 4 * t * BH + 4 * o
        gemm_prepacked(n, GH, H, hp, H, 1, p[S_WP], z, GH, 1)
        lstm_cell(z, (p[S_C0] if t == 0 else p[S_CELL] + (t - 1) * BH) + o, p[S_CELL] + t * BH + o, h, n, H)
    else:   # z = h W_hhᵀ alone (the hidden bias goes inside r·(...))
        z = p[S_GHS] + 3 * o
        gemm_prepacked(n, GH, H, hp, H, 1, p[S_WP], z, GH, 0)
        gru_cell(p[S_GATES] + 3 * t * BH + 3 * o, z, p[S_ZB], hp, p[S_HN] + t * BH + o, h, n, H)


cdef void forward_rows(const Seq *s, real **p, fnn_idx r0, fnn_idx r1) noexcept nogil:
    """Rows r0:r1 of the projection and the whole forward time loop."""
    cdef fnn_idx t
    project_rows(s, p, r0, r1)
    for t in range(s.T):
        step_forward(s, p, t, r0, r1)


cdef int seq_forward(const Seq *s, real **p) noexcept nogil:
    cdef fnn_idx GH = s.G * s.H, k
    cdef fnn_idx chunk = row_chunk(s, s.B, <double>s.T * s.B * GH * (s.H + s.nin))
    cdef fnn_idx c = 0, nc = (s.B + chunk - 1) // chunk  # firstprivate in the team below: set it
    cdef int nxt = 0, arrived = 0, rc = -1
    p[S_WP] = packed(p[S_W_HH], s.H, GH, 1, s.H)
    if s.cell == CELL_GRU:
        p[S_GHS] = <real*>malloc(s.B * GH * sizeof(real))
        p[S_ZB] = <real*>calloc(GH, sizeof(real))
        if p[S_ZB] != NULL and p[S_B_HH] != NULL:
            memcpy(p[S_ZB], p[S_B_HH], GH * sizeof(real))
    if p[S_WP] != NULL and (s.cell != CELL_GRU or (p[S_GHS] != NULL and p[S_ZB] != NULL)) \
            and projection_setup(s, p) == 0:
        rc = 0
        if nc == 1:
            forward_rows(s, p, 0, s.B)
        else:
            with parallel(num_threads=team(s, nc)):
                c = fnn_claim(&nxt)
                while c < nc:
                    forward_rows(s, p, c * chunk, min(s.B, (c + 1) * chunk))
                    c = fnn_claim(&nxt)
                fnn_leave(&arrived, fnn_tune.rnn_spin_seconds)
    for k in range(S_NARRAYS, S_NSLOTS):
        free(p[k])
        p[k] = NULL
    return rc


# ---- backward ----

cdef void step_backward(const Seq *s, real **p, fnn_idx t, fnn_idx r0, fnn_idx r1) noexcept nogil:
    """Rows r0:r1 of backward step t: the cell's δ (and γ), then g_rec += δ^h W_hh.

    GH0 carries g_rec = dL/dh backwards (and GC0 the LSTM's γ = dL/dc): both
    end as the h0 / c0 gradients.
    """
    cdef fnn_idx H = s.H, GH = s.G * s.H, BH = s.B * s.H, o = r0 * H, n = r1 - r0
    cdef const real *go = p[S_GO] + t * BH + o
    cdef const real *hp = (p[S_H0] if t == 0 else p[S_OUT] + (t - 1) * BH) + o
    cdef real *grec = p[S_GH0] + o
    cdef real *w = p[S_WORK] + t * s.B * s.W + r0 * s.W
    if s.cell == CELL_RNN:
        rnn_delta(go, grec, p[S_OUT] + t * BH + o, w, n * H, s.relu)
        memset(grec, 0, n * H * sizeof(real))
    elif s.cell == CELL_LSTM:
        lstm_delta(go, grec, p[S_GC0] + o, p[S_GATES] + 4 * t * BH + 4 * o, p[S_CELL] + t * BH + o,
                   (p[S_C0] if t == 0 else p[S_CELL] + (t - 1) * BH) + o, w, n, H)
        memset(grec, 0, n * H * sizeof(real))
    else:   # grec = g z here: the direct path to h_{t-1}
        gru_delta(go, grec, p[S_GATES] + 3 * t * BH + 3 * o, p[S_HN] + t * BH + o, hp, w, n, H)
    gemm_prepacked(n, H, GH, w + s.DH, s.W, 1, p[S_WP], grec, H, 1)


cdef void backward_rows(const Seq *s, real **p, fnn_idx r0, fnn_idx r1) noexcept nogil:
    """Rows r0:r1 of the whole backward time loop."""
    cdef fnn_idx t
    for t in range(s.T - 1, -1, -1):
        step_backward(s, p, t, r0, r1)


cdef inline void input_grad_rows(const Seq *s, real **p, fnn_idx r0, fnn_idx r1) noexcept nogil:
    """Rows r0:r1 (of all T·B) of dL/dx = δ^x W_ih: the narrow product, I columns."""
    if r1 > r0:
        memset(p[S_GX] + r0 * s.nin, 0, (r1 - r0) * s.nin * sizeof(real))
        step_gemm(p[S_WORK] + r0 * s.W, s.W, p[S_W_IH], s.nin, p[S_GX] + r0 * s.nin, s.nin, r1 - r0, s.nin, s.G * s.H)


cdef void weight_grad_cols(const Seq *s, real **p, fnn_idx m0, fnn_idx m1) noexcept nogil:
    """Gate columns m0:m1 of the weight and bias gradients (the small-problem path).

    S_DWT receives dW_ihᵀ, S_GW_HH dW_hh; each gate column is computed whole by
    one thread, so the split does not change the rounding.
    """
    cdef fnn_idx TB = s.T * s.B, H = s.H, GH = s.G * s.H, n = m1 - m0
    cdef const real *dx = p[S_WORK]
    cdef const real *dh = p[S_WORK] + s.DH
    gemm_tn_acc(p[S_X], s.nin, dx + m0, s.W, p[S_DWT] + m0, GH, s.nin, n, TB)
    memset(p[S_GW_HH] + m0 * H, 0, n * H * sizeof(real))
    gemm_tn_acc(dh + m0, s.W, p[S_H0], H, p[S_GW_HH] + m0 * H, H, n, H, s.B)
    if s.T > 1:
        gemm_tn_acc(dh + s.B * s.W + m0, s.W, p[S_OUT], H, p[S_GW_HH] + m0 * H, H, n, H, TB - s.B)
    if p[S_GB_IH] != NULL:
        colsum(dx + m0, TB, n, s.W, p[S_GB_IH] + m0)
    if p[S_GB_HH] != NULL and (s.DH != 0 or p[S_GB_IH] == NULL):
        colsum(dh + m0, TB, n, s.W, p[S_GB_HH] + m0)


cdef int grads_finish(const Seq *s, real **p, bint gx_done) noexcept nogil:
    """What the backward region left: dW_ih from S_DWT (small problems), or all weight
    gradients by one product each (large ones), then dL/dx if not done yet."""
    cdef fnn_idx TB = s.T * s.B, H = s.H, GH = s.G * s.H
    cdef const real *dx = p[S_WORK]
    cdef const real *dh = p[S_WORK] + s.DH
    if p[S_DWT] != NULL:
        transpose(p[S_DWT], s.nin, GH, p[S_GW_IH])
    else:
        if gemm_run_on(GH, s.nin, TB, dx, 1, s.W, p[S_X], s.nin, 1, p[S_GW_IH], s.nin, <const real*>NULL,
                       FNN_ACT_IDENTITY, False, s.threads) != 0:
            return -1
        if s.T > 1:   # dW_hh over out[:-1] (one strided operand), then the h0 term
            if gemm_run_on(GH, H, TB - s.B, dh + s.B * s.W, 1, s.W, p[S_OUT], H, 1, p[S_GW_HH], H,
                           <const real*>NULL, FNN_ACT_IDENTITY, False, s.threads) != 0:
                return -1
        else:
            memset(p[S_GW_HH], 0, GH * H * sizeof(real))
        gemm_tn_acc(dh, s.W, p[S_H0], H, p[S_GW_HH], H, GH, H, s.B)
        if p[S_GB_IH] != NULL:
            colsum(dx, TB, GH, s.W, p[S_GB_IH])
        if p[S_GB_HH] != NULL and (s.DH != 0 or p[S_GB_IH] == NULL):
            colsum(dh, TB, GH, s.W, p[S_GB_HH])
    # The RNN and LSTM share one δ for both biases: their gradients are equal.
    if p[S_GB_IH] != NULL and p[S_GB_HH] != NULL and s.DH == 0:
        memcpy(p[S_GB_HH], p[S_GB_IH], GH * sizeof(real))
    if p[S_GX] != NULL and not gx_done:
        return gemm_run_on(TB, s.nin, GH, dx, s.W, 1, p[S_W_IH], s.nin, 1, p[S_GX], s.nin, <const real*>NULL,
                           FNN_ACT_IDENTITY, False, s.threads)
    return 0


cdef int seq_backward(const Seq *s, real **p) noexcept nogil:
    cdef fnn_idx TB = s.T * s.B, H = s.H, GH = s.G * s.H, BH = s.B * s.H, k
    cdef fnn_idx chunk = row_chunk(s, s.B, <double>s.T * s.B * GH * 2 * (s.H + s.nin))
    cdef fnn_idx c = 0, nc = (s.B + chunk - 1) // chunk  # firstprivate in the team below: set it
    cdef int nxt = 0, nxt2 = 0, done = 0, arrived = 0, nw = 0, nx = 0, rc
    cdef fnn_idx wc = 0, xc = 0
    # dL/dx inside the region when small, else one product at the end
    cdef bint gx_small = p[S_GX] != NULL and small(TB * (s.nin + GH))
    p[S_WP] = packed(p[S_W_HH], GH, H, H, 1)
    if p[S_WP] == NULL:
        return -1
    # the weight gradients inside the region, by gate columns, when small
    if small(TB * (s.W + H + s.nin)):
        p[S_DWT] = <real*>calloc(s.nin * GH, sizeof(real))
        if p[S_DWT] == NULL:
            free(p[S_WP])
            p[S_WP] = NULL
            return -1
        nw = parts(s, GH, 4, <double>TB * GH * (H + s.nin), nc > 1)
        wc = part_size(GH, nw, 4)
        nw = <int>((GH + wc - 1) // wc)
    if gx_small:
        nx = parts(s, TB, 8, <double>TB * s.nin * GH, nc > 1)
        xc = part_size(TB, nx, 8)
        nx = <int>((TB + xc - 1) // xc)   # rounding xc up may leave fewer blocks than asked
    if p[S_GHN] != NULL:
        memcpy(p[S_GH0], p[S_GHN], BH * sizeof(real))
    else:
        memset(p[S_GH0], 0, BH * sizeof(real))
    if s.cell == CELL_LSTM:
        if p[S_GCN] != NULL:
            memcpy(p[S_GC0], p[S_GCN], BH * sizeof(real))
        else:
            memset(p[S_GC0], 0, BH * sizeof(real))
    if nc == 1 and nw <= 1 and nx <= 1:
        backward_rows(s, p, 0, s.B)
        if gx_small:
            input_grad_rows(s, p, 0, TB)
        if nw == 1:
            weight_grad_cols(s, p, 0, GH)
    else:
        # one region: the time loop by batch rows, then (all δ done) the weight
        # gradients by gate columns and dL/dx by rows
        with parallel(num_threads=team(s, max(nc, nw + nx))):
            c = fnn_claim(&nxt)
            while c < nc:
                backward_rows(s, p, c * chunk, min(s.B, (c + 1) * chunk))
                fnn_done(&done)
                c = fnn_claim(&nxt)
            if nw + nx > 0:
                fnn_await(&done, <int>nc)
                c = fnn_claim(&nxt2)
                while c < nw + nx:
                    if c >= nw:
                        input_grad_rows(s, p, (c - nw) * xc, min(TB, (c - nw + 1) * xc))
                    else:
                        weight_grad_cols(s, p, c * wc, min(GH, (c + 1) * wc))
                    c = fnn_claim(&nxt2)
            fnn_leave(&arrived, fnn_tune.rnn_spin_seconds)
    rc = grads_finish(s, p, gx_small)
    for k in range(S_NARRAYS, S_NSLOTS):
        free(p[k])
        p[k] = NULL
    return rc


# ---- the def wrappers: the reference's signatures ----

cdef bint _prepare(Seq *s, void **p, tuple call) except *:
    """Fill one sequence's Seq and pointer table from a call (cell, relu, forward, arrays by
    slot name, absent: None); the team is the module's. Returns whether it is float32."""
    cdef dict arrays = call[3]
    cdef cnp.ndarray x = arrays["x"]
    s.cell, s.relu, s.threads = call[0], call[1], _num_threads
    s.T, s.B, s.nin, s.H = x.shape[0], x.shape[1], x.shape[2], arrays["h0"].shape[1]
    s.G = 4 if s.cell == CELL_LSTM else (3 if s.cell == CELL_GRU else 1)
    s.W = (6 if s.cell == CELL_GRU else s.G) * s.H
    s.DH = 3 * s.H if s.cell == CELL_GRU else 0
    memset(p, 0, S_NSLOTS * sizeof(void*))
    _fill(p, tuple([arrays.get(name) for name in _SLOT_NAMES]))
    return _f32(x)


cdef inline int seq_run(const Seq *s, void **p, bint f32, bint forward) noexcept nogil:
    if f32:
        return seq_forward(s, <float**>p) if forward else seq_backward(s, <float**>p)
    return seq_forward(s, <double**>p) if forward else seq_backward(s, <double**>p)


cdef inline int _check_rc(int rc, bint forward) except -1:
    if rc != 0:
        raise MemoryError("out of memory in the recurrent " + ("forward" if forward else "backward") + " pass")
    return 0


cdef object _run(tuple call):
    """Run one sequence call on the module's team."""
    cdef Seq s
    cdef void *p[S_NSLOTS]
    cdef int rc
    cdef bint forward = call[2]
    cdef bint f32 = _prepare(&s, p, call)
    with nogil:
        rc = seq_run(&s, p, f32, forward)
    _check_rc(rc, forward)


cdef object _run_two_seqs(tuple first, tuple second):
    """Two independent sequence calls of one kind and dtype at once, one thread each.

    Each sequence runs whole on its thread (all batch rows, its all-steps
    products serial): two rows' blocks per thread would halve the row count
    of every step's product, and the two directions of a bidirectional
    layer have the same work. Each result has the bits it has alone on one
    thread (the own kernels' bits do not depend on the team; BLAS, which runs
    here on the calling thread, may round differently on more threads).
    """
    cdef Seq s[2]
    cdef void *p[2][S_NSLOTS]
    cdef int rc[2]
    cdef int nxt = 0, arrived = 0, i = 0   # i: private in the team below; set it
    cdef bint forward = first[2]
    cdef bint f32 = _prepare(&s[0], p[0], first)
    _prepare(&s[1], p[1], second)
    s[0].threads = s[1].threads = 1
    rc[0] = rc[1] = 0
    with nogil, parallel(num_threads=2):
        i = fnn_claim(&nxt)
        while i < 2:
            rc[i] = seq_run(&s[i], p[i], f32, forward)
            i = fnn_claim(&nxt)
        fnn_leave(&arrived, fnn_tune.rnn_spin_seconds)
    _check_rc(rc[0] | rc[1], forward)


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


cdef inline bint _empty(x):
    return x.shape[0] == 0 or x.shape[1] == 0


# Each kernel's arguments as a call (cell, relu, forward, arrays by slot name), with what
# the kernel returns, and what it answers for an empty sequence (no time step or sample).

def _rnn_forward_call(x, h0, weight_ih, weight_hh, bias_ih, bias_hh, nonlinearity, out):
    arrays = dict(x=x, h0=h0, w_ih=weight_ih, w_hh=weight_hh, b_ih=bias_ih, b_hh=bias_hh, out=out)
    return (CELL_RNN, nonlinearity == "relu", True, arrays), out, None


def _rnn_backward_call(grad_out, grad_hn, x, h0, weight_ih, weight_hh, out, nonlinearity, work,
                       grad_x, grad_h0, grad_weight_ih, grad_weight_hh, grad_bias_ih, grad_bias_hh):
    arrays = dict(go=grad_out, ghn=grad_hn, x=x, h0=h0, w_ih=weight_ih, w_hh=weight_hh, out=out, work=work,
                  gx=grad_x, gh0=grad_h0, gw_ih=grad_weight_ih, gw_hh=grad_weight_hh, gb_ih=grad_bias_ih,
                  gb_hh=grad_bias_hh)
    result = (grad_x, grad_h0, grad_weight_ih, grad_weight_hh, grad_bias_ih, grad_bias_hh)
    empty = ((grad_h0, grad_hn, grad_weight_ih, grad_weight_hh, grad_bias_ih, grad_bias_hh),)
    return (CELL_RNN, nonlinearity == "relu", False, arrays), result, empty


def _lstm_forward_call(x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, out, cell, gates):
    arrays = dict(x=x, h0=h0, c0=c0, w_ih=weight_ih, w_hh=weight_hh, b_ih=bias_ih, b_hh=bias_hh, out=out,
                  cell=cell, gates=gates)
    return (CELL_LSTM, False, True, arrays), (out, cell, gates), None


def _lstm_backward_call(grad_out, grad_hn, grad_cn, x, h0, c0, weight_ih, weight_hh, out, cell, gates, work,
                        grad_x, grad_h0, grad_c0, grad_weight_ih, grad_weight_hh, grad_bias_ih, grad_bias_hh):
    arrays = dict(go=grad_out, ghn=grad_hn, gcn=grad_cn, x=x, h0=h0, c0=c0, w_ih=weight_ih, w_hh=weight_hh,
                  out=out, cell=cell, gates=gates, work=work, gx=grad_x, gh0=grad_h0, gc0=grad_c0,
                  gw_ih=grad_weight_ih, gw_hh=grad_weight_hh, gb_ih=grad_bias_ih, gb_hh=grad_bias_hh)
    result = (grad_x, grad_h0, grad_c0, grad_weight_ih, grad_weight_hh, grad_bias_ih, grad_bias_hh)
    empty = ((grad_h0, grad_hn, grad_weight_ih, grad_weight_hh, grad_bias_ih, grad_bias_hh), (grad_c0, grad_cn))
    return (CELL_LSTM, False, False, arrays), result, empty


def _gru_forward_call(x, h0, weight_ih, weight_hh, bias_ih, bias_hh, out, gates, hidden_n):
    arrays = dict(x=x, h0=h0, w_ih=weight_ih, w_hh=weight_hh, b_ih=bias_ih, b_hh=bias_hh, out=out, gates=gates,
                  hn=hidden_n)
    return (CELL_GRU, False, True, arrays), (out, gates, hidden_n), None


def _gru_backward_call(grad_out, grad_hn, x, h0, weight_ih, weight_hh, out, gates, hidden_n, work,
                       grad_x, grad_h0, grad_weight_ih, grad_weight_hh, grad_bias_ih, grad_bias_hh):
    arrays = dict(go=grad_out, ghn=grad_hn, x=x, h0=h0, w_ih=weight_ih, w_hh=weight_hh, out=out, gates=gates,
                  hn=hidden_n, work=work, gx=grad_x, gh0=grad_h0, gw_ih=grad_weight_ih, gw_hh=grad_weight_hh,
                  gb_ih=grad_bias_ih, gb_hh=grad_bias_hh)
    result = (grad_x, grad_h0, grad_weight_ih, grad_weight_hh, grad_bias_ih, grad_bias_hh)
    empty = ((grad_h0, grad_hn, grad_weight_ih, grad_weight_hh, grad_bias_ih, grad_bias_hh),)
    return (CELL_GRU, False, False, arrays), result, empty


_CALLS = {
    "rnn_forward": _rnn_forward_call,
    "rnn_backward": _rnn_backward_call,
    "lstm_forward": _lstm_forward_call,
    "lstm_backward": _lstm_backward_call,
    "gru_forward": _gru_forward_call,
    "gru_backward": _gru_backward_call,
}


cdef object _kernel(str kernel, tuple args):
    """Run one kernel call (empty sequences answered without running the loops)."""
    call, result, empty = _CALLS[kernel](*args)
    if not _empty(call[3]["x"]):   # (a layer may call the kernels directly with an empty batch)
        _run(call)
    elif empty is not None:   # backward: sums over no steps or samples
        for grads in empty:
            _empty_grads(*grads)
    return result


def rnn_forward(x, h0, weight_ih, weight_hh, bias_ih, bias_hh, nonlinearity, out):
    """h_t = f(x_t W_ihᵀ + b_ih + h_{t-1} W_hhᵀ + b_hh) for all t."""
    return _kernel("rnn_forward", (x, h0, weight_ih, weight_hh, bias_ih, bias_hh, nonlinearity, out))


def rnn_backward(grad_out, grad_hn, x, h0, weight_ih, weight_hh, out, nonlinearity, work,
                 grad_x, grad_h0, grad_weight_ih, grad_weight_hh, grad_bias_ih, grad_bias_hh):
    """BPTT: δ_t = (dL/dh_t)·f'(a_t), g_{t-1} = δ_t W_hh; weight grads one GEMM each."""
    return _kernel("rnn_backward", (grad_out, grad_hn, x, h0, weight_ih, weight_hh, out, nonlinearity, work,
                                    grad_x, grad_h0, grad_weight_ih, grad_weight_hh, grad_bias_ih, grad_bias_hh))


def lstm_forward(x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, out, cell, gates):
    """LSTM (gates i, f, g, o): c_t = f c_{t-1} + i g, h_t = o tanh(c_t) for all t."""
    return _kernel("lstm_forward", (x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, out, cell, gates))


def lstm_backward(grad_out, grad_hn, grad_cn, x, h0, c0, weight_ih, weight_hh, out, cell, gates, work,
                  grad_x, grad_h0, grad_c0, grad_weight_ih, grad_weight_hh, grad_bias_ih, grad_bias_hh):
    """LSTM BPTT: δ = [δi, δf, δg, δo] per step, g_{t-1} = δ W_hh, γ_{t-1} = γ f."""
    return _kernel("lstm_backward", (grad_out, grad_hn, grad_cn, x, h0, c0, weight_ih, weight_hh, out, cell, gates,
                                     work, grad_x, grad_h0, grad_c0, grad_weight_ih, grad_weight_hh, grad_bias_ih,
                                     grad_bias_hh))


def gru_forward(x, h0, weight_ih, weight_hh, bias_ih, bias_hh, out, gates, hidden_n):
    """GRU (gates r, z, n): n = tanh(x W_inᵀ + b_in + r (h W_hnᵀ + b_hn)), h_t = (1-z) n + z h_{t-1}."""
    return _kernel("gru_forward", (x, h0, weight_ih, weight_hh, bias_ih, bias_hh, out, gates, hidden_n))


def gru_backward(grad_out, grad_hn, x, h0, weight_ih, weight_hh, out, gates, hidden_n, work,
                 grad_x, grad_h0, grad_weight_ih, grad_weight_hh, grad_bias_ih, grad_bias_hh):
    """GRU BPTT: δ^x = [δr, δz, δn], δ^h = [δr, δz, δn r], g_{t-1} = g z + δ^h W_hh."""
    return _kernel("gru_backward", (grad_out, grad_hn, x, h0, weight_ih, weight_hh, out, gates, hidden_n, work,
                                    grad_x, grad_h0, grad_weight_ih, grad_weight_hh, grad_bias_ih, grad_bias_hh))


def recurrent_pair(kernel, first, second):
    """Two independent calls of one recurrent kernel: ``kernel`` names it ("lstm_forward" ...),
    ``first`` and ``second`` are its argument tuples (the two directions of a bidirectional
    layer, one dtype). Returns both results.

    On a team of two threads they run at once, one thread each; otherwise one
    after the other on the whole team. Each result has the bits of its call
    alone, except for products sent to BLAS, whose float32 rounding can change
    with BLAS's thread count: paired, those have the bits of the call alone on
    one thread (the backend's wrapper runs BLAS serially around the pair).
    """
    if kernel not in _CALLS:
        raise ValueError(f"recurrent_pair: unknown kernel {kernel!r}")
    one, r1, _ = _CALLS[kernel](*first)
    two, r2, _ = _CALLS[kernel](*second)
    x1, x2 = one[3]["x"], two[3]["x"]
    if _num_threads != 2 or _empty(x1) or _empty(x2) or _f32(x1) != _f32(x2):
        return _kernel(kernel, tuple(first)), _kernel(kernel, tuple(second))
    _run_two_seqs(one, two)
    return r1, r2
