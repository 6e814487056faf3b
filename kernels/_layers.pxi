# Dropout, batch and layer normalisation, embeddings and adaptive average
# pooling (the math: fastnn/backends/reference/{dropout,norm,embedding,
# adaptive_pool}.py). One pass per output, statistics summed in float64 as the
# reference sums them; channels (batch norm), rows (layer norm, embeddings) or
# planes (pooling) split over the team when the work is large. Every index an
# embedding kernel reads or writes with is checked here, where it is used.

from libc.stdint cimport uint8_t, uint32_t, uint64_t


# ---- dropout ----

cdef void _dropout_fwd(const real *x, const uint32_t *bits, uint64_t threshold, double scale, fnn_idx group,
                       bint relu, real *out, uint8_t *mask, fnn_idx m) noexcept nogil:
    cdef fnn_idx w, j
    cdef real f, v, s = <real>scale
    cdef bint keep
    for w in prange(m, num_threads=_num_threads if _parallel(m * group, True) else 1, schedule="static"):
        keep = bits[w] >= threshold
        mask[w] = keep
        f = s if keep else <real>0
        for j in range(group):
            v = x[w * group + j]
            if relu and v < 0:   # max(v, 0), NaN kept
                v = 0
            out[w * group + j] = v * f


def dropout_forward(cnp.ndarray x, cnp.ndarray bits, object threshold, double scale, fnn_idx group, bint relu,
                    cnp.ndarray out, cnp.ndarray mask):
    """y = act(x)·k·s, k = [bits >= threshold] per group of values (mask: the k's)."""
    cdef fnn_idx m = cnp.PyArray_SIZE(x) // group
    cdef uint64_t t = <uint64_t>int(threshold)
    cdef void *p[4]
    _fill(p, (x, bits, out, mask))
    cdef bint f32 = _f32(x)
    with nogil:
        if f32:
            _dropout_fwd(<float*>p[0], <uint32_t*>p[1], t, scale, group, relu, <float*>p[2], <uint8_t*>p[3], m)
        else:
            _dropout_fwd(<double*>p[0], <uint32_t*>p[1], t, scale, group, relu, <double*>p[2], <uint8_t*>p[3], m)
    return out


cdef void _dropout_bwd(const real *g, const uint8_t *mask, double scale, fnn_idx group, const real *y, real *out,
                       fnn_idx m) noexcept nogil:
    cdef fnn_idx w, j, i
    cdef real f, s = <real>scale
    for w in prange(m, num_threads=_num_threads if _parallel(m * group, True) else 1, schedule="static"):
        f = s if mask[w] else <real>0
        for j in range(group):
            i = w * group + j
            out[i] = g[i] * f
            if y != NULL:
                out[i] = out[i] * (<real>1 if y[i] > 0 else <real>0)


def dropout_backward(cnp.ndarray grad_out, cnp.ndarray mask, double scale, fnn_idx group, cnp.ndarray y,
                     cnp.ndarray out):
    """dL/dx = dL/dy·k·s (·[y > 0] with a fused ReLU's output y)."""
    cdef fnn_idx m = cnp.PyArray_SIZE(grad_out) // group
    cdef void *p[4]
    _fill(p, (grad_out, mask, y, out))
    cdef bint f32 = _f32(grad_out)
    with nogil:
        if f32:
            _dropout_bwd(<float*>p[0], <uint8_t*>p[1], scale, group, <float*>p[2], <float*>p[3], m)
        else:
            _dropout_bwd(<double*>p[0], <uint8_t*>p[1], scale, group, <double*>p[2], <double*>p[3], m)
    return out


# ---- sums in float64 without a chain of dependent additions ----
# The build keeps IEEE order (no -ffast-math), so `s += x[i]` would be one
# dependent addition per element; the C library's sums (elementwise.h) keep 16
# independent partial sums, at a different rounding of the same sum.

cdef inline double _sum(const real *x, fnn_idx n) noexcept nogil:
    return sum64(x, n)


cdef inline double _sq_dev(const real *x, real c, fnn_idx n) noexcept nogil:
    """Σ (x − c)², the difference in the data's dtype (as the reference centres), squared in float64."""
    return sq_dev(x, c, n)


