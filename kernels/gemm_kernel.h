/* One BLIS-style GEMM for one element type and one instruction set.
 *
 * Included several times by gemm.h, each time with these macros defined:
 *   FNN_T       element type (float or double)
 *   FNN_SFX     suffix that makes the names unique (e.g. _s_avx512)
 *   FNN_VBYTES  SIMD register width in bytes (64, 32 or 16)
 *   FNN_MR      rows of the register tile
 *   FNN_NV      vectors per row of the register tile (NR = NV * lanes)
 *   FNN_KC, FNN_MC, FNN_NC  cache blocking (KC x NR panel of B in L1,
 *               MC x KC block of A in L2, KC x NC block of B in L3)
 *
 * C[M, N] = act(op(A) op(B) + bias), op(A)[i, p] = a[i*rsa + p*csa],
 * op(B)[p, j] = b[p*rsb + j*csb], C row-major with row stride ldc.
 *
 * The micro-kernel is plain C over GCC vector types: the MR x NV
 * accumulators are a small array with constant bounds, which GCC keeps in
 * registers after full unrolling, and `acc += a * b` becomes an FMA where
 * the target has one (C's default -ffp-contract=fast).
 */

#define FNN_CAT_(a, b) a##b
#define FNN_CAT(a, b) FNN_CAT_(a, b)
#define FN(name) FNN_CAT(name, FNN_SFX)

#define FNN_VL ((int)(FNN_VBYTES / sizeof(FNN_T)))
#define FNN_NR (FNN_NV * FNN_VL)

/* Aligned vector for the packed panels; "unaligned" one for rows of C. */
typedef FNN_T FN(fnn_v) __attribute__((vector_size(FNN_VBYTES)));
typedef FNN_T FN(fnn_vu) __attribute__((vector_size(FNN_VBYTES), aligned(sizeof(FNN_T)), may_alias));

/* Lane mask of a comparison: integers of the element's width. */
#if FNN_IS_DOUBLE
typedef long long FN(fnn_vi) __attribute__((vector_size(FNN_VBYTES)));
#else
typedef int FN(fnn_vi) __attribute__((vector_size(FNN_VBYTES)));
#endif

static inline FN(fnn_v) FN(fnn_relu_v)(FN(fnn_v) v)
{
    /* v <= 0 -> 0, everything else (positives and NaN) unchanged. */
    FN(fnn_v) zero = {0};
    FN(fnn_vi) le = (v <= zero);
    return (FN(fnn_v))((FN(fnn_vi))v & ~le);
}

/* MR x NR tile of C from a packed MR x kc panel of A and kc x NR panel of B.
 * first: overwrite C (else accumulate); bias (or NULL) and act are the
 * epilogue, applied only on the last kc block. */
static inline __attribute__((always_inline)) void
FN(fnn_ukr)(ptrdiff_t kc, const FNN_T *restrict pa, ptrdiff_t ars, ptrdiff_t acs, const FNN_T *restrict pb,
            FNN_T *restrict c, ptrdiff_t ldc, int m, int n, int first, const FNN_T *restrict bias, int act)
{
    FN(fnn_v) acc[FNN_MR][FNN_NV];
#pragma GCC unroll 32
    for (int i = 0; i < FNN_MR; ++i)
#pragma GCC unroll 8
        for (int j = 0; j < FNN_NV; ++j)
            acc[i][j] = (FN(fnn_v)){0};

    for (ptrdiff_t p = 0; p < kc; ++p) {
        const FN(fnn_v) *bp = (const FN(fnn_v) *)(pb + p * FNN_NR);
        FN(fnn_v) bv[FNN_NV];
#pragma GCC unroll 8
        for (int j = 0; j < FNN_NV; ++j)
            bv[j] = bp[j];
        const FNN_T *ap = pa + p * acs;
#pragma GCC unroll 32
        for (int i = 0; i < FNN_MR; ++i) {
            FNN_T av = ap[i * ars];
#pragma GCC unroll 8
            for (int j = 0; j < FNN_NV; ++j)
                acc[i][j] += av * bv[j];
        }
    }

    if (m == FNN_MR && n == FNN_NR) {
#pragma GCC unroll 32
        for (int i = 0; i < FNN_MR; ++i) {
#pragma GCC unroll 8
            for (int j = 0; j < FNN_NV; ++j) {
                FN(fnn_vu) *cp = (FN(fnn_vu) *)(c + i * ldc + j * FNN_VL);
                FN(fnn_v) v = acc[i][j];
                if (!first)
                    v += *cp;
                if (bias)
                    v += *(const FN(fnn_vu) *)(bias + j * FNN_VL);
                if (act == FNN_ACT_RELU)
                    v = FN(fnn_relu_v)(v);
                *cp = v;
            }
        }
    } else {
        /* Edge tile: spill to a buffer, copy the valid part. */
        FNN_T tmp[FNN_MR * FNN_NR] __attribute__((aligned(64)));
        for (int i = 0; i < FNN_MR; ++i)
            for (int j = 0; j < FNN_NV; ++j)
                *(FN(fnn_v) *)(tmp + i * FNN_NR + j * FNN_VL) = acc[i][j];
        for (int i = 0; i < m; ++i) {
            FNN_T *cr = c + i * ldc;
            const FNN_T *tr = tmp + i * FNN_NR;
            for (int j = 0; j < n; ++j) {
                FNN_T v = tr[j];
                if (!first)
                    v += cr[j];
                if (bias)
                    v += bias[j];
                if (act == FNN_ACT_RELU)
                    v = (v <= 0) ? (FNN_T)0 : v;
                cr[j] = v;
            }
        }
    }
}

