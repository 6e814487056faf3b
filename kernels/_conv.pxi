# Convolution and pooling (NCHW).
#
# float32 3x3 stride-1 convolutions with conv_winograd_min_channels input and
# output channels run Winograd F(2x2, 3x3) on finite data (below). Other
# float32 stride-1 convolutions whose per-thread buffers stay below
# conv_direct_max_buffer run the "shifted GEMM" of conv.h: each image
# zero-padded once into a flat buffer, every kernel tap a shift of it, no
# im2col matrix, images over the OpenMP team. Every other case cuts the batch
# into chunks whose im2col matrix stays within conv_cols_budget elements: per
# chunk an OpenMP loop builds the columns, one product runs from the serial
# level (BLAS is threaded itself, so it is never called inside a parallel
# region) and an OpenMP loop scatters the result. Pooling is a direct loop,
# parallel over planes. The sizes handed to BLAS (O, C·kH·kW, Ho·Wo, the
# leading dimensions) fit a C int: fastnn.ops.conv refuses larger ones.

cdef struct Geom:
    fnn_idx B, C, H, W, O, kh, kw, ho, wo, sh, sw, ph, pw, dh, dw


cdef Geom _geom(cnp.ndarray x, cnp.ndarray weight, cnp.ndarray out, fnn_idx sh, fnn_idx sw, fnn_idx ph,
                fnn_idx pw, fnn_idx dh, fnn_idx dw):
    cdef Geom g
    g.B, g.C, g.H, g.W = x.shape[0], x.shape[1], x.shape[2], x.shape[3]
    g.O, g.kh, g.kw = weight.shape[0], weight.shape[2], weight.shape[3]
    g.ho, g.wo = out.shape[2], out.shape[3]
    g.sh, g.sw, g.ph, g.pw, g.dh, g.dw = sh, sw, ph, pw, dh, dw
    return g


# ---- im2col ----

cdef inline void _valid_range(fnn_idx n_out, fnn_idx n_in, fnn_idx s, fnn_idx offset, fnn_idx *lo,
                              fnn_idx *hi) noexcept nogil:
    """Outputs j with 0 <= j·s + offset < n_in, as [lo, hi)."""
    lo[0] = (-offset + s - 1) // s if offset < 0 else 0
    hi[0] = (n_in - offset - 1) // s + 1 if n_in - offset > 0 else 0
    if hi[0] > n_out:
        hi[0] = n_out
    if lo[0] > hi[0]:
        lo[0] = hi[0]


cdef void _im2col_plane(const real *src, const Geom *g, real *dst, fnn_idx ld) noexcept nogil:
    """kH·kW rows (stride ld) of the columns of one input plane."""
    cdef fnn_idx u, v, i, j, ilo, ihi, jlo, jhi, off, wo = g.wo
    cdef real *row
    cdef const real *s
    for u in range(g.kh):
        _valid_range(g.ho, g.H, g.sh, u * g.dh - g.ph, &ilo, &ihi)
        for v in range(g.kw):
            _valid_range(wo, g.W, g.sw, v * g.dw - g.pw, &jlo, &jhi)
            off = v * g.dw - g.pw
            row = dst + (u * g.kw + v) * ld
            for i in range(g.ho):
                if i < ilo or i >= ihi:
                    memset(row + i * wo, 0, wo * sizeof(real))
                    continue
                s = src + (i * g.sh + u * g.dh - g.ph) * g.W + off
                for j in range(jlo):
                    row[i * wo + j] = 0
                if g.sw == 1:
                    memcpy(row + i * wo + jlo, s + jlo, (jhi - jlo) * sizeof(real))
                else:
                    for j in range(jlo, jhi):
                        row[i * wo + j] = s[j * g.sw]
                for j in range(jhi, wo):
                    row[i * wo + j] = 0


cdef void _col2im_plane(const real *src, fnn_idx ld, const Geom *g, real *dst) noexcept nogil:
    """dst (one H×W plane) = Σ over taps of the kH·kW column rows (stride ld) copied from it."""
    cdef fnn_idx u, v, i, j, ilo, ihi, jlo, jhi, off, wo = g.wo
    cdef const real *row
    cdef real *d
    memset(dst, 0, g.H * g.W * sizeof(real))
    for u in range(g.kh):
        _valid_range(g.ho, g.H, g.sh, u * g.dh - g.ph, &ilo, &ihi)
        for v in range(g.kw):
            _valid_range(wo, g.W, g.sw, v * g.dw - g.pw, &jlo, &jhi)
            off = v * g.dw - g.pw
            row = src + (u * g.kw + v) * ld
            for i in range(ilo, ihi):
                d = dst + (i * g.sh + u * g.dh - g.ph) * g.W + off
                if g.sw == 1:
                    for j in range(jlo, jhi):
                        d[j] += row[i * wo + j]
                else:
                    for j in range(jlo, jhi):
                        d[j * g.sw] += row[i * wo + j]


cdef void _im2col(const real *x, fnn_idx nb, const Geom *g, real *cols, fnn_idx ld) noexcept nogil:
    """The columns (C·kH·kW rows, stride ld) of nb images, one (image, channel) plane per work item."""
    cdef fnn_idx P = g.ho * g.wo, r, b, c, kk = g.kh * g.kw
    for r in prange(nb * g.C, nogil=True, schedule="static", num_threads=_threads_for(<double>nb * P * g.C * kk)):
        b = r // g.C
        c = r % g.C
        _im2col_plane(x + r * g.H * g.W, g, cols + c * kk * ld + b * P, ld)


cdef void _col2im(const real *dcols, fnn_idx ld, fnn_idx nb, const Geom *g, real *gx) noexcept nogil:
    cdef fnn_idx P = g.ho * g.wo, r, b, c, kk = g.kh * g.kw
    for r in prange(nb * g.C, nogil=True, schedule="static", num_threads=_threads_for(<double>nb * P * g.C * kk)):
        b = r // g.C
        c = r % g.C
        _col2im_plane(dcols + c * kk * ld + b * P, ld, g, gx + r * g.H * g.W)


cdef void _scatter(const real *y, fnn_idx ld, const real *bias, fnn_idx nb, fnn_idx O, fnn_idx P,
                   real *out) noexcept nogil:
    """out[b, o, p] = y[o·ld + b·P + p] + bias[o]."""
    cdef fnn_idx r, p, b, o
    cdef real bo
    for r in prange(nb * O, nogil=True, schedule="static", num_threads=_threads_for(<double>nb * O * P)):
        b = r // O
        o = r % O
        bo = bias[o] if bias != NULL else 0
        for p in range(P):
            out[r * P + p] = y[o * ld + b * P + p] + bo


cdef void _gather(const real *gy, fnn_idx nb, fnn_idx O, fnn_idx P, real *dst, fnn_idx ld) noexcept nogil:
    """dst[o·ld + b·P + p] = gy[b, o, p]."""
    cdef fnn_idx r, b, o
    for r in prange(nb * O, nogil=True, schedule="static", num_threads=_threads_for(<double>nb * O * P)):
        b = r // O
        o = r % O
        memcpy(dst + o * ld + b * P, gy + r * P, P * sizeof(real))


cdef inline fnn_idx _chunk(fnn_idx B, fnn_idx K, fnn_idx P) noexcept nogil:
    """Images per chunk: as many as keep the columns within conv_cols_budget (at least one)."""
    cdef fnn_idx nb = fnn_tune.conv_cols_budget // (K * P if K * P > 0 else 1)
    return max(1, min(nb, B))