cdef inline void _dot_dev(const real *g, const real *x, real c, fnn_idx n, double *sg, double *sgx) noexcept nogil:
    """sg += Σ g, sgx += Σ g·(x − c), in float64."""
    dot_dev(g, <const real*>NULL, x, c, <real>1, n, sg, sgx)


# ---- batch normalisation: x (N, C, L), statistics per channel ----
# Every pass walks x in memory order over a block of channels (one block per
# thread): for L = 1 (BatchNorm1d on (N, C)) a channel's values are C apart,
# and a pass per channel would load a cache line per value.

cdef void _bn_block_fwd(const real *x, const real *w, const real *b, double eps, bint batch_stats, real *mean,
                        real *var, real *out, fnn_idx N, fnn_idx C, fnn_idx L, fnn_idx c0, fnn_idx c1,
                        double *acc, real *sc) noexcept nogil:
    """Channels c0..c1: acc (c1 - c0 doubles) and sc (2 (c1 - c0) reals) are scratch."""
    cdef fnn_idx n, c, i, o, nc = c1 - c0
    cdef real *sh = sc + nc
    cdef double scale, shift, M = <double>(N * L)
    if batch_stats:
        for c in range(nc):
            acc[c] = 0
        if L == 1:
            bn_col_sum(x + c0, N, nc, C, acc)
        else:
            for n in range(N):
                o = (n * C + c0) * L
                for c in range(nc):
                    acc[c] += _sum(x + o + c * L, L)
        for c in range(nc):
            mean[c0 + c] = <real>(acc[c] / M)   # the reference centres in the data's dtype
            acc[c] = 0
        if L == 1:
            bn_col_sq_dev(x + c0, mean + c0, N, nc, C, acc)
        else:
            for n in range(N):
                o = (n * C + c0) * L
                for c in range(nc):
                    acc[c] += _sq_dev(x + o + c * L, mean[c0 + c], L)
        for c in range(nc):
            var[c0 + c] = <real>(acc[c] / M)
    for c in range(nc):
        scale = 1.0 / sqrt(<double>var[c0 + c] + eps)
        if w != NULL:
            scale = scale * w[c0 + c]
        shift = -(<double>mean[c0 + c]) * scale
        if b != NULL:
            shift = shift + b[c0 + c]
        sc[c] = <real>scale
        sh[c] = <real>shift
    if L == 1:
        bn_col_affine(<const real*>NULL, <const real*>NULL, x + c0, <const real*>NULL, sc, sh, out + c0, N, nc, C)
        return
    for n in range(N):
        o = (n * C + c0) * L
        for c in range(nc):
            for i in range(L):
                out[o + c * L + i] = x[o + c * L + i] * sc[c] + sh[c]


cdef int _bn_fwd(const real *x, const real *w, const real *b, double eps, bint batch_stats, real *mean, real *var,
                 real *out, fnn_idx N, fnn_idx C, fnn_idx L) noexcept nogil:
    cdef int nt = _num_threads if _parallel(N * C * L, False) and C > 1 else 1
    cdef fnn_idx blk, nblk = nt, per = (C + nblk - 1) // nblk, c0, c1
    cdef char *scratch = <char*>malloc(C * (sizeof(double) + 2 * sizeof(real)) + 64)
    cdef double *acc
    cdef real *sc
    if scratch == NULL:
        return -1
    acc = <double*>scratch
    sc = <real*>(acc + C)
    for blk in prange(nblk, num_threads=nt, schedule="static"):
        c0 = blk * per
        c1 = min(C, c0 + per)
        if c0 < c1:
            _bn_block_fwd(x, w, b, eps, batch_stats, mean, var, out, N, C, L, c0, c1, acc + c0, sc + 2 * c0)
    free(scratch)
    return 0


def batch_norm_forward(cnp.ndarray x, cnp.ndarray weight, cnp.ndarray bias, double eps, bint batch_stats,
                       cnp.ndarray mean, cnp.ndarray var, cnp.ndarray out):
    """y = γ(x − μ)/sqrt(σ² + eps) + β per channel of x (N, C, L)."""
    cdef fnn_idx N = x.shape[0], C = x.shape[1], L = x.shape[2]
    cdef int rc
    cdef void *p[6]
    _fill(p, (x, weight, bias, mean, var, out))
    cdef bint f32 = _f32(x)
    with nogil:
        if f32:
            rc = _bn_fwd(<float*>p[0], <float*>p[1], <float*>p[2], eps, batch_stats, <float*>p[3], <float*>p[4],
                         <float*>p[5], N, C, L)
        else:
            rc = _bn_fwd(<double*>p[0], <double*>p[1], <double*>p[2], eps, batch_stats, <double*>p[3],
                         <double*>p[4], <double*>p[5], N, C, L)
    if rc != 0:
        raise MemoryError("batch_norm_forward: out of memory")
    return out


