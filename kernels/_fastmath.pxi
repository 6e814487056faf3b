# Declarations of the C loops in fastmath.h and the chunked (OpenMP) drivers
# shared by the kernel modules. Included after "_threads.pxi".

from cython.parallel cimport prange

cimport numpy as cnp

cdef extern from "fastmath.h" nogil:
    ctypedef Py_ssize_t fnn_idx

    void fnn_identity_f32(const float*, const float*, float*, fnn_idx, double)
    void fnn_identity_f64(const double*, const double*, double*, fnn_idx, double)
    void fnn_relu_f32(const float*, const float*, float*, fnn_idx, double)
    void fnn_relu_f64(const double*, const double*, double*, fnn_idx, double)
    void fnn_leaky_relu_f32(const float*, const float*, float*, fnn_idx, double)
    void fnn_leaky_relu_f64(const double*, const double*, double*, fnn_idx, double)
    void fnn_sigmoid_f32(const float*, const float*, float*, fnn_idx, double)
    void fnn_sigmoid_f64(const double*, const double*, double*, fnn_idx, double)
    void fnn_tanh_f32(const float*, const float*, float*, fnn_idx, double)
    void fnn_tanh_f64(const double*, const double*, double*, fnn_idx, double)

    void fnn_relu_bwd_f32(const float*, const float*, float*, fnn_idx, double)
    void fnn_relu_bwd_f64(const double*, const double*, double*, fnn_idx, double)
    void fnn_leaky_relu_bwd_f32(const float*, const float*, float*, fnn_idx, double)
    void fnn_leaky_relu_bwd_f64(const double*, const double*, double*, fnn_idx, double)
    void fnn_sigmoid_bwd_f32(const float*, const float*, float*, fnn_idx, double)
    void fnn_sigmoid_bwd_f64(const double*, const double*, double*, fnn_idx, double)
    void fnn_tanh_bwd_f32(const float*, const float*, float*, fnn_idx, double)
    void fnn_tanh_bwd_f64(const double*, const double*, double*, fnn_idx, double)

    void fnn_softmax_rows_f32(const float*, float*, fnn_idx, fnn_idx)
    void fnn_softmax_rows_f64(const double*, double*, fnn_idx, fnn_idx)
    void fnn_softmax_bwd_rows_f32(const float*, const float*, float*, fnn_idx, fnn_idx)
    void fnn_softmax_bwd_rows_f64(const double*, const double*, double*, fnn_idx, fnn_idx)
    double fnn_xent_rows_f32(const float*, const fnn_idx*, float*, fnn_idx, fnn_idx, double)
    double fnn_xent_rows_f64(const double*, const fnn_idx*, double*, fnn_idx, fnn_idx, double)
    void fnn_add_f32(float*, const float*, fnn_idx)
    void fnn_add_f64(double*, const double*, fnn_idx)

    double fnn_mse_f32(const float*, const float*, float*, fnn_idx, double)
    double fnn_mse_f64(const double*, const double*, double*, fnn_idx, double)
    double fnn_bce_f32(const float*, const float*, float*, fnn_idx, double)
    double fnn_bce_f64(const double*, const double*, double*, fnn_idx, double)

    void fnn_sgd_f32(float*, const float*, float*, fnn_idx, double, double, int, double)
    void fnn_sgd_f64(double*, const double*, double*, fnn_idx, double, double, int, double)
    void fnn_adam_f32(float*, const float*, float*, float*, fnn_idx,
                      double, double, double, double, double, double, double)
    void fnn_adam_f64(double*, const double*, double*, double*, fnn_idx,
                      double, double, double, double, double, double, double)

ctypedef void (*fnn_unary32)(const float*, const float*, float*, fnn_idx, double) noexcept nogil
ctypedef void (*fnn_unary64)(const double*, const double*, double*, fnn_idx, double) noexcept nogil
ctypedef void (*fnn_binary32)(const float*, const float*, float*, fnn_idx, double) noexcept nogil
ctypedef void (*fnn_binary64)(const double*, const double*, double*, fnn_idx, double) noexcept nogil

cnp.import_array()

