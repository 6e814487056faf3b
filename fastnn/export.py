"""A way out to deployment: ONNX graphs and safetensors weights.

:func:`export_onnx` writes a model as a standard ONNX graph (opset 17), which
``onnxruntime`` and most inference engines run; :func:`export_safetensors`
writes its ``state_dict`` (PyTorch's keys) as a ``safetensors`` file, which
``safetensors.torch.load_file`` reads straight into a PyTorch model.

The graph is the model in evaluation mode: dropout is the identity, batch
normalisation uses its running statistics. Every layer of :mod:`fastnn.nn`
maps onto standard operators:

=========================================  =================================================
fastnn                                     ONNX
=========================================  =================================================
Linear                                     Gemm (transB)
ReLU, Sigmoid, Tanh, LeakyReLU, Softmax    Relu, Sigmoid, Tanh, LeakyRelu, Softmax
Conv1d, Conv2d                             Conv
MaxPool1d/2d, AvgPool1d/2d                 MaxPool, AveragePool (``count_include_pad``)
AdaptiveAvgPool2d, GlobalAvgPool2d         GlobalAveragePool, or AveragePool when the output
                                           size divides the input's (+ Flatten for global)
BatchNorm1d/2d                             BatchNormalization (running statistics)
LayerNorm                                  LayerNormalization
Embedding                                  Gather (the input: int64 indices)
Flatten                                    Flatten (``start_dim=1``, ``end_dim=-1``)
Dropout, Dropout2d                         nothing (evaluation mode)
RNN, LSTM, GRU                             RNN, LSTM, GRU per layer (gates reordered to
                                           ONNX's, GRU with ``linear_before_reset``), any
                                           ``num_layers``, ``bidirectional``, ``batch_first``
LastTimeStep                               Gather of the last time step
Sequential                                 its children, in order
=========================================  =================================================

Both need optional packages: ``pip install "fastnn-cpu[onnx]"`` (onnx; add
onnxruntime to run the graph) and ``safetensors``.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .grad_mode import inference_mode

__all__ = ["export_onnx", "export_safetensors", "OPSET"]

#: The ONNX operator set the graphs use (LayerNormalization needs 17).
OPSET = 17


def _need(module: str, extra: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(f"{module} is needed for this export: pip install {extra}") from None


class _Graph:
    """The nodes and initializers under construction, with unique names."""

    def __init__(self, onnx: Any, dtype: np.dtype[Any]) -> None:
        self.onnx, self.helper, self.dtype = onnx, onnx.helper, dtype
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self._n = 0

    def name(self, base: str) -> str:
        self._n += 1
        return f"{base}_{self._n}"

    def const(self, base: str, value: Any, dtype: Any = None) -> str:
        arr = np.array(value, dtype=dtype or self.dtype, order="C")  # (0-d stays 0-d: a scalar index)
        name = self.name(base)
        self.inits.append(self.onnx.numpy_helper.from_array(arr, name))
        return name

    def node(self, op: str, inputs: list[str], **attrs: Any) -> str:
        out = self.name(op.lower())
        self.nodes.append(self.helper.make_node(op, inputs, [out], name=self.name(op), **attrs))
        return out


def _pair(v: Any) -> list[int]:
    return [int(v), int(v)] if np.isscalar(v) else [int(a) for a in v]


def _pool_attrs(m: Any, dims: int) -> dict[str, Any]:
    k = _pair(m.kernel_size) if dims == 2 else [int(m.kernel_size)]
    s = _pair(m.stride) if dims == 2 else [int(m.stride)]
    p = _pair(m.padding) if dims == 2 else [int(m.padding)]
    return {"kernel_shape": k, "strides": s, "pads": p + p}


def _gate_blocks(w: np.ndarray, order: list[int], gates: int) -> np.ndarray:
    """Reorder the gate blocks (rows) of a PyTorch-layout weight or bias into ONNX's order."""
    h = w.shape[0] // gates
    return np.concatenate([w[i * h : (i + 1) * h] for i in order], axis=0)


