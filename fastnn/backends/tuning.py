"""One table of fastnn's tunables: every threshold of the compiled kernels and the GEMM policy.

Each entry names a value, its unit, which backend reads it and, in one line,
why it exists. The measurements behind the values, with dates and machines,
are in ``docs/performance.md``; code that uses a value names it and says
nothing about its size.

Values that depend on the instruction set the kernels run (the GEMM policy:
the own register-tiled kernel beats BLAS on more shapes with AVX-512 than with
AVX2) are dicts keyed by ``"avx512"``, ``"avx2"`` and ``"sse2"``; the compiled
backend resolves them for the set its GEMM dispatches to.

Overrides, in one place
-----------------------
``FASTNN_TUNING="name=value,name=value"``
    Read once, when this module is imported. A per-ISA entry takes the value
    for every instruction set.
:func:`set_value` and :func:`override`
    At run time, e.g. ``with tuning.override(rnn_parallel_min_work=1 << 16): ...``;
    the compiled code gets the new values at once.

The Cython backend pushes every ``compiled`` entry into the C library's
``fnn_tune`` when it loads (:func:`push`) and again on every change. Python
code (the Numba backend, the policy) reads :func:`value`.
"""

from __future__ import annotations

import contextlib
import os
import threading
import warnings
from dataclasses import dataclass

__all__ = [
    "Tunable",
    "TUNABLES",
    "value",
    "resolve",
    "set_value",
    "override",
    "push",
    "register_hook",
    "names",
    "from_environment",
    "ISAS",
]

#: Instruction-set keys of per-ISA values, best first.
ISAS = ("avx512", "avx2", "sse2")


@dataclass(frozen=True)
class Tunable:
    """One entry of the table.

    Attributes
    ----------
    name : str
        The key (and, for ``compiled`` entries, the field of the C struct).
    default : int, float or dict
        The value; a dict keyed by :data:`ISAS` for per-ISA values.
    unit : str
        What it counts.
    users : str
        Who reads it: ``"cython"``, ``"numba"`` or ``"cython, numba"``.
    compiled : bool
        Pushed into the C library (``fnn_tune``, kernels/fnn.h).
    doc : str
        Why it exists, in one line.
    """

    name: str
    default: object
    unit: str
    users: str
    compiled: bool
    doc: str


_GiB = 1 << 30