# Below this many elements a loop runs on one thread (thread start-up costs
# more than it saves); fastnn._config.PARALLEL_MIN_ELEMENTS.
from fastnn._config import PARALLEL_MIN_ELEMENTS as _PARALLEL_MIN_ELEMENTS
from fastnn._config import PARALLEL_MIN_ELEMENTS_CHEAP as _PARALLEL_MIN_ELEMENTS_CHEAP
cdef Py_ssize_t _PAR_MIN = _PARALLEL_MIN_ELEMENTS
# Memory-bound loops (relu, backward products, sgd, mse: a few flops per element)
# gain little from a second thread until the array leaves the caches, and
# waking the OpenMP team costs tens of microseconds: a higher threshold.
cdef Py_ssize_t _PAR_MIN_CHEAP = _PARALLEL_MIN_ELEMENTS_CHEAP
# Elements per OpenMP work item: large enough to amortise scheduling, small
# enough to balance two to a few dozen threads.
cdef Py_ssize_t _CHUNK = 32768
# Below this many elements the GIL is kept: releasing it costs more than the loop.
cdef Py_ssize_t _NOGIL_MIN = 8192

# Activation codes shared by the activation and dense modules.
cdef enum:
    ACT_IDENTITY = 0
    ACT_RELU = 1
    ACT_SIGMOID = 2
    ACT_TANH = 3
    ACT_LEAKY_RELU = 4


cdef inline int _act_code(object activation) except -1:
    if activation == "identity":
        return ACT_IDENTITY
    if activation == "relu":
        return ACT_RELU
    if activation == "sigmoid":
        return ACT_SIGMOID
    if activation == "tanh":
        return ACT_TANH
    raise ValueError(f"unknown activation {activation!r}")


cdef inline fnn_unary32 _fwd32(int act) noexcept nogil:
    if act == ACT_RELU:
        return fnn_relu_f32
    if act == ACT_SIGMOID:
        return fnn_sigmoid_f32
    if act == ACT_TANH:
        return fnn_tanh_f32
    if act == ACT_LEAKY_RELU:
        return fnn_leaky_relu_f32
    return fnn_identity_f32


cdef inline fnn_unary64 _fwd64(int act) noexcept nogil:
    if act == ACT_RELU:
        return fnn_relu_f64
    if act == ACT_SIGMOID:
        return fnn_sigmoid_f64
    if act == ACT_TANH:
        return fnn_tanh_f64
    if act == ACT_LEAKY_RELU:
        return fnn_leaky_relu_f64
    return fnn_identity_f64


cdef inline fnn_binary32 _bwd32(int act) noexcept nogil:
    if act == ACT_RELU:
        return fnn_relu_bwd_f32
    if act == ACT_SIGMOID:
        return fnn_sigmoid_bwd_f32
    if act == ACT_TANH:
        return fnn_tanh_bwd_f32
    return fnn_leaky_relu_bwd_f32


cdef inline fnn_binary64 _bwd64(int act) noexcept nogil:
    if act == ACT_RELU:
        return fnn_relu_bwd_f64
    if act == ACT_SIGMOID:
        return fnn_sigmoid_bwd_f64
    if act == ACT_TANH:
        return fnn_tanh_bwd_f64
    return fnn_leaky_relu_bwd_f64


cdef inline bint _parallel(Py_ssize_t n, bint cheap) noexcept nogil:
    """Whether a loop over n elements runs on the OpenMP team (cheap: memory-bound loop)."""
    return n >= (_PAR_MIN_CHEAP if cheap else _PAR_MIN) and _fastnn_num_threads > 1


cdef inline bint _cheap_act(int act) noexcept nogil:
    return act == ACT_IDENTITY or act == ACT_RELU or act == ACT_LEAKY_RELU


cdef void _run_unary32(fnn_unary32 fn, const float* x, float* y, Py_ssize_t n, double prm,
                       bint cheap) noexcept nogil:
    """y = f(x) elementwise, split into chunks over the OpenMP team when large."""
    cdef Py_ssize_t c, start, nch
    if _parallel(n, cheap):
        nch = (n + _CHUNK - 1) // _CHUNK
        for c in prange(nch, num_threads=_fastnn_num_threads, schedule="dynamic"):
            start = c * _CHUNK
            fn(x + start, NULL, y + start, min(_CHUNK, n - start), prm)
    else:
        fn(x, NULL, y, n, prm)


