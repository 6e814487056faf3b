"""save/load: exact round trip, no pickle, atomic writes, damaged files rejected, layer registry."""

import io
import json
import os
import zipfile

import numpy as np
import pytest

import fastnn
from fastnn import nn
from fastnn.io import ModelFileError


def _model(dtype=np.float32):
    return nn.Sequential(nn.Linear(6, 8, dtype=dtype), nn.ReLU(), nn.Linear(8, 5, bias=False, dtype=dtype, init="he"),
                         nn.LeakyReLU(0.2), nn.Linear(5, 4, dtype=dtype), nn.Tanh(), nn.Linear(4, 4, dtype=dtype),
                         nn.Sigmoid(), nn.Linear(4, 3, dtype=dtype), nn.Softmax())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_round_trip_is_exact(tmp_path, dtype, rng):
    model = _model(dtype)
    path = tmp_path / "model.fnn"
    fastnn.save(model, path)
    assert os.listdir(tmp_path) == ["model.fnn"]  # no suffix added, no temp file left
    loaded = fastnn.load(path)
    assert repr(loaded) == repr(model)
    assert type(loaded) is nn.Sequential and isinstance(loaded[3], nn.LeakyReLU)
    assert loaded[3].negative_slope == 0.2 and loaded[2].init == "he" and loaded[2].bias is None
    for (k1, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k1 == k2 and a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    x = rng.standard_normal((7, 6)).astype(dtype)
    np.testing.assert_array_equal(model(x).copy(), loaded(x))


def test_file_is_plain_npz_without_pickle(tmp_path):
    path = tmp_path / "m.npz"
    fastnn.save(_model(), path)
    with np.load(path, allow_pickle=False) as z:
        header = json.loads(z["__fastnn__"].tobytes())
        assert header["format"] == "fastnn-model" and header["version"] == 1
        assert header["architecture"]["type"] == "Sequential"
        assert header["architecture"]["children"]["0"] == {
            "type": "Linear", "config": {"in_features": 6, "out_features": 8, "bias": True, "dtype": "float32",
                                         "init": "default"}, "children": {}}
        assert all(z[k].dtype != object for k in z.files)


def test_truncated_file_rejected(tmp_path):
    path = tmp_path / "m.npz"
    fastnn.save(_model(), path)
    data = path.read_bytes()
    for cut in (10, len(data) // 2, len(data) - 30):
        bad = tmp_path / f"cut{cut}.npz"
        bad.write_bytes(data[:cut])
        with pytest.raises(ModelFileError):
            fastnn.load(bad)
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    with pytest.raises(ModelFileError):
        fastnn.load(empty)


def test_corrupted_bytes_rejected(tmp_path):
    path = tmp_path / "m.npz"
    model = _model()
    fastnn.save(model, path)
    data = bytearray(path.read_bytes())
    # flip one byte inside the first weight array's data
    w = model.state_dict()["0.weight"].tobytes()
    pos = bytes(data).find(w[:32])
    assert pos > 0
    data[pos + 40] ^= 0xFF
    bad = tmp_path / "flip.npz"
    bad.write_bytes(bytes(data))
    with pytest.raises(ModelFileError):
        fastnn.load(bad)


def _rewrite(src, dst, edit_header=None, edit_arrays=None):
    with np.load(src, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    header = json.loads(arrays["__fastnn__"].tobytes())
    if edit_header:
        edit_header(header)
    if edit_arrays:
        edit_arrays(arrays)
    arrays["__fastnn__"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    np.savez(dst, **arrays)


def test_checksum_mismatch_rejected(tmp_path):
    path = tmp_path / "m.npz"
    fastnn.save(_model(), path)

    def tweak(arrays):
        arrays["param/0.bias"] = arrays["param/0.bias"] + np.float32(1e-3)

    _rewrite(path, tmp_path / "bad.npz", edit_arrays=tweak)
    with pytest.raises(ModelFileError, match="checksum"):
        fastnn.load(tmp_path / "bad.npz")


def test_mismatched_architecture_rejected(tmp_path):
    path = tmp_path / "m.npz"
    fastnn.save(_model(), path)

    def wider(header):
        header["architecture"]["children"]["0"]["config"]["out_features"] = 9

    _rewrite(path, tmp_path / "wide.npz", edit_header=wider)
    with pytest.raises(ModelFileError, match="0.weight"):
        fastnn.load(tmp_path / "wide.npz")

    def unknown(header):
        header["architecture"]["children"]["1"]["type"] = "os.system"

    _rewrite(path, tmp_path / "unknown.npz", edit_header=unknown)
    with pytest.raises(ModelFileError, match="unknown layer type 'os.system'"):
        fastnn.load(tmp_path / "unknown.npz")

    def bad_config(header):
        header["architecture"]["children"]["1"]["config"] = {"evil": "__import__('os')"}

    _rewrite(path, tmp_path / "cfg.npz", edit_header=bad_config)
    with pytest.raises(ModelFileError, match="cannot build ReLU"):
        fastnn.load(tmp_path / "cfg.npz")

    def version(header):
        header["version"] = 99

    _rewrite(path, tmp_path / "v99.npz", edit_header=version)
    with pytest.raises(ModelFileError, match="version"):
        fastnn.load(tmp_path / "v99.npz")


def test_foreign_files_rejected(tmp_path):
    np.savez(tmp_path / "plain.npz", a=np.zeros(3))
    with pytest.raises(ModelFileError, match="not a fastnn model"):
        fastnn.load(tmp_path / "plain.npz")
    (tmp_path / "text.npz").write_text("hello, not a model")
    with pytest.raises(ModelFileError):
        fastnn.load(tmp_path / "text.npz")
    # an object array (would need pickle) is refused, never unpickled
    np.savez(tmp_path / "obj.npz", __fastnn__=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ModelFileError):
        fastnn.load(tmp_path / "obj.npz")
    with pytest.raises(FileNotFoundError):
        fastnn.load(tmp_path / "missing.npz")
    assert issubclass(ModelFileError, ValueError)


def test_save_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "m.npz"
    model = _model()
    fastnn.save(model, path)
    good = path.read_bytes()

    def crash(file, *args, **kwargs):
        file.write(b"PK\x03\x04 partial")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(OSError, match="disk full"):
        fastnn.save(nn.Sequential(nn.Linear(2, 2)), path)
    assert path.read_bytes() == good
    assert os.listdir(tmp_path) == ["m.npz"]
    monkeypatch.undo()
    fastnn.load(path)


def test_registry_extends_save_load(tmp_path, rng):
    class Unregistered(nn.Module):
        def forward(self, x):
            return x

        def get_config(self):
            return {}

    with pytest.raises(TypeError, match="register_module"):
        fastnn.save(nn.Sequential(Unregistered()), tmp_path / "u.npz")

    @nn.register_module(name="TestScaleLayer")
    class Scale(nn.Module):
        def __init__(self, n=3):
            super().__init__()
            self.n = n
            self.scale = nn.Parameter(np.ones(n))

        def forward(self, x):
            self._x = x
            return x * self.scale.data

        def backward(self, g, *, input_grad=True, accumulate=False):
            self.scale.grad[...] = (g * self._x).sum(axis=0)
            return g * self.scale.data

        def get_config(self):
            return {"n": self.n}

    assert nn.get_module_class("TestScaleLayer") is Scale
    assert "Linear" in nn.registered_modules() and "Sequential" in nn.registered_modules()
    model = nn.Sequential(nn.Linear(2, 3, dtype=np.float64), Scale(3))
    model[1].scale.data[...] = [1.0, 2.0, 3.0]
    fastnn.save(model, tmp_path / "s.npz")
    loaded = fastnn.load(tmp_path / "s.npz")
    assert isinstance(loaded[1], Scale)
    np.testing.assert_array_equal(loaded[1].scale.data, [1.0, 2.0, 3.0])
    assert fastnn.gradcheck(loaded, rng.standard_normal((4, 2))).ok

    with pytest.raises(ValueError, match="already registered"):
        @nn.register_module(name="TestScaleLayer")
        class Other(nn.Module):
            pass
    with pytest.raises(KeyError, match="no layer named"):
        nn.get_module_class("NoSuchLayer")