cdef int _conv_fwd_cols(const real *x, const real *w, const real *bias, real *out, const Geom *g) noexcept nogil:
    """y[b,o,i,j] = bias[o] + Σ_{c,u,v} w[o,c,u,v]·xp[b,c,i·sH+u·dH,j·sW+v·dW] (chunked im2col + GEMM)."""
    cdef fnn_idx K = g.C * g.kh * g.kw, P = g.ho * g.wo, O = g.O
    cdef fnn_idx nb = _chunk(g.B, K, P), b0 = 0, n, ld = nb * P
    cdef real *cols = <real*>malloc(K * ld * sizeof(real))
    cdef real *y = <real*>malloc(O * ld * sizeof(real)) if nb > 1 else NULL
    cdef int rc = 0
    if cols == NULL or (nb > 1 and y == NULL):
        rc = -1
    while rc == 0 and b0 < g.B:
        n = min(nb, g.B - b0)
        _im2col(x + b0 * g.C * g.H * g.W, n, g, cols, ld)
        if nb == 1:  # one image: the product writes straight into the output
            rc = gemm_run(O, P, K, w, K, 1, cols, P, 1, out + b0 * O * P, P, <const real*>NULL,
                          FNN_ACT_IDENTITY, False)
            if bias != NULL:
                _scatter(out + b0 * O * P, P, bias, 1, O, P, out + b0 * O * P)
        else:
            rc = gemm_run(O, n * P, K, w, K, 1, cols, ld, 1, y, ld, <const real*>NULL, FNN_ACT_IDENTITY, False)
            _scatter(y, ld, bias, n, O, P, out + b0 * O * P)
        b0 += n
    free(cols)
    free(y)
    return rc


cdef int _conv_bwd_cols(const real *gy, const real *x, const real *w, real *gx, real *gw, real *gb,
                        const Geom *g) noexcept nogil:
    """dW = Σ_b G_b·cols_bᵀ, db = Σ G, dx = col2im(Wᵀ·G_b) (chunked; products outside parallel loops)."""
    cdef fnn_idx K = g.C * g.kh * g.kw, P = g.ho * g.wo, O = g.O
    cdef fnn_idx nb = _chunk(g.B, K, P), b0 = 0, n, ld = nb * P, b
    cdef real *cols = <real*>malloc(K * ld * sizeof(real))
    cdef real *gbuf = <real*>malloc(O * ld * sizeof(real)) if nb > 1 else NULL
    cdef real *dcols = <real*>malloc(K * ld * sizeof(real)) if gx != NULL else NULL
    cdef const real *gp
    cdef double *bsum
    cdef int rc = 0
    if cols == NULL or (nb > 1 and gbuf == NULL) or (gx != NULL and dcols == NULL):
        rc = -1
    while rc == 0 and b0 < g.B:
        n = min(nb, g.B - b0)
        _im2col(x + b0 * g.C * g.H * g.W, n, g, cols, ld)
        if nb == 1:
            gp = gy + b0 * O * P
        else:
            _gather(gy + b0 * O * P, n, O, P, gbuf, ld)
            gp = gbuf
        # dW (O, K) (+)= G (O, nP) · colsᵀ (nP, K)
        rc = gemm_run(O, K, n * P, gp, ld, 1, cols, 1, ld, gw, K, <const real*>NULL, FNN_ACT_IDENTITY, b0 != 0)
        if rc == 0 and gx != NULL:
            # dcols (K, nP) = Wᵀ (K, O) · G (O, nP)
            rc = gemm_run(K, n * P, O, w, 1, K, gp, ld, 1, dcols, ld, <const real*>NULL, FNN_ACT_IDENTITY, False)
            _col2im(dcols, ld, n, g, gx + b0 * g.C * g.H * g.W)
        b0 += n
    if rc == 0 and gb != NULL:
        bsum = <double*>malloc(g.B * O * sizeof(double))
        if bsum == NULL:
            rc = -1
        else:
            for b in range(g.B):
                _bias_image(gy + b * O * P, O, P, bsum + b * O)
            _bias_sum(bsum, g.B, O, gb)
            free(bsum)
    free(cols)
    free(gbuf)
    free(dcols)
    return rc


# ---- the direct float32 stride-1 convolution ----

cdef inline fnn_idx _round_up(fnn_idx n, fnn_idx m) noexcept nogil:
    return (n + m - 1) // m * m


cdef bint _direct(cnp.ndarray x, cnp.ndarray weight, const Geom *g):
    """Whether the shifted-GEMM kernels run this convolution (float32, stride 1, bounded buffers)."""
    return _direct_geom(_f32(x), g)


cdef bint _direct_geom(bint f32, const Geom *g) noexcept nogil:
    """_direct for a dtype and a geometry (the training plans ask it without arrays)."""
    cdef fnn_idx wp = g.W + 2 * g.pw + (g.kw - 1) * g.dw
    cdef fnn_idx rows = g.H + 2 * g.ph + (g.kh - 1) * g.dh + 1
    return f32 and g.sh == 1 and g.sw == 1 and max(g.C, g.O) * rows * wp <= fnn_tune.conv_direct_max_buffer


cdef void _pad_image(const float *x, const Geom *g, fnn_idx plane, fnn_idx Wp, float *xp) noexcept nogil:
    """Copy one image into its zero-padded flat buffer (the borders stay zero from allocation)."""
    cdef fnn_idx c, h
    for c in range(g.C):
        for h in range(g.H):
            memcpy(xp + c * plane + (h + g.ph) * Wp + g.pw, x + (c * g.H + h) * g.W, g.W * sizeof(float))


cdef struct DirectConv:
    # one direct convolution's sizes and packed operands (shared by its images and threads)
    Geom g
    fnn_idx Wp, plane, K, KT, OP, Q, CP, Qg, QI, xlen, margin, gplane
    float *wpk      # (K, OP): wpk[k, o] = w[o, k], zero past O (the forward product's A)
    fnn_idx *koff   # (K,): tap (c, u, v)'s shift into the padded image
    float *wpkT     # (KT, CP): wpkT[(o, u, v), c] = w[o, c, u, v], zero past C (dL/dx's A)
    fnn_idx *koffT  # (KT,): tap (o, u, v)'s shift into the padded G rows


cdef void _direct_sizes(const Geom *g, DirectConv *d) noexcept nogil:
    """The sizes of the direct kernels for geometry g; no operand allocated yet."""
    d.g = g[0]
    d.Wp = g.W + 2 * g.pw
    d.plane = (g.H + 2 * g.ph) * d.Wp
    d.K = g.C * g.kh * g.kw
    d.KT = g.O * g.kh * g.kw
    d.OP = _round_up(g.O, FNN_CONV_ROWS)
    d.Q = _round_up(g.ho * d.Wp, FNN_CONV_COLS)
    d.CP = _round_up(g.C, FNN_CONV_ROWS)
    d.Qg = _round_up(g.ho * d.Wp, FNN_WGRAD_SLOTS)
    d.QI = _round_up(d.plane, FNN_CONV_COLS)
    d.xlen = g.C * d.plane + (g.kw - 1) * g.dw + 2 * FNN_CONV_COLS
    d.margin = (g.kh - 1) * g.dh * d.Wp + (g.kw - 1) * g.dw
    d.gplane = d.margin + d.plane + 2 * FNN_CONV_COLS
    d.wpk = NULL
    d.koff = NULL
    d.wpkT = NULL
    d.koffT = NULL


