/* Hot elementwise and row loops of the Cython kernels, in plain C.
 *
 * Why C: the loops below must auto-vectorise, including exp and tanh. libm's
 * scalar exp/tanh stop GCC from vectorising a loop (and glibc's tanh costs
 * ~30 ns), so both dtypes use branch-free approximations: range reduction
 * plus polynomial, a few ulp (float32 ~2e-7, float64 ~1e-15 relative).
 * Only the small binary cross-entropy kernel calls libm.
 *
 * Why target_clones: the portable build has no AVX, yet the machines it runs
 * on mostly do. GCC compiles each FNN_CLONES function for AVX-512 (x86-64-v4),
 * AVX2 with FMA (x86-64-v3; plain "avx2" would leave out FMA and run every
 * multiply-add as two instructions) and the baseline, and picks one at load
 * time (ifunc). Other compilers, and
 * builds that already target AVX-512 (-march=native), get one plain version.
 *
 * Conventions: every function takes raw pointers and a length; the Cython
 * side splits long arrays into chunks for its OpenMP loop. Outputs may alias
 * inputs exactly (in-place ops); those cases take their own loop so that
 * the restrict-qualified loops stay vectorised. NaN propagates through every
 * function (comparisons are written so that NaN takes the value-carrying
 * branch).
 */
#ifndef FASTNN_FASTMATH_H
#define FASTNN_FASTMATH_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_features.h"

typedef ptrdiff_t fnn_idx;

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) \
    && !defined(__AVX512F__) && !defined(FASTNN_NO_CLONES)
#define FNN_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define FNN_CLONES
#endif

#if defined(__GNUC__) || defined(__clang__)
#define FNN_UNUSED __attribute__((unused)) /* each module uses only some loops */
#define FNN_RESTRICT __restrict__
#define FNN_INLINE static inline __attribute__((always_inline))
#elif defined(_MSC_VER)
#define FNN_UNUSED
#define FNN_RESTRICT __restrict
#define FNN_INLINE static __forceinline
#else
#define FNN_UNUSED
#define FNN_RESTRICT
#define FNN_INLINE static inline
#endif

/* ------------------------------------------------------------------------ */
/* Scalar building blocks (inlined into the vector loops).                   */

/* P(r) with expm1(r) = r + r^2 P(r): Taylor series to r^7 (1/k!), enough for
 * float32 on |r| <= ln2/2 (truncation r^8/8! < 2e-8 relative). */
FNN_INLINE float fnn_expm1_poly_f32(float r)
{
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    return p;
}

/* exp(x) for float32 with x already in [-87.33, 88]: Cody-Waite range
 * reduction x = n ln2 + r, |r| <= ln2/2, the polynomial above, and 2^n
 * built in the exponent bits. n is rounded with the 1.5*2^23 trick instead
 * of a float->int conversion, so a NaN argument gives NaN and nothing
 * undefined. */
FNN_INLINE float fnn_exp_core_f32(float x)
{
    const float magic = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
    float t = x * 1.44269504088896341f + magic;
    float n = t - magic;
    float r = x - n * 0.693359375f;
    r = r + n * 2.12194440e-4f;
    float p = fnn_expm1_poly_f32(r);
    p = p * (r * r) + r + 1.0f;
    uint32_t ti;
    memcpy(&ti, &t, sizeof ti);
    uint32_t ei = (ti - 0x4B400000u + 127u) << 23;
    float s;
    memcpy(&s, &ei, sizeof s);
    return p * s;
}

/* min(a, c) that keeps a NaN a (one vminps: c < a ? c : a). */
FNN_INLINE float fnn_min_keepnan_f32(float a, float c) { return c < a ? c : a; }

/* exp(x) for x <= 0 (softmax after subtracting the row max): clamped at
 * -87.33 so that the result stays a normal float (about 1e-38, not 0). */
FNN_INLINE float fnn_exp_f32(float x)
{
    return fnn_exp_core_f32(-fnn_min_keepnan_f32(-x, 87.33f));
}

/* exp(x) for x in [-104, 0], down into the float32 denormals (exp(-104)
 * rounds to 0): as fnn_exp_core_f32, but 2^n (n down to -150) is applied as
 * two normal factors 2^(n/2) 2^(n - n/2), so that only the last product
 * rounds. */
FNN_INLINE float fnn_exp_neg_f32(float x)
{
    const float magic = 12582912.0f;
    float t = x * 1.44269504088896341f + magic;
    float n = t - magic;
    float r = x - n * 0.693359375f;
    r = r + n * 2.12194440e-4f;
    float p = fnn_expm1_poly_f32(r);
    p = p * (r * r) + r + 1.0f;
    uint32_t ti;
    memcpy(&ti, &t, sizeof ti);
    int32_t ni = (int32_t)(ti - 0x4B400000u);
    int32_t n1 = ni >> 1; /* arithmetic shift on every supported compiler */
    uint32_t e1 = (uint32_t)(n1 + 127) << 23, e2 = (uint32_t)(ni - n1 + 127) << 23;
    float s1, s2;
    memcpy(&s1, &e1, sizeof s1);
    memcpy(&s2, &e2, sizeof s2);
    return (p * s1) * s2;
}

/* sigmoid(x) = 1/(1+e) for x >= 0, e/(1+e) otherwise, e = exp(-|x|) <= 1;
 * exact down to the denormals, 0 for x <= -104 and -inf. */
FNN_INLINE float fnn_sigmoid_f32_1(float x)
{
    float e = fnn_exp_neg_f32(-fnn_min_keepnan_f32(fabsf(x), 104.0f));
    float num = x >= 0.0f ? 1.0f : e; /* NaN: picks e, which is NaN */
    return num / (1.0f + e);
}

/* expm1(x) for float32 with x in [-18, 0], accurate relative to the result
 * near 0 (no 1 - e cancellation): with x = n ln2 + r,
 * expm1(x) = 2^n expm1(r) + (2^n - 1), expm1(r) = r + r^2 P(r) (Taylor to r^7,
 * |r| <= ln2/2, truncation below 2e-8 relative). */
FNN_INLINE float fnn_expm1_core_f32(float x)
{
    const float magic = 12582912.0f;
    float t = x * 1.44269504088896341f + magic;
    float n = t - magic;
    float r = x - n * 0.693359375f;
    r = r + n * 2.12194440e-4f;
    float em = r + (r * r) * fnn_expm1_poly_f32(r);
    uint32_t ti;
    memcpy(&ti, &t, sizeof ti);
    uint32_t ei = (ti - 0x4B400000u + 127u) << 23;
    float s;
    memcpy(&s, &ei, sizeof s);
    return s * em + (s - 1.0f);
}

/* tanh(|x|) = -u / (2 + u) with u = expm1(-2|x|), sign restored: one
 * branch-free formula, accurate near 0 and saturating to +-1 (2|x| is
 * clamped at 18, beyond which tanh rounds to 1). NaN propagates. */
FNN_INLINE float fnn_tanh_f32_1(float x)
{
    float u = fnn_expm1_core_f32(-fnn_min_keepnan_f32(2.0f * fabsf(x), 18.0f));
    return copysignf(-u / (2.0f + u), x);
}

