"""Run batches of hostile op calls in child processes, one backend per child.

The safety tests (``test_safety_*.py``) describe each case as a few lines of
Python that set ``result`` or raise. :func:`run_cases` runs a whole batch in
one fresh interpreter (through :func:`isolated.run_isolated`, so a crash
fails the test instead of the run) and returns, per case, either
``("ok", result)`` or ``("raise", exception class name, message)``. A child
that crashes is reported with the name of the case it was running.

One child per backend and batch keeps the suite fast: each child pays the
imports and the loading of Numba's cache once, not once per case.
"""

from __future__ import annotations

import base64
import os
import pickle
import tempfile

import numpy as np
from isolated import run_isolated

#: Names every case can use (defined in the child before the cases run).
PRELUDE = '''
import numpy as np
import fastnn
from fastnn import ops

_rng = np.random.default_rng(1234)

def rnd(*shape, dtype=np.float32, scale=1.0):
    """Standard normal data of ``shape``."""
    return np.asarray(_rng.standard_normal(shape) * scale).astype(dtype)

def ro(a):
    """A read-only copy of ``a`` (as np.load(..., mmap_mode="r") gives)."""
    if a is None:
        return None
    a = np.array(a, copy=True)
    a.setflags(write=False)
    return a

def poison(a, value, where):
    """A copy of ``a`` with ``value`` (NaN, inf, -inf) at flat position "first", "last" or "mid"."""
    a = np.array(a, copy=True)
    flat = a.reshape(-1)
    if flat.size:
        flat[{"first": 0, "last": flat.size - 1, "mid": flat.size // 2}[where]] = value
    return a

def assert_identical(a, b, rtol=0.0):
    """Two results are the same arrays, bit for bit (NaN where NaN), or the same numbers.

    ``rtol`` > 0 allows that much rounding: Numba compiles a separate
    specialisation for read-only arrays, and with reassociation allowed
    (NUMBA_JIT_OPTIONS) LLVM may sum in another order there.
    """
    if isinstance(a, (tuple, list)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_identical(x, y, rtol)
    elif a is None or b is None:
        assert a is None and b is None
    elif rtol:
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=0, equal_nan=True)
    else:
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
'''

_CHILD = """
import base64, pickle, sys, zlib
with open({path!r}, "rb") as _f:
    _job = pickle.load(_f)
_base = {{}}
exec(_job["prelude"], _base)
_base["fastnn"].set_backend(_job["backend"])
exec(_job["setup"], _base)
_results = {{}}
for _name, _src in _job["cases"]:
    sys.stderr.write("SAFETY-CASE " + _name + "\\n")
    sys.stderr.flush()
    # each case draws its own data, whichever cases ran before it in this child
    _base["_rng"] = _base["np"].random.default_rng(zlib.crc32(_name.encode()))
    _ns = dict(_base)
    try:
        exec(_src, _ns)
        _results[_name] = ("ok", _ns.get("result"))
    except Exception as _exc:  # the test compares the exception class
        _results[_name] = ("raise", type(_exc).__name__, str(_exc))
sys.stdout.write("SAFETY-RESULTS " + base64.b64encode(pickle.dumps(_results)).decode() + "\\n")
"""


def run_cases(
    backend: str,
    cases: dict,
    *,
    setup: str = "",
    timeout: float = 300.0,
    memory_limit: int | None = None,
    env: dict | None = None,
) -> dict:
    """Run ``cases`` (name -> Python source) with ``backend`` in one child process.

    Returns name -> ``("ok", result)`` or ``("raise", class name, message)``.
    Fails the calling test, naming the case, if the child crashes or hangs.
    """
    # the cases travel in a file: a batch is too long for a command line
    with tempfile.NamedTemporaryFile("wb", suffix=".pkl", delete=False) as f:
        pickle.dump({"prelude": PRELUDE, "backend": backend, "setup": setup, "cases": list(cases.items())}, f)
    try:
        res = run_isolated(_CHILD.format(path=f.name), timeout=timeout, memory_limit=memory_limit, env=env)
    finally:
        os.unlink(f.name)
    if res.crashed or res.returncode != 0:
        started = [line.split(" ", 1)[1] for line in res.stderr.splitlines() if line.startswith("SAFETY-CASE ")]
        last = started[-1] if started else "(before the first case)"
        how = "timed out" if res.timed_out else f"ended with status {res.returncode}"
        raise AssertionError(f"{backend}: child {how} in case {last!r}\n--- stderr ---\n{res.stderr[-4000:]}")
    for line in res.stdout.splitlines():
        if line.startswith("SAFETY-RESULTS "):
            return pickle.loads(base64.b64decode(line.split(" ", 1)[1]))
    raise AssertionError(f"{backend}: no results from the child\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}")


