/* Per-time-step elementwise work of the recurrent kernels (kernels/_rnn.pyx).
 *
 * The matrix products of a step go to the small register-tiled products below
 * (fastnn's own GEMM, gemm.h, only for the large all-time-step products); the rest is the gate
 * arithmetic, written here in C so that it vectorises. The float32 versions use
 * the branch-free exp/tanh of rnn_math.h and are compiled several times
 * (target_clones: AVX-512, AVX2+FMA, baseline) with the best one picked at load
 * time, so a portable build still runs wide SIMD. The float64 versions call
 * libm, matching the NumPy reference to rounding.
 *
 * Layouts (row-major): a step's hidden state is (B, H); gate blocks are
 * (B, G*H) with the G blocks side by side in PyTorch's order.
 */
#ifndef FASTNN_RNN_KERNELS_H
#define FASTNN_RNN_KERNELS_H

#include <stddef.h>
#include "rnn_math.h"
#include "cpu_features.h"

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) && !defined(FASTNN_NO_CLONES)
#define FNN_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define FNN_CLONES
#endif

typedef ptrdiff_t fnn_idx;

/* The arrays of one elementwise call never overlap (the ops layer checks the
 * buffers); saying so lets the compiler vectorise without run-time alias checks. */
#define FNN_RESTRICT __restrict

static inline double fnn_tanh_d(double x) { return tanh(x); }

/* The templates: REAL the type, SFX the name suffix, TANH and SIGM the math. */
#define FNN_RNN_DEFINE(REAL, SFX, TANH, SIGM, ATTR)                                        \
                                                                                          \
/* h = f(a) in place; relu keeps NaN (NaN <= 0 is false). */                              \
ATTR static void fnn_rnn_act_##SFX(REAL *FNN_RESTRICT a, fnn_idx n, int relu)                          \
{                                                                                         \
    if (relu) {                                                                           \
        for (fnn_idx i = 0; i < n; i++) a[i] = (a[i] <= 0) ? (REAL)0 : a[i];              \
    } else {                                                                              \
        for (fnn_idx i = 0; i < n; i++) a[i] = TANH(a[i]);                                \
    }                                                                                     \
}                                                                                         \
                                                                                          \
/* delta = (go + grec) * f'(h), f' through the output h. */                               \
ATTR static void fnn_rnn_delta_##SFX(const REAL *FNN_RESTRICT go, const REAL *FNN_RESTRICT grec, const REAL *FNN_RESTRICT h,     \
                                     REAL *FNN_RESTRICT d, fnn_idx n, int relu)                        \
{                                                                                         \
    if (relu) {                                                                           \
        for (fnn_idx i = 0; i < n; i++) d[i] = (go[i] + grec[i]) * (REAL)(h[i] > 0);      \
    } else {                                                                              \
        for (fnn_idx i = 0; i < n; i++) d[i] = (go[i] + grec[i]) * (1 - h[i] * h[i]);     \
    }                                                                                     \
}                                                                                         \
                                                                                          \
/* LSTM step: z (B,4H) pre-activations in, activated gates out; c, h (B,H) out. */        \
ATTR static void fnn_lstm_cell_##SFX(REAL *FNN_RESTRICT z, const REAL *FNN_RESTRICT c_prev, REAL *FNN_RESTRICT c, REAL *FNN_RESTRICT h,       \
                                     fnn_idx B, fnn_idx H)                                \
{                                                                                         \
    for (fnn_idx b = 0; b < B; b++) {                                                     \
        REAL *zi = z + b * 4 * H, *zf = zi + H, *zg = zi + 2 * H, *zo = zi + 3 * H;       \
        const REAL *cp = c_prev + b * H;                                                  \
        REAL *cb = c + b * H, *hb = h + b * H;                                            \
        for (fnn_idx j = 0; j < H; j++) {                                                 \
            REAL i = SIGM(zi[j]), f = SIGM(zf[j]), g = TANH(zg[j]), o = SIGM(zo[j]);      \
            zi[j] = i; zf[j] = f; zg[j] = g; zo[j] = o;                                   \
            REAL cc = f * cp[j] + i * g;                                                  \
            cb[j] = cc;                                                                   \
            hb[j] = o * TANH(cc);                                                         \
        }                                                                                 \
    }                                                                                     \
}                                                                                         \
                                                                                          \