/* float64 versions, same scheme with a degree-13 Taylor polynomial
 * (|r| <= ln2/2: truncation below 1e-17 relative), so that they vectorise
 * where libm's scalar exp/tanh would not; a few ulp. */

FNN_INLINE double fnn_min_keepnan_f64(double a, double c) { return c < a ? c : a; }

/* r = x - n ln2 with n = round(x / ln2); returns n (as double), stores t. */
#define FNN_REDUCE_F64(x, t, n, r)                          \
    const double magic = 6755399441055744.0; /* 1.5*2^52 */ \
    double t = (x) * 1.4426950408889634074 + magic;          \
    double n = t - magic;                                    \
    double r = (x) - n * 6.93147180369123816490e-01;         \
    r = r - n * 1.90821492927058770002e-10;

/* expm1(r) - r - r^2/2 ... folded: returns P with expm1(r) = r + r^2 P(r) */
FNN_INLINE double fnn_expm1_poly_f64(double r)
{
    double p = 1.0 / 6227020800.0; /* 1/13! */
    p = p * r + 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    return p;
}

/* exp(x) for x in [-746, 0], exact into the denormals (2^n as two factors). */
FNN_INLINE double fnn_exp_neg_f64(double x)
{
    FNN_REDUCE_F64(x, t, n, r)
    double e = 1.0 + (r + (r * r) * fnn_expm1_poly_f64(r));
    uint64_t ti;
    memcpy(&ti, &t, sizeof ti);
    int64_t ni = (int64_t)(ti - 0x4338000000000000ull);
    int64_t n1 = ni >> 1;
    uint64_t e1 = (uint64_t)(n1 + 1023) << 52, e2 = (uint64_t)(ni - n1 + 1023) << 52;
    double s1, s2;
    memcpy(&s1, &e1, sizeof s1);
    memcpy(&s2, &e2, sizeof s2);
    (void)n;
    return (e * s1) * s2;
}

/* exp(x) for x <= 0 (softmax after subtracting the row max); NaN passes. */
FNN_INLINE double fnn_exp_f64(double x)
{
    return fnn_exp_neg_f64(-fnn_min_keepnan_f64(-x, 746.0));
}

/* expm1(x) for x in [-40, 0]: 2^n expm1(r) + (2^n - 1). */
FNN_INLINE double fnn_expm1_neg_f64(double x)
{
    FNN_REDUCE_F64(x, t, n, r)
    double em = r + (r * r) * fnn_expm1_poly_f64(r);
    uint64_t ti;
    memcpy(&ti, &t, sizeof ti);
    uint64_t ei = (ti - 0x4338000000000000ull + 1023u) << 52;
    double sc;
    memcpy(&sc, &ei, sizeof sc);
    (void)n;
    return sc * em + (sc - 1.0);
}

FNN_INLINE double fnn_sigmoid_f64_1(double x)
{
    double e = fnn_exp_neg_f64(-fnn_min_keepnan_f64(fabs(x), 746.0));
    double num = x >= 0.0 ? 1.0 : e;
    return num / (1.0 + e);
}

/* tanh(|x|) = -u / (2 + u), u = expm1(-2|x|); beyond |x| = 20 it rounds to 1. */
FNN_INLINE double fnn_tanh_f64_1(double x)
{
    double u = fnn_expm1_neg_f64(-fnn_min_keepnan_f64(2.0 * fabs(x), 40.0));
    return copysign(-u / (2.0 + u), x);
}

/* ------------------------------------------------------------------------ */
/* Elementwise activations: y = act(x + bias) (bias may be NULL: no bias;    */
/* otherwise it has n entries, the dense layer adds it row by row).          */

#define FNN_RELU(v, prm) (!((v) <= 0) ? (v) : 0)
#define FNN_LEAKY(v, prm) ((v) * ((v) < 0 ? (prm) : 1))
#define FNN_IDENT(v, prm) (v)

#define FNN_DEFINE_UNARY(NAME, T, EXPR)                                                   \
    FNN_CLONES FNN_UNUSED static void NAME(const T *x, const T *bias, T *y, fnn_idx n, double param) \
    {                                                                                     \
        const T prm = (T)param;                                                           \
        (void)prm;                                                                        \
        if (bias == NULL) {                                                               \
            if (x == y) {                                                                 \
                T *FNN_RESTRICT p = y;                                                    \
                for (fnn_idx i = 0; i < n; i++) {                                         \
                    T v = p[i];                                                           \
                    p[i] = EXPR(v, prm);                                                  \
                }                                                                         \
            } else {                                                                      \
                const T *FNN_RESTRICT xi = x;                                             \
                T *FNN_RESTRICT yo = y;                                                   \
                for (fnn_idx i = 0; i < n; i++) {                                         \
                    T v = xi[i];                                                          \
                    yo[i] = EXPR(v, prm);                                                 \
                }                                                                         \
            }                                                                             \
        } else {                                                                          \
            const T *FNN_RESTRICT b = bias;                                               \
            if (x == y) {                                                                 \
                T *FNN_RESTRICT p = y;                                                    \
                for (fnn_idx i = 0; i < n; i++) {                                         \
                    T v = p[i] + b[i];                                                    \
                    p[i] = EXPR(v, prm);                                                  \
                }                                                                         \
            } else {                                                                      \
                const T *FNN_RESTRICT xi = x;                                             \
                T *FNN_RESTRICT yo = y;                                                   \
                for (fnn_idx i = 0; i < n; i++) {                                         \
                    T v = xi[i] + b[i];                                                   \
                    yo[i] = EXPR(v, prm);                                                 \
                }                                                                         \
            }                                                                             \
        }                                                                                 \
    }

FNN_DEFINE_UNARY(fnn_identity_f32, float, FNN_IDENT)
FNN_DEFINE_UNARY(fnn_identity_f64, double, FNN_IDENT)
FNN_DEFINE_UNARY(fnn_relu_f32, float, FNN_RELU)
FNN_DEFINE_UNARY(fnn_relu_f64, double, FNN_RELU)
FNN_DEFINE_UNARY(fnn_leaky_relu_f32, float, FNN_LEAKY)
FNN_DEFINE_UNARY(fnn_leaky_relu_f64, double, FNN_LEAKY)
#define FNN_SIG32(v, prm) fnn_sigmoid_f32_1(v)
#define FNN_SIG64(v, prm) fnn_sigmoid_f64_1(v)
#define FNN_TANH32(v, prm) fnn_tanh_f32_1(v)
#define FNN_TANH64(v, prm) fnn_tanh_f64_1(v)
FNN_DEFINE_UNARY(fnn_sigmoid_f32, float, FNN_SIG32)
FNN_DEFINE_UNARY(fnn_sigmoid_f64, double, FNN_SIG64)
FNN_DEFINE_UNARY(fnn_tanh_f32, float, FNN_TANH32)
FNN_DEFINE_UNARY(fnn_tanh_f64, double, FNN_TANH64)

/* ------------------------------------------------------------------------ */
/* Backward from the forward output y: out = g * act'(y).                    */