cdef void _run_unary64(fnn_unary64 fn, const double* x, double* y, Py_ssize_t n, double prm,
                       bint cheap) noexcept nogil:
    cdef Py_ssize_t c, start, nch
    if _parallel(n, cheap):
        nch = (n + _CHUNK - 1) // _CHUNK
        for c in prange(nch, num_threads=_fastnn_num_threads, schedule="dynamic"):
            start = c * _CHUNK
            fn(x + start, NULL, y + start, min(_CHUNK, n - start), prm)
    else:
        fn(x, NULL, y, n, prm)


cdef void _run_binary32(fnn_binary32 fn, const float* g, const float* y, float* out, Py_ssize_t n,
                        double prm) noexcept nogil:
    """out = f(g, y) elementwise, chunked over the OpenMP team when large."""
    cdef Py_ssize_t c, start, nch
    if _parallel(n, True):
        nch = (n + _CHUNK - 1) // _CHUNK
        for c in prange(nch, num_threads=_fastnn_num_threads, schedule="dynamic"):
            start = c * _CHUNK
            fn(g + start, y + start, out + start, min(_CHUNK, n - start), prm)
    else:
        fn(g, y, out, n, prm)


cdef void _run_binary64(fnn_binary64 fn, const double* g, const double* y, double* out, Py_ssize_t n,
                        double prm) noexcept nogil:
    cdef Py_ssize_t c, start, nch
    if _parallel(n, True):
        nch = (n + _CHUNK - 1) // _CHUNK
        for c in prange(nch, num_threads=_fastnn_num_threads, schedule="dynamic"):
            start = c * _CHUNK
            fn(g + start, y + start, out + start, min(_CHUNK, n - start), prm)
    else:
        fn(g, y, out, n, prm)


cdef inline int _unary(cnp.ndarray x, cnp.ndarray out, int act, double prm) except -1:
    """Run forward activation ``act`` from ``x`` into ``out`` (same dtype and size)."""
    cdef Py_ssize_t n = cnp.PyArray_SIZE(x)
    cdef void* px = cnp.PyArray_DATA(x)
    cdef void* py = cnp.PyArray_DATA(out)
    if cnp.PyArray_TYPE(x) == cnp.NPY_FLOAT32:
        if n >= _NOGIL_MIN:
            with nogil:
                _run_unary32(_fwd32(act), <float*>px, <float*>py, n, prm, _cheap_act(act))
        else:
            _run_unary32(_fwd32(act), <float*>px, <float*>py, n, prm, _cheap_act(act))
    else:
        if n >= _NOGIL_MIN:
            with nogil:
                _run_unary64(_fwd64(act), <double*>px, <double*>py, n, prm, _cheap_act(act))
        else:
            _run_unary64(_fwd64(act), <double*>px, <double*>py, n, prm, _cheap_act(act))
    return 0


cdef inline int _binary(cnp.ndarray g, cnp.ndarray y, cnp.ndarray out, int act, double prm) except -1:
    """Run backward activation ``act``: out = g * act'(y)."""
    cdef Py_ssize_t n = cnp.PyArray_SIZE(g)
    cdef void* pg = cnp.PyArray_DATA(g)
    cdef void* py = cnp.PyArray_DATA(y)
    cdef void* po = cnp.PyArray_DATA(out)
    if cnp.PyArray_TYPE(g) == cnp.NPY_FLOAT32:
        if n >= _NOGIL_MIN:
            with nogil:
                _run_binary32(_bwd32(act), <float*>pg, <float*>py, <float*>po, n, prm)
        else:
            _run_binary32(_bwd32(act), <float*>pg, <float*>py, <float*>po, n, prm)
    else:
        if n >= _NOGIL_MIN:
            with nogil:
                _run_binary64(_bwd64(act), <double*>pg, <double*>py, <double*>po, n, prm)
        else:
            _run_binary64(_bwd64(act), <double*>pg, <double*>py, <double*>po, n, prm)
    return 0
