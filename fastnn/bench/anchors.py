"""The same workloads in PyTorch (CPU, eager) and scikit-learn, as reference rows.

PyTorch runs every case it has an equivalent for, with the thread count of
the run (``torch.set_num_threads``), the same shapes and float32, and a
realistic training step: forward, loss, ``backward()``, ``optimizer.step()``,
``zero_grad()``. scikit-learn runs the MLP steps (W3, W4) through
``MLPClassifier.partial_fit`` (solver "sgd", same batch size, learning rate
and momentum), timed per batch. A library that is not
installed is reported as absent, never as an error.
"""

from __future__ import annotations

import importlib

import numpy as np

from .workloads import DTYPE, Case, _norm_layer, _randn, _rng, hidden_widths, mlp_layers

__all__ = ["ANCHORS", "anchor_status", "build_anchor", "set_threads"]

#: Anchor row names, in report order.
ANCHORS = ("torch", "sklearn")
_MODULES = {"torch": "torch", "sklearn": "sklearn"}


def anchor_status() -> dict[str, str]:
    """For each anchor library, its version, or why it is absent."""
    out = {}
    for name, mod in _MODULES.items():
        try:
            out[name] = importlib.import_module(mod).__version__
        except Exception as exc:  # ImportError, or a broken install
            out[name] = f"not installed ({type(exc).__name__})"
    return out


def available(name: str) -> bool:
    try:
        importlib.import_module(_MODULES[name])
    except Exception:
        return False
    return True


def set_threads(n: int) -> None:
    """Give PyTorch the run's thread count (scikit-learn uses BLAS, set by fastnn)."""
    if available("torch"):
        import torch

        torch.set_num_threads(int(n))


def build_anchor(name: str, case: Case):
    """The step of ``case`` in anchor library ``name``, or None when it has no equivalent."""
    builder = (_TORCH if name == "torch" else _SKLEARN).get(case.kind)
    if builder is None and name == "sklearn" and case.kind.startswith("skl_"):
        from .sklearn_section import ANCHOR_BUILDERS

        builder = ANCHOR_BUILDERS[case.kind]
    return None if builder is None else builder(case.params)


# -- PyTorch -------------------------------------------------------------------


def _t(arr):
    import torch

    return torch.from_numpy(np.ascontiguousarray(arr))


def _torch_matmul(p):
    import torch

    rng = _rng()
    a, b = _t(_randn(rng, p["m"], p["k"])), _t(_randn(rng, p["k"], p["n"]))
    c = torch.empty((p["m"], p["n"]), dtype=torch.float32)
    return lambda: torch.matmul(a, b, out=c)


def _torch_act_forward(p):
    import torch

    x = _t(_randn(_rng(), p["n"]))
    y = torch.empty_like(x)
    fn = {"relu": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh}[p["act"]]
    if p["act"] == "relu":
        return lambda: torch.clamp_min(x, 0.0, out=y)
    return lambda: fn(x, out=y)


def _torch_act_backward(p):
    """The kernels autograd itself runs for these activations (gradient from the output)."""
    import torch

    rng = _rng()
    x = _t(_randn(rng, p["n"]))
    g = _t(_randn(rng, p["n"]))
    aten = torch.ops.aten
    act = p["act"]
    y = {"relu": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh}[act](x)
    out = torch.empty_like(x)
    if act == "relu":
        return lambda: aten.threshold_backward.grad_input(g, y, 0.0, grad_input=out)
    fn = aten.sigmoid_backward.grad_input if act == "sigmoid" else aten.tanh_backward.grad_input
    return lambda: fn(g, y, grad_input=out)


def _torch_train(model, loss_fn, opt, x, y):
    def step():
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        return loss

    return step


def _torch_mlp(p):
    import torch

    torch.manual_seed(0)
    rng = _rng()
    model = torch.nn.Sequential(*mlp_layers(torch.nn, p["i"], p["h"], p["o"]))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = _t(_randn(rng, p["b"], p["i"]))
    y = torch.from_numpy(rng.integers(0, p["o"], p["b"]))
    return _torch_train(model, torch.nn.CrossEntropyLoss(), opt, x, y)


def _torch_cnn(p, batch_norm=False):
    import torch

    from .workloads import cnn_model

    torch.manual_seed(0)
    rng = _rng()
    model = cnn_model(torch.nn, batch_norm)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = _t(_randn(rng, p["b"], 1, 28, 28))
    y = torch.from_numpy(rng.integers(0, 10, p["b"]))
    return _torch_train(model, torch.nn.CrossEntropyLoss(), opt, x, y)


