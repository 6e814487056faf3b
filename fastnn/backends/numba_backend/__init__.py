"""The Numba backend: ``@njit`` kernels compiled on first use and cached on disk.

Importing this package imports Numba (so it happens only when the backend is
first used, never at ``import fastnn``). Compilation happens per dtype on the
first call of a kernel; ``cache=True`` makes later processes load the
machine code instead of compiling again.

Modules: ``_math`` (vectorisable exp/tanh/sigmoid and row maximum, shared),
``activations``, ``dense``, ``losses``, ``optim`` (the kernels, one module per
family of the reference, same names and parameters). Every kernel of those
reference families is overridden.
"""

import os

# Numba's default threading layer here is GNU OpenMP, whose idle workers spin
# and then, on a busy or oversubscribed machine, get descheduled: every
# parallel region then waits a scheduler slice at its barrier (measured on a
# loaded 2-core machine: relu over 4M floats, median 24 ms per call with the
# default policy, 0.8 ms with passive waits). Same rule as the Cython
# backend: set before the OpenMP runtime loads (Numba loads it at the first
# parallel call); a user's own setting wins.
if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"

import numba  # noqa: E402  - an ImportError here makes the backend absent, with the reason

from ... import _config

# Numba's np.dot links SciPy's OpenBLAS, which would otherwise load only at the
# first compilation, after the backend applied fastnn's thread count to every
# BLAS in the process (an unlimited, oversubscribed BLAS then). Load it now.
import scipy.linalg.cython_blas  # noqa: E402,F401


def _set_threads(n: int) -> None:
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))


_config.register_thread_hook(_set_threads)

BACKEND_INFO = {
    "description": "Numba @njit kernels (parallel loops, cached compilation)",
    "numba": numba.__version__,
    "threading_layer_max_threads": numba.config.NUMBA_NUM_THREADS,
}