/* LSTM backward step: writes delta (B,4H), updates gamma = dL/dc to dL/dc_prev. */       \
ATTR static void fnn_lstm_delta_##SFX(const REAL *FNN_RESTRICT go, const REAL *FNN_RESTRICT grec, REAL *FNN_RESTRICT gamma,      \
                                      const REAL *FNN_RESTRICT gates, const REAL *FNN_RESTRICT c, const REAL *FNN_RESTRICT c_prev,\
                                      REAL *FNN_RESTRICT d, fnn_idx B, fnn_idx H)                      \
{                                                                                         \
    for (fnn_idx b = 0; b < B; b++) {                                                     \
        const REAL *gi = gates + b * 4 * H, *gf = gi + H, *gg = gi + 2 * H, *gO = gi + 3 * H; \
        REAL *di = d + b * 4 * H, *df = di + H, *dg = di + 2 * H, *dO = di + 3 * H;       \
        const REAL *gob = go + b * H, *grb = grec + b * H, *cb = c + b * H, *cp = c_prev + b * H; \
        REAL *gm = gamma + b * H;                                                         \
        for (fnn_idx j = 0; j < H; j++) {                                                 \
            REAL i = gi[j], f = gf[j], g = gg[j], o = gO[j];                              \
            REAL tc = TANH(cb[j]);                                                        \
            REAL dh = gob[j] + grb[j];                                                    \
            REAL gam = gm[j] + dh * o * (1 - tc * tc);                                    \
            di[j] = gam * g * i * (1 - i);                                                \
            df[j] = gam * cp[j] * f * (1 - f);                                            \
            dg[j] = gam * i * (1 - g * g);                                                \
            dO[j] = dh * tc * o * (1 - o);                                                \
            gm[j] = gam * f;                                                              \
        }                                                                                 \
    }                                                                                     \
}                                                                                         \
                                                                                          \
/* GRU step: gi (B,3H) input projection in, gates r,z,n out; gh (B,3H) = h W_hh^T;    */  \
/* bhh (3H) the hidden bias (zeros if none); hn (B,H) = W_hn h + b_hn; h (B,H) out.   */  \
ATTR static void fnn_gru_cell_##SFX(REAL *FNN_RESTRICT gi, const REAL *FNN_RESTRICT gh, const REAL *FNN_RESTRICT bhh,            \
                                    const REAL *FNN_RESTRICT h_prev, REAL *FNN_RESTRICT hn, REAL *FNN_RESTRICT h,                \
                                    fnn_idx B, fnn_idx H)                                 \
{                                                                                         \
    for (fnn_idx b = 0; b < B; b++) {                                                     \
        REAL *xr = gi + b * 3 * H, *xz = xr + H, *xn = xr + 2 * H;                        \
        const REAL *hr = gh + b * 3 * H, *hz = hr + H, *hnn = hr + 2 * H;                 \
        const REAL *hp = h_prev + b * H;                                                  \
        REAL *hnb = hn + b * H, *hb = h + b * H;                                          \
        for (fnn_idx j = 0; j < H; j++) {                                                 \
            REAL r = SIGM(xr[j] + (hr[j] + bhh[j]));                                      \
            REAL z = SIGM(xz[j] + (hz[j] + bhh[H + j]));                                  \
            REAL m = hnn[j] + bhh[2 * H + j];                                             \
            REAL n = TANH(xn[j] + r * m);                                                 \
            xr[j] = r; xz[j] = z; xn[j] = n;                                              \
            hnb[j] = m;                                                                   \
            hb[j] = (1 - z) * n + z * hp[j];                                              \
        }                                                                                 \
    }                                                                                     \
}                                                                                         \
                                                                                          \
