"""Layers with PyTorch's names and shapes, and explicit backpropagation."""

from .module import Module, Parameter
from .conv import AvgPool2d, Conv2d, Flatten, MaxPool2d

__all__ = ["Module", "Parameter", "Conv2d", "MaxPool2d", "AvgPool2d", "Flatten"]
