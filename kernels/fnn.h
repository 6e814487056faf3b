/* fastnn's C kernel library: the interface seen by the Cython glue (fnn.pxd).
 *
 * The kernels are compiled once per instruction set (kernels/lib/isa_*.c) and
 * reached through one table of function pointers per kernel family; the
 * tables of the best instruction set the CPU has are picked once at load
 * time (fnn_select_isa can force a lower one). See kernels/README.md for the
 * layout and the naming and dtype conventions.
 */
#ifndef FNN_H
#define FNN_H

#include <stddef.h>

/* Sizes, strides and offsets: 64-bit signed, so no product of them wraps. */
typedef ptrdiff_t fnn_idx;

/* Instruction sets, lowest first. FNN_ISA_SSE2 is the baseline of the
 * architecture (SSE2 on x86-64, whatever 16-byte vectors are elsewhere). */
#define FNN_ISA_SSE2 0
#define FNN_ISA_AVX2 1
#define FNN_ISA_AVX512 2
#define FNN_ISA_COUNT 3

/* Kernel families: each is dispatched (and reported) on its own. */
enum { FNN_FAMILY_ELEMENTWISE = 0, FNN_FAMILY_GEMM = 1, FNN_FAMILY_CONV = 2, FNN_FAMILY_RNN = 3,
       FNN_FAMILY_COUNT = 4 };

/* Activation codes, shared by the elementwise kernels and the GEMM epilogues. */
enum { FNN_ACT_IDENTITY = 0, FNN_ACT_RELU = 1, FNN_ACT_SIGMOID = 2, FNN_ACT_TANH = 3, FNN_ACT_LEAKY_RELU = 4 };

/* The matrix-product routes of fnn_gemm_route and the modes of the policy. */
enum { FNN_ROUTE_SMALL = 0, FNN_ROUTE_PACKED = 1, FNN_ROUTE_BLAS = 2, FNN_ROUTE_COUNT = 3 };
enum { FNN_GEMM_AUTO = 0, FNN_GEMM_OWN = 1, FNN_GEMM_BLAS = 2 };

/* ---- kernel tables (one per family and instruction set) ------------------ */

