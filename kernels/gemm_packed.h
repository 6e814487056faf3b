/* The packed GEMM, for one dtype: BLIS-style cache blocking (a KC x NC block
 * of B packed in NR-column panels, an MC x KC block of A in MR-row panels)
 * around the small GEMM's register tile (gemm.h), OpenMP threads over row
 * blocks. C = act(op(A) op(B) + bias), op(A)(i, p) = a[i*rsa + p*csa],
 * op(B)(p, j) = b[p*rsb + j*csb]; bias and ReLU are applied to each tile as
 * it is stored, sigmoid and tanh to the finished rows while they are in L1.
 */

#define FNN_NR (FNN_NV * FNN_L)

/* Pack an mc x kc block of op(A) into MR-row panels: pa[panel][p][i], zero-padded. */
static void FN(pack_a)(fnn_idx mc, fnn_idx kc, const FNN_T *FNN_RESTRICT a, fnn_idx rsa, fnn_idx csa,
                       FNN_T *FNN_RESTRICT pa)
{
    for (fnn_idx ir = 0; ir < mc; ir += FNN_PACK_MR)
        FN(pack_panel)(FNN_PACK_MR, mc - ir < FNN_PACK_MR ? mc - ir : FNN_PACK_MR, kc, a + ir * rsa, rsa, csa,
                       pa + ir * kc);
}

/* Pack the NR-column panel jp of a kc x nc block of op(B): pb[panel][p][j], zero-padded. */
static void FN(pack_b_panel)(fnn_idx nc, fnn_idx kc, fnn_idx jp, const FNN_T *FNN_RESTRICT b, fnn_idx rsb,
                             fnn_idx csb, FNN_T *FNN_RESTRICT pb)
{
    fnn_idx j0 = jp * FNN_NR;
    FN(pack_panel)(FNN_NR, nc - j0 < FNN_NR ? nc - j0 : FNN_NR, kc, b + j0 * csb, csb, rsb, pb + j0 * kc);
}

/* One MC x NC block of C: pack A (unless read in place), run the tiles. */
static void FN(packed_block)(fnn_idx mc, fnn_idx kc, fnn_idx nc, fnn_idx npanels, const FNN_T *ab, fnn_idx rsa,
                             fnn_idx csa, const FNN_T *pb, FNN_T *pa, FNN_T *cb, fnn_idx ldc, int first, int last,
                             const FNN_T *bias, int act)
{
    /* Packing A pays for itself through reuse across the B panels; with one
     * or two panels, A is read in place. */
    const int direct = npanels <= 2;
    const int relu = last && act == FNN_ACT_RELU;
    if (!direct)
        FN(pack_a)(mc, kc, ab, rsa, csa, pa);
    for (fnn_idx jr = 0; jr < nc; jr += FNN_NR) {
        fnn_idx nr = nc - jr < FNN_NR ? nc - jr : FNN_NR;
        int nvec = (int)((nr + FNN_L - 1) / FNN_L), nlast = (int)(nr % FNN_L);
        const FNN_T *bias_j = (last && bias) ? bias + jr : NULL;
        const FNN_T *pbj = pb + jr * kc;
        FNN_T *cj = cb + jr;
        if (direct) {
            if (nvec == 2)
                FN(panel)(FNN_PACK_MR, 2, mc, kc, kc, ab, rsa, csa, pbj, FNN_NR, NULL, cj, ldc, nlast, !first,
                          bias_j, relu);
            else
                FN(panel)(FNN_PACK_MR, 1, mc, kc, kc, ab, rsa, csa, pbj, FNN_NR, NULL, cj, ldc, nlast, !first,
                          bias_j, relu);
        } else {
            for (fnn_idx ir = 0; ir < mc; ir += FNN_PACK_MR) {
                fnn_idx mr = mc - ir < FNN_PACK_MR ? mc - ir : FNN_PACK_MR;
                const FNN_T *pai = pa + ir * kc;
                if (nvec == 2)
                    FN(panel)(FNN_PACK_MR, 2, mr, kc, kc, pai, 1, FNN_PACK_MR, pbj, FNN_NR, NULL, cj + ir * ldc,
                              ldc, nlast, !first, bias_j, relu);
                else
                    FN(panel)(FNN_PACK_MR, 1, mr, kc, kc, pai, 1, FNN_PACK_MR, pbj, FNN_NR, NULL, cj + ir * ldc,
                              ldc, nlast, !first, bias_j, relu);
            }
        }
        if (last)
            FN(act_rows)(act, cj, ldc, mc, nr);
    }
}

/* The whole product by one thread (team = 0), or by every thread of the
 * enclosing OpenMP team sharing one packed B block (team = 1). */
