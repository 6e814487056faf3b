# Activations, softmax, losses and optimizer updates: long arrays are cut
# into chunks for the OpenMP team, loss sums are added chunk by chunk in
# chunk order (bit-identical whatever the thread count or schedule).

cdef inline int _act_code(object activation) except -1:
    if activation == "identity":
        return FNN_ACT_IDENTITY
    if activation == "relu":
        return FNN_ACT_RELU
    if activation == "sigmoid":
        return FNN_ACT_SIGMOID
    if activation == "tanh":
        return FNN_ACT_TANH
    raise ValueError(f"unknown activation {activation!r}")


cdef inline bint _cheap(int act) noexcept nogil:
    """Memory-bound activations: a few flops per element."""
    return act == FNN_ACT_IDENTITY or act == FNN_ACT_RELU or act == FNN_ACT_LEAKY_RELU


cdef void _unary(int act, const real *x, const real *bias, real *y, fnn_idx n, double prm) noexcept nogil:
    """y = act(x (+ bias)) elementwise, in chunks over the team when large (bias: one row, n entries)."""
    cdef fnn_idx c, start, nch, chunk = fnn_tune.chunk_elements
    if bias == NULL and _parallel(n, _cheap(act)):
        nch = (n + chunk - 1) // chunk
        for c in prange(nch, num_threads=_num_threads, schedule="dynamic"):
            start = c * chunk
            act_fwd(act, x + start, NULL, y + start, min(chunk, n - start), prm)
    else:
        act_fwd(act, x, bias, y, n, prm)


cdef void _binary(int act, const real *g, const real *y, real *out, fnn_idx n, double prm) noexcept nogil:
    """out = g act'(y) elementwise, in chunks over the team when large."""
    cdef fnn_idx c, start, nch, chunk = fnn_tune.chunk_elements
    if _parallel(n, True):
        nch = (n + chunk - 1) // chunk
        for c in prange(nch, num_threads=_num_threads, schedule="dynamic"):
            start = c * chunk
            act_bwd(act, g + start, y + start, out + start, min(chunk, n - start), prm)
    else:
        act_bwd(act, g, y, out, n, prm)


cdef inline void _colsum_chunk(int act, const real *g, const real *y, real *delta, fnn_idx rows, fnn_idx cols,
                               fnn_idx j0, real *gb) noexcept nogil:
    """_binary_colsum's columns [j0, j0 + FNN_COLSUM_CHUNK); y and delta are NULL for the identity."""
    cdef const real *yj = NULL
    cdef real *dj = NULL
    if act != FNN_ACT_IDENTITY:
        yj = y + j0
        dj = delta + j0
    dact_colsum(act, g + j0, yj, dj, rows, min(<fnn_idx>FNN_COLSUM_CHUNK, cols - j0), cols, gb + j0, 0.0)


cdef void _binary_colsum(int act, const real *g, const real *y, real *delta, fnn_idx rows, fnn_idx cols,
                         real *gb) noexcept nogil:
    """delta = g act'(y) (rows x cols, contiguous; not formed for the identity) and gb = Σ_rows delta with
    one read of g (dact_colsum), chunks of columns split over the team when large; without gb, _binary."""
    cdef fnn_idx c, nb = (cols + FNN_COLSUM_CHUNK - 1) // FNN_COLSUM_CHUNK
    if gb == NULL:
        if act != FNN_ACT_IDENTITY:
            _binary(act, g, y, delta, rows * cols, 0.0)
    elif nb > 1 and _parallel(rows * cols, True):
        for c in prange(nb, num_threads=_num_threads, schedule="static"):
            _colsum_chunk(act, g, y, delta, rows, cols, c * FNN_COLSUM_CHUNK, gb)
    else:
        dact_colsum(act, g, y, delta, rows, cols, cols, gb, 0.0)


cdef void _bias_act(int act, real *y, const real *bias, fnn_idx rows, fnn_idx cols) noexcept nogil:
    """y[i, :] = act(y[i, :] + bias) in one pass, rows split over the team when large."""
    cdef fnn_idx r
    if bias == NULL:
        _unary(act, y, <const real*>NULL, y, rows * cols, 0.0)
    elif rows > 1 and _parallel(rows * cols, _cheap(act)):
        for r in prange(rows, num_threads=_num_threads, schedule="dynamic"):
            act_fwd(act, y + r * cols, bias, y + r * cols, cols, 0.0)
    else:
        for r in range(rows):
            act_fwd(act, y + r * cols, bias, y + r * cols, cols, 0.0)


