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
 * a far shift and std 1e-3, float32), and the mean within that of σ.
 *
 * Every kernel reads its group's values in memory order: a layer norm row
 * at a time (it stays in L1 for its two passes), a batch norm over (N, C)
 * row by row with each channel's partials in an array (rows 4 KiB apart fall
 * into one L1 set: a tile of rows with its sums in registers stalled on its
 * loads), in
 * blocks of channels of at most FNN_BN_BLOCK_BYTES (blocks of 64-256 KiB, to
 * keep a block in L2 between the statistics and the normalising pass, were
 * slower on the 1 MiB batch than one block). */

#ifndef FNN_NCH
#define FNN_NCH 8 /* terms a lane of partials in the data's dtype adds before they go to float64 */
#define FNN_PILOT 8 /* leading values whose mean is the shift */
#define FNN_BN_BLOCK_BYTES (1024 * 1024) /* a batch norm channel block's values at most */

/* The mean and the variance from shifted sums s1 = Σ(x − c), s2 = Σ(x − c)² of n values;
 * returns whether the shift was too far from the mean for one pass (|μ − c| > σ). */
FNN_INLINE int fnn_shifted_stats(double c, double s1, double s2, double n, double *mu, double *var)
{
    const double m1 = s1 / n, v = s2 / n - m1 * m1;
    *mu = c + m1;
    *var = v > 0 ? v : 0;
    return m1 * m1 > v;
}
#endif

/* What a reduction sums (flags): (x − c) and (x − c)² (0); a and a·(x − c) (NRM_DOT); a layer norm
 * backward row's γg and γg·x̂ with x̂ = (x − c)·r, a = g (NRM_LN, γ = w with NRM_W). */
#ifndef FNN_NRM_KINDS
#define FNN_NRM_KINDS
enum { NRM_DOT = 1, NRM_LN = 2, NRM_W = 4 };
#endif

/* The float64 sums of a partial vector: two native float64 vectors for float32 (its halves), one for
 * float64 (q[1] unused). No vector wider than the build's: GCC would take it apart through the stack. */
#if FNN_IS_F32
typedef float fnn_nrm_half __attribute__((vector_size(FNN_VBYTES / 2)));
FNN_INLINE void FN(nrm_widen)(fnn_v_f64 *q, FNN_V v)
{
    fnn_nrm_half lo, hi;
    memcpy(&lo, &v, sizeof lo);
    memcpy(&hi, (char *)&v + sizeof lo, sizeof hi);
    q[0] += __builtin_convertvector(lo, fnn_v_f64);
    q[1] += __builtin_convertvector(hi, fnn_v_f64);
}
#else
FNN_INLINE void FN(nrm_widen)(fnn_v_f64 *q, FNN_V v) { q[0] += v; }
#endif

FNN_INLINE double FN(nrm_hsum)(const fnn_v_f64 *q)
{
    double s = 0;
    for (int l = 0; l < FNN_LANES_F64; l++) s += q[0][l] + q[1][l];
    return s;
}

/* The two terms at i (a whole vector). */
FNN_INLINE void FN(nrm_term)(const int kind, const FNN_T *FNN_RESTRICT a, const FNN_T *FNN_RESTRICT x,
                             const FNN_T *FNN_RESTRICT w, FNN_V c, FNN_V r, fnn_idx i, FNN_V *u, FNN_V *v)
{
    const FNN_V d = FN(fnn_load)(x + i) - c;
    if (!(kind & (NRM_DOT | NRM_LN))) {
        *u = d;
        *v = d * d;
    } else if (kind & NRM_DOT) {
        const FNN_V av = FN(fnn_load)(a + i);
        *u = av;
        *v = av * d;
    } else {
        const FNN_V xh = d * r, g = FN(fnn_load)(a + i), gg = (kind & NRM_W) ? g * FN(fnn_load)(w + i) : g;
        *u = gg;
        *v = gg * xh;
    }
}

