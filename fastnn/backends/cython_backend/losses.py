"""Loss kernels of the Cython backend (``kernels/_elementwise.pxi``)."""

from ..._ext import _kernels as _ext

mse_loss = _ext.mse_loss
softmax_cross_entropy = _ext.softmax_cross_entropy
bce_with_logits = _ext.bce_with_logits

__all__ = ["mse_loss", "softmax_cross_entropy", "bce_with_logits"]
