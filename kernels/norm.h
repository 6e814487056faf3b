/* Batch and layer normalisation (the math: fastnn/backends/reference/norm.py).
 *
 * Statistics in one pass over the data, shifted: with c near the mean,
 *     μ = c + Σ(x − c)/n,    σ² = Σ(x − c)²/n − (Σ(x − c)/n)²,
 * which loses no digits while |μ − c| ≤ σ; c is the mean of a few leading
 * values, and a group whose shift turns out further than σ from its mean
 * (a fraction of a per cent of random groups, or structured data) takes a
 * second pass around c = μ, so the cancellation never costs more than a
 * factor 2. The terms are summed in the data's dtype, four vectors of
 * partials whose lanes add FNN_NCH terms each, the four added together and
 * the result added in float64: float32 partials are twice as wide as
 * float64 ones and need no conversions in the loop. Such a partial of float32
 * terms has a relative rounding error of at most (FNN_NCH + 2)·2^-24 of the
 * sum of its terms' magnitudes, so the variance is within about
 * 2·(FNN_NCH + 3)·2^-24 ≈ 1.3e-6 relative of the exact one
 * (tests/test_norm_numerics.py checks 2e-6 on data with |mean|/std = 1e4,
 * a far shift and std 1e-3, float32), and the mean within that of σ. Sums
 * over columns (a layer norm's affine gradients, a batch norm over (N, C))
 * keep the same bound: FNN_NCH rows' terms per partial, then float64.
 *
 * Cost: on a batch in L2 or L3 these loops are bound by the core's loads,
 * stores (a 512-bit store every two cycles on AVX-512) and vector operations
 * about as much as by the memory, so nothing is done per value that a group
 * can do once: a batch norm channel's runs of L values share their float64
 * partials and take one horizontal sum, and a block of rows shares its
 * loads of per-column constants and its column partials. Blocks stay small
 * because rows 4 KiB apart (C or K = 1024 floats) fall into one L1 set of 8
 * ways and alias each other's page offsets, where a store to one row holds
 * up a later load from the next at the same offset: a block loads all its
 * rows' values before it stores any, reads at most 8 rows' lines (a batch
 * norm's sums over (N, C): FNN_NCH rows of x, FNN_NCH / 2 of g and x; 16
 * rows' lines were slower), and a pass that writes takes FNN_LN_ROWS rows
 * (a layer norm's backward; 4 were slower) or one (a batch norm's
 * normalising pass over (N, C), with its four arrays of constants).
 *
 * Order: a layer norm takes a row at a time (it stays in L1 between its two
 * passes); a batch norm blocks of channels, at most FNN_BN_BLOCK_BYTES of
 * values each, read in memory order for their sums and again to be
 * normalised: with L = 1 (BatchNorm1d on (N, C)) rows of the block's
 * columns, each channel's partials in an array; with L > 1 run after run,
 * each channel's partials in float64 vectors (blocks of 64-256 KiB, to keep
 * a block in L2 between the statistics and the normalising pass, were
 * slower on the 1 MiB batch than one block). */

#ifndef FNN_NCH
#define FNN_NCH 8 /* terms a lane of partials in the data's dtype adds before they go to float64 */
#define FNN_PILOT 8 /* leading values whose mean is the shift */
#define FNN_BN_BLOCK_BYTES (1024 * 1024) /* a batch norm channel block's values at most */
#define FNN_LN_ROWS 2 /* rows a layer norm's backward normalises together (FNN_NCH a multiple of it) */

/* The mean and the variance from shifted sums s1 = Σ(x − c), s2 = Σ(x − c)² of n values;
 * returns whether the shift was too far from the mean for one pass (|μ − c| > σ). */
FNN_INLINE int fnn_shifted_stats(double c, double s1, double s2, double n, double *mu, double *var)
{
    const double m1 = s1 / n, v = s2 / n - m1 * m1;
    *mu = c + m1;
    *var = v > 0 ? v : 0;
    return m1 * m1 > v;
}

/* What a loop does (flags). Sums: (x − c) and (x − c)² (0); a and a·(x − c) (NRM_DOT), or γa and
 * γa·(x − c) with γ = w (NRM_DOT | NRM_W: a layer norm backward row's, a = g). A layer norm's forward:
 * γ and β there (NRM_W, NRM_B); its backward: dL/dx wanted (NRM_GI), the affine gradients wanted
 * (NRM_COLS). A batch norm's normalising pass: the forward (0), the backward through the batch
 * statistics (NRM_GI | NRM_DOT) or without them (NRM_GI). */
enum { NRM_DOT = 1, NRM_W = 2, NRM_B = 4, NRM_GI = 8, NRM_COLS = 16 };
#endif

/* The float64 sums of a partial vector: two native float64 vectors for float32 (its halves), one for
 * float64 (q[1] unused). No vector wider than the build's: GCC would take it apart through the stack.
 * The halves are converted lane by lane, which GCC compiles to one conversion of each half in registers
 * (a memcpy of the halves went through the stack). */
#if FNN_IS_F32
#ifndef FNN_NRM_HALF
#if FNN_LANES_F64 == 8
#define FNN_NRM_HALF(v, h) \
    ((fnn_v_f64){(v)[h], (v)[h + 1], (v)[h + 2], (v)[h + 3], (v)[h + 4], (v)[h + 5], (v)[h + 6], (v)[h + 7]})