#define FNN_DRELU(g, y, prm) ((g) * ((y) > 0 ? 1 : 0))
#define FNN_DLEAKY(g, y, prm) ((g) * ((y) > 0 ? 1 : (prm)))
#define FNN_DSIG(g, y, prm) ((g) * ((y) * (1 - (y))))
#define FNN_DTANH(g, y, prm) ((g) * (1 - (y) * (y)))

#define FNN_DEFINE_BINARY(NAME, T, EXPR)                                                   \
    FNN_CLONES FNN_UNUSED static void NAME(const T *g, const T *y, T *out, fnn_idx n, double param)   \
    {                                                                                      \
        const T prm = (T)param;                                                            \
        (void)prm;                                                                         \
        if (out == g) {                                                                    \
            T *FNN_RESTRICT o = out;                                                       \
            const T *FNN_RESTRICT yy = y;                                                  \
            if (y == out) { /* all three the same buffer */                                \
                for (fnn_idx i = 0; i < n; i++) {                                          \
                    T v = o[i];                                                            \
                    o[i] = EXPR(v, v, prm);                                                \
                }                                                                          \
            } else {                                                                       \
                for (fnn_idx i = 0; i < n; i++) {                                          \
                    T gv = o[i], yv = yy[i];                                               \
                    o[i] = EXPR(gv, yv, prm);                                              \
                }                                                                          \
            }                                                                              \
        } else if (out == y) {                                                             \
            T *FNN_RESTRICT o = out;                                                       \
            const T *FNN_RESTRICT gg = g;                                                  \
            for (fnn_idx i = 0; i < n; i++) {                                              \
                T gv = gg[i], yv = o[i];                                                   \
                o[i] = EXPR(gv, yv, prm);                                                  \
            }                                                                              \
        } else {                                                                           \
            T *FNN_RESTRICT o = out;                                                       \
            const T *FNN_RESTRICT gg = g;                                                  \
            const T *FNN_RESTRICT yy = y;                                                  \
            for (fnn_idx i = 0; i < n; i++) {                                              \
                T gv = gg[i], yv = yy[i];                                                  \
                o[i] = EXPR(gv, yv, prm);                                                  \
            }                                                                              \
        }                                                                                  \
    }

FNN_DEFINE_BINARY(fnn_relu_bwd_f32, float, FNN_DRELU)
FNN_DEFINE_BINARY(fnn_relu_bwd_f64, double, FNN_DRELU)
FNN_DEFINE_BINARY(fnn_leaky_relu_bwd_f32, float, FNN_DLEAKY)
FNN_DEFINE_BINARY(fnn_leaky_relu_bwd_f64, double, FNN_DLEAKY)
FNN_DEFINE_BINARY(fnn_sigmoid_bwd_f32, float, FNN_DSIG)
FNN_DEFINE_BINARY(fnn_sigmoid_bwd_f64, double, FNN_DSIG)
FNN_DEFINE_BINARY(fnn_tanh_bwd_f32, float, FNN_DTANH)
FNN_DEFINE_BINARY(fnn_tanh_bwd_f64, double, FNN_DTANH)

/* ------------------------------------------------------------------------ */
/* Row kernels: softmax, its backward, cross-entropy, column sums.           */
/* Reductions are marked "omp simd" so that they vectorise (several partial */
/* sums) without -ffast-math; the build adds -fopenmp-simd where it has no   */
/* OpenMP, and a compiler without either runs them as plain loops.           */

#if (defined(__GNUC__) || defined(__clang__)) && (defined(_OPENMP) || defined(FASTNN_OPENMP_SIMD))
#define FNN_PRAGMA(x) _Pragma(#x)
#define FNN_SIMD_REDUCTION(r) FNN_PRAGMA(omp simd reduction(r))
#else
#define FNN_SIMD_REDUCTION(r)
#endif

#define FNN_DEFINE_ROWS(T, SUF, EXPF)                                                           \
    FNN_INLINE T fnn_rowmax_##SUF(const T *FNN_RESTRICT x, fnn_idx n)                          \
    {                                                                                           \
        T m = x[0];                                                                             \
        FNN_SIMD_REDUCTION(max : m)                                                             \
        for (fnn_idx i = 0; i < n; i++) m = x[i] > m ? x[i] : m;                                \
        return m;                                                                               \
    }                                                                                           \
    /* y = exp(x - m), returns sum(y) */                                                        \
    FNN_INLINE T fnn_expsum_##SUF(const T *x, T *y, fnn_idx n, T m)                            \
    {                                                                                           \
        T s = 0;                                                                                \
        FNN_SIMD_REDUCTION(+ : s)                                                               \
        for (fnn_idx i = 0; i < n; i++) {                                                       \
            T e = EXPF(x[i] - m);                                                               \
            y[i] = e;                                                                           \
            s += e;                                                                             \
        }                                                                                       \
        return s;                                                                               \
    }                                                                                           \
    /* y = softmax(x) over rows of length c; x may equal y. */                                  \
    FNN_CLONES FNN_UNUSED static void fnn_softmax_rows_##SUF(const T *x, T *y, fnn_idx rows, fnn_idx c)   \
    {                                                                                           \
        if (c == 0) return;                                                                     \
        for (fnn_idx r = 0; r < rows; r++) {                                                    \
            const T *xr = x + r * c;                                                            \
            T *yr = y + r * c;                                                                  \
            T m = fnn_rowmax_##SUF(xr, c);                                                      \
            T inv = 1 / fnn_expsum_##SUF(xr, yr, c, m);                                         \
            for (fnn_idx i = 0; i < c; i++) yr[i] *= inv;                                       \
        }                                                                                       \
    }                                                                                           \
    /* out = y * (g - sum(g*y)) row by row */                                                   \
    FNN_CLONES FNN_UNUSED static void fnn_softmax_bwd_rows_##SUF(const T *g, const T *y, T *out,          \
                                                      fnn_idx rows, fnn_idx c)                  \
    {                                                                                           \
        for (fnn_idx r = 0; r < rows; r++) {                                                    \
            const T *gr = g + r * c;                                                            \
            const T *yr = y + r * c;                                                            \
            T *outr = out + r * c;                                                              \
            T dot = 0;                                                                          \
            FNN_SIMD_REDUCTION(+ : dot)                                                         \
            for (fnn_idx i = 0; i < c; i++) dot += gr[i] * yr[i];                               \
            for (fnn_idx i = 0; i < c; i++) outr[i] = (gr[i] - dot) * yr[i];                    \
        }                                                                                       \
    }                                                                                           \
    /* Cross-entropy rows: grad = scale*(softmax(z) - onehot), returns sum of the rows' */     \
    /* logsumexp(z) - z[label] (unscaled), in double. */                                        \
    FNN_CLONES FNN_UNUSED static double fnn_xent_rows_##SUF(const T *z, const fnn_idx *labels, T *grad,   \
                                                 fnn_idx rows, fnn_idx c, double scale)         \
    {                                                                                           \
        /* Σ_r log(s_r) is taken as log(Π s_r) over groups of rows: each s_r lies  \
           in [1, c], so a group of g rows with c^g < 1e290 cannot overflow, and   \
           one log per group instead of per row matters for small batches. */      \
        double loss = 0, prod = 1;                                                              \
        const T sc = (T)scale;                                                                  \
        fnn_idx group = (fnn_idx)(290.0 / log10((double)(c > 1 ? c : 2)));                      \
        if (group < 1) group = 1;                                                               \
        fnn_idx in_group = 0;                                                                   \
        for (fnn_idx r = 0; r < rows; r++) {                                                    \
            const T *zr = z + r * c;                                                            \
            T *gr = grad + r * c;                                                               \
            fnn_idx lab = labels[r];                                                            \
            T m = fnn_rowmax_##SUF(zr, c);                                                      \
            T s = fnn_expsum_##SUF(zr, gr, c, m);                                               \
            T f = sc / s;                                                                       \
            for (fnn_idx i = 0; i < c; i++) gr[i] *= f;                                         \
            gr[lab] -= sc;                                                                      \
            loss -= (double)(zr[lab] - m);                                                      \
            prod *= (double)s;                                                                  \
            if (++in_group == group) { loss += log(prod); prod = 1; in_group = 0; }             \
        }                                                                                       \
        return loss + log(prod);                                                                \
    }                                                                                           \
    /* acc[j] += x[j] */                                                                        \
    FNN_CLONES FNN_UNUSED static void fnn_add_##SUF(T *FNN_RESTRICT acc, const T *FNN_RESTRICT x, fnn_idx n) \
    {                                                                                           \
        for (fnn_idx i = 0; i < n; i++) acc[i] += x[i];                                         \
    }

