"""``fastnn warmup``: compile every Numba kernel into the disk cache ahead of use.

A fresh install has an empty cache: the first call of each kernel compiles
it (the first training step of a small MLP: a few seconds), and the fastest
versions of some kernels compile in the background afterwards (see
:mod:`._jit`). Running this once after installing makes every later process
load all of them from the cache instead.

What is compiled: every kernel through the public ops, for float32 and
float64, with the argument typings the layers and ops produce (elementwise
kernels on 1-D to 4-D arrays; with and without bias; every activation; the
products on the register tiles, packed and threaded; the recurrent kernels
with and without final-state gradients, on small and BLAS-sized steps); then
the parallel compilation of every kernel that has one, for every signature
its serial one got. Everything runs on small arrays, in the calling thread.
"""

from __future__ import annotations

import itertools
import time

import numpy as np

from . import _jit

__all__ = ["warmup"]

_SHAPES = ((7,), (3, 5), (2, 3, 4), (2, 3, 4, 5))


def _rand(rng, dt, *shape):
    return rng.standard_normal(shape).astype(dt)


def _activations(ops, rng, dt):
    for shape in _SHAPES:
        x = _rand(rng, dt, *shape)
        for name in ("relu", "sigmoid", "tanh"):
            y = getattr(ops, name)(x)
            getattr(ops, name + "_backward")(x, y)
        y = ops.leaky_relu(x, 0.1)
        ops.leaky_relu_backward(x, y, 0.1)
    x = _rand(rng, dt, 4, 6)
    ops.softmax_backward(x, ops.softmax(x))


def _losses(ops, rng, dt):
    for shape in _SHAPES:
        x, t = _rand(rng, dt, *shape), _rand(rng, dt, *shape)
        ops.mse_loss(x, t)
        ops.bce_with_logits(x, (t > 0).astype(dt))
    ops.softmax_cross_entropy(_rand(rng, dt, 4, 6), np.arange(4, dtype=np.intp))


def _optim(ops, rng, dt):
    for shape in _SHAPES:
        p, g = _rand(rng, dt, *shape), _rand(rng, dt, *shape)
        ops.sgd_update(p, g, np.zeros_like(p), momentum=0.9)
        ops.sgd_update(p, g)
        ops.adam_update(p, g, np.zeros_like(p), np.zeros_like(p), 1)


def _dense(ops, rng, dt):
    from fastnn import gemm

    from . import _gemm

    x = _rand(rng, dt, 32, 64)
    for out_features in (128, 10):  # own GEMM, and BLAS with the epilogue pass
        w, b = _rand(rng, dt, out_features, 64), _rand(rng, dt, out_features)
        for act in ("identity", "relu", "sigmoid", "tanh"):
            for bias in (b, None):
                y = ops.dense_forward(x, w, bias, act)
                ops.dense_backward(_rand(rng, dt, *y.shape), x, w, y, act, bias=bias is not None)
    for ta in (False, True):
        for tb in (False, True):
            a = _rand(rng, dt, 64, 32) if ta else _rand(rng, dt, 32, 64)
            bm = _rand(rng, dt, 48, 64) if tb else _rand(rng, dt, 64, 48)
            ops.matmul(a, bm, ta, tb)
    # the kernels of large products (packed, one slab per thread) and of K = 0
    a, bm, bias = _rand(rng, dt, 200, 200), _rand(rng, dt, 200, 200), _rand(rng, dt, 200)
    c = np.empty((200, 200), dt)
    for nthreads in (1, 2):
        _gemm.gemm_2d(a, bm, False, False, c, bias, True, 1, nthreads)
    _gemm.gemm_2d(
        np.empty((3, 0), dt),
        np.empty((0, 4), dt),
        False,
        False,
        np.empty((3, 4), dt),
        _gemm._NO_BIAS[np.dtype(dt)],
        False,
        0,
        1,
    )
    _gemm.bench_loop(a[:8, :8].copy(), bm[:8, :8].copy(), np.empty((8, 8), dt), 1, False, 1)
    with gemm.use_gemm("own"):
        ops.dense_forward(x, _rand(rng, dt, 16, 64), None, "relu")


