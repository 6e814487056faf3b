"""Optimizer update kernels of the Cython backend (``fastnn._ext._optim``)."""

from ..._ext import _optim as _ext
from . import register_ext_module

register_ext_module(_ext)

sgd_update = _ext.sgd_update
adam_update = _ext.adam_update
sgd_update_many = _ext.sgd_update_many
adam_update_many = _ext.adam_update_many

__all__ = ["sgd_update", "adam_update", "sgd_update_many", "adam_update_many"]