cdef int _direct_alloc(DirectConv *d, bint fwd, bint bwd) noexcept nogil:
    """Allocate the operands the forward (fwd) and backward (bwd) kernels use and lay out the tap
    shifts (they depend on the geometry only); -1 when out of memory (_direct_free frees what was got)."""
    cdef fnn_idx o, c, u, v
    cdef const Geom *g = &d.g
    d.koff = <fnn_idx*>malloc(d.K * sizeof(fnn_idx))
    if fwd:
        d.wpk = <float*>calloc(d.K * d.OP, sizeof(float))
    if bwd:
        d.wpkT = <float*>calloc(d.KT * d.CP, sizeof(float))
        d.koffT = <fnn_idx*>malloc(d.KT * sizeof(fnn_idx))
    if d.koff == NULL or (fwd and d.wpk == NULL) or (bwd and (d.wpkT == NULL or d.koffT == NULL)):
        return -1
    for c in range(g.C):
        for u in range(g.kh):
            for v in range(g.kw):
                d.koff[(c * g.kh + u) * g.kw + v] = c * d.plane + u * g.dh * d.Wp + v * g.dw
    if bwd:
        for o in range(g.O):
            for u in range(g.kh):
                for v in range(g.kw):
                    d.koffT[(o * g.kh + u) * g.kw + v] = o * d.gplane + d.margin - u * g.dh * d.Wp - v * g.dw
    return 0


cdef void _direct_pack(DirectConv *d, const float *w) noexcept nogil:
    """Pack the weight w (O, C, kH, kW) into the allocated operands (the padding stays zero)."""
    cdef fnn_idx o, c, u, v
    cdef const Geom *g = &d.g
    if d.wpk != NULL:
        for o in range(g.O):
            for c in range(d.K):
                d.wpk[c * d.OP + o] = w[o * d.K + c]
    if d.wpkT != NULL:
        for o in range(g.O):
            for u in range(g.kh):
                for v in range(g.kw):
                    for c in range(g.C):
                        d.wpkT[((o * g.kh + u) * g.kw + v) * d.CP + c] = w[((o * g.C + c) * g.kh + u) * g.kw + v]


cdef void _direct_free(DirectConv *d) noexcept nogil:
    free(d.wpk)
    free(d.koff)
    free(d.wpkT)
    free(d.koffT)
    d.wpk = NULL
    d.koff = NULL
    d.wpkT = NULL
    d.koffT = NULL


cdef inline void _direct_fwd_product(const DirectConv *d, const float *x, float *xp, float *ob) noexcept nogil:
    """One image's product without the bias: ob[o·d.Q + i·d.Wp + j] (j < Wo; the other columns are junk)."""
    _pad_image(x, &d.g, d.plane, d.Wp, xp)
    fnn_cv.shift_f32(d.K, d.OP, d.Q, d.wpk, d.koff, xp, ob, d.Q)


cdef void _direct_fwd_image(const DirectConv *d, const float *x, const float *bias, float *out, float *xp,
                            float *ob) noexcept nogil:
    """One image's y = bias + the shifted GEMM; xp (d.xlen, zero borders) and ob (d.OP·d.Q) its scratch."""
    cdef fnn_idx o, i, j, O = d.g.O, Ho = d.g.ho, Wo = d.g.wo, Q = d.Q, Wp = d.Wp
    cdef float bo
    _direct_fwd_product(d, x, xp, ob)
    for o in range(O):
        bo = bias[o] if bias != NULL else 0
        for i in range(Ho):
            for j in range(Wo):
                out[(o * Ho + i) * Wo + j] = ob[o * Q + i * Wp + j] + bo


cdef void _direct_bwd_image(const DirectConv *d, const float *gy, const float *x, float *gx, float *xp, float *gp,
                            float *ib, float *gwt, double *bs) noexcept nogil:
    """One image's weight-gradient partials added into gwt (O·K·FNN_WGRAD_SLOTS lane slots), if gx is
    given its dL/dx, if bs is given its bias-gradient sums (_bias_image). Scratch: xp (d.xlen, zero
    borders), gp (O·d.gplane, zero but where G is written), ib (d.CP·d.QI)."""
    cdef fnn_idx o, i, c, h, O = d.g.O, C = d.g.C, Ho = d.g.ho, Wo = d.g.wo, H = d.g.H, W = d.g.W, Wp = d.Wp
    _pad_image(x, &d.g, d.plane, Wp, xp)
    for o in range(O):   # G rows at width Wp; the junk columns stay zero
        for i in range(Ho):
            memcpy(gp + o * d.gplane + d.margin + i * Wp, gy + (o * Ho + i) * Wo, Wo * sizeof(float))
    fnn_cv.wgrad_f32(O, d.K, d.Qg, gp + d.margin, d.gplane, d.koff, xp, gwt)
    if bs != NULL:
        _bias_image(gy, O, Ho * Wo, bs)
    if gx != NULL:
        fnn_cv.shift_f32(d.KT, d.CP, d.QI, d.wpkT, d.koffT, gp, ib, d.QI)
        for c in range(C):
            for h in range(H):
                memcpy(gx + (c * H + h) * W, ib + c * d.QI + (h + d.g.ph) * Wp + d.g.pw, W * sizeof(float))


cdef void _direct_wgrad_sum(const DirectConv *d, const float *gwt, int nt, float *gw) noexcept nogil:
    """gw = the nt threads' lane-slot partials added in float64, thread by thread, slot by slot (a fixed
    order: the same bits for the same team size)."""
    cdef fnn_idx kk, p, OK = d.g.O * d.K
    cdef int r
    cdef double acc
    for kk in range(OK):
        acc = 0
        for r in range(nt):
            for p in range(FNN_WGRAD_SLOTS):
                acc = acc + gwt[(r * OK + kk) * FNN_WGRAD_SLOTS + p]
        gw[kk] = <float>acc


cdef void _bias_image(const real *gy, fnn_idx O, fnn_idx P, double *s) noexcept nogil:
    """s[o] = Σ_p gy[o, p] in float64, pixels in order: one image's part of the bias gradient (four
    channels' chains of additions side by side, to hide the adds' latency)."""
    cdef fnn_idx o = 0, p
    cdef double a0, a1, a2, a3
    while o + 4 <= O:
        a0 = a1 = a2 = a3 = 0
        for p in range(P):
            a0 = a0 + gy[o * P + p]
            a1 = a1 + gy[(o + 1) * P + p]
            a2 = a2 + gy[(o + 2) * P + p]
            a3 = a3 + gy[(o + 3) * P + p]
        s[o] = a0
        s[o + 1] = a1
        s[o + 2] = a2
        s[o + 3] = a3
        o += 4
    while o < O:
        a0 = 0
        for p in range(P):
            a0 = a0 + gy[o * P + p]
        s[o] = a0
        o += 1


cdef void _bias_sum(const double *s, fnn_idx B, fnn_idx O, real *gb) noexcept nogil:
    """gb[o] = Σ_b s[b, o] in float64, images in order: the bias gradient from the per-image sums
    (_bias_image), which can be formed image by image on any thread with the same bits."""
    cdef fnn_idx o, b
    cdef double acc
    for o in range(O):
        acc = 0
        for b in range(B):
            acc = acc + s[b * O + o]
        gb[o] = <real>acc


