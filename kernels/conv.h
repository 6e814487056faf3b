/* Convolution and pooling kernels, for one dtype.
 *
 * Stride-1 convolution as a "shifted GEMM": with one image zero-padded and
 * stored flat, plane by plane, with row width Wp, every kernel tap (c, u, v)
 * is a constant shift koff = c*plane + u*dH*Wp + v*dW of the same flat
 * output index q = i*Wp + j, so
 *     out[o, q] = sum_k w[k, o] * src[koff[k] + q]
 * over a flat output of Ho*Wp positions (the Wp - Wo junk columns of each row
 * are dropped by the caller). That is the small GEMM with B's row k at
 * src + koff[k]: no im2col matrix. The input gradient is the same product
 * over taps (o, u, v) with negative shifts into a margin of zeros.
 */

#if FNN_IS_F32
/* out (op x q_len, row stride ldo) = wpkᵀ-shaped A (op x k) times the shifted
 * rows of src; op a multiple of FNN_CONV_ROWS, q_len of FNN_CONV_COLS (so
 * every vector is whole; the caller leaves margins past the last row). */
static void FN(conv_shift)(fnn_idx k, fnn_idx op, fnn_idx q_len, const FNN_T *wpk, const fnn_idx *koff,
                           const FNN_T *src, FNN_T *out, fnn_idx ldo)
{
    FN(tiles)(FNN_MR, op, q_len, k, wpk, 1, op, src, 0, koff, 1, out, ldo, 0, NULL, 0);
}

/* gw[(o*k + kk)*FNN_WGRAD_SLOTS + l] += sum over q = l (mod lanes) of g[o*ldg + q] src[koff[kk] + q]:
 * a tile of FNN_WG_O x FNN_WG_K dot products over q kept as vectors of
 * lane-wise partial sums, added up once by the caller (q_len a multiple of
 * FNN_WGRAD_SLOTS; g is zero at the junk positions). */
static void FN(conv_wgrad)(fnn_idx o_len, fnn_idx k, fnn_idx q_len, const FNN_T *g, fnn_idx ldg,
                           const fnn_idx *koff, const FNN_T *src, FNN_T *gw)
{
    enum { OB = FNN_WG_O, KB = FNN_WG_K };
    const fnn_idx QC = 1024; /* pixels per pass: the g and src rows stay in L1 */
    for (fnn_idx q0 = 0; q0 < q_len; q0 += QC) {
        fnn_idx q1 = q0 + QC < q_len ? q0 + QC : q_len;
        for (fnn_idx o0 = 0; o0 < o_len; o0 += OB) {
            int ob = o_len - o0 < OB ? (int)(o_len - o0) : OB;
            for (fnn_idx k0 = 0; k0 < k; k0 += KB) {
                int kb = k - k0 < KB ? (int)(k - k0) : KB;
                FNN_V acc[OB][KB];
                const FNN_T *gr[OB];
                const FNN_T *sr[KB];
#pragma GCC unroll 8
                for (int i = 0; i < OB; i++) {
#pragma GCC unroll 8
                    for (int j = 0; j < KB; j++)
                        acc[i][j] = (FNN_V){0};
                    gr[i] = g + (o0 + (i < ob ? i : 0)) * ldg;   /* rows past the edge repeat row 0 */
                }
#pragma GCC unroll 8
                for (int j = 0; j < KB; j++)
                    sr[j] = src + koff[k0 + (j < kb ? j : 0)];
                for (fnn_idx q = q0; q < q1; q += FNN_L) {
                    FNN_V x[KB];
#pragma GCC unroll 8
                    for (int j = 0; j < KB; j++)
                        x[j] = FN(fnn_load)(sr[j] + q);
#pragma GCC unroll 8
                    for (int i = 0; i < OB; i++) {
                        FNN_V gv = FN(fnn_load)(gr[i] + q);
#pragma GCC unroll 8
                        for (int j = 0; j < KB; j++)
                            acc[i][j] += gv * x[j];
                    }
                }
                for (int i = 0; i < ob; i++)
                    for (int j = 0; j < kb; j++) {
                        FNN_T *p = gw + ((o0 + i) * k + k0 + j) * FNN_WGRAD_SLOTS;
                        FN(fnn_store)(p, FN(fnn_load)(p) + acc[i][j]);
                    }
            }
        }
    }
}
#endif