def recurrent_setup(cell: str, steps: int, batch: int) -> str:
    """Case setup for ``cell`` ("rnn", "lstm", "gru"), 5 features, hidden size 6: x, h0, c0, wi, wh, bi, bh, g."""
    rows = 6 * {"rnn": 1, "lstm": 4, "gru": 3}[cell]  # the weights stack one block of rows per gate
    return (
        f"x, h0, c0 = rnd({steps}, {batch}, 5, dtype=dt), rnd({batch}, 6, dtype=dt), rnd({batch}, 6, dtype=dt)\n"
        f"wi, wh = rnd({rows}, 5, dtype=dt, scale=0.3), rnd({rows}, 6, dtype=dt, scale=0.3)\n"
        f"bi, bh, g = rnd({rows}, dtype=dt), rnd({rows}, dtype=dt), rnd({steps}, {batch}, 6, dtype=dt)\n"
    )


def recurrent_forward(cell: str, wrap: str = "", as_tuple: bool = False) -> str:
    """The call of ``cell``'s forward on the names of :func:`recurrent_setup`, each through ``wrap`` when given."""
    state = ("h0", "c0") if cell == "lstm" else ("h0",)
    args = ", ".join(f"{wrap}({a})" if wrap else a for a in ("x", *state, "wi", "wh", "bi", "bh"))
    # rnn_forward returns one array, the others a tuple: a trailing comma makes it a tuple too
    return f"ops.{cell}_forward({args})" + ("," if as_tuple and cell == "rnn" else "")


_CACHE = {}
#: Address space of a child of :func:`cached_outcomes`: Numba, LLVM and the BLAS
#: threads need about 2 GiB of it; the cases themselves allocate kilobytes.
MEMORY_LIMIT = 4 << 30


def cached_outcomes(key: str, backend: str, cases: dict, **kwargs) -> dict:
    """:func:`run_cases` once per (``key``, ``backend``) and test session.

    Tests parametrized over the cases of one batch share its child process.
    A child that crashed fails every test that asks for its batch again,
    with the same message, instead of starting it once per test.
    """
    if (key, backend) not in _CACHE:
        # an address-space cap: a missing size check fails to allocate instead of swapping a shared machine
        kwargs.setdefault("memory_limit", MEMORY_LIMIT)
        try:
            _CACHE[key, backend] = run_cases(backend, cases, **kwargs)
        except AssertionError as exc:
            _CACHE[key, backend] = exc
    got = _CACHE[key, backend]
    if isinstance(got, AssertionError):
        raise AssertionError(str(got))
    return got


def _leaves(value):
    """The arrays and numbers in a (nested) result, in order."""
    if isinstance(value, (tuple, list)):
        out = []
        for v in value:
            out.extend(_leaves(v))
        return out
    return [value]


def assert_same_result(name: str, got, want, rtol: float, atol: float) -> None:
    """Two results of one case agree: the same exception class, or the same values (NaN where NaN)."""
    if want[0] == "raise" or got[0] == "raise":
        assert got[0] == want[0] and got[1] == want[1], f"{name}: got {got[:3]}, reference {want[:3]}"
        return
    a, b = _leaves(got[1]), _leaves(want[1])
    assert len(a) == len(b), f"{name}: {len(a)} outputs, reference {len(b)}"
    for k, (x, y) in enumerate(zip(a, b)):
        if y is None or x is None:
            assert x is None and y is None, f"{name}[{k}]: {x!r} vs reference {y!r}"
            continue
        x, y = np.asarray(x), np.asarray(y)
        assert x.shape == y.shape, f"{name}[{k}]: shape {x.shape}, reference {y.shape}"
        assert x.dtype == y.dtype, f"{name}[{k}]: dtype {x.dtype}, reference {y.dtype}"
        if x.dtype.kind == "f":
            np.testing.assert_allclose(x, y, rtol=rtol, atol=atol, equal_nan=True, err_msg=f"{name}[{k}]")
        else:
            np.testing.assert_array_equal(x, y, err_msg=f"{name}[{k}]")