/* *s1, *s2 = the sums of the two terms of `kind` over n contiguous values: 4 vectors of partials in the
 * data's dtype, each lane adding FNN_NCH terms, then added in float64. */
FNN_INLINE void FN(nrm_reduce)(const int kind, const FNN_T *FNN_RESTRICT a, const FNN_T *FNN_RESTRICT x,
                               const FNN_T *FNN_RESTRICT w, FNN_T c, FNN_T r, fnn_idx n, double *s1, double *s2)
{
    const FNN_V cv = (FNN_V){0} + c, rv = (FNN_V){0} + r;
    fnn_v_f64 q1[2] = {{0}}, q2[2] = {{0}};
    FNN_V u, v;
    fnn_idx i = 0;
    while (i + FNN_L <= n) {
        FNN_V p1[4] = {{0}}, p2[4] = {{0}};
        for (int t = 0; t < FNN_NCH && i + 4 * FNN_L <= n; t++, i += 4 * FNN_L)
            for (int k = 0; k < 4; k++) {
                FN(nrm_term)(kind, a, x, w, cv, rv, i + k * FNN_L, &u, &v);
                p1[k] += u;
                p2[k] += v;
            }
        if (i + 4 * FNN_L > n) /* the last whole vectors, at most 3: one more term in some partials */
            for (int k = 0; k < 3; k++)
                if (i + FNN_L <= n) {
                    FN(nrm_term)(kind, a, x, w, cv, rv, i, &u, &v);
                    p1[k] += u;
                    p2[k] += v;
                    i += FNN_L;
                }
        FN(nrm_widen)(q1, (p1[0] + p1[1]) + (p1[2] + p1[3]));
        FN(nrm_widen)(q2, (p2[0] + p2[1]) + (p2[2] + p2[3]));
    }
    double t1 = FN(nrm_hsum)(q1), t2 = FN(nrm_hsum)(q2);
    for (; i < n; i++) {
        const FNN_T d = x[i] - c;
        if (!(kind & (NRM_DOT | NRM_LN))) {
            t1 += (double)d;
            t2 += (double)d * (double)d;
        } else if (kind & NRM_DOT) {
            t1 += (double)a[i];
            t2 += (double)a[i] * (double)d;
        } else {
            const FNN_T xh = d * r, gg = (kind & NRM_W) ? a[i] * w[i] : a[i];
            t1 += (double)gg;
            t2 += (double)gg * (double)xh;
        }
    }
    *s1 = t1;
    *s2 = t2;
}

/* s1 = Σ a and s2 = Σ a·(x − c) (dot), or s1 = Σ(x − c) and s2 = Σ(x − c)² (a unused), over n contiguous values. */
FNN_INLINE void FN(nrm_pair)(const FNN_T *FNN_RESTRICT a, const FNN_T *FNN_RESTRICT x, FNN_T c, fnn_idx n,
                             const int dot, double *s1, double *s2)
{
    FN(nrm_reduce)(dot ? NRM_DOT : 0, a, x, NULL, c, 1, n, s1, s2);
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
    FN(nrm_pair)(x, x, c, n, 0, &s1, &s2);
    if (fnn_shifted_stats((double)c, s1, s2, (double)n, mu, var)) {
        c = (FNN_T)*mu;
        FN(nrm_pair)(x, x, c, n, 0, &s1, &s2);
        fnn_shifted_stats((double)c, s1, s2, (double)n, mu, var);
    }
}

/* ---- layer normalisation: rows of k values ---- */

/* Rows [0, m): out = (x − μ)·r·w + b (w, b NULL: 1, 0), μ and r = 1/sqrt(σ² + eps) written in the data's dtype. */
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
            for (fnn_idx i = 0; i < k; i++) yr[i] = (xr[i] - mc) * rt * w[i] + b[i];
        else if (w)
            for (fnn_idx i = 0; i < k; i++) yr[i] = (xr[i] - mc) * rt * w[i];
        else if (b)
            for (fnn_idx i = 0; i < k; i++) yr[i] = (xr[i] - mc) * rt + b[i];
        else
            for (fnn_idx i = 0; i < k; i++) yr[i] = (xr[i] - mc) * rt;
    }
}