FNN_DEFINE_ROWS(float, f32, fnn_exp_f32)
FNN_DEFINE_ROWS(double, f64, fnn_exp_f64)

/* ------------------------------------------------------------------------ */
/* Losses over a chunk: write the gradient, return the (unscaled) loss sum.  */

#define FNN_DEFINE_LOSSES(T, SUF, EXPF, LOG1P)                                                 \
    /* d = p - t; grad = two_scale * d; returns sum d^2 (double) */                            \
    FNN_CLONES FNN_UNUSED static double fnn_mse_##SUF(const T *p, const T *t, T *grad, fnn_idx n,         \
                                           double two_scale)                                   \
    {                                                                                          \
        const T ts = (T)two_scale;                                                             \
        double s = 0;                                                                          \
        FNN_SIMD_REDUCTION(+ : s)                                                              \
        for (fnn_idx i = 0; i < n; i++) {                                                      \
            T d = p[i] - t[i];                                                                 \
            s += (double)d * (double)d;                                                        \
            grad[i] = d * ts;                                                                  \
        }                                                                                      \
        return s;                                                                              \
    }                                                                                          \
    /* max(z,0) - z t + log1p(exp(-|z|)); grad = scale (sigmoid(z) - t) */                     \
    FNN_UNUSED static double fnn_bce_##SUF(const T *z, const T *t, T *grad, fnn_idx n, double scale)      \
    {                                                                                          \
        const T sc = (T)scale;                                                                 \
        double s = 0;                                                                          \
        for (fnn_idx i = 0; i < n; i++) {                                                      \
            T zi = z[i];                                                                       \
            T e = EXPF(-fabs(zi));                                                             \
            T pos = zi > 0 ? zi : 0;                                                           \
            s += (double)(pos - zi * t[i] + LOG1P(e));                                         \
            T sig = (zi >= 0 ? (T)1 : e) / (1 + e);                                            \
            grad[i] = (sig - t[i]) * sc;                                                       \
        }                                                                                      \
        return s;                                                                              \
    }

FNN_DEFINE_LOSSES(float, f32, expf, log1pf)
FNN_DEFINE_LOSSES(double, f64, exp, log1p)

/* ------------------------------------------------------------------------ */
/* Optimizer updates (PyTorch's rules, see the reference for the math).      */

/* Weight decay is added only when it is not zero (PyTorch's and the reference's
 * rule): 0·p would turn an inf or NaN parameter into a NaN gradient and
 * momentum. The test is loop-invariant, so the compiler hoists it. */
#define FNN_DECAYED(g, wd, p) ((wd) != 0 ? (g) + (wd) * (p) : (g))

#define FNN_DEFINE_OPTIM(T, SUF, SQRT)                                                           \
    FNN_CLONES FNN_UNUSED static void fnn_sgd_##SUF(T *FNN_RESTRICT param, const T *FNN_RESTRICT grad,      \
                                         T *FNN_RESTRICT vel, fnn_idx n, double lr_,            \
                                         double mom_, int nesterov, double wd_)                 \
    {                                                                                            \
        const T lr = (T)lr_, mom = (T)mom_, wd = (T)wd_;                                         \
        if (vel == NULL) {                                                                       \
            for (fnn_idx i = 0; i < n; i++) {                                                    \
                T g = FNN_DECAYED(grad[i], wd, param[i]);                                        \
                param[i] -= lr * g;                                                              \
            }                                                                                    \
        } else if (nesterov) {                                                                   \
            for (fnn_idx i = 0; i < n; i++) {                                                    \
                T g = FNN_DECAYED(grad[i], wd, param[i]);                                        \
                T v = mom * vel[i] + g;                                                          \
                vel[i] = v;                                                                      \
                param[i] -= lr * (g + mom * v);                                                  \
            }                                                                                    \
        } else {                                                                                 \
            for (fnn_idx i = 0; i < n; i++) {                                                    \
                T g = FNN_DECAYED(grad[i], wd, param[i]);                                        \
                T v = mom * vel[i] + g;                                                          \
                vel[i] = v;                                                                      \
                param[i] -= lr * v;                                                              \
            }                                                                                    \
        }                                                                                        \
    }                                                                                            \
    FNN_CLONES FNN_UNUSED static void fnn_adam_##SUF(T *FNN_RESTRICT param, const T *FNN_RESTRICT grad,     \
                                          T *FNN_RESTRICT m, T *FNN_RESTRICT v, fnn_idx n,      \
                                          double decay_, double l2_, double b1_, double b2_,    \
                                          double step_size_, double inv_sqrt_bc2_, double eps_) \
    {                                                                                            \
        const T decay = (T)decay_, l2 = (T)l2_, b1 = (T)b1_, b2 = (T)b2_;                        \
        const T c1 = (T)(1 - b1_), c2 = (T)(1 - b2_);                                            \
        const T step_size = (T)step_size_, isb = (T)inv_sqrt_bc2_, eps = (T)eps_;               \
        for (fnn_idx i = 0; i < n; i++) {                                                        \
            T p = param[i] * decay;                                                              \
            T g = FNN_DECAYED(grad[i], l2, p);                                                   \
            T mi = m[i] * b1 + c1 * g;                                                           \
            T vi = v[i] * b2 + c2 * (g * g);                                                     \
            m[i] = mi;                                                                           \
            v[i] = vi;                                                                           \
            param[i] = p - step_size * (mi / (SQRT(vi) * isb + eps));                           \
        }                                                                                        \
    }

