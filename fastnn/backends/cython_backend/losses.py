"""Loss kernels of the Cython backend (``fastnn._ext._losses``)."""

from ..._ext import _losses as _ext
from . import register_ext_module

register_ext_module(_ext)

mse_loss = _ext.mse_loss
softmax_cross_entropy = _ext.softmax_cross_entropy
bce_with_logits = _ext.bce_with_logits

__all__ = ["mse_loss", "softmax_cross_entropy", "bce_with_logits"]
