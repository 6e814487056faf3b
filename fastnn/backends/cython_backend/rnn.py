"""Recurrent kernels of the Cython backend (``kernels/_rnn.pxi``: one driver for the three cells).

Same names and parameters as :mod:`fastnn.backends.reference.rnn`; the whole
time loop runs in compiled code without the GIL.
"""

from ..._ext import _kernels as _ext

__all__ = [
    "rnn_forward", "rnn_backward",
    "lstm_forward", "lstm_backward",
    "gru_forward", "gru_backward",
]

rnn_forward = _ext.rnn_forward
rnn_backward = _ext.rnn_backward
lstm_forward = _ext.lstm_forward
lstm_backward = _ext.lstm_backward
gru_forward = _ext.gru_forward
gru_backward = _ext.gru_backward
