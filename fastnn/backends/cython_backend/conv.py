"""Convolution and pooling kernels of the Cython backend (``kernels/_conv.pxi``).

float32 stride-1 convolutions run the shifted-GEMM kernels (no im2col
matrix), images in parallel; the compiled code picks them, or chunked im2col
plus products for every other case. Pooling is direct, parallel over planes.
"""

from ..._ext import _kernels as _ext
from ..reference import conv as _spec

__all__ = list(_spec.__all__)


def conv2d_forward(x, weight, bias, stride, padding, dilation, out):
    """y[b,o,i,j] = bias[o] + Σ_{c,u,v} w[o,c,u,v]·xp[b,c,i·sH+u·dH,j·sW+v·dW]."""
    return _ext.conv2d_forward(x, weight, bias, *stride, *padding, *dilation, out)


def conv2d_backward(grad_out, x, weight, stride, padding, dilation, grad_input, grad_weight, grad_bias):
    """dW = Σ_b G_b·cols_bᵀ, db = Σ G, dx = col2im(Wᵀ·G_b)."""
    return _ext.conv2d_backward(grad_out, x, weight, *stride, *padding, *dilation, grad_input, grad_weight, grad_bias)


def max_pool2d_forward(x, kernel_size, stride, padding, out, indices):
    """y[b,c,i,j] = max_{u,v} xp[b,c,i·sH+u,j·sW+v]; indices = flat argmax (first max, NaN wins)."""
    _ext.max_pool_fwd(x, *kernel_size, *stride, *padding, out, indices)
    return out, indices


def max_pool2d_backward(grad_out, indices, grad_input):
    """dx[b,c].flat[indices[b,c,i,j]] += dy[b,c,i,j]."""
    _ext.max_pool_bwd(grad_out, indices, grad_input)
    return grad_input


def avg_pool2d_forward(x, kernel_size, stride, padding, count_include_pad, out):
    """y[b,c,i,j] = Σ_{u,v} xp[b,c,i·sH+u,j·sW+v] / n."""
    _ext.avg_pool_fwd(x, *kernel_size, *stride, *padding, bool(count_include_pad), out)
    return out


def avg_pool2d_backward(grad_out, kernel_size, stride, padding, count_include_pad, grad_input):
    """dx[b,c,window(i,j)] += dy[b,c,i,j] / n."""
    _ext.avg_pool_bwd(grad_out, *kernel_size, *stride, *padding, bool(count_include_pad), grad_input)
    return grad_input