cdef void _bn_block_bwd(const real *g, const real *x, const real *w, const real *mean, const real *var, double eps,
                        bint batch_stats, real *gi, real *gw, real *gb, fnn_idx N, fnn_idx C, fnn_idx L,
                        fnn_idx c0, fnn_idx c1, double *sg, real *k) noexcept nogil:
    """Channels c0..c1: sg (2 (c1 - c0) doubles) and k (3 (c1 - c0) reals) are scratch."""
    cdef fnn_idx n, c, i, o, nc = c1 - c0
    cdef double *sgx = sg + nc
    cdef real *a = k + nc
    cdef real *bb = k + 2 * nc
    cdef double r, kd, M = <double>(N * L)
    for c in range(nc):
        sg[c] = 0
        sgx[c] = 0
    if L == 1:
        bn_col_dot_dev(g + c0, x + c0, mean + c0, N, nc, C, sg, sgx)
    else:
        for n in range(N):
            o = (n * C + c0) * L
            for c in range(nc):
                _dot_dev(g + o + c * L, x + o + c * L, mean[c0 + c], L, &sg[c], &sgx[c])
    for c in range(nc):
        r = 1.0 / sqrt(<double>var[c0 + c] + eps)
        sgx[c] = sgx[c] * r
        if gb != NULL:
            gb[c0 + c] = <real>sg[c]
        if gw != NULL:
            gw[c0 + c] = <real>sgx[c]
        kd = r * (<double>w[c0 + c] if w != NULL else 1.0)
        k[c] = <real>kd
        a[c] = <real>(kd * r * sgx[c] / M) if batch_stats else <real>0
        bb[c] = <real>(kd * sg[c] / M) if batch_stats else <real>0
    if gi == NULL:
        return
    if L == 1:
        if batch_stats:
            bn_col_affine(g + c0, k, x + c0, mean + c0, a, bb, gi + c0, N, nc, C)
        else:
            bn_col_affine(g + c0, k, x + c0, <const real*>NULL, <const real*>NULL, <const real*>NULL, gi + c0, N,
                          nc, C)
        return
    for n in range(N):
        o = (n * C + c0) * L
        if batch_stats:
            for c in range(nc):
                for i in range(L):
                    gi[o + c * L + i] = (g[o + c * L + i] * k[c]
                                         - ((x[o + c * L + i] - mean[c0 + c]) * a[c] + bb[c]))
        else:
            for c in range(nc):
                for i in range(L):
                    gi[o + c * L + i] = g[o + c * L + i] * k[c]


cdef int _bn_bwd(const real *g, const real *x, const real *w, const real *mean, const real *var, double eps,
                 bint batch_stats, real *gi, real *gw, real *gb, fnn_idx N, fnn_idx C, fnn_idx L) noexcept nogil:
    cdef int nt = _num_threads if _parallel(N * C * L, False) and C > 1 else 1
    cdef fnn_idx blk, nblk = nt, per = (C + nblk - 1) // nblk, c0, c1
    cdef char *scratch = <char*>malloc(C * (2 * sizeof(double) + 3 * sizeof(real)) + 64)
    cdef double *sg
    cdef real *k
    if scratch == NULL:
        return -1
    sg = <double*>scratch
    k = <real*>(sg + 2 * C)
    for blk in prange(nblk, num_threads=nt, schedule="static"):
        c0 = blk * per
        c1 = min(C, c0 + per)
        if c0 < c1:
            _bn_block_bwd(g, x, w, mean, var, eps, batch_stats, gi, gw, gb, N, C, L, c0, c1, sg + 2 * c0,
                          k + 3 * c0)
    free(scratch)
    return 0


