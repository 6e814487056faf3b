"""The Cython backend: the C kernel library and its glue, compiled at install time.

One extension module, ``fastnn._ext._kernels`` (kernels/README.md). If it
was not built (no C compiler at install, or running from a source tree
without ``pip install``), importing it fails here and the backend is absent,
with that reason, from :func:`fastnn.available_backends`.

Loading it picks the instruction set of every kernel family (the best the
CPU has, or the lower one ``FASTNN_ISA`` names, read once), pushes the
tunables and the GEMM policy into the compiled code and lets
``fastnn.set_num_threads`` drive its OpenMP loops.

Environment variables
---------------------
FASTNN_ISA
    ``avx512``, ``avx2``, ``sse2`` (``generic`` on other architectures) or
    ``auto``: the highest instruction set the kernels may use (a level the
    CPU lacks is lowered to the best one it has). For tests and comparisons.
"""

import os
import warnings

from ... import _config

_config.prefer_short_openmp_spin()  # before the OpenMP runtime loads with the extension, next line

import scipy.linalg.cython_blas  # noqa: E402,F401  the BLAS the kernels link


def _not_built(exc: ImportError) -> ImportError:
    """The reason the extension is missing: what setup.py recorded when it skipped the build, or the import error."""
    from pathlib import Path

    marker = Path(__file__).resolve().parents[2] / "_ext" / "BUILD_SKIPPED.txt"
    try:
        return ImportError(f"compiled kernels {marker.read_text().strip()}")
    except OSError:
        return ImportError(f"compiled kernels not available ({exc}): build them with pip install (needs a C compiler)")


try:
    from ..._ext import _kernels
except ImportError as _exc:  # the extension was not built
    raise _not_built(_exc) from _exc
from ... import _threadpool  # noqa: E402
from .. import gemm_calibration, gemm_policy  # noqa: E402

# That BLAS may have loaded only now, after fastnn's thread count was applied
# to every BLAS in the process; a kernel called directly (not through the
# backend registry) must not run with an unlimited one.
_config._apply_blas_threads(_config.get_num_threads())


def _requested_isa() -> str:
    name = os.environ.get("FASTNN_ISA", "auto").strip().lower() or "auto"
    try:
        _kernels.select_isa(name)
    except ValueError as exc:
        warnings.warn(f"FASTNN_ISA={name!r}: {exc}; using the best the CPU has", RuntimeWarning, stacklevel=2)
        name = "auto"
    return name


#: What FASTNN_ISA asked for when the backend loaded.
REQUESTED_ISA = _requested_isa()


def select_isa(name: str, family: str | None = None) -> str:
    """Run ``family`` (every family when None) on instruction set ``name`` ("auto": the best).

    For tests and comparisons; not thread-safe against kernels running at
    the same time. Returns the level now used (the lowest over the families).
    """
    used = _kernels.select_isa(name, family)
    gemm_policy.register_compiled(_kernels)  # the policy's values depend on the GEMM's ISA
    BACKEND_INFO["simd"] = simd_summary()
    return used


def family_isa() -> dict:
    """{kernel family: the instruction set its calls go to now}."""
    return _kernels.family_isa()


def simd_summary() -> str:
    """The instruction set each kernel family dispatches to now, for ``fastnn info``."""
    families = " ".join(f"{family}={isa}" for family, isa in _kernels.family_isa().items())
    note = "" if REQUESTED_ISA == "auto" else f", FASTNN_ISA={REQUESTED_ISA}"
    return f"{families} (best on this CPU: {_kernels.best_isa()}{note})"


def register_ext_module(module) -> None:
    """Let ``fastnn.set_num_threads`` drive ``module``'s OpenMP loops."""
    _config.register_thread_hook(module._set_num_threads)
    _config.register_cap_hook(module._set_thread_cap)


register_ext_module(_kernels)
# The kernels read the team's cap from the extension; start watching the
# machine's cores now (FASTNN_ADAPTIVE_THREADS), not at the first Python-side
# kernel that asks: a compiled training plan may be the first call.
_config.active_threads()
_threadpool.register()  # threadpool_limits(...) now finds fastnn's extension and limits it too
gemm_policy.register_compiled(_kernels)
gemm_calibration.watch("cython")  # this machine's measured GEMM policy, if `fastnn calibrate` ran

BACKEND_INFO = {
    "description": "Cython glue over a C kernel library compiled at install (OpenMP where the compiler has it)",
    "openmp": bool(_kernels.has_openmp()),
    "simd": simd_summary(),
}
