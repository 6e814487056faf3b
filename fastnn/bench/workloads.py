"""The reference workloads of the benchmark (see WORKLOADS.md), as data.

A :class:`Workload` (``W1`` ... ``W6``, ``LSTM``, ``CONV``, ``KERN``, ``GEMM``)
groups :class:`Case` objects; a case is one thing that gets timed (``matmul
n=256``, ``sigmoid backward``, ``train step`` ...). For each fastnn backend a
case builds a *step*: a zero-argument callable doing one unit of work on
buffers made once, as a real training loop would (same model, same
optimizer, same data every call). The PyTorch and scikit-learn versions of
the same cases live in :mod:`fastnn.bench.anchors`.

Layers that are not part of this build (a branch not merged yet, say) do not
break the benchmark: :func:`missing` lists what a workload needs and does not
find, and the report shows the workload as "not available (missing: ...)".
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Case", "Workload", "WORKLOADS", "get_workloads", "missing", "resolve", "build_step", "gemm_shapes_flops"]

DTYPE = np.float32
SEED = 1234


@dataclass
class Case:
    """One timed unit of work of a workload.

    Attributes
    ----------
    workload : str
        Id of the workload it belongs to (``"W1"``).
    name : str
        Short name inside the workload (``"matmul n=256"``).
    kind : str
        What is built: ``"matmul"``, ``"act_forward"``, ``"act_backward"``,
        ``"mlp"``, ``"cnn"``, ``"rnn"``, ``"lstm"``, ``"conv3x3"``, ``"ce"``,
        ``"adam"``, ``"gemm"``.
    params : dict
        Shapes and settings for the builders.
    flops : float or None
        Floating-point operations per call (for a GFLOP/s limit).
    bytes : float or None
        Bytes read plus written per call (for a bandwidth limit).
    copy_bytes : float or None
        Size of the batch whose copy is the case's limit (``"copy_time"``).
    gemm_shapes : list of (M, K, N), optional
        The matrix products inside one step (for a GEMM-only time limit).
    """

    workload: str
    name: str
    kind: str
    params: dict
    flops: float | None = None
    bytes: float | None = None
    copy_bytes: float | None = None
    gemm_shapes: list = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.workload} {self.name}"


@dataclass
class Workload:
    """A group of cases reported in one table.

    Attributes
    ----------
    id : str
    title : str
    limit : {"gemm", "copy", "gemm_time", "copy_time", None}
        The machine limit each figure is compared with: peak BLAS GEMM
        GFLOP/s, memory-copy GB/s, the time the step's matrix products
        alone take with BLAS, or the time of one copy of the case's batch.
    requires : tuple of str
        Dotted names (``"fastnn.nn.Conv2d"``) that must exist.
    cases : callable
        ``cases(quick, tiny) -> list of Case``.
    """

    id: str
    title: str
    limit: str | None
    requires: tuple
    cases: Callable[[bool, bool], list]
    note: str = ""


# -- helpers -----------------------------------------------------------------


def resolve(dotted: str):
    """Import ``"pkg.mod.attr"`` and return the attribute, or raise LookupError."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        modname = ".".join(parts[:i])
        try:
            obj = importlib.import_module(modname)
        except ImportError:
            continue
        for attr in parts[i:]:
            if not hasattr(obj, attr):
                raise LookupError(dotted)
            obj = getattr(obj, attr)
        return obj
    raise LookupError(dotted)


def missing(workload: Workload) -> list[str]:
    """The names a workload needs that this build of fastnn lacks."""
    out = []
    for name in workload.requires:
        try:
            resolve(name)
        except LookupError:
            out.append(name)
    return out


def _rng():
    return np.random.default_rng(SEED)


def _randn(rng, *shape):
    return rng.standard_normal(shape, dtype=np.float64).astype(DTYPE)


def gemm_shapes_flops(shapes) -> float:
    return float(sum(2 * m * k * n for m, k, n in shapes))


def hidden_widths(h) -> tuple:
    """An MLP case's hidden widths: ``h`` is one width or a sequence of them."""
    return tuple(h) if isinstance(h, (tuple, list)) else (h,)