static void FN(packed_body)(fnn_idx m, fnn_idx n, fnn_idx k, const FNN_T *a, fnn_idx rsa, fnn_idx csa,
                            const FNN_T *b, fnn_idx rsb, fnn_idx csb, FNN_T *c, fnn_idx ldc, const FNN_T *bias,
                            int act, FNN_T *pb, fnn_idx mc_blk, int team, int *err)
{
    int owned_a;
    FNN_T *pa = (FNN_T *)fnn_scratch(1, (size_t)FNN_KC * (size_t)(mc_blk + FNN_PACK_MR) * sizeof(FNN_T), &owned_a);
    if (!pa)
        *err = 1; /* still take part in the work-sharing loops (barriers) */
    fnn_idx nmb = (m + mc_blk - 1) / mc_blk;
    /* k in equal blocks of at most KC: no short last block that reloads C for a few steps */
    fnn_idx kc_blk = (k + (k + FNN_KC - 1) / FNN_KC - 1) / ((k + FNN_KC - 1) / FNN_KC);
    for (fnn_idx jc = 0; jc < n; jc += FNN_NC) {
        fnn_idx nc = n - jc < FNN_NC ? n - jc : FNN_NC;
        fnn_idx npanels = (nc + FNN_NR - 1) / FNN_NR;
        for (fnn_idx pc = 0; pc < k; pc += kc_blk) {
            fnn_idx kc = k - pc < kc_blk ? k - pc : kc_blk;
            int first = (pc == 0), last = (pc + kc >= k);
            const FNN_T *bb = b + pc * rsb + jc * csb;
            const FNN_T *bias_c = bias ? bias + jc : NULL;
            if (team) {
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
                for (fnn_idx jp = 0; jp < npanels; ++jp)
                    FN(pack_b_panel)(nc, kc, jp, bb, rsb, csb, pb);
                /* implicit barrier: the packed B block is complete */
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
                for (fnn_idx ib = 0; ib < nmb; ++ib) {
                    fnn_idx ic = ib * mc_blk;
                    fnn_idx mc = m - ic < mc_blk ? m - ic : mc_blk;
                    if (pa)
                        FN(packed_block)(mc, kc, nc, npanels, a + ic * rsa + pc * csa, rsa, csa, pb, pa,
                                         c + ic * ldc + jc, ldc, first, last, bias_c, act);
                }
                /* implicit barrier: nobody still reads pb when it is repacked */
            } else {
                for (fnn_idx jp = 0; jp < npanels; ++jp)
                    FN(pack_b_panel)(nc, kc, jp, bb, rsb, csb, pb);
                for (fnn_idx ib = 0; ib < nmb && pa; ++ib) {
                    fnn_idx ic = ib * mc_blk;
                    fnn_idx mc = m - ic < mc_blk ? m - ic : mc_blk;
                    FN(packed_block)(mc, kc, nc, npanels, a + ic * rsa + pc * csa, rsa, csa, pb, pa,
                                     c + ic * ldc + jc, ldc, first, last, bias_c, act);
                }
            }
        }
    }
    if (owned_a)
        free(pa);
}

/* The packed algorithm with row blocks of mc_blk: B packed in this thread's
 * buffer, shared by a team of nthreads (1: no parallel region is opened). */
static int FN(packed_run)(fnn_idx m, fnn_idx n, fnn_idx k, const FNN_T *a, fnn_idx rsa, fnn_idx csa, const FNN_T *b,
                          fnn_idx rsb, fnn_idx csb, FNN_T *c, fnn_idx ldc, const FNN_T *bias, int act, fnn_idx mc_blk,
                          int nthreads)
{
    fnn_idx ncb = n < FNN_NC ? n : FNN_NC;
    fnn_idx npanels = (ncb + FNN_NR - 1) / FNN_NR;
    int err = 0, owned;
    FNN_T *pb = (FNN_T *)fnn_scratch(0, (size_t)FNN_KC * (size_t)(npanels * FNN_NR) * sizeof(FNN_T), &owned);
    if (!pb)
        return -1;
    if (nthreads > 1) {
#ifdef _OPENMP
#pragma omp parallel num_threads(nthreads)
#endif
        FN(packed_body)(m, n, k, a, rsa, csa, b, rsb, csb, c, ldc, bias, act, pb, mc_blk, 1, &err);
    } else {
        FN(packed_body)(m, n, k, a, rsa, csa, b, rsb, csb, c, ldc, bias, act, pb, mc_blk, 0, &err);
    }
    if (owned)
        free(pb);
    return err ? -1 : 0;
}

/* x rounded up to whole packed tiles. */
FNN_INLINE fnn_idx FN(whole_tiles)(fnn_idx x) { return (x + FNN_PACK_MR - 1) / FNN_PACK_MR * FNN_PACK_MR; }

/* The packed algorithm on one thread (`accumulate` is not used: it overwrites C;
 * gemm_small's parameters, for FN(gemm_slabs)). */