def _conv(ops, rng, dt):
    from fastnn import gemm

    x = _rand(rng, dt, 2, 3, 8, 8)
    w, b = _rand(rng, dt, 4, 3, 3, 3), _rand(rng, dt, 4)
    for mode in ("auto", "blas"):
        with gemm.use_gemm(mode):
            for bias in (b, None):
                y = ops.conv2d_forward(x, w, bias, padding=1)
                for input_grad in (True, False):
                    ops.conv2d_backward(
                        _rand(rng, dt, *y.shape), x, w, padding=1, bias=bias is not None, input_grad=input_grad
                    )
    for args in ((2,), (3, 2, 1)):
        y, idx = ops.max_pool2d_forward(x, *args)
        ops.max_pool2d_backward(_rand(rng, dt, *y.shape), idx, x.shape)
        for cip in (True, False):
            y = ops.avg_pool2d_forward(x, *args, count_include_pad=cip)
            ops.avg_pool2d_backward(_rand(rng, dt, *y.shape), x.shape, *args, count_include_pad=cip)


def _recurrent(ops, rng, dt):
    # (T, B, I, H): all-steps products on the register tiles, and through BLAS
    for T, B, I, H in ((3, 2, 4, 5), (64, 64, 32, 64)):
        x = _rand(rng, dt, T, B, I)
        h0, c0 = _rand(rng, dt, B, H), _rand(rng, dt, B, H)
        g = _rand(rng, dt, T, B, H)
        ghn = _rand(rng, dt, B, H)
        for bias in (True, False):

            def params(gates, H=H, I=I, bias=bias):
                w_ih, w_hh = _rand(rng, dt, gates * H, I), _rand(rng, dt, gates * H, H)
                return (
                    w_ih,
                    w_hh,
                    (_rand(rng, dt, gates * H) if bias else None),
                    (_rand(rng, dt, gates * H) if bias else None),
                )

            for nl in ("tanh", "relu"):
                w_ih, w_hh, b_ih, b_hh = params(1)
                out = ops.rnn_forward(x, h0, w_ih, w_hh, b_ih, b_hh, nl)
                for grad_hn in (None, ghn):
                    ops.rnn_backward(g, x, h0, w_ih, w_hh, out, nl, grad_hn=grad_hn, bias=bias)
            w_ih, w_hh, b_ih, b_hh = params(4)
            out, cell, gates = ops.lstm_forward(x, h0, c0, w_ih, w_hh, b_ih, b_hh)
            for state in (None, ghn):
                ops.lstm_backward(g, x, h0, c0, w_ih, w_hh, out, cell, gates, grad_hn=state, grad_cn=state, bias=bias)
            w_ih, w_hh, b_ih, b_hh = params(3)
            out, gates, hidden_n = ops.gru_forward(x, h0, w_ih, w_hh, b_ih, b_hh)
            for grad_hn in (None, ghn):
                ops.gru_backward(g, x, h0, w_ih, w_hh, out, gates, hidden_n, grad_hn=grad_hn, bias=bias)


