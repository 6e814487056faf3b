"""The base classes of every layer: :class:`Parameter` and :class:`Module`.

Backpropagation in fastnn is explicit: each module's ``forward`` keeps what
its ``backward`` needs (its input, its output, ...), and
``backward(grad_output)`` applies the chain rule for that one module, writes
the gradient of each of its parameters into ``param.grad`` and returns the
gradient of its input. A container such as :class:`~fastnn.nn.Sequential`
calls the ``backward`` of its children in reverse order. There is no
autograd tape.

The rules every module follows:

* **Outputs belong to the caller.** ``module(x)`` and ``module.backward(g)``
  return new arrays, unless a :class:`fastnn.Workspace` is active (as inside
  :func:`fastnn.fit`), whose buffers are then reused from step to step.
* **Bookkeeping only when gradients are on.** Under :func:`fastnn.no_grad` a
  forward pass writes nothing on the module, so one model can serve
  inference from many threads at once.
* **One backward protocol**: ``backward(grad_output, *, input_grad=True,
  accumulate=False)``. ``input_grad=False`` skips dL/dx where a layer can
  (the first layer of a network) and returns None.
* **Gradients are overwritten** by default: after ``backward`` each
  ``param.grad`` holds the gradient of the last forward/backward pair alone,
  so a training step needs no zeroing pass. ``accumulate=True`` adds into
  ``.grad`` instead (micro-batching; PyTorch always accumulates), and
  ``zero_grad`` clears them.
"""

from __future__ import annotations

import inspect
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterator, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, overload

import numpy as np
from numpy.lib.mixins import NDArrayOperatorsMixin

from .. import _validation as _v
from .._typing import ArrayLike, DTypeLike, FloatArray, ParameterSpec
from ..grad_mode import _inference

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["Parameter", "Module", "register_module", "get_module_class", "registered_modules", "BUFFER_DTYPES"]

#: Layer classes that :func:`fastnn.load` may rebuild, by name. A saved file
#: names its layers; loading looks the names up here and nowhere else, so a
#: file can never make fastnn import or run arbitrary code.
MODULE_REGISTRY: dict[str, type[Module]] = {}

_M = TypeVar("_M", bound="type[Module]")


@overload
def register_module(cls: _M, *, name: str | None = None) -> _M: ...
@overload
def register_module(cls: None = None, *, name: str | None = None) -> Callable[[_M], _M]: ...
def register_module(cls: _M | None = None, *, name: str | None = None) -> _M | Callable[[_M], _M]:
    """Class decorator: make a :class:`Module` subclass loadable by :func:`fastnn.load`.

    Parameters
    ----------
    cls : type, a subclass of :class:`Module`
    name : str, optional
        Name written into saved files (default: the class name). Must be
        unique; registering another class under a taken name raises
        ``ValueError``.

    Examples
    --------
    >>> from fastnn import nn
    >>> @nn.register_module
    ... class Scale(nn.Module):
    ...     def __init__(self, factor=2.0):
    ...         super().__init__()
    ...         self.factor = factor
    ...     def forward(self, x):
    ...         return x * self.factor
    ...     def backward(self, grad_output, *, input_grad=True, accumulate=False):
    ...         return grad_output * self.factor
    ...     def get_config(self):
    ...         return {"factor": self.factor}

    The class must implement :meth:`Module.get_config` (JSON-serialisable
    constructor keyword arguments). A container whose children are not
    rebuilt by its constructor overrides :meth:`Module.from_config`.
    """

    def deco(c: _M) -> _M:
        if not (isinstance(c, type) and issubclass(c, Module)):
            raise TypeError(f"register_module expects a Module subclass, got {c!r}")
        key = name or c.__name__
        old = MODULE_REGISTRY.get(key)
        if old is not None and old is not c and (old.__module__, old.__qualname__) != (c.__module__, c.__qualname__):
            raise ValueError(f"a module named {key!r} is already registered ({old.__module__}.{old.__qualname__})")
        MODULE_REGISTRY[key] = c
        c._registered_name = key
        return c

    return deco if cls is None else deco(cls)


