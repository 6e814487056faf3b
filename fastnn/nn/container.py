"""Containers: :class:`Sequential`."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol, overload

from .. import _validation as _v
from .._typing import ArrayLike, DenseActivation, FloatArray, ParameterSpec
from .activation import ReLU
from .dropout import Dropout
from .linear import Linear
from .module import Module, register_module

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["Sequential"]

#: one forward step of a Sequential: a module's forward, or fused modules
_Step = Callable[[Any], Any]


class _BackwardStep(Protocol):
    """A module's ``backward`` (bound)."""

    def __call__(self, grad_output: Any, *, input_grad: bool = ..., accumulate: bool = ...) -> Any: ...


#: (forward steps, backward steps last to first)
_Run = tuple[tuple[_Step, ...], tuple[_BackwardStep, ...]]


def _fused_forward(linear: Linear, activation: DenseActivation) -> Callable[[ArrayLike], FloatArray]:
    forward = linear._forward

    def step(x: ArrayLike) -> FloatArray:
        return forward(x, activation)

    return step


def _dropout_step(
    dropout: Dropout, relu: ReLU | None = None, inplace: bool = False
) -> Callable[[ArrayLike], ArrayLike]:
    forward = dropout._fused_forward

    def step(x: ArrayLike) -> ArrayLike:
        return forward(x, relu, inplace)

    return step


@register_module
class Sequential(Module):
    """Modules applied one after the other; children named ``"0"``, ``"1"``, ...

    ``backward`` runs the children's ``backward`` in reverse order. A
    :class:`~fastnn.nn.Linear` followed by :class:`~fastnn.nn.ReLU`,
    :class:`~fastnn.nn.Sigmoid` or :class:`~fastnn.nn.Tanh` runs as one fused
    dense kernel (``fastnn.ops.dense_forward(..., activation=...)``); the
    activation module keeps its index, so ``state_dict`` keys equal
    PyTorch's. A :class:`~fastnn.nn.Dropout` (or ``Dropout2d``) right after a
    ReLU layer runs as one kernel with it, and right after a Linear (with no
    activation or a fused ReLU) masks the Linear's output in place: the
    Linear's backward pass stays exact, since a ReLU's derivative is read
    from the sign of its output, which masking to zero does not change.

    Parameters
    ----------
    *modules : Module

    Examples
    --------
    >>> from fastnn import nn
    >>> model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    >>> [k for k in model.state_dict()]
    ['0.weight', '0.bias', '2.weight', '2.bias']
    """

    def __init__(self, *modules: Module | Sequence[Module]) -> None:
        super().__init__()
        self._reset_transient()
        if len(modules) == 1 and isinstance(modules[0], (list, tuple)):
            modules = tuple(modules[0])
        for i, m in enumerate(modules):
            if not isinstance(m, Module):
                raise TypeError(f"Sequential takes Module instances, argument {i} is {type(m).__name__}")
            setattr(self, str(i), m)

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        if isinstance(value, Module):
            self.__dict__["_run"] = None

    # -- list-like access ----------------------------------------------
    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())

    @overload
    def __getitem__(self, idx: int) -> Module: ...
    @overload
    def __getitem__(self, idx: slice) -> Sequential: ...
    def __getitem__(self, idx: int | slice) -> Module | Sequential:
        mods = list(self._modules.values())
        if isinstance(idx, slice):
            return Sequential(*mods[idx])
        return mods[idx]

    def __setitem__(self, idx: int, module: Module) -> None:
        keys = list(self._modules)
        setattr(self, keys[idx], module)

    def append(self, module: Module) -> Self:
        """Add ``module`` at the end; returns self."""
        setattr(self, str(len(self._modules)), module)
        return self

    # -- plan -------------------------------------------------------------
    _transient = ("_run",)

    def _reset_transient(self) -> None:
        self.__dict__["_run"] = None
        self.__dict__["_ctx"] = None

    def _build_run(self) -> _Run:
        """(forward steps, backward modules last to first), with the fusions described in the class notes."""
        mods = list(self._modules.values())
        fwd: list[_Step] = []
        bwd: list[_BackwardStep] = []
        i = 0
        # whether the step just built ends on a Linear's own output with no activation or a ReLU:
        # a Dropout may then mask that output in place
        maskable = False
        while i < len(mods):
            m = mods[i]
            nxt = mods[i + 1] if i + 1 < len(mods) else None
            act = getattr(nxt, "fused_activation", None) if type(m) is Linear else None
            if act is not None and type(m) is Linear:  # act is only set after a Linear
                fwd.append(_fused_forward(m, act))  # the Linear's backward covers the activation
                maskable = act == "relu"
                i += 2
            elif type(m) is ReLU and isinstance(nxt, Dropout) and not nxt.inplace:
                fwd.append(_dropout_step(nxt, relu=m))  # the Dropout's backward covers the ReLU
                m = nxt
                maskable = False
                i += 2
            elif isinstance(m, Dropout) and not m.inplace and maskable:
                fwd.append(_dropout_step(m, inplace=True))
                maskable = False
                i += 1
            else:
                fwd.append(m.forward)
                maskable = type(m) is Linear
                i += 1
            bwd.append(m.backward)
        run = (tuple(fwd), tuple(reversed(bwd)))
        self.__dict__["_run"] = run
        return run

    def forward(self, x: Any) -> Any:
        run: _Run = self.__dict__.get("_run") or self._build_run()
        for f in run[0]:
            x = f(x)
        return x

    def backward(self, grad_output: Any, *, input_grad: bool = True, accumulate: bool = False) -> Any:
        """Backpropagate ``grad_output`` through every child, last to first.

        Parameters
        ----------
        grad_output : ndarray, dL/d(output)
        input_grad : bool, default True
            False skips the first layer's input gradient where it can (a
            training step does not need dL/dx) and returns None then.
        accumulate : bool, default False
            Add into every ``param.grad`` instead of overwriting.
        """
        run: _Run = self.__dict__.get("_run") or self._build_run()
        steps = run[1]
        g = grad_output
        last = len(steps) - 1
        for i, b in enumerate(steps):
            g = b(g, input_grad=input_grad or i < last, accumulate=accumulate)
        return g

    def get_config(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_config(cls, config: dict[str, Any], children: dict[str, Module]) -> Self:
        return cls(*[children[k] for k in sorted(children, key=int)])

    @classmethod
    def parameters_from_config(cls, config: dict[str, Any], children: Collection[str] = ()) -> list[ParameterSpec]:
        """No parameters of its own; the children must be named "0", "1", ... in order (see Module)."""
        _v.layer_config(config, "Sequential", ())
        names = list(children)
        if names != [str(i) for i in range(len(names))]:
            raise ValueError(f"Sequential children must be named '0', '1', ... in order, got {_v._shown(names)}")
        return []