/* Pack an mc x kc block of op(A) into MR-row panels: pa[panel][p][i]. */
static void FN(fnn_pack_a)(int mc, ptrdiff_t kc, const FNN_T *restrict a, ptrdiff_t rsa, ptrdiff_t csa,
                           FNN_T *restrict pa)
{
    for (int ir = 0; ir < mc; ir += FNN_MR) {
        int mr = mc - ir < FNN_MR ? mc - ir : FNN_MR;
        const FNN_T *ap = a + ir * rsa;
        FNN_T *dst = pa + (ptrdiff_t)ir * kc;
        if (mr == FNN_MR && rsa == 1) {
            for (ptrdiff_t p = 0; p < kc; ++p)
#pragma GCC unroll 32
                for (int i = 0; i < FNN_MR; ++i)
                    dst[p * FNN_MR + i] = ap[p * csa + i];
        } else if (mr == FNN_MR && csa == 1) {
            for (int i = 0; i < FNN_MR; ++i) {
                const FNN_T *row = ap + i * rsa;
                for (ptrdiff_t p = 0; p < kc; ++p)
                    dst[p * FNN_MR + i] = row[p];
            }
        } else {
            for (ptrdiff_t p = 0; p < kc; ++p) {
                int i = 0;
                for (; i < mr; ++i)
                    dst[p * FNN_MR + i] = ap[i * rsa + p * csa];
                for (; i < FNN_MR; ++i)
                    dst[p * FNN_MR + i] = 0;
            }
        }
    }
}

/* Pack the NR-column panel jp of a kc x nc block of op(B): pb[panel][p][j]. */
static void FN(fnn_pack_b_panel)(int nc, ptrdiff_t kc, int jp, const FNN_T *restrict b, ptrdiff_t rsb, ptrdiff_t csb,
                                 FNN_T *restrict pb)
{
    int j0 = jp * FNN_NR;
    int nr = nc - j0 < FNN_NR ? nc - j0 : FNN_NR;
    const FNN_T *bp = b + j0 * csb;
    FNN_T *dst = pb + (ptrdiff_t)j0 * kc;
    if (nr == FNN_NR && csb == 1) {
        for (ptrdiff_t p = 0; p < kc; ++p)
#pragma GCC unroll 8
            for (int j = 0; j < FNN_NR; ++j)
                dst[p * FNN_NR + j] = bp[p * rsb + j];
    } else if (nr == FNN_NR && rsb == 1) {
        for (int j = 0; j < FNN_NR; ++j) {
            const FNN_T *col = bp + j * csb;
            for (ptrdiff_t p = 0; p < kc; ++p)
                dst[p * FNN_NR + j] = col[p];
        }
    } else {
        for (ptrdiff_t p = 0; p < kc; ++p) {
            int j = 0;
            for (; j < nr; ++j)
                dst[p * FNN_NR + j] = bp[p * rsb + j * csb];
            for (; j < FNN_NR; ++j)
                dst[p * FNN_NR + j] = 0;
        }
    }
}