/* 2x2, stride 2, unpadded max pooling of one plane (the common case), FNN_L
 * outputs per vector. Ties keep the first maximum in row-major order; a NaN
 * beats a number, and the first NaN wins. Per lane a tournament (a|b, c|d,
 * then the two winners; the left one is always the earlier pixel, so "take
 * the right one if !(right <= left) and left is not NaN" keeps the first
 * maximum, and a signed zero never replaces an equal one) picks by bit masks
 * with the same comparisons in every lane, so every instruction set gives
 * the same values and indices. The pixels of a row pair are split into the
 * even (a, c) and odd (b, d) columns by shuffles. A row's last vector
 * overlaps the one before it (the same outputs, written twice) rather than
 * going scalar; a row narrower than a vector runs as one whole vector, whose
 * lanes past the row read pixels below it and write outputs the next rows
 * write again, except at the end of the plane, where it loads and stores
 * only its own elements. Nothing outside the 2·ho rows of src and the ho·wo
 * outputs is touched; dst and idx must not overlap src. */
#if FNN_VBYTES == 32 && FNN_L == 8
/* AVX2 shuffles stay within 128-bit halves (vshufps): the even and odd pixels of outputs
 * 0 1 4 5 | 2 3 6 7; one 64-bit permute of the result and of the offsets restores the order */
#define FNN_POOL_EVEN {0, 2, 8, 10, 4, 6, 12, 14}
#define FNN_POOL_ODD {1, 3, 9, 11, 5, 7, 13, 15}
#define FNN_POOL_FIX {0, 1, 4, 5, 2, 3, 6, 7}
#elif FNN_VBYTES == 32 && FNN_L == 4
/* (vunpcklpd / vunpckhpd: outputs 0 2 | 1 3) */
#define FNN_POOL_EVEN {0, 4, 2, 6}
#define FNN_POOL_ODD {1, 5, 3, 7}
#define FNN_POOL_FIX {0, 2, 1, 3}
#elif FNN_L == 2
#define FNN_POOL_EVEN {0, 2}
#define FNN_POOL_ODD {1, 3}
#elif FNN_L == 4
#define FNN_POOL_EVEN {0, 2, 4, 6}
#define FNN_POOL_ODD {1, 3, 5, 7}
#elif FNN_L == 8
#define FNN_POOL_EVEN {0, 2, 4, 6, 8, 10, 12, 14}
#define FNN_POOL_ODD {1, 3, 5, 7, 9, 11, 13, 15}
#elif FNN_L == 16
#define FNN_POOL_EVEN {0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30}
#define FNN_POOL_ODD {1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31}
#else
#error "max pooling: no shuffle for this lane count"
#endif
/* 2l, output l's first pixel column */
#if FNN_L == 2
#define FNN_POOL_RAMP {0, 2}
#elif FNN_L == 4
#define FNN_POOL_RAMP {0, 2, 4, 6}
#elif FNN_L == 8
#define FNN_POOL_RAMP {0, 2, 4, 6, 8, 10, 12, 14}
#else
#define FNN_POOL_RAMP {0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30}
#endif

/* m ? x : y lane by lane, on the bits (m all ones or zeros). */
FNN_INLINE FNN_V FN(pool_blend)(FNN_VI m, FNN_V x, FNN_V y)
{
    return (FNN_V)(((FNN_VI)x & m) | ((FNN_VI)y & ~m));
}

/* relu(v) = !(v <= 0) ? v : 0, the elementwise ReLU's formula (+0 for -0, NaN kept), on the bits. */
FNN_INLINE FNN_V FN(pool_relu)(FNN_V v)
{
    return (FNN_V)((FNN_VI)v & ~(FNN_VI)(v <= 0));
}