#elif FNN_LANES_F64 == 4
#define FNN_NRM_HALF(v, h) ((fnn_v_f64){(v)[h], (v)[h + 1], (v)[h + 2], (v)[h + 3]})
#else
#define FNN_NRM_HALF(v, h) ((fnn_v_f64){(v)[h], (v)[h + 1]})
#endif
#endif
FNN_INLINE void FN(nrm_widen)(fnn_v_f64 *q, FNN_V v)
{
    q[0] += FNN_NRM_HALF(v, 0);
    q[1] += FNN_NRM_HALF(v, FNN_LANES_F64);
}
#else
FNN_INLINE void FN(nrm_widen)(fnn_v_f64 *q, FNN_V v) { q[0] += v; }
#endif

/* The sum of q's lanes, pairwise. */
FNN_INLINE double FN(nrm_hsum)(const fnn_v_f64 *q)
{
    fnn_v_f64 v = q[0] + q[1];
    double s[FNN_LANES_F64];
    for (int l = 0; l < FNN_LANES_F64; l++) s[l] = v[l];
    for (int h = FNN_LANES_F64 / 2; h > 0; h /= 2)
        for (int l = 0; l < h; l++) s[l] += s[l + h];
    return s[0];
}

/* n values at p (n = FNN_L: a whole vector; fewer: the other lanes zero) and their store. */
FNN_INLINE FNN_V FN(nrm_ld)(const FNN_T *p, int n) { return n == FNN_L ? FN(fnn_load)(p) : FN(fnn_loadn)(p, n); }
FNN_INLINE void FN(nrm_st)(FNN_T *p, FNN_V v, int n)
{
    if (n == FNN_L)
        FN(fnn_store)(p, v);
    else
        FN(fnn_storen)(p, v, n);
}

/* s[0, n) += the first n lanes of v, in float64. */
FNN_INLINE void FN(nrm_add_f64)(double *s, FNN_V v, int n)
{
#if FNN_IS_F32
    const int h = FNN_LANES_F64;
    const fnn_v_f64 lo = FNN_NRM_HALF(v, 0), hi = FNN_NRM_HALF(v, FNN_LANES_F64);
    if (n >= h)
        fnn_store_f64(s, fnn_load_f64(s) + lo);
    else
        fnn_storen_f64(s, fnn_loadn_f64(s, n) + lo, n);
    if (n == 2 * h)
        fnn_store_f64(s + h, fnn_load_f64(s + h) + hi);
    else if (n > h)
        fnn_storen_f64(s + h, fnn_loadn_f64(s + h, n - h) + hi, n - h);
#else
    if (n == FNN_L)
        fnn_store_f64(s, fnn_load_f64(s) + v);
    else
        fnn_storen_f64(s, fnn_loadn_f64(s, n) + v, n);
#endif
}

/* Column sums over groups of FNN_NCH rows, a block of rows at a time: u, v are a block's sums at n
 * columns; the group's first block leaves them in the partials p1, p2, a later one adds them there, and
 * its last adds the group's partials to the float64 sums s1, s2 (all pointers at the block's first
 * column): no pass to clear the partials, none to carry them to float64. */
FNN_INLINE void FN(nrm_cols)(FNN_V u, FNN_V v, FNN_T *p1, FNN_T *p2, double *s1, double *s2, int n, int first,
                             int last)
{
    if (!first) {
        u += FN(nrm_ld)(p1, n);
        v += FN(nrm_ld)(p2, n);
    }
    if (last) {
        FN(nrm_add_f64)(s1, u, n);
        FN(nrm_add_f64)(s2, v, n);
    } else {
        FN(nrm_st)(p1, u, n);
        FN(nrm_st)(p2, v, n);
    }
}

/* The two terms of `kind` at i (a whole vector). */
FNN_INLINE void FN(nrm_term)(const int kind, const FNN_T *FNN_RESTRICT a, const FNN_T *FNN_RESTRICT x,
                             const FNN_T *FNN_RESTRICT w, FNN_V c, fnn_idx i, FNN_V *u, FNN_V *v)
{
    const FNN_V d = FN(fnn_load)(x + i) - c;
    if (!(kind & NRM_DOT)) {
        *u = d;
        *v = d * d;
    } else {
        const FNN_V av = FN(fnn_load)(a + i), gg = (kind & NRM_W) ? av * FN(fnn_load)(w + i) : av;
        *u = gg;
        *v = gg * d;
    }
}

/* Adds the sums of the two terms of `kind` over n contiguous values to q1, q2 (float64 vectors: 4 vectors
 * of partials in the data's dtype, each lane adding FNN_NCH terms, then widened) and, for the values
 * past the last whole vector, to t1, t2. */