def _training_plans(ops, rng, dt):
    """The whole-step drivers of fit's compiled plans (fastnn.compiled): dense (every loss, SGD and Adam,
    networks of ReLU layers and of any activations; scikit-learn's convention), behind image stages and
    behind each recurrent cell; and predict."""
    from fastnn import compiled, nn, optim

    X = _rand(rng, dt, 12, 5)
    targets = {
        nn.CrossEntropyLoss: rng.integers(0, 3, 12).astype(np.intp),
        nn.MSELoss: _rand(rng, dt, 12, 3),
        nn.BCEWithLogitsLoss: (_rand(rng, dt, 12, 3) > 0).astype(dt),
    }
    for loss_type, y in targets.items():
        for make_opt, act in itertools.product((optim.SGD, optim.Adam), (nn.ReLU, nn.Tanh)):
            model = nn.Sequential(nn.Linear(5, 4, dtype=dt), act(), nn.Linear(4, 3, dtype=dt))
            opt = make_opt(model.parameters())
            plan = compiled.train_plan(model, loss_type(), opt)
            kind = loss_type.accuracy_kind
            pred = (
                None
                if kind is None
                else np.empty(12 if kind == "argmax" else 36, np.intp if kind == "argmax" else bool)
            )
            plan.run(X, y, np.arange(12, dtype=np.intp), 4, compiled.hyper_parameters(opt)[1], pred=pred)
            plan.predict(X, 5)
    # scikit-learn's convention (fastnn.sklearn's MLPs) has a dense driver of its own
    for act in ("relu", "tanh"):
        lins = [nn.Linear(5, 4, dtype=dt), nn.Linear(4, 3, dtype=dt)]
        specs = [ops.DenseSpec(lins[0].weight, lins[0].bias, act), ops.DenseSpec(lins[1].weight, lins[1].bias)]
        params = [p for lin in lins for p in (lin.weight, lin.bias)]
        update = ops.UpdatePlan(params, ("exp_avg", "exp_avg_sq"))
        plan = ops.TrainPlan(specs, "cross_entropy", "sklearn", update, "adam")
        plan.run(X, targets[nn.CrossEntropyLoss], np.arange(12, dtype=np.intp), 4, (1e-3, 0.9, 0.999, 1e-4, 1e-8, 0.0))
    # the image and recurrent fronts have drivers of their own (one per cell type), compiled once
    # whatever the loss and optimizer: one small model each
    fronts = (
        (
            lambda: nn.Sequential(
                nn.Conv2d(1, 2, 3, padding=1, dtype=dt), nn.ReLU(), nn.MaxPool2d(2), nn.AvgPool2d(2),
                nn.Conv2d(2, 2, 1, dtype=dt), nn.Tanh(), nn.Flatten(), nn.Linear(2, 3, dtype=dt),
            ),
            _rand(rng, dt, 12, 1, 4, 4),
        ),
    ) + tuple(
        (
            lambda cell=cell: nn.Sequential(
                cell(5, 4, batch_first=True, dtype=dt), nn.LastTimeStep(batch_first=True), nn.Linear(4, 3, dtype=dt)
            ),
            _rand(rng, dt, 12, 3, 5),
        )
        for cell in (nn.RNN, nn.LSTM, nn.GRU)
    )  # fmt: skip
    y = targets[nn.CrossEntropyLoss]
    for make_model, Xf in fronts:
        model = make_model()
        opt = optim.SGD(model.parameters())
        plan = compiled.train_plan(model, nn.CrossEntropyLoss(), opt)
        plan.run(Xf, y, np.arange(12, dtype=np.intp), 4, compiled.hyper_parameters(opt)[1], pred=np.empty(12, np.intp))
        plan.predict(Xf, 5)


FAMILIES = (
    ("activations", _activations),
    ("losses", _losses),
    ("optimizers", _optim),
    ("dense and GEMM", _dense),
    ("convolution and pooling", _conv),
    ("recurrent", _recurrent),
    ("training plans", _training_plans),
)


def warmup(dtypes=("float32", "float64"), log=None) -> dict:
    """Compile every kernel of the Numba backend for ``dtypes`` into the disk cache.

    Parameters
    ----------
    dtypes : sequence of str
        ``"float32"`` and/or ``"float64"``.
    log : callable, optional
        Called with a line of progress per step.

    Returns
    -------
    dict
        ``signatures`` (compiled or loaded), ``compiled`` (of those, compiled
        now rather than found in the cache), ``seconds`` and ``cpu_seconds``.
    """
    import fastnn
    from fastnn import ops

    log = log or (lambda line: None)
    t0, c0 = time.perf_counter(), time.process_time()
    rng = np.random.default_rng(0)
    with fastnn.use_backend("numba"), _jit.foreground(), np.errstate(all="ignore"):
        for dt in dtypes:
            dt = np.dtype(dt).type
            for name, run in FAMILIES:
                t = time.perf_counter()
                run(ops, rng, dt)
                log(f"{np.dtype(dt).name:8s} {name}: {time.perf_counter() - t:.1f} s")
        t = time.perf_counter()
        for serial, parallel in _jit.PAIRS:
            for sig in list(serial.signatures):
                parallel.compile(sig)
        log(f"parallel versions: {time.perf_counter() - t:.1f} s")
    kernels = _jit.KERNELS
    return {
        "signatures": sum(len(k.signatures) for k in kernels),
        "compiled": sum(sum(k.stats.cache_misses.values()) for k in kernels),
        "seconds": time.perf_counter() - t0,
        "cpu_seconds": time.process_time() - c0,
    }
