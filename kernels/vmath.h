/* Vector maths, for one dtype: exp, expm1, sigmoid and tanh, the one
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
 * Included by body.h once per dtype, before the families.
 */

#if FNN_IS_F32
#define FNN_VM_INT int32_t
#define FNN_VM_MANT 23                  /* mantissa bits */
#define FNN_VM_BIAS 127                 /* exponent bias */
#define FNN_VM_MAGIC 12582912.0f        /* 1.5*2^23: adding it rounds to an integer */
#define FNN_VM_MAGIC_BITS 0x4B400000u
#define FNN_VM_LOG2E 1.44269504088896341f
#define FNN_VM_LN2_HI 0.693359375f      /* Cody-Waite split of ln2 */
#define FNN_VM_LN2_LO (-2.12194440e-4f)
#define FNN_VM_DEG 7                    /* Taylor degree: truncation < 2e-8 */
#define FNN_VM_EXP_MIN 104.0f           /* exp(-104) is below the smallest denormal */
#define FNN_VM_SOFTMAX_MIN 87.33f       /* softmax's exp stays a normal float */
#define FNN_VM_TANH_MAX 18.0f           /* tanh(9) rounds to 1 */
#else
#define FNN_VM_INT int64_t
#define FNN_VM_MANT 52
#define FNN_VM_BIAS 1023
#define FNN_VM_MAGIC 6755399441055744.0 /* 1.5*2^52 */
#define FNN_VM_MAGIC_BITS 0x4338000000000000ull
#define FNN_VM_LOG2E 1.4426950408889634074
#define FNN_VM_LN2_HI 6.93147180369123816490e-01
#define FNN_VM_LN2_LO 1.90821492927058770002e-10
#define FNN_VM_DEG 13                   /* truncation < 1e-17 */
#define FNN_VM_EXP_MIN 746.0
#define FNN_VM_SOFTMAX_MIN 746.0
#define FNN_VM_TANH_MAX 40.0            /* tanh(20) rounds to 1 */
#endif

#ifndef FNN_INV_FACT
#define FNN_INV_FACT
/* 1/d! for the polynomial below (double quotients: each rounds to the float one). */
static const double fnn_inv_fact[14] = {
    1.0, 1.0, 0.5, 1.0 / 6.0, 1.0 / 24.0, 1.0 / 120.0, 1.0 / 720.0, 1.0 / 5040.0, 1.0 / 40320.0, 1.0 / 362880.0,
    1.0 / 3628800.0, 1.0 / 39916800.0, 1.0 / 479001600.0, 1.0 / 6227020800.0,
};
#endif

/* P(r) with expm1(r) = r + r^2 P(r): the Taylor series to r^DEG, Horner's rule. */
FNN_INLINE FNN_T FN(fnn_expm1_poly)(FNN_T r)
{
    FNN_T p = (FNN_T)fnn_inv_fact[FNN_VM_DEG];
#pragma GCC unroll 16
    for (int d = FNN_VM_DEG - 1; d >= 2; d--)
        p = p * r + (FNN_T)fnn_inv_fact[d];
    return p;
}

/* min(a, c) that keeps a NaN a (one vminps: c < a ? c : a). */
FNN_INLINE FNN_T FN(fnn_min_keepnan)(FNN_T a, FNN_T c) { return c < a ? c : a; }

/* r = x - n ln2 with n = round(x / ln2); *t holds n + MAGIC (n in its low bits). */
FNN_INLINE FNN_T FN(fnn_reduce)(FNN_T x, FNN_T *t)
{
    *t = x * FNN_VM_LOG2E + FNN_VM_MAGIC;
    FNN_T n = *t - FNN_VM_MAGIC;
    FNN_T r = x - n * FNN_VM_LN2_HI;
    return r - n * FNN_VM_LN2_LO;
}

/* n from t = n + MAGIC (its low bits). */
FNN_INLINE FNN_VM_INT FN(fnn_round_n)(FNN_T t)
{
    FNN_UINT ti;
    memcpy(&ti, &t, sizeof ti);
    return (FNN_VM_INT)(ti - FNN_VM_MAGIC_BITS);
}

