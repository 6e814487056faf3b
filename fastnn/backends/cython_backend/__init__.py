"""The Cython backend: kernels compiled into ``fastnn._ext`` at install time.

If the extension was not built (no C compiler at install, or running from a
source tree without ``pip install``), importing it fails here and the backend
is absent, with that reason, from :func:`fastnn.available_backends`.

Each kernel module in this package imports its compiled module from
``fastnn._ext`` and calls :func:`register_ext_module` on it, so that
``fastnn.set_num_threads`` reaches that module's OpenMP loops.
"""

import os

from ... import _config

# OpenMP worker threads that spin between parallel regions (GNU OpenMP's
# default) steal the CPU from the calling thread and from BLAS when cores are
# shared or oversubscribed, and a descheduled spinner then stalls the next
# region at its barrier for a whole scheduler slice. Sleeping workers cost a
# few microseconds to wake, which only regions above PARALLEL_MIN_ELEMENTS
# pay. Must be set before the OpenMP runtime loads (with the extension, next
# line); a user's own setting wins.
if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"

from ..._ext import _runtime  # noqa: E402  ImportError here: the extension was not built


def register_ext_module(module) -> None:
    """Let ``fastnn.set_num_threads`` drive ``module``'s OpenMP loops."""
    _config.register_thread_hook(module._set_num_threads)


register_ext_module(_runtime)

BACKEND_INFO = {
    "description": "Cython kernels compiled at install (OpenMP where the compiler has it)",
    "openmp": bool(_runtime.has_openmp()),
    "simd": _runtime.compiled_simd(),
}
