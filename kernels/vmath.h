/* Vector maths: exp, expm1, sigmoid and tanh for float32 and float64, the one
 * implementation every kernel uses (activations, losses, GEMM epilogues,
 * recurrent cells), so that the same input rounds the same way everywhere.
 *
 * Scalar, branch-free inline functions: loops over them auto-vectorise at the
 * width of the translation unit's ISA (libm's scalar calls would stop that,
 * and no -ffast-math is used). Range reduction x = n ln2 + r, |r| <= ln2/2,
 * a Taylor polynomial for expm1(r) and 2^n built in the exponent bits; n is
 * rounded with the 1.5*2^p trick, so NaN gives NaN and nothing undefined.
 * Accuracy: a few ulp (float32 ~2e-7, float64 ~1e-15 relative). NaN
 * propagates: comparisons are written so that NaN takes the value branch.
 */
#ifndef FNN_VMATH_H
#define FNN_VMATH_H

#include "isa.h"

/* ---- float32 ---- */

/* P(r) with expm1(r) = r + r^2 P(r): Taylor series to r^7 (truncation < 2e-8). */
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

/* min(a, c) that keeps a NaN a (one vminps: c < a ? c : a). */
FNN_INLINE float fnn_min_keepnan_f32(float a, float c) { return c < a ? c : a; }

/* 2^n as a float from t = x/ln2 + 1.5*2^23 (n = t - magic, in the low bits). */
FNN_INLINE float fnn_pow2_f32(float t, int32_t bias)
{
    uint32_t ti;
    memcpy(&ti, &t, sizeof ti);
    uint32_t ei = (ti - 0x4B400000u + (uint32_t)bias) << 23;
    float s;
    memcpy(&s, &ei, sizeof s);
    return s;
}

/* exp(x) for x <= 0 (softmax after subtracting the row max), clamped at
 * -87.33 so that the result stays a normal float. */
FNN_INLINE float fnn_exp_softmax_f32(float x)
{
    x = -fnn_min_keepnan_f32(-x, 87.33f);
    const float magic = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
    float t = x * 1.44269504088896341f + magic;
    float n = t - magic;
    float r = x - n * 0.693359375f;
    r = r + n * 2.12194440e-4f;
    float p = fnn_expm1_poly_f32(r) * (r * r) + r + 1.0f;
    return p * fnn_pow2_f32(t, 127);
}

/* exp(x) for x in [-104, 0], exact down into the denormals: 2^n (n down to
 * -150) is applied as two normal factors 2^(n/2) 2^(n - n/2). */
FNN_INLINE float fnn_exp_neg_f32(float x)
{
    const float magic = 12582912.0f;
    float t = x * 1.44269504088896341f + magic;
    float n = t - magic;
    float r = x - n * 0.693359375f;
    r = r + n * 2.12194440e-4f;
    float p = fnn_expm1_poly_f32(r) * (r * r) + r + 1.0f;
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
FNN_INLINE float fnn_sigmoid_f32(float x)
{
    float e = fnn_exp_neg_f32(-fnn_min_keepnan_f32(fabsf(x), 104.0f));
    float num = x >= 0.0f ? 1.0f : e; /* NaN: picks e, which is NaN */
    return num / (1.0f + e);
}

/* expm1(x) for x in [-18, 0], accurate relative to the result near 0:
 * expm1(x) = 2^n expm1(r) + (2^n - 1). */
FNN_INLINE float fnn_expm1_neg_f32(float x)
{
    const float magic = 12582912.0f;
    float t = x * 1.44269504088896341f + magic;
    float n = t - magic;
    float r = x - n * 0.693359375f;
    r = r + n * 2.12194440e-4f;
    float em = r + (r * r) * fnn_expm1_poly_f32(r);
    float s = fnn_pow2_f32(t, 127);
    return s * em + (s - 1.0f);
}

/* tanh(|x|) = -u / (2 + u) with u = expm1(-2|x|), sign restored: accurate
 * near 0, saturating to +-1 (2|x| is clamped at 18, where tanh rounds to 1). */
FNN_INLINE float fnn_tanh_f32(float x)
{
    float u = fnn_expm1_neg_f32(-fnn_min_keepnan_f32(2.0f * fabsf(x), 18.0f));
    return copysignf(-u / (2.0f + u), x);
}

/* ---- float64: the same scheme with a degree-13 polynomial (truncation < 1e-17) ---- */

FNN_INLINE double fnn_min_keepnan_f64(double a, double c) { return c < a ? c : a; }

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

/* r = x - n ln2 with n = round(x / ln2), for the two functions below. */
#define FNN_REDUCE_F64(x, t, r)                                     \
    const double magic_ = 6755399441055744.0; /* 1.5*2^52 */        \
    double t = (x) * 1.4426950408889634074 + magic_;                 \
    double n_ = t - magic_;                                          \
    double r = (x) - n_ * 6.93147180369123816490e-01;                \
    r = r - n_ * 1.90821492927058770002e-10;

/* exp(x) for x in [-746, 0], exact into the denormals (2^n as two factors). */
FNN_INLINE double fnn_exp_neg_f64(double x)
{
    FNN_REDUCE_F64(x, t, r)
    double e = 1.0 + (r + (r * r) * fnn_expm1_poly_f64(r));
    uint64_t ti;
    memcpy(&ti, &t, sizeof ti);
    int64_t ni = (int64_t)(ti - 0x4338000000000000ull);
    int64_t n1 = ni >> 1;
    uint64_t e1 = (uint64_t)(n1 + 1023) << 52, e2 = (uint64_t)(ni - n1 + 1023) << 52;
    double s1, s2;
    memcpy(&s1, &e1, sizeof s1);
    memcpy(&s2, &e2, sizeof s2);
    return (e * s1) * s2;
}

/* exp(x) for x <= 0 (softmax after subtracting the row max); NaN passes. */
FNN_INLINE double fnn_exp_softmax_f64(double x)
{
    return fnn_exp_neg_f64(-fnn_min_keepnan_f64(-x, 746.0));
}

/* expm1(x) for x in [-40, 0]: 2^n expm1(r) + (2^n - 1). */
FNN_INLINE double fnn_expm1_neg_f64(double x)
{
    FNN_REDUCE_F64(x, t, r)
    double em = r + (r * r) * fnn_expm1_poly_f64(r);
    uint64_t ti;
    memcpy(&ti, &t, sizeof ti);
    uint64_t ei = (ti - 0x4338000000000000ull + 1023u) << 52;
    double sc;
    memcpy(&sc, &ei, sizeof sc);
    return sc * em + (sc - 1.0);
}

FNN_INLINE double fnn_sigmoid_f64(double x)
{
    double e = fnn_exp_neg_f64(-fnn_min_keepnan_f64(fabs(x), 746.0));
    double num = x >= 0.0 ? 1.0 : e;
    return num / (1.0 + e);
}

/* tanh(|x|) = -u / (2 + u), u = expm1(-2|x|); beyond |x| = 20 it rounds to 1. */
FNN_INLINE double fnn_tanh_f64(double x)
{
    double u = fnn_expm1_neg_f64(-fnn_min_keepnan_f64(2.0 * fabs(x), 40.0));
    return copysign(-u / (2.0 + u), x);
}

#endif /* FNN_VMATH_H */