/* Rows [0, m): dL/dx = r·(γg − mean(γg) − x̂·mean(γg·x̂)) into gi (NULL: not wanted), and with sw, sb
 * (k doubles each, added into; NULL: not wanted) the affine gradients Σ g·x̂ and Σ g over the rows, each
 * column's terms of FNN_NCH rows added in pw, pb (k values each of scratch), then in float64. A row:
 * one pass for its two sums, one that writes dL/dx and adds to the columns. */
static void FN(ln_bwd_rows)(const FNN_T *FNN_RESTRICT g, const FNN_T *FNN_RESTRICT x, const FNN_T *FNN_RESTRICT w,
                            const FNN_T *FNN_RESTRICT mean, const FNN_T *FNN_RESTRICT rstd, FNN_T *FNN_RESTRICT gi,
                            double *FNN_RESTRICT sw, double *FNN_RESTRICT sb, FNN_T *FNN_RESTRICT pw,
                            FNN_T *FNN_RESTRICT pb, fnn_idx m, fnn_idx k)
{
    const int cols = sw != NULL;
    for (fnn_idx r0 = 0; r0 < m; r0 += FNN_NCH) {
        const fnn_idx r1 = r0 + FNN_NCH < m ? r0 + FNN_NCH : m;
        if (cols)
            for (fnn_idx i = 0; i < k; i++) pw[i] = pb[i] = 0;
        for (fnn_idx r = r0; r < r1; r++) {
            const FNN_T *gr = g + r * k, *xr = x + r * k;
            const FNN_T mt = mean[r], rt = rstd[r];
            if (gi) {
                double a, bs;
                if (w)
                    FN(nrm_reduce)(NRM_LN | NRM_W, gr, xr, w, mt, rt, k, &a, &bs);
                else
                    FN(nrm_reduce)(NRM_LN, gr, xr, w, mt, rt, k, &a, &bs);
                FNN_T *gir = gi + r * k;
                const FNN_T at = (FNN_T)(a / (double)k), bt = (FNN_T)(bs / (double)k);
                /* constant-flag loops: the column sums ride along in the pass that writes dL/dx */
                if (w && cols)
                    for (fnn_idx i = 0; i < k; i++) {
                        const FNN_T xh = (xr[i] - mt) * rt;
                        gir[i] = rt * (gr[i] * w[i] - at - xh * bt);
                        pw[i] += gr[i] * xh;
                        pb[i] += gr[i];
                    }
                else if (w)
                    for (fnn_idx i = 0; i < k; i++) gir[i] = rt * (gr[i] * w[i] - at - ((xr[i] - mt) * rt) * bt);
                else if (cols)
                    for (fnn_idx i = 0; i < k; i++) {
                        const FNN_T xh = (xr[i] - mt) * rt;
                        gir[i] = rt * (gr[i] - at - xh * bt);
                        pw[i] += gr[i] * xh;
                        pb[i] += gr[i];
                    }
                else
                    for (fnn_idx i = 0; i < k; i++) gir[i] = rt * (gr[i] - at - ((xr[i] - mt) * rt) * bt);
            } else if (cols)
                for (fnn_idx i = 0; i < k; i++) {
                    pw[i] += gr[i] * ((xr[i] - mt) * rt);
                    pb[i] += gr[i];
                }
        }
        if (cols)
            for (fnn_idx i = 0; i < k; i++) {
                sw[i] += (double)pw[i];
                sb[i] += (double)pb[i];
            }
    }
}

/* ---- batch normalisation: x (N, C, L), statistics per channel over N·L values ---- */