/* Elementwise, row and update loops. Outputs may alias inputs exactly. */
typedef struct fnn_elementwise_ops {
    int isa;
    /* y = act(x + bias) (bias NULL or n entries); param: leaky-ReLU slope */
    void (*act_fwd_f32)(int act, const float *x, const float *bias, float *y, fnn_idx n, double param);
    void (*act_fwd_f64)(int act, const double *x, const double *bias, double *y, fnn_idx n, double param);
    /* out = g * act'(y), from the forward output y */
    void (*act_bwd_f32)(int act, const float *g, const float *y, float *out, fnn_idx n, double param);
    void (*act_bwd_f64)(int act, const double *g, const double *y, double *out, fnn_idx n, double param);
    void (*softmax_rows_f32)(const float *x, float *y, fnn_idx rows, fnn_idx c);
    void (*softmax_rows_f64)(const double *x, double *y, fnn_idx rows, fnn_idx c);
    void (*softmax_bwd_rows_f32)(const float *g, const float *y, float *out, fnn_idx rows, fnn_idx c);
    void (*softmax_bwd_rows_f64)(const double *g, const double *y, double *out, fnn_idx rows, fnn_idx c);
    /* grad = scale (softmax(z) - onehot); returns the unscaled loss sum (labels checked by the caller) */
    double (*xent_rows_f32)(const float *z, const fnn_idx *labels, float *grad, fnn_idx rows, fnn_idx c,
                            double scale);
    double (*xent_rows_f64)(const double *z, const fnn_idx *labels, double *grad, fnn_idx rows, fnn_idx c,
                            double scale);
    double (*mse_f32)(const float *p, const float *t, float *grad, fnn_idx n, double two_scale);
    double (*mse_f64)(const double *p, const double *t, double *grad, fnn_idx n, double two_scale);
    double (*bce_f32)(const float *z, const float *t, float *grad, fnn_idx n, double scale);
    double (*bce_f64)(const double *z, const double *t, double *grad, fnn_idx n, double scale);
    void (*sgd_f32)(float *p, const float *g, float *vel, fnn_idx n, double lr, double mom, int nesterov,
                    double wd);
    void (*sgd_f64)(double *p, const double *g, double *vel, fnn_idx n, double lr, double mom, int nesterov,
                    double wd);
    void (*adam_f32)(float *p, const float *g, float *m, float *v, fnn_idx n, double decay, double l2,
                     double b1, double b2, double step_size, double inv_sqrt_bc2, double eps);
    void (*adam_f64)(double *p, const double *g, double *m, double *v, fnn_idx n, double decay, double l2,
                     double b1, double b2, double step_size, double inv_sqrt_bc2, double eps);
    /* delta = g act'(y) (not stored for the identity) and out[j] = sum_r delta[r*ld + j], one pass */
    void (*dact_colsum_f32)(int act, const float *g, const float *y, float *delta, fnn_idx rows, fnn_idx cols,
                            fnn_idx ld, float *out, double param);
    void (*dact_colsum_f64)(int act, const double *g, const double *y, double *delta, fnn_idx rows, fnn_idx cols,
                            fnn_idx ld, double *out, double param);
    /* t (n, m) = a (m, n)ᵀ */
    void (*transpose_f32)(const float *a, fnn_idx m, fnn_idx n, float *t);
    void (*transpose_f64)(const double *a, fnn_idx m, fnn_idx n, double *t);
    /* 1 when no element is NaN or +-inf */
    int (*all_finite_f32)(const float *a, fnn_idx n);
    int (*all_finite_f64)(const double *a, fnn_idx n);
    /* batch normalisation of channels [c0, c1) of x (N, C, L) and its backward; layer normalisation
     * of m rows of k values and its backward (norm.h; -1: out of memory) */
    int (*bn_fwd_f32)(const float *x, const float *w, const float *b, double eps, int batch_stats, float *mean,
                      float *var, float *out, fnn_idx N, fnn_idx C, fnn_idx L, fnn_idx c0, fnn_idx c1);
    int (*bn_fwd_f64)(const double *x, const double *w, const double *b, double eps, int batch_stats, double *mean,
                      double *var, double *out, fnn_idx N, fnn_idx C, fnn_idx L, fnn_idx c0, fnn_idx c1);
    int (*bn_bwd_f32)(const float *g, const float *x, const float *w, const float *mean, const float *var, double eps,
                      int batch_stats, float *gi, float *gw, float *gb, fnn_idx N, fnn_idx C, fnn_idx L, fnn_idx c0,
                      fnn_idx c1);
    int (*bn_bwd_f64)(const double *g, const double *x, const double *w, const double *mean, const double *var,
                      double eps, int batch_stats, double *gi, double *gw, double *gb, fnn_idx N, fnn_idx C,
                      fnn_idx L, fnn_idx c0, fnn_idx c1);
    void (*ln_fwd_rows_f32)(const float *x, const float *w, const float *b, double eps, float *out, float *mean,
                            float *rstd, fnn_idx m, fnn_idx k);
    void (*ln_fwd_rows_f64)(const double *x, const double *w, const double *b, double eps, double *out,
                            double *mean, double *rstd, fnn_idx m, fnn_idx k);
    /* sw, sb: k float64 sums each, added into (NULL: no affine gradients); pw, pb: k values of scratch */
    void (*ln_bwd_rows_f32)(const float *g, const float *x, const float *w, const float *mean, const float *rstd,
                            float *gi, double *sw, double *sb, float *pw, float *pb, fnn_idx m, fnn_idx k);
    void (*ln_bwd_rows_f64)(const double *g, const double *x, const double *w, const double *mean,
                            const double *rstd, double *gi, double *sw, double *sb, double *pw, double *pb, fnn_idx m,
                            fnn_idx k);
} fnn_elementwise_ops;

/* Matrix products, row-major C (m, n) with row stride ldc,
 * op(A)(i, p) = a[i*rsa + p*csa], op(B)(p, j) = b[p*rsb + j*csb]. */