FNN_INLINE void FN(nrm_accum)(const int kind, const FNN_T *FNN_RESTRICT a, const FNN_T *FNN_RESTRICT x,
                              const FNN_T *FNN_RESTRICT w, FNN_T c, fnn_idx n, fnn_v_f64 *q1, fnn_v_f64 *q2,
                              double *t1, double *t2)
{
    const FNN_V cv = (FNN_V){0} + c;
    FNN_V u, v;
    fnn_idx i = 0;
    while (i + FNN_L <= n) {
        FNN_V p1[4] = {{0}}, p2[4] = {{0}};
        for (int t = 0; t < FNN_NCH && i + 4 * FNN_L <= n; t++, i += 4 * FNN_L)
            for (int k = 0; k < 4; k++) {
                FN(nrm_term)(kind, a, x, w, cv, i + k * FNN_L, &u, &v);
                p1[k] += u;
                p2[k] += v;
            }
        if (i + 4 * FNN_L > n) /* the last whole vectors, at most 3: one more term in some partials */
            for (int k = 0; k < 3; k++)
                if (i + FNN_L <= n) {
                    FN(nrm_term)(kind, a, x, w, cv, i, &u, &v);
                    p1[k] += u;
                    p2[k] += v;
                    i += FNN_L;
                }
        FN(nrm_widen)(q1, (p1[0] + p1[1]) + (p1[2] + p1[3]));
        FN(nrm_widen)(q2, (p2[0] + p2[1]) + (p2[2] + p2[3]));
    }
    for (; i < n; i++) {
        const FNN_T d = x[i] - c;
        if (!(kind & NRM_DOT)) {
            *t1 += (double)d;
            *t2 += (double)d * (double)d;
        } else {
            const FNN_T gg = (kind & NRM_W) ? a[i] * w[i] : a[i];
            *t1 += (double)gg;
            *t2 += (double)gg * (double)d;
        }
    }
}

/* *s1, *s2 = the sums of the two terms of `kind` over n contiguous values (see nrm_accum). */
FNN_INLINE void FN(nrm_reduce)(const int kind, const FNN_T *a, const FNN_T *x, const FNN_T *w, FNN_T c, fnn_idx n,
                               double *s1, double *s2)
{
    fnn_v_f64 q1[2] = {{0}}, q2[2] = {{0}};
    double t1 = 0, t2 = 0;
    FN(nrm_accum)(kind, a, x, w, c, n, q1, q2, &t1, &t2);
    *s1 = FN(nrm_hsum)(q1) + t1;
    *s2 = FN(nrm_hsum)(q2) + t2;
}

/* The mean of the first min(n, FNN_PILOT) values ld apart, in the data's dtype: a shift near the mean. */
FNN_INLINE FNN_T FN(nrm_pilot)(const FNN_T *x, fnn_idx n, fnn_idx ld)
{
    const fnn_idx m = n < FNN_PILOT ? n : FNN_PILOT;
    double s = 0;
    for (fnn_idx i = 0; i < m; i++) s += (double)x[i * ld];
    return (FNN_T)(s / (double)m);
}

/* μ and σ² of n contiguous values (see the top of this file). */
FNN_INLINE void FN(nrm_row_stats)(const FNN_T *x, fnn_idx n, double *mu, double *var)
{
    FNN_T c = FN(nrm_pilot)(x, n, 1);
    double s1, s2;
    FN(nrm_reduce)(0, x, x, NULL, c, n, &s1, &s2);
    if (fnn_shifted_stats((double)c, s1, s2, (double)n, mu, var)) {
        c = (FNN_T)*mu;
        FN(nrm_reduce)(0, x, x, NULL, c, n, &s1, &s2);
        fnn_shifted_stats((double)c, s1, s2, (double)n, mu, var);
    }
}

/* ---- layer normalisation: rows of k values ---- */

/* y = (x − m)·r·w + b at the n values from i (w and b as kind's NRM_W, NRM_B say; NULL otherwise). */
FNN_INLINE void FN(ln_fwd_lanes)(const int kind, const FNN_T *x, const FNN_T *w, const FNN_T *b, FNN_V m, FNN_V r,
                                 FNN_T *y, fnn_idx i, int n)
{
    const FNN_V d = (FN(nrm_ld)(x + i, n) - m) * r;
    FNN_V v = d;
    if ((kind & NRM_W) && (kind & NRM_B))
        v = d * FN(nrm_ld)(w + i, n) + FN(nrm_ld)(b + i, n);
    else if (kind & NRM_W)
        v = d * FN(nrm_ld)(w + i, n);
    else if (kind & NRM_B)
        v = d + FN(nrm_ld)(b + i, n);
    FN(nrm_st)(y + i, v, n);
}

/* A row of k values normalised by its m and r (see ln_fwd_lanes). */
FNN_INLINE void FN(ln_fwd_row)(const int kind, const FNN_T *x, const FNN_T *w, const FNN_T *b, FNN_T m, FNN_T r,
                               FNN_T *y, fnn_idx k)
{
    const FNN_V mv = (FNN_V){0} + m, rv = (FNN_V){0} + r;
    fnn_idx i = 0;
    for (; i + FNN_L <= k; i += FNN_L) FN(ln_fwd_lanes)(kind, x, w, b, mv, rv, y, i, FNN_L);
    if (i < k)
        FN(ln_fwd_lanes)(kind, x, w, b, mv, rv, y, i, (int)(k - i));
}

/* Rows [0, m): out = (x − μ)·r·w + b (w, b NULL: 1, 0), μ and r = 1/sqrt(σ² + eps) written in the data's
 * dtype. */