FNN_DEFINE_OPTIM(float, f32, sqrtf)
FNN_DEFINE_OPTIM(double, f64, sqrt)

/* ------------------------------------------------------------------------ */
/* Small matrix multiply. For the layer sizes of small networks (a few       */
/* hundred thousand multiply-adds) a BLAS call costs more in dispatch,       */
/* packing and thread decisions than the arithmetic; this register-blocked   */
/* kernel (a tile of C held in registers, one broadcast of A per row and     */
/* step of k, one vector load of B per vector column) runs several times     */
/* faster there. Larger products go to BLAS or the packed GEMM (the caller   */
/* decides, see _blas.pxi). Written with GCC/Clang vector extensions, which  */
/* every target_clones variant lowers to its own vector width; other         */
/* compilers always use BLAS (FNN_HAVE_SMALL_GEMM 0).                        */
/*                                                                          */
/* Row-major C(m, n) = op(A)(m, k) op(B)(k, n); op(A)(i, p) = a[i sai + p sap]*/
/* covers both layouts of A; op(B) must be row-major (k, n): a transposed B */
/* (a dense layer's x·Wᵀ) is packed first, by in-register block transposes. */

#if defined(__GNUC__) || defined(__clang__)
#define FNN_HAVE_SMALL_GEMM 1

/* Tile height: 8 rows x 2 vectors (16 accumulators, plus two B vectors and the
 * broadcasts) only fits, and hides the FMA latency, with AVX-512's 32 vector
 * registers (fnn_cpu_wide_regs); elsewhere 4 x 2 is the tile. */

/* Scratch for packed B and padded C, kept per thread and grown on demand: a
 * malloc/free pair per call is a measurable part of a 2-microsecond product.
 * Requests above the cap are allocated per call (returned with *owned = 1). */
#define FNN_SMALL_SCRATCH_CAP ((size_t)1 << 22)
static __thread void *fnn_small_scratch;
static __thread size_t fnn_small_scratch_cap;

FNN_UNUSED static void *fnn_small_buffer(size_t bytes, int *owned)
{
    *owned = 0;
    if (bytes > FNN_SMALL_SCRATCH_CAP) {
        *owned = 1;
        return malloc(bytes);
    }
    if (bytes > fnn_small_scratch_cap) {
        void *p = NULL;
        size_t want = bytes < 65536 ? 65536 : bytes;
        if (posix_memalign(&p, 64, want) != 0)
            return NULL;
        free(fnn_small_scratch);
        fnn_small_scratch = p;
        fnn_small_scratch_cap = want;
    }
    return fnn_small_scratch;
}

/* In-register transpose of a LANES x LANES block (GCC's __builtin_shuffle; one
 * two-source permute per row and stage on AVX-512). Stage s swaps the s x s
 * off-diagonal blocks of every 2s x 2s block: row i (bit s clear) takes row
 * i+s's low lanes into its high half, row i+s takes row i's high lanes. */
#if defined(__GNUC__) && !defined(__clang__)
#define FNN_HAVE_BLOCK_TRANSPOSE 1
#define FNN_TLO(N, s, l) (((l) & (s)) ? (N) + (l) - (s) : (l))
#define FNN_THI(N, s, l) (((l) & (s)) ? (N) + (l) : (l) + (s))
#define FNN_TMASK8(F, N, s) F(N, s, 0), F(N, s, 1), F(N, s, 2), F(N, s, 3), F(N, s, 4), F(N, s, 5), \
                            F(N, s, 6), F(N, s, 7)
#define FNN_TMASK16(F, N, s) FNN_TMASK8(F, N, s), F(N, s, 8), F(N, s, 9), F(N, s, 10), F(N, s, 11), \
                             F(N, s, 12), F(N, s, 13), F(N, s, 14), F(N, s, 15)
#define FNN_TSTAGE(IV, MASK, N, s, r)                                                           \
    do {                                                                                        \
        const IV lo = {MASK(FNN_TLO, N, s)}, hi = {MASK(FNN_THI, N, s)};                        \
        _Pragma("GCC unroll 16")                                                                \
        for (int i_ = 0; i_ < (N); i_++) {                                                      \
            if ((s) >= (N) || (i_ & (s))) continue;                                             \
            __typeof__(r[0]) x_ = r[i_], y_ = r[i_ + (s)];                                      \
            r[i_] = __builtin_shuffle(x_, y_, lo);                                              \
            r[i_ + (s)] = __builtin_shuffle(x_, y_, hi);                                        \
        }                                                                                       \
    } while (0)
#else
#define FNN_HAVE_BLOCK_TRANSPOSE 0
#endif

/* The last (< LANES) columns of a small product on AVX-512, with masked loads
 * and stores: B is read in place (no lane past column n of its last row is
 * touched) and C written directly, so a narrow output (a 10-class layer)
 * needs neither a zero-padded copy of B nor a padded C copied back, which
 * took half of a 32x64x10 product. C(:, 0:nt) = A'(m, k) B(k, 0:nt). */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#include <immintrin.h>