cdef inline int _direct_team(const Geom *g) noexcept nogil:
    """The backward kernel's team for g (g.B images): its weight-gradient partials are per thread, so
    this fixes the bits of dW."""
    cdef DirectConv d
    _direct_sizes(g, &d)
    return <int>min(<fnn_idx>_threads_for(<double>g.B * g.O * d.Qg * d.K / 4), g.B)


# ---- Winograd F(2x2, 3x3) for 3x3 stride-1 float32 convolutions ----
# conv.h's wino_* kernels take a block of _WINO_TILES output tiles (2x2 each) into the transformed
# domain, where the 16 elements of each tile's 4x4 block are 16 independent GEMMs over the channels:
# forward M[xi] = U[xi]·V[xi] (U = G g Gᵀ of the weight, V = Bᵀ d B of the input) on the shifted
# GEMM's tiles, weight gradient dU[xi] += A dY Aᵀ [xi]·V[xi]ᵀ on the small GEMM, and dL/dx the forward
# of dL/dy with the filters turned by 180° and in and out channels swapped. A block runs over the
# batch's tiles in order, across images (a 7x7 image has 16 tiles: blocks of one image were mostly
# empty); blocks go to the threads in static shares, dU is per thread and added in a fixed order.
# Runs only on finite inputs, weights and output gradients: a transform mixes a tile's pixels, so an
# inf would spread as NaN to its neighbours; other data takes the direct or im2col kernels.

cdef enum:
    _WINO_TILES = 96   # tiles per block: a multiple of FNN_CONV_COLS


cdef struct WinoSide:
    # one direction of a Winograd convolution: Cin planes (H x W, padded ph, pw) in, Cout planes out
    fnn_idx Cin, Cout, COP, H, W, ph, pw, Ho, Wo, tw, T, Wp, plane, NB
    fnn_idx ldv, ldm  # the 16 blocks of V (Cin·NB) and of M (COP·NB) apart, see _wino_apart
    float *upk       # 16 blocks of (Cin, COP): upk[(xi·Cin + c)·COP + o] = (G g Gᵀ)[xi] of filter c -> o
    fnn_idx *koff    # (Cin,): c·NB, the shifted GEMM's row offsets into V


cdef bint _wino_geom(const Geom *g) noexcept nogil:
    """Whether a float32 convolution of geometry g runs Winograd F(2x2, 3x3) (given finite data)."""
    cdef fnn_idx hp = g.ho + (g.ho & 1) + 2, wp = g.wo + (g.wo & 1) + 2
    return g.kh == 3 and g.kw == 3 and g.sh == 1 and g.sw == 1 and g.dh == 1 and g.dw == 1 \
        and g.ph <= 2 and g.pw <= 2 and g.ho >= 1 and g.wo >= 1 \
        and min(g.C, g.O) >= fnn_tune.conv_winograd_min_channels \
        and max(g.C, g.O) * hp * wp <= fnn_tune.conv_direct_max_buffer


cdef inline fnn_idx _wino_apart(fnn_idx n) noexcept nogil:
    """The distance between the 16 transformed blocks of n floats each: n plus one cache line. The
    transforms write (and the output's reads) all 16 at once; at a multiple of 4 KiB apart (64 channels
    of 96 tiles) they fall into one L1 set, and 64 channels ran 1.5x slower than 56 or 96."""
    return n + 16


cdef void _wino_side(WinoSide *s, fnn_idx Cin, fnn_idx Cout, fnn_idx H, fnn_idx W, fnn_idx ph,
                     fnn_idx pw) noexcept nogil:
    """The sizes of one direction (3x3 filters, stride 1); no operand allocated yet."""
    cdef fnn_idx th
    s.Cin = Cin
    s.Cout = Cout
    s.COP = _round_up(Cout, FNN_CONV_ROWS)
    s.H = H
    s.W = W
    s.ph = ph
    s.pw = pw
    s.Ho = H + 2 * ph - 2
    s.Wo = W + 2 * pw - 2
    th = (s.Ho + 1) // 2
    s.tw = (s.Wo + 1) // 2
    s.T = th * s.tw
    s.Wp = 2 * s.tw + 2          # every tile's 4x4 patch inside the padded plane
    s.plane = (2 * th + 2) * s.Wp
    s.NB = _WINO_TILES
    s.ldv = _wino_apart(Cin * s.NB)
    s.ldm = _wino_apart(s.COP * s.NB)
    s.upk = NULL
    s.koff = NULL


cdef void _wino_filter(const float *g, bint turn, double *u) noexcept nogil:
    """u = G g Gᵀ (4x4, row-major) of one 3x3 filter g, turned by 180° when turn."""
    cdef double a[3][3]
    cdef double t[4][3]
    cdef int i, j
    for i in range(3):
        for j in range(3):
            a[i][j] = g[(2 - i) * 3 + 2 - j] if turn else g[i * 3 + j]
    for j in range(3):
        t[0][j] = a[0][j]
        t[1][j] = 0.5 * (a[0][j] + a[1][j] + a[2][j])
        t[2][j] = 0.5 * (a[0][j] - a[1][j] + a[2][j])
        t[3][j] = a[2][j]
    for i in range(4):
        u[i * 4] = t[i][0]
        u[i * 4 + 1] = 0.5 * (t[i][0] + t[i][1] + t[i][2])
        u[i * 4 + 2] = 0.5 * (t[i][0] - t[i][1] + t[i][2])
        u[i * 4 + 3] = t[i][2]


cdef int _wino_pack(WinoSide *s, const float *w, fnn_idx O, fnn_idx C, bint turn) noexcept nogil:
    """Allocate and fill s.upk and s.koff from the weight w (O, C, 3, 3): the forward direction
    (turn False: filter c -> o is w[o, c]) or dL/dx's (turn True: filter o -> c is w[o, c] turned);
    -1 when out of memory."""
    cdef fnn_idx o, c, i, a, b
    cdef double u[16]
    s.upk = <float*>calloc(16 * s.Cin * s.COP, sizeof(float))
    s.koff = <fnn_idx*>malloc(s.Cin * sizeof(fnn_idx))
    if s.upk == NULL or s.koff == NULL:
        return -1
    for i in range(s.Cin):
        s.koff[i] = i * s.NB
    for o in range(O):
        for c in range(C):
            _wino_filter(w + (o * C + c) * 9, turn, u)
            if turn:   # (input, output) channel of the direction
                a, b = o, c
            else:
                a, b = c, o
            for i in range(16):
                s.upk[(i * s.Cin + a) * s.COP + b] = <float>u[i]
    return 0


cdef void _wino_free(WinoSide *s) noexcept nogil:
    free(s.upk)
    free(s.koff)
    s.upk = NULL
    s.koff = NULL


cdef void _wino_pad(const WinoSide *s, const float *x, fnn_idx b, float *xp, fnn_idx *padded) noexcept nogil:
    """Copy image b of x (Cin, H, W each) into the padded planes xp (zero borders) unless *padded says
    xp holds it already."""
    cdef fnn_idx c, h
    if padded[0] == b:
        return
    x = x + b * s.Cin * s.H * s.W
    for c in range(s.Cin):
        for h in range(s.H):
            memcpy(xp + c * s.plane + (h + s.ph) * s.Wp + s.pw, x + (c * s.H + h) * s.W, s.W * sizeof(float))
    padded[0] = b


