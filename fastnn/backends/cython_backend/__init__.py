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


def register_ext_module(module) -> None:
    """Let ``fastnn.set_num_threads`` drive ``module``'s OpenMP loops."""
    _config.register_thread_hook(module._set_num_threads)


register_ext_module(_runtime)

BACKEND_INFO = {
    "description": "Cython kernels compiled at install (OpenMP where the compiler has it)",
    "openmp": bool(_runtime.has_openmp()),
    "simd": _runtime.compiled_simd(),
}