cdef int _unary_run(int act, const real *x, real *y, fnn_idx n, double prm) except -1:
    if n >= fnn_tune.nogil_min_elements:   # releasing the GIL costs more than a small loop
        with nogil:
            _unary(act, x, <const real*>NULL, y, n, prm)
    else:
        _unary(act, x, <const real*>NULL, y, n, prm)
    return 0


cdef int _binary_run(int act, const real *g, const real *y, real *out, fnn_idx n, double prm) except -1:
    if n >= fnn_tune.nogil_min_elements:
        with nogil:
            _binary(act, g, y, out, n, prm)
    else:
        _binary(act, g, y, out, n, prm)
    return 0


cdef int _run_unary(cnp.ndarray x, cnp.ndarray out, int act, double prm) except -1:
    cdef fnn_idx n = cnp.PyArray_SIZE(x)
    if _f32(x):
        return _unary_run(act, <float*>cnp.PyArray_DATA(x), <float*>cnp.PyArray_DATA(out), n, prm)
    return _unary_run(act, <double*>cnp.PyArray_DATA(x), <double*>cnp.PyArray_DATA(out), n, prm)


cdef int _run_binary(cnp.ndarray g, cnp.ndarray y, cnp.ndarray out, int act, double prm) except -1:
    cdef fnn_idx n = cnp.PyArray_SIZE(g)
    if _f32(g):
        return _binary_run(act, <float*>cnp.PyArray_DATA(g), <float*>cnp.PyArray_DATA(y),
                           <float*>cnp.PyArray_DATA(out), n, prm)
    return _binary_run(act, <double*>cnp.PyArray_DATA(g), <double*>cnp.PyArray_DATA(y),
                       <double*>cnp.PyArray_DATA(out), n, prm)


def relu(cnp.ndarray x, cnp.ndarray out):
    """y = max(x, 0), NaN kept."""
    _run_unary(x, out, FNN_ACT_RELU, 0.0)
    return out


def relu_backward(cnp.ndarray grad_out, cnp.ndarray y, cnp.ndarray out):
    """dx = g * (y > 0)."""
    _run_binary(grad_out, y, out, FNN_ACT_RELU, 0.0)
    return out


def leaky_relu(cnp.ndarray x, double negative_slope, cnp.ndarray out):
    """y = x * (a if x < 0 else 1)."""
    _run_unary(x, out, FNN_ACT_LEAKY_RELU, negative_slope)
    return out


def leaky_relu_backward(cnp.ndarray grad_out, cnp.ndarray y, double negative_slope, cnp.ndarray out):
    """dx = g * (1 if y > 0 else a)."""
    _run_binary(grad_out, y, out, FNN_ACT_LEAKY_RELU, negative_slope)
    return out


def sigmoid(cnp.ndarray x, cnp.ndarray out):
    """y = 1 / (1 + exp(-x)), without overflow."""
    _run_unary(x, out, FNN_ACT_SIGMOID, 0.0)
    return out


def sigmoid_backward(cnp.ndarray grad_out, cnp.ndarray y, cnp.ndarray out):
    """dx = g * y * (1 - y)."""
    _run_binary(grad_out, y, out, FNN_ACT_SIGMOID, 0.0)
    return out


def tanh(cnp.ndarray x, cnp.ndarray out):
    """y = tanh(x)."""
    _run_unary(x, out, FNN_ACT_TANH, 0.0)
    return out


def tanh_backward(cnp.ndarray grad_out, cnp.ndarray y, cnp.ndarray out):
    """dx = g * (1 - y^2)."""
    _run_binary(grad_out, y, out, FNN_ACT_TANH, 0.0)
    return out


# ---- rows: softmax and cross-entropy ----

cdef inline void _softmax_block(const real *x, real *y, const real *g, fnn_idx nr, fnn_idx c,
                                bint backward) noexcept nogil:
    if backward:
        softmax_bwd_rows(g, x, y, nr, c)
    else:
        softmax_rows(x, y, nr, c)


