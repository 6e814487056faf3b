/* Hot elementwise and row loops of the Cython kernels, in plain C.
 *
 * Why C: the loops below must auto-vectorise, including exp and tanh. libm's
 * scalar expf/tanhf stop GCC from vectorising a loop, so float32 uses
 * branch-free approximations (range reduction + polynomial, about 1 ulp);
 * float64 keeps libm's exp/tanh for 1e-12 accuracy.
 *
 * Why target_clones: the portable build has no AVX, yet the machines it runs
 * on mostly do. GCC compiles each FNN_CLONES function for AVX-512, AVX2 and
 * the baseline and picks one at load time (ifunc). Other compilers, and
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
#include <string.h>

typedef ptrdiff_t fnn_idx;

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) \
    && !defined(__AVX512F__) && !defined(FASTNN_NO_CLONES)
#define FNN_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
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

/* exp(x) for float32 with x already in [-87.33, 88]: Cody-Waite range
 * reduction x = n ln2 + r, |r| <= ln2/2, a degree-7 polynomial (Cephes
 * coefficients, about 1 ulp), and 2^n built in the exponent bits. n is
 * rounded with the 1.5*2^23 trick instead of a float->int conversion, so a
 * NaN argument gives NaN and nothing undefined. */
FNN_INLINE float fnn_exp_core_f32(float x)
{
    const float magic = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
    float t = x * 1.44269504088896341f + magic;
    float n = t - magic;
    float r = x - n * 0.693359375f;
    r = r + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
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
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
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
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    float em = r + (r * r) * p;
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

FNN_INLINE double fnn_exp_f64(double x) { return exp(x); }

FNN_INLINE double fnn_sigmoid_f64_1(double x)
{
    double e = exp(-fabs(x));
    double num = x >= 0.0 ? 1.0 : e;
    return num / (1.0 + e);
}

FNN_INLINE double fnn_tanh_f64_1(double x) { return tanh(x); }

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

#if defined(_OPENMP) || defined(FASTNN_OPENMP_SIMD)
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
        double loss = 0;                                                                        \
        const T sc = (T)scale;                                                                  \
        for (fnn_idx r = 0; r < rows; r++) {                                                    \
            const T *zr = z + r * c;                                                            \
            T *gr = grad + r * c;                                                               \
            fnn_idx lab = labels[r];                                                            \
            T m = fnn_rowmax_##SUF(zr, c);                                                      \
            T s = fnn_expsum_##SUF(zr, gr, c, m);                                               \
            T f = sc / s;                                                                       \
            for (fnn_idx i = 0; i < c; i++) gr[i] *= f;                                         \
            gr[lab] -= sc;                                                                      \
            loss += log((double)s) - (double)(zr[lab] - m);                                     \
        }                                                                                       \
        return loss;                                                                            \
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

#define FNN_DEFINE_OPTIM(T, SUF, SQRT)                                                           \
    FNN_CLONES FNN_UNUSED static void fnn_sgd_##SUF(T *FNN_RESTRICT param, const T *FNN_RESTRICT grad,      \
                                         T *FNN_RESTRICT vel, fnn_idx n, double lr_,            \
                                         double mom_, int nesterov, double wd_)                 \
    {                                                                                            \
        const T lr = (T)lr_, mom = (T)mom_, wd = (T)wd_;                                         \
        if (vel == NULL) {                                                                       \
            for (fnn_idx i = 0; i < n; i++) {                                                    \
                T g = grad[i] + wd * param[i];                                                   \
                param[i] -= lr * g;                                                              \
            }                                                                                    \
        } else if (nesterov) {                                                                   \
            for (fnn_idx i = 0; i < n; i++) {                                                    \
                T g = grad[i] + wd * param[i];                                                   \
                T v = mom * vel[i] + g;                                                          \
                vel[i] = v;                                                                      \
                param[i] -= lr * (g + mom * v);                                                  \
            }                                                                                    \
        } else {                                                                                 \
            for (fnn_idx i = 0; i < n; i++) {                                                    \
                T g = grad[i] + wd * param[i];                                                   \
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
            T g = grad[i] + l2 * p;                                                              \
            T mi = m[i] * b1 + c1 * g;                                                           \
            T vi = v[i] * b2 + c2 * (g * g);                                                     \
            m[i] = mi;                                                                           \
            v[i] = vi;                                                                           \
            param[i] = p - step_size * (mi / (SQRT(vi) * isb + eps));                           \
        }                                                                                        \
    }

FNN_DEFINE_OPTIM(float, f32, sqrtf)
FNN_DEFINE_OPTIM(double, f64, sqrt)

#endif /* FASTNN_FASTMATH_H */