cdef void _wino_fwd_block(const WinoSide *s, const float *x, const float *bias, float *out, fnn_idx g0,
                          fnn_idx ng, float *xp, fnn_idx *padded, float *V, float *M) noexcept nogil:
    """out = bias + the convolution of x at the batch's tiles g0 <= g < g0 + ng (tile g % T of image
    g // T: a block runs across images, so small images fill it too). Scratch: xp (Cin·plane, zero
    borders; *padded: which image it holds), V (16·ldv + FNN_CONV_COLS), M (16·ldm)."""
    cdef fnn_idx g, b, t0, nt, xi, T = s.T, NB = s.NB, nout = s.Cout * s.Ho * s.Wo
    g = g0
    while g < g0 + ng:   # the input transform, image by image
        b, t0 = g // T, g % T
        nt = min(T - t0, g0 + ng - g)
        _wino_pad(s, x, b, xp, padded)
        fnn_cv.wino_in_f32(xp, s.Cin, s.plane, s.Wp, s.tw, t0, nt, V + (g - g0), NB, s.ldv)
        g += nt
    for xi in range(16):   # whole register blocks of tiles; the columns past ng are not read back
        fnn_cv.shift_f32(s.Cin, s.COP, _round_up(ng, FNN_CONV_COLS), s.upk + xi * s.Cin * s.COP, s.koff,
                         V + xi * s.ldv, M + xi * s.ldm, NB)
    g = g0
    while g < g0 + ng:
        b, t0 = g // T, g % T
        nt = min(T - t0, g0 + ng - g)
        fnn_cv.wino_out_f32(M + (g - g0), s.Cout, NB, s.ldm, s.tw, t0, nt, bias, out + b * nout, s.Ho, s.Wo)
        g += nt


cdef inline fnn_idx _wino_blocks(const WinoSide *s, fnn_idx B) noexcept nogil:
    return (B * s.T + s.NB - 1) // s.NB


cdef int _wino_forward(const WinoSide *s, fnn_idx B, const float *x, const float *bias, float *out,
                       int nt) noexcept nogil:
    """out = bias + the convolution of the B images of x in direction s, blocks of tiles over nt threads
    (static blocks; every output is written by one block, so any team gives the same bits)."""
    cdef int t
    cdef fnn_idx k, nblk = _wino_blocks(s, B), lx = s.Cin * s.plane, lv = 16 * s.ldv + FNN_CONV_COLS
    cdef fnn_idx lm = 16 * s.ldm
    cdef float *xbuf
    cdef float *vbuf
    cdef float *mbuf
    cdef fnn_idx *padded
    cdef int rc = 0
    nt = <int>min(<fnn_idx>nt, nblk)
    xbuf = <float*>calloc(nt * lx, sizeof(float))
    vbuf = <float*>calloc(nt * lv, sizeof(float))
    mbuf = <float*>malloc(nt * lm * sizeof(float))
    padded = <fnn_idx*>malloc(nt * sizeof(fnn_idx))
    if xbuf == NULL or vbuf == NULL or mbuf == NULL or padded == NULL:
        rc = -1
    else:
        for t in range(nt):
            padded[t] = -1
        for k in prange(nblk, nogil=True, schedule="static", num_threads=nt):
            t = threadid()
            _wino_fwd_block(s, x, bias, out, k * s.NB, min(s.NB, B * s.T - k * s.NB), xbuf + t * lx,
                            padded + t, vbuf + t * lv, mbuf + t * lm)
    free(xbuf)
    free(vbuf)
    free(mbuf)
    free(padded)
    return rc


cdef int _conv_fwd_wino(const float *x, const float *w, const float *bias, float *out, const Geom *g,
                        int nt) noexcept nogil:
    """y = bias + conv(x, w) by Winograd F(2x2, 3x3) on nt threads."""
    cdef WinoSide s
    cdef int rc = -1
    _wino_side(&s, g.C, g.O, g.H, g.W, g.ph, g.pw)
    if _wino_pack(&s, w, g.O, g.C, False) == 0:
        rc = _wino_forward(&s, g.B, x, bias, out, nt)
    _wino_free(&s)
    return rc


cdef int _wino_dw_block(const WinoSide *s, const float *gy, const float *x, fnn_idx g0, fnn_idx ng, float *xp,
                        fnn_idx *padded, float *V, float *Gm, float *du) noexcept nogil:
    """The tiles g0 <= g < g0 + ng's part of dU: du[xi] (O, C) += (A dY Aᵀ)[xi]·V[xi]ᵀ, s the forward
    direction. Scratch: xp and *padded as _wino_fwd_block's, V (16·ldv), Gm (16·ldg). -1 when out of
    memory."""
    cdef fnn_idx g, b, t0, nt, xi, T = s.T, NB = s.NB, C = s.Cin, O = s.Cout, ldg = _wino_apart(O * NB)
    cdef fnn_idx nout = O * s.Ho * s.Wo
    g = g0
    while g < g0 + ng:
        b, t0 = g // T, g % T
        nt = min(T - t0, g0 + ng - g)
        _wino_pad(s, x, b, xp, padded)
        fnn_cv.wino_in_f32(xp, C, s.plane, s.Wp, s.tw, t0, nt, V + (g - g0), NB, s.ldv)
        fnn_cv.wino_gout_f32(gy + b * nout, O, s.Ho, s.Wo, s.tw, t0, nt, Gm + (g - g0), NB, ldg)
        g += nt
    for xi in range(16):
        if fnn_mm.small_f32(O, C, ng, Gm + xi * ldg, NB, 1, V + xi * s.ldv, 1, NB, du + xi * O * C, C, 1,
                            NULL, 0) != 0:
            return -1
    return 0


cdef void _wino_dw_sum(const float *dut, int nt, fnn_idx O, fnn_idx C, float *gw) noexcept nogil:
    """gw = Gᵀ dU G, dU the nt threads' partials added in float64, thread by thread (a fixed order)."""
    cdef fnn_idx o, c, i, p
    cdef int r
    cdef double d[16]
    cdef double s[4][3]
    cdef double acc
    for o in range(O):
        for c in range(C):
            for i in range(16):
                acc = 0
                for r in range(nt):
                    acc = acc + dut[((r * 16 + i) * O + o) * C + c]
                d[i] = acc
            for i in range(4):   # dU G: the filter's columns
                s[i][0] = d[i * 4] + 0.5 * (d[i * 4 + 1] + d[i * 4 + 2])
                s[i][1] = 0.5 * (d[i * 4 + 1] - d[i * 4 + 2])
                s[i][2] = 0.5 * (d[i * 4 + 1] + d[i * 4 + 2]) + d[i * 4 + 3]
            for p in range(3):   # Gᵀ (dU G): its rows
                gw[(o * C + c) * 9 + p] = <float>(s[0][p] + 0.5 * (s[1][p] + s[2][p]))
                gw[(o * C + c) * 9 + 3 + p] = <float>(0.5 * (s[1][p] - s[2][p]))
                gw[(o * C + c) * 9 + 6 + p] = <float>(0.5 * (s[1][p] + s[2][p]) + s[3][p])