/* The window maxima of the FNN_L windows whose pixel pairs are (x0, x1) in the upper row and (y0, y1)
 * in the lower one; *off the winners' offsets in their windows (0, 1, w or w + 1). w + 1 fits a lane:
 * the ops layer bounds an image (two rows of w at least) by 2^31 - 1 elements. */
FNN_INLINE FNN_V FN(pool_pick)(FNN_V x0, FNN_V x1, FNN_V y0, FNN_V y1, const int relu, fnn_idx w, FNN_VI *off)
{
    typedef __typeof__(((FNN_VI){0})[0]) lane_t;
    const FNN_VI even = FNN_POOL_EVEN, odd = FNN_POOL_ODD;
    FNN_V a = __builtin_shuffle(x0, x1, even), b = __builtin_shuffle(x0, x1, odd);
    FNN_V c = __builtin_shuffle(y0, y1, even), d = __builtin_shuffle(y0, y1, odd);
    if (relu) {
        a = FN(pool_relu)(a);
        b = FN(pool_relu)(b);
        c = FN(pool_relu)(c);
        d = FN(pool_relu)(d);
    }
    FNN_VI tab = ~(FNN_VI)(b <= a) & (FNN_VI)(a == a);
    FNN_VI tcd = ~(FNN_VI)(d <= c) & (FNN_VI)(c == c);
    FNN_V ab = FN(pool_blend)(tab, b, a), cd = FN(pool_blend)(tcd, d, c);
    FNN_VI t = ~(FNN_VI)(cd <= ab) & (FNN_VI)(ab == ab);
    FNN_VI col = (t & tcd) | (~t & tab);   /* all ones: the right pixel won */
    FNN_V m = FN(pool_blend)(t, cd, ab);
    *off = (t & (lane_t)w) - col;
#ifdef FNN_POOL_FIX
    const FNN_VI fix = FNN_POOL_FIX;
    *off = __builtin_shuffle(*off, fix);
    m = __builtin_shuffle(m, fix);
#endif
    return m;
}

/* idx[l] = base + 2l + off[l] for the first n (<= FNN_L) lanes: the winners' flat indices. */
FNN_INLINE void FN(pool_index)(long long *idx, long long base, FNN_VI off, int n)
{
    typedef int64_t wide_t __attribute__((vector_size(FNN_L * 8)));
    const wide_t ramp = FNN_POOL_RAMP;
    wide_t out = base + ramp + __builtin_convertvector(off, wide_t);
    if (n == FNN_L) {
        memcpy(idx, &out, sizeof out);
    } else {
        for (int l = 0; l < n; l++)
            idx[l] = out[l];
    }
}

/* relu: pool relu(src) instead of src */
FNN_INLINE void FN(maxpool2x2_impl)(const FNN_T *src, fnn_idx w, fnn_idx ho, fnn_idx wo, FNN_T *dst,
                                    long long *idx, const int relu)
{
    FNN_VI off;
    for (fnn_idx i = 0; i < ho; i++) {
        const long long p0 = 2LL * i * w;
        const FNN_T *r0 = src + p0, *r1 = r0 + w;
        FNN_T *d = dst + (long long)i * wo;
        long long *x = idx + (long long)i * wo;
        if (wo >= FNN_L) {
            for (fnn_idx j0 = 0; j0 < wo; j0 += FNN_L) {
                fnn_idx j = j0 < wo - FNN_L ? j0 : wo - FNN_L;
                FNN_V m = FN(pool_pick)(FN(fnn_load)(r0 + 2 * j), FN(fnn_load)(r0 + 2 * j + FNN_L),
                                        FN(fnn_load)(r1 + 2 * j), FN(fnn_load)(r1 + 2 * j + FNN_L), relu, w, &off);
                FN(fnn_store)(d + j, m);
                FN(pool_index)(x + j, p0 + 2 * j, off, FNN_L);
            }
        } else if ((long long)i * wo + FNN_L <= (long long)ho * wo && p0 + w + 2 * FNN_L <= 2LL * ho * w) {
            /* a row narrower than a vector, not near the end: whole vectors, reading into the rows
             * below (inside the 2·ho rows pooled) and writing past the row into outputs the next
             * rows write again */
            FNN_V m = FN(pool_pick)(FN(fnn_load)(r0), FN(fnn_load)(r0 + FNN_L), FN(fnn_load)(r1),
                                    FN(fnn_load)(r1 + FNN_L), relu, w, &off);
            FN(fnn_store)(d, m);
            FN(pool_index)(x, p0, off, FNN_L);
        } else if (wo > 0) {
            /* 2·wo < 2·FNN_L pixels a row: the first vector's lanes, then what is left for the second */
            int n = (int)wo, n0 = 2 * n < FNN_L ? 2 * n : FNN_L, n1 = 2 * n - n0;
            FNN_V zero = {0};
            FNN_V m = FN(pool_pick)(FN(fnn_loadn)(r0, n0), n1 > 0 ? FN(fnn_loadn)(r0 + FNN_L, n1) : zero,
                                    FN(fnn_loadn)(r1, n0), n1 > 0 ? FN(fnn_loadn)(r1 + FNN_L, n1) : zero, relu, w,
                                    &off);
            FNN_T o[FNN_L];
            memcpy(o, &m, sizeof o);
            for (int l = 0; l < n; l++)
                d[l] = o[l];
            FN(pool_index)(x, p0, off, n);
        }
    }
}

