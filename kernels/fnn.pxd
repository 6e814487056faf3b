# The C kernel library (fnn.h) as Cython sees it, and the dtype convention of
# the glue: code is written once over the fused type `real` (raw pointers),
# and the inline adapters below pick each kernel's _f32 or _f64 entry.

cdef extern from "fnn.h" nogil:
    ctypedef Py_ssize_t fnn_idx

    int FNN_ISA_SSE2, FNN_ISA_AVX2, FNN_ISA_AVX512, FNN_ISA_COUNT
    enum:
        FNN_FAMILY_ELEMENTWISE, FNN_FAMILY_GEMM, FNN_FAMILY_CONV, FNN_FAMILY_RNN, FNN_FAMILY_COUNT
        FNN_ACT_IDENTITY, FNN_ACT_RELU, FNN_ACT_SIGMOID, FNN_ACT_TANH, FNN_ACT_LEAKY_RELU
        FNN_ROUTE_SMALL, FNN_ROUTE_PACKED, FNN_ROUTE_BLAS, FNN_ROUTE_COUNT
        FNN_GEMM_AUTO, FNN_GEMM_OWN, FNN_GEMM_BLAS
        FNN_WGRAD_SLOTS, FNN_CONV_ROWS, FNN_CONV_COLS, FNN_COLSUM_CHUNK

    ctypedef struct fnn_elementwise_ops:
        int isa
        void (*act_fwd_f32)(int, const float*, const float*, float*, fnn_idx, double) noexcept nogil
        void (*act_fwd_f64)(int, const double*, const double*, double*, fnn_idx, double) noexcept nogil
        void (*act_bwd_f32)(int, const float*, const float*, float*, fnn_idx, double) noexcept nogil
        void (*act_bwd_f64)(int, const double*, const double*, double*, fnn_idx, double) noexcept nogil
        void (*softmax_rows_f32)(const float*, float*, fnn_idx, fnn_idx) noexcept nogil
        void (*softmax_rows_f64)(const double*, double*, fnn_idx, fnn_idx) noexcept nogil
        void (*softmax_bwd_rows_f32)(const float*, const float*, float*, fnn_idx, fnn_idx) noexcept nogil
        void (*softmax_bwd_rows_f64)(const double*, const double*, double*, fnn_idx, fnn_idx) noexcept nogil
        double (*xent_rows_f32)(const float*, const fnn_idx*, float*, fnn_idx, fnn_idx, double) noexcept nogil
        double (*xent_rows_f64)(const double*, const fnn_idx*, double*, fnn_idx, fnn_idx, double) noexcept nogil
        double (*mse_f32)(const float*, const float*, float*, fnn_idx, double) noexcept nogil
        double (*mse_f64)(const double*, const double*, double*, fnn_idx, double) noexcept nogil
        double (*bce_f32)(const float*, const float*, float*, fnn_idx, double) noexcept nogil
        double (*bce_f64)(const double*, const double*, double*, fnn_idx, double) noexcept nogil
        void (*sgd_f32)(float*, const float*, float*, fnn_idx, double, double, int, double) noexcept nogil
        void (*sgd_f64)(double*, const double*, double*, fnn_idx, double, double, int, double) noexcept nogil
        void (*adam_f32)(float*, const float*, float*, float*, fnn_idx, double, double, double, double, double,
                         double, double) noexcept nogil
        void (*adam_f64)(double*, const double*, double*, double*, fnn_idx, double, double, double, double, double,
                         double, double) noexcept nogil
        void (*dact_colsum_f32)(int, const float*, const float*, float*, fnn_idx, fnn_idx, fnn_idx, float*,
                                double) noexcept nogil
        void (*dact_colsum_f64)(int, const double*, const double*, double*, fnn_idx, fnn_idx, fnn_idx, double*,
                                double) noexcept nogil
        void (*transpose_f32)(const float*, fnn_idx, fnn_idx, float*) noexcept nogil
        void (*transpose_f64)(const double*, fnn_idx, fnn_idx, double*) noexcept nogil
        int (*all_finite_f32)(const float*, fnn_idx) noexcept nogil
        int (*all_finite_f64)(const double*, fnn_idx) noexcept nogil
        int (*bn_fwd_f32)(const float*, const float*, const float*, double, int, float*, float*, float*, fnn_idx,
                          fnn_idx, fnn_idx, fnn_idx, fnn_idx) noexcept nogil
        int (*bn_fwd_f64)(const double*, const double*, const double*, double, int, double*, double*, double*,
                          fnn_idx, fnn_idx, fnn_idx, fnn_idx, fnn_idx) noexcept nogil
        int (*bn_bwd_f32)(const float*, const float*, const float*, const float*, const float*, double, int, float*,
                          float*, float*, fnn_idx, fnn_idx, fnn_idx, fnn_idx, fnn_idx) noexcept nogil
        int (*bn_bwd_f64)(const double*, const double*, const double*, const double*, const double*, double, int,
                          double*, double*, double*, fnn_idx, fnn_idx, fnn_idx, fnn_idx, fnn_idx) noexcept nogil
        void (*ln_fwd_rows_f32)(const float*, const float*, const float*, double, float*, float*, float*, fnn_idx,
                                fnn_idx) noexcept nogil
        void (*ln_fwd_rows_f64)(const double*, const double*, const double*, double, double*, double*, double*,
                                fnn_idx, fnn_idx) noexcept nogil
        void (*ln_bwd_rows_f32)(const float*, const float*, const float*, const float*, const float*, float*, double*,
                                double*, float*, float*, fnn_idx, fnn_idx) noexcept nogil
        void (*ln_bwd_rows_f64)(const double*, const double*, const double*, const double*, const double*, double*,
                                double*, double*, double*, double*, fnn_idx, fnn_idx) noexcept nogil

    ctypedef struct fnn_gemm_ops:
        int isa, mr, lanes_f32, lanes_f64
        int (*small_f32)(fnn_idx, fnn_idx, fnn_idx, const float*, fnn_idx, fnn_idx, const float*, fnn_idx, fnn_idx,
                         float*, fnn_idx, int, const float*, int) noexcept nogil
        int (*small_f64)(fnn_idx, fnn_idx, fnn_idx, const double*, fnn_idx, fnn_idx, const double*, fnn_idx,
                         fnn_idx, double*, fnn_idx, int, const double*, int) noexcept nogil
        int (*team_f32)(fnn_idx, fnn_idx, fnn_idx, const float*, fnn_idx, fnn_idx, const float*, fnn_idx, fnn_idx,
                        float*, fnn_idx, int, const float*, int, int) noexcept nogil
        int (*team_f64)(fnn_idx, fnn_idx, fnn_idx, const double*, fnn_idx, fnn_idx, const double*, fnn_idx,
                        fnn_idx, double*, fnn_idx, int, const double*, int, int) noexcept nogil
        int (*packed_f32)(fnn_idx, fnn_idx, fnn_idx, const float*, fnn_idx, fnn_idx, const float*, fnn_idx, fnn_idx,
                          float*, fnn_idx, const float*, int, int) noexcept nogil
        int (*packed_f64)(fnn_idx, fnn_idx, fnn_idx, const double*, fnn_idx, fnn_idx, const double*, fnn_idx,
                          fnn_idx, double*, fnn_idx, const double*, int, int) noexcept nogil
        int nr_f32, nr_f64
        void (*pack_b_f32)(fnn_idx, fnn_idx, const float*, fnn_idx, fnn_idx, float*) noexcept nogil
        void (*pack_b_f64)(fnn_idx, fnn_idx, const double*, fnn_idx, fnn_idx, double*) noexcept nogil
        void (*prepacked_f32)(fnn_idx, fnn_idx, fnn_idx, const float*, fnn_idx, fnn_idx, const float*, float*,
                              fnn_idx, int) noexcept nogil
        void (*prepacked_f64)(fnn_idx, fnn_idx, fnn_idx, const double*, fnn_idx, fnn_idx, const double*, double*,
                              fnn_idx, int) noexcept nogil

    ctypedef struct fnn_conv_ops:
        int isa
        void (*shift_f32)(fnn_idx, fnn_idx, fnn_idx, const float*, const fnn_idx*, const float*, float*,
                          fnn_idx) noexcept nogil
        void (*wgrad_f32)(fnn_idx, fnn_idx, fnn_idx, const float*, fnn_idx, const fnn_idx*, const float*,
                          float*) noexcept nogil
        void (*wino_in_f32)(const float*, fnn_idx, fnn_idx, fnn_idx, fnn_idx, fnn_idx, fnn_idx, float*, fnn_idx,
                            fnn_idx) noexcept nogil
        void (*wino_out_f32)(const float*, fnn_idx, fnn_idx, fnn_idx, fnn_idx, fnn_idx, fnn_idx, const float*, float*,
                             fnn_idx, fnn_idx) noexcept nogil
        void (*wino_gout_f32)(const float*, fnn_idx, fnn_idx, fnn_idx, fnn_idx, fnn_idx, fnn_idx, float*, fnn_idx,
                              fnn_idx) noexcept nogil
        void (*maxpool2x2_f32)(const float*, fnn_idx, fnn_idx, fnn_idx, float*, long long*) noexcept nogil
        void (*maxpool2x2_f64)(const double*, fnn_idx, fnn_idx, fnn_idx, double*, long long*) noexcept nogil
        void (*relu_maxpool2x2_f32)(const float*, fnn_idx, fnn_idx, fnn_idx, float*, long long*) noexcept nogil
        void (*relu_maxpool2x2_f64)(const double*, fnn_idx, fnn_idx, fnn_idx, double*, long long*) noexcept nogil

    ctypedef struct fnn_rnn_ops:
        int isa
        void (*rnn_act_f32)(float*, fnn_idx, int) noexcept nogil
        void (*rnn_act_f64)(double*, fnn_idx, int) noexcept nogil
        void (*rnn_delta_f32)(const float*, const float*, const float*, float*, fnn_idx, int) noexcept nogil
        void (*rnn_delta_f64)(const double*, const double*, const double*, double*, fnn_idx, int) noexcept nogil
        void (*lstm_cell_f32)(float*, const float*, float*, float*, fnn_idx, fnn_idx) noexcept nogil
        void (*lstm_cell_f64)(double*, const double*, double*, double*, fnn_idx, fnn_idx) noexcept nogil
        void (*lstm_delta_f32)(const float*, const float*, float*, const float*, const float*, const float*, float*,
                               fnn_idx, fnn_idx) noexcept nogil
        void (*lstm_delta_f64)(const double*, const double*, double*, const double*, const double*, const double*,
                               double*, fnn_idx, fnn_idx) noexcept nogil
        void (*gru_cell_f32)(float*, const float*, const float*, const float*, float*, float*, fnn_idx,
                             fnn_idx) noexcept nogil
        void (*gru_cell_f64)(double*, const double*, const double*, const double*, double*, double*, fnn_idx,
                             fnn_idx) noexcept nogil
        void (*gru_delta_f32)(const float*, float*, const float*, const float*, const float*, float*, fnn_idx,
                              fnn_idx) noexcept nogil
        void (*gru_delta_f64)(const double*, double*, const double*, const double*, const double*, double*, fnn_idx,
                              fnn_idx) noexcept nogil

    const fnn_elementwise_ops *fnn_ew
    const fnn_gemm_ops *fnn_mm
    const fnn_conv_ops *fnn_cv
    const fnn_rnn_ops *fnn_rn

    ctypedef struct fnn_tunables:
        fnn_idx parallel_min_elements, parallel_min_elements_cheap, chunk_elements, nogil_min_elements
        double gemm_parallel_min_flops, gemm_shared_min_flops, gemm_small_parallel_min_flops
        double gemm_scratch_keep_bytes
        fnn_idx conv_cols_budget, conv_direct_max_buffer, conv_parallel_min_work, conv_winograd_min_channels
        double rnn_parallel_min_work
        fnn_idx rnn_small_elements
        double rnn_spin_seconds
        int gemm_mode
        double gemm_small_max_f32, gemm_small_max_f64, gemm_packed_max_f32, gemm_packed_max_f64
        fnn_idx gemm_packed_min_n
        double gemm_own_min_flops

    fnn_tunables fnn_tune
    int fnn_tune_set(const char *name, double value)
    int fnn_tune_get(const char *name, double *value)
    const char *fnn_tune_name(int i)

    void fnn_init()
    int fnn_best_isa()
    int fnn_select_isa(int family, int isa)
    int fnn_family_isa(int family)
    const char *fnn_isa_name(int isa)
    int fnn_gemm_route(fnn_idx m, fnn_idx n, fnn_idx k, int is_f64)
    int fnn_gemm_route_mode(int mode, fnn_idx m, fnn_idx n, fnn_idx k, int is_f64)
    void fnn_route_taken(int route)
    long long fnn_route_count(int route)


