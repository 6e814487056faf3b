"""Whole training steps of a dense network in one call, for the Cython backend (``kernels/_train.pxi``).

The extension's functions, under the reference's names: the steps run as a
C loop over the same routines the per-kernel entry points call.
"""

from ..._ext import _kernels as _ext
from ..reference import train as _spec

__all__ = list(_spec.__all__)
globals().update({name: getattr(_ext, name) for name in __all__})