def _torch_recurrent(p, cls, with_opt):
    import torch

    torch.manual_seed(0)
    rng = _rng()
    layer = cls(p["i"], p["h"])
    opt = torch.optim.SGD(layer.parameters(), lr=0.01, momentum=0.9) if with_opt else None
    x = _t(_randn(rng, p["t"], p["b"], p["i"]))
    target = _t(0.5 * _randn(rng, p["t"], p["b"], p["h"]))
    mse = torch.nn.functional.mse_loss

    def step():
        out, _ = layer(x)
        loss = mse(out, target)
        loss.backward()
        if opt is not None:
            opt.step()
            opt.zero_grad()
        else:
            layer.zero_grad()
        return loss

    return step


def _torch_bilstm(p):
    import torch

    return _torch_recurrent(
        dict(p, h=2 * p["h"]), lambda i, h: torch.nn.LSTM(i, h // 2, num_layers=2, bidirectional=True), False
    )


def _torch_norm(kind):
    def build(p):
        import torch

        rng = _rng()
        layer, shape = _norm_layer(torch.nn, kind, p)
        x = _t(_randn(rng, *shape)).requires_grad_(True)
        g = _t(_randn(rng, *shape))

        def step():
            y = layer(x)
            grads = torch.autograd.grad(y, [x, *layer.parameters()], g)
            return grads[0]

        return step

    return build


def _torch_rnn(p):
    import torch

    return _torch_recurrent(p, torch.nn.RNN, True)


def _torch_lstm(p):
    import torch

    return _torch_recurrent(p, torch.nn.LSTM, False)


def _torch_conv3x3(p):
    import torch

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(p["c"], p["o"], 3, padding=1)
    x = _t(_randn(_rng(), p["b"], p["c"], p["hw"], p["hw"]))

    def step():
        with torch.no_grad():
            return conv(x)

    return step


def _torch_conv3x3_train(p):
    import torch

    torch.manual_seed(0)
    rng = _rng()
    conv = torch.nn.Conv2d(p["c"], p["o"], 3, padding=1)
    x = _t(_randn(rng, p["b"], p["c"], p["hw"], p["hw"])).requires_grad_(True)
    g = _t(_randn(rng, p["b"], p["o"], p["hw"], p["hw"]))

    def step():
        conv.zero_grad()
        x.grad = None
        conv(x).backward(g)
        return x.grad

    return step


def _torch_ce(p):
    import torch

    rng = _rng()
    logits = _t(_randn(rng, p["b"], p["c"])).requires_grad_(True)
    labels = torch.from_numpy(rng.integers(0, p["c"], p["b"]))
    ce = torch.nn.functional.cross_entropy

    def step():
        return torch.autograd.grad(ce(logits, labels), logits)

    return step


def _torch_adam(p):
    import torch

    rng = _rng()
    param = torch.nn.Parameter(_t(_randn(rng, p["n"])))
    param.grad = _t(0.01 * _randn(rng, p["n"]))
    opt = torch.optim.Adam([param], lr=1e-3)
    return opt.step


_TORCH = {
    "matmul": _torch_matmul,
    "gemm": _torch_matmul,
    "act_forward": _torch_act_forward,
    "act_backward": _torch_act_backward,
    "mlp": _torch_mlp,
    "cnn": _torch_cnn,
    "rnn": _torch_rnn,
    "lstm": _torch_lstm,
    "cnn_bn": lambda p: _torch_cnn(p, batch_norm=True),
    "bilstm": _torch_bilstm,
    "batchnorm": _torch_norm("batch"),
    "batchnorm2d": _torch_norm("batch2d"),
    "layernorm": _torch_norm("layer"),
    "conv3x3": _torch_conv3x3,
    "conv3x3_train": _torch_conv3x3_train,
    "ce": _torch_ce,
    "adam": _torch_adam,
}


# -- scikit-learn ----------------------------------------------------------------

#: Batches per ``partial_fit`` call: one call validates its input once and
#: then takes one SGD step per batch, as ``fit`` does; the time is reported per
#: batch. (A call per batch would time sklearn's input checks, not its training.)
SKLEARN_BATCHES = 16


def _sklearn_mlp(p):
    import warnings

    from sklearn.neural_network import MLPClassifier

    rng = _rng()
    nb = SKLEARN_BATCHES
    x = _randn(rng, nb * p["b"], p["i"])
    y = rng.integers(0, p["o"], nb * p["b"])
    classes = np.arange(p["o"])
    clf = MLPClassifier(
        hidden_layer_sizes=hidden_widths(p["h"]),
        activation="relu",
        solver="sgd",
        alpha=0.0,
        batch_size=p["b"],
        learning_rate_init=0.01,
        momentum=0.9,
        nesterovs_momentum=False,
        random_state=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.partial_fit(x, y, classes=classes)

    def step():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            clf.partial_fit(x, y)

    step.steps_per_call = nb
    step.model = clf
    assert x.dtype == DTYPE
    return step


_SKLEARN = {"mlp": _sklearn_mlp}