def batch_norm_backward(cnp.ndarray grad_out, cnp.ndarray x, cnp.ndarray weight, cnp.ndarray mean, cnp.ndarray var,
                        double eps, bint batch_stats, cnp.ndarray grad_input, cnp.ndarray grad_weight,
                        cnp.ndarray grad_bias):
    """dL/dx, dL/dγ, dL/dβ of batch normalisation (see the reference)."""
    cdef fnn_idx N = x.shape[0], C = x.shape[1], L = x.shape[2]
    cdef int rc
    cdef void *p[8]
    _fill(p, (grad_out, x, weight, mean, var, grad_input, grad_weight, grad_bias))
    cdef bint f32 = _f32(x)
    with nogil:
        if f32:
            rc = _bn_bwd(<float*>p[0], <float*>p[1], <float*>p[2], <float*>p[3], <float*>p[4], eps, batch_stats,
                         <float*>p[5], <float*>p[6], <float*>p[7], N, C, L)
        else:
            rc = _bn_bwd(<double*>p[0], <double*>p[1], <double*>p[2], <double*>p[3], <double*>p[4], eps,
                         batch_stats, <double*>p[5], <double*>p[6], <double*>p[7], N, C, L)
    if rc != 0:
        raise MemoryError("batch_norm_backward: out of memory")
    return grad_input, grad_weight, grad_bias


# ---- layer normalisation: x (M, K), statistics per row ----

# A layer norm value costs about as much as 8 values of an elementwise loop
# with an exp (float64 sums, the normalised value): rows go parallel from 64k
# values (256 x 1024 float32 fwd+bwd: 491 -> 310 us on 2 threads).
cdef enum:
    _LN_WORK = 8


cdef void _ln_fwd(const real *x, const real *w, const real *b, double eps, real *out, real *mean, real *rstd,
                  fnn_idx M, fnn_idx K) noexcept nogil:
    cdef fnn_idx m
    for m in prange(M, num_threads=_num_threads if _parallel(M * K * _LN_WORK, False) and M > 1 else 1,
                    schedule="static"):
        ln_fwd_row(x + m * K, w, b, eps, out + m * K, mean + m, rstd + m, K)


def layer_norm_forward(cnp.ndarray x, cnp.ndarray weight, cnp.ndarray bias, double eps, cnp.ndarray out,
                       cnp.ndarray mean, cnp.ndarray rstd):
    """y = γ(x − μ)·r + β per row of x (M, K); mean and rstd written."""
    cdef fnn_idx M = x.shape[0], K = x.shape[1]
    cdef void *p[6]
    _fill(p, (x, weight, bias, out, mean, rstd))
    cdef bint f32 = _f32(x)
    with nogil:
        if f32:
            _ln_fwd(<float*>p[0], <float*>p[1], <float*>p[2], eps, <float*>p[3], <float*>p[4], <float*>p[5], M, K)
        else:
            _ln_fwd(<double*>p[0], <double*>p[1], <double*>p[2], eps, <double*>p[3], <double*>p[4],
                    <double*>p[5], M, K)
    return out


cdef int _ln_bwd(const real *g, const real *x, const real *w, const real *mean, const real *rstd, real *gi,
                 real *gw, real *gb, fnn_idx M, fnn_idx K) noexcept nogil:
    cdef fnn_idx m, k
    cdef double *sw
    cdef double *sb
    if gi != NULL:
        for m in prange(M, num_threads=_num_threads if _parallel(M * K * _LN_WORK, False) and M > 1 else 1,
                        schedule="static"):
            ln_bwd_row(g + m * K, x + m * K, w, mean[m], rstd[m], gi + m * K, K)
    if gw == NULL and gb == NULL:
        return 0
    sw = <double*>calloc(2 * max(K, 1), sizeof(double))
    if sw == NULL:
        return -1
    sb = sw + K
    ln_param_rows(g, x, mean, rstd, sw, sb, M, K)   # column sums over rows in float64
    for k in range(K):
        if gw != NULL:
            gw[k] = <real>sw[k]
        if gb != NULL:
            gb[k] = <real>sb[k]
    free(sw)
    return 0


