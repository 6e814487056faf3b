"""Recurrent kernels of the Cython backend (``kernels/_rnn.pxi``: one driver for the three cells).

Same names and parameters as :mod:`fastnn.backends.reference.rnn`; the whole
time loop runs in compiled code without the GIL."""

from ..._ext import _kernels as _ext
from ..reference import rnn as _spec

__all__ = list(_spec.__all__)
globals().update({name: getattr(_ext, name) for name in __all__})