static int FN(packed_serial)(fnn_idx m, fnn_idx n, fnn_idx k, const FNN_T *a, fnn_idx rsa, fnn_idx csa,
                             const FNN_T *b, fnn_idx rsb, fnn_idx csb, FNN_T *c, fnn_idx ldc, int accumulate,
                             const FNN_T *bias, int act)
{
    fnn_idx nmb = (m + FNN_MC - 1) / FNN_MC; /* m in equal blocks of at most MC (whole tiles) */
    (void)accumulate;
    return FN(packed_run)(m, n, k, a, rsa, csa, b, rsb, csb, c, ldc, bias, act, FN(whole_tiles)((m + nmb - 1) / nmb),
                          1);
}

static int FN(gemm_packed)(fnn_idx m, fnn_idx n, fnn_idx k, const FNN_T *a, fnn_idx rsa, fnn_idx csa,
                           const FNN_T *b, fnn_idx rsb, fnn_idx csb, FNN_T *c, fnn_idx ldc, const FNN_T *bias,
                           int act, int nthreads)
{
    double work = (double)m * (double)n * (double)k;
    if (m <= 0 || n <= 0)
        return 0;
    if (k <= 0) /* an empty sum: the small GEMM writes act(bias) */
        return FN(gemm_small)(m, n, k, a, rsa, csa, b, rsb, csb, c, ldc, 0, bias, act);
    if (nthreads > 1 && work < fnn_tune.gemm_parallel_min_flops)
        nthreads = 1;
    if (nthreads <= 1)
        return FN(packed_serial)(m, n, k, a, rsa, csa, b, rsb, csb, c, ldc, 0, bias, act);
#ifdef _OPENMP
    if (work < fnn_tune.gemm_shared_min_flops) /* mid-sized: one slab of C per thread */
        return FN(gemm_slabs)(FN(packed_serial), FNN_NR, FNN_PACK_MR, m, n, k, a, rsa, csa, b, rsb, csb, c, ldc, 0,
                              bias, act, nthreads);
#endif
    {
        /* Large products: one packed B block shared by the team, row blocks
         * of C split over the threads (a few barriers per KC step). */
        fnn_idx mc_blk = FN(whole_tiles)((m + nthreads - 1) / nthreads);
        if (mc_blk >= FNN_MC) { /* round the block count up to a multiple of the thread count */
            fnn_idx nmb = (m + FNN_MC - 1) / FNN_MC;
            nmb = (nmb + nthreads - 1) / nthreads * nthreads;
            mc_blk = FN(whole_tiles)((m + nmb - 1) / nmb);
        }
        return FN(packed_run)(m, n, k, a, rsa, csa, b, rsb, csb, c, ldc, bias, act, mc_blk, nthreads);
    }
}

/* A B operand that stays fixed over many products (a recurrent weight over
 * the time steps), packed once: op(B) (k, n) as the packed GEMM's B block,
 * all k rows in one, in NR-column panels zero-padded to whole panels
 * (k * FN(prepacked_size)(n) elements). Contiguous panels keep a step's
 * product out of the cache-set conflicts of a B read with a power-of-two
 * row stride. */
FNN_INLINE fnn_idx FN(prepacked_size)(fnn_idx n) { return (n + FNN_NR - 1) / FNN_NR * FNN_NR; }

static void FN(gemm_pack_b)(fnn_idx k, fnn_idx n, const FNN_T *b, fnn_idx rsb, fnn_idx csb, FNN_T *pb)
{
    for (fnn_idx jp = 0; jp * FNN_NR < n; ++jp)
        FN(pack_b_panel)(n, k, jp, b, rsb, csb, pb);
}

/* C (m, n) += op(A) B, or C = op(A) B unless accumulate, with B packed by
 * FN(gemm_pack_b): one thread, panel by panel (a panel stays in L1 over all
 * rows), every element summed over p = 0..k-1 in order as by FN(gemm_small). */
static void FN(gemm_prepacked)(fnn_idx m, fnn_idx n, fnn_idx k, const FNN_T *a, fnn_idx rsa, fnn_idx csa,
                               const FNN_T *pb, FNN_T *c, fnn_idx ldc, int accumulate)
{
    for (fnn_idx j0 = 0; j0 < n; j0 += FNN_NR) {
        fnn_idx w = n - j0 < FNN_NR ? n - j0 : FNN_NR;
        int nvec = (int)((w + FNN_L - 1) / FNN_L), nlast = (int)(w % FNN_L);
        if (nvec == 2)
            FN(panel)(FNN_MR, 2, m, k, k, a, rsa, csa, pb + j0 * k, FNN_NR, NULL, c + j0, ldc, nlast, accumulate,
                      NULL, 0);
        else
            FN(panel)(FNN_MR, 1, m, k, k, a, rsa, csa, pb + j0 * k, FNN_NR, NULL, c + j0, ldc, nlast, accumulate,
                      NULL, 0);
    }
}

#undef FNN_NR