cdef int _conv_bwd_wino(const float *gy, const float *x, const float *w, float *gx, float *gw, float *gb,
                        const Geom *g, int nt) noexcept nogil:
    """dW, db and (when gx is given) dL/dx by Winograd F(2x2, 3x3) on nt threads; finite inputs,
    weights and dL/dy only (the callers' checks). dU: static blocks of tiles, per-thread partials
    added in a fixed order (the same bits for the same team)."""
    cdef WinoSide f, d
    cdef int t, ntd
    cdef int err[1]
    cdef fnn_idx k, b, nblk, lx, lv, lg, lu, nout = g.O * g.ho * g.wo
    cdef float *xbuf
    cdef float *vbuf
    cdef float *gbuf
    cdef float *dut
    cdef fnn_idx *padded
    cdef double *bsum = <double*>malloc(g.B * g.O * sizeof(double)) if gb != NULL else NULL
    cdef int rc = 0
    err[0] = 0
    _wino_side(&f, g.C, g.O, g.H, g.W, g.ph, g.pw)
    _wino_side(&d, g.O, g.C, g.ho, g.wo, 2 - g.ph, 2 - g.pw)   # dL/dx: dL/dy padded 2 - p, filters turned
    nblk = _wino_blocks(&f, g.B)
    ntd = <int>min(<fnn_idx>nt, nblk)
    lx, lv, lg, lu = g.C * f.plane, 16 * f.ldv, 16 * _wino_apart(g.O * f.NB), 16 * g.O * g.C
    xbuf = <float*>calloc(ntd * lx, sizeof(float))
    vbuf = <float*>calloc(ntd * lv, sizeof(float))
    gbuf = <float*>malloc(ntd * lg * sizeof(float))
    dut = <float*>calloc(ntd * lu, sizeof(float))
    padded = <fnn_idx*>malloc(ntd * sizeof(fnn_idx))
    if xbuf == NULL or vbuf == NULL or gbuf == NULL or dut == NULL or padded == NULL \
            or (gb != NULL and bsum == NULL) or (gx != NULL and _wino_pack(&d, w, g.O, g.C, True) != 0):
        rc = -1
    else:
        for t in range(ntd):
            padded[t] = -1
        for k in prange(nblk, nogil=True, schedule="static", num_threads=ntd):
            t = threadid()
            if _wino_dw_block(&f, gy, x, k * f.NB, min(f.NB, g.B * f.T - k * f.NB), xbuf + t * lx, padded + t,
                              vbuf + t * lv, gbuf + t * lg, dut + t * lu) != 0:
                err[0] = 1
        if bsum != NULL:
            for b in prange(g.B, nogil=True, schedule="static", num_threads=nt):
                _bias_image(gy + b * nout, g.O, g.ho * g.wo, bsum + b * g.O)
        if err[0] != 0 or (gx != NULL and _wino_forward(&d, g.B, gy, NULL, gx, nt) != 0):
            rc = -1
        else:
            _wino_dw_sum(dut, ntd, g.O, g.C, gw)
            if gb != NULL:
                _bias_sum(bsum, g.B, g.O, gb)
    _wino_free(&d)
    free(xbuf)
    free(vbuf)
    free(gbuf)
    free(dut)
    free(padded)
    free(bsum)
    return rc


cdef int _conv_fwd_direct(const float *x, const float *w, const float *bias, float *out,
                          const Geom *g) noexcept nogil:
    """y[b,o,i,j] = bias[o] + Σ_{c,u,v} w[o,c,u,v]·xp[b,c,i+u·dH,j+v·dW] (stride 1, shifted GEMM)."""
    cdef DirectConv d
    cdef int nt, t
    cdef fnn_idx b, nin = g.C * g.H * g.W, nout = g.O * g.ho * g.wo
    cdef float *xbuf
    cdef float *obuf
    cdef int rc = 0
    _direct_sizes(g, &d)
    nt = min(_threads_for(<double>g.B * g.O * d.Q * d.K / 8), g.B)
    if _wino_geom(g) and all_finite(x, g.B * nin) and all_finite(w, g.O * d.K):
        return _conv_fwd_wino(x, w, bias, out, g, nt)
    xbuf = <float*>calloc(nt * d.xlen, sizeof(float))
    obuf = <float*>malloc(nt * d.OP * d.Q * sizeof(float))
    if _direct_alloc(&d, True, False) != 0 or xbuf == NULL or obuf == NULL:
        rc = -1
    else:
        _direct_pack(&d, w)
        for b in prange(g.B, nogil=True, schedule="static", num_threads=nt):
            t = threadid()
            _direct_fwd_image(&d, x + b * nin, bias, out + b * nout, xbuf + t * d.xlen, obuf + t * d.OP * d.Q)
    _direct_free(&d)
    free(xbuf)
    free(obuf)
    return rc


cdef int _conv_bwd_direct(const float *gy, const float *x, const float *w, float *gx, float *gw, float *gb,
                          const Geom *g) noexcept nogil:
    """dW[o,c,u,v] = Σ_{b,i,j} G[b,o,i,j]·xp[b,c,i+u·dH,j+v·dW]; dxp[c] = Σ_{o,u,v} w[o,c,u,v]·G[o] shifted.

    Both products run over whole padded rows, so they also multiply the
    zeros at the junk positions with real pixels and weights: exact for
    finite data, NaN for an infinite one (0·inf). The caller runs this only
    when x and the weight are finite. Images go to the threads in static
    blocks; each thread adds its images' partials into its own lane slots,
    and the slots are added in a fixed order (_direct_wgrad_sum).
    """
    cdef DirectConv d
    cdef int nt = _direct_team(g), t
    cdef fnn_idx b, nin = g.C * g.H * g.W, nout = g.O * g.ho * g.wo, wsl
    cdef float *xbuf
    cdef float *gbuf
    cdef float *ibuf
    cdef float *gwt
    cdef double *bsum = <double*>malloc(g.B * g.O * sizeof(double)) if gb != NULL else NULL
    cdef int rc = 0
    if _wino_geom(g) and all_finite(gy, g.B * nout):   # x and w: the caller's check
        free(bsum)
        return _conv_bwd_wino(gy, x, w, gx, gw, gb, g, nt)
    _direct_sizes(g, &d)
    wsl = g.O * d.K * FNN_WGRAD_SLOTS
    xbuf = <float*>calloc(nt * d.xlen, sizeof(float))
    gbuf = <float*>calloc(nt * g.O * d.gplane, sizeof(float))
    ibuf = <float*>malloc(nt * d.CP * d.QI * sizeof(float)) if gx != NULL else NULL
    gwt = <float*>calloc(nt * wsl, sizeof(float))   # per thread, lane slots
    if _direct_alloc(&d, False, gx != NULL) != 0 or xbuf == NULL or gbuf == NULL or gwt == NULL \
            or (gx != NULL and ibuf == NULL) or (gb != NULL and bsum == NULL):
        rc = -1
    else:
        _direct_pack(&d, w)
        for b in prange(g.B, nogil=True, schedule="static", num_threads=nt):
            t = threadid()
            _direct_bwd_image(&d, gy + b * nout, x + b * nin, gx + b * nin if gx != NULL else NULL,
                              xbuf + t * d.xlen, gbuf + t * g.O * d.gplane,
                              ibuf + t * d.CP * d.QI if ibuf != NULL else NULL, gwt + t * wsl,
                              bsum + b * g.O if bsum != NULL else NULL)
        _direct_wgrad_sum(&d, gwt, nt, gw)
        if gb != NULL:
            _bias_sum(bsum, g.B, g.O, gb)
    _direct_free(&d)
    free(xbuf)
    free(gbuf)
    free(ibuf)
    free(gwt)
    free(bsum)
    return rc