static void FN(ln_fwd_rows)(const FNN_T *FNN_RESTRICT x, const FNN_T *FNN_RESTRICT w, const FNN_T *FNN_RESTRICT b,
                            double eps, FNN_T *FNN_RESTRICT out, FNN_T *FNN_RESTRICT mean, FNN_T *FNN_RESTRICT rstd,
                            fnn_idx m, fnn_idx k)
{
    for (fnn_idx r = 0; r < m; r++) {
        const FNN_T *xr = x + r * k;
        FNN_T *yr = out + r * k;
        double mu, var;
        FN(nrm_row_stats)(xr, k, &mu, &var);
        const FNN_T mc = (FNN_T)mu, rt = (FNN_T)(1.0 / sqrt(var + eps));
        mean[r] = mc;
        rstd[r] = rt;
        if (w && b)
            FN(ln_fwd_row)(NRM_W | NRM_B, xr, w, b, mc, rt, yr, k);
        else if (w)
            FN(ln_fwd_row)(NRM_W, xr, w, b, mc, rt, yr, k);
        else if (b)
            FN(ln_fwd_row)(NRM_B, xr, w, b, mc, rt, yr, k);
        else
            FN(ln_fwd_row)(0, xr, w, b, mc, rt, yr, k);
    }
}

/* A block of nr <= FNN_LN_ROWS rows, k apart, of a layer norm's backward at the n columns from i (kind:
 * NRM_W, NRM_GI, NRM_COLS; the pointers they do not name may be NULL): dL/dx = γg·r − (x̂·b + a) with
 * x̂ = (x − μ)·r (μ, r, a, b: mv, rv, av, bv by row; a and b carry a factor r) and the block's column sums
 * Σ g·x̂ and Σ g (to nrm_cols). The rows' values are all loaded before dL/dx is stored (see the top of
 * this file; the pointers are not restrict, so the compiler keeps that order). */
FNN_INLINE void FN(ln_bwd_lanes)(const int kind, const FNN_T *g, const FNN_T *x, const FNN_T *w, FNN_T *gi,
                                 const FNN_V *mv, const FNN_V *rv, const FNN_V *av, const FNN_V *bv, const int nr,
                                 fnn_idx k, fnn_idx i, int n, FNN_T *pw, FNN_T *pb, double *sw, double *sb, int first,
                                 int last)
{
    FNN_V gv[FNN_LN_ROWS], xh[FNN_LN_ROWS], u = {0}, v = {0};
    for (int q = 0; q < nr; q++) {
        gv[q] = FN(nrm_ld)(g + q * k + i, n);
        xh[q] = (FN(nrm_ld)(x + q * k + i, n) - mv[q]) * rv[q];
    }
    const FNN_V wv = (kind & NRM_W) ? FN(nrm_ld)(w + i, n) : (FNN_V){0};
    for (int q = 0; q < nr; q++) {
        if (kind & NRM_GI)
            FN(nrm_st)(gi + q * k + i, ((kind & NRM_W) ? gv[q] * wv : gv[q]) * rv[q] - (xh[q] * bv[q] + av[q]), n);
        if (kind & NRM_COLS) {
            u += gv[q] * xh[q];
            v += gv[q];
        }
    }
    if (kind & NRM_COLS)
        FN(nrm_cols)(u, v, pw + i, pb + i, sw + i, sb + i, n, first, last);
}

/* The block's k columns (see ln_bwd_lanes); nr a constant at each call, so the rows' values stay in registers. */
FNN_INLINE void FN(ln_bwd_block)(const int kind, const FNN_T *g, const FNN_T *x, const FNN_T *w, FNN_T *gi,
                                 const FNN_V *mv, const FNN_V *rv, const FNN_V *av, const FNN_V *bv, const int nr,
                                 fnn_idx k, FNN_T *pw, FNN_T *pb, double *sw, double *sb, int first, int last)
{
    fnn_idx i = 0;
    for (; i + FNN_L <= k; i += FNN_L)
        FN(ln_bwd_lanes)(kind, g, x, w, gi, mv, rv, av, bv, nr, k, i, FNN_L, pw, pb, sw, sb, first, last);
    if (i < k)
        FN(ln_bwd_lanes)(kind, g, x, w, gi, mv, rv, av, bv, nr, k, i, (int)(k - i), pw, pb, sw, sb, first, last);
}

/* Rows [0, m): dL/dx = r·(γg − mean(γg) − x̂·mean(γg·x̂)) into gi (NULL: not wanted), and with sw, sb
 * (k doubles each, added into; NULL: not wanted) the affine gradients Σ g·x̂ and Σ g over the rows, each
 * column's terms of FNN_NCH rows added in pw, pb (k values each of scratch), then in float64. A block of
 * FNN_LN_ROWS rows: one pass per row for its two sums, then one pass over the block that writes dL/dx and
 * adds to the columns. */