cdef void _softmax(const real *x, real *y, const real *g, fnn_idx rows, fnn_idx c, bint backward) noexcept nogil:
    """Softmax (or its backward from y = x, g) over rows, blocks of rows over the team when large."""
    cdef fnn_idx blk, nblk, lo, hi
    cdef fnn_idx per = max(1, fnn_tune.chunk_elements // max(c, 1))
    if rows > 1 and _parallel(rows * c, backward):
        nblk = (rows + per - 1) // per
        for blk in prange(nblk, num_threads=_num_threads, schedule="dynamic"):
            lo = blk * per
            hi = min(rows, lo + per)
            _softmax_block(x + lo * c, y + lo * c, <const real*>NULL if g == NULL else g + lo * c, hi - lo, c,
                           backward)
    else:
        _softmax_block(x, y, g, rows, c, backward)


cdef int _softmax_run(const real *x, real *y, const real *g, fnn_idx rows, fnn_idx c, bint backward) except -1:
    if rows == 0 or c == 0:   # an empty (2**40, 0) array must not cost a pass over its rows
        return 0
    if rows * c >= fnn_tune.nogil_min_elements:
        with nogil:
            _softmax(x, y, g, rows, c, backward)
    else:
        _softmax(x, y, g, rows, c, backward)
    return 0


cdef object _run_softmax(cnp.ndarray x, cnp.ndarray out, cnp.ndarray g):
    cdef fnn_idx rows = cnp.PyArray_DIM(x, 0), c = cnp.PyArray_DIM(x, 1)
    cdef void *p[3]
    _fill(p, (x, out, g))
    if _f32(x):
        _softmax_run(<float*>p[0], <float*>p[1], <float*>p[2], rows, c, g is not None)
    else:
        _softmax_run(<double*>p[0], <double*>p[1], <double*>p[2], rows, c, g is not None)
    return out


def softmax(cnp.ndarray x, cnp.ndarray out):
    """y_ij = exp(x_ij - max_i) / sum_k exp(x_ik - max_i), over the last axis."""
    return _run_softmax(x, out, None)


def softmax_backward(cnp.ndarray grad_out, cnp.ndarray y, cnp.ndarray out):
    """dx_ij = y_ij * (g_ij - sum_k g_ik y_ik)."""
    return _run_softmax(y, out, grad_out)


cdef double _xent(const real *z, const fnn_idx *labels, real *g, fnn_idx rows, fnn_idx c,
                  double scale) noexcept nogil:
    """Sum of the rows' losses: blocks of rows, each block's sum in its own slot, added in order."""
    cdef fnn_idx blk, nblk, lo, hi
    cdef fnn_idx per = max(1, fnn_tune.chunk_elements // max(c, 1))
    cdef double total = 0
    cdef double *partial
    cdef int nt = _num_threads if _parallel(rows * c, False) else 1
    if rows > per:
        nblk = (rows + per - 1) // per
        partial = <double*>malloc(nblk * sizeof(double))
        if partial != NULL:
            for blk in prange(nblk, num_threads=nt, schedule="dynamic"):
                lo = blk * per
                hi = min(rows, lo + per)
                partial[blk] = xent_rows(z + lo * c, labels + lo, g + lo * c, hi - lo, c, scale)
            for blk in range(nblk):
                total += partial[blk]
            free(partial)
            return total
    return xent_rows(z, labels, g, rows, c, scale)


def softmax_cross_entropy(cnp.ndarray logits, cnp.ndarray labels, reduction, cnp.ndarray grad):
    """L = s Σ_i logsumexp(z_i) - z_{i,y_i}, dL/dz = s (softmax(z) - onehot(y))."""
    cdef fnn_idx rows = cnp.PyArray_DIM(logits, 0), c = cnp.PyArray_DIM(logits, 1), r
    cdef bint mean = reduction == "mean"
    if rows == 0:
        return (float("nan") if mean else 0.0), grad
    cdef double scale = 1.0 / rows if mean else 1.0
    cdef void *pz = cnp.PyArray_DATA(logits)
    cdef const fnn_idx *pl = <const fnn_idx*>cnp.PyArray_DATA(labels)
    cdef void *pg = cnp.PyArray_DATA(grad)
    cdef bint f32 = _f32(logits)
    cdef double total
    for r in range(rows):   # the kernel checks what it indexes with, whoever called it
        if <size_t>pl[r] >= <size_t>c:
            raise ValueError(f"labels must lie in [0, {c}), got {pl[r]} in row {r}")
    with nogil:
        if f32:
            total = _xent(<float*>pz, pl, <float*>pg, rows, c, scale)
        else:
            total = _xent(<double*>pz, pl, <double*>pg, rows, c, scale)
    return total * scale, grad


# ---- pair losses (MSE, BCE) ----

cdef inline double _pair_block(bint is_mse, const real *p, const real *t, real *g, fnn_idx n,
                               double gscale) noexcept nogil:
    return mse(p, t, g, n, gscale) if is_mse else bce(p, t, g, n, gscale)


cdef double _pair(bint is_mse, const real *p, const real *t, real *g, fnn_idx n, double gscale) noexcept nogil:
    """Any input longer than one chunk is summed chunk by chunk, on one thread or on the team."""
    cdef fnn_idx c, start, nch, chunk = fnn_tune.chunk_elements
    cdef double total = 0
    cdef double *partial
    cdef int nt = _num_threads if _parallel(n, is_mse) else 1
    if n > chunk:
        nch = (n + chunk - 1) // chunk
        partial = <double*>malloc(nch * sizeof(double))
        if partial != NULL:
            for c in prange(nch, num_threads=nt, schedule="dynamic"):
                start = c * chunk
                partial[c] = _pair_block(is_mse, p + start, t + start, g + start, min(chunk, n - start), gscale)
            for c in range(nch):
                total += partial[c]
            free(partial)
            return total
    return _pair_block(is_mse, p, t, g, n, gscale)


cdef double _run_pair(bint is_mse, cnp.ndarray pred, cnp.ndarray target, cnp.ndarray grad, double gscale):
    cdef fnn_idx n = cnp.PyArray_SIZE(pred)
    cdef void *pp = cnp.PyArray_DATA(pred)
    cdef void *pt = cnp.PyArray_DATA(target)
    cdef void *pg = cnp.PyArray_DATA(grad)
    cdef bint f32 = _f32(pred)
    cdef double s
    with nogil:
        if f32:
            s = _pair(is_mse, <float*>pp, <float*>pt, <float*>pg, n, gscale)
        else:
            s = _pair(is_mse, <double*>pp, <double*>pt, <double*>pg, n, gscale)
    return s


def mse_loss(cnp.ndarray pred, cnp.ndarray target, reduction, cnp.ndarray grad):
    """L = s Σ (a - y)², dL/da = 2 s (a - y), s = 1/n (mean) or 1 (sum)."""
    cdef fnn_idx n = cnp.PyArray_SIZE(pred)
    cdef bint mean = reduction == "mean"
    if n == 0:
        return (float("nan") if mean else 0.0), grad
    cdef double scale = 1.0 / n if mean else 1.0
    return _run_pair(True, pred, target, grad, 2.0 * scale) * scale, grad


def bce_with_logits(cnp.ndarray logits, cnp.ndarray target, reduction, cnp.ndarray grad):
    """L = s Σ max(z,0) - z y + log1p(exp(-|z|)), dL/dz = s (σ(z) - y)."""
    cdef fnn_idx n = cnp.PyArray_SIZE(logits)
    cdef bint mean = reduction == "mean"
    if n == 0:
        return (float("nan") if mean else 0.0), grad
    cdef double scale = 1.0 / n if mean else 1.0
    return _run_pair(False, logits, target, grad, scale) * scale, grad


# ---- optimizer updates ----

cdef void _sgd(real *p, const real *g, real *v, fnn_idx n, double lr, double mom, int nesterov,
               double wd) noexcept nogil:
    cdef fnn_idx c, start, nch, chunk = fnn_tune.chunk_elements
    if _parallel(n, True):
        nch = (n + chunk - 1) // chunk
        for c in prange(nch, num_threads=_num_threads, schedule="dynamic"):
            start = c * chunk
            sgd(p + start, g + start, NULL if v == NULL else v + start, min(chunk, n - start), lr, mom,
                nesterov, wd)
    else:
        sgd(p, g, v, n, lr, mom, nesterov, wd)


cdef void _adam(real *p, const real *g, real *m, real *v, fnn_idx n, double decay, double l2, double b1,
                double b2, double step_size, double isb, double eps) noexcept nogil:
    cdef fnn_idx c, start, nch, chunk = fnn_tune.chunk_elements
    if _parallel(n, False):
        nch = (n + chunk - 1) // chunk
        for c in prange(nch, num_threads=_num_threads, schedule="dynamic"):
            start = c * chunk
            adam(p + start, g + start, m + start, v + start, min(chunk, n - start), decay, l2, b1, b2,
                 step_size, isb, eps)
    else:
        adam(p, g, m, v, n, decay, l2, b1, b2, step_size, isb, eps)


cdef int _sgd_run(real *p, const real *g, real *v, fnn_idx n, double lr, double mom, int nesterov,
                  double wd) except -1:
    if n >= fnn_tune.nogil_min_elements:
        with nogil:
            _sgd(p, g, v, n, lr, mom, nesterov, wd)
    else:
        _sgd(p, g, v, n, lr, mom, nesterov, wd)
    return 0


cdef int _adam_run(real *p, const real *g, real *m, real *v, fnn_idx n, tuple f, double b1, double b2,
                   double eps) except -1:
    cdef double decay = f[0], l2 = f[1], step_size = f[2], isb = f[3]
    if n >= fnn_tune.nogil_min_elements:
        with nogil:
            _adam(p, g, m, v, n, decay, l2, b1, b2, step_size, isb, eps)
    else:
        _adam(p, g, m, v, n, decay, l2, b1, b2, step_size, isb, eps)
    return 0


cdef int _run_sgd(cnp.ndarray param, object grad, object velocity, double lr, double momentum, bint nesterov,
                  double weight_decay) except -1:
    cdef fnn_idx n = cnp.PyArray_SIZE(param)
    cdef void *p[3]
    _fill(p, (param, grad, None if momentum == 0 else velocity))
    if _f32(param):
        return _sgd_run(<float*>p[0], <float*>p[1], <float*>p[2], n, lr, momentum, nesterov, weight_decay)
    return _sgd_run(<double*>p[0], <double*>p[1], <double*>p[2], n, lr, momentum, nesterov, weight_decay)


cdef int _run_adam(cnp.ndarray param, object grad, object m, object v, tuple factors, double b1, double b2,
                   double eps) except -1:
    cdef fnn_idx n = cnp.PyArray_SIZE(param)
    cdef void *p[4]
    _fill(p, (param, grad, m, v))
    if _f32(param):
        return _adam_run(<float*>p[0], <float*>p[1], <float*>p[2], <float*>p[3], n, factors, b1, b2, eps)
    return _adam_run(<double*>p[0], <double*>p[1], <double*>p[2], <double*>p[3], n, factors, b1, b2, eps)


cdef inline tuple _adam_factors(long step, double lr, double beta1, double beta2, double weight_decay,
                                bint decoupled):
    """(decay, l2, step size, 1/sqrt(bc2)): PyTorch's bias corrections and weight decay."""
    cdef double bc1 = 1.0 - beta1 ** step
    cdef double bc2 = 1.0 - beta2 ** step
    return (1.0 - lr * weight_decay if decoupled else 1.0, 0.0 if decoupled else weight_decay,
            lr / bc1, 1.0 / sqrt(bc2))


def sgd_update(cnp.ndarray param, cnp.ndarray grad, cnp.ndarray velocity, double lr, double momentum,
               bint nesterov, double weight_decay):
    """g = grad + wd p; v = μ v + g; p -= lr (g + μ v if nesterov else v)."""
    _run_sgd(param, grad, velocity, lr, momentum, nesterov, weight_decay)


def adam_update(cnp.ndarray param, cnp.ndarray grad, cnp.ndarray exp_avg, cnp.ndarray exp_avg_sq, long step,
                double lr, double beta1, double beta2, double eps, double weight_decay, bint decoupled):
    """m = β1 m + (1-β1) g; v = β2 v + (1-β2) g²; p -= lr/bc1 · m / (√v/√bc2 + ε)."""
    _run_adam(param, grad, exp_avg, exp_avg_sq, _adam_factors(step, lr, beta1, beta2, weight_decay, decoupled),
              beta1, beta2, eps)


def sgd_update_many(tuple params, tuple grads, object velocities, double lr, double momentum, bint nesterov,
                    double weight_decay):
    """sgd_update on each (params[i], grads[i], velocities[i]): one call for a whole model."""
    cdef Py_ssize_t i
    cdef tuple vs = None if (velocities is None or momentum == 0) else <tuple?>velocities
    for i in range(len(params)):
        _run_sgd(<cnp.ndarray?>params[i], <cnp.ndarray?>grads[i], None if vs is None else <cnp.ndarray?>vs[i],
                 lr, momentum, nesterov, weight_decay)


def adam_update_many(tuple params, tuple grads, tuple exp_avgs, tuple exp_avg_sqs, long step, double lr,
                     double beta1, double beta2, double eps, double weight_decay, bint decoupled):
    """adam_update on each (params[i], grads[i], exp_avgs[i], exp_avg_sqs[i]): one call for a whole model."""
    cdef Py_ssize_t i
    cdef tuple factors = _adam_factors(step, lr, beta1, beta2, weight_decay, decoupled)
    for i in range(len(params)):
        _run_adam(<cnp.ndarray?>params[i], <cnp.ndarray?>grads[i], <cnp.ndarray?>exp_avgs[i],
                  <cnp.ndarray?>exp_avg_sqs[i], factors, beta1, beta2, eps)