#: PyTorch gate order -> ONNX's: LSTM (i, f, g, o) -> (i, o, f, c); GRU (r, z, n) -> (z, r, h).
_RECURRENT = {"RNN": ("RNN", 1, [0]), "LSTM": ("LSTM", 4, [0, 3, 1, 2]), "GRU": ("GRU", 3, [1, 0, 2])}


def _recurrent(g: _Graph, m: Any, x: str) -> str:
    op, gates, order = _RECURRENT[type(m).__name__]
    H = m.hidden_size
    dirs = 2 if m.bidirectional else 1
    seq = g.node("Transpose", [x], perm=[1, 0, 2]) if m.batch_first else x  # ONNX: (T, B, I)
    for layer in range(m.num_layers):
        suffixes = [f"l{layer}", f"l{layer}_reverse"][:dirs]
        W, R, B = [], [], []
        for sfx in suffixes:
            w_ih = np.asarray(getattr(m, f"weight_ih_{sfx}").data)
            w_hh = np.asarray(getattr(m, f"weight_hh_{sfx}").data)
            W.append(_gate_blocks(w_ih, order, gates))
            R.append(_gate_blocks(w_hh, order, gates))
            if m.bias:
                b_ih = np.asarray(getattr(m, f"bias_ih_{sfx}").data)
                b_hh = np.asarray(getattr(m, f"bias_hh_{sfx}").data)
                B.append(np.concatenate([_gate_blocks(b_ih, order, gates), _gate_blocks(b_hh, order, gates)]))
            else:
                B.append(np.zeros(2 * gates * H, g.dtype))
        attrs: dict[str, Any] = {"hidden_size": H, "direction": "bidirectional" if dirs == 2 else "forward"}
        if op == "RNN":
            act = "Relu" if m.nonlinearity == "relu" else "Tanh"
            attrs["activations"] = [act] * dirs
        if op == "GRU":
            attrs["linear_before_reset"] = 1  # PyTorch applies the reset gate after W_hn·h + b_hn
        y = g.node(op, [seq, g.const("W", W), g.const("R", R), g.const("B", B)], **attrs)
        # Y: (T, dirs, B, H) -> (T, B, dirs·H), the directions side by side as in fastnn and PyTorch
        y = g.node("Transpose", [y], perm=[0, 2, 1, 3])
        seq = g.node("Reshape", [y, g.const("shape", [0, 0, dirs * H], np.int64)])
    return g.node("Transpose", [seq], perm=[1, 0, 2]) if m.batch_first else seq


