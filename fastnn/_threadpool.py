"""fastnn as a thread pool that threadpoolctl sees: ``threadpool_limits(1)`` limits fastnn too.

scikit-learn, joblib and users cap native thread pools with
``threadpoolctl.threadpool_limits``, which finds them among the loaded shared
libraries. fastnn's compiled extension is one of them, so a controller
registered for it routes ``threadpool_limits`` (all pools, or
``user_api="fastnn"``) and ``threadpool_info`` to :func:`fastnn.set_num_threads`
and :func:`fastnn.get_num_threads`: the Numba loops, the OpenMP loops and BLAS
follow, and the block's end gives the count back. Registered when the
compiled backend loads (threadpoolctl 3.5 or later; older ones only see
BLAS and OpenMP).
"""

from __future__ import annotations

from . import _config

_registered = False


def register() -> None:
    """Register the controller with threadpoolctl, once; nothing if threadpoolctl cannot."""
    global _registered
    if _registered:
        return
    _registered = True
    try:
        import threadpoolctl
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        return
    if not hasattr(threadpoolctl, "register"):  # pragma: no cover - threadpoolctl < 3.5
        return

    class FastnnController(threadpoolctl.LibController):
        """fastnn's thread count, behind its compiled extension ``fastnn/_ext/_kernels``."""

        user_api = "fastnn"
        internal_api = "fastnn"
        filename_prefixes = ("_kernels",)

        def get_num_threads(self):
            return _config.get_num_threads()

        def set_num_threads(self, num_threads):
            # threadpool_limits gives the count it found at the block's start back at its end
            _config.set_num_threads(max(1, min(int(num_threads), _config.max_num_threads())))

        def get_version(self):
            from . import __version__

            return __version__

        def set_additional_attributes(self):
            self.adaptive_threads = _config._adaptive is not False

    threadpoolctl.register(FastnnController)