static void FN(maxpool2x2)(const FNN_T *src, fnn_idx w, fnn_idx ho, fnn_idx wo, FNN_T *dst, long long *idx)
{
    FN(maxpool2x2_impl)(src, w, ho, wo, dst, idx, 0);
}

/* maxpool2x2 of a ReLU's output, from the ReLU's input: the same values and indices (the ReLU
 * and the pooling fused in the training plans, which then never store the ReLU's output). */
static void FN(relu_maxpool2x2)(const FNN_T *src, fnn_idx w, fnn_idx ho, fnn_idx wo, FNN_T *dst, long long *idx)
{
    FN(maxpool2x2_impl)(src, w, ho, wo, dst, idx, 1);
}

#if FNN_IS_F32
/* Winograd F(2x2, 3x3): a 2x2 block of a 3x3 stride-1 convolution's output from the 4x4 patch d of
 * the padded input under it, Y = Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A, 16 multiplications instead of 36 (Lavin
 * and Gray, "Fast Algorithms for Convolutional Neural Networks", 2016). An image's output tiles are
 * numbered t = ti*tw + tj; tile t covers output rows 2ti, 2ti+1 and columns 2tj, 2tj+1 and reads the
 * padded input's rows 2ti..2ti+3 and columns 2tj..2tj+3. Over a block of tiles the 16 products of
 * every (output, input) channel pair are 16 GEMMs of (channels x channels) times (channels x tiles);
 * these kernels are the transforms into and out of that domain. Element xi = 4k + l of a tile's
 * 4x4 block lies at X[xi*ldx + c*ld + t - t0].
 *
 * A tile row's tiles go FNN_L at a time: the even and odd pixel columns are split by the max
 * pooling's shuffles, which on AVX2 leave the tiles of a vector in the order 0 1 4 5 2 3 6 7. The
 * transformed blocks keep that order (every transform uses the same shuffles, so V, M and the
 * gradient's blocks agree tile for tile; the GEMMs do not care), and the output's interleave
 * (FNN_WINO_LO / HI, in-lane unpacks there) puts it back. The tiles left past the last whole vector of
 * a row run one by one in their own order. */
#if FNN_VBYTES == 32 && FNN_L == 8
#define FNN_WINO_LO {0, 8, 1, 9, 4, 12, 5, 13}
#define FNN_WINO_HI {2, 10, 3, 11, 6, 14, 7, 15}
#elif FNN_L == 4
#define FNN_WINO_LO {0, 4, 1, 5}
#define FNN_WINO_HI {2, 6, 3, 7}
#elif FNN_L == 8
#define FNN_WINO_LO {0, 8, 1, 9, 2, 10, 3, 11}
#define FNN_WINO_HI {4, 12, 5, 13, 6, 14, 7, 15}
#elif FNN_L == 16
#define FNN_WINO_LO {0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23}
#define FNN_WINO_HI {8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31}
#else
#error "Winograd: no interleave for this lane count"
#endif