static void FN(ln_bwd_rows)(const FNN_T *g, const FNN_T *x, const FNN_T *w, const FNN_T *mean, const FNN_T *rstd,
                            FNN_T *gi, double *sw, double *sb, FNN_T *pw, FNN_T *pb, fnn_idx m, fnn_idx k)
{
    const int kind = (w ? NRM_W : 0) | (gi ? NRM_GI : 0) | (sw ? NRM_COLS : 0);
    FNN_V mv[FNN_LN_ROWS], rv[FNN_LN_ROWS], av[FNN_LN_ROWS] = {{0}}, bv[FNN_LN_ROWS] = {{0}};
    for (fnn_idx r0 = 0, nr; r0 < m; r0 += nr) {
        nr = m - r0 >= FNN_LN_ROWS ? FNN_LN_ROWS : 1;
        for (fnn_idx q = 0; q < nr; q++) {
            const fnn_idx r = r0 + q;
            mv[q] = (FNN_V){0} + mean[r];
            rv[q] = (FNN_V){0} + rstd[r];
            if (gi) { /* mean(γg·x̂) = r·Σ γg·(x − μ)/k */
                double a, bs;
                if (w)
                    FN(nrm_reduce)(NRM_DOT | NRM_W, g + r * k, x + r * k, w, mean[r], k, &a, &bs);
                else
                    FN(nrm_reduce)(NRM_DOT, g + r * k, x + r * k, w, mean[r], k, &a, &bs);
                const double rd = (double)rstd[r];
                av[q] = (FNN_V){0} + (FNN_T)(rd * a / (double)k);
                bv[q] = (FNN_V){0} + (FNN_T)(rd * rd * bs / (double)k);
            }
        }
        const int first = r0 % FNN_NCH == 0, last = (r0 + nr) % FNN_NCH == 0 || r0 + nr == m;
        const FNN_T *gb = g + r0 * k, *xb = x + r0 * k;
        FNN_T *gib = gi ? gi + r0 * k : gi;
        /* passes of constant flags over a constant number of rows */
#define FNN_LN_PASS(K)                                                                                   \
    (nr == FNN_LN_ROWS                                                                                   \
         ? FN(ln_bwd_block)(K, gb, xb, w, gib, mv, rv, av, bv, FNN_LN_ROWS, k, pw, pb, sw, sb, first, last) \
         : FN(ln_bwd_block)(K, gb, xb, w, gib, mv, rv, av, bv, 1, k, pw, pb, sw, sb, first, last))
        switch (kind) {
        case NRM_W | NRM_GI | NRM_COLS:
            FNN_LN_PASS(NRM_W | NRM_GI | NRM_COLS);
            break;
        case NRM_W | NRM_GI:
            FNN_LN_PASS(NRM_W | NRM_GI);
            break;
        case NRM_GI | NRM_COLS:
            FNN_LN_PASS(NRM_GI | NRM_COLS);
            break;
        case NRM_GI:
            FNN_LN_PASS(NRM_GI);
            break;
        case NRM_W | NRM_COLS:
        case NRM_COLS: /* γ plays no part in the columns' sums */
            FNN_LN_PASS(NRM_COLS);
            break;
        default:
            break;
        }
#undef FNN_LN_PASS
    }
}

/* ---- batch normalisation: x (N, C, L), statistics per channel over N·L values ---- */

/* Channel ch: s1, s2 = the sums of kind's terms (0, or NRM_DOT with a) over its N runs of L values (the
 * rare second pass around a channel's mean). */
FNN_INLINE void FN(bn_channel_sums)(const int kind, const FNN_T *a, const FNN_T *x, FNN_T c, fnn_idx N, fnn_idx C,
                                    fnn_idx L, fnn_idx ch, double *s1, double *s2)
{
    fnn_v_f64 q1[2] = {{0}}, q2[2] = {{0}};
    double t1 = 0, t2 = 0;
    for (fnn_idx n = 0; n < N; n++) {
        const fnn_idx o = (n * C + ch) * L;
        FN(nrm_accum)(kind, a + o, x + o, NULL, c, L, q1, q2, &t1, &t2);
    }
    *s1 = FN(nrm_hsum)(q1) + t1;
    *s2 = FN(nrm_hsum)(q2) + t2;
}

/* L = 1, a block of nr rows, C apart, at n channels: the block's sums of kind's terms (0 or NRM_DOT
 * with a, shifts c) to the channels' partials (nrm_cols). */
FNN_INLINE void FN(bn_rows_sums)(const int kind, const FNN_T *a, const FNN_T *x, const FNN_T *c, fnn_idx C,
                                 const int nr, int n, FNN_T *p1, FNN_T *p2, double *s1, double *s2, int first, int last)
{
    const FNN_V cv = FN(nrm_ld)(c, n);
    FNN_V u = {0}, v = {0};
    for (int q = 0; q < nr; q++) {
        const FNN_V d = FN(nrm_ld)(x + q * C, n) - cv, t = (kind & NRM_DOT) ? FN(nrm_ld)(a + q * C, n) : d;
        u += t;
        v += t * d;
    }
    FN(nrm_cols)(u, v, p1, p2, s1, s2, n, first, last);
}

/* L = 1: the block's nc channels (see bn_rows_sums; nr a constant at each call). */
FNN_INLINE void FN(bn_rows_sums_block)(const int kind, const FNN_T *a, const FNN_T *x, const FNN_T *c, fnn_idx C,
                                       const int nr, fnn_idx nc, FNN_T *p1, FNN_T *p2, double *s1, double *s2,
                                       int first, int last)
{
    fnn_idx j = 0;
    for (; j + FNN_L <= nc; j += FNN_L)
        FN(bn_rows_sums)(kind, a + j, x + j, c + j, C, nr, FNN_L, p1 + j, p2 + j, s1 + j, s2 + j, first, last);
    if (j < nc)
        FN(bn_rows_sums)(kind, a + j, x + j, c + j, C, nr, (int)(nc - j), p1 + j, p2 + j, s1 + j, s2 + j, first,
                         last);
}

/* The block's scratch: per channel two float64 sums (s1, s2), three values (the shift and the output's
 * scale and shift forward; k, a, t backward), and the sums' partials: two values (L = 1) or four float64
 * vectors (L > 1). */
typedef struct {
    double *s1, *s2;
    FNN_T *c, *k, *t, *p1, *p2;
    fnn_v_f64 *q;
} FN(bn_scratch);