def _mlp_gemms(i, h, o, b):
    """Matrix products of one train step of Linear(i,h)-ReLU-...-Linear(h,o), batch b.

    ``h`` is one hidden width or a sequence of them. Forward: one (b, in, out)
    product per layer; backward, last layer first: dW (out, b, in) and dx
    (b, out, in), except the first layer's dx (its input needs no gradient).
    """
    widths = (i, *hidden_widths(h), o)
    pairs = list(zip(widths[:-1], widths[1:]))
    shapes = [(b, n_in, n_out) for n_in, n_out in pairs]
    for layer, (n_in, n_out) in reversed(list(enumerate(pairs))):
        shapes.append((n_out, b, n_in))
        if layer:
            shapes.append((b, n_out, n_in))
    return shapes


# -- the workloads -----------------------------------------------------------


def _w1(quick, tiny):
    sizes = [(64, 64, 64)] if tiny else [(64, 64, 64), (256, 256, 256), (1024, 1024, 1024)]
    sizes = sizes + [(32, 64, 128)]
    cases = []
    for m, k, n in sizes:
        name = f"matmul n={m}" if m == k == n else f"matmul {m}x{k}x{n}"
        cases.append(Case("W1", name, "matmul", dict(m=m, k=k, n=n), flops=2.0 * m * k * n))
    return cases


def _w2(quick, tiny):
    n = 1 << 16 if tiny else 1 << 22
    cases = []
    for act in ("relu", "sigmoid", "tanh"):
        cases.append(Case("W2", f"{act} forward", "act_forward", dict(act=act, n=n), bytes=2.0 * 4 * n))
        cases.append(Case("W2", f"{act} backward", "act_backward", dict(act=act, n=n), bytes=3.0 * 4 * n))
    return cases


def _mlp(wid, i, h, o, b):
    def cases(quick, tiny):
        shapes = _mlp_gemms(i, h, o, b)
        return [
            Case(
                wid,
                f"train step {'-'.join(str(w) for w in (i, *hidden_widths(h), o))} B={b}",
                "mlp",
                dict(i=i, h=h, o=o, b=b),
                flops=gemm_shapes_flops(shapes),
                gemm_shapes=shapes,
            )
        ]

    return cases


def _w5(quick, tiny):
    b = 8 if tiny else 64
    return [Case("W5", f"CNN train step B={b}", "cnn", dict(b=b))]


def _w6(quick, tiny):
    t, i, h, b = (10, 8, 16, 4) if tiny else (50, 8, 64, 32)
    return [Case("W6", f"tanh RNN T={t} I={i} H={h} B={b} fwd+BPTT", "rnn", dict(t=t, i=i, h=h, b=b))]


def _lstm(quick, tiny):
    t, i, h, b = (5, 8, 16, 4) if tiny else (100, 32, 128, 64)
    return [Case("LSTM", f"T={t} I={i} H={h} B={b} fwd+bwd", "lstm", dict(t=t, i=i, h=h, b=b))]


def _layers(quick, tiny):
    b = 8 if tiny else 64
    t, i, h, bl = (5, 8, 16, 4) if tiny else (100, 32, 128, 64)
    return [
        Case("LAYERS", f"CNN+BatchNorm2d+Dropout train step B={b}", "cnn_bn", dict(b=b)),
        Case(
            "LAYERS",
            f"2-layer bidirectional LSTM T={t} I={i} H={h} B={bl} fwd+bwd",
            "bilstm",
            dict(t=t, i=i, h=h, b=bl),
        ),
    ]


def _norm(quick, tiny):
    m, k = (32, 128) if tiny else (256, 1024)
    n, c, hw = (4, 8, 4) if tiny else (32, 64, 16)
    # the limit: one np.copyto of the float32 batch into a preallocated array, as the layers run in a
    # workspace (outputs reused); fwd+bwd moves at least 2.5 such copies (read x, write y; read g, x,
    # write dL/dx), so 40 % "of limit" is the bandwidth bound of a step and 50 % the "2x a copy"
    nbytes = 4.0 * m * k
    return [
        Case("NORM", f"BatchNorm1d fwd+bwd {m}x{k}", "batchnorm", dict(m=m, k=k), copy_bytes=nbytes),
        Case(
            "NORM",
            f"BatchNorm2d fwd+bwd {n}x{c}x{hw}x{hw}",
            "batchnorm2d",
            dict(m=n, k=c, hw=hw),
            copy_bytes=4.0 * n * c * hw * hw,
        ),
        Case("NORM", f"LayerNorm fwd+bwd {m}x{k}", "layernorm", dict(m=m, k=k), copy_bytes=nbytes),
    ]