def layer_norm_backward(cnp.ndarray grad_out, cnp.ndarray x, cnp.ndarray weight, cnp.ndarray mean,
                        cnp.ndarray rstd, cnp.ndarray grad_input, cnp.ndarray grad_weight, cnp.ndarray grad_bias):
    """dL/dx, dL/dγ, dL/dβ of layer normalisation (see the reference)."""
    cdef fnn_idx M = x.shape[0], K = x.shape[1]
    cdef int rc
    cdef void *p[8]
    _fill(p, (grad_out, x, weight, mean, rstd, grad_input, grad_weight, grad_bias))
    cdef bint f32 = _f32(x)
    with nogil:
        if f32:
            rc = _ln_bwd(<float*>p[0], <float*>p[1], <float*>p[2], <float*>p[3], <float*>p[4], <float*>p[5],
                         <float*>p[6], <float*>p[7], M, K)
        else:
            rc = _ln_bwd(<double*>p[0], <double*>p[1], <double*>p[2], <double*>p[3], <double*>p[4],
                         <double*>p[5], <double*>p[6], <double*>p[7], M, K)
    if rc != 0:
        raise MemoryError("layer_norm_backward: out of memory")
    return grad_input, grad_weight, grad_bias


# ---- embeddings ----

cdef fnn_idx _first_bad(const long long *idx, fnn_idx n, fnn_idx V) noexcept nogil:
    """The position of the first index outside [0, V), or -1."""
    cdef fnn_idx i
    for i in range(n):
        if <unsigned long long>idx[i] >= <unsigned long long>V:
            return i
    return -1


cdef int _check_rows(cnp.ndarray indices, fnn_idx V, str what) except -1:
    if cnp.PyArray_TYPE(indices) != cnp.NPY_INT64 or not cnp.PyArray_IS_C_CONTIGUOUS(indices):
        raise TypeError(f"{what} must be a C-contiguous int64 array")
    cdef fnn_idx bad = _first_bad(<const long long*>cnp.PyArray_DATA(indices), cnp.PyArray_SIZE(indices), V)
    if bad >= 0:
        raise ValueError(f"{what} must lie in [0, {V}) for a table of {V} rows")
    return 0


def embedding_forward(cnp.ndarray indices, cnp.ndarray weight, cnp.ndarray out):
    """out[i] = weight[indices[i]] (indices checked against the table)."""
    cdef fnn_idx V = weight.shape[0], D = weight.shape[1], n = cnp.PyArray_SIZE(indices), i
    cdef size_t row = D * cnp.PyArray_ITEMSIZE(weight)
    _check_rows(indices, V, "indices")
    cdef const long long *idx = <const long long*>cnp.PyArray_DATA(indices)
    cdef const char *w = <const char*>cnp.PyArray_DATA(weight)
    cdef char *o = <char*>cnp.PyArray_DATA(out)
    with nogil:
        for i in range(n):
            memcpy(o + i * row, w + idx[i] * row, row)
    return out


cdef void _emb_add(const real *g, const long long *idx, fnn_idx n, fnn_idx D, long long padding,
                   real *gw) noexcept nogil:
    cdef fnn_idx i, d
    cdef real *dst
    for i in range(n):
        if idx[i] == padding:
            continue
        dst = gw + idx[i] * D
        for d in range(D):
            dst[d] = dst[d] + g[i * D + d]


def embedding_backward(cnp.ndarray grad_out, cnp.ndarray indices, long long padding_idx, cnp.ndarray clear,
                       cnp.ndarray grad_weight):
    """Zero the rows `clear`, then grad_weight[indices[i]] += grad_out[i] (not for padding_idx)."""
    cdef fnn_idx V = grad_weight.shape[0], D = grad_weight.shape[1], n = cnp.PyArray_SIZE(indices), i
    _check_rows(indices, V, "indices")
    _check_rows(clear, V, "rows to clear")
    cdef const long long *idx = <const long long*>cnp.PyArray_DATA(indices)
    cdef const long long *cl = <const long long*>cnp.PyArray_DATA(clear)
    cdef fnn_idx nc = cnp.PyArray_SIZE(clear)
    cdef size_t row = D * cnp.PyArray_ITEMSIZE(grad_weight)
    cdef char *gw = <char*>cnp.PyArray_DATA(grad_weight)
    cdef void *pg = cnp.PyArray_DATA(grad_out)
    cdef bint f32 = _f32(grad_weight)
    with nogil:
        for i in range(nc):
            memset(gw + cl[i] * row, 0, row)
        if f32:
            _emb_add(<float*>pg, idx, n, D, padding_idx, <float*>gw)
        else:
            _emb_add(<double*>pg, idx, n, D, padding_idx, <double*>gw)
    return grad_weight


