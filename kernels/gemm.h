/* The small GEMM, for one dtype: one register tile, used by the dense layers
 * (straight from the operands), by the packed GEMM (gemm_packed.h, on packed
 * panels), by the convolution (rows of B at shifted offsets) and by the
 * recurrent steps (accumulating into C).
 *
 * Row-major C (m, n) = op(A) op(B) with op(A)(i, p) = a[i*sai + p*sap] and
 * B read row by row: row p at b + p*ldb, or at b + boff[p]. A tile of
 * rows x nvec vectors of C stays in registers over the whole k loop; each
 * step broadcasts one element of A per row and loads nvec vectors of B.
 * Every element of C is accumulated over p = 0..k-1 in order, whichever tile
 * computes it, so splitting C's rows or columns over threads never changes a
 * bit of the result.
 */

#define FNN_MR_MAX (FNN_MR > FNN_PACK_MR ? FNN_MR : FNN_PACK_MR)

/* A whole vector, or only its first n lanes when n > 0. */
FNN_INLINE FNN_V FN(ldv)(const FNN_T *p, int n) { return n ? FN(fnn_loadn)(p, n) : FN(fnn_load)(p); }
FNN_INLINE void FN(stv)(FNN_T *p, FNN_V v, int n)
{
    if (n)
        FN(fnn_storen)(p, v, n);
    else
        FN(fnn_store)(p, v);
}

/* One step of the k loop: acc[i][:] += A(i, p) B(p, :) for the tile's rows,
 * B's last vector read in nlast lanes when nlast > 0 (0 here keeps whole loads). */
FNN_INLINE void FN(tile_step)(FNN_V acc[][FNN_NV], const int rows, const int nvec, const FNN_T *bp,
                              const FNN_T *ap, fnn_idx sai, int nlast)
{
    FNN_V bv[FNN_NV];
#pragma GCC unroll 4
    for (int j = 0; j < nvec; j++)
        bv[j] = FN(ldv)(bp + j * FNN_L, j == nvec - 1 ? nlast : 0);
#pragma GCC unroll 16
    for (int i = 0; i < rows; i++) {
        const FNN_T av = ap[i * sai];
#pragma GCC unroll 4
        for (int j = 0; j < nvec; j++)
            acc[i][j] += av * bv[j];
    }
}

/* C[i, 0:w] for i < rows (w = nvec vectors, the last one nlast lanes if nlast > 0):
 *   acc = load_c ? C : 0;  acc += sum_p A(i, p) B(p, :);  acc += bias;  relu;  store.
 * B's rows p < kfull are read as whole vectors (lanes past w are read but
 * never stored); the rest read only the valid lanes of the last vector. */
FNN_INLINE void FN(tile)(const int rows, const int nvec, fnn_idx k, fnn_idx kfull, const FNN_T *a, fnn_idx sai,
                         fnn_idx sap, const FNN_T *b, fnn_idx ldb, const fnn_idx *boff, FNN_T *c, fnn_idx ldc,
                         int nlast, int load_c, const FNN_T *bias, int relu)
{
    FNN_V acc[FNN_MR_MAX][FNN_NV];
#pragma GCC unroll 16
    for (int i = 0; i < rows; i++)
#pragma GCC unroll 4
        for (int j = 0; j < nvec; j++)
            acc[i][j] = load_c ? FN(ldv)(c + i * ldc + j * FNN_L, j == nvec - 1 ? nlast : 0) : (FNN_V){0};
    fnn_idx p = 0;
    for (; p < kfull; p++)
        FN(tile_step)(acc, rows, nvec, boff ? b + boff[p] : b + p * ldb, a + p * sap, sai, 0);
    for (; p < k; p++) /* the last rows of B, where a whole last vector would read past its end */
        FN(tile_step)(acc, rows, nvec, boff ? b + boff[p] : b + p * ldb, a + p * sap, sai, nlast);
    FNN_V bias_v[FNN_NV] = {{0}};
    if (bias) {
#pragma GCC unroll 4
        for (int j = 0; j < nvec; j++)
            bias_v[j] = FN(ldv)(bias + j * FNN_L, j == nvec - 1 ? nlast : 0);
    }
#pragma GCC unroll 16
    for (int i = 0; i < rows; i++)
#pragma GCC unroll 4
        for (int j = 0; j < nvec; j++) {
            FNN_V v = acc[i][j];
            if (bias)
                v += bias_v[j];
            if (relu) /* v <= 0 -> 0; positives and NaN unchanged */
                v = (FNN_V)((FNN_VI)v & ~(FNN_VI)(v <= (FNN_V){0}));
            FN(stv)(c + i * ldc + j * FNN_L, v, j == nvec - 1 ? nlast : 0);
        }
}

