/* Branch-free float32 exp, tanh and sigmoid for the recurrent kernels.
 *
 * Why: glibc's tanhf/expf are scalar calls (~13 ns each here) and the compiler
 * only vectorises them under -ffast-math, which fastnn does not use. These
 * versions are straight-line arithmetic, so GCC vectorises the gate loops at
 * -O3 with the portable flags. Accuracy: a few ulp (exp: Cody-Waite reduction
 * and a degree-6 polynomial); NaN propagates (comparisons with NaN are false,
 * so the clamps keep it and the polynomial carries it through).
 */
#ifndef FASTNN_RNN_MATH_H
#define FASTNN_RNN_MATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

static inline float fnn_expf(float x)
{
    /* Clamp so that 2^n stays a normal float; NaN passes both tests untouched.
     * The clamped ends are put back at the return: exp(-inf) must be exactly 0
     * and exp(+inf) inf, as libm and the other backends give, or sigmoid(-inf)
     * would be 1e-38 and 0·inf, which is NaN elsewhere, a finite product here. */
    const float x0 = x;
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    /* n = round(x / ln 2) with the 1.5*2^23 trick (no rounding-mode call). */
    float t = x * 1.44269504088896341f + 12582912.0f;
    float n = t - 12582912.0f;
    /* r = x - n ln2, ln2 split in two so the product is exact. */
    float r = x - n * 0.693359375f;
    r = r + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23;
    float s;
    memcpy(&s, &bits, sizeof s);
    float y = p * s;
    y = x0 < -87.3f ? 0.0f : y;           /* below the normal range: 0, as the Numba exp */
    return x0 > 88.7f ? INFINITY : y;     /* above the float32 range */
}

static inline float fnn_tanhf(float x)
{
    float ax = fabsf(x);
    float e = fnn_expf(-2.0f * ax);          /* in (0, 1]: no overflow */
    float y = (1.0f - e) / (1.0f + e);
    /* 1 - e cancels for small |x|: use the Taylor series there. */
    float x2 = x * x;
    float s = x * (1.0f + x2 * (-0.333333333f + x2 * (0.133333333f + x2 * -0.0539682540f)));
    y = copysignf(y, x);
    return ax < 0.0625f ? s : y;
}

static inline float fnn_sigmoidf(float x)
{
    return 1.0f / (1.0f + fnn_expf(-x));
}

static inline double fnn_sigmoid(double x)
{
    /* exp(-|x|) never overflows; both branches are exact formulas. */
    double e = exp(-fabs(x));
    return x >= 0 ? 1.0 / (1.0 + e) : e / (1.0 + e);
}

#endif
