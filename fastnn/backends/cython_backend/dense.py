"""Matrix multiply and dense-layer kernels of the Cython backend (``fastnn._ext._dense``)."""

from ..._ext import _dense as _ext
from . import register_ext_module

register_ext_module(_ext)

matmul = _ext.matmul
dense_forward = _ext.dense_forward
dense_backward = _ext.dense_backward

__all__ = ["matmul", "dense_forward", "dense_backward"]
