/* Elementwise, row and update loops, for one dtype (included by body.h with
 * FNN_T and FN() set). Every function takes raw pointers and a length; the
 * Cython glue splits long arrays into chunks for its OpenMP loop. Outputs may
 * alias inputs exactly: those cases take their own loop, so that the
 * restrict-qualified loops stay vectorised. NaN propagates everywhere.
 */

/* ---- activations ---- */

/* act(v) for a compile-time act (after inlining the switch folds away). */
FNN_INLINE FNN_T FN(act1)(int act, FNN_T v, FNN_T prm)
{
    switch (act) {
    case FNN_ACT_RELU: return !(v <= 0) ? v : 0;   /* NaN <= 0 is false: NaN kept */
    case FNN_ACT_LEAKY_RELU: return v * (v < 0 ? prm : 1);
    case FNN_ACT_SIGMOID: return FN(fnn_sigmoid)(v);
    case FNN_ACT_TANH: return FN(fnn_tanh)(v);
    default: return v;
    }
}

/* g * act'(y), from the forward output y. */
FNN_INLINE FNN_T FN(dact1)(int act, FNN_T g, FNN_T y, FNN_T prm)
{
    switch (act) {
    case FNN_ACT_RELU: return g * (y > 0 ? 1 : 0);
    case FNN_ACT_LEAKY_RELU: return g * (y > 0 ? 1 : prm);
    case FNN_ACT_SIGMOID: return g * (y * (1 - y));
    case FNN_ACT_TANH: return g * (1 - y * y);
    default: return g;
    }
}

FNN_INLINE void FN(act_fwd_loop)(int act, const FNN_T *x, const FNN_T *bias, FNN_T *y, fnn_idx n, FNN_T prm)
{
    if (bias == NULL) {
        if (x == y) {
            FNN_T *FNN_RESTRICT p = y;
            for (fnn_idx i = 0; i < n; i++) p[i] = FN(act1)(act, p[i], prm);
        } else {
            const FNN_T *FNN_RESTRICT xi = x;
            FNN_T *FNN_RESTRICT yo = y;
            for (fnn_idx i = 0; i < n; i++) yo[i] = FN(act1)(act, xi[i], prm);
        }
    } else {
        const FNN_T *FNN_RESTRICT b = bias;
        if (x == y) {
            FNN_T *FNN_RESTRICT p = y;
            for (fnn_idx i = 0; i < n; i++) p[i] = FN(act1)(act, p[i] + b[i], prm);
        } else {
            const FNN_T *FNN_RESTRICT xi = x;
            FNN_T *FNN_RESTRICT yo = y;
            for (fnn_idx i = 0; i < n; i++) yo[i] = FN(act1)(act, xi[i] + b[i], prm);
        }
    }
}

#ifndef FNN_ACT_SPECIALISE
/* F(act, ...) with act a constant in each case: every activation gets its own vectorised loop. */
#define FNN_ACT_SPECIALISE(act, F, ...)                        \
    switch (act) {                                             \
    case FNN_ACT_RELU: F(FNN_ACT_RELU, __VA_ARGS__); break;             \
    case FNN_ACT_LEAKY_RELU: F(FNN_ACT_LEAKY_RELU, __VA_ARGS__); break; \
    case FNN_ACT_SIGMOID: F(FNN_ACT_SIGMOID, __VA_ARGS__); break;       \
    case FNN_ACT_TANH: F(FNN_ACT_TANH, __VA_ARGS__); break;             \
    default: F(FNN_ACT_IDENTITY, __VA_ARGS__); break;                   \
    }
#endif

static void FN(act_fwd)(int act, const FNN_T *x, const FNN_T *bias, FNN_T *y, fnn_idx n, double param)
{
    const FNN_T prm = (FNN_T)param;
    FNN_ACT_SPECIALISE(act, FN(act_fwd_loop), x, bias, y, n, prm);
}

FNN_INLINE void FN(act_bwd_loop)(int act, const FNN_T *g, const FNN_T *y, FNN_T *out, fnn_idx n, FNN_T prm)
{
    if (out == g && out == y) { /* all three the same buffer */
        FNN_T *FNN_RESTRICT o = out;
        for (fnn_idx i = 0; i < n; i++) o[i] = FN(dact1)(act, o[i], o[i], prm);
    } else if (out == g) {
        FNN_T *FNN_RESTRICT o = out;
        const FNN_T *FNN_RESTRICT yy = y;
        for (fnn_idx i = 0; i < n; i++) o[i] = FN(dact1)(act, o[i], yy[i], prm);
    } else if (out == y) {
        FNN_T *FNN_RESTRICT o = out;
        const FNN_T *FNN_RESTRICT gg = g;
        for (fnn_idx i = 0; i < n; i++) o[i] = FN(dact1)(act, gg[i], o[i], prm);
    } else {
        FNN_T *FNN_RESTRICT o = out;
        const FNN_T *FNN_RESTRICT gg = g;
        const FNN_T *FNN_RESTRICT yy = y;
        for (fnn_idx i = 0; i < n; i++) o[i] = FN(dact1)(act, gg[i], yy[i], prm);
    }
}