def _conv(quick, tiny):
    b, c, o, hw = (1, 8, 8, 16) if tiny else (8, 64, 64, 56)
    flops = 2.0 * b * o * c * 9 * hw * hw
    return [
        Case("CONV", f"conv3x3 {c}->{o} {hw}x{hw} B={b} forward", "conv3x3", dict(b=b, c=c, o=o, hw=hw), flops=flops)
    ]


def _mid(quick, tiny):
    """Mid-sized networks at 2 threads: a wide MLP and a 64-channel convolution trained."""
    i, h, o, b = (64, (128, 128), 10, 32) if tiny else (784, (1024, 1024), 10, 256)
    cb, c, co, hw = (1, 8, 8, 16) if tiny else (8, 64, 64, 56)
    shapes = _mlp_gemms(i, h, o, b)
    # forward, weight gradient and input gradient: three products of the same size
    conv_flops = 3 * 2.0 * cb * co * c * 9 * hw * hw
    return [
        Case(
            "MID",
            f"train step {'-'.join(str(w) for w in (i, *h, o))} B={b}",
            "mlp",
            dict(i=i, h=h, o=o, b=b),
            flops=gemm_shapes_flops(shapes),
            gemm_shapes=shapes,
        ),
        Case(
            "MID",
            f"conv3x3 {c}->{co} {hw}x{hw} B={cb} fwd+bwd",
            "conv3x3_train",
            dict(b=cb, c=c, o=co, hw=hw),
            flops=conv_flops,
        ),
    ]


def _kern(quick, tiny):
    b, c = (32, 100) if tiny else (256, 1000)
    n = 1 << 14 if tiny else 1 << 20
    return [
        # logits read twice (max/exp pass, gradient pass), gradient written once
        Case("KERN", f"softmax-CE {b}x{c}", "ce", dict(b=b, c=c), bytes=3.0 * 4 * b * c),
        # Adam reads param, grad, m, v and writes param, m, v
        Case(
            "KERN",
            f"Adam {n / (1 << 20):g}M params" if n >= 1 << 20 else f"Adam {n} params",
            "adam",
            dict(n=n),
            bytes=7.0 * 4 * n,
        ),
    ]


def _gemm(quick, tiny):
    if tiny:
        sizes = [32, 64]
    elif quick:
        sizes = [64, 256, 1024]
    else:
        sizes = [32, 64, 128, 256, 512, 1024]
    return [Case("GEMM", f"gemm n={n}", "gemm", dict(m=n, k=n, n=n), flops=2.0 * n**3) for n in sizes]


_TRAIN = (
    "fastnn.nn.Sequential",
    "fastnn.nn.Linear",
    "fastnn.nn.ReLU",
    "fastnn.nn.CrossEntropyLoss",
    "fastnn.optim.SGD",
)

