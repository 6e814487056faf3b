# Matrix multiply and the dense layer; the own GEMM's direct entry points
# (fastnn.backends.cython_backend._gemm: tests and measurements).

def matmul(cnp.ndarray a, cnp.ndarray b, bint trans_a, bint trans_b, cnp.ndarray out):
    """C = op(A) op(B), op = identity or transpose."""
    cdef fnn_idx m = cnp.PyArray_DIM(out, 0), n = cnp.PyArray_DIM(out, 1)
    cdef fnn_idx k = cnp.PyArray_DIM(a, 0) if trans_a else cnp.PyArray_DIM(a, 1)
    cdef fnn_idx rsa = 1 if trans_a else k, csa = m if trans_a else 1
    cdef fnn_idx rsb = 1 if trans_b else n, csb = k if trans_b else 1
    cdef void *pa = cnp.PyArray_DATA(a)
    cdef void *pb = cnp.PyArray_DATA(b)
    cdef void *pc = cnp.PyArray_DATA(out)
    cdef bint f32 = _f32(a)
    cdef int rc
    with nogil:
        if f32:
            rc = gemm_run(m, n, k, <float*>pa, rsa, csa, <float*>pb, rsb, csb, <float*>pc, n, <float*>NULL,
                          FNN_ACT_IDENTITY, False)
        else:
            rc = gemm_run(m, n, k, <double*>pa, rsa, csa, <double*>pb, rsb, csb, <double*>pc, n, <double*>NULL,
                          FNN_ACT_IDENTITY, False)
    if rc != 0:
        raise MemoryError("matmul: out of memory")
    return out


cdef int _dense_fwd(const real *x, const real *w, const real *bias, real *y, fnn_idx bsz, fnn_idx nin,
                    fnn_idx nout, int act) noexcept nogil:
    """y = act(x Wᵀ + b): bias and ReLU fused into the product's tiles, sigmoid and
    tanh by the activation kernel after it (one pass, split over the team when large)."""
    cdef int fused = act if act == FNN_ACT_RELU or act == FNN_ACT_IDENTITY else FNN_ACT_IDENTITY
    if gemm_run(bsz, nout, nin, x, nin, 1, w, 1, nin, y, nout, bias, fused, False) != 0:
        return -1
    if act != fused:
        _bias_act(act, y, <const real*>NULL, bsz, nout)
    return 0


def dense_forward(cnp.ndarray x, cnp.ndarray weight, cnp.ndarray bias, activation, cnp.ndarray out):
    """y = act(x Wᵀ + b)."""
    cdef int act = _act_code(activation), rc
    cdef fnn_idx bsz = cnp.PyArray_DIM(x, 0), nin = cnp.PyArray_DIM(x, 1), nout = cnp.PyArray_DIM(weight, 0)
    cdef void *px = cnp.PyArray_DATA(x)
    cdef void *pw = cnp.PyArray_DATA(weight)
    cdef void *pb = _data(bias)
    cdef void *py = cnp.PyArray_DATA(out)
    cdef bint f32 = _f32(x)
    if bsz == 0 or nout == 0:   # nothing to write (the bias loop would still visit every row)
        return out
    with nogil:
        if f32:
            rc = _dense_fwd(<float*>px, <float*>pw, <float*>pb, <float*>py, bsz, nin, nout, act)
        else:
            rc = _dense_fwd(<double*>px, <double*>pw, <double*>pb, <double*>py, bsz, nin, nout, act)
    if rc != 0:
        raise MemoryError("dense_forward: out of memory")
    return out


cdef int _dense_bwd(const real *g, const real *x, const real *w, const real *y, real *delta, real *gi, real *gw,
                    real *gb, fnn_idx bsz, fnn_idx nin, fnn_idx nout, int act) noexcept nogil:
    """δ = g ⊙ act'(y); dW = δᵀ x; db = Σ_batch δ; dx = δ W."""
    cdef const real *d = g if act == FNN_ACT_IDENTITY else delta
    _binary_colsum(act, g, y, delta, bsz, nout, gb)   # δ and db with one read of g, before both products
    if gemm_run(nout, nin, bsz, d, 1, nout, x, nin, 1, gw, nin, <const real*>NULL, FNN_ACT_IDENTITY, False) != 0:
        return -1
    if gi != NULL:
        return gemm_run(bsz, nin, nout, d, nout, 1, w, nin, 1, gi, nin, <const real*>NULL, FNN_ACT_IDENTITY, False)
    return 0