/* Channels [c0, c0 + nc): s1 = Σ a (dot) or Σ(x − c), s2 = Σ a·(x − c) or Σ(x − c)², per channel, float64.
 * L = 1 (BatchNorm1d on (N, C)): the channels are contiguous within a row and summed as columns, each
 * channel's terms of FNN_NCH rows in p1, p2 (nc values each of scratch: rows 4 KiB apart would fall into
 * one L1 set, so no tile of rows in registers); L > 1: each (n, c) plane of L values is contiguous. */
FNN_INLINE void FN(bn_sums)(const FNN_T *FNN_RESTRICT a, const FNN_T *FNN_RESTRICT x, const FNN_T *FNN_RESTRICT c,
                            fnn_idx N, fnn_idx C, fnn_idx L, fnn_idx c0, fnn_idx nc, const int dot,
                            double *FNN_RESTRICT s1, double *FNN_RESTRICT s2, FNN_T *FNN_RESTRICT p1,
                            FNN_T *FNN_RESTRICT p2)
{
    for (fnn_idx j = 0; j < nc; j++) s1[j] = s2[j] = 0;
    if (L > 1) {
        for (fnn_idx n = 0; n < N; n++)
            for (fnn_idx j = 0; j < nc; j++) {
                const fnn_idx o = (n * C + c0 + j) * L;
                double t1, t2;
                FN(nrm_pair)(dot ? a + o : x + o, x + o, c[j], L, dot, &t1, &t2);
                s1[j] += t1;
                s2[j] += t2;
            }
        return;
    }
    for (fnn_idx r0 = 0; r0 < N; r0 += FNN_NCH) {
        const fnn_idx r1 = r0 + FNN_NCH < N ? r0 + FNN_NCH : N;
        for (fnn_idx j = 0; j < nc; j++) p1[j] = p2[j] = 0;
        fnn_idx r = r0;
        for (; r + 2 <= r1; r += 2) { /* two rows a pass: half the partials' loads and stores */
            const FNN_T *xr = x + r * C + c0, *ar = dot ? a + r * C + c0 : xr;
            for (fnn_idx j = 0; j < nc; j++) {
                const FNN_T d = xr[j] - c[j], e = xr[C + j] - c[j];
                const FNN_T u = dot ? ar[j] : d, v = dot ? ar[C + j] : e;
                p1[j] += u + v;
                p2[j] += u * d + v * e;
            }
        }
        for (; r < r1; r++) {
            const FNN_T *xr = x + r * C + c0, *ar = dot ? a + r * C + c0 : xr;
            for (fnn_idx j = 0; j < nc; j++) {
                const FNN_T d = xr[j] - c[j], u = dot ? ar[j] : d;
                p1[j] += u;
                p2[j] += u * d;
            }
        }
        for (fnn_idx j = 0; j < nc; j++) {
            s1[j] += (double)p1[j];
            s2[j] += (double)p2[j];
        }
    }
}

/* Channel j of [c0, ...) again around the shift c: s1 = Σ(x − c), s2 = Σ(x − c)² (the rare second pass). */
FNN_INLINE void FN(bn_sums_one)(const FNN_T *x, FNN_T c, fnn_idx N, fnn_idx C, fnn_idx L, fnn_idx ch, double *s1,
                                double *s2)
{
    double t1 = 0, t2 = 0, u1, u2;
    for (fnn_idx n = 0; n < N; n++) {
        FN(nrm_pair)(x + (n * C + ch) * L, x + (n * C + ch) * L, c, L, 0, &u1, &u2);
        t1 += u1;
        t2 += u2;
    }
    *s1 = t1;
    *s2 = t2;
}

/* y = x·sc[c] + sh[c] (g NULL: the forward's scale and shift), or the input gradient
 * y = g·sc[c] − ((x − mean[c])·a[c] + b[c]) (a NULL: y = g·sc[c]), over channels [c0, c0 + nc). */
