"""The embedding table: :class:`Embedding`.

A lookup ``y[..., :] = weight[indices[...]]`` with PyTorch's names, shapes,
initialisation (standard normal) and ``padding_idx`` rule (that row starts at
zero and gets no gradient).

Gradient
    The backward pass writes ``weight.grad`` sparsely: only the rows of the
    tokens in the batch are written (the rows the previous batch wrote are
    zeroed, nothing else is touched), so its cost does not grow with the
    vocabulary. Optimizers see an ordinary dense gradient that is zero
    outside those rows: SGD without momentum and weight decay changes only
    the used rows; Adam, AdamW and momentum update every row from their
    running averages, exactly as PyTorch's dense (``sparse=False``)
    embedding does. A gradient array the layer has not written before
    (after ``p.grad = ...``) is zeroed in full once.
Indices
    Integer arrays of any shape, every value in ``[0, num_embeddings)``
    (``ValueError`` otherwise, also in the compiled kernels). Float arrays
    holding whole numbers are accepted too, because :func:`fastnn.fit` and
    :func:`fastnn.predict` hand a model its data in the model's dtype.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import numpy as np

from .. import _validation as _v
from .. import ops
from .._typing import ArrayLike, DTypeLike, FloatArray, ParameterSpec, Seed
from ..grad_mode import _enabled as _grad_enabled
from . import init as _init
from .module import Module, Parameter, register_module

__all__ = ["Embedding"]


@register_module
class Embedding(Module):
    """A table of ``num_embeddings`` vectors of size ``embedding_dim`` (PyTorch's ``nn.Embedding``).

    Parameters
    ----------
    num_embeddings : int, V
    embedding_dim : int, D
    padding_idx : int, optional
        A row (negative counts from the end) initialised to zero that gets
        no gradient: the vector of a padding token.
    dtype : float32 or float64, default float32
    rng : numpy.random.Generator or int, optional
        Generator for the initial values, N(0, 1) (default: the one seeded
        by :func:`fastnn.manual_seed`).

    Attributes
    ----------
    weight : Parameter of shape (V, D)

    Shapes: indices of any shape ``S`` -> output ``S + (D,)``. ``backward``
    returns None: indices have no gradient.
    """

    _plan: ops.EmbeddingPlan

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        padding_idx: int | None = None,
        dtype: DTypeLike = np.float32,
        rng: Seed = None,
    ) -> None:
        super().__init__()
        self.num_embeddings = _v.positive_int(num_embeddings, "num_embeddings")
        self.embedding_dim = _v.positive_int(embedding_dim, "embedding_dim")
        self.padding_idx = None if padding_idx is None else ops.embedding._padding(padding_idx, self.num_embeddings)
        dt = _v.strict_float_dtype(dtype)
        self.weight = Parameter(np.empty((self.num_embeddings, self.embedding_dim), dt))
        self._reset_transient()
        self.reset_parameters(rng)

    _transient = ("_plan",)

    def _reset_transient(self) -> None:
        self.__dict__["_plan"] = ops.EmbeddingPlan(self.weight, self.padding_idx)
        self.__dict__["_ctx"] = None

    def reset_parameters(self, rng: Seed = None) -> None:
        """PyTorch's initialisation: N(0, 1), the padding row zero."""
        _init.normal_(self.weight.data, 0.0, 1.0, rng)
        if self.padding_idx is not None:
            self.weight.data[self.padding_idx] = 0

    def forward(self, indices: ArrayLike) -> FloatArray:
        """The rows of ``indices`` (any shape): output ``indices.shape + (embedding_dim,)``."""
        y, idx = self._plan.forward(indices)
        if _grad_enabled.get():
            self.__dict__["_ctx"] = idx
        return y

    def backward(self, grad_output: ArrayLike, *, input_grad: bool = True, accumulate: bool = False) -> None:
        """Write the gradient of the used rows into ``weight.grad`` (see the module notes); returns None."""
        return self._plan.backward(grad_output, self._saved(), accumulate=accumulate)

    def get_config(self) -> dict[str, Any]:
        return {
            "num_embeddings": self.num_embeddings,
            "embedding_dim": self.embedding_dim,
            "padding_idx": self.padding_idx,
            "dtype": self.weight.data.dtype.name,
        }

    def extra_repr(self) -> str:
        s = f"{self.num_embeddings}, {self.embedding_dim}"
        if self.padding_idx is not None:
            s += f", padding_idx={self.padding_idx}"
        return s + ("" if self.weight.data.dtype == np.float32 else f", dtype={self.weight.data.dtype.name}")

    @classmethod
    def parameters_from_config(cls, config: dict[str, Any], children: Collection[str] = ()) -> list[ParameterSpec]:
        """``[(name, shape, dtype name)]`` that ``Embedding(**config)`` creates, config checked (see Module)."""
        c = _v.layer_config(config, "Embedding", ("num_embeddings", "embedding_dim", "padding_idx", "dtype"), children)
        V = _v.positive_int(c["num_embeddings"], "num_embeddings")
        D = _v.positive_int(c["embedding_dim"], "embedding_dim")
        if c["padding_idx"] is not None:
            ops.embedding._padding(c["padding_idx"], V)
        return [("weight", (V, D), _v.strict_float_dtype(c["dtype"]).name)]