static void FN(act_bwd)(int act, const FNN_T *g, const FNN_T *y, FNN_T *out, fnn_idx n, double param)
{
    const FNN_T prm = (FNN_T)param;
    FNN_ACT_SPECIALISE(act, FN(act_bwd_loop), g, y, out, n, prm);
}

/* ---- rows: softmax, its backward, cross-entropy ---- */

FNN_INLINE FNN_T FN(rowmax)(const FNN_T *FNN_RESTRICT x, fnn_idx n)
{
    FNN_T m = x[0];
    FNN_SIMD_REDUCTION(max : m)
    for (fnn_idx i = 0; i < n; i++) m = x[i] > m ? x[i] : m;
    return m;
}

/* y = exp(x - m), returns sum(y) */
FNN_INLINE FNN_T FN(expsum)(const FNN_T *x, FNN_T *y, fnn_idx n, FNN_T m)
{
    FNN_T s = 0;
    FNN_SIMD_REDUCTION(+ : s)
    for (fnn_idx i = 0; i < n; i++) {
        FNN_T e = FN(fnn_exp_softmax)(x[i] - m);
        y[i] = e;
        s += e;
    }
    return s;
}

/* y = softmax(x) over rows of length c; x may equal y. */
static void FN(softmax_rows)(const FNN_T *x, FNN_T *y, fnn_idx rows, fnn_idx c)
{
    if (c == 0) return;
    for (fnn_idx r = 0; r < rows; r++) {
        const FNN_T *xr = x + r * c;
        FNN_T *yr = y + r * c;
        FNN_T m = FN(rowmax)(xr, c);
        FNN_T inv = 1 / FN(expsum)(xr, yr, c, m);
        for (fnn_idx i = 0; i < c; i++) yr[i] *= inv;
    }
}

/* out = y * (g - sum(g*y)) row by row */
static void FN(softmax_bwd_rows)(const FNN_T *g, const FNN_T *y, FNN_T *out, fnn_idx rows, fnn_idx c)
{
    for (fnn_idx r = 0; r < rows; r++) {
        const FNN_T *gr = g + r * c, *yr = y + r * c;
        FNN_T *outr = out + r * c;
        FNN_T dot = 0;
        FNN_SIMD_REDUCTION(+ : dot)
        for (fnn_idx i = 0; i < c; i++) dot += gr[i] * yr[i];
        for (fnn_idx i = 0; i < c; i++) outr[i] = (gr[i] - dot) * yr[i];
    }
}

/* grad = scale (softmax(z) - onehot); returns the rows' logsumexp(z) - z[label], unscaled, in double.
 *
 * The exponentials dominate. A row shorter than a vector (ten classes, the
 * usual classifier) would run them in the row loop's scalar remainder, so
 * such blocks take them in one flat loop over every row instead: a first
 * pass shifts each row by its maximum, the flat loop exponentiates the
 * block, a last pass sums and scales each row in order. */
static double FN(xent_rows)(const FNN_T *z, const fnn_idx *labels, FNN_T *grad, fnn_idx rows, fnn_idx c,
                            double scale)
{
    /* sum_r log(s_r) as log(prod s_r) over groups of rows: each s_r lies in
       [1, c], so c^g < 1e290 cannot overflow, and one log per group matters
       for small batches. */
    double loss = 0, prod = 1;
    const FNN_T sc = (FNN_T)scale;
    fnn_idx group = (fnn_idx)(290.0 / log10((double)(c > 1 ? c : 2)));
    if (group < 1) group = 1;
    fnn_idx in_group = 0;
    const int flat = c < FNN_L;
    if (flat) {
        for (fnn_idx r = 0; r < rows; r++) {
            const FNN_T *zr = z + r * c;
            FNN_T *gr = grad + r * c;
            FNN_T m = FN(rowmax)(zr, c);
            for (fnn_idx i = 0; i < c; i++) gr[i] = zr[i] - m;
            loss -= (double)gr[labels[r]];   /* -(z[label] - m) */
        }
        const fnn_idx n = rows * c;
#if defined(_OPENMP) || defined(FNN_OPENMP_SIMD)
        FNN_PRAGMA(omp simd)
#endif
        for (fnn_idx i = 0; i < n; i++) grad[i] = FN(fnn_exp_softmax)(grad[i]);
    }
    for (fnn_idx r = 0; r < rows; r++) {
        const FNN_T *zr = z + r * c;
        FNN_T *gr = grad + r * c;
        fnn_idx lab = labels[r];
        FNN_T s = 0;
        if (flat) {
            for (fnn_idx i = 0; i < c; i++) s += gr[i];
        } else {
            FNN_T m = FN(rowmax)(zr, c);
            s = FN(expsum)(zr, gr, c, m);
            loss -= (double)(zr[lab] - m);
        }
        FNN_T f = sc / s;
        for (fnn_idx i = 0; i < c; i++) gr[i] *= f;
        gr[lab] -= sc;
        prod *= (double)s;
        if (++in_group == group) { loss += log(prod); prod = 1; in_group = 0; }
    }
    return loss + log(prod);
}