typedef struct fnn_gemm_ops {
    int isa;
    int mr, lanes_f32, lanes_f64;   /* register tile: rows, and vector lanes per dtype */
    /* Register tiles straight from the operands (no packing unless B's columns
     * are strided): C = act(op(A) op(B) + bias), or C += op(A) op(B) when
     * accumulate (then no bias or act). Returns -1 when out of memory. */
    int (*small_f32)(fnn_idx m, fnn_idx n, fnn_idx k, const float *a, fnn_idx rsa, fnn_idx csa, const float *b,
                     fnn_idx rsb, fnn_idx csb, float *c, fnn_idx ldc, int accumulate, const float *bias, int act);
    int (*small_f64)(fnn_idx m, fnn_idx n, fnn_idx k, const double *a, fnn_idx rsa, fnn_idx csa,
                     const double *b, fnn_idx rsb, fnn_idx csb, double *c, fnn_idx ldc, int accumulate,
                     const double *bias, int act);
    /* The same on a team of nthreads, C split in slabs (same bits for any team;
     * one thread below fnn_tune.gemm_small_parallel_min_flops). */
    int (*team_f32)(fnn_idx m, fnn_idx n, fnn_idx k, const float *a, fnn_idx rsa, fnn_idx csa, const float *b,
                    fnn_idx rsb, fnn_idx csb, float *c, fnn_idx ldc, int accumulate, const float *bias, int act,
                    int nthreads);
    int (*team_f64)(fnn_idx m, fnn_idx n, fnn_idx k, const double *a, fnn_idx rsa, fnn_idx csa,
                    const double *b, fnn_idx rsb, fnn_idx csb, double *c, fnn_idx ldc, int accumulate,
                    const double *bias, int act, int nthreads);
    /* BLIS-style packed GEMM on the same tiles, OpenMP inside: C = act(op(A) op(B) + bias).
     * Returns -1 when out of memory. */
    int (*packed_f32)(fnn_idx m, fnn_idx n, fnn_idx k, const float *a, fnn_idx rsa, fnn_idx csa,
                      const float *b, fnn_idx rsb, fnn_idx csb, float *c, fnn_idx ldc, const float *bias,
                      int act, int nthreads);
    int (*packed_f64)(fnn_idx m, fnn_idx n, fnn_idx k, const double *a, fnn_idx rsa, fnn_idx csa,
                      const double *b, fnn_idx rsb, fnn_idx csb, double *c, fnn_idx ldc, const double *bias,
                      int act, int nthreads);
    /* A B fixed over many products (a recurrent weight), packed once by pack_b into
     * panels of nr columns (k * ceil(n / nr) * nr elements); then, one thread,
     * C += op(A) B (C = op(A) B unless accumulate), the same bits as small. */
    int nr_f32, nr_f64;
    void (*pack_b_f32)(fnn_idx k, fnn_idx n, const float *b, fnn_idx rsb, fnn_idx csb, float *pb);
    void (*pack_b_f64)(fnn_idx k, fnn_idx n, const double *b, fnn_idx rsb, fnn_idx csb, double *pb);
    void (*prepacked_f32)(fnn_idx m, fnn_idx n, fnn_idx k, const float *a, fnn_idx rsa, fnn_idx csa,
                          const float *pb, float *c, fnn_idx ldc, int accumulate);
    void (*prepacked_f64)(fnn_idx m, fnn_idx n, fnn_idx k, const double *a, fnn_idx rsa, fnn_idx csa,
                          const double *pb, double *c, fnn_idx ldc, int accumulate);
} fnn_gemm_ops;