ctypedef fused real:
    float
    double


# ---- adapters: one name per kernel, the dtype picked at compile time ----

cdef inline void act_fwd(int act, const real *x, const real *bias, real *y, fnn_idx n, double prm) noexcept nogil:
    if real is float:
        fnn_ew.act_fwd_f32(act, x, bias, y, n, prm)
    else:
        fnn_ew.act_fwd_f64(act, x, bias, y, n, prm)


cdef inline void act_bwd(int act, const real *g, const real *y, real *out, fnn_idx n, double prm) noexcept nogil:
    if real is float:
        fnn_ew.act_bwd_f32(act, g, y, out, n, prm)
    else:
        fnn_ew.act_bwd_f64(act, g, y, out, n, prm)


cdef inline void dact_colsum(int act, const real *g, const real *y, real *delta, fnn_idx rows, fnn_idx cols,
                             fnn_idx ld, real *out, double prm) noexcept nogil:
    if real is float:
        fnn_ew.dact_colsum_f32(act, g, y, delta, rows, cols, ld, out, prm)
    else:
        fnn_ew.dact_colsum_f64(act, g, y, delta, rows, cols, ld, out, prm)


cdef inline void colsum(const real *a, fnn_idx rows, fnn_idx cols, fnn_idx ld, real *out) noexcept nogil:
    """out[j] = Σ_r a[r*ld + j]: the identity's case of dact_colsum."""
    dact_colsum(FNN_ACT_IDENTITY, a, <const real*>NULL, <real*>NULL, rows, cols, ld, out, 0.0)