#define FNN_HAVE_AVX512_TAIL 1
#define FNN_DEFINE_AVX512_TAIL(T, SUF, VT, MT, LOAD, STORE, FMA, SET1, ZERO)                     \
    __attribute__((target("avx512f"))) FNN_UNUSED static void fnn_gemm_small_tail_##SUF(        \
        fnn_idx m, fnn_idx nt, fnn_idx k, const T *a, fnn_idx sai, fnn_idx sap, const T *b,      \
        fnn_idx ldb, T *c, fnn_idx ldc)                                                          \
    {                                                                                            \
        const MT mask = (MT)((1u << nt) - 1);                                                    \
        fnn_idx i0 = 0;                                                                          \
        for (; i0 + 8 <= m; i0 += 8) { /* 8 chains hide the FMA latency */                      \
            const T *ap = a + i0 * sai;                                                          \
            VT c0 = ZERO(), c1 = ZERO(), c2 = ZERO(), c3 = ZERO();                               \
            VT c4 = ZERO(), c5 = ZERO(), c6 = ZERO(), c7 = ZERO();                               \
            for (fnn_idx p = 0; p < k; p++) {                                                    \
                const VT bv = LOAD(mask, b + p * ldb);                                           \
                const T *aq = ap + p * sap;                                                      \
                c0 = FMA(SET1(aq[0]), bv, c0); c1 = FMA(SET1(aq[sai]), bv, c1);                  \
                c2 = FMA(SET1(aq[2 * sai]), bv, c2); c3 = FMA(SET1(aq[3 * sai]), bv, c3);        \
                c4 = FMA(SET1(aq[4 * sai]), bv, c4); c5 = FMA(SET1(aq[5 * sai]), bv, c5);        \
                c6 = FMA(SET1(aq[6 * sai]), bv, c6); c7 = FMA(SET1(aq[7 * sai]), bv, c7);        \
            }                                                                                    \
            T *cr = c + i0 * ldc;                                                                \
            STORE(cr, mask, c0); STORE(cr + ldc, mask, c1);                                      \
            STORE(cr + 2 * ldc, mask, c2); STORE(cr + 3 * ldc, mask, c3);                        \
            STORE(cr + 4 * ldc, mask, c4); STORE(cr + 5 * ldc, mask, c5);                        \
            STORE(cr + 6 * ldc, mask, c6); STORE(cr + 7 * ldc, mask, c7);                        \
        }                                                                                        \
        for (; i0 + 4 <= m; i0 += 4) {                                                           \
            const T *ap = a + i0 * sai;                                                          \
            VT c0 = ZERO(), c1 = ZERO(), c2 = ZERO(), c3 = ZERO();                               \
            for (fnn_idx p = 0; p < k; p++) {                                                    \
                const VT bv = LOAD(mask, b + p * ldb);                                           \
                const T *aq = ap + p * sap;                                                      \
                c0 = FMA(SET1(aq[0]), bv, c0); c1 = FMA(SET1(aq[sai]), bv, c1);                  \
                c2 = FMA(SET1(aq[2 * sai]), bv, c2); c3 = FMA(SET1(aq[3 * sai]), bv, c3);        \
            }                                                                                    \
            T *cr = c + i0 * ldc;                                                                \
            STORE(cr, mask, c0); STORE(cr + ldc, mask, c1);                                      \
            STORE(cr + 2 * ldc, mask, c2); STORE(cr + 3 * ldc, mask, c3);                        \
        }                                                                                        \
        for (; i0 < m; i0++) { /* two chains over even and odd k */                              \
            const T *ap = a + i0 * sai;                                                          \
            VT c0 = ZERO(), c1 = ZERO();                                                         \
            fnn_idx p = 0;                                                                       \
            for (; p + 2 <= k; p += 2) {                                                         \
                c0 = FMA(SET1(ap[p * sap]), LOAD(mask, b + p * ldb), c0);                        \
                c1 = FMA(SET1(ap[(p + 1) * sap]), LOAD(mask, b + (p + 1) * ldb), c1);            \
            }                                                                                    \
            if (p < k) c0 = FMA(SET1(ap[p * sap]), LOAD(mask, b + p * ldb), c0);                 \
            STORE(c + i0 * ldc, mask, c0 + c1);                                                  \
        }                                                                                        \
    }
FNN_DEFINE_AVX512_TAIL(float, f32, __m512, __mmask16, _mm512_maskz_loadu_ps, _mm512_mask_storeu_ps,
                       _mm512_fmadd_ps, _mm512_set1_ps, _mm512_setzero_ps)
FNN_DEFINE_AVX512_TAIL(double, f64, __m512d, __mmask8, _mm512_maskz_loadu_pd, _mm512_mask_storeu_pd,
                       _mm512_fmadd_pd, _mm512_set1_pd, _mm512_setzero_pd)
#define FNN_SMALL_TAIL_f32 fnn_gemm_small_tail_f32
#define FNN_SMALL_TAIL_f64 fnn_gemm_small_tail_f64
#else
#define FNN_HAVE_AVX512_TAIL 0
#define FNN_SMALL_TAIL_f32(...) ((void)0)
#define FNN_SMALL_TAIL_f64(...) ((void)0)
#endif

