"""A fuzzer for fastnn.load: mutated, truncated, extended and re-assembled model files.

Three hypothesis properties run in a child process (tests/isolated.py) whose
address space is limited to what the child needs plus 100 MiB, so that a
crash or a runaway allocation fails one test instead of the machine:

``bytes``
    bit flips, byte and 16/32-bit field changes, insertions, deletions,
    truncation and extension of the bytes of valid files (stored and
    deflated). Oracle: ModelFileError, or exactly the original model (the
    CRC-32s and the sha256 catch every change that matters).
``parts``
    the same mutations applied to one part of a file -- the JSON text or a
    .npy header -- which is then re-assembled with valid CRC-32s, so that
    the checksums cannot hide the deeper checks. Oracle: ModelFileError, or
    a model whose every config value is the file's (no coercion: ``"false"``
    never becomes ``True``) with exactly the original weights.
``header``
    random JSON values, type-confusable ones first (``"false"``, ``1.9``, ``[1, "1"]``...),
    and deletions, put at random places of the header, half of them inside
    layer configs. Same oracle.

Every example must also finish within 5 s (the time bound; rejections take
milliseconds). Budget: 300 examples per property by default, about 15 s in
all on the development machine (2 busy cores); the ``slow`` variant runs 3000
per property, about 2 minutes.
"""

from __future__ import annotations

import pytest
from isolated import run_isolated

MiB = 1 << 20

