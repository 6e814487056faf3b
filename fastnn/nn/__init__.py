"""Layers with PyTorch's names and shapes, and explicit backpropagation."""

from .module import Module, Parameter
from .rnn import GRU, LSTM, RNN, LastTimeStep

__all__ = ["Module", "Parameter", "RNN", "LSTM", "GRU", "LastTimeStep"]