cdef inline int bn_fwd(const real *x, const real *w, const real *b, double eps, int batch_stats, real *mean, real *var,
                       real *out, fnn_idx N, fnn_idx C, fnn_idx L, fnn_idx c0, fnn_idx c1) noexcept nogil:
    if real is float:
        return fnn_ew.bn_fwd_f32(x, w, b, eps, batch_stats, mean, var, out, N, C, L, c0, c1)
    else:
        return fnn_ew.bn_fwd_f64(x, w, b, eps, batch_stats, mean, var, out, N, C, L, c0, c1)


cdef inline int bn_bwd(const real *g, const real *x, const real *w, const real *mean, const real *var, double eps,
                       int batch_stats, real *gi, real *gw, real *gb, fnn_idx N, fnn_idx C, fnn_idx L, fnn_idx c0,
                       fnn_idx c1) noexcept nogil:
    if real is float:
        return fnn_ew.bn_bwd_f32(g, x, w, mean, var, eps, batch_stats, gi, gw, gb, N, C, L, c0, c1)
    else:
        return fnn_ew.bn_bwd_f64(g, x, w, mean, var, eps, batch_stats, gi, gw, gb, N, C, L, c0, c1)


cdef inline void ln_fwd_rows(const real *x, const real *w, const real *b, double eps, real *out, real *mean,
                             real *rstd, fnn_idx m, fnn_idx k) noexcept nogil:
    if real is float:
        fnn_ew.ln_fwd_rows_f32(x, w, b, eps, out, mean, rstd, m, k)
    else:
        fnn_ew.ln_fwd_rows_f64(x, w, b, eps, out, mean, rstd, m, k)