/* Stride-1 float32 convolution ("shifted GEMM") and pooling. */
typedef struct fnn_conv_ops {
    int isa;
    /* out[o*ldo + q] = sum_k wpk[k*op + o] * src[koff[k] + q], o < op, q < q_len: the small
     * GEMM's tiles with B's row k at src + koff[k] */
    void (*shift_f32)(fnn_idx k, fnn_idx op, fnn_idx q_len, const float *wpk, const fnn_idx *koff,
                      const float *src, float *out, fnn_idx ldo);
    /* gw[(o*k + kk)*FNN_WGRAD_SLOTS + l] += lane-wise partial sums of g[o*ldg + q] * src[koff[kk] + q]
     * over q < q_len (a multiple of FNN_WGRAD_SLOTS); the caller adds the slots */
    void (*wgrad_f32)(fnn_idx o, fnn_idx k, fnn_idx q_len, const float *g, fnn_idx ldg, const fnn_idx *koff,
                      const float *src, float *gw);
    /* Winograd F(2x2, 3x3) transforms over the tiles t0 <= t < t0 + nt of one image (conv.h): the padded
     * input's V = Bᵀ d B, the output Y = Aᵀ M A (+ bias), the output gradient's A dY Aᵀ */
    void (*wino_in_f32)(const float *xp, fnn_idx c, fnn_idx plane, fnn_idx wp, fnn_idx tw, fnn_idx t0, fnn_idx nt,
                        float *v, fnn_idx ldv, fnn_idx ldx);
    void (*wino_out_f32)(const float *m, fnn_idx o, fnn_idx ldm, fnn_idx ldx, fnn_idx tw, fnn_idx t0, fnn_idx nt,
                         const float *bias, float *out, fnn_idx ho, fnn_idx wo);
    void (*wino_gout_f32)(const float *gy, fnn_idx o, fnn_idx ho, fnn_idx wo, fnn_idx tw, fnn_idx t0, fnn_idx nt,
                          float *gm, fnn_idx ldg, fnn_idx ldx);
    /* 2x2, stride 2, unpadded max pooling of one plane; idx: flat argmax (first max, NaN wins) */
    void (*maxpool2x2_f32)(const float *src, fnn_idx w, fnn_idx ho, fnn_idx wo, float *dst, long long *idx);
    void (*maxpool2x2_f64)(const double *src, fnn_idx w, fnn_idx ho, fnn_idx wo, double *dst,
                           long long *idx);
    /* the same of relu(src): a ReLU and the pooling after it in one pass */
    void (*relu_maxpool2x2_f32)(const float *src, fnn_idx w, fnn_idx ho, fnn_idx wo, float *dst, long long *idx);
    void (*relu_maxpool2x2_f64)(const double *src, fnn_idx w, fnn_idx ho, fnn_idx wo, double *dst,
                                long long *idx);
} fnn_conv_ops;

/* Lane slots per (o, k) of the weight-gradient partial sums: the widest vector. */
#define FNN_WGRAD_SLOTS 16
/* Rows and columns per register block of the convolution: buffers are padded to these. */
#define FNN_CONV_ROWS 8
#define FNN_CONV_COLS 48
/* Columns per share of the column sums (dact_colsum) when a team splits them: whole 64-column blocks. */
#define FNN_COLSUM_CHUNK 256
/* Rows per tile of dact_colsum: delta of a tile formed, then summed while in L1/L2. */
#define FNN_COLSUM_ROWS 16

/* The elementwise part of one recurrent time step over B rows (B, H states;
 * gate blocks side by side in PyTorch's order). */
typedef struct fnn_rnn_ops {
    int isa;
    /* a = f(a) in place: tanh, or ReLU when relu */
    void (*rnn_act_f32)(float *a, fnn_idx n, int relu);
    void (*rnn_act_f64)(double *a, fnn_idx n, int relu);
    /* d = (go + grec) f'(h) */
    void (*rnn_delta_f32)(const float *go, const float *grec, const float *h, float *d, fnn_idx n, int relu);
    void (*rnn_delta_f64)(const double *go, const double *grec, const double *h, double *d, fnn_idx n,
                          int relu);
    /* z (B, 4H) pre-activations in, gates out; c, h out */
    void (*lstm_cell_f32)(float *z, const float *c_prev, float *c, float *h, fnn_idx b, fnn_idx hsz);
    void (*lstm_cell_f64)(double *z, const double *c_prev, double *c, double *h, fnn_idx b, fnn_idx hsz);
    /* delta (B, 4H); gamma = dL/dc becomes dL/dc_prev */
    void (*lstm_delta_f32)(const float *go, const float *grec, float *gamma, const float *gates,
                           const float *c, const float *c_prev, float *d, fnn_idx b, fnn_idx hsz);
    void (*lstm_delta_f64)(const double *go, const double *grec, double *gamma, const double *gates,
                           const double *c, const double *c_prev, double *d, fnn_idx b, fnn_idx hsz);
    /* gi (B, 3H) input projection in, gates r, z, n out; gh (B, 3H) = h W_hhᵀ; bhh (3H); hn, h out */
    void (*gru_cell_f32)(float *gi, const float *gh, const float *bhh, const float *h_prev, float *hn,
                         float *h, fnn_idx b, fnn_idx hsz);
    void (*gru_cell_f64)(double *gi, const double *gh, const double *bhh, const double *h_prev, double *hn,
                         double *h, fnn_idx b, fnn_idx hsz);
    /* w (B, 6H) = [dr dz dn | dr dz dn*r]; grec = (go + grec) z */
    void (*gru_delta_f32)(const float *go, float *grec, const float *gates, const float *hn,
                          const float *h_prev, float *w, fnn_idx b, fnn_idx hsz);
    void (*gru_delta_f64)(const double *go, double *grec, const double *gates, const double *hn,
                          const double *h_prev, double *w, fnn_idx b, fnn_idx hsz);
} fnn_rnn_ops;