/* ---- losses over a chunk: write the gradient, return the unscaled loss sum ---- */

/* d = p - t; grad = two_scale d; returns sum d^2 */
static double FN(mse)(const FNN_T *p, const FNN_T *t, FNN_T *grad, fnn_idx n, double two_scale)
{
    const FNN_T ts = (FNN_T)two_scale;
    double s = 0;
    FNN_SIMD_REDUCTION(+ : s)
    for (fnn_idx i = 0; i < n; i++) {
        FNN_T d = p[i] - t[i];
        s += (double)d * (double)d;
        grad[i] = d * ts;
    }
    return s;
}

/* max(z,0) - z t + log1p(exp(-|z|)); grad = scale (sigmoid(z) - t). libm's
 * exp and log1p: the loss needs log1p, which has no vector version here. */
static double FN(bce)(const FNN_T *z, const FNN_T *t, FNN_T *grad, fnn_idx n, double scale)
{
    const FNN_T sc = (FNN_T)scale;
    double s = 0;
    for (fnn_idx i = 0; i < n; i++) {
        FNN_T zi = z[i];
        FNN_T e = FN(fnn_libm_exp)(-FN(fnn_libm_fabs)(zi));
        FNN_T pos = zi > 0 ? zi : 0;
        s += (double)(pos - zi * t[i] + FN(fnn_libm_log1p)(e));
        FNN_T sig = (zi >= 0 ? (FNN_T)1 : e) / (1 + e);
        grad[i] = (sig - t[i]) * sc;
    }
    return s;
}

/* ---- optimizer updates (PyTorch's rules; see the reference for the math) ---- */

/* Weight decay only when it is not zero (PyTorch's rule): 0 p would turn an
 * inf or NaN parameter into a NaN gradient. The test is loop-invariant. */
#define FNN_DECAYED(g, wd, p) ((wd) != 0 ? (g) + (wd) * (p) : (g))

static void FN(sgd)(FNN_T *FNN_RESTRICT param, const FNN_T *FNN_RESTRICT grad, FNN_T *FNN_RESTRICT vel, fnn_idx n,
                    double lr_, double mom_, int nesterov, double wd_)
{
    const FNN_T lr = (FNN_T)lr_, mom = (FNN_T)mom_, wd = (FNN_T)wd_;
    if (vel == NULL) {
        for (fnn_idx i = 0; i < n; i++) param[i] -= lr * FNN_DECAYED(grad[i], wd, param[i]);
    } else if (nesterov) {
        for (fnn_idx i = 0; i < n; i++) {
            FNN_T g = FNN_DECAYED(grad[i], wd, param[i]);
            FNN_T v = mom * vel[i] + g;
            vel[i] = v;
            param[i] -= lr * (g + mom * v);
        }
    } else {
        for (fnn_idx i = 0; i < n; i++) {
            FNN_T g = FNN_DECAYED(grad[i], wd, param[i]);
            FNN_T v = mom * vel[i] + g;
            vel[i] = v;
            param[i] -= lr * v;
        }
    }
}

static void FN(adam)(FNN_T *FNN_RESTRICT param, const FNN_T *FNN_RESTRICT grad, FNN_T *FNN_RESTRICT m,
                     FNN_T *FNN_RESTRICT v, fnn_idx n, double decay_, double l2_, double b1_, double b2_,
                     double step_size_, double inv_sqrt_bc2_, double eps_)
{
    const FNN_T decay = (FNN_T)decay_, l2 = (FNN_T)l2_, b1 = (FNN_T)b1_, b2 = (FNN_T)b2_;
    const FNN_T c1 = (FNN_T)(1 - b1_), c2 = (FNN_T)(1 - b2_);
    const FNN_T step_size = (FNN_T)step_size_, isb = (FNN_T)inv_sqrt_bc2_, eps = (FNN_T)eps_;
    for (fnn_idx i = 0; i < n; i++) {
        FNN_T p = param[i] * decay;
        FNN_T g = FNN_DECAYED(grad[i], l2, p);
        FNN_T mi = m[i] * b1 + c1 * g;
        FNN_T vi = v[i] * b2 + c2 * (g * g);
        m[i] = mi;
        v[i] = vi;
        param[i] = p - step_size * (mi / (FN(fnn_libm_sqrt)(vi) * isb + eps));
    }
}