cdef inline void ln_bwd_rows(const real *g, const real *x, const real *w, const real *mean, const real *rstd, real *gi,
                             double *sw, double *sb, real *pw, real *pb, fnn_idx m, fnn_idx k) noexcept nogil:
    if real is float:
        fnn_ew.ln_bwd_rows_f32(g, x, w, mean, rstd, gi, sw, sb, pw, pb, m, k)
    else:
        fnn_ew.ln_bwd_rows_f64(g, x, w, mean, rstd, gi, sw, sb, pw, pb, m, k)


cdef inline void transpose(const real *a, fnn_idx m, fnn_idx n, real *t) noexcept nogil:
    if real is float:
        fnn_ew.transpose_f32(a, m, n, t)
    else:
        fnn_ew.transpose_f64(a, m, n, t)


cdef inline int gemm_small(fnn_idx m, fnn_idx n, fnn_idx k, const real *a, fnn_idx rsa, fnn_idx csa,
                           const real *b, fnn_idx rsb, fnn_idx csb, real *c, fnn_idx ldc, int accumulate,
                           const real *bias, int act) noexcept nogil:
    if real is float:
        return fnn_mm.small_f32(m, n, k, a, rsa, csa, b, rsb, csb, c, ldc, accumulate, bias, act)
    else:
        return fnn_mm.small_f64(m, n, k, a, rsa, csa, b, rsb, csb, c, ldc, accumulate, bias, act)


