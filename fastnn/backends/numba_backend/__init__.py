"""The Numba backend: ``@njit`` kernels compiled on first use and cached on disk.

Importing this package imports Numba (so it happens only when the backend is
first used, never at ``import fastnn``). Compilation happens per dtype on the
first call of a kernel; ``cache=True`` makes later processes load the
machine code instead of compiling again.

Modules: ``_math`` (vectorisable exp/tanh/sigmoid and row maximum, shared),
``_gemm`` (the own GEMM), and ``activations``, ``dense``, ``losses``,
``optim``, ``conv``, ``rnn``: the kernels, one module per family of the
reference, same names and parameters. Every reference kernel is overridden.
"""

from ... import _config

# Numba's threading layer here is GNU OpenMP, loaded at the first parallel call.
_config.prefer_passive_openmp()

import numba  # noqa: E402  - an ImportError here makes the backend absent, with the reason

# Numba's np.dot links SciPy's OpenBLAS, which would otherwise load only at the
# first compilation, after fastnn's thread count was applied to every BLAS in
# the process (an unlimited, oversubscribed BLAS then). Load it now, and give
# it the count here too: a module of this package imported directly (not
# through the backend registry) must not run with a BLAS of its own.
import scipy.linalg.cython_blas  # noqa: E402,F401

_config._apply_blas_threads(_config.get_num_threads())


def _set_threads(n: int) -> None:
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))


_config.register_thread_hook(_set_threads)

BACKEND_INFO = {
    "description": "Numba @njit kernels (parallel loops, cached compilation)",
    "numba": numba.__version__,
    "threading_layer_max_threads": numba.config.NUMBA_NUM_THREADS,
}