#define FNN_DEFINE_SMALL_GEMM(T, SUF, LANES)                                                     \
    typedef T fnn_vec_##SUF __attribute__((vector_size(LANES * sizeof(T))));                   \
    /* C(m, n) = A'(m, k) B(k, n), n a multiple of LANES, B and C with row strides ldb, ldc */ \
    FNN_CLONES FNN_UNUSED static void fnn_gemm_small_kernel_##SUF(                               \
        fnn_idx m, fnn_idx n, fnn_idx k, const T *a, fnn_idx sai, fnn_idx sap, const T *b,       \
        fnn_idx ldb, T *c, fnn_idx ldc)                                                          \
    {                                                                                            \
        typedef fnn_vec_##SUF V;                                                                 \
        const size_t VB = sizeof(V);                                                             \
        fnn_idx i0 = 0;                                                                          \
        if (fnn_cpu_wide_regs()) {                                                               \
            for (; i0 + 8 <= m; i0 += 8) {                                                       \
                const T *ap = a + i0 * sai;                                                      \
                fnn_idx j0 = 0;                                                                  \
                for (; j0 + 2 * LANES <= n; j0 += 2 * LANES) {                                   \
                    V c00 = {0}, c01 = {0}, c10 = {0}, c11 = {0}, c20 = {0}, c21 = {0};          \
                    V c30 = {0}, c31 = {0}, c40 = {0}, c41 = {0}, c50 = {0}, c51 = {0};          \
                    V c60 = {0}, c61 = {0}, c70 = {0}, c71 = {0};                                \
                    for (fnn_idx p = 0; p < k; p++) {                                            \
                        V b0, b1;                                                                \
                        memcpy(&b0, b + p * ldb + j0, VB);                                       \
                        memcpy(&b1, b + p * ldb + j0 + LANES, VB);                               \
                        const T *aq = ap + p * sap;                                              \
                        T x;                                                                     \
                        x = aq[0];       c00 += x * b0; c01 += x * b1;                           \
                        x = aq[sai];     c10 += x * b0; c11 += x * b1;                           \
                        x = aq[2 * sai]; c20 += x * b0; c21 += x * b1;                           \
                        x = aq[3 * sai]; c30 += x * b0; c31 += x * b1;                           \
                        x = aq[4 * sai]; c40 += x * b0; c41 += x * b1;                           \
                        x = aq[5 * sai]; c50 += x * b0; c51 += x * b1;                           \
                        x = aq[6 * sai]; c60 += x * b0; c61 += x * b1;                           \
                        x = aq[7 * sai]; c70 += x * b0; c71 += x * b1;                           \
                    }                                                                            \
                    T *cr = c + i0 * ldc + j0;                                                   \
                    memcpy(cr, &c00, VB); memcpy(cr + LANES, &c01, VB); cr += ldc;               \
                    memcpy(cr, &c10, VB); memcpy(cr + LANES, &c11, VB); cr += ldc;               \
                    memcpy(cr, &c20, VB); memcpy(cr + LANES, &c21, VB); cr += ldc;               \
                    memcpy(cr, &c30, VB); memcpy(cr + LANES, &c31, VB); cr += ldc;               \
                    memcpy(cr, &c40, VB); memcpy(cr + LANES, &c41, VB); cr += ldc;               \
                    memcpy(cr, &c50, VB); memcpy(cr + LANES, &c51, VB); cr += ldc;               \
                    memcpy(cr, &c60, VB); memcpy(cr + LANES, &c61, VB); cr += ldc;               \
                    memcpy(cr, &c70, VB); memcpy(cr + LANES, &c71, VB);                          \
                }                                                                                \
                if (j0 < n) { /* one vector of columns left: 8 chains hide the FMA latency */   \
                    V c0 = {0}, c1 = {0}, c2 = {0}, c3 = {0}, c4 = {0}, c5 = {0}, c6 = {0};      \
                    V c7 = {0};                                                                  \
                    for (fnn_idx p = 0; p < k; p++) {                                            \
                        V b0;                                                                    \
                        memcpy(&b0, b + p * ldb + j0, VB);                                       \
                        const T *aq = ap + p * sap;                                              \
                        c0 += aq[0] * b0; c1 += aq[sai] * b0;                                    \
                        c2 += aq[2 * sai] * b0; c3 += aq[3 * sai] * b0;                          \
                        c4 += aq[4 * sai] * b0; c5 += aq[5 * sai] * b0;                          \
                        c6 += aq[6 * sai] * b0; c7 += aq[7 * sai] * b0;                          \
                    }                                                                            \
                    T *cr = c + i0 * ldc + j0;                                                   \
                    memcpy(cr, &c0, VB); memcpy(cr + ldc, &c1, VB);                              \
                    memcpy(cr + 2 * ldc, &c2, VB); memcpy(cr + 3 * ldc, &c3, VB);                \
                    memcpy(cr + 4 * ldc, &c4, VB); memcpy(cr + 5 * ldc, &c5, VB);                \
                    memcpy(cr + 6 * ldc, &c6, VB); memcpy(cr + 7 * ldc, &c7, VB);                \
                }                                                                                \
            }                                                                                    \
        }                                                                                        \
        for (; i0 + 4 <= m; i0 += 4) {                                                           \
            const T *ap = a + i0 * sai;                                                          \
            fnn_idx j0 = 0;                                                                      \
            for (; j0 + 2 * LANES <= n; j0 += 2 * LANES) {                                       \
                V c00 = {0}, c01 = {0}, c10 = {0}, c11 = {0}, c20 = {0}, c21 = {0}, c30 = {0},   \
                  c31 = {0};                                                                     \
                for (fnn_idx p = 0; p < k; p++) {                                                \
                    V b0, b1;                                                                    \
                    memcpy(&b0, b + p * ldb + j0, VB);                                           \
                    memcpy(&b1, b + p * ldb + j0 + LANES, VB);                                   \
                    const T *aq = ap + p * sap;                                                  \
                    const T a0 = aq[0], a1 = aq[sai], a2 = aq[2 * sai], a3 = aq[3 * sai];        \
                    c00 += a0 * b0; c01 += a0 * b1;                                              \
                    c10 += a1 * b0; c11 += a1 * b1;                                              \
                    c20 += a2 * b0; c21 += a2 * b1;                                              \
                    c30 += a3 * b0; c31 += a3 * b1;                                              \
                }                                                                                \
                T *cr = c + i0 * ldc + j0;                                                       \
                memcpy(cr, &c00, VB); memcpy(cr + LANES, &c01, VB); cr += ldc;                   \
                memcpy(cr, &c10, VB); memcpy(cr + LANES, &c11, VB); cr += ldc;                   \
                memcpy(cr, &c20, VB); memcpy(cr + LANES, &c21, VB); cr += ldc;                   \
                memcpy(cr, &c30, VB); memcpy(cr + LANES, &c31, VB);                              \
            }                                                                                    \
            if (j0 < n) { /* one vector of columns left */                                       \
                V c0 = {0}, c1 = {0}, c2 = {0}, c3 = {0};                                        \
                for (fnn_idx p = 0; p < k; p++) {                                                \
                    V b0;                                                                        \
                    memcpy(&b0, b + p * ldb + j0, VB);                                           \
                    const T *aq = ap + p * sap;                                                  \
                    c0 += aq[0] * b0; c1 += aq[sai] * b0;                                        \
                    c2 += aq[2 * sai] * b0; c3 += aq[3 * sai] * b0;                              \
                }                                                                                \
                T *cr = c + i0 * ldc + j0;                                                       \
                memcpy(cr, &c0, VB); memcpy(cr + ldc, &c1, VB);                                  \
                memcpy(cr + 2 * ldc, &c2, VB); memcpy(cr + 3 * ldc, &c3, VB);                    \
            }                                                                                    \
        }                                                                                        \
        for (; i0 < m; i0++) { /* leftover rows, one at a time, 4 independent vectors */         \
            const T *ap = a + i0 * sai;                                                          \
            fnn_idx j0 = 0;                                                                      \
            for (; j0 + 4 * LANES <= n; j0 += 4 * LANES) {                                       \
                V c0 = {0}, c1 = {0}, c2 = {0}, c3 = {0};                                        \
                for (fnn_idx p = 0; p < k; p++) {                                                \
                    V b0, b1, b2, b3;                                                            \
                    const T *bp = b + p * ldb + j0;                                              \
                    memcpy(&b0, bp, VB); memcpy(&b1, bp + LANES, VB);                            \
                    memcpy(&b2, bp + 2 * LANES, VB); memcpy(&b3, bp + 3 * LANES, VB);            \
                    const T av = ap[p * sap];                                                    \
                    c0 += av * b0; c1 += av * b1; c2 += av * b2; c3 += av * b3;                  \
                }                                                                                \
                T *cr = c + i0 * ldc + j0;                                                       \
                memcpy(cr, &c0, VB); memcpy(cr + LANES, &c1, VB);                                \
                memcpy(cr + 2 * LANES, &c2, VB); memcpy(cr + 3 * LANES, &c3, VB);                \
            }                                                                                    \
            for (; j0 < n; j0 += LANES) {                                                        \
                V c0 = {0};                                                                      \
                for (fnn_idx p = 0; p < k; p++) {                                                \
                    V b0;                                                                        \
                    memcpy(&b0, b + p * ldb + j0, VB);                                           \
                    c0 += ap[p * sap] * b0;                                                      \
                }                                                                                \
                memcpy(c + i0 * ldc + j0, &c0, VB);                                              \
            }                                                                                    \
        }                                                                                        \
    }                                                                                            \
    /* bp (k, ldp) = bᵀ zero-padded to ldp >= n columns, b (n, k) row-major: whole           */ \
    /* LANES x LANES blocks by in-register transposes, the edges element by element.        */ \
    FNN_CLONES FNN_UNUSED static void fnn_pack_bt_##SUF(fnn_idx n, fnn_idx k, const T *b, T *bp,  \
                                                         fnn_idx ldp)                            \
    {                                                                                            \
        fnn_idx j0 = 0;                                                                          \
        FNN_SMALL_TRANSPOSE_BLOCKS_##SUF                                                         \
        for (fnn_idx p = 0; p < k; p++) {                                                        \
            T *row = bp + p * ldp;                                                               \
            for (fnn_idx j = j0; j < n; j++) row[j] = b[j * k + p];                              \
            for (fnn_idx j = n; j < ldp; j++) row[j] = 0;                                        \
        }                                                                                        \
    }                                                                                            \
    /* C(i, j) = dot(a[i, :], b[j, :]), a (m, k) and b (n, k) row-major */                      \
    FNN_CLONES FNN_UNUSED static void fnn_gemm_dots_##SUF(fnn_idx m, fnn_idx n, fnn_idx k,       \
                                                          const T *a, const T *b, T *c)          \
    {                                                                                            \
        for (fnn_idx i = 0; i < m; i++) {                                                        \
            const T *FNN_RESTRICT ar = a + i * k;                                                \
            for (fnn_idx j = 0; j < n; j++) {                                                    \
                const T *FNN_RESTRICT br = b + j * k;                                            \
                T s = 0;                                                                         \
                FNN_SIMD_REDUCTION(+ : s)                                                        \
                for (fnn_idx p = 0; p < k; p++) s += ar[p] * br[p];                              \
                c[i * n + j] = s;                                                                \
            }                                                                                    \
        }                                                                                        \
    }                                                                                            \
    /* Returns 0 when done, -1 when out of memory for the padded copies (use BLAS). */          \
    FNN_UNUSED static int fnn_gemm_small_##SUF(int trans_a, int trans_b, fnn_idx m, fnn_idx n,   \
                                               fnn_idx k, const T *a, const T *b, T *c)          \
    {                                                                                            \
        const fnn_idx sai = trans_a ? 1 : k, sap = trans_a ? m : 1;                              \
        const fnn_idx np = (n + LANES - 1) / LANES * LANES;                                      \
        const int pack_b = trans_b || np != n, tmp_c = np != n;                                  \
        int owned;                                                                               \
        if (!pack_b) {                                                                           \
            fnn_gemm_small_kernel_##SUF(m, n, k, a, sai, sap, b, n, c, n);                       \
            return 0;                                                                            \
        }                                                                                        \
        if (!trans_a && (n == 1 || (trans_b && m < 4))) {                                         \
            /* few rows times Bᵀ, or one column (a (k, 1) B is one contiguous row either way): */ \
            /* rows of A and B are contiguous in k, so dot products cost less than padding B   */ \
            fnn_gemm_dots_##SUF(m, n, k, a, b, c);                                               \
            return 0;                                                                            \
        }                                                                                        \
        if (FNN_HAVE_AVX512_TAIL && tmp_c && fnn_cpu_wide_regs()) {                              \
            /* whole vectors of columns by the kernel, the rest by the masked tail, C in place */ \
            const fnn_idx nw = n / LANES * LANES;                                                \
            const T *bw = b;                                                                     \
            fnn_idx ldbw = n;                                                                    \
            if (trans_b) {                                                                       \
                bw = (const T *)fnn_small_buffer((size_t)k * (size_t)np * sizeof(T), &owned);    \
                if (bw == NULL) return -1;                                                       \
                fnn_pack_bt_##SUF(n, k, b, (T *)bw, np);                                         \
                ldbw = np;                                                                       \
            }                                                                                    \
            if (nw) fnn_gemm_small_kernel_##SUF(m, nw, k, a, sai, sap, bw, ldbw, c, n);          \
            FNN_SMALL_TAIL_##SUF(m, n - nw, k, a, sai, sap, bw + nw, ldbw, c + nw, n);          \
            if (trans_b && owned) free((void *)bw);                                              \
            return 0;                                                                            \
        }                                                                                        \
        /* B as row-major (k, np), zero-padded; C into (m, np) scratch if padded */             \
        T *buf = (T *)fnn_small_buffer(((size_t)k + (tmp_c ? (size_t)m : 0)) * (size_t)np        \
                                       * sizeof(T), &owned);                                     \
        if (buf == NULL) return -1;                                                              \
        T *bp = buf, *cp = tmp_c ? buf + (size_t)k * np : c;                                     \
        if (trans_b) {                                                                           \
            fnn_pack_bt_##SUF(n, k, b, bp, np);                                                  \
        } else {                                                                                 \
            for (fnn_idx p = 0; p < k; p++) { /* (element loops: a memcpy call per row of  */ \
                T *row = bp + p * np;               /* 10 floats cost more than the copy)      */ \
                const T *src = b + p * n;                                                        \
                for (fnn_idx j = 0; j < n; j++) row[j] = src[j];                                 \
                for (fnn_idx j = n; j < np; j++) row[j] = 0;                                     \
            }                                                                                    \
        }                                                                                        \
        fnn_gemm_small_kernel_##SUF(m, np, k, a, sai, sap, bp, np, cp, np);                      \
        if (tmp_c)                                                                               \
            for (fnn_idx i = 0; i < m; i++)                                                      \
                for (fnn_idx j = 0; j < n; j++) c[i * n + j] = cp[i * np + j];                   \
        if (owned) free(buf);                                                                    \
        return 0;                                                                                \
    }

