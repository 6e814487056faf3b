"""Containers: :class:`Sequential`."""

from __future__ import annotations

import functools

from .. import _validation as _v
from .linear import Linear
from .module import Module, register_module

__all__ = ["Sequential"]


class _FusedDense:
    """A Linear followed by a fusable activation, run as one dense kernel.

    Both modules stay in the Sequential (so parameter names keep PyTorch's
    indices, ``"0.weight"``, ``"2.weight"``); only the computation is fused.
    """

    __slots__ = ("linear", "activation", "forward", "backward_grad")

    def __init__(self, linear, activation):
        self.linear = linear
        self.activation = activation
        fwd = linear._forward
        bwd = linear._backward

        def forward(x, _fwd=fwd, _act=activation):
            return _fwd(x, _act)

        def backward_grad(g, input_grad=True, _bwd=bwd):
            return _bwd(g, input_grad)

        self.forward = forward
        self.backward_grad = backward_grad


def _backward_kw(backward, g, input_grad=True):
    return backward(g, input_grad=input_grad)


@register_module
class Sequential(Module):
    """Modules applied one after the other; children named ``"0"``, ``"1"``, ...

    ``backward`` runs the children's ``backward`` in reverse order. A
    :class:`~fastnn.nn.Linear` followed by :class:`~fastnn.nn.ReLU`,
    :class:`~fastnn.nn.Sigmoid` or :class:`~fastnn.nn.Tanh` runs as one fused
    dense kernel (``fastnn.ops.dense_forward(..., activation=...)``); the
    activation module keeps its index, so ``state_dict`` keys equal
    PyTorch's.

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
        if len(modules) == 1 and isinstance(modules[0], (list, tuple)):
            modules = tuple(modules[0])
        for i, m in enumerate(modules):
            if not isinstance(m, Module):
                raise TypeError(f"Sequential takes Module instances, argument {i} is {type(m).__name__}")
            setattr(self, str(i), m)

    def __setattr__(self, name, value):
        super().__setattr__(name, value)
        if isinstance(value, Module):
            object.__setattr__(self, "_plan", None)

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
    def _build_plan(self):
        mods = list(self._modules.values())
        fwd, bwd = [], []
        first_bwd = None
        i = 0
        while i < len(mods):
            m = mods[i]
            nxt = mods[i + 1] if i + 1 < len(mods) else None
            act = getattr(nxt, "fused_activation", None) if type(m) is Linear else None
            if act is not None:
                step = _FusedDense(m, act)
                fwd.append(step.forward)
                bwd.append(step.backward_grad)
                if i == 0:
                    first_bwd = step.backward_grad
                i += 2
            else:
                fwd.append(m.forward)
                if type(m) is Linear:
                    bwd.append(m._backward)
                    if i == 0:
                        first_bwd = m._backward
                else:
                    bwd.append(m.backward)
                    if i == 0 and getattr(m, "backward_takes_input_grad", False):
                        # Conv2d, RNN, LSTM, GRU: backward(..., input_grad=...) by keyword
                        first_bwd = functools.partial(_backward_kw, m.backward)
                i += 1
        bwd.reverse()
        # (forward steps, backward steps except the first module, first module's
        # backward taking input_grad, or None)
        if first_bwd is not None:
            plan = (tuple(fwd), tuple(bwd[:-1]), first_bwd, None)
        else:
            plan = (tuple(fwd), tuple(bwd[:-1]), None, bwd[-1] if bwd else None)
        object.__setattr__(self, "_plan", plan)
        return plan

    def forward(self, x):
        plan = self.__dict__.get("_plan") or self._build_plan()
        for f in plan[0]:
            x = f(x)
        return x

    def backward(self, grad_out, input_grad=True):
        """Backpropagate ``grad_out`` through every child, last to first.

        Parameters
        ----------
        grad_out : ndarray, dL/d(output)
        input_grad : bool, default True
            False skips the first layer's input gradient where it can (a
            training step does not need dL/dx) and returns None then.
        """
        plan = self.__dict__.get("_plan") or self._build_plan()
        g = grad_out
        for b in plan[1]:
            g = b(g)
        if plan[2] is not None:
            return plan[2](g, input_grad)
        if plan[3] is not None:
            return plan[3](g)
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
