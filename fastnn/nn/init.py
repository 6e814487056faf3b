"""Weight initialisers, in place, and the random generator layers draw from.

Fan-in and fan-out of a weight of shape (O, I, k...) are ``I·k...`` and
``O·k...`` (PyTorch's convention). Every initialiser takes ``rng`` (a
``numpy.random.Generator``); without it, the module-level generator set by
:func:`manual_seed` is used, so ``fastnn.manual_seed(0)`` followed by building
a model always gives the same weights.

=================== ============================================= ==========================
initialiser          distribution                                  use
=================== ============================================= ==========================
kaiming_uniform_     U(−b, b), b = gain·sqrt(3 / fan)              He, ReLU networks
kaiming_normal_      N(0, σ²), σ = gain / sqrt(fan)                He
xavier_uniform_      U(−b, b), b = gain·sqrt(6 / (fan_in+fan_out)) Glorot, tanh/sigmoid
xavier_normal_       N(0, σ²), σ = gain·sqrt(2 / (fan_in+fan_out)) Glorot
=================== ============================================= ==========================

PyTorch's default for ``Linear`` is ``kaiming_uniform_(a=sqrt(5))`` for the
weight, which is ``U(−1/sqrt(fan_in), 1/sqrt(fan_in))``, and the same bound
for the bias.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Literal, TypeVar

import numpy as np

from .._typing import ArrayLike, NDArray, Seed

#: the array an initialiser fills and returns
_A = TypeVar("_A", bound=NDArray[Any])
#: which fan an initialiser scales by
FanMode = Literal["fan_in", "fan_out"]

__all__ = [
    "manual_seed",
    "get_rng",
    "calculate_gain",
    "fan_in_and_out",
    "uniform_",
    "normal_",
    "zeros_",
    "ones_",
    "constant_",
    "kaiming_uniform_",
    "kaiming_normal_",
    "xavier_uniform_",
    "xavier_normal_",
    "he_uniform_",
    "he_normal_",
    "glorot_uniform_",
    "glorot_normal_",
    "INITIALIZERS",
]

_rng: np.random.Generator | None = None  # created on first use (keeps ``import fastnn`` from loading numpy.random)


def manual_seed(seed: int | None) -> np.random.Generator:
    """Reseed the generator used by every initialiser (and layer construction).

    Parameters
    ----------
    seed : int or None

    Returns
    -------
    numpy.random.Generator, the new generator
    """
    global _rng
    _rng = np.random.default_rng(seed)
    return _rng


def get_rng(rng: Seed = None) -> np.random.Generator:
    """``rng`` as a Generator (an int seeds a new one), else the shared generator."""
    global _rng
    if rng is None:
        if _rng is None:
            _rng = np.random.default_rng()
        return _rng
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng)


def calculate_gain(nonlinearity: str = "relu", param: float | None = None) -> float:
    """Recommended gain for a nonlinearity (PyTorch's values)."""
    if nonlinearity in ("linear", "identity", "sigmoid", "conv1d", "conv2d"):
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else float(param)
        return math.sqrt(2.0 / (1 + slope**2))
    raise ValueError(f"unknown nonlinearity {nonlinearity!r}")


def fan_in_and_out(shape: Sequence[int]) -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a weight of shape (O, I, k...)."""
    if len(shape) < 2:
        raise ValueError(f"fan in/out need a weight with at least 2 dimensions, got shape {tuple(shape)}")
    receptive = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    return shape[1] * receptive, shape[0] * receptive


def _fill(array: _A, values: ArrayLike) -> _A:
    array[...] = values
    return array


def uniform_(array: _A, low: float = 0.0, high: float = 1.0, rng: Seed = None) -> _A:
    """Fill with ``U(low, high)``."""
    return _fill(array, get_rng(rng).uniform(low, high, size=array.shape))


def normal_(array: _A, mean: float = 0.0, std: float = 1.0, rng: Seed = None) -> _A:
    """Fill with ``N(mean, std²)``."""
    return _fill(array, get_rng(rng).normal(mean, std, size=array.shape))


def zeros_(array: _A, rng: Seed = None) -> _A:
    array[...] = 0
    return array


def ones_(array: _A, rng: Seed = None) -> _A:
    array[...] = 1
    return array


def constant_(array: _A, value: float, rng: Seed = None) -> _A:
    array[...] = value
    return array


def _fan(shape: Sequence[int], mode: FanMode) -> int:
    fan_in, fan_out = fan_in_and_out(shape)
    if mode == "fan_in":
        return fan_in
    if mode == "fan_out":
        return fan_out
    raise ValueError(f"mode must be 'fan_in' or 'fan_out', got {mode!r}")


def kaiming_uniform_(
    array: _A, a: float = 0.0, mode: FanMode = "fan_in", nonlinearity: str = "leaky_relu", rng: Seed = None
) -> _A:
    """He initialisation, uniform: ``U(−b, b)`` with ``b = gain·sqrt(3 / fan)``."""
    gain = calculate_gain(nonlinearity, a)
    bound = gain * math.sqrt(3.0 / _fan(array.shape, mode))
    return uniform_(array, -bound, bound, rng)


def kaiming_normal_(
    array: _A, a: float = 0.0, mode: FanMode = "fan_in", nonlinearity: str = "leaky_relu", rng: Seed = None
) -> _A:
    """He initialisation, normal: ``N(0, σ²)`` with ``σ = gain / sqrt(fan)``."""
    gain = calculate_gain(nonlinearity, a)
    return normal_(array, 0.0, gain / math.sqrt(_fan(array.shape, mode)), rng)


def xavier_uniform_(array: _A, gain: float = 1.0, rng: Seed = None) -> _A:
    """Glorot initialisation, uniform: ``b = gain·sqrt(6 / (fan_in + fan_out))``."""
    fan_in, fan_out = fan_in_and_out(array.shape)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(array, -bound, bound, rng)


def xavier_normal_(array: _A, gain: float = 1.0, rng: Seed = None) -> _A:
    """Glorot initialisation, normal: ``σ = gain·sqrt(2 / (fan_in + fan_out))``."""
    fan_in, fan_out = fan_in_and_out(array.shape)
    return normal_(array, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)), rng)


he_uniform_ = kaiming_uniform_
he_normal_ = kaiming_normal_
glorot_uniform_ = xavier_uniform_
glorot_normal_ = xavier_normal_


def _default_(weight: _A, rng: Seed = None) -> _A:
    # PyTorch: kaiming_uniform_(a=sqrt(5)) == U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    return kaiming_uniform_(weight, a=math.sqrt(5.0), rng=rng)


#: Weight initialisers a layer accepts by name (``nn.Linear(..., init="he")``).
INITIALIZERS: dict[str, Callable[..., NDArray[Any]]] = {
    "default": _default_,
    "he": kaiming_uniform_,
    "he_uniform": kaiming_uniform_,
    "he_normal": kaiming_normal_,
    "kaiming_uniform": kaiming_uniform_,
    "kaiming_normal": kaiming_normal_,
    "glorot": xavier_uniform_,
    "glorot_uniform": xavier_uniform_,
    "glorot_normal": xavier_normal_,
    "xavier_uniform": xavier_uniform_,
    "xavier_normal": xavier_normal_,
}