WORKLOADS: list[Workload] = [
    Workload("W1", "matrix multiply C = A·B (fastnn.ops.matmul)", "gemm", ("fastnn.ops.matmul",), _w1),
    Workload(
        "W2",
        "activations, forward and backward, 4M elements",
        "copy",
        (
            "fastnn.ops.relu",
            "fastnn.ops.relu_backward",
            "fastnn.ops.sigmoid",
            "fastnn.ops.sigmoid_backward",
            "fastnn.ops.tanh",
            "fastnn.ops.tanh_backward",
        ),
        _w2,
    ),
    Workload(
        "W3",
        "MLP train step 64-128-10, ReLU, softmax CE, SGD momentum, batch 32",
        "gemm_time",
        _TRAIN,
        _mlp("W3", 64, 128, 10, 32),
    ),
    Workload(
        "W4",
        "MLP train step 784-256-10, ReLU, softmax CE, SGD momentum, batch 128",
        "gemm_time",
        _TRAIN,
        _mlp("W4", 784, 256, 10, 128),
    ),
    Workload(
        "W5",
        "CNN train step 1x28x28, conv8-pool-conv16-pool-linear, batch 64",
        None,
        _TRAIN + ("fastnn.nn.Conv2d", "fastnn.nn.MaxPool2d", "fastnn.nn.Flatten"),
        _w5,
    ),
    Workload(
        "W6",
        "tanh RNN train step (forward + BPTT, MSE, SGD)",
        None,
        ("fastnn.nn.RNN", "fastnn.optim.SGD", "fastnn.ops.mse_loss"),
        _w6,
    ),
    Workload(
        "LSTM", "LSTM forward + backward (MSE on the outputs)", None, ("fastnn.nn.LSTM", "fastnn.ops.mse_loss"), _lstm
    ),
    Workload("CONV", "3x3 convolution forward, padding 1", "gemm", ("fastnn.nn.Conv2d",), _conv),
    Workload(
        "KERN",
        "loss and optimizer kernels",
        "copy",
        ("fastnn.ops.softmax_cross_entropy", "fastnn.ops.adam_update"),
        _kern,
    ),
    Workload(
        "GEMM",
        "hand-written GEMM GFLOP/s vs size (numpy row: BLAS)",
        "gemm",
        ("fastnn.gemm.set_gemm", "fastnn.gemm.get_gemm"),
        _gemm,
        note="compiled backends forced to their own GEMM with fastnn.set_gemm('own')",
    ),
]


#: Workloads run only when asked for by id (``fastnn bench --workloads SKL,LAYERS,NORM,MID``; ``--sklearn``).
OPTIONAL_WORKLOADS = ("SKL", "LAYERS", "NORM", "MID")


def _optional():
    from .sklearn_section import WORKLOAD

    return [
        WORKLOAD,
        Workload(
            "LAYERS",
            "the newer layers in training: a W5 CNN with BatchNorm2d and Dropout, a deep bidirectional LSTM",
            None,
            ("fastnn.nn.BatchNorm2d", "fastnn.nn.Dropout", "fastnn.nn.LSTM"),
            _layers,
        ),
        Workload(
            "NORM",
            "batch and layer normalisation, forward and backward, float32",
            "copy_time",
            ("fastnn.nn.BatchNorm1d", "fastnn.nn.LayerNorm"),
            _norm,
        ),
        Workload(
            "MID",
            "mid-sized networks: 784-1024-1024-10 MLP train step (batch 256), 3x3 conv 64->64 fwd+bwd",
            "gemm",
            _TRAIN + ("fastnn.nn.Conv2d",),
            _mid,
        ),
    ]


def get_workloads(ids=None) -> list[Workload]:
    """Workloads by id (case-insensitive), in the canonical order; the default ones when ``ids`` is None."""
    if not ids:
        return list(WORKLOADS)
    wanted = [i.strip().upper() for i in ids if i.strip()]
    every = list(WORKLOADS) + (_optional() if any(i in OPTIONAL_WORKLOADS for i in wanted) else [])
    known = {w.id: w for w in every}
    unknown = [i for i in wanted if i not in known]
    if unknown:
        raise ValueError(
            f"unknown workload(s) {', '.join(unknown)}; choose from "
            f"{', '.join(list(known) + [i for i in OPTIONAL_WORKLOADS if i not in known])}"
        )
    return [w for w in every if w.id in wanted]


# -- fastnn steps --------------------------------------------------------------


def _fastnn():
    import fastnn

    return fastnn


def _optim():
    return importlib.import_module("fastnn.optim")


def _first(out):
    """Layers may return ``output`` or ``(output, state)``: take the output."""
    return out[0] if isinstance(out, tuple) else out


def _step_matmul(p):
    ops = _fastnn().ops
    rng = _rng()
    a, b = _randn(rng, p["m"], p["k"]), _randn(rng, p["k"], p["n"])
    c = np.empty((p["m"], p["n"]), DTYPE)
    return lambda: ops.matmul(a, b, out=c)


def _step_act_forward(p):
    ops = _fastnn().ops
    rng = _rng()
    x = _randn(rng, p["n"])
    y = np.empty_like(x)
    fn = getattr(ops, p["act"])
    return lambda: fn(x, out=y)


def _step_act_backward(p):
    ops = _fastnn().ops
    rng = _rng()
    x = _randn(rng, p["n"])
    y = getattr(ops, p["act"])(x)
    g = _randn(rng, p["n"])
    out = np.empty_like(x)
    fn = getattr(ops, p["act"] + "_backward")
    return lambda: fn(g, y, out=out)


