# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
# cython: binding=True, embedsignature=True
"""Optimizer updates in one fused pass over parameter and state (Cython backend)."""

include "_threads.pxi"
include "_fastmath.pxi"

cimport numpy as cnp
from libc.math cimport sqrt


cdef void _sgd(bint f32, void* p, const void* g, void* v, Py_ssize_t n, double lr, double mom, int nesterov,
               double wd) noexcept nogil:
    cdef Py_ssize_t c, start, nch, ln
    if _parallel(n, True):
        nch = (n + _CHUNK - 1) // _CHUNK
        for c in prange(nch, num_threads=_fastnn_num_threads, schedule="dynamic"):
            start = c * _CHUNK
            ln = min(_CHUNK, n - start)
            if f32:
                fnn_sgd_f32(<float*>p + start, <const float*>g + start,
                            NULL if v == NULL else <float*>v + start, ln, lr, mom, nesterov, wd)
            else:
                fnn_sgd_f64(<double*>p + start, <const double*>g + start,
                            NULL if v == NULL else <double*>v + start, ln, lr, mom, nesterov, wd)
    elif f32:
        fnn_sgd_f32(<float*>p, <const float*>g, <float*>v, n, lr, mom, nesterov, wd)
    else:
        fnn_sgd_f64(<double*>p, <const double*>g, <double*>v, n, lr, mom, nesterov, wd)


def sgd_update(cnp.ndarray param, cnp.ndarray grad, cnp.ndarray velocity, double lr, double momentum,
               bint nesterov, double weight_decay):
    """g = grad + wd p; v = μ v + g; p -= lr (g + μ v if nesterov else v)."""
    cdef Py_ssize_t n = cnp.PyArray_SIZE(param)
    cdef void* pp = cnp.PyArray_DATA(param)
    cdef void* pg = cnp.PyArray_DATA(grad)
    cdef void* pv = NULL if (velocity is None or momentum == 0) else cnp.PyArray_DATA(velocity)
    cdef bint f32 = cnp.PyArray_TYPE(param) == cnp.NPY_FLOAT32
    if n >= _NOGIL_MIN:
        with nogil:
            _sgd(f32, pp, pg, pv, n, lr, momentum, nesterov, weight_decay)
    else:
        _sgd(f32, pp, pg, pv, n, lr, momentum, nesterov, weight_decay)


cdef void _adam(bint f32, void* p, const void* g, void* m, void* v, Py_ssize_t n, double decay, double l2,
                double b1, double b2, double step_size, double isb, double eps) noexcept nogil:
    cdef Py_ssize_t c, start, nch, ln
    if _parallel(n, False):
        nch = (n + _CHUNK - 1) // _CHUNK
        for c in prange(nch, num_threads=_fastnn_num_threads, schedule="dynamic"):
            start = c * _CHUNK
            ln = min(_CHUNK, n - start)
            if f32:
                fnn_adam_f32(<float*>p + start, <const float*>g + start, <float*>m + start, <float*>v + start,
                             ln, decay, l2, b1, b2, step_size, isb, eps)
            else:
                fnn_adam_f64(<double*>p + start, <const double*>g + start, <double*>m + start,
                             <double*>v + start, ln, decay, l2, b1, b2, step_size, isb, eps)
    elif f32:
        fnn_adam_f32(<float*>p, <const float*>g, <float*>m, <float*>v, n, decay, l2, b1, b2, step_size, isb, eps)
    else:
        fnn_adam_f64(<double*>p, <const double*>g, <double*>m, <double*>v, n, decay, l2, b1, b2, step_size,
                     isb, eps)


