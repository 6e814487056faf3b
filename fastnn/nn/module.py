"""The base classes of every layer: :class:`Parameter` and :class:`Module`.

Backpropagation in fastnn is explicit: each module's ``forward`` keeps what
its ``backward`` needs (its input, its output, ...), and ``backward(grad_out)``
applies the chain rule for that one module, writes the gradient of each of its
parameters into ``param.grad`` and returns the gradient of its input. A
container such as :class:`~fastnn.nn.Sequential` calls the ``backward`` of its
children in reverse order. There is no autograd tape.

Gradients are **overwritten**, not accumulated: after ``backward`` each
``param.grad`` holds the gradient of the last forward/backward pair alone.
(PyTorch accumulates; fastnn does not, because a training step then needs no
zeroing pass and the kernels write straight into ``grad``.) ``zero_grad`` is
still there for code that expects it.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

#: Output/gradient buffers a layer keeps, keyed by input shape, at most this
#: many (a training loop sees two or three: the batch, the last short batch,
#: the evaluation batch); past it the cache starts afresh instead of hoarding.
MAX_CACHED_SHAPES = 8


def remember(cache: dict, key, value):
    """Store ``value`` under ``key`` in a layer's buffer cache, bounded by MAX_CACHED_SHAPES."""
    if len(cache) >= MAX_CACHED_SHAPES and key not in cache:
        cache.clear()
    cache[key] = value
    return value


__all__ = ["Parameter", "Module", "register_module", "get_module_class", "registered_modules"]

#: Layer classes that :func:`fastnn.load` may rebuild, by name. A saved file
#: names its layers; loading looks the names up here and nowhere else, so a
#: file can never make fastnn import or run arbitrary code.
MODULE_REGISTRY: "dict[str, type]" = {}


def register_module(cls=None, *, name=None):
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
    ...     def backward(self, grad_out):
    ...         return grad_out * self.factor
    ...     def get_config(self):
    ...         return {"factor": self.factor}

    The class must implement :meth:`Module.get_config` (JSON-serialisable
    constructor keyword arguments). A container whose children are not
    rebuilt by its constructor overrides :meth:`Module.from_config`.
    """

    def deco(c):
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


def get_module_class(name: str) -> type:
    """The registered class called ``name`` (``KeyError`` with the known names if absent)."""
    try:
        return MODULE_REGISTRY[name]
    except KeyError:
        raise KeyError(f"no layer named {name!r} is registered; known: {sorted(MODULE_REGISTRY)}") from None


def registered_modules() -> "dict[str, type]":
    """A copy of the registry: saved-file name -> class."""
    return dict(MODULE_REGISTRY)


class Parameter:
    """A trainable array and its gradient.

    Parameters
    ----------
    data : ndarray
        The values; kept C-contiguous (kernels update it in place).

    Attributes
    ----------
    data : ndarray
    grad : ndarray of the same shape and dtype, written by ``backward``
    relocatable : bool
        True when the owning layer reads ``param.data`` and ``param.grad``
        afresh at every call (never keeps references to them). An optimizer
        may then move consecutive relocatable parameters into one contiguous
        buffer (``data`` and ``grad`` become views into it) and update them
        all with a single kernel call. fastnn's own layers set it; set it on
        your own layers' parameters when they follow that rule.
    """

    __slots__ = ("data", "grad", "relocatable")

    def __init__(self, data, relocatable=False):
        data = np.ascontiguousarray(data)
        if data.dtype not in (np.float32, np.float64):
            raise TypeError(f"Parameter data must be float32 or float64, got {data.dtype}")
        self.data = data
        self.grad = np.zeros_like(data)
        self.relocatable = bool(relocatable)

    @property
    def shape(self):
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    def __repr__(self) -> str:
        return f"Parameter(shape={self.data.shape}, dtype={self.data.dtype})"


class Module:
    """Base class of layers and containers.

    Subclasses set parameters and child modules as attributes (they are
    registered in assignment order, which fixes ``state_dict`` order), and
    implement :meth:`forward` and :meth:`backward`.

    To be saved by :func:`fastnn.save`, a module also implements
    :meth:`get_config`, returning the keyword arguments that rebuild it.
    """

    training: bool

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    def __setattr__(self, name, value):
        params = self.__dict__.get("_parameters")
        if params is None:
            raise AttributeError("Module.__init__() must be called before assigning attributes")
        if isinstance(value, Parameter):
            self._modules.pop(name, None)
            params[name] = value
        elif isinstance(value, Module):
            params.pop(name, None)
            self._modules[name] = value
        elif name in params and value is None:
            del params[name]
        object.__setattr__(self, name, value)

    # -- computation --------------------------------------------------
    def forward(self, x):
        """Compute the output for input ``x`` and keep what backward needs."""
        raise NotImplementedError(f"{type(self).__name__} does not implement forward")

    def backward(self, grad_out):
        """Given dL/d(output), fill each ``param.grad`` and return dL/d(input)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement backward")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # -- parameters ---------------------------------------------------
    def named_parameters(self, prefix: str = ""):
        """Yield ``(name, Parameter)`` pairs, children's names dotted as in PyTorch."""
        for name, p in self._parameters.items():
            yield prefix + name, p
        for name, child in self._modules.items():
            yield from child.named_parameters(prefix + name + ".")

    def parameters(self):
        """List of all parameters of this module and its children."""
        return [p for _, p in self.named_parameters()]

    def children(self):
        return list(self._modules.values())

    def modules(self):
        yield self
        for child in self._modules.values():
            yield from child.modules()

    def zero_grad(self) -> None:
        """Set every parameter's gradient to zero."""
        for p in self.parameters():
            p.grad.fill(0)

    def train(self, mode: bool = True):
        """Set training mode (``mode=True``) or evaluation mode, recursively."""
        for m in self.modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self):
        """Set evaluation mode (same as ``train(False)``)."""
        return self.train(False)

    # -- state --------------------------------------------------------
    def state_dict(self) -> "OrderedDict[str, np.ndarray]":
        """Copies of all parameters, keyed as PyTorch keys the same module."""
        return OrderedDict((name, p.data.copy()) for name, p in self.named_parameters())

    def load_state_dict(self, state_dict, strict: bool = True) -> None:
        """Copy values into the parameters, checking names and shapes.

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
        """
        own = dict(self.named_parameters())
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        if strict and (missing or unexpected):
            raise KeyError(f"state_dict mismatch: missing keys {missing}, unexpected keys {unexpected}")
        staged = {}
        for name, p in own.items():
            if name not in state_dict:
                continue
            value = np.asarray(state_dict[name])
            if value.shape != p.data.shape:
                raise ValueError(f"{name}: expected shape {p.data.shape}, got {value.shape}")
            if value.dtype.kind != "f":
                raise TypeError(f"{name}: expected floating-point values, got dtype {value.dtype}")
            staged[name] = value
        for name, value in staged.items():  # all checked: now copy, in place
            np.copyto(own[name].data, value, casting="same_kind")

    def get_config(self) -> dict:
        """Constructor arguments that rebuild this module (used by ``fastnn.save``)."""
        raise NotImplementedError(f"{type(self).__name__} cannot be saved: it does not implement get_config()")

    @classmethod
    def from_config(cls, config: dict, children: "dict[str, Module]"):
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
    def parameters_from_config(cls, config: dict, children=()):
        """The parameters :meth:`from_config` would create, without creating them.

        Returns a list of ``(name, shape, dtype name)`` for this module's own
        parameters (not its children's), in the order the module registers
        them, after checking ``config`` and the child names ``children`` as
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