/* Channels [c0, c0 + nc) of x (N, C, L), in memory order: sc->s1, sc->s2 = the sums of kind's terms
 * (0 or NRM_DOT with a, shifts c). L = 1: the channels are columns of the rows, each channel's terms of
 * FNN_NCH rows in the partials p1, p2; a block of rows reads 8 rows' lines at once, the ways of an L1 set
 * (rows 4 KiB apart share one): FNN_NCH rows of x, or FNN_NCH / 2 of a and of x (measured, C = 1024:
 * faster than 2 rows, 16 rows' lines slower). L > 1: each (n, c) run of L values adds its widened
 * partials to its channel's float64 vectors q, summed across once per channel (read channel by channel
 * instead, the runs 4·C·L bytes apart, the sums were slower). */
FNN_INLINE void FN(bn_sums)(const int kind, const FNN_T *a, const FNN_T *x, const FNN_T *c, fnn_idx N, fnn_idx C,
                            fnn_idx L, fnn_idx c0, fnn_idx nc, const FN(bn_scratch) *sc)
{
    double *s1 = sc->s1, *s2 = sc->s2;
    for (fnn_idx j = 0; j < nc; j++) s1[j] = s2[j] = 0;
    if (L > 1) {
        fnn_v_f64 *q = sc->q;
        memset(q, 0, (size_t)nc * 4 * sizeof *q);
        for (fnn_idx n = 0; n < N; n++)
            for (fnn_idx j = 0; j < nc; j++) {
                const fnn_idx o = (n * C + c0 + j) * L;
                FN(nrm_accum)(kind, a + o, x + o, NULL, c[j], L, q + 4 * j, q + 4 * j + 2, &s1[j], &s2[j]);
            }
        for (fnn_idx j = 0; j < nc; j++) {
            s1[j] += FN(nrm_hsum)(q + 4 * j);
            s2[j] += FN(nrm_hsum)(q + 4 * j + 2);
        }
        return;
    }
    const int R = (kind & NRM_DOT) ? FNN_NCH / 2 : FNN_NCH;
    for (fnn_idx r0 = 0, nr; r0 < N; r0 += nr) {
        nr = N - r0 >= R ? R : 1;
        const int first = r0 % FNN_NCH == 0, last = (r0 + nr) % FNN_NCH == 0 || r0 + nr == N;
        const fnn_idx o = r0 * C + c0;
        if (nr == R)
            FN(bn_rows_sums_block)(kind, a + o, x + o, c, C, R, nc, sc->p1, sc->p2, s1, s2, first, last);
        else
            FN(bn_rows_sums_block)(kind, a + o, x + o, c, C, 1, nc, sc->p1, sc->p2, s1, s2, first, last);
    }
}

/* bn_sums of the forward (a = x) and of the backward, each compiled on its own (see bn_apply_fwd). */
static __attribute__((noinline)) void FN(bn_sums_fwd)(const FNN_T *x, const FNN_T *c, fnn_idx N, fnn_idx C, fnn_idx L,
                                                      fnn_idx c0, fnn_idx nc, const FN(bn_scratch) *sc)
{
    FN(bn_sums)(0, x, x, c, N, C, L, c0, nc, sc);
}

static __attribute__((noinline)) void FN(bn_sums_bwd)(const FNN_T *g, const FNN_T *x, const FNN_T *c, fnn_idx N,
                                                      fnn_idx C, fnn_idx L, fnn_idx c0, fnn_idx nc,
                                                      const FN(bn_scratch) *sc)
{
    FN(bn_sums)(NRM_DOT, g, x, c, N, C, L, c0, nc, sc);
}

/* n values, k, t, m, a their constants (dk apart: 1 where each value is a channel's own, in a row of
 * channels; 0 where one channel's constants serve a run): the forward's y = x·k + t (kind 0), or
 * dL/dx = g·k − ((x − m)·a + t) through the batch statistics (NRM_GI | NRM_DOT), or g·k without them
 * (NRM_GI). Loops the compiler vectorises. */
FNN_INLINE void FN(bn_apply_run)(const int kind, const FNN_T *FNN_RESTRICT g, const FNN_T *FNN_RESTRICT x,
                                 const FNN_T *FNN_RESTRICT k, const FNN_T *FNN_RESTRICT t,
                                 const FNN_T *FNN_RESTRICT m, const FNN_T *FNN_RESTRICT a, FNN_T *FNN_RESTRICT y,
                                 fnn_idx n, const int dk)
{
    if (!(kind & NRM_GI))
        for (fnn_idx i = 0; i < n; i++) y[i] = x[i] * k[i * dk] + t[i * dk];
    else if (kind & NRM_DOT)
        for (fnn_idx i = 0; i < n; i++) y[i] = g[i] * k[i * dk] - ((x[i] - m[i * dk]) * a[i * dk] + t[i * dk]);
    else
        for (fnn_idx i = 0; i < n; i++) y[i] = g[i] * k[i * dk];
}

/* Channels [c0, c0 + nc) in memory order (see bn_apply_run; k, t, m, a: the channels' constants from c0,
 * what the kind does not use may be NULL): L = 1 a row at a time (with its constants' four arrays, two
 * rows' three arrays are more lines than an L1 set holds), L > 1 a run at a time. */
