"""ONNX and safetensors export: the graphs run in onnxruntime and give fastnn's outputs.

Each model is exported in evaluation mode (after some training, so that batch
norm's running statistics are not the defaults) and run by onnxruntime at
the exported batch size and at another one; the outputs must equal fastnn's
to float32 round-off. The safetensors file must load into PyTorch's model of
the same architecture and give the same outputs.
"""

import numpy as np
import pytest

import fastnn
from fastnn import nn

onnx = pytest.importorskip("onnx", reason="the onnx package is not installed (pip install 'fastnn-cpu[onnx]')")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'fastnn-cpu[onnx]')")


def _run(path, x):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": x})[0]


def _models():
    return {
        "mlp": (
            lambda: nn.Sequential(
                nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 8), nn.LeakyReLU(0.2), nn.Linear(8, 4), nn.Softmax()
            ),  # fmt: skip
            (5, 8),
            0,
        ),
        "cnn_batchnorm": (
            lambda: nn.Sequential(
                nn.Conv2d(1, 4, 3, padding=1),
                nn.BatchNorm2d(4),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Conv2d(4, 6, 3, stride=2, dilation=1),
                nn.BatchNorm2d(6),
                nn.Sigmoid(),
                nn.AvgPool2d(2, count_include_pad=False),
                nn.Flatten(),
                nn.Dropout(0.25),
                nn.Linear(6, 3),
            ),  # fmt: skip
            (6, 1, 12, 12),
            0,
        ),
        "stacked_bilstm": (
            lambda: nn.Sequential(
                nn.LSTM(5, 6, num_layers=2, bidirectional=True, batch_first=True, dropout=0.1),
                nn.LastTimeStep(batch_first=True),
                nn.Linear(12, 3),
            ),  # fmt: skip
            (4, 7, 5),
            0,
        ),
        "bigru_time_major": (
            lambda: nn.Sequential(nn.GRU(5, 6, num_layers=2, bidirectional=True), nn.LastTimeStep(), nn.Linear(12, 3)),
            (7, 4, 5),
            1,
        ),
        "rnn_relu_sequence": (lambda: nn.RNN(5, 6, nonlinearity="relu", bidirectional=True), (7, 4, 5), 1),
        "embedding_bilstm_layernorm": (
            lambda: nn.Sequential(
                nn.Embedding(20, 8, padding_idx=0),
                nn.LSTM(8, 5, batch_first=True, bidirectional=True),
                nn.LastTimeStep(batch_first=True),
                nn.LayerNorm(10),
                nn.Linear(10, 2),
            ),  # fmt: skip
            (3, 6),
            0,
        ),
        "conv1d": (
            lambda: nn.Sequential(
                nn.Conv1d(3, 4, 3, padding=1),
                nn.BatchNorm1d(4),
                nn.Tanh(),
                nn.MaxPool1d(2),
                nn.AvgPool1d(2),
                nn.Flatten(),
                nn.Linear(16, 2),
            ),  # fmt: skip
            (5, 3, 16),
            0,
        ),
        "adaptive_and_global_pool": (
            lambda: nn.Sequential(
                nn.Conv2d(2, 3, 3),
                nn.AdaptiveAvgPool2d((3, 3)),
                nn.Dropout2d(0.5),
                nn.AdaptiveAvgPool2d(1),
                nn.GlobalAvgPool2d(),
                nn.BatchNorm1d(3, affine=False),
            ),  # fmt: skip
            (2, 2, 11, 11),
            0,
        ),
    }


def _input(shape, model, rng):
    first = model[0] if isinstance(model, nn.Sequential) else model
    if isinstance(first, nn.Embedding):
        return rng.integers(0, first.num_embeddings, shape).astype(np.int64)
    return rng.standard_normal(shape).astype(np.float32)


