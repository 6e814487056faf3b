"""Optimizer update kernels of the Cython backend (``kernels/_elementwise.pxi``)."""

from ..._ext import _kernels as _ext

sgd_update = _ext.sgd_update
adam_update = _ext.adam_update
sgd_update_many = _ext.sgd_update_many
adam_update_many = _ext.adam_update_many

__all__ = ["sgd_update", "adam_update", "sgd_update_many", "adam_update_many"]