def _module(g: _Graph, m: Any, x: str, shape: tuple[int, ...]) -> str:
    """Append the nodes of module ``m`` applied to ``x`` (whose fastnn shape is ``shape``)."""
    from . import nn

    kind = type(m)
    name = kind.__name__
    if kind is nn.Sequential:
        for child in m:
            with inference_mode():
                out_shape = np.shape(child.forward(np.zeros(shape, _input_dtype(child, g.dtype))))
            x = _module(g, child, x, shape)
            shape = out_shape
        return x
    if kind is nn.Linear:
        inputs = [x, g.const("weight", m.weight.data)] + ([g.const("bias", m.bias.data)] if m.bias is not None else [])
        return g.node("Gemm", inputs, transB=1)
    simple = {nn.ReLU: "Relu", nn.Sigmoid: "Sigmoid", nn.Tanh: "Tanh"}
    if kind in simple:
        return g.node(simple[kind], [x])
    if kind is nn.LeakyReLU:
        return g.node("LeakyRelu", [x], alpha=float(m.negative_slope))
    if kind is nn.Softmax:
        return g.node("Softmax", [x], axis=int(m.dim))
    if kind in (nn.Dropout, nn.Dropout2d):
        return x
    if kind is nn.Flatten:
        if m.end_dim != -1 and m.end_dim != len(shape) - 1:
            raise NotImplementedError(f"Flatten(end_dim={m.end_dim}) has no ONNX Flatten: only end_dim=-1")
        return g.node("Flatten", [x], axis=int(m.start_dim) % len(shape))
    if kind in (nn.Conv2d, nn.Conv1d):
        two = kind is nn.Conv2d
        inputs = [x, g.const("weight", m.weight.data)] + ([g.const("bias", m.bias.data)] if m.bias is not None else [])
        p = _pair(m.padding) if two else [int(m.padding)]
        return g.node(
            "Conv",
            inputs,
            strides=_pair(m.stride) if two else [int(m.stride)],
            pads=p + p,
            dilations=_pair(m.dilation) if two else [int(m.dilation)],
        )
    if kind in (nn.MaxPool2d, nn.MaxPool1d):
        return g.node("MaxPool", [x], **_pool_attrs(m, 2 if kind is nn.MaxPool2d else 1))
    if kind in (nn.AvgPool2d, nn.AvgPool1d):
        attrs = _pool_attrs(m, 2 if kind is nn.AvgPool2d else 1)
        return g.node("AveragePool", [x], count_include_pad=int(bool(m.count_include_pad)), **attrs)
    if kind is nn.GlobalAvgPool2d:
        return g.node("Flatten", [g.node("GlobalAveragePool", [x])], axis=1)
    if kind is nn.AdaptiveAvgPool2d:
        H, W = shape[2], shape[3]
        Ho, Wo = (int(v) if v is not None else d for v, d in zip(m.output_size, (H, W)))
        if (Ho, Wo) == (1, 1):
            return g.node("GlobalAveragePool", [x])
        if H % Ho or W % Wo:
            raise NotImplementedError(
                f"AdaptiveAvgPool2d({(Ho, Wo)}) on {H}x{W} has overlapping windows: no standard ONNX operator"
            )
        k = [H // Ho, W // Wo]
        return g.node("AveragePool", [x], kernel_shape=k, strides=k)
    if kind in (nn.BatchNorm1d, nn.BatchNorm2d):
        if not m.track_running_stats:
            raise NotImplementedError(f"{name}(track_running_stats=False) normalises by the batch: no ONNX graph")
        C = m.num_features
        scale = m.weight.data if m.affine else np.ones(C)
        bias = m.bias.data if m.affine else np.zeros(C)
        inputs = [x, g.const("scale", scale), g.const("B", bias)]
        inputs += [g.const("mean", m.running_mean), g.const("var", m.running_var)]
        return g.node("BatchNormalization", inputs, epsilon=float(m.eps))
    if kind is nn.LayerNorm:
        ns = tuple(m.normalized_shape)
        scale = m.weight.data if m.weight is not None else np.ones(ns)
        inputs = [x, g.const("scale", scale)]
        if getattr(m, "bias", None) is not None:
            inputs.append(g.const("B", m.bias.data))
        return g.node("LayerNormalization", inputs, axis=-len(ns), epsilon=float(m.eps))
    if kind is nn.Embedding:
        return g.node("Gather", [g.const("weight", m.weight.data), x], axis=0)
    if name in _RECURRENT and isinstance(m, (nn.RNN, nn.LSTM, nn.GRU)):
        return _recurrent(g, m, x)
    if kind is nn.LastTimeStep:
        last = g.const("last", np.array(-1, np.int64), np.int64)
        return g.node("Gather", [x, last], axis=1 if m.batch_first else 0)
    raise NotImplementedError(f"no ONNX export for {name} (fastnn.export_onnx covers the layers of fastnn.nn)")


def _first(m: Any) -> Any:
    """The module that reads a model's input (the first leaf of nested Sequentials)."""
    from . import nn

    while type(m) is nn.Sequential and len(m):
        m = m[0]
    return m


def _input_dtype(m: Any, dtype: np.dtype[Any]) -> Any:
    """What the module takes: int64 indices for an embedding (also at the head of a Sequential)."""
    from . import nn

    return np.int64 if type(_first(m)) is nn.Embedding else dtype


def export_onnx(model: Any, path: str | os.PathLike[str], input_shape: tuple[int, ...]) -> str:
    """Write ``model`` as an ONNX graph (opset :data:`OPSET`), in evaluation mode.

    Parameters
    ----------
    model : fastnn.nn.Module
        Built from the layers of :mod:`fastnn.nn` (see the module
        documentation for the operators each becomes).
    path : str or os.PathLike
        The ``.onnx`` file to write.
    input_shape : tuple of int
        The shape of one input batch, e.g. ``(32, 64)`` or ``(8, 1, 28, 28)``;
        the first axis (the batch; for a sequence without ``batch_first``, the
        second) is named ``batch`` and left free in the graph.

    Returns
    -------
    str
        ``path``. The graph's input is ``"input"`` (the model's float dtype,
        or int64 for an embedding), its output ``"output"``.

    Raises
    ------
    NotImplementedError
        A module with no standard ONNX counterpart (a custom module,
        ``Flatten`` with ``end_dim`` other than -1, adaptive pooling with
        overlapping windows, batch norm without running statistics).
    ImportError
        Without the ``onnx`` package.
    """
    onnx = _need("onnx", '"fastnn-cpu[onnx]"')
    from .nn.module import Module

    if not isinstance(model, Module):
        raise TypeError(f"model must be a fastnn Module, got {type(model).__name__}")
    for sub in model.modules():
        if getattr(sub, "return_state", False):
            raise NotImplementedError(
                f"{type(sub).__name__}(return_state=True) returns a tuple: export the layer without it"
            )
    shape = tuple(int(d) for d in input_shape)
    params = list(model.parameters())
    dtype = params[0].data.dtype if params else np.dtype(np.float32)
    in_dtype = np.dtype(_input_dtype(model, dtype))
    with inference_mode():
        out = np.asarray(model.forward(np.zeros(shape, in_dtype)))
    g = _Graph(onnx, dtype)
    y = _module(g, model, "input", shape)
    g.nodes.append(onnx.helper.make_node("Identity", [y], ["output"], name="output"))
    batch_axis = _batch_axis(model)

    def value(name: str, dt: np.dtype[Any], dims: tuple[int, ...], axis: int) -> Any:
        named: list[Any] = list(dims)
        if len(named) > axis:
            named[axis] = "batch"
        return onnx.helper.make_tensor_value_info(name, onnx.helper.np_dtype_to_tensor_dtype(dt), named)

    graph = onnx.helper.make_graph(
        g.nodes,
        type(model).__name__,
        [value("input", in_dtype, shape, batch_axis)],
        [value("output", out.dtype, out.shape, 0 if out.ndim == 2 or batch_axis == 0 else batch_axis)],
        g.inits,
    )
    proto = onnx.helper.make_model(
        graph, opset_imports=[onnx.helper.make_opsetid("", OPSET)], producer_name="fastnn", ir_version=8
    )
    onnx.checker.check_model(proto)
    onnx.save(proto, os.fspath(path))
    return os.fspath(path)


def _batch_axis(model: Any) -> int:
    """Axis 1 for a model that starts with a recurrent layer reading (T, B, I), else 0."""
    from . import nn

    m = _first(model)
    if isinstance(m, (nn.RNN, nn.LSTM, nn.GRU)) and not m.batch_first:
        return 1
    return 0


def export_safetensors(model: Any, path: str | os.PathLike[str]) -> str:
    """Write ``model.state_dict()`` (PyTorch's keys, buffers included) as a safetensors file.

    ``safetensors.torch.load_file(path)`` gives a dict that
    ``torch_model.load_state_dict`` takes for the same architecture.

    Returns
    -------
    str
        ``path``.
    """
    st = _need("safetensors.numpy", "safetensors")
    tensors = {k: np.ascontiguousarray(v) for k, v in model.state_dict().items()}
    st.save_file(tensors, os.fspath(path), metadata={"producer": "fastnn"})
    return os.fspath(path)
