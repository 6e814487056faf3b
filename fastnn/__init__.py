"""fastnn: train small and mid-sized neural networks fast on the CPU.

Every kernel exists three times behind one API: a NumPy reference, a Numba
backend and a Cython backend. Switch with :func:`set_backend`, the
``FASTNN_BACKEND`` variable or the :func:`use_backend` context manager.

Importing fastnn is cheap: it imports neither Numba nor the compiled
extension; a backend loads the first time it is used.
"""

from ._config import get_num_threads, set_num_threads
from .backends import (
    BackendUnavailable,
    available_backends,
    backend_status,
    get_backend,
    set_backend,
    use_backend,
)
from . import ops

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "BackendUnavailable",
    "available_backends",
    "backend_status",
    "get_backend",
    "set_backend",
    "use_backend",
    "get_num_threads",
    "set_num_threads",
    "ops",
]
