"""save/load: exact round trip, no pickle, atomic writes, damaged files rejected, layer registry."""

import json
import os
import stat

import numpy as np
import pytest
from isolated import run_isolated

import fastnn
from fastnn import nn
from fastnn.io import ModelFileError


def _model(dtype=np.float32):
    return nn.Sequential(
        nn.Linear(6, 8, dtype=dtype),
        nn.ReLU(),
        nn.Linear(8, 5, bias=False, dtype=dtype, init="he"),
        nn.LeakyReLU(0.2),
        nn.Linear(5, 4, dtype=dtype),
        nn.Tanh(),
        nn.Linear(4, 4, dtype=dtype),
        nn.Sigmoid(),
        nn.Linear(4, 3, dtype=dtype),
        nn.Softmax(),
    )


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
            "type": "Linear",
            "config": {"in_features": 6, "out_features": 8, "bias": True, "dtype": "float32", "init": "default"},
            "children": {},
        }
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


# -- save: permissions, symbolic links, temporary files, error messages ------------------


def _tmp_files(directory):
    return [n for n in os.listdir(directory) if n.endswith(".tmp")]


def test_save_keeps_the_targets_permissions_and_a_new_file_gets_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        fastnn.save(_model(), tmp_path / "new.fnn")
        assert stat.S_IMODE(os.stat(tmp_path / "new.fnn").st_mode) == 0o640  # 0o666 less the umask, not 0o600
        existing = tmp_path / "existing.fnn"
        existing.write_bytes(b"old")
        os.chmod(existing, 0o604)
        fastnn.save(_model(), existing)
        assert stat.S_IMODE(os.stat(existing).st_mode) == 0o604
        fastnn.load(existing)
    finally:
        os.umask(old)


def test_save_follows_a_symbolic_link_and_keeps_it(tmp_path):
    (tmp_path / "runs").mkdir()
    real = tmp_path / "runs" / "model.fnn"
    real.write_bytes(b"previous")
    os.chmod(real, 0o600)
    link = tmp_path / "latest.fnn"
    link.symlink_to(os.path.join("runs", "model.fnn"))  # relative, resolved from the link's directory
    model = _model()
    fastnn.save(model, link)
    assert link.is_symlink() and os.readlink(link) == os.path.join("runs", "model.fnn")
    assert stat.S_IMODE(os.stat(real).st_mode) == 0o600
    np.testing.assert_array_equal(fastnn.load(real)[0].weight.data, model[0].weight.data)
    assert _tmp_files(tmp_path) == [] and _tmp_files(tmp_path / "runs") == []

    dangling = tmp_path / "dangling.fnn"
    dangling.symlink_to(tmp_path / "runs" / "created.fnn")  # like open(path, "w"): creates the target
    fastnn.save(model, dangling)
    assert dangling.is_symlink() and (tmp_path / "runs" / "created.fnn").is_file()

    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    with pytest.raises(OSError, match="loop of symbolic links") as err:
        fastnn.save(model, tmp_path / "a")
    assert err.value.filename == str(tmp_path / "a")


def test_save_errors_name_the_path_given_not_the_temporary_file(tmp_path):
    missing = tmp_path / "no" / "such" / "dir" / "m.fnn"
    with pytest.raises(FileNotFoundError) as err:
        fastnn.save(_model(), missing)
    assert err.value.filename == str(missing) and str(tmp_path / "no" / "such" / "dir") in str(err.value)
    assert ".tmp" not in str(err.value)
    (tmp_path / "isdir").mkdir()
    with pytest.raises(IsADirectoryError) as err:
        fastnn.save(_model(), tmp_path / "isdir")
    assert err.value.filename == str(tmp_path / "isdir") and os.listdir(tmp_path / "isdir") == []
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(NotADirectoryError) as err:
        fastnn.save(_model(), tmp_path / "file" / "m.fnn")
    assert err.value.filename == str(tmp_path / "file" / "m.fnn")


