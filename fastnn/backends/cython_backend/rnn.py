"""Recurrent kernels of the Cython backend (compiled from kernels/_rnn.pyx).

Same names and parameters as :mod:`fastnn.backends.reference.rnn`; the whole
time loop runs in compiled code without the GIL.
"""

from ..._ext import _rnn
from . import register_ext_module

register_ext_module(_rnn)

__all__ = [
    "rnn_forward", "rnn_backward",
    "lstm_forward", "lstm_backward",
    "gru_forward", "gru_backward",
]

rnn_forward = _rnn.rnn_forward
rnn_backward = _rnn.rnn_backward
lstm_forward = _rnn.lstm_forward
lstm_backward = _rnn.lstm_backward
gru_forward = _rnn.gru_forward
gru_backward = _rnn.gru_backward