/* One MC x NC block of C: pack A (unless read in place), run the tiles. */
static inline void FN(fnn_block)(int mc, ptrdiff_t kc, int nc, int npanels, const FNN_T *ab, ptrdiff_t rsa, ptrdiff_t csa,
                                 const FNN_T *pb, FNN_T *pa, FNN_T *cb, ptrdiff_t ldc, int first, int last,
                                 const FNN_T *bias, int act)
{
    /* Packing A pays for itself through reuse across the B panels; with one
     * or two panels, read A in place (only a ragged last row panel is
     * packed, for its zero padding). */
    int direct = (npanels <= 2);
    int mfull = direct ? mc / FNN_MR * FNN_MR : 0;
    if (!direct)
        FN(fnn_pack_a)(mc, kc, ab, rsa, csa, pa);
    else if (mfull < mc)
        FN(fnn_pack_a)(mc - mfull, kc, ab + (ptrdiff_t)mfull * rsa, rsa, csa, pa + (ptrdiff_t)mfull * kc);
    for (int jr = 0; jr < nc; jr += FNN_NR) {
        int nr = nc - jr < FNN_NR ? nc - jr : FNN_NR;
        const FNN_T *bias_j = (last && bias) ? bias + jr : NULL;
        int act_j = last ? act : FNN_ACT_IDENTITY;
        for (int ir = 0; ir < mc; ir += FNN_MR) {
            int mr = mc - ir < FNN_MR ? mc - ir : FNN_MR;
            FNN_T *ct = cb + (ptrdiff_t)ir * ldc + jr;
            if (ir < mfull)
                FN(fnn_ukr)(kc, ab + (ptrdiff_t)ir * rsa, rsa, csa, pb + (ptrdiff_t)jr * kc, ct, ldc, mr, nr, first,
                            bias_j, act_j);
            else
                FN(fnn_ukr)(kc, pa + (ptrdiff_t)ir * kc, 1, FNN_MR, pb + (ptrdiff_t)jr * kc, ct, ldc, mr, nr, first,
                            bias_j, act_j);
            if (act_j == FNN_ACT_SIGMOID || act_j == FNN_ACT_TANH)
                FNN_CAT(fnn_act_tile, FNN_TSFX)(ct, ldc, mr, nr, act_j);
        }
    }
}

/* The whole product by one thread (team = 0), or by every thread of the
 * enclosing OpenMP team sharing one packed B block (team = 1). */
static void FN(fnn_gemm_body)(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const FNN_T *a, ptrdiff_t rsa, ptrdiff_t csa,
                              const FNN_T *b, ptrdiff_t rsb, ptrdiff_t csb, FNN_T *c, ptrdiff_t ldc,
                              const FNN_T *bias, int act, FNN_T *pb, int mc_blk, int team, int *err)
{
    FNN_T *pa = (FNN_T *)fnn_tls_buffer(1, (size_t)FNN_KC * (mc_blk + FNN_MR) * sizeof(FNN_T));
    if (!pa)
        *err = 1; /* still take part in the work-sharing loops (barriers) */
    ptrdiff_t nmb = (M + mc_blk - 1) / mc_blk;
    for (ptrdiff_t jc = 0; jc < N; jc += FNN_NC) {
        int nc = N - jc < FNN_NC ? (int)(N - jc) : FNN_NC;
        int npanels = (nc + FNN_NR - 1) / FNN_NR;
        for (ptrdiff_t pc = 0; pc < K; pc += FNN_KC) {
            ptrdiff_t kc = K - pc < FNN_KC ? K - pc : FNN_KC;
            int first = (pc == 0), last = (pc + kc >= K);
            const FNN_T *bb = b + (ptrdiff_t)pc * rsb + (ptrdiff_t)jc * csb;
            const FNN_T *bias_c = bias ? bias + jc : NULL;
            if (team) {
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
                for (int jp = 0; jp < npanels; ++jp)
                    FN(fnn_pack_b_panel)(nc, kc, jp, bb, rsb, csb, pb);
                /* implicit barrier: the packed B block is complete */
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
                for (ptrdiff_t ib = 0; ib < nmb; ++ib) {
                    ptrdiff_t ic = ib * mc_blk;
                    int mc = M - ic < mc_blk ? (int)(M - ic) : mc_blk;
                    if (pa)
                        FN(fnn_block)(mc, kc, nc, npanels, a + (ptrdiff_t)ic * rsa + (ptrdiff_t)pc * csa, rsa, csa, pb, pa,
                                      c + (ptrdiff_t)ic * ldc + jc, ldc, first, last, bias_c, act);
                }
                /* implicit barrier: nobody still reads pb when it is repacked */
            } else {
                for (int jp = 0; jp < npanels; ++jp)
                    FN(fnn_pack_b_panel)(nc, kc, jp, bb, rsb, csb, pb);
                for (ptrdiff_t ib = 0; ib < nmb && pa; ++ib) {
                    ptrdiff_t ic = ib * mc_blk;
                    int mc = M - ic < mc_blk ? (int)(M - ic) : mc_blk;
                    FN(fnn_block)(mc, kc, nc, npanels, a + (ptrdiff_t)ic * rsa + (ptrdiff_t)pc * csa, rsa, csa, pb, pa,
                                  c + (ptrdiff_t)ic * ldc + jc, ldc, first, last, bias_c, act);
                }
            }
        }
    }
}

