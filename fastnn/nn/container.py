"""Containers: :class:`Sequential`."""

from __future__ import annotations

from .. import _validation as _v
from .activation import ReLU
from .dropout import Dropout
from .linear import Linear
from .module import Module, register_module

__all__ = ["Sequential"]


def _fused_forward(linear, activation):
    forward = linear._forward

    def step(x):
        return forward(x, activation)

    return step


def _dropout_step(dropout, relu=None, inplace=False):
    forward = dropout._fused_forward

    def step(x):
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

    def __init__(self, *modules):
        super().__init__()
        self._reset_transient()
        if len(modules) == 1 and isinstance(modules[0], (list, tuple)):
            modules = tuple(modules[0])
        for i, m in enumerate(modules):
            if not isinstance(m, Module):
                raise TypeError(f"Sequential takes Module instances, argument {i} is {type(m).__name__}")
            setattr(self, str(i), m)

    def __setattr__(self, name, value):
        super().__setattr__(name, value)
        if isinstance(value, Module):
            self.__dict__["_run"] = None

    # -- list-like access ----------------------------------------------
    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __getitem__(self, idx):
        mods = list(self._modules.values())
        if isinstance(idx, slice):
            return Sequential(*mods[idx])
        return mods[idx]

    def __setitem__(self, idx, module):
        keys = list(self._modules)
        setattr(self, keys[idx], module)

    def append(self, module):
        """Add ``module`` at the end; returns self."""
        setattr(self, str(len(self._modules)), module)
        return self

    # -- plan -------------------------------------------------------------
    _transient = ("_run",)

    def _reset_transient(self):
        self.__dict__["_run"] = None
        self.__dict__["_ctx"] = None

    def _build_run(self):
        """(forward steps, backward modules last to first), with the fusions described in the class notes."""
        mods = list(self._modules.values())
        fwd, bwd = [], []
        i = 0
        # whether the step just built ends on a Linear's own output with no activation or a ReLU:
        # a Dropout may then mask that output in place
        maskable = False
        while i < len(mods):
            m = mods[i]
            nxt = mods[i + 1] if i + 1 < len(mods) else None
            act = getattr(nxt, "fused_activation", None) if type(m) is Linear else None
            if act is not None:
                fwd.append(_fused_forward(m, act))   # the Linear's backward covers the activation
                maskable = act == "relu"
                i += 2
            elif type(m) is ReLU and isinstance(nxt, Dropout) and not nxt.inplace:
                fwd.append(_dropout_step(nxt, relu=m))   # the Dropout's backward covers the ReLU
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

    def forward(self, x):
        run = self.__dict__.get("_run") or self._build_run()
        for f in run[0]:
            x = f(x)
        return x

    def backward(self, grad_output, *, input_grad=True, accumulate=False):
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
        run = self.__dict__.get("_run") or self._build_run()
        steps = run[1]
        g = grad_output
        last = len(steps) - 1
        for i, b in enumerate(steps):
            g = b(g, input_grad=input_grad or i < last, accumulate=accumulate)
        return g

    def get_config(self) -> dict:
        return {}

    @classmethod
    def from_config(cls, config, children):
        return cls(*[children[k] for k in sorted(children, key=int)])

    @classmethod
    def parameters_from_config(cls, config, children=()):
        """No parameters of its own; the children must be named "0", "1", ... in order (see Module)."""
        _v.layer_config(config, "Sequential", ())
        names = list(children)
        if names != [str(i) for i in range(len(names))]:
            raise ValueError(f"Sequential children must be named '0', '1', ... in order, got {_v._shown(names)}")
        return []