/* 2^k for k in the normal exponent range, built in the exponent bits (unsigned: no overflow for NaN's k). */
FNN_INLINE FNN_T FN(fnn_pow2)(FNN_VM_INT k)
{
    FNN_UINT ei = ((FNN_UINT)k + FNN_VM_BIAS) << FNN_VM_MANT;
    FNN_T s;
    memcpy(&s, &ei, sizeof s);
    return s;
}

/* exp(r) for |r| <= ln2/2. */
FNN_INLINE FNN_T FN(fnn_exp_reduced)(FNN_T r) { return (FNN_T)1 + (r + (r * r) * FN(fnn_expm1_poly)(r)); }

/* exp(x) for x in [-EXP_MIN, 0], exact down into the denormals: 2^n is applied
 * as two normal factors 2^(n/2) 2^(n - n/2). */
FNN_INLINE FNN_T FN(fnn_exp_neg)(FNN_T x)
{
    FNN_T t, r = FN(fnn_reduce)(x, &t);
    FNN_VM_INT n = FN(fnn_round_n)(t), n1 = n >> 1; /* arithmetic shift on every supported compiler */
    return (FN(fnn_exp_reduced)(r) * FN(fnn_pow2)(n1)) * FN(fnn_pow2)(n - n1);
}

/* exp(x) for x <= 0 (softmax after subtracting the row max); NaN passes.
 * float32 stops where the result stays normal: one scale factor in softmax's hot loop. */
FNN_INLINE FNN_T FN(fnn_exp_softmax)(FNN_T x)
{
    x = -FN(fnn_min_keepnan)(-x, FNN_VM_SOFTMAX_MIN);
#if FNN_IS_F32
    FNN_T t, r = FN(fnn_reduce)(x, &t);
    return FN(fnn_exp_reduced)(r) * FN(fnn_pow2)(FN(fnn_round_n)(t));
#else
    return FN(fnn_exp_neg)(x);
#endif
}

/* expm1(x) for x in [-TANH_MAX, 0], accurate relative to the result near 0:
 * expm1(x) = 2^n expm1(r) + (2^n - 1). */
FNN_INLINE FNN_T FN(fnn_expm1_neg)(FNN_T x)
{
    FNN_T t, r = FN(fnn_reduce)(x, &t);
    FNN_T em = r + (r * r) * FN(fnn_expm1_poly)(r);
    FNN_T s = FN(fnn_pow2)(FN(fnn_round_n)(t));
    return s * em + (s - (FNN_T)1);
}

/* sigmoid(x) = 1/(1+e) for x >= 0, e/(1+e) otherwise, e = exp(-|x|) <= 1;
 * exact down to the denormals, 0 for x <= -EXP_MIN and -inf. */
FNN_INLINE FNN_T FN(fnn_sigmoid)(FNN_T x)
{
    FNN_T e = FN(fnn_exp_neg)(-FN(fnn_min_keepnan)(FN(fnn_libm_fabs)(x), FNN_VM_EXP_MIN));
    FNN_T num = x >= 0 ? (FNN_T)1 : e; /* NaN: picks e, which is NaN */
    return num / ((FNN_T)1 + e);
}

/* tanh(|x|) = -u / (2 + u) with u = expm1(-2|x|), sign restored: accurate
 * near 0, saturating to +-1 (2|x| is clamped where tanh rounds to 1). */
FNN_INLINE FNN_T FN(fnn_tanh)(FNN_T x)
{
    FNN_T u = FN(fnn_expm1_neg)(-FN(fnn_min_keepnan)((FNN_T)2 * FN(fnn_libm_fabs)(x), FNN_VM_TANH_MAX));
    return FN(fnn_libm_copysign)(-u / ((FNN_T)2 + u), x);
}

#undef FNN_VM_INT
#undef FNN_VM_MANT
#undef FNN_VM_BIAS
#undef FNN_VM_MAGIC
#undef FNN_VM_MAGIC_BITS
#undef FNN_VM_LOG2E
#undef FNN_VM_LN2_HI
#undef FNN_VM_LN2_LO
#undef FNN_VM_DEG
#undef FNN_VM_EXP_MIN
#undef FNN_VM_SOFTMAX_MIN
#undef FNN_VM_TANH_MAX