def _train_step(model, loss_fn, opt, x, y):
    """Forward, loss, backward, update: what ``fastnn.fit`` runs per minibatch.

    Uses ``fastnn.train.make_train_step`` (the very step ``fit`` runs, with
    its workspace, skipping the input gradient of the first layer as PyTorch
    does for an input that needs no gradient) when this build has it.
    """
    try:
        from fastnn.train import make_train_step
    except ImportError:
        make_train_step = None
    if make_train_step is not None:
        inner = make_train_step(model, loss_fn, opt)
        if hasattr(loss_fn, "prepare_target"):
            y = loss_fn.prepare_target(y, x.dtype)
        return lambda: inner(x, y)[0]

    def step():
        logits = model(x)
        loss = loss_fn(logits, y)
        model.backward(loss_fn.backward())
        opt.step()
        return loss

    return step


def _step_mlp(p):
    fastnn = _fastnn()
    nn = fastnn.nn
    rng = _rng()
    model = nn.Sequential(*mlp_layers(nn, p["i"], p["h"], p["o"]))
    opt = _optim().SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = _randn(rng, p["b"], p["i"])
    y = rng.integers(0, p["o"], p["b"])
    return _train_step(model, nn.CrossEntropyLoss(), opt, x, y)


def mlp_layers(nn, i, h, o) -> list:
    """Linear-ReLU-...-Linear layers of an MLP case; ``nn`` is ``fastnn.nn`` or ``torch.nn``."""
    widths = (i, *hidden_widths(h), o)
    layers = []
    for n_in, n_out in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(n_in, n_out), nn.ReLU()]
    return layers[:-1]


def cnn_model(nn, batch_norm=False):
    """W5's CNN (LAYERS: with a BatchNorm2d after each conv and Dropout before the classifier).

    ``nn`` is ``fastnn.nn`` or ``torch.nn``: the two share these layers' names and arguments.
    """
    norm = (lambda c: [nn.BatchNorm2d(c)]) if batch_norm else (lambda c: [])
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        *norm(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        *norm(16),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        *([nn.Dropout(0.25)] if batch_norm else []),
        nn.Linear(16 * 7 * 7, 10),
    )


def _step_cnn(p, batch_norm=False):
    nn = _fastnn().nn
    rng = _rng()
    model = cnn_model(nn, batch_norm)
    opt = _optim().SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = _randn(rng, p["b"], 1, 28, 28)
    y = rng.integers(0, 10, p["b"])
    return _train_step(model, nn.CrossEntropyLoss(), opt, x, y)


def _step_rnn(p):
    fastnn = _fastnn()
    rnn = fastnn.nn.RNN(p["i"], p["h"])
    return _recurrent_step(fastnn, p, rnn, _optim().SGD(rnn.parameters(), lr=0.01, momentum=0.9))


def _step_lstm(p):
    fastnn = _fastnn()
    return _recurrent_step(fastnn, p, fastnn.nn.LSTM(p["i"], p["h"]))


def _recurrent_step(fastnn, p, layer, opt=None):
    """A training step of one recurrent ``layer`` on an MSE target (and an ``opt`` step, when given)."""
    rng = _rng()
    x = _randn(rng, p["t"], p["b"], p["i"])
    target = 0.5 * _randn(rng, p["t"], p["b"], p["h"])
    grad = np.empty_like(target)
    mse = fastnn.ops.mse_loss
    ws = _workspace(fastnn, layer)

    def step():
        with ws:  # buffers reused across steps, as in fit()
            out = _first(layer(x))
            loss, _ = mse(out, target, grad=grad)
            # the first layer: no dL/dx, as in fit() and as PyTorch does for an input needing no gradient
            layer.backward(grad, input_grad=False)
            if opt is not None:
                opt.step()
        return loss

    return step


def _workspace(fastnn, model):
    """The workspace a training loop owns (builds without workspaces reused layer buffers instead)."""
    import contextlib

    make = getattr(fastnn, "workspace", None)
    return make(model) if make is not None else contextlib.nullcontext()