/* Every family of one instruction set (defined in kernels/lib/isa_*.c). */
typedef struct fnn_kernel_set {
    int isa;
    fnn_elementwise_ops elementwise;
    fnn_gemm_ops gemm;
    fnn_conv_ops conv;
    fnn_rnn_ops rnn;
} fnn_kernel_set;

/* The tables in use, one per family (never NULL after fnn_init). */
extern const fnn_elementwise_ops *fnn_ew;
extern const fnn_gemm_ops *fnn_mm;
extern const fnn_conv_ops *fnn_cv;
extern const fnn_rnn_ops *fnn_rn;

/* ---- tunables (values pushed from fastnn.backends.tuning) ----------------- */

typedef struct fnn_tunables {
    fnn_idx parallel_min_elements;        /* elementwise loops with exp or division go parallel */
    fnn_idx parallel_min_elements_cheap;  /* memory-bound loops go parallel */
    fnn_idx chunk_elements;               /* elements per OpenMP work item */
    fnn_idx nogil_min_elements;           /* smaller calls keep the GIL */
    double gemm_parallel_min_flops;       /* the packed GEMM stays on one thread below */
    double gemm_shared_min_flops;         /* threads share one packed B block from here */
    double gemm_small_parallel_min_flops; /* the small kernel splits C over the team from here */
    double gemm_scratch_keep_bytes;       /* per-thread scratch kept between calls up to this */
    fnn_idx conv_cols_budget;             /* largest im2col chunk, elements */
    fnn_idx conv_direct_max_buffer;       /* largest per-thread buffer of the direct convolution */
    fnn_idx conv_parallel_min_work;       /* convolution and pooling loops go parallel */
    fnn_idx conv_winograd_min_channels;   /* 3x3 stride-1 float32 convolutions with this many input and
                                             output channels run Winograd F(2x2, 3x3) */
    double rnn_parallel_min_work;         /* multiply-adds from which recurrent work is threaded */
    fnn_idx rnn_small_elements;           /* all-steps products up to this many operand elements: tiles */
    double rnn_spin_seconds;              /* how long the master waits spinning for a late worker */
    /* GEMM policy (fnn_gemm_route), for the instruction set and thread count in use */
    int gemm_mode;                        /* FNN_GEMM_AUTO / OWN / BLAS */
    double gemm_small_max_f32, gemm_small_max_f64;  /* m n k up to which the small kernel runs */
    double gemm_packed_max_f32, gemm_packed_max_f64;/* above: packed GEMM up to this, else BLAS */
    fnn_idx gemm_packed_min_n;            /* narrower outputs skip the packed GEMM */
    double gemm_own_min_flops;            /* smaller products go to BLAS */
} fnn_tunables;

extern fnn_tunables fnn_tune;

/* Set or read a tunable by its field name; 0 on success, -1 unknown name. */
int fnn_tune_set(const char *name, double value);
int fnn_tune_get(const char *name, double *value);
/* The i-th tunable's name, NULL past the end (for listing). */
const char *fnn_tune_name(int i);

/* ---- runtime ------------------------------------------------------------- */

/* Detect the CPU and select the best tables (idempotent). */
void fnn_init(void);
/* Best instruction set this CPU and build support. */
int fnn_best_isa(void);
/* Use `isa` (capped at fnn_best_isa) for one family, or every family when
 * family < 0; returns the level now used by that family (or the lowest). */
int fnn_select_isa(int family, int isa);
/* The instruction set a family's calls go to now. */
int fnn_family_isa(int family);
const char *fnn_isa_name(int isa);

/* Which implementation runs C (m, n) = A (m, k) B (k, n) of this dtype
 * (is_f64 0 or 1), by fnn_tune's policy: the one decision every product of
 * the compiled backend takes. */
int fnn_gemm_route(fnn_idx m, fnn_idx n, fnn_idx k, int is_f64);
/* The same decision under another mode (FNN_GEMM_*). */
int fnn_gemm_route_mode(int mode, fnn_idx m, fnn_idx n, fnn_idx k, int is_f64);
/* Count a product that ran on `route` (the tests read what ran). */
void fnn_route_taken(int route);
long long fnn_route_count(int route);

#endif /* FNN_H */