static int FN(fnn_gemm_serial)(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const FNN_T *a, ptrdiff_t rsa, ptrdiff_t csa, const FNN_T *b,
                               ptrdiff_t rsb, ptrdiff_t csb, FNN_T *c, ptrdiff_t ldc, const FNN_T *bias, int act)
{
    int ncb = N < FNN_NC ? (int)N : FNN_NC;
    int npanels = (ncb + FNN_NR - 1) / FNN_NR;
    FNN_T *pb = (FNN_T *)fnn_tls_buffer(0, (size_t)FNN_KC * npanels * FNN_NR * sizeof(FNN_T));
    int err = 0;
    if (!pb)
        return -1;
    FN(fnn_gemm_body)(M, N, K, a, rsa, csa, b, rsb, csb, c, ldc, bias, act, pb, FNN_MC, 0, &err);
    return err ? -1 : 0;
}

static int FN(fnn_gemm)(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const FNN_T *a, ptrdiff_t rsa, ptrdiff_t csa,
                        const FNN_T *b, ptrdiff_t rsb, ptrdiff_t csb, FNN_T *c, ptrdiff_t ldc,
                        const FNN_T *bias, int act, int nthreads)
{
    double work = (double)M * N * K;
    if (nthreads > 1 && work < FNN_PARALLEL_MIN_FLOPS)
        nthreads = 1;
    if (nthreads <= 1)
        return FN(fnn_gemm_serial)(M, N, K, a, rsa, csa, b, rsb, csb, c, ldc, bias, act);
#ifdef _OPENMP
    if (work < FNN_SHARED_MIN_FLOPS) {
        /* Mid-sized products: cut C into one slab per thread along its longer
         * side (whole tiles) and let each thread run the serial algorithm on
         * its slab with its own buffers. The operand the slabs share is packed
         * twice, but there is no barrier at all: with passive OpenMP waits a
         * barrier costs a sleep and a wake-up, tens of microseconds. */
        int split_n = N >= M;
        int unit = split_n ? FNN_NR : FNN_MR;
        ptrdiff_t len = split_n ? N : M;
        ptrdiff_t tiles = (len + unit - 1) / unit;
        int errs = 0;
        if (tiles < nthreads)
            nthreads = tiles;
        if (nthreads <= 1)
            return FN(fnn_gemm_serial)(M, N, K, a, rsa, csa, b, rsb, csb, c, ldc, bias, act);
#pragma omp parallel num_threads(nthreads) reduction(| : errs)
        {
            int t = omp_get_thread_num(), nth = omp_get_num_threads();
            ptrdiff_t s0 = tiles * t / nth * unit;
            ptrdiff_t s1 = tiles * (t + 1) / nth * unit;
            if (s1 > len)
                s1 = len;
            if (s1 > s0) {
                if (split_n)
                    errs |= FN(fnn_gemm_serial)(M, s1 - s0, K, a, rsa, csa, b + (ptrdiff_t)s0 * csb, rsb, csb, c + s0,
                                                ldc, bias ? bias + s0 : NULL, act);
                else
                    errs |= FN(fnn_gemm_serial)(s1 - s0, N, K, a + (ptrdiff_t)s0 * rsa, rsa, csa, b, rsb, csb,
                                                c + (ptrdiff_t)s0 * ldc, ldc, bias, act);
            }
        }
        return errs ? -1 : 0;
    }
#endif
    {
        /* Large products: one packed B block shared by the team, row blocks of
         * C split over the threads (a few barriers per KC step). */
        int ncb = N < FNN_NC ? (int)N : FNN_NC;
        int npanels = (ncb + FNN_NR - 1) / FNN_NR;
        FNN_T *pb = (FNN_T *)fnn_tls_buffer(0, (size_t)FNN_KC * npanels * FNN_NR * sizeof(FNN_T));
        int err = 0;
        if (!pb)
            return -1;
        ptrdiff_t per = (M + nthreads - 1) / nthreads;
        per = (per + FNN_MR - 1) / FNN_MR * FNN_MR;
        int mc_blk = per < FNN_MC ? (int)per : FNN_MC;
        if (mc_blk == FNN_MC) {
            /* Round the block count up to a multiple of the thread count. */
            ptrdiff_t nmb = (M + FNN_MC - 1) / FNN_MC;
            nmb = (nmb + nthreads - 1) / nthreads * nthreads;
            mc_blk = (M + nmb - 1) / nmb;
            mc_blk = (mc_blk + FNN_MR - 1) / FNN_MR * FNN_MR;
        }
#ifdef _OPENMP
#pragma omp parallel num_threads(nthreads)
#endif
        FN(fnn_gemm_body)(M, N, K, a, rsa, csa, b, rsb, csb, c, ldc, bias, act, pb, mc_blk, 1, &err);
        return err ? -1 : 0;
    }
}

#undef FNN_VL
#undef FNN_NR
#undef FN
#undef FNN_CAT
#undef FNN_CAT_