/* GRU backward step: g = go + grec; writes w (B,6H) = [dr dz dn | dr dz dn*r]      */    \
/* and grec = g*z (the direct path to h_prev; the caller adds w[:,3H:] W_hh).       */    \
ATTR static void fnn_gru_delta_##SFX(const REAL *FNN_RESTRICT go, REAL *FNN_RESTRICT grec, const REAL *FNN_RESTRICT gates,       \
                                     const REAL *FNN_RESTRICT hn, const REAL *FNN_RESTRICT h_prev, REAL *FNN_RESTRICT w,         \
                                     fnn_idx B, fnn_idx H)                                \
{                                                                                         \
    for (fnn_idx b = 0; b < B; b++) {                                                     \
        const REAL *gr = gates + b * 3 * H, *gz = gr + H, *gn = gr + 2 * H;               \
        REAL *w0 = w + b * 6 * H;                                                         \
        const REAL *gob = go + b * H, *hnb = hn + b * H, *hp = h_prev + b * H;            \
        REAL *grb = grec + b * H;                                                         \
        for (fnn_idx j = 0; j < H; j++) {                                                 \
            REAL r = gr[j], z = gz[j], n = gn[j];                                         \
            REAL g = gob[j] + grb[j];                                                     \
            REAL dn = g * (1 - z) * (1 - n * n);                                          \
            REAL dr = dn * hnb[j] * r * (1 - r);                                          \
            REAL dz = g * (hp[j] - n) * z * (1 - z);                                      \
            w0[j] = dr; w0[H + j] = dz; w0[2 * H + j] = dn;                               \
            w0[3 * H + j] = dr; w0[4 * H + j] = dz; w0[5 * H + j] = dn * r;               \
            grb[j] = g * z;                                                               \
        }                                                                                 \
    }                                                                                     \
}                                                                                         \
                                                                                          \
/* out[j] = sum over rows of a[r*ld + j] (bias gradients). The sums of a block */      \
/* of columns stay in a local array and are stored once: threads summing          */      \
/* neighbouring columns then never write to one cache line inside the loop.       */      \
ATTR static void fnn_colsum_##SFX(const REAL *FNN_RESTRICT a, fnn_idx rows, fnn_idx cols, fnn_idx ld,  \
                                  REAL *FNN_RESTRICT out)                                              \
{                                                                                         \
    enum { CB = 64 };                                                                     \
    for (fnn_idx j0 = 0; j0 < cols; j0 += CB) {                                           \
        fnn_idx n = cols - j0 < CB ? cols - j0 : CB;                                      \
        REAL acc[CB] = {0};                                                               \
        for (fnn_idx r = 0; r < rows; r++) {                                              \
            const REAL *ar = a + r * ld + j0;                                             \
            for (fnn_idx j = 0; j < n; j++) acc[j] += ar[j];                              \
        }                                                                                 \
        for (fnn_idx j = 0; j < n; j++) out[j0 + j] = acc[j];                             \
    }                                                                                     \
}

FNN_RNN_DEFINE(float, f, fnn_tanhf, fnn_sigmoidf, FNN_CLONES)
FNN_RNN_DEFINE(double, d, fnn_tanh_d, fnn_sigmoid, )

/* The per-step products are small ((B, H)·(H, G*H) with B, H ~ 32..128): a BLAS
 * call costs more in set-up (and, with threads, in wake-ups) than the arithmetic.
 * This kernel keeps a 4 x (2 vectors) tile of C in registers and streams the rows
 * of Bt; GCC's vector extension maps a vector to zmm/ymm/xmm per clone.
 * Every element of C is accumulated over k = 0..K-1 in order, whichever tile or
 * edge path computes it, so splitting C's rows or columns over threads does not
 * change a single bit of the result. */
/* Tile height of the per-step product: 8 rows x 2 vectors (16 accumulators) only
 * fits the 32 vector registers of AVX-512 (fnn_cpu_wide_regs); elsewhere 4 x 2. */
