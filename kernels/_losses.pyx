# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
# cython: binding=True, embedsignature=True
"""Losses with their gradients, one fused pass each (Cython backend).

Loss sums accumulate in double; large inputs are split over the OpenMP team
in fixed chunks. Any input longer than one chunk is summed chunk by chunk, on
one thread or on the team: each chunk's partial sum goes to its own slot and
the slots are added in chunk order afterwards, so the loss is bit-identical
whatever the thread count or the (dynamic) schedule.
"""

include "_threads.pxi"
include "_fastmath.pxi"

cimport numpy as cnp
from libc.stdlib cimport malloc, free

ctypedef double (*_pair_loss32)(const float*, const float*, float*, fnn_idx, double) noexcept nogil
ctypedef double (*_pair_loss64)(const double*, const double*, double*, fnn_idx, double) noexcept nogil


cdef double _run_pair32(_pair_loss32 fn, const float* p, const float* t, float* g, Py_ssize_t n,
                        double gscale, bint cheap) noexcept nogil:
    cdef Py_ssize_t c, start, nch
    cdef double total = 0
    cdef double* partial
    cdef int nt = _fastnn_num_threads if _parallel(n, cheap) else 1
    if n > _CHUNK:
        nch = (n + _CHUNK - 1) // _CHUNK
        partial = <double*>malloc(nch * sizeof(double))
        if partial != NULL:
            for c in prange(nch, num_threads=nt, schedule="dynamic"):
                start = c * _CHUNK
                partial[c] = fn(p + start, t + start, g + start, min(_CHUNK, n - start), gscale)
            for c in range(nch):
                total += partial[c]
            free(partial)
            return total
    return fn(p, t, g, n, gscale)


cdef double _run_pair64(_pair_loss64 fn, const double* p, const double* t, double* g, Py_ssize_t n,
                        double gscale, bint cheap) noexcept nogil:
    cdef Py_ssize_t c, start, nch
    cdef double total = 0
    cdef double* partial
    cdef int nt = _fastnn_num_threads if _parallel(n, cheap) else 1
    if n > _CHUNK:
        nch = (n + _CHUNK - 1) // _CHUNK
        partial = <double*>malloc(nch * sizeof(double))
        if partial != NULL:
            for c in prange(nch, num_threads=nt, schedule="dynamic"):
                start = c * _CHUNK
                partial[c] = fn(p + start, t + start, g + start, min(_CHUNK, n - start), gscale)
            for c in range(nch):
                total += partial[c]
            free(partial)
            return total
    return fn(p, t, g, n, gscale)


cdef double _pair_loss(bint mse, cnp.ndarray pred, cnp.ndarray target, cnp.ndarray grad, double gscale):
    cdef Py_ssize_t n = cnp.PyArray_SIZE(pred)
    cdef void* pp = cnp.PyArray_DATA(pred)
    cdef void* pt = cnp.PyArray_DATA(target)
    cdef void* pg = cnp.PyArray_DATA(grad)
    cdef double s
    if cnp.PyArray_TYPE(pred) == cnp.NPY_FLOAT32:
        with nogil:
            s = _run_pair32(fnn_mse_f32 if mse else fnn_bce_f32, <float*>pp, <float*>pt, <float*>pg, n,
                            gscale, mse)
    else:
        with nogil:
            s = _run_pair64(fnn_mse_f64 if mse else fnn_bce_f64, <double*>pp, <double*>pt, <double*>pg, n,
                            gscale, mse)
    return s


def mse_loss(cnp.ndarray pred, cnp.ndarray target, reduction, cnp.ndarray grad):
    """L = s Σ (a - y)², dL/da = 2 s (a - y), s = 1/n (mean) or 1 (sum)."""
    cdef Py_ssize_t n = cnp.PyArray_SIZE(pred)
    cdef bint mean = reduction == "mean"
    if n == 0:
        return (float("nan") if mean else 0.0), grad
    cdef double scale = 1.0 / n if mean else 1.0
    return _pair_loss(True, pred, target, grad, 2.0 * scale) * scale, grad


def bce_with_logits(cnp.ndarray logits, cnp.ndarray target, reduction, cnp.ndarray grad):
    """L = s Σ max(z,0) - z y + log1p(exp(-|z|)), dL/dz = s (σ(z) - y)."""
    cdef Py_ssize_t n = cnp.PyArray_SIZE(logits)
    cdef bint mean = reduction == "mean"
    if n == 0:
        return (float("nan") if mean else 0.0), grad
    cdef double scale = 1.0 / n if mean else 1.0
    return _pair_loss(False, logits, target, grad, scale) * scale, grad


cdef double _xent(bint f32, const void* z, const fnn_idx* labels, void* g, Py_ssize_t rows, Py_ssize_t c,
                  double scale) noexcept nogil:
    cdef Py_ssize_t blk, nblk, lo, hi
    cdef Py_ssize_t rows_per = max(1, _CHUNK // max(c, 1))
    cdef double total = 0
    cdef double* partial
    cdef int nt = _fastnn_num_threads if _parallel(rows * c, False) else 1
    if rows > rows_per:
        nblk = (rows + rows_per - 1) // rows_per
        partial = <double*>malloc(nblk * sizeof(double))
        if partial != NULL:
            for blk in prange(nblk, num_threads=nt, schedule="dynamic"):
                lo = blk * rows_per
                hi = min(rows, lo + rows_per)
                partial[blk] = _xent_block(f32, z, labels, g, lo, hi - lo, c, scale)
            for blk in range(nblk):
                total += partial[blk]
            free(partial)
            return total
    return _xent_block(f32, z, labels, g, 0, rows, c, scale)


cdef inline double _xent_block(bint f32, const void* z, const fnn_idx* labels, void* g, Py_ssize_t r0,
                               Py_ssize_t nr, Py_ssize_t c, double scale) noexcept nogil:
    cdef Py_ssize_t off = r0 * c
    if f32:
        return fnn_xent_rows_f32(<const float*>z + off, labels + r0, <float*>g + off, nr, c, scale)
    return fnn_xent_rows_f64(<const double*>z + off, labels + r0, <double*>g + off, nr, c, scale)


def softmax_cross_entropy(cnp.ndarray logits, cnp.ndarray labels, reduction, cnp.ndarray grad):
    """L = s Σ_i logsumexp(z_i) - z_{i,y_i}, dL/dz = s (softmax(z) - onehot(y))."""
    cdef Py_ssize_t rows = cnp.PyArray_DIM(logits, 0), c = cnp.PyArray_DIM(logits, 1)
    cdef bint mean = reduction == "mean"
    if rows == 0:
        return (float("nan") if mean else 0.0), grad
    cdef double scale = 1.0 / rows if mean else 1.0
    cdef bint f32 = cnp.PyArray_TYPE(logits) == cnp.NPY_FLOAT32
    cdef const void* pz = cnp.PyArray_DATA(logits)
    cdef const fnn_idx* pl = <const fnn_idx*>cnp.PyArray_DATA(labels)
    cdef void* pg = cnp.PyArray_DATA(grad)
    cdef double total
    cdef Py_ssize_t r
    for r in range(rows):   # the kernel checks what it indexes with, whoever called it
        if <size_t>pl[r] >= <size_t>c:
            raise ValueError(f"labels must lie in [0, {c}), got {pl[r]} in row {r}")
    with nogil:
        total = _xent(f32, pz, pl, pg, rows, c, scale)
    return total * scale, grad