static void FN(bn_apply)(const FNN_T *FNN_RESTRICT g, const FNN_T *FNN_RESTRICT x, const FNN_T *FNN_RESTRICT sc,
                         const FNN_T *FNN_RESTRICT sh, const FNN_T *FNN_RESTRICT mean, const FNN_T *FNN_RESTRICT a,
                         FNN_T *FNN_RESTRICT y, fnn_idx N, fnn_idx C, fnn_idx L, fnn_idx c0, fnn_idx nc)
{
    for (fnn_idx n = 0; n < N; n++) {
        if (L == 1) {
            const fnn_idx o = n * C + c0;
            const FNN_T *xr = x + o;
            FNN_T *yr = y + o;
            if (!g)
                for (fnn_idx j = 0; j < nc; j++) yr[j] = xr[j] * sc[j] + sh[j];
            else if (a)
                for (fnn_idx j = 0; j < nc; j++) yr[j] = g[o + j] * sc[j] - ((xr[j] - mean[j]) * a[j] + sh[j]);
            else
                for (fnn_idx j = 0; j < nc; j++) yr[j] = g[o + j] * sc[j];
            continue;
        }
        for (fnn_idx j = 0; j < nc; j++) {
            const fnn_idx o = (n * C + c0 + j) * L;
            const FNN_T *xr = x + o;
            FNN_T *yr = y + o;
            const FNN_T s = sc[j], t = sh[j];
            if (!g)
                for (fnn_idx i = 0; i < L; i++) yr[i] = xr[i] * s + t;
            else if (a) {
                const FNN_T m = mean[j], aj = a[j];
                for (fnn_idx i = 0; i < L; i++) yr[i] = g[o + i] * s - ((xr[i] - m) * aj + t);
            } else
                for (fnn_idx i = 0; i < L; i++) yr[i] = g[o + i] * s;
        }
    }
}

/* Channels per block: the block's N·L values of each of its channels fit FNN_BN_BLOCK_BYTES (at least one). */
FNN_INLINE fnn_idx FN(bn_block)(fnn_idx N, fnn_idx L, fnn_idx nc)
{
    fnn_idx per = (fnn_idx)(FNN_BN_BLOCK_BYTES / sizeof(FNN_T)) / (N * L > 0 ? N * L : 1);
    if (L == 1 && per > 4 * FNN_L)
        per -= per % (4 * FNN_L); /* whole vectors of columns */
    return per < 1 ? 1 : (per < nc ? per : nc);
}

/* Forward of channels [c0, c1): with batch_stats the batch's mean and biased variance are written to mean
 * and var, else read from them; y = x·(γr) + (β − μγr), r = 1/sqrt(σ² + eps) (w, b NULL: 1, 0).
 * Returns -1 when out of memory. */