/* All m rows of one column panel (nvec vectors, the last nlast lanes): tiles
 * of mr rows, then the remainder by tiles of 8, 4, 2 and 1 rows. */
FNN_INLINE void FN(panel)(const int mr, const int nvec, fnn_idx m, fnn_idx k, fnn_idx kfull, const FNN_T *a,
                          fnn_idx sai, fnn_idx sap, const FNN_T *b, fnn_idx ldb, const fnn_idx *boff, FNN_T *c,
                          fnn_idx ldc, int nlast, int load_c, const FNN_T *bias, int relu)
{
    fnn_idx i = 0;
    for (; i + mr <= m; i += mr)
        FN(tile)(mr, nvec, k, kfull, a + i * sai, sai, sap, b, ldb, boff, c + i * ldc, ldc, nlast, load_c, bias, relu);
#if FNN_MR_MAX > 8
    if (mr > 8 && m - i >= 8) {
        FN(tile)(8, nvec, k, kfull, a + i * sai, sai, sap, b, ldb, boff, c + i * ldc, ldc, nlast, load_c, bias, relu);
        i += 8;
    }
#endif
#if FNN_MR_MAX > 4
    if (mr > 4 && m - i >= 4) {
        FN(tile)(4, nvec, k, kfull, a + i * sai, sai, sap, b, ldb, boff, c + i * ldc, ldc, nlast, load_c, bias, relu);
        i += 4;
    }
#endif
    if (mr > 2 && m - i >= 2) {
        FN(tile)(2, nvec, k, kfull, a + i * sai, sai, sap, b, ldb, boff, c + i * ldc, ldc, nlast, load_c, bias, relu);
        i += 2;
    }
    if (m - i >= 1)
        FN(tile)(1, nvec, k, kfull, a + i * sai, sai, sap, b, ldb, boff, c + i * ldc, ldc, nlast, load_c, bias, relu);
}

/* Rows p of B (row stride ldb, n columns, k rows) whose whole vector starting
 * at column j reads inside B: p*ldb + j + L <= (k-1)*ldb + n. */
FNN_INLINE fnn_idx FN(rows_readable)(fnn_idx k, fnn_idx n, fnn_idx ldb, fnn_idx j)
{
    fnn_idx room = (k - 1) * ldb + n - j - FNN_L;
    if (room < 0)
        return 0;
    fnn_idx rows = ldb > 0 ? room / ldb + 1 : k;
    return rows < k ? rows : k;
}

/* C (m, n) (+)= A B with B row-major in memory (row stride ldb), over column
 * panels of FNN_NV vectors. Without boff, kfull is found per panel; with boff
 * the caller guarantees whole vectors everywhere (n a multiple of the lanes). */
FNN_INLINE void FN(tiles)(const int mr, fnn_idx m, fnn_idx n, fnn_idx k, const FNN_T *a, fnn_idx sai, fnn_idx sap,
                          const FNN_T *b, fnn_idx ldb, const fnn_idx *boff, int padded, FNN_T *c, fnn_idx ldc,
                          int load_c, const FNN_T *bias, int relu)
{
    const fnn_idx nr = FNN_NV * FNN_L;
    for (fnn_idx j0 = 0; j0 < n; j0 += nr) {
        fnn_idx w = n - j0 < nr ? n - j0 : nr;
        int nvec = (int)((w + FNN_L - 1) / FNN_L), nlast = (int)(w % FNN_L);
        fnn_idx kfull = (boff || padded || !nlast) ? k : FN(rows_readable)(k, n, ldb, j0 + (nvec - 1) * FNN_L);
        const FNN_T *bias_j = bias ? bias + j0 : NULL;
        if (nvec == 2)
            FN(panel)(mr, 2, m, k, kfull, a, sai, sap, b + j0, ldb, boff, c + j0, ldc, nlast, load_c, bias_j, relu);
        else
            FN(panel)(mr, 1, m, k, kfull, a, sai, sap, b + j0, ldb, boff, c + j0, ldc, nlast, load_c, bias_j, relu);
    }
}