def get_module_class(name: str) -> type[Module]:
    """The registered class called ``name`` (``KeyError`` with the known names if absent)."""
    try:
        return MODULE_REGISTRY[name]
    except KeyError:
        raise KeyError(f"no layer named {name!r} is registered; known: {sorted(MODULE_REGISTRY)}") from None


def registered_modules() -> dict[str, type[Module]]:
    """A copy of the registry: saved-file name -> class."""
    return dict(MODULE_REGISTRY)


_F32, _F64 = np.dtype(np.float32), np.dtype(np.float64)
_I64 = np.dtype(np.int64)

#: dtypes a buffer may have: float state (running statistics) or an int64 counter.
BUFFER_DTYPES = (_F32, _F64, _I64)


def _check_buffer(name: str, value: object) -> np.ndarray | None:
    """A buffer's array: float32/float64/int64, owned, writeable and C-contiguous (copied if not)."""
    if value is None:
        return None
    if type(value) is not np.ndarray:
        raise TypeError(f"buffer {name!r} must be a numpy.ndarray or None, got {type(value).__name__}")
    if value.dtype not in BUFFER_DTYPES:
        raise TypeError(f"buffer {name!r} must be float32, float64 or int64, got dtype {value.dtype}")
    if not value.flags.c_contiguous or not value.flags.writeable:
        value = np.array(value, order="C", copy=True)
    return value


def _readonly(a: np.ndarray) -> np.ndarray:
    v = a.view()
    v.flags.writeable = False
    return v


class Parameter(NDArrayOperatorsMixin):
    """A trainable array and its gradient.

    A parameter behaves like the array it holds, read-only: ``np.asarray(p)``,
    ``p.T``, ``p[0]``, ``p.shape``, ``p * 2`` and NumPy functions give
    read-only views of (or new arrays computed from) ``p.data``. To change
    the values, write into ``p.data`` (``p.data[...] = values``) or assign a
    new array to it.

    Parameters
    ----------
    data : ndarray of float32 or float64
        Kept as given if it is a writeable C-contiguous array, else copied
        into one (kernels update it in place).

    Attributes
    ----------
    data : ndarray
        The values. Assigning checks the new array (float32/float64,
        writeable, C-contiguous); a new shape or dtype gives a new zero ``grad``.
    grad : ndarray of the same shape and dtype
        Written by ``backward``. Assigning checks shape, dtype and layout;
        ``None`` resets it to zeros.
    """

    __slots__ = ("data", "grad")
    __hash__ = object.__hash__

    # set through object.__setattr__ in __setattr__ below; declared for type checkers
    data: FloatArray
    grad: FloatArray

    def __init__(self, data: ArrayLike) -> None:
        data = np.asarray(data)
        if data.dtype.kind == "f" and (not data.flags.c_contiguous or not data.flags.writeable):
            data = np.array(data, order="C", copy=True)
        self.data = data

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "data":
            if type(value) is not np.ndarray:
                raise TypeError(f"Parameter data must be a numpy.ndarray, got {type(value).__name__}")
            if value.dtype != _F32 and value.dtype != _F64:
                raise TypeError(f"Parameter data must be float32 or float64, got dtype {value.dtype}")
            if not value.flags.c_contiguous or not value.flags.writeable:
                raise ValueError(
                    "Parameter data must be a writeable C-contiguous array "
                    "(np.ascontiguousarray(a) or a.copy() gives one)"
                )
            old = getattr(self, "grad", None)
            object.__setattr__(self, "data", value)
            if old is None or old.shape != value.shape or old.dtype != value.dtype or np.may_share_memory(old, value):
                object.__setattr__(self, "grad", np.zeros_like(value))
        elif name == "grad":
            data = self.data
            if value is None:
                value = np.zeros_like(data)
            elif type(value) is not np.ndarray or value.shape != data.shape or value.dtype != data.dtype:
                raise ValueError(f"grad must be an array of the parameter's shape {data.shape} and dtype {data.dtype}")
            elif not value.flags.c_contiguous or not value.flags.writeable:
                raise ValueError("grad must be a writeable C-contiguous array")
            elif np.may_share_memory(value, data):
                raise ValueError("grad must not share memory with data")
            object.__setattr__(self, "grad", value)
        else:
            raise AttributeError(f"Parameter has no attribute {name!r}")

    def __getstate__(self) -> dict[str, FloatArray]:
        return {"data": self.data, "grad": self.grad}

    def __setstate__(self, state: Mapping[str, Any]) -> None:
        # joblib hands back read-only memory maps (np.memmap): own a writeable copy
        for name in ("data", "grad"):
            a = state[name]
            if type(a) is not np.ndarray or not a.flags.writeable or not a.flags.c_contiguous:
                a = np.array(a, order="C", copy=True)
            setattr(self, name, a)

    # -- the array protocol: read-only views of data ---------------------
    def __array__(self, dtype: DTypeLike | None = None, copy: bool | None = None) -> np.ndarray:
        if copy:
            return np.array(self.data, dtype=dtype, copy=True)
        a = _readonly(self.data)
        return a if dtype is None else a.astype(dtype, copy=False)

    def __array_ufunc__(self, ufunc: np.ufunc, method: str, *inputs: Any, **kwargs: Any) -> Any:
        for o in kwargs.get("out", ()):
            if isinstance(o, Parameter):
                raise TypeError(
                    "a Parameter is read-only as an array: update p.data in place instead (e.g. p.data -= lr * p.grad)"
                )
        inputs = tuple(_readonly(i.data) if isinstance(i, Parameter) else i for i in inputs)
        return getattr(ufunc, method)(*inputs, **kwargs)

    def __getitem__(self, index: Any) -> Any:
        return _readonly(self.data)[index]

    def __setitem__(self, index: Any, value: Any) -> None:
        raise TypeError("a Parameter is read-only as an array: write into p.data instead (p.data[...] = values)")

    def __len__(self) -> int:
        return len(self.data)

    def __iter__(self) -> Iterator[Any]:
        return iter(_readonly(self.data))

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def dtype(self) -> np.dtype[Any]:
        return self.data.dtype

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def size(self) -> int:
        return self.data.size

    @property
    def T(self) -> FloatArray:
        return _readonly(self.data).T

    def numpy(self) -> np.ndarray:
        """A copy of the values (PyTorch's ``tensor.detach().numpy()`` idiom, without sharing)."""
        return self.data.copy()

    def __repr__(self) -> str:
        return f"Parameter(shape={self.data.shape}, dtype={self.data.dtype})"