TUNABLES: tuple[Tunable, ...] = (
    # ---- threads: waking a sleeping OpenMP / Numba worker costs tens of microseconds
    Tunable(
        "parallel_min_elements",
        1 << 19,
        "elements",
        "cython, numba",
        True,
        "elementwise loops with exp or division (sigmoid, tanh, softmax, Adam) go parallel from here",
    ),
    Tunable(
        "parallel_min_elements_cheap",
        1 << 21,
        "elements",
        "cython, numba",
        True,
        "memory-bound loops (relu, backward products, SGD, MSE) gain from a thread only outside the caches",
    ),
    Tunable(
        "chunk_elements",
        32768,
        "elements",
        "cython",
        True,
        "one OpenMP work item: amortises scheduling, balances two to a few dozen threads",
    ),
    Tunable(
        "nogil_min_elements",
        8192,
        "elements",
        "cython",
        True,
        "smaller calls keep the GIL: releasing it costs more than the loop",
    ),
    # ---- the own GEMM
    Tunable(
        "gemm_parallel_min_flops",
        192**3,
        "multiply-adds",
        "cython",
        True,
        "the packed GEMM runs on one thread below; also where 'own' mode leaves the small kernel",
    ),
    Tunable(
        "gemm_small_parallel_min_flops",
        2**21,
        "multiply-adds",
        "cython",
        True,
        "the small kernel splits C over the team from here (a dense layer's 200 x 256 x 100 runs "
        "tens of microseconds on one core; a team costs a few; 200 x 64 x 100 gained nothing)",
    ),
    Tunable(
        "gemm_shared_min_flops",
        768**3,
        "multiply-adds",
        "cython",
        True,
        "threads share one packed B block from here (a few barriers); below, one slab of C each",
    ),
    Tunable(
        "gemm_scratch_keep_bytes",
        1 << 23,
        "bytes",
        "cython",
        True,
        "per-thread packing buffers up to this size are kept between calls (a malloc per call shows)",
    ),
    # ---- the GEMM policy (fastnn.backends.gemm_policy): which products run on the own kernels
    Tunable(
        "gemm_small_max_f32",
        {"avx512": 192**3, "avx2": 192**3, "sse2": 1 << 12},
        "multiply-adds",
        "cython",
        True,
        "auto: float32 products up to this run on the small kernel (no packing)",
    ),
    Tunable(
        "gemm_small_max_f64",
        {"avx512": 192**3, "avx2": 1 << 20, "sse2": 1 << 12},
        "multiply-adds",
        "cython",
        True,
        "auto: float64 products up to this run on the small kernel",
    ),
    Tunable(
        "gemm_packed_max_f32",
        {"avx512": 1 << 40, "avx2": 512**3, "sse2": 0},
        "multiply-adds",
        "cython",
        True,
        "auto: larger float32 products up to this run on the packed GEMM, the rest on BLAS",
    ),
    Tunable(
        "gemm_packed_max_f64",
        {"avx512": 1 << 40, "avx2": 0, "sse2": 0},
        "multiply-adds",
        "cython",
        True,
        "auto: larger float64 products up to this run on the packed GEMM, the rest on BLAS",
    ),
    Tunable(
        "gemm_packed_min_n",
        16,
        "columns",
        "cython",
        True,
        "auto: narrower outputs fill too little of a packed tile and stay on BLAS",
    ),
    Tunable(
        "gemm_own_min_flops",
        0,
        "multiply-adds",
        "cython",
        True,
        "auto: smaller products stay on BLAS (a call into compiled code costs more than it saves)",
    ),
    Tunable(
        "cython_matmul_threaded_numpy_min",
        200**3,
        "multiply-adds",
        "cython",
        False,
        "with several threads, plain matmul above this uses NumPy's BLAS, the pool the process already runs",
    ),
    # ---- convolution and pooling
    Tunable("conv_cols_budget", 1 << 20, "elements", "cython", True, "largest im2col chunk: it stays in cache"),
    Tunable(
        "conv_direct_max_buffer",
        1 << 27,
        "elements",
        "cython",
        True,
        "largest per-thread buffer of the direct convolution; larger cases take im2col",
    ),
    Tunable(
        "conv_parallel_min_work",
        1 << 19,
        "element operations",
        "cython",
        True,
        "convolution and pooling loops go parallel from here",
    ),
    Tunable(
        "conv_winograd_min_channels",
        32,
        "channels",
        "cython",
        True,
        "3x3 stride-1 float32 convolutions with at least this many input and output channels run "
        "Winograd F(2x2, 3x3) (2.25x fewer multiplications); fewer take the direct kernel (16 channels: "
        "Winograd 0.8-0.9x the direct kernel's speed, 32: 1.1-1.8x, 64: 1.1-2x, AVX2)",
    ),
    # ---- recurrent layers
    Tunable(
        "rnn_parallel_min_work",
        6 << 20,
        "multiply-adds",
        "cython",
        True,
        "recurrent work opens a parallel region from here (a region pays one worker wake-up)",
    ),
    Tunable(
        "rnn_small_elements",
        1 << 18,
        "operand elements",
        "cython",
        True,
        "all-steps products this small run on the small kernel inside the region; larger ones packed",
    ),
    Tunable(
        "rnn_spin_seconds",
        50e-6,
        "seconds",
        "cython",
        True,
        "how long a region's master spins for a late worker before it sleeps at the barrier",
    ),
    # ---- the Numba backend (names for its thresholds; values as it uses them)
    Tunable(
        "numba_gemm_parallel_min_flops",
        192**3,
        "multiply-adds",
        "numba",
        False,
        "Numba's own GEMM runs on one thread below (and on its small-product kernel)",
    ),
    Tunable(
        "numba_gemm_own_min_flops",
        1 << 14,
        "multiply-adds",
        "numba",
        False,
        "auto: smaller products go to BLAS (the call into compiled code costs more)",
    ),
    Tunable(
        "numba_gemm_own_max",
        1 << 40,
        "multiply-adds",
        "numba",
        False,
        "auto, one thread: products up to this run on Numba's own GEMM",
    ),
    Tunable(
        "numba_gemm_own_max_threaded",
        192**3,
        "multiply-adds",
        "numba",
        False,
        "auto, several threads: larger products go to threaded BLAS",
    ),
    Tunable("numba_gemm_own_min_n", 16, "columns", "numba", False, "auto: narrower outputs go to BLAS"),
    Tunable(
        "numba_rnn_blas_min_elements",
        1 << 18,
        "operand elements",
        "numba",
        False,
        "all-steps recurrent products above this go to BLAS",
    ),
    Tunable(
        "numba_conv_parallel_min_elements",
        1 << 16,
        "elements",
        "numba",
        False,
        "im2col, col2im and pooling run parallel from here (scattered accesses gain early)",
    ),
    Tunable(
        "numba_conv_cols_budget", 1 << 20, "elements", "numba", False, "largest im2col chunk of the Numba convolution"
    ),
    Tunable(
        "numba_conv_band_elements",
        1 << 17,
        "elements",
        "numba",
        False,
        "one thread's band of lowered output rows in the Numba convolution forward (L2-sized)",
    ),
    Tunable(
        "numba_conv_scratch_keep_bytes",
        1 << 24,
        "bytes",
        "numba",
        False,
        "largest band scratch the Numba convolution keeps between calls",
    ),
)