/* The block-transpose part of fnn_pack_bt_* (advances j0 past the whole blocks). */
#if FNN_HAVE_BLOCK_TRANSPOSE
#define FNN_SMALL_TRANSPOSE_BLOCKS(V, IV, LANES, MASK)                                           \
    for (; j0 + LANES <= n; j0 += LANES) {                                                       \
        fnn_idx p0 = 0;                                                                          \
        for (; p0 + LANES <= k; p0 += LANES) {                                                   \
            V r[LANES];                                                                          \
            _Pragma("GCC unroll 16")                                                             \
            for (int q = 0; q < LANES; q++) memcpy(&r[q], b + (j0 + q) * k + p0, sizeof(V));     \
            FNN_TSTAGE(IV, MASK, LANES, 8, r);                                                   \
            FNN_TSTAGE(IV, MASK, LANES, 4, r);                                                   \
            FNN_TSTAGE(IV, MASK, LANES, 2, r);                                                   \
            FNN_TSTAGE(IV, MASK, LANES, 1, r);                                                   \
            _Pragma("GCC unroll 16")                                                             \
            for (int q = 0; q < LANES; q++) memcpy(bp + (p0 + q) * ldp + j0, &r[q], sizeof(V));  \
        }                                                                                        \
        for (; p0 < k; p0++)                                                                     \
            for (fnn_idx q = 0; q < LANES; q++) bp[p0 * ldp + j0 + q] = b[(j0 + q) * k + p0];    \
    }
typedef int32_t fnn_ivec_f32 __attribute__((vector_size(64)));
typedef int64_t fnn_ivec_f64 __attribute__((vector_size(64)));
#define FNN_SMALL_TRANSPOSE_BLOCKS_f32 FNN_SMALL_TRANSPOSE_BLOCKS(fnn_vec_f32, fnn_ivec_f32, 16, FNN_TMASK16)
#define FNN_SMALL_TRANSPOSE_BLOCKS_f64 FNN_SMALL_TRANSPOSE_BLOCKS(fnn_vec_f64, fnn_ivec_f64, 8, FNN_TMASK8)
#else
#define FNN_SMALL_TRANSPOSE_BLOCKS_f32
#define FNN_SMALL_TRANSPOSE_BLOCKS_f64
#endif

FNN_DEFINE_SMALL_GEMM(float, f32, 16)
FNN_DEFINE_SMALL_GEMM(double, f64, 8)

#else
#define FNN_HAVE_SMALL_GEMM 0
static int fnn_gemm_small_f32(int ta, int tb, fnn_idx m, fnn_idx n, fnn_idx k, const float *a,
                              const float *b, float *c) { return -1; }
static int fnn_gemm_small_f64(int ta, int tb, fnn_idx m, fnn_idx n, fnn_idx k, const double *a,
                              const double *b, double *c) { return -1; }
#endif

#endif /* FASTNN_FASTMATH_H */
