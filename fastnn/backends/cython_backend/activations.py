"""Activation kernels of the Cython backend (``kernels/_elementwise.pxi``)."""

from ..._ext import _kernels as _ext

relu = _ext.relu
relu_backward = _ext.relu_backward
leaky_relu = _ext.leaky_relu
leaky_relu_backward = _ext.leaky_relu_backward
sigmoid = _ext.sigmoid
sigmoid_backward = _ext.sigmoid_backward
tanh = _ext.tanh
tanh_backward = _ext.tanh_backward
softmax = _ext.softmax
softmax_backward = _ext.softmax_backward

__all__ = [
    "relu", "relu_backward",
    "leaky_relu", "leaky_relu_backward",
    "sigmoid", "sigmoid_backward",
    "tanh", "tanh_backward",
    "softmax", "softmax_backward",
]