/* ---- small helpers of the layers ---- */

/* out[j] (+)= sum over rows of s[r*ld + j] for n <= 64 columns, the sums in
 * registers across the rows (whole blocks come with n = 64, a constant once
 * inlined); `first`: start from zero, else from out. */
FNN_INLINE void FN(colsum_block)(const FNN_T *s, fnn_idx rows, fnn_idx n, fnn_idx ld, FNN_T *out, int first)
{
    FNN_T acc[64];
    for (fnn_idx j = 0; j < n; j++) acc[j] = first ? 0 : out[j];
    for (fnn_idx r = 0; r < rows; r++) {
        const FNN_T *FNN_RESTRICT sr = s + r * ld;
        for (fnn_idx j = 0; j < n; j++) acc[j] += sr[j];
    }
    for (fnn_idx j = 0; j < n; j++) out[j] = acc[j];
}

/* delta = g ⊙ act'(y) and out[j] = sum over rows of delta[r*ld + j], with
 * one read of g from memory: a dense layer's backward forms both before its
 * products (delta is not formed for the identity, whose delta is g itself;
 * out may be NULL). Rows go in tiles of FNN_COLSUM_ROWS: delta of the tile
 * in one contiguous pass, then its column sums while the tile is in L1/L2.
 * (Writing delta and summing in the same pass down a block of columns ran
 * 1.3x slower at 1024 float columns: a row's store and the next row's load
 * lie 4 KiB apart, and the load waits on the store.) Rows are added in
 * order: the bits of the unfused loop (delta first, then the column sums).
 * delta must not alias g or y. */
FNN_INLINE void FN(dact_colsum_loop)(int act, const FNN_T *g, const FNN_T *y, FNN_T *delta, fnn_idx rows,
                                     fnn_idx cols, fnn_idx ld, FNN_T *out, FNN_T prm)
{
    const FNN_T *s = act == FNN_ACT_IDENTITY ? g : delta;
    for (fnn_idx r0 = 0; r0 < rows; r0 += FNN_COLSUM_ROWS) {
        fnn_idx nr = rows - r0 < FNN_COLSUM_ROWS ? rows - r0 : FNN_COLSUM_ROWS, j0 = 0;
        if (act != FNN_ACT_IDENTITY)
            for (fnn_idx r = r0; r < r0 + nr; r++) {
                const FNN_T *FNN_RESTRICT gr = g + r * ld, *FNN_RESTRICT yr = y + r * ld;
                FNN_T *FNN_RESTRICT dr = delta + r * ld;
                for (fnn_idx j = 0; j < cols; j++) dr[j] = FN(dact1)(act, gr[j], yr[j], prm);
            }
        if (out == NULL)
            continue;
        for (; j0 + 64 <= cols; j0 += 64) FN(colsum_block)(s + r0 * ld + j0, nr, 64, ld, out + j0, r0 == 0);
        if (j0 < cols) FN(colsum_block)(s + r0 * ld + j0, nr, cols - j0, ld, out + j0, r0 == 0);
    }
}

static void FN(dact_colsum)(int act, const FNN_T *g, const FNN_T *y, FNN_T *delta, fnn_idx rows, fnn_idx cols,
                            fnn_idx ld, FNN_T *out, double param)
{
    const FNN_T prm = (FNN_T)param;
    FNN_ACT_SPECIALISE(act, FN(dact_colsum_loop), g, y, delta, rows, cols, ld, out, prm);
}

/* t (n, m) = a (m, n)ᵀ, in blocks that stay in L1 on both sides. */
static void FN(transpose)(const FNN_T *FNN_RESTRICT a, fnn_idx m, fnn_idx n, FNN_T *FNN_RESTRICT t)
{
    enum { TB = 32 };
    for (fnn_idx i0 = 0; i0 < m; i0 += TB)
        for (fnn_idx j0 = 0; j0 < n; j0 += TB) {
            fnn_idx i1 = i0 + TB < m ? i0 + TB : m, j1 = j0 + TB < n ? j0 + TB : n;
            for (fnn_idx i = i0; i < i1; i++)
                for (fnn_idx j = j0; j < j1; j++) t[j * m + i] = a[i * n + j];
        }
}

/* 1 when no element is NaN or +-inf: the exponent bits are tested as
 * integers (all ones: non-finite), which vectorises without -ffast-math. */
static int FN(all_finite)(const FNN_T *a, fnn_idx n)
{
    FNN_UINT bad = 0;
    for (fnn_idx i = 0; i < n; i++) {
        FNN_UINT u;
        memcpy(&u, a + i, sizeof u);
        bad |= (u & FNN_EXP_MASK) == FNN_EXP_MASK;
    }
    return !bad;
}
