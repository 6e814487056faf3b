"""Layers with PyTorch's names and shapes, and explicit backpropagation.

Every layer implements ``forward(x)`` (also ``layer(x)``) and
``backward(grad_out) -> grad_in``; ``backward`` OVERWRITES each
``Parameter.grad`` (see :mod:`fastnn.nn.module`). Layers reuse their output
and gradient buffers while the batch shape repeats: copy a returned array if
you need it after the next call.

New layer classes become loadable by :func:`fastnn.load` through
:func:`register_module`.
"""

from .module import Module, Parameter, register_module, get_module_class, registered_modules
from . import init
from .linear import Linear
from .activation import ReLU, LeakyReLU, Sigmoid, Tanh, Softmax
from .container import Sequential
from .loss import Loss, MSELoss, CrossEntropyLoss, BCEWithLogitsLoss
from .conv import Conv2d, MaxPool2d, AvgPool2d, Flatten
from .rnn import RNN, LSTM, GRU, LastTimeStep
from .dropout import Dropout, Dropout2d
from .norm import BatchNorm1d, BatchNorm2d, LayerNorm
from .embedding import Embedding
from .conv1d import Conv1d, MaxPool1d, AvgPool1d
from .pooling import AdaptiveAvgPool2d, GlobalAvgPool2d

__all__ = [
    "Module", "Parameter", "register_module", "get_module_class", "registered_modules", "init",
    "Linear", "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "Softmax", "Sequential",
    "Loss", "MSELoss", "CrossEntropyLoss", "BCEWithLogitsLoss",
    "Conv2d", "MaxPool2d", "AvgPool2d", "Flatten",
    "RNN", "LSTM", "GRU", "LastTimeStep",
    "Dropout", "Dropout2d", "BatchNorm1d", "BatchNorm2d", "LayerNorm", "Embedding",
    "Conv1d", "MaxPool1d", "AvgPool1d", "AdaptiveAvgPool2d", "GlobalAvgPool2d",
]