#define FNN_GEMM_DEFINE(REAL, SFX, VW, ATTR)                                               \
typedef REAL fnn_vec_##SFX __attribute__((vector_size(VW * sizeof(REAL))));                \
static inline fnn_vec_##SFX fnn_ld_##SFX(const REAL *p)                                   \
{ fnn_vec_##SFX v; memcpy(&v, p, sizeof v); return v; }                                   \
static inline void fnn_st_##SFX(REAL *p, fnn_vec_##SFX v) { memcpy(p, &v, sizeof v); }    \
                                                                                          \
/* The first n (< VW) lanes of a vector from / to memory (the narrow column tail). */    \
/* (element loops, not memcpy: a library call per row would cost more than the row) */ \
static inline fnn_vec_##SFX fnn_ldn_##SFX(const REAL *p, fnn_idx n)                       \
{ fnn_vec_##SFX v = {0}; for (fnn_idx l = 0; l < n; l++) v[l] = p[l]; return v; }         \
static inline void fnn_stn_##SFX(REAL *p, fnn_vec_##SFX v, fnn_idx n)                     \
{ for (fnn_idx l = 0; l < n; l++) p[l] = v[l]; }                                          \
                                                                                          \
/* C[:, j0:N] += A·Bt[:, j0:N] for a tail narrower than one vector (dL/dx with a small */ \
/* input size has nothing else). Bt's tail columns are copied, zero-padded to one     */ \
/* vector, a block of k at a time, so the products stay in vectors instead of scalar  */ \
/* loops; 8 rows at a time keep enough independent sums in flight.                    */ \
static inline __attribute__((always_inline)) void fnn_gemm_tail_##SFX(const REAL *A, fnn_idx ars, fnn_idx aks,           \
                                       const REAL *Bt, fnn_idx ldb, REAL *C, fnn_idx ldc, \
                                       fnn_idx M, fnn_idx N, fnn_idx K, fnn_idx j0)       \
{                                                                                         \
    enum { KB = 128 };                                                                    \
    REAL pb[KB * VW] __attribute__((aligned(64)));                                        \
    fnn_idx nt = N - j0, i, k, l;                                                         \
    for (fnn_idx k0 = 0; k0 < K; k0 += KB) {                                              \
        fnn_idx kn = K - k0 < KB ? K - k0 : KB;                                           \
        for (k = 0; k < kn; k++) {                                                        \
            for (l = 0; l < nt; l++) pb[k * VW + l] = Bt[(k0 + k) * ldb + j0 + l];        \
            for (; l < VW; l++) pb[k * VW + l] = 0;                                       \
        }                                                                                 \
        const REAL *Ak = A + k0 * aks;                                                    \
        for (i = 0; i + 8 <= M; i += 8) {                                                 \
            const REAL *a = Ak + i * ars;                                                 \
            REAL *c = C + i * ldc + j0;                                                   \
            fnn_vec_##SFX s0 = fnn_ldn_##SFX(c, nt), s1 = fnn_ldn_##SFX(c + ldc, nt);     \
            fnn_vec_##SFX s2 = fnn_ldn_##SFX(c + 2 * ldc, nt), s3 = fnn_ldn_##SFX(c + 3 * ldc, nt); \
            fnn_vec_##SFX s4 = fnn_ldn_##SFX(c + 4 * ldc, nt), s5 = fnn_ldn_##SFX(c + 5 * ldc, nt); \
            fnn_vec_##SFX s6 = fnn_ldn_##SFX(c + 6 * ldc, nt), s7 = fnn_ldn_##SFX(c + 7 * ldc, nt); \
            for (k = 0; k < kn; k++) {                                                    \
                fnn_vec_##SFX b = fnn_ld_##SFX(pb + k * VW);                              \
                const REAL *ak = a + k * aks;                                             \
                s0 += ak[0] * b; s1 += ak[ars] * b;                                       \
                s2 += ak[2 * ars] * b; s3 += ak[3 * ars] * b;                             \
                s4 += ak[4 * ars] * b; s5 += ak[5 * ars] * b;                             \
                s6 += ak[6 * ars] * b; s7 += ak[7 * ars] * b;                             \
            }                                                                             \
            fnn_stn_##SFX(c, s0, nt); fnn_stn_##SFX(c + ldc, s1, nt);                     \
            fnn_stn_##SFX(c + 2 * ldc, s2, nt); fnn_stn_##SFX(c + 3 * ldc, s3, nt);       \
            fnn_stn_##SFX(c + 4 * ldc, s4, nt); fnn_stn_##SFX(c + 5 * ldc, s5, nt);       \
            fnn_stn_##SFX(c + 6 * ldc, s6, nt); fnn_stn_##SFX(c + 7 * ldc, s7, nt);       \
        }                                                                                 \
        for (; i + 4 <= M; i += 4) {                                                      \
            const REAL *a = Ak + i * ars;                                                 \
            REAL *c = C + i * ldc + j0;                                                   \
            fnn_vec_##SFX s0 = fnn_ldn_##SFX(c, nt), s1 = fnn_ldn_##SFX(c + ldc, nt);     \
            fnn_vec_##SFX s2 = fnn_ldn_##SFX(c + 2 * ldc, nt), s3 = fnn_ldn_##SFX(c + 3 * ldc, nt); \
            for (k = 0; k < kn; k++) {                                                    \
                fnn_vec_##SFX b = fnn_ld_##SFX(pb + k * VW);                              \
                const REAL *ak = a + k * aks;                                             \
                s0 += ak[0] * b; s1 += ak[ars] * b;                                       \
                s2 += ak[2 * ars] * b; s3 += ak[3 * ars] * b;                             \
            }                                                                             \
            fnn_stn_##SFX(c, s0, nt); fnn_stn_##SFX(c + ldc, s1, nt);                     \
            fnn_stn_##SFX(c + 2 * ldc, s2, nt); fnn_stn_##SFX(c + 3 * ldc, s3, nt);       \
        }                                                                                 \
        for (; i < M; i++) {                                                              \
            const REAL *a = Ak + i * ars;                                                 \
            REAL *c = C + i * ldc + j0;                                                   \
            fnn_vec_##SFX s0 = fnn_ldn_##SFX(c, nt);                                      \
            for (k = 0; k < kn; k++) s0 += a[k * aks] * fnn_ld_##SFX(pb + k * VW);        \
            fnn_stn_##SFX(c, s0, nt);                                                     \
        }                                                                                 \
    }                                                                                     \
}                                                                                         \
                                                                                          \
/* C (M,N) += A·Bt, A(i,k) = A[i*ars + k*aks] (so A or Aᵀ, any layout), Bt (K,N) and  */ \
/* C row-major with leading dims ldb, ldc.                                            */ \
ATTR static void fnn_gemm_acc_##SFX(const REAL *A, fnn_idx ars, fnn_idx aks, const REAL *Bt, \
                                    fnn_idx ldb, REAL *C, fnn_idx ldc,                    \
                                    fnn_idx M, fnn_idx N, fnn_idx K)                      \
{                                                                                         \
    fnn_idx N2 = N - N % (2 * VW), N1 = N - N % VW, M4 = M - M % 4, i, j, k;              \
    /* rows 0:M8 x columns 0:N2 in 8 x 2-vector tiles (16 sums in flight) */             \
    fnn_idx M8 = fnn_cpu_wide_regs() ? M - M % 8 : 0;                                         \
    for (i = 0; i < M8; i += 8) {                                                         \
        const REAL *a0 = A + i * ars;                                                     \
        REAL *c0 = C + i * ldc;                                                           \
        for (j = 0; j < N2; j += 2 * VW) {                                                \
            fnn_vec_##SFX s[8][2];                                                        \
            for (int r = 0; r < 8; r++) {                                                 \
                s[r][0] = fnn_ld_##SFX(c0 + r * ldc + j);                                 \
                s[r][1] = fnn_ld_##SFX(c0 + r * ldc + j + VW);                            \
            }                                                                             \
            const REAL *bk = Bt + j;                                                      \
            const REAL *ak = a0;                                                          \
            for (k = 0; k < K; k++, bk += ldb, ak += aks) {                               \
                fnn_vec_##SFX b0 = fnn_ld_##SFX(bk), b1 = fnn_ld_##SFX(bk + VW);          \
                for (int r = 0; r < 8; r++) {                                             \
                    REAL x = ak[r * ars];                                                 \
                    s[r][0] += x * b0; s[r][1] += x * b1;                                 \
                }                                                                         \
            }                                                                             \
            for (int r = 0; r < 8; r++) {                                                 \
                fnn_st_##SFX(c0 + r * ldc + j, s[r][0]);                                  \
                fnn_st_##SFX(c0 + r * ldc + j + VW, s[r][1]);                             \
            }                                                                             \
        }                                                                                 \
    }                                                                                     \
    for (i = 0; i < M4; i += 4) {                                                         \
        const REAL *a0 = A + i * ars, *a1 = a0 + ars, *a2 = a1 + ars, *a3 = a2 + ars;     \
        REAL *c0 = C + i * ldc, *c1 = c0 + ldc, *c2 = c1 + ldc, *c3 = c2 + ldc;           \
        for (j = i < M8 ? N2 : 0; j < N2; j += 2 * VW) {                                  \
            fnn_vec_##SFX s00 = fnn_ld_##SFX(c0 + j), s01 = fnn_ld_##SFX(c0 + j + VW);    \
            fnn_vec_##SFX s10 = fnn_ld_##SFX(c1 + j), s11 = fnn_ld_##SFX(c1 + j + VW);    \
            fnn_vec_##SFX s20 = fnn_ld_##SFX(c2 + j), s21 = fnn_ld_##SFX(c2 + j + VW);    \
            fnn_vec_##SFX s30 = fnn_ld_##SFX(c3 + j), s31 = fnn_ld_##SFX(c3 + j + VW);    \
            const REAL *bk = Bt + j;                                                      \
            fnn_idx ak = 0;                                                               \
            for (k = 0; k < K; k++, bk += ldb, ak += aks) {                               \
                fnn_vec_##SFX b0 = fnn_ld_##SFX(bk), b1 = fnn_ld_##SFX(bk + VW);          \
                REAL x0 = a0[ak], x1 = a1[ak], x2 = a2[ak], x3 = a3[ak];                  \
                s00 += x0 * b0; s01 += x0 * b1;                                           \
                s10 += x1 * b0; s11 += x1 * b1;                                           \
                s20 += x2 * b0; s21 += x2 * b1;                                           \
                s30 += x3 * b0; s31 += x3 * b1;                                           \
            }                                                                             \
            fnn_st_##SFX(c0 + j, s00); fnn_st_##SFX(c0 + j + VW, s01);                    \
            fnn_st_##SFX(c1 + j, s10); fnn_st_##SFX(c1 + j + VW, s11);                    \
            fnn_st_##SFX(c2 + j, s20); fnn_st_##SFX(c2 + j + VW, s21);                    \
            fnn_st_##SFX(c3 + j, s30); fnn_st_##SFX(c3 + j + VW, s31);                    \
        }                                                                                 \
        if (N1 > N2) {  /* one full vector left: a 4 x 1-vector tile */                   \
            fnn_vec_##SFX s0 = fnn_ld_##SFX(c0 + N2), s1 = fnn_ld_##SFX(c1 + N2);         \
            fnn_vec_##SFX s2 = fnn_ld_##SFX(c2 + N2), s3 = fnn_ld_##SFX(c3 + N2);         \
            const REAL *bk = Bt + N2;                                                     \
            fnn_idx ak = 0;                                                               \
            for (k = 0; k < K; k++, bk += ldb, ak += aks) {                               \
                fnn_vec_##SFX b0 = fnn_ld_##SFX(bk);                                      \
                s0 += a0[ak] * b0; s1 += a1[ak] * b0;                                     \
                s2 += a2[ak] * b0; s3 += a3[ak] * b0;                                     \
            }                                                                             \
            fnn_st_##SFX(c0 + N2, s0); fnn_st_##SFX(c1 + N2, s1);                         \
            fnn_st_##SFX(c2 + N2, s2); fnn_st_##SFX(c3 + N2, s3);                         \
        }                                                                                 \
    }                                                                                     \
    /* The rows past the last 4, one vector at a time; then the narrow column tail. */   \
    for (i = M4; i < M; i++) {                                                            \
        const REAL *a = A + i * ars;                                                      \
        REAL *c = C + i * ldc;                                                            \
        for (j = 0; j < N1; j += VW) {                                                    \
            fnn_vec_##SFX s0 = fnn_ld_##SFX(c + j);                                       \
            for (k = 0; k < K; k++) s0 += a[k * aks] * fnn_ld_##SFX(Bt + k * ldb + j);    \
            fnn_st_##SFX(c + j, s0);                                                      \
        }                                                                                 \
    }                                                                                     \
    if (N1 < N)                                                                           \
        fnn_gemm_tail_##SFX(A, ars, aks, Bt, ldb, C, ldc, M, N, K, N1);                   \
}

FNN_GEMM_DEFINE(float, f, 16, FNN_CLONES)
FNN_GEMM_DEFINE(double, d, 8, FNN_CLONES)

/* Bt (N, M) = A (M, N)ᵀ: W_hh transposed once per call for the forward products. */
#define FNN_TRANSPOSE_DEFINE(REAL, SFX)                                                    \
static void fnn_transpose_##SFX(const REAL *A, fnn_idx M, fnn_idx N, REAL *Bt)            \
{                                                                                         \
    for (fnn_idx i = 0; i < M; i++)                                                       \
        for (fnn_idx j = 0; j < N; j++) Bt[j * M + i] = A[i * N + j];                     \
}
FNN_TRANSPOSE_DEFINE(float, f)
FNN_TRANSPOSE_DEFINE(double, d)


#endif