def _step_bilstm(p):
    fastnn = _fastnn()
    layer = fastnn.nn.LSTM(p["i"], p["h"], num_layers=2, bidirectional=True)
    return _recurrent_step(fastnn, dict(p, h=2 * p["h"]), layer)


def _norm_layer(nn, kind, p):
    """A NORM case's layer (fastnn's or torch's ``nn``) and its input shape."""
    if kind == "batch2d":
        return nn.BatchNorm2d(p["k"]), (p["m"], p["k"], p["hw"], p["hw"])
    return (nn.BatchNorm1d(p["k"]) if kind == "batch" else nn.LayerNorm(p["k"])), (p["m"], p["k"])


def _step_norm(kind):
    def build(p):
        fastnn = _fastnn()
        rng = _rng()
        layer, shape = _norm_layer(fastnn.nn, kind, p)
        x = _randn(rng, *shape)
        g = _randn(rng, *shape)
        ws = _workspace(fastnn, layer)

        def step():
            with ws:
                y = layer(x)
                layer.backward(g)
            return y

        return step

    return build


def _step_conv3x3(p):
    nn = _fastnn().nn
    rng = _rng()
    conv = nn.Conv2d(p["c"], p["o"], 3, padding=1)
    x = _randn(rng, p["b"], p["c"], p["hw"], p["hw"])
    return lambda: conv(x)


def _step_conv3x3_train(p):
    nn = _fastnn().nn
    rng = _rng()
    conv = nn.Conv2d(p["c"], p["o"], 3, padding=1)
    x = _randn(rng, p["b"], p["c"], p["hw"], p["hw"])
    g = _randn(rng, p["b"], p["o"], p["hw"], p["hw"])

    def step():
        conv.zero_grad()
        conv(x)
        return conv.backward(g)

    return step


def _step_ce(p):
    ops = _fastnn().ops
    rng = _rng()
    logits = _randn(rng, p["b"], p["c"])
    labels = rng.integers(0, p["c"], p["b"]).astype(np.intp)
    grad = np.empty_like(logits)
    return lambda: ops.softmax_cross_entropy(logits, labels, grad=grad)


def _step_adam(p):
    ops = _fastnn().ops
    rng = _rng()
    param = _randn(rng, p["n"])
    grad = 0.01 * _randn(rng, p["n"])
    m = np.zeros_like(param)
    v = np.zeros_like(param)
    t = [0]

    def step():
        t[0] += 1
        ops.adam_update(param, grad, m, v, t[0], lr=1e-3)

    return step


def _step_gemm(p):
    return _step_matmul(p)


_BUILDERS = {
    "matmul": _step_matmul,
    "act_forward": _step_act_forward,
    "act_backward": _step_act_backward,
    "mlp": _step_mlp,
    "cnn": _step_cnn,
    "rnn": _step_rnn,
    "lstm": _step_lstm,
    "conv3x3": _step_conv3x3,
    "conv3x3_train": _step_conv3x3_train,
    "cnn_bn": lambda p: _step_cnn(p, batch_norm=True),
    "bilstm": _step_bilstm,
    "batchnorm": _step_norm("batch"),
    "batchnorm2d": _step_norm("batch2d"),
    "layernorm": _step_norm("layer"),
    "ce": _step_ce,
    "adam": _step_adam,
    "gemm": _step_gemm,
}


def build_step(case: Case) -> Callable[[], object]:
    """The fastnn step of ``case`` for the backend selected now.

    A step returns what it computed: the loss of a training step, the output
    of a kernel (so that tests can check the work is real).
    """
    builder = _BUILDERS.get(case.kind)
    if builder is None and case.kind.startswith("skl_"):
        from .sklearn_section import BUILDERS as builders

        builder = builders[case.kind]
    return builder(case.params)


def build_gemm_only(case: Case) -> Callable[[], object] | None:
    """A step doing only the case's matrix products, with NumPy's BLAS (the GEMM-only limit)."""
    if not case.gemm_shapes:
        return None
    rng = _rng()
    triples = []
    for m, k, n in case.gemm_shapes:
        triples.append((_randn(rng, m, k), _randn(rng, k, n), np.empty((m, n), DTYPE)))

    def step():
        for a, b, c in triples:
            np.matmul(a, b, out=c)

    step.products = triples
    return step