# ---- adaptive average pooling over (B, C, H, W) ----

cdef inline fnn_idx _start(fnn_idx i, fnn_idx n_in, fnn_idx n_out) noexcept nogil:
    return (i * n_in) // n_out


cdef inline fnn_idx _end(fnn_idx i, fnn_idx n_in, fnn_idx n_out) noexcept nogil:
    return ((i + 1) * n_in + n_out - 1) // n_out


cdef void _adaptive_fwd(const real *x, real *out, fnn_idx planes, fnn_idx H, fnn_idx W, fnn_idx Ho,
                        fnn_idx Wo) noexcept nogil:
    cdef fnn_idx pl, i, j, h, w, h0, h1, w0, w1
    cdef double s
    for pl in prange(planes, num_threads=_threads_for(<double>planes * H * W), schedule="static"):
        for i in range(Ho):
            h0 = _start(i, H, Ho)
            h1 = _end(i, H, Ho)
            for j in range(Wo):
                w0 = _start(j, W, Wo)
                w1 = _end(j, W, Wo)
                s = 0
                for h in range(h0, h1):
                    for w in range(w0, w1):
                        s = s + x[(pl * H + h) * W + w]
                out[(pl * Ho + i) * Wo + j] = <real>(s / ((h1 - h0) * (w1 - w0)))


def adaptive_avg_pool2d_forward(cnp.ndarray x, cnp.ndarray out):
    """out[b, c, i, j] = the mean of window (i, j) of x[b, c] (PyTorch's windows)."""
    cdef fnn_idx planes = x.shape[0] * x.shape[1], H = x.shape[2], W = x.shape[3], Ho = out.shape[2]
    cdef fnn_idx Wo = out.shape[3]
    cdef void *px = cnp.PyArray_DATA(x)
    cdef void *po = cnp.PyArray_DATA(out)
    if cnp.PyArray_SIZE(out) == 0:
        return out
    cdef bint f32 = _f32(x)
    with nogil:
        if f32:
            _adaptive_fwd(<float*>px, <float*>po, planes, H, W, Ho, Wo)
        else:
            _adaptive_fwd(<double*>px, <double*>po, planes, H, W, Ho, Wo)
    return out


cdef void _adaptive_bwd(const real *g, real *gi, fnn_idx planes, fnn_idx H, fnn_idx W, fnn_idx Ho,
                        fnn_idx Wo) noexcept nogil:
    cdef fnn_idx pl, i, j, h, w, h0, h1, w0, w1
    cdef real v
    for pl in prange(planes, num_threads=_threads_for(<double>planes * H * W), schedule="static"):
        memset(gi + pl * H * W, 0, H * W * sizeof(real))
        for i in range(Ho):
            h0 = _start(i, H, Ho)
            h1 = _end(i, H, Ho)
            for j in range(Wo):
                w0 = _start(j, W, Wo)
                w1 = _end(j, W, Wo)
                v = g[(pl * Ho + i) * Wo + j] / <real>((h1 - h0) * (w1 - w0))
                for h in range(h0, h1):
                    for w in range(w0, w1):
                        gi[(pl * H + h) * W + w] += v


def adaptive_avg_pool2d_backward(cnp.ndarray grad_out, cnp.ndarray grad_input):
    """Each output gradient spread evenly over its window."""
    cdef fnn_idx planes = grad_input.shape[0] * grad_input.shape[1], H = grad_input.shape[2]
    cdef fnn_idx W = grad_input.shape[3], Ho = grad_out.shape[2], Wo = grad_out.shape[3]
    cdef void *pg = cnp.PyArray_DATA(grad_out)
    cdef void *pi = cnp.PyArray_DATA(grad_input)
    if cnp.PyArray_SIZE(grad_input) == 0:
        return grad_input
    cdef bint f32 = _f32(grad_input)
    with nogil:
        if f32:
            _adaptive_bwd(<float*>pg, <float*>pi, planes, H, W, Ho, Wo)
        else:
            _adaptive_bwd(<double*>pg, <double*>pi, planes, H, W, Ho, Wo)
    return grad_input