static int FN(bn_fwd)(const FNN_T *x, const FNN_T *w, const FNN_T *b, double eps, int batch_stats, FNN_T *mean,
                      FNN_T *var, FNN_T *out, fnn_idx N, fnn_idx C, fnn_idx L, fnn_idx c0, fnn_idx c1)
{
    const fnn_idx cb = FN(bn_block)(N, L, c1 - c0);
    /* per channel of a block: two float64 sums; the shift, the output's scale and shift, two partials */
    char *mem = malloc((size_t)cb * (5 * sizeof(FNN_T) + 2 * sizeof(double)) + 64);
    if (!mem)
        return -1;
    double *s1 = (double *)mem, *s2 = s1 + cb;
    FNN_T *sft = (FNN_T *)(s2 + cb), *sc = sft + cb, *sh = sc + cb, *p1 = sh + cb, *p2 = p1 + cb;
    const double M = (double)(N * L);
    for (fnn_idx a0 = c0; a0 < c1; a0 += cb) {
        const fnn_idx nc = c1 - a0 < cb ? c1 - a0 : cb;
        if (batch_stats) {
            for (fnn_idx j = 0; j < nc; j++)
                sft[j] = L == 1 ? FN(nrm_pilot)(x + a0 + j, N, C) : FN(nrm_pilot)(x + (a0 + j) * L, L, 1);
            FN(bn_sums)(x, x, sft, N, C, L, a0, nc, 0, s1, s2, p1, p2);
            for (fnn_idx j = 0; j < nc; j++) {
                double mu, v;
                if (fnn_shifted_stats((double)sft[j], s1[j], s2[j], M, &mu, &v)) {
                    /* the shift was far from this channel's mean: once more around the mean */
                    sft[j] = (FNN_T)mu;
                    FN(bn_sums_one)(x, sft[j], N, C, L, a0 + j, &s1[j], &s2[j]);
                    fnn_shifted_stats((double)sft[j], s1[j], s2[j], M, &mu, &v);
                }
                mean[a0 + j] = (FNN_T)mu;
                var[a0 + j] = (FNN_T)v;
            }
        }
        for (fnn_idx j = 0; j < nc; j++) {
            double scale = 1.0 / sqrt((double)var[a0 + j] + eps);
            if (w)
                scale *= (double)w[a0 + j];
            double shift = -(double)mean[a0 + j] * scale;
            if (b)
                shift += (double)b[a0 + j];
            sc[j] = (FNN_T)scale;
            sh[j] = (FNN_T)shift;
        }
        FN(bn_apply)(NULL, x, sc, sh, NULL, NULL, out, N, C, L, a0, nc);
    }
    free(mem);
    return 0;
}

/* Backward of channels [c0, c1): dγ = Σ g·x̂ and dβ = Σ g into gw, gb (NULL: not wanted), dL/dx into gi
 * (NULL: not wanted): r·γ·(g − mean(g) − x̂·mean(g·x̂)) with batch statistics, r·γ·g without.
 * Returns -1 when out of memory. */
static int FN(bn_bwd)(const FNN_T *g, const FNN_T *x, const FNN_T *w, const FNN_T *mean, const FNN_T *var, double eps,
                      int batch_stats, FNN_T *gi, FNN_T *gw, FNN_T *gb, fnn_idx N, fnn_idx C, fnn_idx L, fnn_idx c0,
                      fnn_idx c1)
{
    const fnn_idx cb = FN(bn_block)(N, L, c1 - c0);
    char *mem = malloc((size_t)cb * (5 * sizeof(FNN_T) + 2 * sizeof(double)) + 64);
    if (!mem)
        return -1;
    double *sg = (double *)mem, *sgx = sg + cb;
    FNN_T *k = (FNN_T *)(sgx + cb), *a = k + cb, *bb = a + cb, *p1 = bb + cb, *p2 = p1 + cb;
    const double M = (double)(N * L);
    for (fnn_idx a0 = c0; a0 < c1; a0 += cb) {
        const fnn_idx nc = c1 - a0 < cb ? c1 - a0 : cb;
        FN(bn_sums)(g, x, mean + a0, N, C, L, a0, nc, 1, sg, sgx, p1, p2);
        for (fnn_idx j = 0; j < nc; j++) {
            const double r = 1.0 / sqrt((double)var[a0 + j] + eps), sx = sgx[j] * r;
            if (gb)
                gb[a0 + j] = (FNN_T)sg[j];
            if (gw)
                gw[a0 + j] = (FNN_T)sx;
            const double kd = r * (w ? (double)w[a0 + j] : 1.0);
            k[j] = (FNN_T)kd;
            a[j] = batch_stats ? (FNN_T)(kd * r * sx / M) : 0;
            bb[j] = batch_stats ? (FNN_T)(kd * sg[j] / M) : 0;
        }
        if (gi)
            FN(bn_apply)(g, x, k, bb, mean + a0, batch_stats ? a : NULL, gi, N, C, L, a0, nc);
    }
    free(mem);
    return 0;
}
