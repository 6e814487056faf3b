/* Register-blocked float32 kernels of the stride-1 convolution ("shifted GEMM").
 *
 * With the input of one image zero-padded and stored flat, plane by plane,
 * with row width Wp, every kernel tap (c, u, v) is a constant shift
 *     koff = c*plane + u*dH*Wp + v*dW
 * of the same flat output index q = i*Wp + j, so the convolution is
 *     out[o, q] = sum_k w[k, o] * src[koff[k] + q]
 * over a flat output of Ho*Wp positions (Wp - Wo of each row are junk and
 * dropped later). No im2col matrix is built; the inner loop is a block of
 * 8 output channels x 48 flat pixels kept in 24 vector accumulators, fed by
 * 3 vector loads and 8 broadcasts per tap: a GEMM micro-kernel. The same
 * kernel computes the input gradient (taps over (o, u, v), negative shifts
 * into a margin of zeros); fastnn_conv_wgrad_f32 computes the weight
 * gradient as dot products over q.
 *
 * The vector code uses GCC/Clang vector extensions; with GCC on x86-64 the
 * functions are compiled for AVX-512, AVX2+FMA and baseline and picked at load
 * time (target_clones), so the portable build still runs AVX-512 code. Other
 * compilers get plain loops.
 */
#ifndef FASTNN_CONV_KERNELS_H
#define FASTNN_CONV_KERNELS_H

#include <stddef.h>
#include <string.h>

#define FASTNN_CONV_OB 8    /* output channels per register block */
#define FASTNN_CONV_QB 48   /* flat pixels per register block (3 vectors of 16) */

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(__APPLE__) && __GNUC__ >= 8 \
    && !defined(FASTNN_NO_CLONES)
#define FASTNN_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define FASTNN_CLONES
#endif

#if defined(__GNUC__) || defined(__clang__)
typedef float fastnn_v16 __attribute__((vector_size(64)));

/* Unaligned vector load/store; macros, not functions, so no vector crosses a
 * call boundary of the baseline ABI. */
#define FASTNN_LOAD16(v, p) memcpy(&(v), (p), sizeof(fastnn_v16))
#define FASTNN_STORE16(p, v) memcpy((p), &(v), sizeof(fastnn_v16))

/* out[o*ldo + q] = sum_k wpk[k*OP + o] * src[koff[k] + q] for o < OP (a multiple of
 * FASTNN_CONV_OB) and q < Q (a multiple of FASTNN_CONV_QB). */
FASTNN_CLONES
static void fastnn_conv_shift_f32(ptrdiff_t K, ptrdiff_t OP, ptrdiff_t Q, const float* wpk, const ptrdiff_t* koff,
                                  const float* src, float* out, ptrdiff_t ldo)
{
    for (ptrdiff_t q = 0; q < Q; q += FASTNN_CONV_QB) {
        for (ptrdiff_t o0 = 0; o0 < OP; o0 += FASTNN_CONV_OB) {
            fastnn_v16 a[FASTNN_CONV_OB][3];
            for (int i = 0; i < FASTNN_CONV_OB; i++) {
                a[i][0] = (fastnn_v16){0};
                a[i][1] = (fastnn_v16){0};
                a[i][2] = (fastnn_v16){0};
            }
            const float* w = wpk + o0;
            for (ptrdiff_t k = 0; k < K; k++, w += OP) {
                const float* s = src + koff[k] + q;
                fastnn_v16 x0, x1, x2;
                FASTNN_LOAD16(x0, s);
                FASTNN_LOAD16(x1, s + 16);
                FASTNN_LOAD16(x2, s + 32);
                for (int i = 0; i < FASTNN_CONV_OB; i++) {
                    float wi = w[i];
                    a[i][0] += wi * x0;
                    a[i][1] += wi * x1;
                    a[i][2] += wi * x2;
                }
            }
            float* d = out + o0 * ldo + q;
            for (int i = 0; i < FASTNN_CONV_OB; i++, d += ldo) {
                FASTNN_STORE16(d, a[i][0]);
                FASTNN_STORE16(d + 16, a[i][1]);
                FASTNN_STORE16(d + 32, a[i][2]);
            }
        }
    }
}

/* gw[(o*K + k)*16 + l] += sum_{q < Q, q % 16 == l} g[o*ldg + q] * src[koff[k] + q] for o < O,
 * k < K: lane-wise partial sums of the weight gradient, whose 16 lanes the caller
 * adds up once (Q a multiple of 16; g is zero at junk positions). */