_BY_NAME = {t.name: t for t in TUNABLES}
_lock = threading.RLock()
_values: dict = {t.name: (dict(t.default) if isinstance(t.default, dict) else t.default) for t in TUNABLES}
_hooks: list = []


def names() -> list[str]:
    """Every tunable's name, in table order."""
    return [t.name for t in TUNABLES]


def _check(name: str) -> Tunable:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown tunable {name!r}; see fastnn.backends.tuning.names()") from None


def _coerce(t: Tunable, v):
    """A value of the entry's type (int entries stay ints)."""
    kind = type(next(iter(t.default.values())) if isinstance(t.default, dict) else t.default)
    v = float(v)
    return int(v) if kind is int and v == int(v) else v


def value(name: str, isa: str | None = None):
    """The current value of a tunable (for a per-ISA entry: the one of ``isa``, or the dict)."""
    v = _values[_check(name).name]
    if isinstance(v, dict) and isa is not None:
        return v[isa if isa in v else "sse2"]
    return v


def resolve(isa: str) -> dict:
    """{name: value} of every compiled tunable, per-ISA entries resolved for ``isa``."""
    return {t.name: value(t.name, isa) for t in TUNABLES if t.compiled}


def register_hook(hook) -> None:
    """Register ``hook()``, called after every change of a value (and now)."""
    with _lock:
        _hooks.append(hook)
    hook()


def _changed() -> None:
    for hook in _hooks:
        hook()


def set_value(name: str, new) -> None:
    """Set a tunable for the rest of the process (a per-ISA entry: for every ISA, or a dict)."""
    t = _check(name)
    with _lock:
        if isinstance(t.default, dict):
            new = {isa: _coerce(t, new[isa] if isinstance(new, dict) else new) for isa in ISAS}
        else:
            new = _coerce(t, new)
        _values[name] = new
    _changed()


@contextlib.contextmanager
def override(**values):
    """Context manager: set tunables inside the block, restore them after it (tests, measurements)."""
    with _lock:
        before = {name: value(name) for name in values}
    try:
        for name, v in values.items():
            set_value(name, v)
        yield
    finally:
        for name, v in before.items():
            set_value(name, v)


def push(setter, isa: str) -> None:
    """Give every compiled tunable, resolved for ``isa``, to ``setter(name, value)`` (the C library's)."""
    for name, v in resolve(isa).items():
        setter(name, v)


_env_names: set = set()


def from_environment() -> frozenset:
    """Names set by ``FASTNN_TUNING``: nothing else (a GEMM calibration) overrides them."""
    return frozenset(_env_names)


def _read_environment() -> None:
    raw = os.environ.get("FASTNN_TUNING", "").strip()
    for item in filter(None, (part.strip() for part in raw.split(","))):
        name, sep, text = item.partition("=")
        try:
            if not sep:
                raise ValueError("expected name=value")
            set_value(name.strip(), float(text))
            _env_names.add(name.strip())
        except (KeyError, ValueError) as exc:
            # a speed setting must not stop the program
            warnings.warn(f"FASTNN_TUNING: ignoring {item!r} ({exc})", RuntimeWarning, stacklevel=2)


_read_environment()