/* dst[p*ldd + j] = src[j*lds + p] for an L x L block, transposed in registers. */
FNN_INLINE void FN(transpose_block)(const FNN_T *src, fnn_idx lds, FNN_T *dst, fnn_idx ldd)
{
    FNN_V r[FNN_L];
#pragma GCC unroll 16
    for (int q = 0; q < FNN_L; q++)
        r[q] = FN(fnn_load)(src + q * lds);
#if defined(__clang__) /* __builtin_shuffle is GCC's */
    FNN_T t[FNN_L][FNN_L];
    for (int q = 0; q < FNN_L; q++)
        for (int l = 0; l < FNN_L; l++)
            t[l][q] = r[q][l];
    for (int q = 0; q < FNN_L; q++)
        r[q] = FN(fnn_load)(t[q]);
#else
    FNN_TRANSPOSE_BLOCK(FNN_VI, FNN_L, r);
#endif
#pragma GCC unroll 16
    for (int q = 0; q < FNN_L; q++)
        FN(fnn_store)(dst + q * ldd, r[q]);
}

/* Packs w <= W rows of X, X(i, p) = x[i*rs + p*cs] for p < kc, as
 * dst[p*W + i], zero-padded to W: the packed layout of both operands (an A
 * panel of MR rows; a B panel of columns, the rows of op(B)ᵀ). Rows that are
 * contiguous in p (a weight read as Wᵀ) go by L x L blocks transposed in
 * registers. */
FNN_INLINE void FN(pack_panel)(const fnn_idx W, fnn_idx w, fnn_idx kc, const FNN_T *FNN_RESTRICT x, fnn_idx rs,
                               fnn_idx cs, FNN_T *FNN_RESTRICT dst)
{
    if (w == W && rs == 1) {
        for (fnn_idx p = 0; p < kc; ++p)
#pragma GCC unroll 16
            for (fnn_idx i = 0; i < W; ++i)
                dst[p * W + i] = x[p * cs + i];
        return;
    }
    fnn_idx i0 = 0;
    if (cs == 1) {
        for (; i0 + FNN_L <= w; i0 += FNN_L) {
            fnn_idx p = 0;
            for (; p + FNN_L <= kc; p += FNN_L)
                FN(transpose_block)(x + i0 * rs + p, rs, dst + p * W + i0, W);
            for (; p < kc; ++p)
                for (fnn_idx i = i0; i < i0 + FNN_L; ++i)
                    dst[p * W + i] = x[i * rs + p];
        }
        for (fnn_idx i = i0; i < w; ++i)
            for (fnn_idx p = 0; p < kc; ++p)
                dst[p * W + i] = x[i * rs + p];
    } else {
        for (fnn_idx p = 0; p < kc; ++p)
            for (fnn_idx i = i0; i < w; ++i)
                dst[p * W + i] = x[i * rs + p * cs];
    }
    if (w < W)
        for (fnn_idx p = 0; p < kc; ++p)
            for (fnn_idx i = w; i < W; ++i)
                dst[p * W + i] = 0;
}

/* C (m, n) = act(A Bᵀ-like dots + bias), or C += dots: rows of A (unit csa)
 * and columns of B (unit rsb) are both contiguous in p. Used where packing
 * B would cost more than the product: one output column, or few rows. */
static void FN(gemm_dots)(fnn_idx m, fnn_idx n, fnn_idx k, const FNN_T *a, fnn_idx rsa, const FNN_T *b, fnn_idx csb,
                          FNN_T *c, fnn_idx ldc, int accumulate, const FNN_T *bias, int relu)
{
    for (fnn_idx i = 0; i < m; i++) {
        const FNN_T *FNN_RESTRICT ar = a + i * rsa;
        for (fnn_idx j = 0; j < n; j++) {
            const FNN_T *FNN_RESTRICT br = b + j * csb;
            FNN_T s = 0;
            FNN_SIMD_REDUCTION(+ : s)
            for (fnn_idx p = 0; p < k; p++)
                s += ar[p] * br[p];
            if (accumulate) {
                c[i * ldc + j] += s;
            } else {
                if (bias)
                    s += bias[j];
                if (relu)
                    s = !(s <= 0) ? s : 0;
                c[i * ldc + j] = s;
            }
        }
    }
}

/* Sigmoid and tanh epilogues: applied to finished rows of C (the same maths
 * as the activation kernels). */