_CHILD = r'''
import json, os, struct, tempfile, time
import numpy as np
from hypothesis import HealthCheck, given, settings, strategies as st
import fastnn
from fastnn import nn
from fastnn.io import ModelFileError
from test_io_craft import Member, deflate, header_member, model_file, npy, parts, zip_bytes

EXAMPLES = {examples}
TIME_BOUND = 5.0
directory = tempfile.mkdtemp()
path = os.path.join(directory, "fuzzed.fnn")

fastnn.manual_seed(0)
MODELS = [nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.LeakyReLU(0.2), nn.Softmax()),
          nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.AvgPool2d(1),
                        nn.Flatten()),
          nn.Sequential(nn.LSTM(2, 3, batch_first=True), nn.LastTimeStep(batch_first=True), nn.RNN(3, 2),
                        nn.GRU(2, 2, bias=False, dtype=np.float64))]
PARTS = [parts(m) for m in MODELS]
FILES = [model_file(h, a, method=method) for h, a in PARTS for method in (0, 8)]
INTERESTING = [0, 1, 0x7F, 0x80, 0xFF, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF]

def mutate(data, mutations):
    data = bytearray(data)
    for kind, a, b in mutations:
        n = len(data)
        if kind == "flip" and n:
            data[a % n] ^= 1 << (b % 8)
        elif kind == "byte" and n:
            data[a % n] = b % 256
        elif kind in ("u16", "u32") and n >= 4:
            size = 2 if kind == "u16" else 4
            i = a % (n - size + 1)
            data[i:i + size] = (INTERESTING[b % len(INTERESTING)] & (0xFFFF if size == 2 else 0xFFFFFFFF)) \
                .to_bytes(size, "little")
        elif kind == "insert":
            data[a % (n + 1):a % (n + 1)] = bytes([b % 256]) * (1 + b % 7)
        elif kind == "delete" and n:
            del data[a % n:a % n + 1 + b % 16]
        elif kind == "truncate":
            del data[a % (n + 1):]
        elif kind == "extend":
            data += bytes([b % 256]) * (1 + a % 64)
    return bytes(data)

MUTATIONS = st.lists(st.tuples(st.sampled_from(["flip", "byte", "u16", "u32", "insert", "delete", "truncate",
                                                "extend"]),
                               st.integers(0, 1 << 20), st.integers(0, 1 << 16)), min_size=1, max_size=4)

def attempt(data):
    with open(path, "wb") as f:
        f.write(data)
    t = time.perf_counter()
    try:
        model = fastnn.load(path)
    except ModelFileError as exc:
        model = None
        assert "pickle" not in str(exc).lower(), exc
    seconds = time.perf_counter() - t
    assert seconds < TIME_BOUND, f"load took {{seconds:.1f}} s"
    return model

def same_weights(model, arrays):
    state = model.state_dict()
    assert list(state) == [k for k, _ in arrays]
    for k, a in arrays:
        assert state[k].dtype.name == a.dtype.name
        np.testing.assert_array_equal(state[k], a)

def same(loaded, written):
    """Equal values of equal JSON types (True is not 1, "false" is not False); 1 and 1.0 are equal."""
    if isinstance(loaded, bool) or isinstance(written, bool):
        return type(loaded) is type(written) and loaded == written
    if isinstance(loaded, (int, float)) and isinstance(written, (int, float)):
        return loaded == written
    if isinstance(loaded, (list, tuple)) and isinstance(written, list):
        return len(loaded) == len(written) and all(same(a, b) for a, b in zip(loaded, written))
    return type(loaded) is type(written) and loaded == written

def as_written(model, spec, where="model"):
    """Every config value of the loaded model is the value the file gives (an int may stand for a pair)."""
    assert type(model)._registered_name == spec["type"], where
    config = model.get_config()
    assert set(config) == set(spec["config"]), where
    for key, value in spec["config"].items():
        ok = same(config[key], value) or (type(value) is int and same(config[key], [value, value])) or \
            (key == "stride" and value is None and config[key] == config["kernel_size"])
        assert ok, f"{{where}}.{{key}}: the file says {{value!r}}, the model has {{config[key]!r}}"
    assert list(model._modules) == list(spec["children"]), where
    for k, child in model._modules.items():
        as_written(child, spec["children"][k], f"{{where}}.{{k}}")

SETTINGS = settings(max_examples=EXAMPLES, deadline=None, database=None, print_blob=True,
                    suppress_health_check=list(HealthCheck))

@SETTINGS
@given(st.integers(0, len(FILES) - 1), MUTATIONS)
def bytes_property(which, mutations):
    model = attempt(mutate(FILES[which], mutations))
    if model is not None:
        h, arrays = PARTS[which // 2]
        assert repr(model) == repr(MODELS[which // 2])
        same_weights(model, arrays)

@SETTINGS
@given(st.integers(0, len(PARTS) - 1), st.data(), MUTATIONS, st.sampled_from([0, 8]))
def parts_property(which, data, mutations, method):
    header, arrays = PARTS[which]
    text = json.dumps(header).encode()
    npys = [npy(a) for _, a in arrays]
    target = data.draw(st.integers(-1, len(npys) - 1), label="part")
    if target < 0:
        text = mutate(text, mutations)
    else:
        head = len(npys[target]) - arrays[target][1].nbytes
        npys[target] = mutate(npys[target][:head], mutations) + npys[target][head:]
    members = [header_member(None, raw=text)] + \
        [Member(f"param/{{k}}.npy", b, method=method) for (k, _), b in zip(arrays, npys)]
    model = attempt(zip_bytes(members))
    if model is not None:
        as_written(model, json.loads(text)["architecture"])
        same_weights(model, arrays)

# An explicit alphabet: st.text() would first build hypothesis's Unicode tables, more memory than the budget.
TEXT = st.text(alphabet="az09_.-<>|\"\\\x00\x7f\u00e9\u2028\U0001f600", max_size=8)
CONFUSABLE = st.sampled_from([True, False, 0, 1, -1, 2, 1.0, 1.9, -0.5, 1e308, "1", "true", "false", None, [], {{}},
                              [1, 1], [1, "1"], [1, 1, 1], [True, 1], 2 ** 40, 2 ** 63, "float32", "float64",
                              "float16", "<f4", "tanh", "relu", "he", "default", "Linear", "ReLU"])
JSON = st.recursive(st.none() | st.booleans() | st.integers(-2, 2 ** 40) | st.floats(allow_nan=False) | TEXT |
                    CONFUSABLE,
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
                    max_leaves=6)

def paths(node, prefix=()):
    if prefix:
        yield prefix
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for k, v in items:
        yield from paths(v, prefix + (k,))

ALL_PATHS = [list(paths(h)) for h, _ in PARTS]
CONFIG_PATHS = [[p for p in every if "config" in p[:-1]] for every in ALL_PATHS]

@SETTINGS
@given(st.integers(0, len(PARTS) - 1), st.data())
def header_property(which, data):
    header, arrays = PARTS[which]
    header = json.loads(json.dumps(header))
    # half the time a value inside some layer's config, else any place at all
    where = CONFIG_PATHS[which] if data.draw(st.booleans(), label="config") else ALL_PATHS[which]
    path = data.draw(st.sampled_from(where), label="path")
    node = header
    for key in path[:-1]:
        node = node[key]
    if isinstance(node, dict) and data.draw(st.integers(0, 4), label="delete") == 0:
        del node[path[-1]]
    else:
        node[path[-1]] = data.draw(CONFUSABLE | JSON, label="value")
    model = attempt(model_file(header, arrays, resum=False))
    if model is not None:
        as_written(model, header["architecture"])
        same_weights(model, arrays)

for name, prop in [("bytes", bytes_property), ("parts", parts_property), ("header", header_property)]:
    t = time.perf_counter()
    prop()
    print(f"{{name}}: {{EXAMPLES}} examples in {{time.perf_counter() - t:.1f}} s")
'''


@pytest.fixture(scope="module")
def baseline_address_space():
    """Peak address space of a child that imported fastnn and hypothesis and loaded a valid file."""
    result = run_isolated("""
        import tempfile, os, hypothesis, fastnn
        from fastnn import nn
        d = tempfile.mkdtemp()
        fastnn.save(nn.Sequential(nn.LSTM(2, 3), nn.Conv2d(1, 2, 3)), os.path.join(d, "m.fnn"))
        fastnn.load(os.path.join(d, "m.fnn"))
        print(next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmPeak")))
    """).assert_ok()
    return int(result.stdout.split()[-1])


def _fuzz(examples, baseline):
    result = run_isolated(_CHILD.format(examples=examples), memory_limit=baseline + 100 * MiB, timeout=1800)
    result.assert_ok()
    print("\n" + result.stdout)


def test_fuzz_model_files(baseline_address_space):
    _fuzz(300, baseline_address_space)


@pytest.mark.slow
def test_fuzz_model_files_longer(baseline_address_space):
    _fuzz(3000, baseline_address_space)
