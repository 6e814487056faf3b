"""The Cython backend: kernels compiled into ``fastnn._ext`` at install time.

If the extension was not built (no C compiler at install, or running from a
source tree without ``pip install``), importing it fails here and the backend
is absent, with that reason, from :func:`fastnn.available_backends`.

Each kernel module in this package imports its compiled module from
``fastnn._ext`` and calls :func:`register_ext_module` on it, so that
``fastnn.set_num_threads`` reaches that module's OpenMP loops.
"""

from ... import _config

_config.prefer_passive_openmp()  # before the OpenMP runtime loads with the extension, next line

from ..._ext import _runtime  # noqa: E402  ImportError here: the extension was not built
import scipy.linalg.cython_blas  # noqa: E402,F401  the BLAS the kernel modules link

# That BLAS may have loaded only now, after fastnn's thread count was applied
# to every BLAS in the process; a kernel module imported directly (not through
# the backend registry) must not run with an unlimited one.
_config._apply_blas_threads(_config.get_num_threads())


def register_ext_module(module) -> None:
    """Let ``fastnn.set_num_threads`` drive ``module``'s OpenMP loops."""
    _config.register_thread_hook(module._set_num_threads)


register_ext_module(_runtime)

BACKEND_INFO = {
    "description": "Cython kernels compiled at install (OpenMP where the compiler has it)",
    "openmp": bool(_runtime.has_openmp()),
    "simd": _runtime.compiled_simd(),
}
