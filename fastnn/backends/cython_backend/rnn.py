"""Recurrent kernels of the Cython backend (``kernels/_rnn.pxi``: one driver for the three cells).

Same names and parameters as :mod:`fastnn.backends.reference.rnn`; the whole
time loop runs in compiled code without the GIL."""

from ... import _config
from ..._ext import _kernels as _ext
from ..reference import rnn as _spec

__all__ = list(_spec.__all__)
globals().update({name: getattr(_ext, name) for name in __all__})


def recurrent_pair(kernel, first, second):  # type: ignore[no-redef]
    """Two independent calls of one recurrent kernel (see the extension's ``recurrent_pair``).

    On a team of two the extension runs them at once, one thread each; their
    all-steps products that go to BLAS then run on that thread alone
    (:class:`fastnn._config.serial_blas`), not on a second team of BLAS threads
    over the same two cores. Each result keeps the bits it has alone.
    """
    if _ext._get_num_threads() != 2:
        return _ext.recurrent_pair(kernel, first, second)
    with _config.serial_blas():
        return _ext.recurrent_pair(kernel, first, second)