static void FN(act_rows)(int act, FNN_T *c, fnn_idx ldc, fnn_idx m, fnn_idx n)
{
    if (act != FNN_ACT_SIGMOID && act != FNN_ACT_TANH)
        return;
    for (fnn_idx i = 0; i < m; i++)
        FN(act_fwd)(act, c + i * ldc, NULL, c + i * ldc, n, 0.0);
}

/* Whether the small kernel forms C by dot products (gemm_dots) rather than
 * by register tiles: rows of A and columns of B contiguous in p, and one
 * output column or fewer than 4 rows. The two paths sum in different orders
 * (the dots' SIMD reduction), so a team's slabs must take the path of the
 * whole product (FN(gemm_small_team)): a slab of one column would otherwise
 * choose the dots where the whole product, and one thread, take the tiles. */
FNN_INLINE int FN(small_dots)(fnn_idx m, fnn_idx n, fnn_idx csa, fnn_idx rsb, fnn_idx csb)
{
    return csa == 1 && rsb == 1 && (n == 1 || (csb != 1 && m < 4));
}

static int FN(gemm_small_path)(fnn_idx m, fnn_idx n, fnn_idx k, const FNN_T *a, fnn_idx rsa, fnn_idx csa,
                               const FNN_T *b, fnn_idx rsb, fnn_idx csb, FNN_T *c, fnn_idx ldc, int accumulate,
                               const FNN_T *bias, int act, int dots)
{
    const int relu = !accumulate && act == FNN_ACT_RELU;
    if (accumulate)
        bias = NULL;
    if (m <= 0 || n <= 0)
        return 0;
    if (k <= 0) { /* an empty sum: C = act(bias), or C unchanged */
        if (!accumulate)
            for (fnn_idx i = 0; i < m; i++) {
                for (fnn_idx j = 0; j < n; j++)
                    c[i * ldc + j] = bias ? bias[j] : 0;
                FN(act_fwd)(act, c + i * ldc, NULL, c + i * ldc, n, 0.0);
            }
        return 0;
    }
    if (n == 1)
        csb = 1; /* one column: its stride is never used */
    if (dots) {
        FN(gemm_dots)(m, n, k, a, rsa, b, csb, c, ldc, accumulate, bias, relu);
    } else if (csb != 1) {
        int owned;
        fnn_idx ldp = (n + FNN_L - 1) / FNN_L * FNN_L;
        FNN_T *bp = (FNN_T *)fnn_scratch(2, (size_t)k * (size_t)ldp * sizeof(FNN_T), &owned);
        if (bp == NULL)
            return -1;
        FN(pack_panel)(ldp, n, k, b, csb, rsb, bp); /* bp (k, ldp) = op(B), zero-padded */
        FN(tiles)(FNN_MR, m, n, k, a, rsa, csa, bp, ldp, NULL, 1, c, ldc, accumulate, bias, relu);
        if (owned)
            free(bp);
    } else {
        FN(tiles)(FNN_MR, m, n, k, a, rsa, csa, b, rsb, NULL, 0, c, ldc, accumulate, bias, relu);
    }
    if (!accumulate)
        FN(act_rows)(act, c, ldc, m, n);
    return 0;
}

/* C (m, n) = act(op(A) op(B) + bias), or C += op(A) op(B) with accumulate, on one thread. */
static int FN(gemm_small)(fnn_idx m, fnn_idx n, fnn_idx k, const FNN_T *a, fnn_idx rsa, fnn_idx csa,
                          const FNN_T *b, fnn_idx rsb, fnn_idx csb, FNN_T *c, fnn_idx ldc, int accumulate,
                          const FNN_T *bias, int act)
{
    return FN(gemm_small_path)(m, n, k, a, rsa, csa, b, rsb, csb, c, ldc, accumulate, bias, act,
                               FN(small_dots)(m, n, csa, rsb, csb));
}

/* The two paths with gemm_small's parameters, for a team's slabs (FN(gemm_slabs)). */
static int FN(gemm_small_dots)(fnn_idx m, fnn_idx n, fnn_idx k, const FNN_T *a, fnn_idx rsa, fnn_idx csa,
                               const FNN_T *b, fnn_idx rsb, fnn_idx csb, FNN_T *c, fnn_idx ldc, int accumulate,
                               const FNN_T *bias, int act)
{
    return FN(gemm_small_path)(m, n, k, a, rsa, csa, b, rsb, csb, c, ldc, accumulate, bias, act, 1);
}