def conv2d_forward(cnp.ndarray x, cnp.ndarray weight, cnp.ndarray bias, fnn_idx sh, fnn_idx sw, fnn_idx ph,
                   fnn_idx pw, fnn_idx dh, fnn_idx dw, cnp.ndarray out):
    """y[b,o,i,j] = bias[o] + Σ_{c,u,v} w[o,c,u,v]·xp[b,c,i·sH+u·dH,j·sW+v·dW]."""
    cdef Geom g = _geom(x, weight, out, sh, sw, ph, pw, dh, dw)
    cdef void *p[4]
    cdef int rc = 0
    cdef bint direct = _direct(x, weight, &g), f32 = _f32(x)
    _fill(p, (x, weight, bias, out))
    if g.B == 0:
        return out
    with nogil:
        if direct:
            rc = _conv_fwd_direct(<float*>p[0], <float*>p[1], <float*>p[2], <float*>p[3], &g)
        elif f32:
            rc = _conv_fwd_cols(<float*>p[0], <float*>p[1], <float*>p[2], <float*>p[3], &g)
        else:
            rc = _conv_fwd_cols(<double*>p[0], <double*>p[1], <double*>p[2], <double*>p[3], &g)
    if rc != 0:
        raise MemoryError("conv2d_forward: out of memory")
    return out


def conv2d_backward(cnp.ndarray grad_out, cnp.ndarray x, cnp.ndarray weight, fnn_idx sh, fnn_idx sw, fnn_idx ph,
                    fnn_idx pw, fnn_idx dh, fnn_idx dw, cnp.ndarray grad_input, cnp.ndarray grad_weight,
                    cnp.ndarray grad_bias):
    """dW = Σ_b G_b·cols_bᵀ, db = Σ G, dx = col2im(Wᵀ·G_b); grad_input / grad_bias may be None."""
    cdef Geom g = _geom(x, weight, grad_out, sh, sw, ph, pw, dh, dw)
    cdef void *p[6]
    cdef int rc = 0
    cdef bint f32 = _f32(x)
    # The direct kernel multiplies the zeros of its padded rows with every
    # pixel and weight: an inf there would become NaN (0·inf) where the
    # im2col kernel, like the reference, never forms that product.
    cdef bint direct = _direct(x, weight, &g) and finite(x) and finite(weight)
    _fill(p, (grad_out, x, weight, grad_input, grad_weight, grad_bias))
    if g.B == 0:   # no images (layers call this directly, ops would not): sums over nothing
        grad_weight.fill(0)
        if grad_bias is not None:
            grad_bias.fill(0)
        return grad_input, grad_weight, grad_bias
    with nogil:
        if direct:
            rc = _conv_bwd_direct(<float*>p[0], <float*>p[1], <float*>p[2], <float*>p[3], <float*>p[4],
                                  <float*>p[5], &g)
        elif f32:
            rc = _conv_bwd_cols(<float*>p[0], <float*>p[1], <float*>p[2], <float*>p[3], <float*>p[4],
                                <float*>p[5], &g)
        else:
            rc = _conv_bwd_cols(<double*>p[0], <double*>p[1], <double*>p[2], <double*>p[3], <double*>p[4],
                                <double*>p[5], &g)
    if rc != 0:
        raise MemoryError("conv2d_backward: out of memory")
    return grad_input, grad_weight, grad_bias


def finite(cnp.ndarray a):
    """True when no element of the (contiguous) array is NaN or ±inf (one vectorised pass)."""
    cdef fnn_idx n = cnp.PyArray_SIZE(a)
    cdef void *p = cnp.PyArray_DATA(a)
    if _f32(a):
        return all_finite(<float*>p, n)
    return all_finite(<double*>p, n)


# ---- pooling ----
# The window loops clip each window to the image (ulo..uhi, vlo..vhi).
# ops.conv guarantees every window holds a real pixel: H, W >= 1 and
# padding <= kernel_size // 2 (PyTorch's rule), so max pooling never reads
# outside the plane and never divides by an empty window.

cdef inline void _window(fnn_idx i, fnn_idx j, fnn_idx H, fnn_idx W, fnn_idx kh, fnn_idx kw, fnn_idx sh,
                         fnn_idx sw, fnn_idx ph, fnn_idx pw, fnn_idx *w) noexcept nogil:
    """w = (h0, w0, ulo, uhi, vlo, vhi): the window of output (i, j), clipped to the plane."""
    w[0] = i * sh - ph
    w[1] = j * sw - pw
    w[2] = -w[0] if w[0] < 0 else 0
    w[3] = H - w[0] if H - w[0] < kh else kh
    w[4] = -w[1] if w[1] < 0 else 0
    w[5] = W - w[1] if W - w[1] < kw else kw


cdef void _max_pool_plane(const real *src, real *dst, long long *idx, fnn_idx H, fnn_idx W, fnn_idx ho,
                          fnn_idx wo, fnn_idx kh, fnn_idx kw, fnn_idx sh, fnn_idx sw, fnn_idx ph,
                          fnn_idx pw) noexcept nogil:
    cdef fnn_idx i, j, u, v
    cdef fnn_idx w[6]
    cdef long long arg, pos
    cdef bint take
    cdef real best, val
    if kh == 2 and kw == 2 and sh == 2 and sw == 2 and ph == 0 and pw == 0:
        # the common 2×2 / stride 2 case: a branch-free kernel
        maxpool2x2(src, W, ho, wo, dst, idx)
        return
    for i in range(ho):
        for j in range(wo):
            _window(i, j, H, W, kh, kw, sh, sw, ph, pw, w)
            arg = (w[0] + w[2]) * W + w[1] + w[4]
            best = src[arg]
            for u in range(w[2], w[3]):
                for v in range(w[4], w[5]):
                    pos = (w[0] + u) * W + w[1] + v
                    val = src[pos]
                    # strict > keeps the first maximum; a NaN replaces a number, not a NaN.
                    # Selects, not branches: on real data the comparison is a coin flip.
                    take = (val > best) | ((val != val) & (best == best))
                    best = val if take else best
                    arg = pos if take else arg
            dst[i * wo + j] = best
            idx[i * wo + j] = arg


cdef void _max_pool(const real *xp, real *op, long long *ip, fnn_idx planes, fnn_idx H, fnn_idx W, fnn_idx ho,
                    fnn_idx wo, fnn_idx kh, fnn_idx kw, fnn_idx sh, fnn_idx sw, fnn_idx ph,
                    fnn_idx pw) noexcept nogil:
    cdef fnn_idx r
    for r in prange(planes, nogil=True, schedule="static", num_threads=_threads_for(<double>planes * H * W)):
        _max_pool_plane(xp + r * H * W, op + r * ho * wo, ip + r * ho * wo, H, W, ho, wo, kh, kw, sh, sw, ph, pw)