def dense_backward(cnp.ndarray grad_out, cnp.ndarray x, cnp.ndarray weight, cnp.ndarray y, activation,
                   cnp.ndarray grad_input, cnp.ndarray grad_weight, cnp.ndarray grad_bias):
    """δ = g ⊙ act'(y); dW = δᵀ x; db = Σ_batch δ; dx = δ W."""
    cdef int act = _act_code(activation), rc
    cdef fnn_idx bsz = cnp.PyArray_DIM(x, 0), nin = cnp.PyArray_DIM(x, 1), nout = cnp.PyArray_DIM(weight, 0)
    cdef cnp.ndarray delta = None
    cdef void *p[8]
    cdef bint f32 = _f32(x)
    if bsz * nout == 0:   # no sample or no output: every gradient is a sum over nothing
        for a in (grad_input, grad_weight, grad_bias):
            if a is not None:
                a.fill(0)
        return grad_input, grad_weight, grad_bias
    if act != FNN_ACT_IDENTITY:
        delta = cnp.PyArray_EMPTY(2, cnp.PyArray_DIMS(grad_out), cnp.PyArray_TYPE(grad_out), 0)
    _fill(p, (grad_out, x, weight, y, delta, grad_input, grad_weight, grad_bias))
    with nogil:
        if f32:
            rc = _dense_bwd(<float*>p[0], <float*>p[1], <float*>p[2], <float*>p[3], <float*>p[4], <float*>p[5],
                            <float*>p[6], <float*>p[7], bsz, nin, nout, act)
        else:
            rc = _dense_bwd(<double*>p[0], <double*>p[1], <double*>p[2], <double*>p[3], <double*>p[4],
                            <double*>p[5], <double*>p[6], <double*>p[7], bsz, nin, nout, act)
    if rc != 0:
        raise MemoryError("dense_backward: out of memory")
    return grad_input, grad_weight, grad_bias


# ---- the own GEMM directly ----

ACTIVATIONS = {"identity": FNN_ACT_IDENTITY, "relu": FNN_ACT_RELU, "sigmoid": FNN_ACT_SIGMOID,
               "tanh": FNN_ACT_TANH}


cdef fnn_idx _stride(cnp.ndarray a, int axis) except? -1:
    """The element stride of an axis (0 for a length-1 axis: it is never stepped)."""
    cdef fnn_idx s = cnp.PyArray_STRIDE(a, axis), isz = cnp.PyArray_ITEMSIZE(a)
    if cnp.PyArray_DIM(a, axis) <= 1:
        return 0
    if s % isz:
        raise ValueError("array strides must be whole elements")
    return s // isz


def gemm(cnp.ndarray a, cnp.ndarray b, bint trans_a, bint trans_b, cnp.ndarray out, cnp.ndarray bias=None,
         int act=0, route="packed"):
    """out = act(op(a)·op(b) + bias) by the own GEMM ("packed" or "small"); a and b of any strides,
    out with unit column stride."""
    if a.ndim != 2 or b.ndim != 2 or out.ndim != 2:
        raise ValueError("gemm: a, b and out must be 2-D")
    if not (a.dtype == b.dtype == out.dtype and (bias is None or bias.dtype == out.dtype)) \
            or out.dtype not in (np.float32, np.float64):
        raise TypeError("gemm: a, b, out and bias must share one float dtype")
    cdef fnn_idx M = out.shape[0], N = out.shape[1], K = a.shape[0] if trans_a else a.shape[1]
    cdef fnn_idx rsa, csa, rsb, csb, ldc
    cdef bint f32 = _f32(out), small = route == "small"
    cdef void *pa = cnp.PyArray_DATA(a)
    cdef void *pb = cnp.PyArray_DATA(b)
    cdef void *pc = cnp.PyArray_DATA(out)
    cdef void *pbias = _data(bias)
    cdef int rc
    if route not in ("small", "packed"):
        raise ValueError(f"gemm: route must be 'small' or 'packed', got {route!r}")
    if (a.shape[1] if trans_a else a.shape[0]) != M or (b.shape[1] if trans_b else b.shape[0]) != K \
            or (b.shape[0] if trans_b else b.shape[1]) != N:
        raise ValueError("gemm: shapes do not agree")
    if bias is not None and (bias.ndim != 1 or bias.shape[0] != N or (N > 1 and _stride(bias, 0) != 1)):
        raise ValueError("gemm: bias must be contiguous, one entry per output column")
    if M == 0 or N == 0:
        return out
    if N > 1 and _stride(out, 1) != 1:
        raise ValueError("gemm: out needs unit column stride")
    ldc = _stride(out, 0) if M > 1 else N
    rsa, csa = _stride(a, 0), _stride(a, 1)
    rsb, csb = _stride(b, 0), _stride(b, 1)
    if trans_a:
        rsa, csa = csa, rsa
    if trans_b:
        rsb, csb = csb, rsb
    with nogil:
        if f32:
            rc = (gemm_small(M, N, K, <float*>pa, rsa, csa, <float*>pb, rsb, csb, <float*>pc, ldc, 0,
                             <float*>pbias, act) if small else
                  gemm_packed(M, N, K, <float*>pa, rsa, csa, <float*>pb, rsb, csb, <float*>pc, ldc,
                              <float*>pbias, act, _num_threads))
        else:
            rc = (gemm_small(M, N, K, <double*>pa, rsa, csa, <double*>pb, rsb, csb, <double*>pc, ldc, 0,
                             <double*>pbias, act) if small else
                  gemm_packed(M, N, K, <double*>pa, rsa, csa, <double*>pb, rsb, csb, <double*>pc, ldc,
                              <double*>pbias, act, _num_threads))
    if rc != 0:
        raise MemoryError("gemm: could not allocate packing buffers")
    return out