class Module:
    """Base class of layers and containers.

    Subclasses set parameters and child modules as attributes (they are
    registered in assignment order, which fixes ``state_dict`` order), and
    implement :meth:`forward` and :meth:`backward`.

    Buffers (:meth:`register_buffer`) are arrays that belong to the module's
    state but are not trained: running statistics, counters. They are in
    :meth:`state_dict` (after the module's own parameters, as in PyTorch),
    loaded by :meth:`load_state_dict`, saved by :func:`fastnn.save` and
    converted by :meth:`to`, but they have no gradient and optimizers never
    see them (:meth:`parameters` does not list them).

    To be saved by :func:`fastnn.save`, a module also implements
    :meth:`get_config`, returning the keyword arguments that rebuild it.
    """

    training: bool
    # set through object.__setattr__ in __init__; declared for type checkers
    _parameters: OrderedDict[str, Parameter]
    _modules: OrderedDict[str, Module]
    _buffers: OrderedDict[str, np.ndarray | None]
    #: the name the class is registered under (set by :func:`register_module`)
    _registered_name: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        backward = cls.__dict__.get("backward")
        if backward is not None:
            params = inspect.signature(backward).parameters
            ok = any(p.kind is p.VAR_KEYWORD for p in params.values()) or (
                "input_grad" in params and "accumulate" in params
            )
            if not ok:
                raise TypeError(
                    f"{cls.__name__}.backward must take the keyword arguments of the module protocol: "
                    f"def backward(self, grad_output, *, input_grad=True, accumulate=False)"
                )

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "training", True)

    def __setattr__(self, name: str, value: Any) -> None:
        params = self.__dict__.get("_parameters")
        if params is None:
            raise AttributeError("Module.__init__() must be called before assigning attributes")
        buffers = self.__dict__.get("_buffers")
        if buffers is not None and name in buffers:
            # a registered buffer stays a buffer: checked, kept in the registry
            value = _check_buffer(name, value)
            buffers[name] = value
            object.__setattr__(self, name, value)
            return
        changed = False
        if isinstance(value, Parameter):
            self._modules.pop(name, None)
            params[name] = value
            changed = True
        elif isinstance(value, Module):
            params.pop(name, None)
            self._modules[name] = value
        elif name in params and value is None:
            del params[name]
            changed = True
        object.__setattr__(self, name, value)
        if changed and "_ctx" in self.__dict__:
            # a parameter object was replaced after construction: rebind the kernels
            self._reset_transient()

    def _reset_transient(self) -> None:
        """(Re)create per-call state: bound kernels, forward context. Layers override."""
        self.__dict__["_ctx"] = None

    def _input_error(self, x: object, exc: Exception) -> Exception:
        """``exc``, or a TypeError saying how to convert when the input's dtype is the cause."""
        try:
            a = x if isinstance(x, np.ndarray) else np.asarray(x)
        except Exception:  # not array-like at all: keep the original message
            return exc
        dt = self.dtype
        if a.dtype != dt:
            other = f" or the model with model.to(np.{a.dtype.name})" if a.dtype.kind == "f" else ""
            return TypeError(
                f"{type(self).__name__} has {dt.name} parameters but the input has dtype {a.dtype}: "
                f"convert the input with x.astype(np.{dt.name}){other}"
            )
        return exc

    # -- computation --------------------------------------------------
    def forward(self, x: Any) -> Any:
        """Compute the output for input ``x``; keep what backward needs if gradients are on."""
        raise NotImplementedError(f"{type(self).__name__} does not implement forward")

    def backward(self, grad_output: Any, *, input_grad: bool = True, accumulate: bool = False) -> Any:
        """Given dL/d(output), fill each ``param.grad`` and return dL/d(input).

        Parameters
        ----------
        grad_output : ndarray, dL/d(output of the last forward)
        input_grad : bool, default True
            False: dL/d(input) is not needed (the first layer of a network);
            a layer may then skip computing it and return None.
        accumulate : bool, default False
            Add the parameter gradients into ``.grad`` instead of overwriting
            them (gradient accumulation over micro-batches).
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement backward")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    def _saved(self) -> Any:
        """What the last forward kept for backward (``_ctx``), or a clear error."""
        ctx = self.__dict__.get("_ctx")
        if ctx is None:
            raise RuntimeError(
                f"{type(self).__name__}.backward called before forward (or after a forward "
                f"under fastnn.no_grad(), which keeps nothing for backward)"
            )
        return ctx

    # -- parameters ---------------------------------------------------
    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        """Yield ``(name, Parameter)`` pairs, children's names dotted as in PyTorch."""
        for name, p in self._parameters.items():
            yield prefix + name, p
        for name, child in self._modules.items():
            yield from child.named_parameters(prefix + name + ".")

    def parameters(self) -> list[Parameter]:
        """List of all parameters of this module and its children."""
        return [p for _, p in self.named_parameters()]

    # -- buffers ------------------------------------------------------
    def register_buffer(self, name: str, array: np.ndarray | None, persistent: bool = True) -> None:
        """Add a non-trainable array to the module's state (PyTorch's ``register_buffer``).

        Parameters
        ----------
        name : str
            Attribute name; ``module.name`` reads the array, and assigning
            ``module.name = array`` replaces it (checked again).
        array : ndarray of float32, float64 or int64, or None
            Kept as given if writeable and C-contiguous, else copied. None
            registers the name without an array (left out of ``state_dict``).
        persistent : bool, default True
            False keeps the buffer out of ``state_dict`` and saved files.

        Notes
        -----
        Buffers have no gradient and are not returned by :meth:`parameters`,
        so optimizers never update them; the layer that owns them does
        (a batch norm's running statistics, in training mode).
        """
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"buffer name must be an identifier, got {name!r}")
        if name in self._parameters or name in self._modules:
            raise ValueError(f"{type(self).__name__} already has a parameter or child module named {name!r}")
        array = _check_buffer(name, array)
        self._buffers[name] = array
        if not _v.strict_bool(persistent, "persistent"):
            self.__dict__.setdefault("_non_persistent", set()).add(name)
        object.__setattr__(self, name, array)

    def named_buffers(self, prefix: str = "") -> Iterator[tuple[str, np.ndarray]]:
        """Yield ``(name, ndarray)`` for every buffer that holds an array, children's names dotted."""
        for name, b in self._buffers.items():
            if b is not None:
                yield prefix + name, b
        for name, child in self._modules.items():
            yield from child.named_buffers(prefix + name + ".")

    def buffers(self) -> list[np.ndarray]:
        """List of the arrays of every buffer of this module and its children."""
        return [b for _, b in self.named_buffers()]

    def _named_state(self, prefix: str = "") -> Iterator[tuple[str, np.ndarray]]:
        """``(name, array)`` of every ``state_dict`` entry, the live arrays, in PyTorch's order.

        Per module: its parameters, then its persistent buffers, then its
        children, recursively (what ``torch.nn.Module.state_dict`` does).
        """
        for name, p in self._parameters.items():
            yield prefix + name, p.data
        skip = self.__dict__.get("_non_persistent", ())
        for name, b in self._buffers.items():
            if b is not None and name not in skip:
                yield prefix + name, b
        for name, child in self._modules.items():
            yield from child._named_state(prefix + name + ".")

    def children(self) -> list[Module]:
        return list(self._modules.values())

    def modules(self) -> Iterator[Module]:
        yield self
        for child in self._modules.values():
            yield from child.modules()

    def zero_grad(self) -> None:
        """Set every parameter's gradient to zero."""
        for p in self.parameters():
            p.grad[...] = 0

    def train(self, mode: bool = True) -> Self:
        """Set training mode (``mode=True``) or evaluation mode, recursively."""
        mode = _v.strict_bool(mode, "mode")
        for m in self.modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self) -> Self:
        """Set evaluation mode (same as ``train(False)``)."""
        return self.train(False)

    def _is_training(self) -> bool:
        """Training behaviour for this call: the module's mode, unless under :func:`fastnn.inference_mode`."""
        return self.training and not _inference.get()

    def to(self, dtype: DTypeLike) -> Self:
        """Convert every parameter to ``dtype`` (float32 or float64), in place; returns self.

        Inputs must then have the same dtype (``x.astype(dtype)``).
        """
        dt = _v.float_dtype(dtype)
        for m in self.modules():
            for p in m._parameters.values():
                if p.data.dtype != dt:
                    p.data = p.data.astype(dt)
            for name, b in list(m._buffers.items()):
                if b is not None and b.dtype.kind == "f" and b.dtype != dt:
                    setattr(m, name, b.astype(dt))  # counters (int64) keep their dtype
            if hasattr(m, "_to_dtype"):
                m._to_dtype(dt)
        return self

    @property
    def dtype(self) -> np.dtype[Any]:
        """The dtype of the first parameter (float32 for a module without any)."""
        for p in self.parameters():
            return p.data.dtype
        return np.dtype(np.float32)

    # -- pickling: configuration and parameters, not per-call state -------
    #: attributes that hold per-call state (forward context, bound kernels,
    #: training locks); not pickled, reset on unpickling
    _transient: tuple[str, ...] = ("_ctx", "_training_lock")

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        for cls in type(self).__mro__:
            for name in cls.__dict__.get("_transient", ()):
                state.pop(name, None)
        return state

    def __setstate__(self, state: Mapping[str, Any]) -> None:
        self.__dict__.update(state)
        buffers = self.__dict__.setdefault("_buffers", OrderedDict())  # pickled before modules had buffers
        for name, b in list(buffers.items()):
            # joblib hands back read-only memory maps: own writeable copies, as Parameter does
            if b is not None and (type(b) is not np.ndarray or not b.flags.writeable):
                b = np.array(b, order="C", copy=True)
                buffers[name] = b
                self.__dict__[name] = b
        if hasattr(self, "_reset_transient"):
            self._reset_transient()

    # -- state --------------------------------------------------------
    def state_dict(self) -> OrderedDict[str, np.ndarray]:
        """Copies of all parameters and persistent buffers, keyed and ordered as PyTorch keys the same module."""
        return OrderedDict((name, a.copy()) for name, a in self._named_state())

    def load_state_dict(self, state_dict: Mapping[str, ArrayLike], strict: bool = True) -> None:
        """Copy values into the parameters and buffers, checking names and shapes.

        Parameters
        ----------
        state_dict : mapping of str to array_like
            E.g. ``{k: v.detach().numpy() for k, v in torch_model.state_dict().items()}``.
        strict : bool
            If True, missing or unexpected keys raise ``KeyError``.

        Raises
        ------
        KeyError
            On missing/unexpected keys (``strict=True``).
        ValueError
            When a shape differs; nothing is changed then.
        TypeError
            When a float array gets non-float values, or an integer counter
            (``num_batches_tracked``) non-integer ones; nothing is changed then.
        """
        own = dict(self._named_state())
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        if strict and (missing or unexpected):
            raise KeyError(f"state_dict mismatch: missing keys {missing}, unexpected keys {unexpected}")
        staged: dict[str, np.ndarray] = {}
        for name, dst in own.items():
            if name not in state_dict:
                continue
            value = np.asarray(state_dict[name])
            if value.shape != dst.shape:
                raise ValueError(f"{name}: expected shape {dst.shape}, got {value.shape}")
            if dst.dtype.kind == "f" and value.dtype.kind != "f":
                raise TypeError(f"{name}: expected floating-point values, got dtype {value.dtype}")
            if dst.dtype.kind == "i" and value.dtype.kind not in "iu":
                raise TypeError(f"{name}: expected integer values, got dtype {value.dtype}")
            staged[name] = value
        for name, value in staged.items():  # all checked: now copy, in place
            np.copyto(own[name], value, casting="same_kind" if own[name].dtype.kind == "f" else "unsafe")

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments that rebuild this module (used by ``fastnn.save``)."""
        raise NotImplementedError(f"{type(self).__name__} cannot be saved: it does not implement get_config()")

    @classmethod
    def from_config(cls, config: dict[str, Any], children: dict[str, Module]) -> Self:
        """Rebuild a module from :meth:`get_config` output (used by ``fastnn.load``).

        ``children`` are the already rebuilt child modules, by name. The default
        calls ``cls(**config)`` and ignores them (the constructor builds its
        own children; their weights are loaded afterwards). Containers such as
        :class:`~fastnn.nn.Sequential` override this to adopt ``children``.
        """
        return cls(**config)

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        if self._modules:
            lines[0] = f"{type(self).__name__}("
            for name, child in self._modules.items():
                child_repr = repr(child).replace("\n", "\n  ")
                lines.append(f"  ({name}): {child_repr}")
            lines.append(")")
            return "\n".join(lines)
        return lines[0] + ")"

    @classmethod
    def parameters_from_config(
        cls, config: dict[str, Any], children: Collection[str] = ()
    ) -> list[ParameterSpec] | None:
        """The parameters :meth:`from_config` would create, without creating them.

        Returns a list of ``(name, shape, dtype name)`` for this module's own
        ``state_dict`` entries (not its children's): its parameters in the
        order the module registers them, then its persistent buffers (dtype
        ``"int64"`` for a counter), after checking ``config`` and the child names ``children`` as
        strictly as the constructor would (``TypeError``/``ValueError``
        otherwise; unknown and missing config keys are errors).
        :func:`fastnn.load` calls it to compare a file's architecture with the
        weights it holds before anything is built or allocated.

        The default returns None, "cannot tell": :func:`fastnn.load` then
        builds the module from the file's config as it is, once the rest of
        the file has passed its checks and the byte limit, and compares its
        parameters afterwards. Override it in a registered layer whose
        constructor allocates in proportion to its config.
        """
        return None
