"""Adaptive average pooling kernels of the Cython backend (``kernels/_layers.pxi``).

The extension's functions, under the reference's names.
"""

from ..._ext import _kernels as _ext
from ..reference import adaptive_pool as _spec

__all__ = list(_spec.__all__)
globals().update({name: getattr(_ext, name) for name in __all__})
