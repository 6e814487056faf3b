"""Cython convolution and pooling kernels (``fastnn._ext._conv``).

float32 stride-1 convolutions run register-blocked direct kernels (no im2col
matrix; see ``kernels/conv_kernels.h``), images in parallel. Other cases use
the Numba backend's scheme: chunked im2col whose columns stay in cache, one
BLAS GEMM per chunk from the serial level, OpenMP loops around it. Pooling is
direct, parallel over planes.
"""

import numpy as np

from ... import _config
from ..._ext import _conv  # loads scipy's BLAS (cython_blas), possibly for the first time
from . import register_ext_module

register_ext_module(_conv)

__all__ = [
    "conv2d_forward", "conv2d_backward",
    "max_pool2d_forward", "max_pool2d_backward",
    "avg_pool2d_forward", "avg_pool2d_backward",
]

_DUMMY = {np.dtype(np.float32): (np.zeros(1, np.float32), np.zeros((1, 1, 1, 1), np.float32)),
          np.dtype(np.float64): (np.zeros(1, np.float64), np.zeros((1, 1, 1, 1), np.float64))}


_F32 = np.dtype(np.float32)

#: Largest per-thread buffer of the direct kernels, in elements: a zero-padded
#: image (C·Hp·Wp) or the padded output gradient of one image (O·(Hp + kH·dH)·Wp).
#: Larger cases (huge padding or dilation) take the im2col path, whose
#: columns are cut into chunks of bounded size.
_DIRECT_MAX_BUFFER = 1 << 27


def _direct(x, weight, stride, padding, dilation):
    """Whether the register-blocked stride-1 kernels run this float32 convolution."""
    if x.dtype != _F32 or stride != (1, 1):
        return False
    C, H, W = x.shape[1:]
    O, _, kh, kw = weight.shape
    wp = W + 2 * padding[1] + (kw - 1) * dilation[1]
    rows = H + 2 * padding[0] + (kh - 1) * dilation[0] + 1
    return max(C, O) * rows * wp <= _DIRECT_MAX_BUFFER


def conv2d_forward(x, weight, bias, stride, padding, dilation, out):
    """y[b,o,i,j] = bias[o] + Σ_{c,u,v} w[o,c,u,v]·xp[b,c,i·sH+u·dH,j·sW+v·dW]."""
    has_bias = bias is not None
    if _direct(x, weight, stride, padding, dilation):  # register-blocked direct kernel, no im2col
        _conv.conv2d_fwd_direct(x, weight, bias if has_bias else _DUMMY[x.dtype][0], has_bias,
                                padding[0], padding[1], dilation[0], dilation[1], out)
        return out
    _conv.conv2d_fwd(x, weight, bias if has_bias else _DUMMY[x.dtype][0], has_bias,
                     stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1], out)
    return out


def conv2d_backward(grad_out, x, weight, stride, padding, dilation, grad_input, grad_weight, grad_bias):
    """dW = Σ_b G_b·cols_bᵀ, db = Σ G, dx = col2im(Wᵀ·G_b)."""
    vec, img = _DUMMY[x.dtype]
    # The direct kernel multiplies the zeros of its padded rows with every
    # pixel and weight, so an inf there would turn into NaN (0·inf) where the
    # im2col kernel, like the reference, never forms that product.
    if _direct(x, weight, stride, padding, dilation) and _conv.all_finite(x.reshape(-1)) \
            and _conv.all_finite(weight.reshape(-1)):
        _conv.conv2d_bwd_direct(grad_out, x, weight, padding[0], padding[1], dilation[0], dilation[1],
                                img if grad_input is None else grad_input, grad_input is not None,
                                grad_weight, vec if grad_bias is None else grad_bias, grad_bias is not None)
        return grad_input, grad_weight, grad_bias
    _conv.conv2d_bwd(grad_out, x, weight, stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1],
                     img if grad_input is None else grad_input, grad_input is not None,
                     grad_weight, vec if grad_bias is None else grad_bias, grad_bias is not None)
    return grad_input, grad_weight, grad_bias


def max_pool2d_forward(x, kernel_size, stride, padding, out, indices):
    """y[b,c,i,j] = max_{u,v} xp[b,c,i·sH+u,j·sW+v]; indices = flat argmax (first max, NaN wins)."""
    _conv.max_pool_fwd(x, kernel_size[0], kernel_size[1], stride[0], stride[1], padding[0], padding[1],
                       out, indices)
    return out, indices


def max_pool2d_backward(grad_out, indices, grad_input):
    """dx[b,c].flat[indices[b,c,i,j]] += dy[b,c,i,j]."""
    _conv.max_pool_bwd(grad_out, indices, grad_input)
    return grad_input


def avg_pool2d_forward(x, kernel_size, stride, padding, count_include_pad, out):
    """y[b,c,i,j] = Σ_{u,v} xp[b,c,i·sH+u,j·sW+v] / n."""
    _conv.avg_pool_fwd(x, kernel_size[0], kernel_size[1], stride[0], stride[1], padding[0], padding[1],
                       bool(count_include_pad), out)
    return out


def avg_pool2d_backward(grad_out, kernel_size, stride, padding, count_include_pad, grad_input):
    """dx[b,c,window(i,j)] += dy[b,c,i,j] / n."""
    _conv.avg_pool_bwd(grad_out, kernel_size[0], kernel_size[1], stride[0], stride[1], padding[0], padding[1],
                       bool(count_include_pad), grad_input)
    return grad_input
