# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
# cython: binding=True, embedsignature=True
"""Elementwise activations and softmax (Cython backend).

The loops live in fastmath.h (vectorised, float32 exp/tanh approximations);
this module takes the raw data pointers of the already validated arrays and
splits large arrays over the OpenMP team.
"""

include "_threads.pxi"
include "_fastmath.pxi"

cimport numpy as cnp


def relu(cnp.ndarray x, cnp.ndarray out):
    """y = max(x, 0), NaN kept."""
    _unary(x, out, ACT_RELU, 0.0)
    return out


def relu_backward(cnp.ndarray grad_out, cnp.ndarray y, cnp.ndarray out):
    """dx = g * (y > 0)."""
    _binary(grad_out, y, out, ACT_RELU, 0.0)
    return out


def leaky_relu(cnp.ndarray x, double negative_slope, cnp.ndarray out):
    """y = x * (a if x < 0 else 1)."""
    _unary(x, out, ACT_LEAKY_RELU, negative_slope)
    return out


def leaky_relu_backward(cnp.ndarray grad_out, cnp.ndarray y, double negative_slope, cnp.ndarray out):
    """dx = g * (1 if y > 0 else a)."""
    _binary(grad_out, y, out, ACT_LEAKY_RELU, negative_slope)
    return out


def sigmoid(cnp.ndarray x, cnp.ndarray out):
    """y = 1 / (1 + exp(-x)), without overflow."""
    _unary(x, out, ACT_SIGMOID, 0.0)
    return out


def sigmoid_backward(cnp.ndarray grad_out, cnp.ndarray y, cnp.ndarray out):
    """dx = g * y * (1 - y)."""
    _binary(grad_out, y, out, ACT_SIGMOID, 0.0)
    return out


def tanh(cnp.ndarray x, cnp.ndarray out):
    """y = tanh(x)."""
    _unary(x, out, ACT_TANH, 0.0)
    return out


def tanh_backward(cnp.ndarray grad_out, cnp.ndarray y, cnp.ndarray out):
    """dx = g * (1 - y^2)."""
    _binary(grad_out, y, out, ACT_TANH, 0.0)
    return out


cdef void _softmax_rows(bint f32, const void* x, void* y, Py_ssize_t rows, Py_ssize_t c,
                        bint backward, const void* g) noexcept nogil:
    """Row-parallel driver of the softmax forward/backward row loops."""
    cdef Py_ssize_t r0, nblk, blk, lo, hi
    cdef Py_ssize_t rows_per = max(1, _CHUNK // max(c, 1))
    if _parallel(rows * c, backward) and rows > 1:
        nblk = (rows + rows_per - 1) // rows_per
        for blk in prange(nblk, num_threads=_fastnn_num_threads, schedule="dynamic"):
            lo = blk * rows_per
            hi = min(rows, lo + rows_per)
            _softmax_block(f32, x, y, lo, hi - lo, c, backward, g)
    else:
        _softmax_block(f32, x, y, 0, rows, c, backward, g)


cdef inline void _softmax_block(bint f32, const void* x, void* y, Py_ssize_t r0, Py_ssize_t nr, Py_ssize_t c,
                                bint backward, const void* g) noexcept nogil:
    cdef Py_ssize_t off = r0 * c
    if f32:
        if backward:
            fnn_softmax_bwd_rows_f32(<const float*>g + off, <const float*>x + off, <float*>y + off, nr, c)
        else:
            fnn_softmax_rows_f32(<const float*>x + off, <float*>y + off, nr, c)
    else:
        if backward:
            fnn_softmax_bwd_rows_f64(<const double*>g + off, <const double*>x + off, <double*>y + off, nr, c)
        else:
            fnn_softmax_rows_f64(<const double*>x + off, <double*>y + off, nr, c)


def softmax(cnp.ndarray x, cnp.ndarray out):
    """y_ij = exp(x_ij - max_i) / sum_k exp(x_ik - max_i), over the last axis."""
    cdef Py_ssize_t rows = cnp.PyArray_DIM(x, 0), c = cnp.PyArray_DIM(x, 1)
    cdef bint f32 = cnp.PyArray_TYPE(x) == cnp.NPY_FLOAT32
    cdef const void* px = cnp.PyArray_DATA(x)
    cdef void* py = cnp.PyArray_DATA(out)
    if rows == 0 or c == 0:   # an empty (2**40, 0) array must not cost a pass over its rows
        return out
    if rows * c >= _NOGIL_MIN:
        with nogil:
            _softmax_rows(f32, px, py, rows, c, False, NULL)
    else:
        _softmax_rows(f32, px, py, rows, c, False, NULL)
    return out


def softmax_backward(cnp.ndarray grad_out, cnp.ndarray y, cnp.ndarray out):
    """dx_ij = y_ij * (g_ij - sum_k g_ik y_ik)."""
    cdef Py_ssize_t rows = cnp.PyArray_DIM(y, 0), c = cnp.PyArray_DIM(y, 1)
    cdef bint f32 = cnp.PyArray_TYPE(y) == cnp.NPY_FLOAT32
    cdef const void* pg = cnp.PyArray_DATA(grad_out)
    cdef const void* py = cnp.PyArray_DATA(y)
    cdef void* po = cnp.PyArray_DATA(out)
    if rows == 0 or c == 0:
        return out
    if rows * c >= _NOGIL_MIN:
        with nogil:
            _softmax_rows(f32, py, po, rows, c, True, pg)
    else:
        _softmax_rows(f32, py, po, rows, c, True, pg)
    return out