@pytest.mark.parametrize("failure", [KeyboardInterrupt, MemoryError, OSError])
def test_save_removes_its_temporary_file_when_interrupted_or_failing(tmp_path, monkeypatch, failure):
    path = tmp_path / "m.fnn"
    fastnn.save(_model(), path)
    good = path.read_bytes()

    def interrupted(file, *args, **kwargs):
        file.write(b"PK\x03\x04 partial")
        assert len(_tmp_files(tmp_path)) == 1  # the temporary file exists while it is written
        raise failure("stop")

    monkeypatch.setattr(np, "savez", interrupted)
    with pytest.raises(failure):
        fastnn.save(_model(), path)
    assert os.listdir(tmp_path) == ["m.fnn"] and path.read_bytes() == good
    monkeypatch.undo()

    def replace_fails(src, dst):
        raise PermissionError(13, "Permission denied", src)

    monkeypatch.setattr(os, "replace", replace_fails)
    with pytest.raises(PermissionError) as err:
        fastnn.save(_model(), path)
    assert err.value.filename == str(path)
    assert os.listdir(tmp_path) == ["m.fnn"] and path.read_bytes() == good


def test_save_refuses_a_model_that_load_would_refuse(tmp_path):
    deep = nn.ReLU()
    for _ in range(fastnn.io.MAX_DEPTH + 1):
        deep = nn.Sequential(deep)
    with pytest.raises(ValueError, match="nest more than 32 deep"):
        fastnn.save(deep, tmp_path / "deep.fnn")
    assert os.listdir(tmp_path) == []
    wide = nn.Sequential(*[nn.ReLU() for _ in range(fastnn.io.MAX_LAYERS)])  # + the Sequential itself
    with pytest.raises(ValueError, match=f"{fastnn.io.MAX_LAYERS + 1} layers"):
        fastnn.save(wide, tmp_path / "wide.fnn")
    fastnn.save(nn.Sequential(*[nn.ReLU() for _ in range(fastnn.io.MAX_LAYERS - 1)]), tmp_path / "ok.fnn")
    assert len(fastnn.load(tmp_path / "ok.fnn")) == fastnn.io.MAX_LAYERS - 1


# -- load: paths, weights, limits ------------------------------------------------------


def test_load_paths_that_are_not_model_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        fastnn.load(tmp_path / "missing.fnn")
    with pytest.raises(ModelFileError, match="is a directory"):
        fastnn.load(tmp_path)
    with pytest.raises(ModelFileError, match="not a regular file"):
        fastnn.load(os.devnull)
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(ModelFileError, match="cannot open the file"):
        fastnn.load(tmp_path / "file" / "m.fnn")
    os.mkfifo(tmp_path / "fifo")  # opening it must not wait for a writer: checked in a child, with a timeout
    run_isolated(f"import fastnn; fastnn.load({str(tmp_path / 'fifo')!r})", timeout=60).assert_raised(ModelFileError)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_load_an_unreadable_file(tmp_path):
    path = tmp_path / "m.fnn"
    fastnn.save(_model(), path)
    os.chmod(path, 0)
    with pytest.raises(ModelFileError, match="cannot open the file"):
        fastnn.load(path)


def test_nonfinite_weights_are_refused_unless_allowed(tmp_path):
    model = _model()
    model[0].weight.data[1, 2] = np.nan
    model[4].weight.data[0, 0] = -np.inf
    fastnn.save(model, tmp_path / "nan.fnn")
    with pytest.raises(ModelFileError, match=r"'0.weight' \(1 of 48\), '4.weight' \(1 of 20\).*allow_nonfinite"):
        fastnn.load(tmp_path / "nan.fnn")
    loaded = fastnn.load(tmp_path / "nan.fnn", allow_nonfinite=True)
    assert np.isnan(loaded[0].weight.data[1, 2]) and loaded[4].weight.data[0, 0] == -np.inf
    assert np.isfinite(loaded[0].weight.data).sum() == 47
    with pytest.raises(TypeError, match="allow_nonfinite must be True or False"):
        fastnn.load(tmp_path / "nan.fnn", allow_nonfinite="yes")


