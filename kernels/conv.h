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

/* 2x2, stride 2, unpadded max pooling of one plane (the common case). Ties
 * keep the first maximum in row-major order; a NaN beats a number. A
 * tournament (a|b, c|d, then the two winners; the left one is always the
 * earlier pixel, so a strict > keeps the first maximum) halves the chain of
 * dependent comparisons, and integer bit masks pick, because compilers turn
 * a ?: on floats into branches (a coin flip on real data). */
#define FNN_PICK(best, arg, v, pos)                                               \
    do {                                                                          \
        /* take v if v > best, or v is NaN while best is not */                   \
        FNN_UINT take_ = (FNN_UINT)(!((v) <= (best)) & ((best) == (best)));       \
        FNN_UINT m_ = (FNN_UINT)0 - take_, bb_, vb_;                              \
        long long lm_ = -(long long)take_;                                        \
        memcpy(&bb_, &(best), sizeof bb_);                                        \
        memcpy(&vb_, &(v), sizeof vb_);                                           \
        bb_ = (bb_ & ~m_) | (vb_ & m_);                                           \
        memcpy(&(best), &bb_, sizeof bb_);                                        \
        (arg) = ((arg) & ~lm_) | ((pos) & lm_);                                   \
    } while (0)

/* relu(v) = !(v <= 0) ? v : 0, the elementwise ReLU's formula (+0 for -0, NaN kept), by a bit mask:
 * a ?: here becomes a branch, a coin flip on real data. */
static inline FNN_T FN(relu_bits)(FNN_T v)
{
    FNN_UINT m = (FNN_UINT)0 - (FNN_UINT)!(v <= 0), b;
    memcpy(&b, &v, sizeof b);
    b &= m;
    memcpy(&v, &b, sizeof b);
    return v;
}

/* relu: read relu(v) instead of v */
static inline void FN(maxpool2x2_impl)(const FNN_T *src, fnn_idx w, fnn_idx ho, fnn_idx wo, FNN_T *dst,
                                       long long *idx, const int relu)
{
#define FNN_LOAD_(v) (relu ? FN(relu_bits)(v) : (v))
    for (fnn_idx i = 0; i < ho; i++) {
        const long long p0 = 2LL * i * w, p1 = p0 + w;
        for (fnn_idx j = 0; j < wo; j++) {
            long long ia = p0 + 2 * j, ic = p1 + 2 * j;
            FNN_T a = FNN_LOAD_(src[ia]), b = FNN_LOAD_(src[ia + 1]), c = FNN_LOAD_(src[ic]);
            FNN_T d = FNN_LOAD_(src[ic + 1]);
            FNN_PICK(a, ia, b, ia + 1);
            FNN_PICK(c, ic, d, ic + 1);
            FNN_PICK(a, ia, c, ic);
            dst[(long long)i * wo + j] = a;
            idx[(long long)i * wo + j] = ia;
        }
    }
#undef FNN_LOAD_
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
#undef FNN_PICK
