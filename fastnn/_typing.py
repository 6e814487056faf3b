"""Type aliases shared by the annotated modules (for type checkers and readers only)."""

from __future__ import annotations

from typing import Any, Literal, Protocol, TypeAlias

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray

__all__ = [
    "ArrayLike",
    "DTypeLike",
    "NDArray",
    "FloatArray",
    "IntArray",
    "IntPair",
    "Reduction",
    "DenseActivation",
    "ActivationKind",
    "LossKind",
    "Seed",
    "ParameterSpec",
    "ParamLike",
]

#: A float32 or float64 array: what the kernels take and return.
FloatArray = NDArray[np.floating[Any]]
#: Integer class labels.
IntArray = NDArray[np.integer[Any]]
#: An int, or a pair ``(along H, along W)`` (conv and pooling arguments).
IntPair = int | tuple[int, int]
#: How a loss reduces over the elements.
Reduction = Literal["mean", "sum"]
#: Activations the dense kernels fuse into their output.
DenseActivation = Literal["identity", "relu", "sigmoid", "tanh"]
#: Kinds of :class:`fastnn.ops.ActivationPlan`.
ActivationKind = Literal["relu", "leaky_relu", "sigmoid", "tanh", "softmax"]
#: Kinds of :class:`fastnn.ops.LossPlan`.
LossKind = Literal["mse", "cross_entropy", "bce_with_logits"]
#: A random generator, or a seed for a new one (None: the shared generator). A string: evaluating
#: ``np.random`` here would import numpy.random with fastnn, which ``import fastnn`` avoids.
Seed: TypeAlias = "np.random.Generator | int | None"
#: ``(name, shape, dtype name)`` of a parameter a layer config creates.
ParameterSpec = tuple[str, tuple[int, ...], str]


class ParamLike(Protocol):
    """What a plan needs of a parameter: its array and the gradient buffer of the same shape."""

    @property
    def data(self) -> FloatArray: ...

    @property
    def grad(self) -> FloatArray: ...