/* The tiles of the block t0 <= t < t0 + nt in tile row ti, columns j0 <= j < j1, starting at t. */
#define FNN_WINO_ROWS(t, t0, nt, tw, ti, j0, j1) \
    for (fnn_idx t = t0, ti, j0, j1; t < t0 + nt && (ti = t / tw, j0 = t % tw, \
         j1 = j0 + (t0 + nt - t) < tw ? j0 + (t0 + nt - t) : tw, 1); t += j1 - j0)

/* Bᵀ d B of one patch given by its columns' values d[k][a] (column k, row a), stored at v[xi*ldx]. */
#define FNN_WINO_IN_BODY(T, d, v, ldx)                                                       \
    do {                                                                                      \
        T s_[4][4];                                                                           \
        for (int k_ = 0; k_ < 4; k_++) { /* Bᵀ d, column k */                                 \
            s_[0][k_] = d[k_][0] - d[k_][2];                                                  \
            s_[1][k_] = d[k_][1] + d[k_][2];                                                  \
            s_[2][k_] = d[k_][2] - d[k_][1];                                                  \
            s_[3][k_] = d[k_][1] - d[k_][3];                                                  \
        }                                                                                     \
        for (int a_ = 0; a_ < 4; a_++) { /* (Bᵀ d) B, row a */                                \
            STORE(v + (4 * a_ + 0) * ldx, s_[a_][0] - s_[a_][2]);                             \
            STORE(v + (4 * a_ + 1) * ldx, s_[a_][1] + s_[a_][2]);                             \
            STORE(v + (4 * a_ + 2) * ldx, s_[a_][2] - s_[a_][1]);                             \
            STORE(v + (4 * a_ + 3) * ldx, s_[a_][1] - s_[a_][3]);                             \
        }                                                                                     \
    } while (0)

/* V = Bᵀ d B of the tiles t0 <= t < t0 + nt of each of the C planes of the padded image xp (planes
 * `plane` elements apart, rows Wp apart, every patch inside the buffer). */
static void FN(wino_in)(const FNN_T *xp, fnn_idx C, fnn_idx plane, fnn_idx Wp, fnn_idx tw, fnn_idx t0, fnn_idx nt,
                        FNN_T *V, fnn_idx ldv, fnn_idx ldx)
{
    const FNN_VI even = FNN_POOL_EVEN, odd = FNN_POOL_ODD;
    for (fnn_idx c = 0; c < C; c++) {
        FNN_WINO_ROWS(t, t0, nt, tw, ti, j0, j1) {
            const FNN_T *r = xp + c * plane + 2 * ti * Wp;
            FNN_T *v = V + c * ldv + (t - t0) - j0;   /* v[j]: tile (ti, j) */
            fnn_idx j = j0;
#define STORE(p, x) FN(fnn_store)((p) + j, (x))
            for (; j + FNN_L <= j1; j += FNN_L) {
                FNN_V d[4][4];
#pragma GCC unroll 4
                for (int a = 0; a < 4; a++) {
                    const FNN_T *ra = r + a * Wp + 2 * j;
                    FNN_V x0 = FN(fnn_load)(ra), x1 = FN(fnn_load)(ra + FNN_L);
                    FNN_V y0 = FN(fnn_load)(ra + 2), y1 = FN(fnn_load)(ra + 2 + FNN_L);
                    d[0][a] = __builtin_shuffle(x0, x1, even);
                    d[1][a] = __builtin_shuffle(x0, x1, odd);
                    d[2][a] = __builtin_shuffle(y0, y1, even);
                    d[3][a] = __builtin_shuffle(y0, y1, odd);
                }
                FNN_WINO_IN_BODY(FNN_V, d, v, ldx);
            }
#undef STORE
#define STORE(p, x) ((p)[j] = (x))
            for (; j < j1; j++) {
                FNN_T d[4][4];
                for (int a = 0; a < 4; a++)
                    for (int k = 0; k < 4; k++)
                        d[k][a] = r[a * Wp + 2 * j + k];
                FNN_WINO_IN_BODY(FNN_T, d, v, ldx);
            }
#undef STORE
        }
    }
}