FNN_INLINE void FN(bn_apply)(const int kind, const FNN_T *g, const FNN_T *x, const FNN_T *k, const FNN_T *t,
                             const FNN_T *m, const FNN_T *a, FNN_T *y, fnn_idx N, fnn_idx C, fnn_idx L, fnn_idx c0,
                             fnn_idx nc)
{
    for (fnn_idx n = 0; n < N; n++)
        if (L == 1) {
            const fnn_idx o = n * C + c0;
            FN(bn_apply_run)(kind, g ? g + o : g, x + o, k, t, m, a, y + o, nc, 1);
        } else
            for (fnn_idx j = 0; j < nc; j++) {
                const fnn_idx o = (n * C + c0 + j) * L;
                FN(bn_apply_run)(kind, g ? g + o : g, x + o, k + j, t ? t + j : t, m ? m + j : m, a ? a + j : a,
                                 y + o, L, 0);
            }
}

/* The normalising pass of a block of the forward, and of the backward (with or without the batch statistics),
 * each compiled on its own: inlined into bn_fwd and bn_bwd, the loop over a row's seven arrays ran out of
 * registers and reloaded its pointers from the stack at every vector (BatchNorm1d backward 10% slower). */
static __attribute__((noinline)) void FN(bn_apply_fwd)(const FNN_T *x, const FNN_T *s, const FNN_T *t, FNN_T *y,
                                                       fnn_idx N, fnn_idx C, fnn_idx L, fnn_idx c0, fnn_idx nc)
{
    FN(bn_apply)(0, NULL, x, s, t, NULL, NULL, y, N, C, L, c0, nc);
}

static __attribute__((noinline)) void FN(bn_apply_bwd)(int batch_stats, const FNN_T *g, const FNN_T *x,
                                                       const FNN_T *k, const FNN_T *t, const FNN_T *m,
                                                       const FNN_T *a, FNN_T *y, fnn_idx N, fnn_idx C, fnn_idx L,
                                                       fnn_idx c0, fnn_idx nc)
{
    if (batch_stats)
        FN(bn_apply)(NRM_GI | NRM_DOT, g, x, k, t, m, a, y, N, C, L, c0, nc);
    else
        FN(bn_apply)(NRM_GI, g, x, k, t, NULL, NULL, y, N, C, L, c0, nc);
}

/* Channels per block: the block's N·L values of each of its channels fit FNN_BN_BLOCK_BYTES (at least one). */
FNN_INLINE fnn_idx FN(bn_block)(fnn_idx NL, fnn_idx nc)
{
    fnn_idx per = (fnn_idx)(FNN_BN_BLOCK_BYTES / sizeof(FNN_T)) / (NL > 0 ? NL : 1);
    if (per > 4 * FNN_L)
        per -= per % (4 * FNN_L); /* whole vectors of columns */
    return per < 1 ? 1 : (per < nc ? per : nc);
}

/* The scratch of blocks of cb channels (one allocation: *mem, NULL when out of memory). */
FNN_INLINE FN(bn_scratch) FN(bn_scratch_new)(fnn_idx cb, fnn_idx L, void **mem)
{
    const size_t nq = L > 1 ? 4 * (size_t)cb : 0;
    char *p = malloc(nq * sizeof(fnn_v_f64) + (size_t)cb * (2 * sizeof(double) + 5 * sizeof(FNN_T)) + 64);
    FN(bn_scratch) sc = {0};
    *mem = p;
    if (!p)
        return sc;
    sc.q = (fnn_v_f64 *)(((uintptr_t)p + 63) & ~(uintptr_t)63); /* whole vectors of q on their own lines */
    sc.s1 = (double *)(sc.q + nq);
    sc.s2 = sc.s1 + cb;
    sc.c = (FNN_T *)(sc.s2 + cb);
    sc.k = sc.c + cb;
    sc.t = sc.k + cb;
    sc.p1 = sc.t + cb;
    sc.p2 = sc.p1 + cb;
    return sc;
}

/* The batch statistics of channel ch from shifted sums around sft (a second pass around the mean when the
 * shift was far from it) into mean[ch], var[ch]. */
FNN_INLINE void FN(bn_stats)(const FNN_T *x, FNN_T sft, double s1, double s2, fnn_idx N, fnn_idx C, fnn_idx L,
                             fnn_idx ch, FNN_T *mean, FNN_T *var)
{
    const double M = (double)(N * L);
    double mu, v;
    if (fnn_shifted_stats((double)sft, s1, s2, M, &mu, &v)) {
        sft = (FNN_T)mu;
        FN(bn_channel_sums)(0, x, x, sft, N, C, L, ch, &s1, &s2);
        fnn_shifted_stats((double)sft, s1, s2, M, &mu, &v);
    }
    mean[ch] = (FNN_T)mu;
    var[ch] = (FNN_T)v;
}

/* The forward's per-channel y = x·s + t: s = γr, t = β − μγr, r = 1/sqrt(σ² + eps) (w, b NULL: 1, 0). */
FNN_INLINE void FN(bn_affine)(const FNN_T *w, const FNN_T *b, const FNN_T *mean, const FNN_T *var, double eps,
                              fnn_idx ch, FNN_T *s, FNN_T *t)
{
    double scale = 1.0 / sqrt((double)var[ch] + eps);
    if (w)
        scale *= (double)w[ch];
    double shift = -(double)mean[ch] * scale;
    if (b)
        shift += (double)b[ch];
    *s = (FNN_T)scale;
    *t = (FNN_T)shift;
}