cdef inline int gemm_small_team(fnn_idx m, fnn_idx n, fnn_idx k, const real *a, fnn_idx rsa, fnn_idx csa,
                                const real *b, fnn_idx rsb, fnn_idx csb, real *c, fnn_idx ldc, int accumulate,
                                const real *bias, int act, int nthreads) noexcept nogil:
    if real is float:
        return fnn_mm.team_f32(m, n, k, a, rsa, csa, b, rsb, csb, c, ldc, accumulate, bias, act, nthreads)
    else:
        return fnn_mm.team_f64(m, n, k, a, rsa, csa, b, rsb, csb, c, ldc, accumulate, bias, act, nthreads)


cdef inline int gemm_packed(fnn_idx m, fnn_idx n, fnn_idx k, const real *a, fnn_idx rsa, fnn_idx csa,
                            const real *b, fnn_idx rsb, fnn_idx csb, real *c, fnn_idx ldc, const real *bias,
                            int act, int nthreads) noexcept nogil:
    if real is float:
        return fnn_mm.packed_f32(m, n, k, a, rsa, csa, b, rsb, csb, c, ldc, bias, act, nthreads)
    else:
        return fnn_mm.packed_f64(m, n, k, a, rsa, csa, b, rsb, csb, c, ldc, bias, act, nthreads)