def test_max_bytes_is_checked_before_reading_the_weights(tmp_path):
    model = _model(np.float64)
    fastnn.save(model, tmp_path / "m.fnn")
    nbytes = sum(v.nbytes for v in model.state_dict().values())
    assert fastnn.load(tmp_path / "m.fnn", max_bytes=nbytes)[0].weight.dtype == np.float64
    with pytest.raises(ModelFileError, match=f"take {nbytes} bytes, more than max_bytes={nbytes - 1}"):
        fastnn.load(tmp_path / "m.fnn", max_bytes=nbytes - 1)
    with pytest.raises(TypeError, match="max_bytes must be an integer"):
        fastnn.load(tmp_path / "m.fnn", max_bytes=1e9)


def test_a_big_endian_file_loads_into_native_parameters(tmp_path):
    from test_io_craft import model_file, parts

    model = _model()
    header, arrays = parts(model)
    swapped = [(k, v.astype(v.dtype.newbyteorder(">"))) for k, v in arrays]
    header["params"] = {k: {"shape": list(v.shape), "dtype": v.dtype.str} for k, v in swapped}
    (tmp_path / "be.fnn").write_bytes(model_file(header, swapped))
    loaded = fastnn.load(tmp_path / "be.fnn")
    for (_k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert b.dtype == np.float32 and b.dtype.isnative
        np.testing.assert_array_equal(a, b)


def test_no_message_suggests_pickle(tmp_path):
    np.savez(tmp_path / "obj.npz", __fastnn__=np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.save(tmp_path / "plain.npy", np.zeros(3))
    for name in ("obj.npz", "plain.npy"):
        with pytest.raises(ModelFileError) as err:
            fastnn.load(tmp_path / name)
        assert "pickle" not in str(err.value).lower()


# -- layers of the user's, and the declarations of fastnn's own ------------------------


def test_a_layer_that_declares_its_parameters_is_checked_before_it_is_built(tmp_path):
    built = []

    @nn.register_module(name="TestDeclaredScale")
    class DeclaredScale(nn.Module):
        def __init__(self, n=3):
            super().__init__()
            built.append(n)
            self.n = n
            self.scale = nn.Parameter(np.ones(n))

        def get_config(self):
            return {"n": self.n}

        @classmethod
        def parameters_from_config(cls, config, children=()):
            return [("scale", (fastnn._validation.positive_int(config["n"], "n"),), "float64")]

    fastnn.save(nn.Sequential(nn.Linear(2, 3, dtype=np.float64), DeclaredScale(3)), tmp_path / "s.fnn")
    built.clear()
    assert isinstance(fastnn.load(tmp_path / "s.fnn")[1], DeclaredScale) and built == [3]

    from test_io_craft import model_file, parts

    header, arrays = parts(nn.Sequential(DeclaredScale(3)))
    header["architecture"]["children"]["0"]["config"]["n"] = 10**12
    (tmp_path / "huge.fnn").write_bytes(model_file(header, arrays))
    built.clear()
    with pytest.raises(ModelFileError, match=r"architecture makes \(1000000000000,\)"):
        fastnn.load(tmp_path / "huge.fnn")
    assert built == []  # refused before the constructor ran


def test_a_layer_that_cannot_tell_is_built_after_the_other_checks(tmp_path):
    from test_io_craft import model_file, parts

    code = """
        import numpy as np, fastnn
        from fastnn import nn

        @nn.register_module(name="TestGreedyScale")
        class GreedyScale(nn.Module):       # no parameters_from_config: load cannot check it beforehand
            def __init__(self, n=3):
                super().__init__()
                self.n = n
                self.scale = nn.Parameter(np.ones(n))

            def get_config(self):
                return {"n": self.n}

        fastnn.load(PATH)
    """
    header, arrays = parts(nn.Sequential(nn.Linear(2, 3)))
    arrays.append(("1.scale", np.ones(3)))
    header["params"]["1.scale"] = {"shape": [3], "dtype": "<f8"}
    header["architecture"]["children"]["1"] = {"type": "TestGreedyScale", "config": {"n": 10**11}, "children": {}}
    (tmp_path / "greedy.fnn").write_bytes(model_file(header, arrays))
    # its constructor's own allocation is the one thing left to the layer; even that ends as ModelFileError
    result = run_isolated(code.replace("PATH", repr(str(tmp_path / "greedy.fnn"))), memory_limit=1 << 30)
    result.assert_raised(ModelFileError)
    assert "cannot build TestGreedyScale" in result.stderr and "MemoryError" in result.stderr
    header["architecture"]["children"]["1"]["config"]["n"] = 4
    (tmp_path / "other.fnn").write_bytes(model_file(header, arrays))
    result = run_isolated(code.replace("PATH", repr(str(tmp_path / "other.fnn"))))
    result.assert_raised(ModelFileError)
    assert "parameter 1.scale is (3,) float64 in the file but the architecture makes (4,)" in result.stderr


def test_a_subclass_of_a_fastnn_layer_does_not_inherit_its_declaration(tmp_path):
    @nn.register_module(name="TestScaledLinear")
    class ScaledLinear(nn.Linear):
        def __init__(self, in_features, out_features, factor=2.0, **kwargs):
            super().__init__(in_features, out_features, **kwargs)
            self.factor = factor

        def get_config(self):
            return {**super().get_config(), "factor": self.factor}

    model = nn.Sequential(ScaledLinear(3, 2, factor=0.5))
    fastnn.save(model, tmp_path / "sub.fnn")
    loaded = fastnn.load(tmp_path / "sub.fnn")  # Linear's declaration would call "factor" an unknown key
    assert loaded[0].factor == 0.5
    np.testing.assert_array_equal(loaded[0].weight.data, model[0].weight.data)


@pytest.mark.parametrize(
    "layer",
    [
        nn.Linear(3, 4),
        nn.Linear(5, 2, bias=False, dtype=np.float64, init="he"),
        nn.Conv2d(2, 3, 3),
        nn.Conv2d(1, 4, (3, 5), stride=2, padding=(1, 0), dilation=(2, 1), bias=False, dtype=np.float64),
        nn.RNN(3, 4),
        nn.RNN(2, 5, nonlinearity="relu", bias=False, batch_first=True, return_state=True),
        nn.LSTM(3, 4),
        nn.LSTM(2, 3, bias=False, dtype=np.float64),
        nn.GRU(3, 4),
        nn.GRU(4, 2, batch_first=True),
        nn.ReLU(),
        nn.Sigmoid(),
        nn.Tanh(),
        nn.LeakyReLU(0.3),
        nn.Softmax(dim=1),
        nn.MaxPool2d(3, 2, 1),
        nn.AvgPool2d(2, count_include_pad=False),
        nn.Flatten(0, 2),
        nn.LastTimeStep(batch_first=True),
        nn.Sequential(nn.Linear(2, 3), nn.Tanh()),
    ],
    ids=repr,
)
def test_parameters_from_config_is_what_the_constructor_makes(layer):
    declared = type(layer).parameters_from_config(layer.get_config(), tuple(layer._modules))
    assert declared == [(k, p.shape, p.dtype.name) for k, p in layer._parameters.items()]
    assert fastnn.io._declaration(type(layer)) is not None
    assert nn.Module.parameters_from_config({}) is None


def test_constructors_check_their_arguments_strictly():
    for call, error, pattern in [
        (lambda: nn.Linear(3, 2, bias="false"), TypeError, "bias must be True or False"),
        (lambda: nn.Linear(3, 2, bias=0), TypeError, "bias must be True or False"),
        (lambda: nn.Linear(3, 2, dtype=None), TypeError, "dtype must be"),
        (lambda: nn.Linear(3, 2, dtype="f4"), TypeError, "dtype must be"),
        (lambda: nn.Linear(3, 2, init=5), ValueError, "init must be one of"),
        (lambda: nn.Linear(3.0, 2), ValueError, "positive integer"),
        (lambda: nn.Conv2d(1, 2, 3, bias="no"), TypeError, "bias must be True or False"),
        (lambda: nn.Conv2d(1, 2, 3, dtype="float16"), TypeError, "dtype must be"),
        (lambda: nn.RNN(2, 3, nonlinearity=1), ValueError, "nonlinearity must be"),
        (lambda: nn.LSTM(2, 3, batch_first="false"), TypeError, "batch_first must be True or False"),
        (lambda: nn.GRU(2, 3, return_state=1), TypeError, "return_state must be True or False"),
        (lambda: nn.GRU(2, 3, bias=None), TypeError, "bias must be True or False"),
        (lambda: nn.LeakyReLU("0.1"), TypeError, "must be a real number"),
        (lambda: nn.LeakyReLU(float("inf")), ValueError, "must be finite"),
        (lambda: nn.Softmax(dim=True), TypeError, "dim must be an integer"),
        (lambda: nn.Softmax(dim=1.0), TypeError, "dim must be an integer"),
        (lambda: nn.AvgPool2d(2, count_include_pad=1), TypeError, "count_include_pad must be True or False"),
        (lambda: nn.Flatten(start_dim=1.9), TypeError, "start_dim must be an integer"),
        (lambda: nn.Flatten(end_dim="-1"), TypeError, "end_dim must be an integer"),
        (lambda: nn.LastTimeStep(batch_first="true"), TypeError, "batch_first must be True or False"),
    ]:
        with pytest.raises(error, match=pattern):
            call()
    # what the constructors always took still works
    assert nn.Linear(3, 2, dtype="float64").weight.dtype == np.float64
    assert nn.Linear(3, 2, dtype=np.dtype(np.float32), bias=np.bool_(False)).bias is None
    assert nn.Conv2d(1, 2, np.int64(3), dtype=float).weight.dtype == np.float64
    assert nn.LeakyReLU(1).negative_slope == 1.0 and nn.Flatten(np.int64(0)).start_dim == 0
    assert nn.LSTM(2, 3, batch_first=True, dtype=np.float64).batch_first is True


def test_a_container_of_the_users_and_its_child_names(tmp_path):
    from test_io_craft import model_file, parts

    @nn.register_module(name="TestBag")
    class Bag(nn.Module):  # children by name, parameters of its own; cannot tell them beforehand
        def __init__(self, n=2):
            super().__init__()
            self.n = n
            self.gain = nn.Parameter(np.full(n, 3.0))

        def get_config(self):
            return {"n": self.n}

        @classmethod
        def from_config(cls, config, children):
            bag = cls(**config)
            for k, child in children.items():
                setattr(bag, k, child)
            return bag

    bag = Bag(2)
    bag.encoder = nn.Linear(3, 2)
    bag.head = nn.Sequential(nn.Tanh(), nn.Linear(2, 1))
    model = nn.Sequential(nn.Linear(4, 3), bag)
    fastnn.save(model, tmp_path / "bag.fnn")
    loaded = fastnn.load(tmp_path / "bag.fnn")
    assert list(dict(loaded.named_parameters())) == [
        "0.weight",
        "0.bias",
        "1.gain",
        "1.encoder.weight",
        "1.encoder.bias",
        "1.head.1.weight",
        "1.head.1.bias",
    ]
    for (_k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        np.testing.assert_array_equal(a, b)

    # child names become parameter-name prefixes at every level: a long one is refused before anything nests
    header, arrays = parts(nn.Sequential(nn.Linear(4, 3)))
    header["architecture"]["children"]["1"] = {
        "type": "TestBag",
        "config": {"n": 2},
        "children": {"n" * (2 << 20): {"type": "ReLU", "config": {}, "children": {}}},
    }
    (tmp_path / "long.fnn").write_bytes(model_file(header, arrays))
    with pytest.raises(ModelFileError, match="child name 'nnnn.* is longer than 1024"):
        fastnn.load(tmp_path / "long.fnn")