def max_pool_fwd(cnp.ndarray x, fnn_idx kh, fnn_idx kw, fnn_idx sh, fnn_idx sw, fnn_idx ph, fnn_idx pw,
                 cnp.ndarray out, cnp.ndarray indices):
    """y = max over the window (-inf padding); first maximum wins, NaN wins."""
    cdef fnn_idx planes = x.shape[0] * x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef fnn_idx ho = out.shape[2], wo = out.shape[3]
    cdef void *px = cnp.PyArray_DATA(x)
    cdef void *po = cnp.PyArray_DATA(out)
    cdef long long *pi = <long long*>cnp.PyArray_DATA(indices)
    cdef bint f32 = _f32(x)
    with nogil:
        if f32:
            _max_pool(<float*>px, <float*>po, pi, planes, H, W, ho, wo, kh, kw, sh, sw, ph, pw)
        else:
            _max_pool(<double*>px, <double*>po, pi, planes, H, W, ho, wo, kh, kw, sh, sw, ph, pw)


cdef fnn_idx _max_unpool(const real *gp, const long long *ip, real *dp, fnn_idx planes, fnn_idx HW,
                         fnn_idx n_out) noexcept nogil:
    """dx[plane][indices] += dy, one plane per thread; returns the count of indices outside the plane."""
    cdef fnn_idx r, p, bad = 0
    cdef long long k
    cdef real *plane
    for r in prange(planes, nogil=True, schedule="static", num_threads=_threads_for(<double>planes * HW)):
        plane = dp + r * HW
        memset(plane, 0, HW * sizeof(real))
        for p in range(n_out):
            k = ip[r * n_out + p]
            if <size_t>k < <size_t>HW:   # one unsigned compare: negative indices are huge
                plane[k] += gp[r * n_out + p]
            else:
                bad += 1
    return bad


def max_pool_bwd(cnp.ndarray grad_out, cnp.ndarray indices, cnp.ndarray grad_input):
    """dx[plane][indices] += dy (one plane per thread: no races).

    The kernel checks what it indexes with, whoever called it: an index
    outside [0, H·W) is skipped and makes the call raise ValueError.
    """
    cdef fnn_idx planes = grad_input.shape[0] * grad_input.shape[1]
    cdef fnn_idx HW = grad_input.shape[2] * grad_input.shape[3], n_out = grad_out.shape[2] * grad_out.shape[3]
    cdef void *pg = cnp.PyArray_DATA(grad_out)
    cdef const long long *pi = <const long long*>cnp.PyArray_DATA(indices)
    cdef void *pd = cnp.PyArray_DATA(grad_input)
    cdef bint f32 = _f32(grad_input)
    cdef fnn_idx bad
    with nogil:
        if f32:
            bad = _max_unpool(<float*>pg, pi, <float*>pd, planes, HW, n_out)
        else:
            bad = _max_unpool(<double*>pg, pi, <double*>pd, planes, HW, n_out)
    if bad:
        raise ValueError(f"indices must lie in [0, {HW}) for input planes of "
                         f"{grad_input.shape[2]}x{grad_input.shape[3]}")


cdef void _avg_pool_plane(const real *src, real *dst, const real *gy, real *gx, fnn_idx H, fnn_idx W,
                          fnn_idx ho, fnn_idx wo, fnn_idx kh, fnn_idx kw, fnn_idx sh, fnn_idx sw, fnn_idx ph,
                          fnn_idx pw, bint count_include_pad) noexcept nogil:
    """Forward (src -> dst: y = Σ window / n) or, when gy is given, backward (gy -> gx: dx[window] += dy / n)."""
    cdef fnn_idx i, j, u, v, cnt
    cdef fnn_idx w[6]
    cdef real s, gv
    if gy != NULL:
        memset(gx, 0, H * W * sizeof(real))
    for i in range(ho):
        for j in range(wo):
            _window(i, j, H, W, kh, kw, sh, sw, ph, pw, w)
            cnt = kh * kw if count_include_pad else (w[3] - w[2]) * (w[5] - w[4])
            if gy != NULL:
                gv = gy[i * wo + j] / cnt
                for u in range(w[2], w[3]):
                    for v in range(w[4], w[5]):
                        gx[(w[0] + u) * W + w[1] + v] += gv
            else:
                s = 0
                for u in range(w[2], w[3]):
                    for v in range(w[4], w[5]):
                        s = s + src[(w[0] + u) * W + w[1] + v]
                dst[i * wo + j] = s / cnt


cdef void _avg_pool(const real *xp, real *op, const real *gp, real *dp, fnn_idx planes, fnn_idx H, fnn_idx W,
                    fnn_idx ho, fnn_idx wo, fnn_idx kh, fnn_idx kw, fnn_idx sh, fnn_idx sw, fnn_idx ph, fnn_idx pw,
                    bint count_include_pad) noexcept nogil:
    cdef fnn_idx r
    for r in prange(planes, nogil=True, schedule="static", num_threads=_threads_for(<double>planes * H * W)):
        if gp != NULL:
            _avg_pool_plane(NULL, NULL, gp + r * ho * wo, dp + r * H * W, H, W, ho, wo, kh, kw, sh, sw, ph, pw,
                            count_include_pad)
        else:
            _avg_pool_plane(xp + r * H * W, op + r * ho * wo, NULL, NULL, H, W, ho, wo, kh, kw, sh, sw, ph, pw,
                            count_include_pad)


def avg_pool_fwd(cnp.ndarray x, fnn_idx kh, fnn_idx kw, fnn_idx sh, fnn_idx sw, fnn_idx ph, fnn_idx pw,
                 bint count_include_pad, cnp.ndarray out):
    """y = Σ window / n, n = kH·kW or the number of real pixels."""
    cdef fnn_idx planes = x.shape[0] * x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef fnn_idx ho = out.shape[2], wo = out.shape[3]
    cdef void *px = cnp.PyArray_DATA(x)
    cdef void *po = cnp.PyArray_DATA(out)
    cdef bint f32 = _f32(x)
    with nogil:
        if f32:
            _avg_pool(<float*>px, <float*>po, <float*>NULL, <float*>NULL, planes, H, W, ho, wo, kh, kw, sh, sw, ph,
                      pw, count_include_pad)
        else:
            _avg_pool(<double*>px, <double*>po, <double*>NULL, <double*>NULL, planes, H, W, ho, wo, kh, kw, sh, sw,
                      ph, pw, count_include_pad)


def avg_pool_bwd(cnp.ndarray grad_out, fnn_idx kh, fnn_idx kw, fnn_idx sh, fnn_idx sw, fnn_idx ph, fnn_idx pw,
                 bint count_include_pad, cnp.ndarray grad_input):
    """dx[window] += dy / n for every output."""
    cdef fnn_idx planes = grad_input.shape[0] * grad_input.shape[1], H = grad_input.shape[2]
    cdef fnn_idx W = grad_input.shape[3], ho = grad_out.shape[2], wo = grad_out.shape[3]
    cdef void *pg = cnp.PyArray_DATA(grad_out)
    cdef void *pd = cnp.PyArray_DATA(grad_input)
    cdef bint f32 = _f32(grad_input)
    with nogil:
        if f32:
            _avg_pool(<float*>NULL, <float*>NULL, <float*>pg, <float*>pd, planes, H, W, ho, wo, kh, kw, sh, sw, ph,
                      pw, count_include_pad)
        else:
            _avg_pool(<double*>NULL, <double*>NULL, <double*>pg, <double*>pd, planes, H, W, ho, wo, kh, kw, sh,
                      sw, ph, pw, count_include_pad)