/* Aᵀ m A of tiles whose blocks are at m[xi*ldx] (vectors or scalars): y0, y1 the upper row's two
 * outputs, z0, z1 the lower row's. */
#define FNN_WINO_OUT_BODY(T, LOAD, m, ldx, y0, y1, z0, z1)                                    \
    do {                                                                                      \
        T p0_[4], p1_[4];                                                                     \
        for (int l_ = 0; l_ < 4; l_++) {                                                      \
            T m0_ = LOAD(m + l_ * ldx), m1_ = LOAD(m + (4 + l_) * ldx);                       \
            T m2_ = LOAD(m + (8 + l_) * ldx), m3_ = LOAD(m + (12 + l_) * ldx);                \
            p0_[l_] = m0_ + m1_ + m2_;                                                        \
            p1_[l_] = m1_ - m2_ - m3_;                                                        \
        }                                                                                     \
        y0 = p0_[0] + p0_[1] + p0_[2];                                                        \
        y1 = p0_[1] - p0_[2] - p0_[3];                                                        \
        z0 = p1_[0] + p1_[1] + p1_[2];                                                        \
        z1 = p1_[1] - p1_[2] - p1_[3];                                                        \
    } while (0)
#define FNN_WINO_SCALAR(p) (*(p))

/* out[o, 2ti + a, 2tj + b] = bias[o] + (Aᵀ M A)[a][b] for the tiles t0 <= t < t0 + nt and the O planes
 * of out (Ho x Wo; a tile's row or column past the edge is dropped); bias may be NULL. */
static void FN(wino_out)(const FNN_T *M, fnn_idx O, fnn_idx ldm, fnn_idx ldx, fnn_idx tw, fnn_idx t0, fnn_idx nt,
                         const FNN_T *bias, FNN_T *out, fnn_idx Ho, fnn_idx Wo)
{
    const FNN_VI lo = FNN_WINO_LO, hi = FNN_WINO_HI;
    fnn_idx whole = Wo / 2;   /* tiles with both columns inside */
    for (fnn_idx o = 0; o < O; o++) {
        FNN_T bo = bias != NULL ? bias[o] : 0;
        FNN_WINO_ROWS(t, t0, nt, tw, ti, j0, j1) {
            const FNN_T *m = M + o * ldm + (t - t0) - j0;
            FNN_T *r0 = out + (o * Ho + 2 * ti) * Wo, *r1 = r0 + Wo;
            int two = 2 * ti + 1 < Ho;
            fnn_idx je = j1 < whole ? j1 : whole, j = j0;
            for (; j + FNN_L <= je; j += FNN_L) {
                FNN_V y0, y1, z0, z1;
                FNN_WINO_OUT_BODY(FNN_V, FN(fnn_load), m + j, ldx, y0, y1, z0, z1);
                y0 += bo;
                y1 += bo;
                FN(fnn_store)(r0 + 2 * j, __builtin_shuffle(y0, y1, lo));
                FN(fnn_store)(r0 + 2 * j + FNN_L, __builtin_shuffle(y0, y1, hi));
                if (two) {
                    z0 += bo;
                    z1 += bo;
                    FN(fnn_store)(r1 + 2 * j, __builtin_shuffle(z0, z1, lo));
                    FN(fnn_store)(r1 + 2 * j + FNN_L, __builtin_shuffle(z0, z1, hi));
                }
            }
            for (; j < j1; j++) {
                FNN_T y0, y1, z0, z1;
                FNN_WINO_OUT_BODY(FNN_T, FNN_WINO_SCALAR, m + j, ldx, y0, y1, z0, z1);
                r0[2 * j] = y0 + bo;
                if (j < whole)
                    r0[2 * j + 1] = y1 + bo;
                if (two) {
                    r1[2 * j] = z0 + bo;
                    if (j < whole)
                        r1[2 * j + 1] = z1 + bo;
                }
            }
        }
    }
}

