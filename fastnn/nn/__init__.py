"""Layers with PyTorch's names and shapes, and explicit backpropagation."""

from .module import Module, Parameter

__all__ = ["Module", "Parameter"]
