# Dropout, batch and layer normalisation, embeddings and adaptive average
# pooling (the math: fastnn/backends/reference/{dropout,norm,embedding,
# adaptive_pool}.py). One pass per output; the normalisations' statistics
# (kernels/norm.h) are summed in float64 over short partials in the data's
# dtype; channels (batch norm), rows (layer norm, embeddings) or
# planes (pooling) split over the team when the work is large. Every index an
# embedding kernel reads or writes with is checked here, where it is used.

from libc.stdint cimport uint8_t, uint32_t, uint64_t, uintptr_t


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


# A normalised value counts as 8 values of an elementwise loop with an exp:
# the team takes channels (batch norm) or rows (layer norm) from 64k values.
# Measured for layer norm with the previous float64 kernels, 256 x 1024
# float32 fwd+bwd: 491 -> 310 us on 2 threads; batch norm had no factor, so a
# 256 x 1024 BatchNorm1d (2^18 values) ran on one thread.
cdef enum:
    _NORM_WORK = 8


# ---- batch normalisation: x (N, C, L), statistics per channel ----
# The C library (norm.h) takes a range of channels at a time, in blocks whose
# values stay in L2 between the statistics and the normalising pass; the team
# splits the channels, so every sum has one order whatever the thread count.

cdef inline fnn_idx _bn_edge(int t, int nt, fnn_idx C, fnn_idx L, const void *out, size_t item) noexcept nogil:
    """The first channel of thread t of nt. With L = 1 the threads write parts of every row: the edge moves
    up to a cache line of the output, or each row's line at the edge goes back and forth between the cores
    (BatchNorm1d 256x1024 on 2 threads, kernels' fwd+bwd: 115-125 us, 123-137 us with the line shared)."""
    cdef fnn_idx c = t * ((C + nt - 1) // nt), line = 64 // item, lead
    if 0 < c < C and L == 1 and (C * item) % 64 == 0:  # every row at the same offset in its lines
        lead = <fnn_idx>((64 - <uintptr_t>out % 64) % 64 // item)  # the channels before a row's first line
        c += (lead - c % line + line) % line
    return min(c, C)


cdef int _bn_fwd(const real *x, const real *w, const real *b, double eps, bint batch_stats, real *mean, real *var,
                 real *out, fnn_idx N, fnn_idx C, fnn_idx L) noexcept nogil:
    cdef int nt = _num_threads if _parallel(N * C * L * _NORM_WORK, False) and C > 1 else 1
    cdef fnn_idx blk, c0, c1
    cdef int rc = 0
    for blk in prange(nt, num_threads=nt, schedule="static"):
        c0 = _bn_edge(blk, nt, C, L, out, sizeof(real))
        c1 = _bn_edge(blk + 1, nt, C, L, out, sizeof(real))
        if c0 < c1:
            rc |= bn_fwd(x, w, b, eps, batch_stats, mean, var, out, N, C, L, c0, c1)
    return rc


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


cdef int _bn_bwd(const real *g, const real *x, const real *w, const real *mean, const real *var, double eps,
                 bint batch_stats, real *gi, real *gw, real *gb, fnn_idx N, fnn_idx C, fnn_idx L) noexcept nogil:
    cdef int nt = _num_threads if _parallel(N * C * L * _NORM_WORK, False) and C > 1 else 1
    cdef fnn_idx blk, c0, c1
    cdef int rc = 0
    for blk in prange(nt, num_threads=nt, schedule="static"):
        c0 = _bn_edge(blk, nt, C, L, gi, sizeof(real))
        c1 = _bn_edge(blk + 1, nt, C, L, gi, sizeof(real))
        if c0 < c1:
            rc |= bn_bwd(g, x, w, mean, var, eps, batch_stats, gi, gw, gb, N, C, L, c0, c1)
    return rc


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

cdef inline int _ln_threads(fnn_idx M, fnn_idx K) noexcept nogil:
    return _num_threads if _parallel(M * K * _NORM_WORK, False) and M > 1 else 1


cdef void _ln_fwd(const real *x, const real *w, const real *b, double eps, real *out, real *mean, real *rstd,
                  fnn_idx M, fnn_idx K) noexcept nogil:
    cdef int nt = _ln_threads(M, K)
    cdef fnn_idx t, per = (M + nt - 1) // nt, m0
    for t in prange(nt, num_threads=nt, schedule="static"):
        m0 = t * per
        if m0 < M:
            ln_fwd_rows(x + m0 * K, w, b, eps, out + m0 * K, mean + m0, rstd + m0, min(per, M - m0), K)


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
    """Each thread a range of rows; its affine sums (float64) in its own slice, added in thread order after."""
    cdef int nt = _ln_threads(M, K)
    cdef bint params = gw != NULL or gb != NULL
    cdef fnn_idx t, k, per = (M + nt - 1) // nt, m0
    cdef size_t each = 2 * K * (sizeof(double) + sizeof(real))   # sw, sb and the partials pw, pb
    cdef char *mem = <char*>calloc(nt, each) if params else NULL
    cdef double *sw
    if params and mem == NULL:
        return -1
    for t in prange(nt, num_threads=nt, schedule="static"):
        m0 = t * per
        if m0 < M:
            ln_bwd_rows(g + m0 * K, x + m0 * K, w, mean + m0, rstd + m0, NULL if gi == NULL else gi + m0 * K,
                        <double*>(mem + t * each) if params else NULL,
                        <double*>(mem + t * each) + K if params else NULL,
                        <real*>(<double*>(mem + t * each) + 2 * K) if params else NULL,
                        <real*>(<double*>(mem + t * each) + 2 * K) + K if params else NULL,
                        min(per, M - m0), K)
    if not params:
        return 0
    sw = <double*>mem
    for t in range(1, nt):
        for k in range(2 * K):
            sw[k] += (<double*>(mem + t * each))[k]
    for k in range(K):
        if gw != NULL:
            gw[k] = <real>sw[k]
        if gb != NULL:
            gb[k] = <real>sw[K + k]
    free(mem)
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