/* A dY Aᵀ of tiles whose 2x2 output gradients are (a0 a1; b0 b1), stored at q[xi*ldx]. */
#define FNN_WINO_GOUT_BODY(T, a0, a1, b0, b1, q, ldx)                                         \
    do {                                                                                      \
        T r0_[4] = {a0, a0 + a1, a0 - a1, -a1}; /* dY Aᵀ, row by row */                       \
        T r1_[4] = {b0, b0 + b1, b0 - b1, -b1};                                               \
        for (int l_ = 0; l_ < 4; l_++) { /* A (dY Aᵀ) */                                      \
            STORE(q + l_ * ldx, r0_[l_]);                                                     \
            STORE(q + (4 + l_) * ldx, r0_[l_] + r1_[l_]);                                     \
            STORE(q + (8 + l_) * ldx, r0_[l_] - r1_[l_]);                                     \
            STORE(q + (12 + l_) * ldx, -r1_[l_]);                                             \
        }                                                                                     \
    } while (0)

/* Gm = A dY Aᵀ of the tiles t0 <= t < t0 + nt of the O planes of gy (Ho x Wo; dY is zero past the
 * edges): the output gradient in the transformed domain, whose products with V give dU. */
static void FN(wino_gout)(const FNN_T *gy, fnn_idx O, fnn_idx Ho, fnn_idx Wo, fnn_idx tw, fnn_idx t0, fnn_idx nt,
                          FNN_T *Gm, fnn_idx ldg, fnn_idx ldx)
{
    const FNN_VI even = FNN_POOL_EVEN, odd = FNN_POOL_ODD;
    fnn_idx whole = Wo / 2;
    for (fnn_idx o = 0; o < O; o++) {
        FNN_WINO_ROWS(t, t0, nt, tw, ti, j0, j1) {
            const FNN_T *g0 = gy + (o * Ho + 2 * ti) * Wo, *g1 = g0 + Wo;
            int two = 2 * ti + 1 < Ho;
            FNN_T *q = Gm + o * ldg + (t - t0) - j0;
            fnn_idx je = j1 < whole ? j1 : whole, j = j0;
#define STORE(p, x) FN(fnn_store)((p) + j, (x))
            for (; j + FNN_L <= je; j += FNN_L) {
                FNN_V x0 = FN(fnn_load)(g0 + 2 * j), x1 = FN(fnn_load)(g0 + 2 * j + FNN_L);
                FNN_V a0 = __builtin_shuffle(x0, x1, even), a1 = __builtin_shuffle(x0, x1, odd);
                FNN_V b0 = {0}, b1 = {0};
                if (two) {
                    FNN_V y0 = FN(fnn_load)(g1 + 2 * j), y1 = FN(fnn_load)(g1 + 2 * j + FNN_L);
                    b0 = __builtin_shuffle(y0, y1, even);
                    b1 = __builtin_shuffle(y0, y1, odd);
                }
                FNN_WINO_GOUT_BODY(FNN_V, a0, a1, b0, b1, q, ldx);
            }
#undef STORE
#define STORE(p, x) ((p)[j] = (x))
            for (; j < j1; j++) {
                FNN_T a0 = g0[2 * j], a1 = j < whole ? g0[2 * j + 1] : 0;
                FNN_T b0 = two ? g1[2 * j] : 0, b1 = two && j < whole ? g1[2 * j + 1] : 0;
                FNN_WINO_GOUT_BODY(FNN_T, a0, a1, b0, b1, q, ldx);
            }
#undef STORE
        }
    }
}
#undef FNN_WINO_LO
#undef FNN_WINO_HI
#undef FNN_WINO_ROWS
#undef FNN_WINO_IN_BODY
#undef FNN_WINO_OUT_BODY
#undef FNN_WINO_SCALAR
#undef FNN_WINO_GOUT_BODY
#endif
#undef FNN_POOL_EVEN
#undef FNN_POOL_ODD
#undef FNN_POOL_RAMP
#undef FNN_POOL_FIX