def act_backward_colsum(cnp.ndarray grad_out, cnp.ndarray y, int act, cnp.ndarray delta,
                        cnp.ndarray grad_bias=None):
    """delta = grad_out ⊙ act'(y) and grad_bias = Σ_rows delta, with one read of grad_out (C-contiguous,
    delta distinct from both inputs)."""
    cdef fnn_idx rows = cnp.PyArray_DIM(grad_out, 0), cols = cnp.PyArray_DIM(grad_out, 1)
    cdef void *pg = cnp.PyArray_DATA(grad_out)
    cdef void *py = cnp.PyArray_DATA(y)
    cdef void *pd = cnp.PyArray_DATA(delta)
    cdef void *pb = _data(grad_bias)
    cdef bint f32 = _f32(grad_out)
    if act == FNN_ACT_IDENTITY:   # δ is grad_out itself: the column sums read it, delta gets a copy
        delta[...] = grad_out
    with nogil:
        if f32:
            _binary_colsum(act, <float*>pg, <float*>py, <float*>pd, rows, cols, <float*>pb)
        else:
            _binary_colsum(act, <double*>pg, <double*>py, <double*>pd, rows, cols, <double*>pb)
    return delta


cdef double _bench(int mode, const real *a, const real *b, real *c, fnn_idx m, fnn_idx k, fnn_idx n,
                   int reps) noexcept nogil:
    cdef int r, route = fnn_gemm_route_mode(mode, m, n, k, real is double)
    cdef double t0 = fnn_clock()
    for r in range(reps):
        if route == FNN_ROUTE_BLAS:
            blas_gemm(False, False, m, n, k, <real>1, a, k, b, n, <real>0, c, n)
        elif route == FNN_ROUTE_SMALL:
            gemm_small_team(m, n, k, a, k, 1, b, n, 1, c, n, 0, <const real*>NULL, FNN_ACT_IDENTITY, _num_threads)
        else:
            gemm_packed(m, n, k, a, k, 1, b, n, 1, c, n, <const real*>NULL, FNN_ACT_IDENTITY, _num_threads)
    return fnn_clock() - t0


def bench_loop(cnp.ndarray a, cnp.ndarray b, cnp.ndarray out, int reps, bint blas):
    """Seconds per call of reps back-to-back C = A·B (C-contiguous) from compiled code, own GEMM or BLAS.

    The own GEMM is timed as "own" mode runs it: the small kernel up to the
    packed GEMM's threading threshold, the packed GEMM above.
    """
    cdef fnn_idx m = cnp.PyArray_DIM(a, 0), k = cnp.PyArray_DIM(a, 1), n = cnp.PyArray_DIM(b, 1)
    cdef int mode = FNN_GEMM_BLAS if blas else FNN_GEMM_OWN
    cdef void *pa = cnp.PyArray_DATA(a)
    cdef void *pb = cnp.PyArray_DATA(b)
    cdef void *pc = cnp.PyArray_DATA(out)
    cdef bint f32 = _f32(a)
    cdef double t
    if not (cnp.PyArray_IS_C_CONTIGUOUS(a) and cnp.PyArray_IS_C_CONTIGUOUS(b) and cnp.PyArray_IS_C_CONTIGUOUS(out)):
        raise ValueError("bench_loop needs C-contiguous arrays")
    if b.shape[0] != k or out.shape[0] != m or out.shape[1] != n or not (a.dtype == b.dtype == out.dtype):
        raise ValueError("bench_loop: shapes or dtypes do not agree")
    if max(m, k, n) > 2**31 - 1:
        raise ValueError("bench_loop: sizes must fit BLAS's 32-bit ints")
    with nogil:
        if f32:
            t = _bench(mode, <float*>pa, <float*>pb, <float*>pc, m, k, n, reps)
        else:
            t = _bench(mode, <double*>pa, <double*>pb, <double*>pc, m, k, n, reps)
    return t / max(reps, 1)