static int FN(gemm_small_tiles)(fnn_idx m, fnn_idx n, fnn_idx k, const FNN_T *a, fnn_idx rsa, fnn_idx csa,
                                const FNN_T *b, fnn_idx rsb, fnn_idx csb, FNN_T *c, fnn_idx ldc, int accumulate,
                                const FNN_T *bias, int act)
{
    return FN(gemm_small_path)(m, n, k, a, rsa, csa, b, rsb, csb, c, ldc, accumulate, bias, act, 0);
}

/* A serial product with gemm_small's parameters (the packed GEMM's serial
 * algorithm takes them too, and ignores `accumulate`). */
typedef int (*FN(serial_gemm))(fnn_idx m, fnn_idx n, fnn_idx k, const FNN_T *a, fnn_idx rsa, fnn_idx csa,
                               const FNN_T *b, fnn_idx rsb, fnn_idx csb, FNN_T *c, fnn_idx ldc, int accumulate,
                               const FNN_T *bias, int act);

/* `serial` on a team: C cut into one slab per thread along its longer side
 * (whole units of unit_n columns when n >= m, else of unit_m rows), each
 * thread running the serial product on its slab with its own buffers (a
 * shared operand is packed once per slab, but no barrier costs a sleep and a
 * wake-up). Every element is accumulated over p = 0..k-1 in order whichever
 * thread computes it, so the result is the same bits for any team size.
 * Fewer units than threads: fewer threads (one: no parallel region). */
static int FN(gemm_slabs)(FN(serial_gemm) serial, fnn_idx unit_n, fnn_idx unit_m, fnn_idx m, fnn_idx n, fnn_idx k,
                          const FNN_T *a, fnn_idx rsa, fnn_idx csa, const FNN_T *b, fnn_idx rsb, fnn_idx csb,
                          FNN_T *c, fnn_idx ldc, int accumulate, const FNN_T *bias, int act, int nthreads)
{
    int split_n = n >= m;
    fnn_idx unit = split_n ? unit_n : unit_m;
    fnn_idx len = split_n ? n : m;
    fnn_idx units = (len + unit - 1) / unit;
    int errs = 0;
    if (units < nthreads)
        nthreads = (int)units;
#ifdef _OPENMP
    if (nthreads > 1) {
#pragma omp parallel num_threads(nthreads) reduction(| : errs)
        {
            int t = omp_get_thread_num(), nth = omp_get_num_threads();
            fnn_idx s0 = units * t / nth * unit;
            fnn_idx s1 = units * (t + 1) / nth * unit;
            if (s1 > len)
                s1 = len;
            if (s1 > s0) {
                if (split_n)
                    errs |= serial(m, s1 - s0, k, a, rsa, csa, b + s0 * csb, rsb, csb, c + s0, ldc, accumulate,
                                   bias ? bias + s0 : NULL, act);
                else
                    errs |= serial(s1 - s0, n, k, a + s0 * rsa, rsa, csa, b, rsb, csb, c + s0 * ldc, ldc, accumulate,
                                   bias, act);
            }
        }
        return errs ? -1 : 0;
    }
#endif
    return serial(m, n, k, a, rsa, csa, b, rsb, csb, c, ldc, accumulate, bias, act);
}

/* The small kernel on a team of nthreads, in slabs of C (FN(gemm_slabs)):
 * mid-sized products (a dense layer's 200 x 256 x 100) are too small for the
 * packed GEMM's blocking but take tens of microseconds on one core, worth a
 * team from fnn_tune.gemm_small_parallel_min_flops on. */
static int FN(gemm_small_team)(fnn_idx m, fnn_idx n, fnn_idx k, const FNN_T *a, fnn_idx rsa, fnn_idx csa,
                               const FNN_T *b, fnn_idx rsb, fnn_idx csb, FNN_T *c, fnn_idx ldc, int accumulate,
                               const FNN_T *bias, int act, int nthreads)
{
    if (nthreads > 1 && k > 0 && (double)m * (double)n * (double)k >= fnn_tune.gemm_small_parallel_min_flops)
        return FN(gemm_slabs)(FN(small_dots)(m, n, csa, rsb, csb) ? FN(gemm_small_dots) : FN(gemm_small_tiles),
                              FNN_L, FNN_MR, m, n, k, a, rsa, csa, b, rsb, csb, c, ldc, accumulate, bias, act,
                              nthreads);
    return FN(gemm_small)(m, n, k, a, rsa, csa, b, rsb, csb, c, ldc, accumulate, bias, act);
}