FASTNN_CLONES
static void fastnn_conv_wgrad_f32(ptrdiff_t O, ptrdiff_t K, ptrdiff_t Q, const float* g, ptrdiff_t ldg,
                                  const ptrdiff_t* koff, const float* src, float* gw)
{
    enum { OB = 4, KB = 4 };
    const ptrdiff_t QC = 1024;   /* pixels per pass: the g and src rows stay in L1 */
    for (ptrdiff_t q0 = 0; q0 < Q; q0 += QC) {
        ptrdiff_t q1 = q0 + QC < Q ? q0 + QC : Q;
        for (ptrdiff_t o0 = 0; o0 < O; o0 += OB) {
            int ob = O - o0 < OB ? (int)(O - o0) : OB;
            for (ptrdiff_t k0 = 0; k0 < K; k0 += KB) {
                int kb = K - k0 < KB ? (int)(K - k0) : KB;
                fastnn_v16 a[OB][KB];
                for (int i = 0; i < OB; i++)
                    for (int j = 0; j < KB; j++)
                        a[i][j] = (fastnn_v16){0};
                const float* gr[OB];
                const float* sr[KB];
                for (int i = 0; i < OB; i++)
                    gr[i] = g + (o0 + (i < ob ? i : 0)) * ldg;
                for (int j = 0; j < KB; j++)
                    sr[j] = src + koff[k0 + (j < kb ? j : 0)];
                for (ptrdiff_t q = q0; q < q1; q += 16) {
                    fastnn_v16 x[KB];
                    for (int j = 0; j < KB; j++)
                        FASTNN_LOAD16(x[j], sr[j] + q);
                    for (int i = 0; i < OB; i++) {
                        fastnn_v16 gv;
                        FASTNN_LOAD16(gv, gr[i] + q);
                        for (int j = 0; j < KB; j++)
                            a[i][j] += gv * x[j];
                    }
                }
                /* lane-wise partial sums: the 16 lanes are added once, by the caller */
                for (int i = 0; i < ob; i++)
                    for (int j = 0; j < kb; j++) {
                        float* p = gw + ((o0 + i) * K + k0 + j) * 16;
                        fastnn_v16 t;
                        FASTNN_LOAD16(t, p);
                        t += a[i][j];
                        FASTNN_STORE16(p, t);
                    }
            }
        }
    }
}

#else  /* plain C: same results, no vector extensions */

static void fastnn_conv_shift_f32(ptrdiff_t K, ptrdiff_t OP, ptrdiff_t Q, const float* wpk, const ptrdiff_t* koff,
                                  const float* src, float* out, ptrdiff_t ldo)
{
    for (ptrdiff_t o = 0; o < OP; o++) {
        float* d = out + o * ldo;
        for (ptrdiff_t q = 0; q < Q; q++)
            d[q] = 0;
        for (ptrdiff_t k = 0; k < K; k++) {
            float w = wpk[k * OP + o];
            const float* s = src + koff[k];
            for (ptrdiff_t q = 0; q < Q; q++)
                d[q] += w * s[q];
        }
    }
}

static void fastnn_conv_wgrad_f32(ptrdiff_t O, ptrdiff_t K, ptrdiff_t Q, const float* g, ptrdiff_t ldg,
                                  const ptrdiff_t* koff, const float* src, float* gw)
{
    for (ptrdiff_t o = 0; o < O; o++)
        for (ptrdiff_t k = 0; k < K; k++) {
            const float* gr = g + o * ldg;
            const float* s = src + koff[k];
            float* p = gw + (o * K + k) * 16;
            for (ptrdiff_t q = 0; q < Q; q++)
                p[q % 16] += gr[q] * s[q];
        }
}
#endif

/* 2x2, stride 2, unpadded max pooling of one plane (the common case).
 * Ties keep the first maximum in row-major order; a NaN beats a number.
 * A tournament (a|b, c|d, then the two winners; the left one is always the
 * earlier pixel, so a strict > keeps the first maximum) halves the chain of
 * dependent comparisons, and the comparison, a coin flip on real data, picks
 * with integer bit masks because compilers turn a ?: on floats into branches. */
#define FASTNN_PICK(T, U, best, arg, v, pos)                                              \
    do {                                                                                  \
        /* take v if v > best, or v is NaN while best is not */                           \
        U take_ = (U)(!((v) <= (best)) & ((best) == (best)));                             \
        U m_ = (U)0 - take_, bb_, vb_;                                                    \
        long long lm_ = -(long long)take_;                                                \
        memcpy(&bb_, &(best), sizeof bb_);                                                \
        memcpy(&vb_, &(v), sizeof vb_);                                                   \
        bb_ = (bb_ & ~m_) | (vb_ & m_);                                                   \
        memcpy(&(best), &bb_, sizeof bb_);                                                \
        (arg) = ((arg) & ~lm_) | ((pos) & lm_);                                           \
    } while (0)

#define FASTNN_MAXPOOL2X2(NAME, T, U)                                                     \
static void NAME(const T* src, ptrdiff_t W, ptrdiff_t ho, ptrdiff_t wo, T* dst, long long* idx) \
{                                                                                         \
    for (ptrdiff_t i = 0; i < ho; i++) {                                                  \
        const long long p0 = 2LL * i * W, p1 = p0 + W;                                    \
        for (ptrdiff_t j = 0; j < wo; j++) {                                              \
            long long ia = p0 + 2 * j, ic = p1 + 2 * j;                                   \
            T a = src[ia], b = src[ia + 1], c = src[ic], d = src[ic + 1];                 \
            FASTNN_PICK(T, U, a, ia, b, ia + 1);                                          \
            FASTNN_PICK(T, U, c, ic, d, ic + 1);                                          \
            FASTNN_PICK(T, U, a, ia, c, ic);                                              \
            dst[(long long)i * wo + j] = a;                                               \
            idx[(long long)i * wo + j] = ia;                                              \
        }                                                                                 \
    }                                                                                     \
}
FASTNN_MAXPOOL2X2(fastnn_maxpool2x2_f32, float, unsigned int)
FASTNN_MAXPOOL2X2(fastnn_maxpool2x2_f64, double, unsigned long long)

/* 1 when no element of a[0:n] is NaN or +-inf: the exponent bits of every
 * element are tested as integers (all ones means non-finite), which
 * vectorises without -ffast-math, unlike a float comparison chain. */
FASTNN_CLONES
static int fastnn_all_finite_f32(const float* a, ptrdiff_t n)
{
    unsigned int bad = 0;
    for (ptrdiff_t i = 0; i < n; i++) {
        unsigned int u;
        memcpy(&u, a + i, sizeof u);
        bad |= (u & 0x7f800000u) == 0x7f800000u;
    }
    return !bad;
}

#endif