def adam_update(cnp.ndarray param, cnp.ndarray grad, cnp.ndarray exp_avg, cnp.ndarray exp_avg_sq, long step,
                double lr, double beta1, double beta2, double eps, double weight_decay, bint decoupled):
    """m = β1 m + (1-β1) g; v = β2 v + (1-β2) g²; p -= lr/bc1 · m / (√v/√bc2 + ε)."""
    cdef Py_ssize_t n = cnp.PyArray_SIZE(param)
    cdef double bc1 = 1.0 - beta1 ** step
    cdef double bc2 = 1.0 - beta2 ** step
    cdef double decay = 1.0 - lr * weight_decay if decoupled else 1.0
    cdef double l2 = 0.0 if decoupled else weight_decay
    cdef bint f32 = cnp.PyArray_TYPE(param) == cnp.NPY_FLOAT32
    cdef void* pp = cnp.PyArray_DATA(param)
    cdef void* pg = cnp.PyArray_DATA(grad)
    cdef void* pm = cnp.PyArray_DATA(exp_avg)
    cdef void* pv = cnp.PyArray_DATA(exp_avg_sq)
    if n >= _NOGIL_MIN:
        with nogil:
            _adam(f32, pp, pg, pm, pv, n, decay, l2, beta1, beta2, lr / bc1, 1.0 / sqrt(bc2), eps)
    else:
        _adam(f32, pp, pg, pm, pv, n, decay, l2, beta1, beta2, lr / bc1, 1.0 / sqrt(bc2), eps)


def sgd_update_many(tuple params, tuple grads, object velocities, double lr, double momentum, bint nesterov,
                    double weight_decay):
    """sgd_update on each (params[i], grads[i], velocities[i]): one call for a whole model."""
    cdef Py_ssize_t i, n, count = len(params)
    cdef cnp.ndarray p
    cdef void* pp
    cdef void* pg
    cdef void* pv
    cdef bint f32
    cdef tuple vs = None if (velocities is None or momentum == 0) else <tuple?>velocities
    for i in range(count):
        p = <cnp.ndarray?>params[i]
        n = cnp.PyArray_SIZE(p)
        f32 = cnp.PyArray_TYPE(p) == cnp.NPY_FLOAT32
        pp = cnp.PyArray_DATA(p)
        pg = cnp.PyArray_DATA(<cnp.ndarray?>grads[i])
        pv = NULL if vs is None else cnp.PyArray_DATA(<cnp.ndarray?>vs[i])
        if n >= _NOGIL_MIN:
            with nogil:
                _sgd(f32, pp, pg, pv, n, lr, momentum, nesterov, weight_decay)
        else:
            _sgd(f32, pp, pg, pv, n, lr, momentum, nesterov, weight_decay)


def adam_update_many(tuple params, tuple grads, tuple exp_avgs, tuple exp_avg_sqs, long step, double lr,
                     double beta1, double beta2, double eps, double weight_decay, bint decoupled):
    """adam_update on each (params[i], grads[i], exp_avgs[i], exp_avg_sqs[i]): one call for a whole model."""
    cdef Py_ssize_t i, n, count = len(params)
    cdef double bc1 = 1.0 - beta1 ** step
    cdef double bc2 = 1.0 - beta2 ** step
    cdef double decay = 1.0 - lr * weight_decay if decoupled else 1.0
    cdef double l2 = 0.0 if decoupled else weight_decay
    cdef double step_size = lr / bc1, isb = 1.0 / sqrt(bc2)
    cdef cnp.ndarray p
    cdef void* pp
    cdef void* pg
    cdef void* pm
    cdef void* pv
    cdef bint f32
    for i in range(count):
        p = <cnp.ndarray?>params[i]
        n = cnp.PyArray_SIZE(p)
        f32 = cnp.PyArray_TYPE(p) == cnp.NPY_FLOAT32
        pp = cnp.PyArray_DATA(p)
        pg = cnp.PyArray_DATA(<cnp.ndarray?>grads[i])
        pm = cnp.PyArray_DATA(<cnp.ndarray?>exp_avgs[i])
        pv = cnp.PyArray_DATA(<cnp.ndarray?>exp_avg_sqs[i])
        if n >= _NOGIL_MIN:
            with nogil:
                _adam(f32, pp, pg, pm, pv, n, decay, l2, beta1, beta2, step_size, isb, eps)
        else:
            _adam(f32, pp, pg, pm, pv, n, decay, l2, beta1, beta2, step_size, isb, eps)