/* The backward's per-channel constants from the sums sg = Σ g and sgx = Σ g·(x − μ): dβ and dγ into gb, gw
 * (NULL: not wanted), and dL/dx = g·k − ((x − μ)·a + t), k = rγ, a = k·r·dγ/M, t = k·dβ/M (a = t = 0
 * without batch statistics). */
FNN_INLINE void FN(bn_grad_consts)(const FNN_T *w, const FNN_T *var, double eps, int batch_stats, double sg,
                                   double sgx, double M, fnn_idx ch, FNN_T *gw, FNN_T *gb, FNN_T *k, FNN_T *a,
                                   FNN_T *t)
{
    const double r = 1.0 / sqrt((double)var[ch] + eps), sx = sgx * r;
    if (gb)
        gb[ch] = (FNN_T)sg;
    if (gw)
        gw[ch] = (FNN_T)sx;
    const double kd = r * (w ? (double)w[ch] : 1.0);
    *k = (FNN_T)kd;
    *a = batch_stats ? (FNN_T)(kd * r * sx / M) : 0;
    *t = batch_stats ? (FNN_T)(kd * sg / M) : 0;
}

/* Forward of channels [c0, c1), in blocks of channels (bn_block): with batch_stats the batch's mean and
 * biased variance are written to mean and var, else read from them; y = x·(γr) + (β − μγr),
 * r = 1/sqrt(σ² + eps) (w, b NULL: 1, 0). Returns -1 when out of memory. */
static int FN(bn_fwd)(const FNN_T *x, const FNN_T *w, const FNN_T *b, double eps, int batch_stats, FNN_T *mean,
                      FNN_T *var, FNN_T *out, fnn_idx N, fnn_idx C, fnn_idx L, fnn_idx c0, fnn_idx c1)
{
    const fnn_idx cb = FN(bn_block)(N * L, c1 - c0);
    void *mem;
    const FN(bn_scratch) sc = FN(bn_scratch_new)(cb, L, &mem);
    if (!mem)
        return -1;
    for (fnn_idx a0 = c0; a0 < c1; a0 += cb) {
        const fnn_idx nc = c1 - a0 < cb ? c1 - a0 : cb;
        if (batch_stats) {
            /* the shifts: each channel's mean of its first values (L = 1: its first rows, a row at a time) */
            if (L > 1)
                for (fnn_idx j = 0; j < nc; j++) sc.c[j] = FN(nrm_pilot)(x + (a0 + j) * L, L, 1);
            else {
                const fnn_idx np = N < FNN_PILOT ? N : FNN_PILOT;
                for (fnn_idx j = 0; j < nc; j++) sc.s1[j] = 0;
                for (fnn_idx r = 0; r < np; r++)
                    for (fnn_idx j = 0; j < nc; j++) sc.s1[j] += (double)x[r * C + a0 + j];
                for (fnn_idx j = 0; j < nc; j++) sc.c[j] = (FNN_T)(sc.s1[j] / (double)np);
            }
            FN(bn_sums_fwd)(x, sc.c, N, C, L, a0, nc, &sc);
            for (fnn_idx j = 0; j < nc; j++) FN(bn_stats)(x, sc.c[j], sc.s1[j], sc.s2[j], N, C, L, a0 + j, mean, var);
        }
        for (fnn_idx j = 0; j < nc; j++) FN(bn_affine)(w, b, mean, var, eps, a0 + j, &sc.k[j], &sc.t[j]);
        FN(bn_apply_fwd)(x, sc.k, sc.t, out, N, C, L, a0, nc);
    }
    free(mem);
    return 0;
}

/* Backward of channels [c0, c1), in blocks of channels (bn_block): dγ = Σ g·x̂ and dβ = Σ g into gw, gb
 * (NULL: not wanted), dL/dx into gi (NULL: not wanted): r·γ·(g − mean(g) − x̂·mean(g·x̂)) with batch
 * statistics, r·γ·g without. Returns -1 when out of memory. */
static int FN(bn_bwd)(const FNN_T *g, const FNN_T *x, const FNN_T *w, const FNN_T *mean, const FNN_T *var, double eps,
                      int batch_stats, FNN_T *gi, FNN_T *gw, FNN_T *gb, fnn_idx N, fnn_idx C, fnn_idx L, fnn_idx c0,
                      fnn_idx c1)
{
    const double M = (double)(N * L);
    const fnn_idx cb = FN(bn_block)(N * L, c1 - c0);
    void *mem;
    const FN(bn_scratch) sc = FN(bn_scratch_new)(cb, L, &mem);
    if (!mem)
        return -1;
    FNN_T *a = sc.c; /* the backward's a, beside k and t */
    for (fnn_idx a0 = c0; a0 < c1; a0 += cb) {
        const fnn_idx nc = c1 - a0 < cb ? c1 - a0 : cb;
        FN(bn_sums_bwd)(g, x, mean + a0, N, C, L, a0, nc, &sc);
        for (fnn_idx j = 0; j < nc; j++)
            FN(bn_grad_consts)(w, var, eps, batch_stats, sc.s1[j], sc.s2[j], M, a0 + j, gw, gb, &sc.k[j], &a[j],
                               &sc.t[j]);
        if (gi)
            FN(bn_apply_bwd)(batch_stats, g, x, sc.k, sc.t, mean + a0, a, gi, N, C, L, a0, nc);
    }
    free(mem);
    return 0;
}