def _trained(make, shape, batch_axis, rng):
    fastnn.manual_seed(0)
    model = make()
    # a few training steps: running statistics and weights away from their initial values
    n = 3 * shape[batch_axis]
    big = list(shape)
    big[batch_axis] = n
    X = _input(tuple(big), model, rng)
    if batch_axis == 1:
        X = np.ascontiguousarray(np.swapaxes(X, 0, 1))
    with fastnn.no_grad():
        out = np.asarray(model(X[: shape[0]] if batch_axis == 0 else np.swapaxes(X[:2], 0, 1)))
    if out.ndim == 2 and batch_axis == 0:
        y = rng.standard_normal((n, out.shape[1])).astype(np.float32)
        fastnn.fit(model, X, y, loss="mse", epochs=2, batch_size=shape[0], progress=False)
    model.eval()
    return model


@pytest.mark.parametrize("name", sorted(_models()))
def test_onnx_graph_runs_in_onnxruntime_like_fastnn(name, tmp_path, rng):
    make, shape, batch_axis = _models()[name]
    model = _trained(make, shape, batch_axis, rng)
    path = fastnn.export_onnx(model, tmp_path / f"{name}.onnx", shape)
    proto = onnx.load(path)
    assert proto.opset_import[0].version == fastnn.export.OPSET
    assert proto.graph.input[0].type.tensor_type.shape.dim[batch_axis].dim_param == "batch"
    for batch in (shape[batch_axis], 2 * shape[batch_axis] + 1):  # the batch axis is free
        s = list(shape)
        s[batch_axis] = batch
        x = _input(tuple(s), model, rng)
        with fastnn.no_grad():
            want = np.asarray(model(x))
        got = _run(path, x)
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_onnx_refuses_what_it_cannot_express(tmp_path):
    class Custom(nn.Module):
        def forward(self, x):
            return x

    with pytest.raises(NotImplementedError, match="no ONNX export for Custom"):
        fastnn.export_onnx(nn.Sequential(nn.Linear(3, 3), Custom()), tmp_path / "a.onnx", (2, 3))
    with pytest.raises(NotImplementedError, match="overlapping windows"):
        fastnn.export_onnx(nn.AdaptiveAvgPool2d((3, 3)), tmp_path / "b.onnx", (1, 1, 8, 8))
    with pytest.raises(NotImplementedError, match="track_running_stats=False"):
        fastnn.export_onnx(nn.BatchNorm1d(3, track_running_stats=False), tmp_path / "c.onnx", (4, 3))
    with pytest.raises(NotImplementedError, match="return_state"):
        fastnn.export_onnx(nn.LSTM(3, 4, return_state=True), tmp_path / "d.onnx", (5, 2, 3))
    with pytest.raises(TypeError, match="fastnn Module"):
        fastnn.export_onnx("model", tmp_path / "e.onnx", (2, 3))
    assert not any(tmp_path.iterdir())  # nothing half-written


def test_safetensors_loads_into_pytorch(tmp_path, rng):
    st = pytest.importorskip("safetensors.numpy", reason="safetensors is not installed")
    model = _trained(*_models()["cnn_batchnorm"][:1], (6, 1, 12, 12), 0, rng)
    path = fastnn.export_safetensors(model, tmp_path / "model.safetensors")
    loaded = st.load_file(path)
    state = model.state_dict()
    assert set(loaded) == set(state)
    for k, v in state.items():
        np.testing.assert_array_equal(loaded[k], v)
        assert loaded[k].dtype == np.asarray(v).dtype
    torch = pytest.importorskip("torch", reason="PyTorch is not installed: the cross-check is skipped")
    from safetensors.torch import load_file

    tmodel = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(4, 6, 3, stride=2), torch.nn.BatchNorm2d(6), torch.nn.Sigmoid(),
        torch.nn.AvgPool2d(2, count_include_pad=False), torch.nn.Flatten(), torch.nn.Dropout(0.25),
        torch.nn.Linear(6, 3),
    )  # fmt: skip
    tmodel.load_state_dict(load_file(path))
    tmodel.eval()
    x = rng.standard_normal((5, 1, 12, 12)).astype(np.float32)
    with fastnn.no_grad(), torch.no_grad():
        np.testing.assert_allclose(tmodel(torch.from_numpy(x)).numpy(), model(x), rtol=1e-5, atol=1e-5)