cdef inline fnn_idx gemm_prepacked_size(fnn_idx k, fnn_idx n, const real *dtype_tag) noexcept nogil:
    """Elements of op(B) (k, n) packed by gemm_pack_b (dtype_tag: any pointer of the dtype, not read)."""
    cdef fnn_idx nr = fnn_mm.nr_f32 if real is float else fnn_mm.nr_f64
    return k * ((n + nr - 1) // nr * nr)


cdef inline void gemm_pack_b(fnn_idx k, fnn_idx n, const real *b, fnn_idx rsb, fnn_idx csb, real *pb) noexcept nogil:
    if real is float:
        fnn_mm.pack_b_f32(k, n, b, rsb, csb, pb)
    else:
        fnn_mm.pack_b_f64(k, n, b, rsb, csb, pb)


cdef inline void gemm_prepacked(fnn_idx m, fnn_idx n, fnn_idx k, const real *a, fnn_idx rsa, fnn_idx csa,
                                const real *pb, real *c, fnn_idx ldc, int accumulate) noexcept nogil:
    if real is float:
        fnn_mm.prepacked_f32(m, n, k, a, rsa, csa, pb, c, ldc, accumulate)
    else:
        fnn_mm.prepacked_f64(m, n, k, a, rsa, csa, pb, c, ldc, accumulate)


cdef inline void softmax_rows(const real *x, real *y, fnn_idx rows, fnn_idx c) noexcept nogil:
    if real is float:
        fnn_ew.softmax_rows_f32(x, y, rows, c)
    else:
        fnn_ew.softmax_rows_f64(x, y, rows, c)


cdef inline void softmax_bwd_rows(const real *g, const real *y, real *out, fnn_idx rows, fnn_idx c) noexcept nogil:
    if real is float:
        fnn_ew.softmax_bwd_rows_f32(g, y, out, rows, c)
    else:
        fnn_ew.softmax_bwd_rows_f64(g, y, out, rows, c)


cdef inline double xent_rows(const real *z, const fnn_idx *labels, real *grad, fnn_idx rows, fnn_idx c,
                             double scale) noexcept nogil:
    if real is float:
        return fnn_ew.xent_rows_f32(z, labels, grad, rows, c, scale)
    else:
        return fnn_ew.xent_rows_f64(z, labels, grad, rows, c, scale)


cdef inline double mse(const real *p, const real *t, real *grad, fnn_idx n, double two_scale) noexcept nogil:
    if real is float:
        return fnn_ew.mse_f32(p, t, grad, n, two_scale)
    else:
        return fnn_ew.mse_f64(p, t, grad, n, two_scale)


cdef inline double bce(const real *z, const real *t, real *grad, fnn_idx n, double scale) noexcept nogil:
    if real is float:
        return fnn_ew.bce_f32(z, t, grad, n, scale)
    else:
        return fnn_ew.bce_f64(z, t, grad, n, scale)


cdef inline void sgd(real *p, const real *g, real *vel, fnn_idx n, double lr, double mom, int nesterov,
                     double wd) noexcept nogil:
    if real is float:
        fnn_ew.sgd_f32(p, g, vel, n, lr, mom, nesterov, wd)
    else:
        fnn_ew.sgd_f64(p, g, vel, n, lr, mom, nesterov, wd)


cdef inline void adam(real *p, const real *g, real *m, real *v, fnn_idx n, double decay, double l2, double b1,
                      double b2, double step_size, double isb, double eps) noexcept nogil:
    if real is float:
        fnn_ew.adam_f32(p, g, m, v, n, decay, l2, b1, b2, step_size, isb, eps)
    else:
        fnn_ew.adam_f64(p, g, m, v, n, decay, l2, b1, b2, step_size, isb, eps)


cdef inline bint all_finite(const real *a, fnn_idx n) noexcept nogil:
    if real is float:
        return fnn_ew.all_finite_f32(a, n)
    else:
        return fnn_ew.all_finite_f64(a, n)


cdef inline void maxpool2x2(const real *src, fnn_idx w, fnn_idx ho, fnn_idx wo, real *dst,
                            long long *idx) noexcept nogil:
    if real is float:
        fnn_cv.maxpool2x2_f32(src, w, ho, wo, dst, idx)
    else:
        fnn_cv.maxpool2x2_f64(src, w, ho, wo, dst, idx)


cdef inline void relu_maxpool2x2(const real *src, fnn_idx w, fnn_idx ho, fnn_idx wo, real *dst,
                                 long long *idx) noexcept nogil:
    if real is float:
        fnn_cv.relu_maxpool2x2_f32(src, w, ho, wo, dst, idx)
    else:
        fnn_cv.relu_maxpool2x2_f64(src, w, ho, wo, dst, idx)


cdef inline void rnn_act(real *a, fnn_idx n, int relu) noexcept nogil:
    if real is float:
        fnn_rn.rnn_act_f32(a, n, relu)
    else:
        fnn_rn.rnn_act_f64(a, n, relu)


cdef inline void rnn_delta(const real *go, const real *grec, const real *h, real *d, fnn_idx n,
                           int relu) noexcept nogil:
    if real is float:
        fnn_rn.rnn_delta_f32(go, grec, h, d, n, relu)
    else:
        fnn_rn.rnn_delta_f64(go, grec, h, d, n, relu)


cdef inline void lstm_cell(real *z, const real *c_prev, real *c, real *h, fnn_idx b, fnn_idx hsz) noexcept nogil:
    if real is float:
        fnn_rn.lstm_cell_f32(z, c_prev, c, h, b, hsz)
    else:
        fnn_rn.lstm_cell_f64(z, c_prev, c, h, b, hsz)


cdef inline void lstm_delta(const real *go, const real *grec, real *gamma, const real *gates, const real *c,
                            const real *c_prev, real *d, fnn_idx b, fnn_idx hsz) noexcept nogil:
    if real is float:
        fnn_rn.lstm_delta_f32(go, grec, gamma, gates, c, c_prev, d, b, hsz)
    else:
        fnn_rn.lstm_delta_f64(go, grec, gamma, gates, c, c_prev, d, b, hsz)


cdef inline void gru_cell(real *gi, const real *gh, const real *bhh, const real *h_prev, real *hn, real *h,
                          fnn_idx b, fnn_idx hsz) noexcept nogil:
    if real is float:
        fnn_rn.gru_cell_f32(gi, gh, bhh, h_prev, hn, h, b, hsz)
    else:
        fnn_rn.gru_cell_f64(gi, gh, bhh, h_prev, hn, h, b, hsz)


cdef inline void gru_delta(const real *go, real *grec, const real *gates, const real *hn, const real *h_prev,
                           real *w, fnn_idx b, fnn_idx hsz) noexcept nogil:
    if real is float:
        fnn_rn.gru_delta_f32(go, grec, gates, hn, h_prev, w, b, hsz)
    else:
        fnn_rn.gru_delta_f64(go, grec, gates, hn, h_prev, w, b, hsz)
