"""Layers with PyTorch's names and shapes, and explicit backpropagation.

Every layer implements ``forward(x)`` (also ``layer(x)``) and
``backward(grad_out) -> grad_in``; ``backward`` OVERWRITES each
``Parameter.grad`` (see :mod:`fastnn.nn.module`). Layers reuse their output
and gradient buffers while the batch shape repeats: copy a returned array if
you need it after the next call.

New layer classes become loadable by :func:`fastnn.load` through
:func:`register_module`.
"""

from . import init
from .activation import LeakyReLU, ReLU, Sigmoid, Softmax, Tanh
from .container import Sequential
from .conv import AvgPool2d, Conv2d, Flatten, MaxPool2d
from .conv1d import AvgPool1d, Conv1d, MaxPool1d
from .dropout import Dropout, Dropout2d
from .embedding import Embedding
from .linear import Linear
from .loss import BCEWithLogitsLoss, CrossEntropyLoss, Loss, MSELoss
from .module import Module, Parameter, get_module_class, register_module, registered_modules
from .norm import BatchNorm1d, BatchNorm2d, LayerNorm
from .pooling import AdaptiveAvgPool2d, GlobalAvgPool2d
from .rnn import GRU, LSTM, RNN, LastTimeStep

__all__ = [
    "Module",
    "Parameter",
    "register_module",
    "get_module_class",
    "registered_modules",
    "init",
    "Linear",
    "ReLU",
    "LeakyReLU",
    "Sigmoid",
    "Tanh",
    "Softmax",
    "Sequential",
    "Loss",
    "MSELoss",
    "CrossEntropyLoss",
    "BCEWithLogitsLoss",
    "Conv2d",
    "MaxPool2d",
    "AvgPool2d",
    "Flatten",
    "RNN",
    "LSTM",
    "GRU",
    "LastTimeStep",
    "Dropout",
    "Dropout2d",
    "BatchNorm1d",
    "BatchNorm2d",
    "LayerNorm",
    "Embedding",
    "Conv1d",
    "MaxPool1d",
    "AvgPool1d",
    "AdaptiveAvgPool2d",
    "GlobalAvgPool2d",
]
